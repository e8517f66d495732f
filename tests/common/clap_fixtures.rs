//! The CLAP fixtures (fixtures/make_clap.py) as the clap_* tests read them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clap")
}

/// `refs_<variant>.safetensors` and `refs_<variant>.json` (texts, tokens, the crops drawn).
pub fn refs(variant: &str) -> (HashMap<String, Tensor>, Value) {
    let t = candle_core::safetensors::load(
        fixtures().join(format!("refs_{variant}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let j = std::fs::read_to_string(fixtures().join(format!("refs_{variant}.json"))).unwrap();
    (t, serde_json::from_str(&j).unwrap())
}

/// A 16-bit PCM clip as the script reads it: sample / 32768 in f64 (exact through f32).
pub fn wave(name: &str) -> Vec<f64> {
    let (x, ch, sr) = rfmx::audio::wav::read(&fixtures().join(name)).unwrap();
    assert_eq!((ch, sr), (1, 48_000));
    x.into_iter().map(f64::from).collect()
}
