//! MusicGen configuration as written by transformers' `save_pretrained`.
//!
//! Accepts the composite `MusicgenConfig` (`model_type = "musicgen"` with `decoder`, `text_encoder`
//! and `audio_encoder` sub-configs) and a bare `MusicgenDecoderConfig`. Variants whose decoder differs
//! from the mono text-to-music model (melody, stereo) are rejected instead of being run wrongly.

use serde::Deserialize;
use serde_json::Value;

use super::error::{MusicgenError, Result};

/// Decoder hyper-parameters; every size the port uses comes from here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecoderConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_ffn")]
    pub ffn_dim: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_act")]
    pub activation_function: String,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_codebooks")]
    pub num_codebooks: usize,
    #[serde(default = "d_channels")]
    pub audio_channels: usize,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default)]
    pub bos_token_id: Option<usize>,
    #[serde(default)]
    pub cross_attention_hidden_size: Option<usize>,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn d_vocab() -> usize {
    2048
}
fn d_max_pos() -> usize {
    2048
}
fn d_layers() -> usize {
    24
}
fn d_ffn() -> usize {
    4096
}
fn d_heads() -> usize {
    16
}
fn d_act() -> String {
    "gelu".into()
}
fn d_hidden() -> usize {
    1024
}
fn d_codebooks() -> usize {
    4
}
fn d_channels() -> usize {
    1
}

impl DecoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// The pad/BOS code: the extra row of each codebook embedding.
    pub fn pad_token(&self) -> usize {
        self.pad_token_id.unwrap_or(self.vocab_size)
    }
    pub fn bos_token(&self) -> usize {
        self.bos_token_id.unwrap_or(self.vocab_size)
    }
}

/// Where the weights live in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `MusicgenForConditionalGeneration`: `decoder.model.decoder.*`, `decoder.lm_heads.*`, `enc_to_dec_proj`.
    Composite,
    /// `MusicgenForCausalLM`: `model.decoder.*`, `lm_heads.*`; no text projection.
    DecoderOnly,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MusicgenConfig {
    pub decoder: DecoderConfig,
    /// Width of the text encoder's states (T5 `d_model`); `None` for a bare decoder config.
    pub text_hidden_size: Option<usize>,
    pub layout: Layout,
}

impl MusicgenConfig {
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text =
            crate::fsx::read_text_limited(path, crate::fsx::TEXT_LIMIT).map_err(|source| {
                MusicgenError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// `origin` names the source in error messages.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let json = |source| MusicgenError::Json {
            path: origin.to_string(),
            source,
        };
        let v: Value = serde_json::from_str(text).map_err(json)?;
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type.starts_with("musicgen_melody") {
            return Err(MusicgenError::Unsupported(format!(
                "MusicGen variant {model_type:?} (melody conditioning)"
            )));
        }
        let (dec_value, text_hidden_size, layout) = match v.get("decoder") {
            Some(dec) => {
                let text = v.get("text_encoder").ok_or_else(|| {
                    MusicgenError::InvalidConfig("composite config without `text_encoder`".into())
                })?;
                let hidden = ["d_model", "hidden_size"]
                    .iter()
                    .find_map(|k| text.get(*k).and_then(Value::as_u64))
                    .ok_or_else(|| {
                        MusicgenError::InvalidConfig(
                            "text_encoder has no d_model/hidden_size".into(),
                        )
                    })?;
                (dec.clone(), Some(hidden as usize), Layout::Composite)
            }
            None if model_type == "musicgen" => {
                return Err(MusicgenError::InvalidConfig(
                    "model_type \"musicgen\" without a `decoder` sub-config".into(),
                ));
            }
            None => (v.clone(), None, Layout::DecoderOnly),
        };
        let decoder: DecoderConfig = serde_json::from_value(dec_value).map_err(json)?;
        let cfg = Self {
            decoder,
            text_hidden_size,
            layout,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let d = &self.decoder;
        if let Some(t) = d.model_type.as_deref()
            && t != "musicgen_decoder"
        {
            return Err(MusicgenError::Unsupported(format!(
                "MusicGen decoder type {t:?}"
            )));
        }
        if d.audio_channels != 1 {
            return Err(MusicgenError::Unsupported(format!(
                "MusicGen with audio_channels = {} (stereo)",
                d.audio_channels
            )));
        }
        if d.activation_function != "gelu" {
            return Err(MusicgenError::Unsupported(format!(
                "activation_function {:?}",
                d.activation_function
            )));
        }
        if let Some(c) = d.cross_attention_hidden_size
            && c != d.hidden_size
        {
            return Err(MusicgenError::Unsupported(format!(
                "cross_attention_hidden_size {c} != hidden_size {}",
                d.hidden_size
            )));
        }
        let positive = [
            ("hidden_size", d.hidden_size),
            ("num_hidden_layers", d.num_hidden_layers),
            ("num_attention_heads", d.num_attention_heads),
            ("ffn_dim", d.ffn_dim),
            ("num_codebooks", d.num_codebooks),
            ("vocab_size", d.vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(MusicgenError::InvalidConfig(format!("{name} must be > 0")));
        }
        if !d.hidden_size.is_multiple_of(d.num_attention_heads) {
            return Err(MusicgenError::InvalidConfig(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                d.hidden_size, d.num_attention_heads
            )));
        }
        if d.pad_token() > d.vocab_size || d.bos_token() > d.vocab_size {
            return Err(MusicgenError::InvalidConfig(
                "pad/bos token id outside the embedding table (vocab_size + 1 rows)".into(),
            ));
        }
        Ok(())
    }

    /// HF projects text states only when widths differ and no cross-attention width is set.
    pub fn needs_text_projection(&self) -> bool {
        match self.text_hidden_size {
            Some(t) => {
                t != self.decoder.hidden_size && self.decoder.cross_attention_hidden_size.is_none()
            }
            None => false,
        }
    }
}
