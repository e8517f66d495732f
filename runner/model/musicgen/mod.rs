//! MusicGen (text-to-music) decoder in candle, ported from transformers' `modeling_musicgen.py`.
//!
//! - [`MusicgenModel::load_dir`] / [`MusicgenModel::new`]: weights from a `save_pretrained`
//!   directory or any VarBuilder; [`TinySpec`] builds the embedded seeded model.
//! - [`MusicgenModel::condition`]: text-encoder states -> cross-attention conditioning (+ CFG twin).
//! - [`MusicgenModel::generate`]: delay pattern, batched CFG, seeded top-k sampling, layer hooks.
//! - [`MusicgenModel::extract_blocks`] / [`MusicgenModel::extract_pooled`]: teacher-forced block
//!   outputs for probes.

mod config;
mod decoder;
mod device;
mod error;
mod generate;
mod hooks;
mod tiny;

pub use config::{DecoderConfig, Layout, MusicgenConfig};
pub use decoder::{Condition, DecoderState, MusicgenModel};
pub use device::{AutoDevice, auto_device, auto_device_here, parse_device, parse_dtype};
pub use error::{MusicgenError, Result};
pub use generate::{GenerateConfig, Generated, delay_is_pad};
pub use hooks::{CaptureHook, InjectHook, LayerHook, NoHook, Pool, RowHooks};
pub use tiny::TinySpec;

use candle_core::{DType, Device};

/// A loaded model and where it came from.
pub struct LoadedModel {
    pub model: MusicgenModel,
    /// "random weights" for the embedded model, the directory otherwise.
    pub description: String,
}

/// `name = "tiny"` builds the embedded model; anything else is a `save_pretrained` directory.
pub fn load(name: &str, device: &Device, dtype: DType) -> Result<LoadedModel> {
    if name == "tiny" {
        let spec = TinySpec::default();
        return Ok(LoadedModel {
            model: spec.build(device, dtype)?,
            description: spec.description(),
        });
    }
    let dir = std::path::Path::new(name);
    Ok(LoadedModel {
        model: MusicgenModel::load_dir(dir, device, dtype)?,
        description: format!("MusicGen decoder from {}", dir.display()),
    })
}
