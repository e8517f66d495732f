//! The snapshot's `config.json` (`ClapConfig`: `text_config`, `audio_config`, projection) and
//! `preprocessor_config.json` (`ClapFeatureExtractor`). Missing keys take transformers' defaults, so
//! older snapshots that omit them load as transformers would load them.

use std::path::Path;

use serde::Deserialize;

use super::ClapError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 50265,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
            pad_token_id: 1,
        }
    }
}

/// `patch_size` / `patch_stride` are an int or a pair in the HF config.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    One(usize),
    Two([usize; 2]),
}

impl Pair {
    pub fn pair(self) -> [usize; 2] {
        match self {
            Pair::One(v) => [v, v],
            Pair::Two(p) => p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct AudioConfig {
    pub window_size: usize,
    pub num_mel_bins: usize,
    pub spec_size: usize,
    pub hidden_act: String,
    pub patch_size: Pair,
    pub patch_stride: Pair,
    pub hidden_size: usize,
    pub depths: Vec<usize>,
    pub num_attention_heads: Vec<usize>,
    pub enable_fusion: bool,
    pub fusion_type: Option<String>,
    pub patch_embed_input_channels: usize,
    pub flatten_patch_embeds: bool,
    pub patch_embeds_hidden_size: usize,
    pub enable_patch_layer_norm: bool,
    pub qkv_bias: bool,
    pub mlp_ratio: f64,
    pub aff_block_r: usize,
    pub layer_norm_eps: f64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            window_size: 8,
            num_mel_bins: 64,
            spec_size: 256,
            hidden_act: "gelu".into(),
            patch_size: Pair::One(4),
            patch_stride: Pair::Two([4, 4]),
            hidden_size: 768,
            depths: vec![2, 2, 6, 2],
            num_attention_heads: vec![4, 8, 16, 32],
            enable_fusion: false,
            fusion_type: None,
            patch_embed_input_channels: 1,
            flatten_patch_embeds: true,
            patch_embeds_hidden_size: 96,
            enable_patch_layer_norm: true,
            qkv_bias: true,
            mlp_ratio: 4.0,
            aff_block_r: 4,
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClapConfig {
    pub text_config: TextConfig,
    pub audio_config: AudioConfig,
    pub projection_dim: usize,
    pub projection_hidden_act: String,
}

impl Default for ClapConfig {
    fn default() -> Self {
        Self {
            text_config: TextConfig::default(),
            audio_config: AudioConfig::default(),
            projection_dim: 512,
            projection_hidden_act: "relu".into(),
        }
    }
}

/// How audio longer than `max_length_s` is cut (`truncation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Three random crops plus the whole mel shrunk to the crop length, as 4 channels.
    Fusion,
    /// One random crop, 1 channel (slaney mel filters).
    RandTrunc,
}

/// How audio shorter than `max_length_s` is filled (`padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Repeat whole copies, then zero-pad the rest.
    Repeatpad,
    /// Repeat and cut to length.
    Repeat,
    /// Zero-pad.
    Pad,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FeatureConfig {
    pub feature_size: usize,
    pub sampling_rate: u32,
    pub hop_length: usize,
    pub max_length_s: usize,
    pub fft_window_size: usize,
    pub frequency_min: f64,
    pub frequency_max: f64,
    pub top_db: Option<f64>,
    pub truncation: Truncation,
    pub padding: Padding,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            feature_size: 64,
            sampling_rate: 48_000,
            hop_length: 480,
            max_length_s: 10,
            fft_window_size: 1024,
            frequency_min: 0.0,
            frequency_max: 14_000.0,
            top_db: None,
            truncation: Truncation::Fusion,
            padding: Padding::Repeatpad,
        }
    }
}

impl FeatureConfig {
    /// `nb_max_samples`: the clip length the model sees (0 when it overflows, which
    /// `FeatureExtractor::new` refuses).
    pub fn max_samples(&self) -> usize {
        self.max_length_s
            .checked_mul(self.sampling_rate as usize)
            .unwrap_or(0)
    }
}

fn read_text(path: &Path) -> Result<String, ClapError> {
    crate::fsx::read_text_limited(path, crate::fsx::TEXT_LIMIT).map_err(|e| ClapError::io(path, e))
}

fn parse_json<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<T, ClapError> {
    serde_json::from_str(text).map_err(|e| ClapError::snapshot(path, format!("bad JSON: {e}")))
}

impl ClapConfig {
    pub fn load(dir: &Path) -> Result<Self, ClapError> {
        let path = dir.join("config.json");
        Self::from_json_str(&read_text(&path)?, &path)
    }

