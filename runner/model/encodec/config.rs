//! `EncodecConfig` as Hugging Face writes it in `config.json` (plain strings, not enums, so every HF file
//! parses; unsupported values are rejected by [`EncodecConfig::validate`] with a clear message).

use serde::Deserialize;

use super::EncodecError;

/// Fields of HF's `EncodecConfig` that shape the network; defaults are HF's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EncodecConfig {
    pub target_bandwidths: Vec<f64>,
    pub sampling_rate: usize,
    pub audio_channels: usize,
    pub normalize: bool,
    pub chunk_length_s: Option<f64>,
    pub overlap: Option<f64>,
    pub hidden_size: usize,
    pub num_filters: usize,
    pub num_residual_layers: usize,
    pub upsampling_ratios: Vec<usize>,
    pub norm_type: String,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub use_causal_conv: bool,
    pub pad_mode: String,
    pub compress: usize,
    pub num_lstm_layers: usize,
    pub trim_right_ratio: f64,
    pub codebook_size: usize,
    pub codebook_dim: Option<usize>,
    pub use_conv_shortcut: bool,
}

impl Default for EncodecConfig {
    fn default() -> Self {
        Self {
            target_bandwidths: vec![1.5, 3.0, 6.0, 12.0, 24.0],
            sampling_rate: 24_000,
            audio_channels: 1,
            normalize: false,
            chunk_length_s: None,
            overlap: None,
            hidden_size: 128,
            num_filters: 32,
            num_residual_layers: 1,
            upsampling_ratios: vec![8, 5, 4, 2],
            norm_type: "weight_norm".into(),
            kernel_size: 7,
            last_kernel_size: 7,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            use_causal_conv: true,
            pad_mode: "reflect".into(),
            compress: 2,
            num_lstm_layers: 2,
            trim_right_ratio: 1.0,
            codebook_size: 1024,
            codebook_dim: None,
            use_conv_shortcut: true,
        }
    }
}

/// `torch.nn.functional.pad` modes HF's `EncodecConv1d` can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Replicate,
}

impl EncodecConfig {
    /// facebook/encodec_32khz, the codec of every MusicGen checkpoint.
    pub fn encodec_32khz() -> Self {
        Self {
            target_bandwidths: vec![2.2],
            sampling_rate: 32_000,
            num_filters: 64,
            upsampling_ratios: vec![8, 5, 4, 4],
            use_causal_conv: false,
            codebook_size: 2048,
            use_conv_shortcut: false,
            ..Self::default()
        }
    }

    /// The 32 kHz architecture (50 Hz frames, 4 codebooks, reflect padding, non-causal) with tiny
    /// channels: the embedded default model and the shape of the parity fixtures.
    pub fn tiny() -> Self {
        Self {
            num_filters: 2,
            hidden_size: 8,
            codebook_size: 64,
            // 6 bits x 50 Hz = 300 b/s per codebook -> 4 codebooks
            target_bandwidths: vec![1.2],
            ..Self::encodec_32khz()
        }
    }

    pub fn from_json(text: &str) -> Result<Self, EncodecError> {
        let cfg: Self = serde_json::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects what this port does not implement instead of computing something else.
    pub fn validate(&self) -> Result<(), EncodecError> {
        let bad = |m: String| Err(EncodecError::Unsupported(m));
        if self.norm_type != "weight_norm" {
            return bad(format!(
                "norm_type {:?} (only \"weight_norm\" is implemented)",
                self.norm_type
            ));
        }
        if self.normalize {
            return bad("normalize=true (per-clip scales are not carried with the codes)".into());
        }
        if self.chunk_length_s.is_some() {
            return bad(
                "chunk_length_s (chunked encoding with overlap-add is not implemented)".into(),
            );
        }
        self.pad_mode()?;
        if !self.codebook_size.is_power_of_two() {
            return bad(format!(
                "codebook_size {} is not a power of 2",
                self.codebook_size
            ));
        }
        if !self.use_causal_conv && self.trim_right_ratio != 1.0 {
            return bad("trim_right_ratio != 1.0 only makes sense for causal convolutions".into());
        }
        if self.upsampling_ratios.is_empty()
            || self.target_bandwidths.is_empty()
            || self.compress == 0
        {
            return bad("empty upsampling_ratios/target_bandwidths or compress=0".into());
        }
        // hop_length and frame_rate divide and multiply by these.
        let hop = self
            .upsampling_ratios
            .iter()
            .try_fold(1usize, |a, &r| a.checked_mul(r));
        if self.sampling_rate == 0 || hop.is_none_or(|h| h == 0) {
            return bad(format!(
                "sampling_rate {} and upsampling_ratios {:?} must be positive, their product a size",
                self.sampling_rate, self.upsampling_ratios
            ));
        }
        Ok(())
    }

    pub fn pad_mode(&self) -> Result<PadMode, EncodecError> {
        match self.pad_mode.as_str() {
            "constant" | "zero" | "zeros" => Ok(PadMode::Constant),
            "reflect" => Ok(PadMode::Reflect),
            "replicate" => Ok(PadMode::Replicate),
            other => Err(EncodecError::Unsupported(format!("pad_mode {other:?}"))),
        }
    }

    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Audio samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames per second (HF rounds up).
    pub fn frame_rate(&self) -> usize {
        self.sampling_rate.div_ceil(self.hop_length())
    }

    fn bits_per_codebook(&self) -> f64 {
        (self.codebook_size as f64).log2()
    }

    /// Codebooks held by the quantiser (enough for the largest target bandwidth).
    pub fn num_quantizers(&self) -> usize {
        let per_q = self.frame_rate() as f64 * self.bits_per_codebook().ceil();
        let max_bw = self.target_bandwidths.last().copied().unwrap_or(0.0);
        (1000.0 * max_bw / per_q).floor() as usize
    }

    /// Codebooks used at `bandwidth` kb/s, as HF's `get_num_quantizers_for_bandwidth`.
    pub fn num_quantizers_for_bandwidth(&self, bandwidth: f64) -> usize {
        let per_q = self.bits_per_codebook() * self.frame_rate() as f64;
        if bandwidth > 0.0 {
            ((bandwidth * 1000.0 / per_q).floor() as usize).max(1)
        } else {
            self.num_quantizers()
        }
    }
}
