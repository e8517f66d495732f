//! EnCodec (the MusicGen audio codec, facebook/encodec_32khz) in candle, ported from Hugging Face's
//! `modeling_encodec.py`. Our own port rather than `candle_transformers::models::encodec`, which does not
//! reflect-pad, does not trim transposed convolutions the way HF does, and cannot parse HF's config.json.

mod config;
mod conv;
mod lstm;
mod quantizer;
mod seanet;
mod seeded;
mod weights;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::{EncodecConfig, PadMode};
pub(crate) use seeded::init as seeded_init;
pub use weights::{fold, fold_weight_norm, load_safetensors_dir};

use quantizer::ResidualVq;
use seanet::Seanet;

#[derive(Debug, thiserror::Error)]
pub enum EncodecError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("parsing EnCodec config.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("EnCodec config not supported: {0}")]
    Unsupported(String),
    #[error("EnCodec weights: {0}")]
    Weights(String),
    #[error("EnCodec input: {0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub struct Encodec {
    config: EncodecConfig,
    encoder: Seanet,
    decoder: Seanet,
    quantizer: ResidualVq,
    device: Device,
}

impl Encodec {
    /// Builds the model from folded weights (see [`fold_weight_norm`]) under HF's names
    /// (`encoder.`, `decoder.`, `quantizer.`; pass `vb.pp("audio_encoder")` for a MusicGen checkpoint).
    pub fn new(config: EncodecConfig, vb: VarBuilder) -> Result<Self, EncodecError> {
        config.validate()?;
        Ok(Self {
            encoder: Seanet::encoder(&config, vb.pp("encoder"))?,
            decoder: Seanet::decoder(&config, vb.pp("decoder"))?,
            quantizer: ResidualVq::new(&config, vb.pp("quantizer"))?,
            device: vb.device().clone(),
            config,
        })
    }

    /// Builds the model from an in-memory tensor map (either weight-norm layout, or already folded).
    pub fn from_tensors(
        config: EncodecConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, EncodecError> {
        let tensors = fold_weight_norm(tensors)?;
        Self::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )
    }

    /// Loads a `save_pretrained` directory: `config.json` + `model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EncodecError> {
        let path = dir.join("config.json");
        let text = crate::fsx::read_text_limited(&path, crate::fsx::TEXT_LIMIT)
            .map_err(|source| EncodecError::Read { path, source })?;
        let config = EncodecConfig::from_json(&text)?;
        let tensors = load_safetensors_dir(dir, device)?;
        Self::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )
    }

    /// A model with deterministic random weights for `seed` (see `seeded.rs`): same seed, same model.
    pub fn seeded(config: EncodecConfig, seed: u64, device: &Device) -> Result<Self, EncodecError> {
        let backend = Box::new(seeded::backend(seed));
        Self::new(
            config,
            VarBuilder::from_backend(backend, DType::F32, device.clone()),
        )
    }

    /// The embedded default codec: [`EncodecConfig::tiny`] with seeded weights, on the CPU.
    pub fn tiny(seed: u64) -> Result<Self, EncodecError> {
        Self::seeded(EncodecConfig::tiny(), seed, &Device::Cpu)
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.config
    }

    /// Codebooks `encode` produces: those for HF's default bandwidth, `target_bandwidths[0]`
    /// (4 for facebook/encodec_32khz, as MusicGen uses).
    pub fn num_codebooks(&self) -> usize {
        self.config
            .num_quantizers_for_bandwidth(self.config.target_bandwidths[0])
            .min(self.quantizer.num_codebooks())
    }

    /// audio [B, channels, T] (f32, at `sampling_rate`) -> codes [B, K, ceil(T / hop)] (u32), at HF's
    /// default bandwidth.
    pub fn encode(&self, audio: &Tensor) -> Result<Tensor, EncodecError> {
        self.encode_with_bandwidth(audio, self.config.target_bandwidths[0])
    }

    /// As [`Encodec::encode`] at `bandwidth` kb/s, which must be one of `target_bandwidths` (as in HF).
    pub fn encode_with_bandwidth(
        &self,
        audio: &Tensor,
        bandwidth: f64,
    ) -> Result<Tensor, EncodecError> {
        if !self.config.target_bandwidths.contains(&bandwidth) {
            return Err(EncodecError::Input(format!(
                "bandwidth {bandwidth} is not one of {:?}",
                self.config.target_bandwidths
            )));
        }
        let (_, c, t) = audio.dims3().map_err(|_| {
            EncodecError::Input(format!(
                "audio must be [batch, channels, time], got {:?}",
                audio.dims()
            ))
        })?;
        if c != self.config.audio_channels || t == 0 {
            return Err(EncodecError::Input(format!(
                "audio has {c} channels and {t} samples; the model takes {} channels",
                self.config.audio_channels
            )));
        }
        let audio = audio.to_device(&self.device)?.to_dtype(DType::F32)?;
        let n_q = self
            .config
            .num_quantizers_for_bandwidth(bandwidth)
            .min(self.quantizer.num_codebooks());
        self.per_item(&audio, |x| {
            let embeddings = self.encoder.forward(x)?;
            self.quantizer.encode(&embeddings, n_q)
        })
    }

    /// `f` over the batch: at once on a GPU; one item at a time on the CPU, where every item
    /// already fills the cores and a batch only multiplies the activations' memory (a 4 s clip's
    /// first layers hold 64 × 128 000 floats, 33 MB; 16 of them fall out of the caches and must
    /// be paged in fresh: 0.62 s a clip in batches of 16 against 0.42 s one at a time). Items
    /// never mix in EnCodec, so the result is the same.
    fn per_item(
        &self,
        x: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor, EncodecError>,
    ) -> Result<Tensor, EncodecError> {
        let b = x.dim(0)?;
        if b <= 1 || !matches!(self.device, Device::Cpu) {
            return f(x);
        }
        let items = (0..b)
            .map(|i| f(&x.narrow(0, i, 1)?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::cat(&items, 0)?)
    }

    /// codes [B, K, F] (any integer dtype) -> audio [B, channels, F * hop] (f32).
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor, EncodecError> {
        let (_, k, f) = codes.dims3().map_err(|_| {
            EncodecError::Input(format!(
                "codes must be [batch, codebooks, frames], got {:?}",
                codes.dims()
            ))
        })?;
        if k == 0 || k > self.quantizer.num_codebooks() || f == 0 {
            return Err(EncodecError::Input(format!(
                "codes have {k} codebooks and {f} frames; the model has {} codebooks",
                self.quantizer.num_codebooks()
            )));
        }
        let max = codes.to_dtype(DType::F64)?.max_all()?.to_scalar::<f64>()?;
        let min = codes.to_dtype(DType::F64)?.min_all()?.to_scalar::<f64>()?;
        if min < 0.0 || max >= self.config.codebook_size as f64 {
            return Err(EncodecError::Input(format!(
                "codes range over [{min}, {max}], outside [0, {})",
                self.config.codebook_size
            )));
        }
        self.per_item(&codes.to_device(&self.device)?, |c| {
            let embeddings = self.quantizer.decode(c)?;
            self.decoder.forward(&embeddings)
        })
    }
}