    /// The config in `text`, read from `path` (named in errors).
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ClapError> {
        let cfg: ClapConfig = parse_json(text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ClapError> {
        let a = &self.audio_config;
        let bad = |m: String| Err(ClapError::snapshot(path, m));
        if a.depths.is_empty() || a.depths.len() != a.num_attention_heads.len() {
            return bad(format!(
                "audio_config.depths ({:?}) and num_attention_heads ({:?}) must be non-empty and of one length",
                a.depths, a.num_attention_heads
            ));
        }
        // Checked: a long `depths` would shift the width past usize.
        let features = u32::try_from(a.depths.len() - 1).ok().and_then(|k| {
            a.patch_embeds_hidden_size
                .checked_mul(1usize.checked_shl(k)?)
        });
        if features != Some(a.hidden_size) {
            return bad(format!(
                "audio_config.hidden_size {} is not patch_embeds_hidden_size·2^(stages−1) = {}",
                a.hidden_size,
                features.map_or("(overflow)".to_string(), |f| f.to_string())
            ));
        }
        if a.num_mel_bins == 0 || !a.spec_size.is_multiple_of(a.num_mel_bins) {
            return bad(format!(
                "audio_config.spec_size {} is not a multiple of num_mel_bins {}",
                a.spec_size, a.num_mel_bins
            ));
        }
        let t = &self.text_config;
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return bad(format!(
                "text_config.hidden_size {} is not a multiple of num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if self.projection_hidden_act != "relu" {
            return bad(format!(
                "projection_hidden_act {:?} is not supported (laion checkpoints use relu)",
                self.projection_hidden_act
            ));
        }
        Ok(())
    }
}

impl FeatureConfig {
    pub fn load(dir: &Path) -> Result<Self, ClapError> {
        let path = dir.join("preprocessor_config.json");
        Self::from_json_str(&read_text(&path)?, &path)
    }

    /// The config in `text`, read from `path` (named in errors). Values are checked where they
    /// are used (`FeatureExtractor::new`).
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ClapError> {
        parse_json(text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/clap")
            .join(name)
    }

    #[test]
    fn loads_both_fixture_snapshots() {
        let plain = ClapConfig::load(&fixture("tiny_clap")).unwrap();
        assert!(!plain.audio_config.enable_fusion);
        assert_eq!(plain.audio_config.patch_stride.pair(), [4, 4]);
        assert_eq!(plain.text_config.vocab_size, 300);
        assert_eq!(plain.projection_dim, 16);
        let fused = ClapConfig::load(&fixture("tiny_clap_fused")).unwrap();
        assert!(fused.audio_config.enable_fusion);
        let fe = FeatureConfig::load(&fixture("tiny_clap")).unwrap();
        assert_eq!(fe.truncation, Truncation::RandTrunc);
        assert_eq!(fe.frequency_min, 50.0);
        assert_eq!(fe.max_samples(), 480_000);
        let fe = FeatureConfig::load(&fixture("tiny_clap_fused")).unwrap();
        assert_eq!(fe.truncation, Truncation::Fusion);
        assert_eq!(fe.padding, Padding::Repeatpad);
    }

    #[test]
    fn inconsistent_widths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"audio_config": {"hidden_size": 100, "patch_embeds_hidden_size": 8}}"#,
        )
        .unwrap();
        let err = ClapConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("hidden_size 100"), "{err}");
    }
}
