//! The text-to-audio fixtures of fixtures/make_t5.py as the model tests read them.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/t5")
        .join(name)
}

/// tiny_musicgen's transformers references (`refs.safetensors`) and their settings (`refs.json`).
pub struct Refs {
    pub tensors: HashMap<String, Tensor>,
    pub prompts: Vec<String>,
    pub steps: usize,
    pub guidance_scale: f64,
}

pub fn refs() -> Refs {
    let dir = fixture("tiny_musicgen");
    let tensors =
        candle_core::safetensors::load(dir.join("refs.safetensors"), &Device::Cpu).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("refs.json")).unwrap()).unwrap();
    Refs {
        tensors,
        prompts: meta["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
        steps: meta["steps"].as_u64().unwrap() as usize,
        guidance_scale: meta["guidance_scale"].as_f64().unwrap(),
    }
}
