//! The assembled CLAP model: a snapshot directory in, L2-normalised audio and text embeddings out,
//! computed as transformers' `ClapModel.get_audio_features` / `get_text_features` compute them.
//!
//! Audio at any rate is resampled to the extractor's rate (48 kHz) with the project's rubato
//! resampler and processed one clip at a time, as `ClapProcessor(audios=clip)` would: with
//! truncation `fusion` that marks the clip "longer" (see [`features`](super::features)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::config::{ClapConfig, FeatureConfig};
use super::features::{Crops, FeatureExtractor, MelInput, resample};
use super::htsat::{HtsatEncoder, Projection};
use super::text::{TextEncoder, load_tokenizer, tokenize};
use super::{ClapError, DEFAULT_HUB_ID};
use crate::model::{fingerprint, hub, weights};

/// Where the CLAP snapshot comes from: the spec's `[evaluate] clap_model` or `--model`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClapSource {
    /// A repo id looked up in the local Hugging Face cache (`auto` = `laion/larger_clap_music`).
    Hub(String),
    /// A `save_pretrained` snapshot directory.
    Path(PathBuf),
}

impl ClapSource {
    /// `auto`, an existing directory, a hub id (`org/name`), else a directory path.
    pub fn parse(s: &str) -> ClapSource {
        match s.trim() {
            "auto" | "" => ClapSource::Hub(DEFAULT_HUB_ID.into()),
            s if Path::new(s).is_dir() || !hub::looks_like_repo_id(s) => {
                ClapSource::Path(PathBuf::from(s))
            }
            s => ClapSource::Hub(s.to_string()),
        }
    }

    /// The snapshot directory, or [`ClapError::MissingSnapshot`] naming where it looked and the
    /// download command.
    pub fn resolve(&self) -> Result<PathBuf, ClapError> {
        match self {
            ClapSource::Path(p) if p.join("config.json").is_file() => Ok(p.clone()),
            ClapSource::Path(p) => Err(ClapError::MissingSnapshot {
                id: DEFAULT_HUB_ID.into(),
                looked: vec![p.clone()],
            }),
            ClapSource::Hub(id) => hub::find_snapshot(id).map_err(|e| match e {
                crate::model::ModelError::MissingSnapshot { id, looked } => {
                    ClapError::MissingSnapshot { id, looked }
                }
                other => other.into(),
            }),
        }
    }

    pub fn label(&self) -> String {
        match self {
            ClapSource::Hub(id) => id.clone(),
            ClapSource::Path(p) => p.display().to_string(),
        }
    }
}

/// The files whose contents decide what the model computes, in a fixed order.
fn snapshot_files(dir: &Path) -> Result<Vec<PathBuf>, ClapError> {
    let mut files = vec![
        dir.join("config.json"),
        dir.join("preprocessor_config.json"),
    ];
    files.extend(weights::weight_files(dir)?);
    for name in ["tokenizer.json", "vocab.json", "merges.txt"] {
        let p = dir.join(name);
        if p.is_file() {
            files.push(p);
        }
    }
    Ok(files)
}

/// blake3 over the snapshot's config, preprocessor config, weights and tokenizer files (names
/// relative to the snapshot, never its path), so cached scores follow the model, not where it lives.
pub fn fingerprint(dir: &Path) -> Result<String, ClapError> {
    Ok(fingerprint::of_files(CLAP_TAG, &snapshot_files(dir)?)?)
}

const CLAP_TAG: &[u8] = b"rfmx clap fingerprint v1\0";

/// The snapshot as an external input of the evaluation nodes that score with it.
pub fn external(dir: &Path) -> Result<crate::external::External, ClapError> {
    crate::external::External::files("CLAP snapshot", CLAP_TAG, snapshot_files(dir)?)
        .map_err(|e| ClapError::from(crate::model::ModelError::from_external(e)))
}

pub struct Clap {
    pub config: ClapConfig,
    pub features: FeatureExtractor,
    pub dir: PathBuf,
    pub fingerprint: String,
    audio: HtsatEncoder,
    audio_projection: Projection,
    text: TextEncoder,
    text_projection: Projection,
    tokenizer: Tokenizer,
    device: Device,
}

/// Loaded models by (snapshot dir, device).
type Shared = Mutex<HashMap<(PathBuf, String), Arc<Clap>>>;

fn shared_models() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// Rows of `x` [n, d] scaled to unit length (`F.normalize`, eps 1e-12).
fn l2_normalize(x: &Tensor) -> Result<Tensor, ClapError> {
    let norm = x
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&norm)?)
}

fn rows(x: &Tensor) -> Result<Vec<Vec<f32>>, ClapError> {
    Ok(x.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?)
}

impl Clap {
    /// Loads a snapshot: config.json, preprocessor_config.json, weights (any layout the MusicGen
    /// loader takes) and the tokenizer.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClapError> {
        let config = ClapConfig::load(dir)?;
        let features = FeatureExtractor::new(FeatureConfig::load(dir)?).map_err(|e| {
            ClapError::snapshot(dir.join("preprocessor_config.json"), e.to_string())
        })?;
        let fe = features.config();
        if fe.feature_size != config.audio_config.num_mel_bins {
            return Err(ClapError::snapshot(
                dir,
                format!(
                    "preprocessor feature_size {} differs from audio_config.num_mel_bins {}",
                    fe.feature_size, config.audio_config.num_mel_bins
                ),
            ));
        }
        let files = weights::weight_files(dir)?;
        let tensors = weights::load_tensors(&files)?;
        // Integer buffers (relative_position_index, position_ids, num_batches_tracked) are
        // recomputed or unused; only float tensors become weights.
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .filter(|(_, t)| t.dtype().is_float())
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let a = &config.audio_config;
        let t = &config.text_config;
        let audio = HtsatEncoder::load(vb.pp("audio_model").pp("audio_encoder"), a)?;
        let audio_projection = Projection::load(
            vb.pp("audio_projection"),
            a.hidden_size,
            config.projection_dim,
        )?;
        let text = TextEncoder::load(vb.pp("text_model"), t)?;
        let text_projection = Projection::load(
            vb.pp("text_projection"),
            t.hidden_size,
            config.projection_dim,
        )?;
        let tokenizer = load_tokenizer(dir)?;
        Ok(Self {
            fingerprint: fingerprint(dir)?,
            dir: dir.to_path_buf(),
            config,
            features,
            audio,
            audio_projection,
            text,
            text_projection,
            tokenizer,
            device: device.clone(),
        })
    }

    /// Loads once per process and shares: every evaluation node of a run uses one model.
    pub fn shared(source: &ClapSource, device: &Device) -> Result<Arc<Clap>, ClapError> {
        let dir = source.resolve()?;
        let key = (dir.clone(), format!("{:?}", device.location()));
        let mut map = shared_models().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(&key) {
            return Ok(m.clone());
        }
        let m = Arc::new(Self::load(&dir, device)?);
        map.insert(key, m.clone());
        Ok(m)
    }

    /// The extractor's input for one clip at `sample_rate` (resampled when it differs). `seed`
    /// draws the crops of clips longer than `max_length_s`.
    pub fn mel(&self, samples: &[f32], sample_rate: u32, seed: u64) -> Result<MelInput, ClapError> {
        let target = self.features.config().sampling_rate;
        let wave: Vec<f64> = if sample_rate == target {
            samples.iter().map(|&v| f64::from(v)).collect()
        } else {
            resample(samples, sample_rate, target)?
                .into_iter()
                .map(f64::from)
                .collect()
        };
        // The extractor refuses empty and non-finite clips.
        self.features.extract(&wave, &Crops::Seeded(seed))
    }

    /// Normalised audio embeddings [B, projection_dim] of extractor inputs (one per clip; all
    /// must have one shape, as the extractor gives for one model).
    pub fn embed_mels(&self, mels: &[MelInput]) -> Result<Vec<Vec<f32>>, ClapError> {
        if mels.is_empty() {
            return Ok(Vec::new());
        }
        let xs = mels
            .iter()
            .map(|m| m.to_tensor(&self.device))
            .collect::<Result<Vec<_>, _>>()?;
        let x = Tensor::cat(&xs, 0)?;
        let longer: Vec<bool> = mels.iter().map(|m| m.is_longer).collect();
        let pooled = self.audio.forward(&x, &longer)?;
        rows(&l2_normalize(&self.audio_projection.forward(&pooled)?)?)
    }

    /// Normalised audio embedding of one clip.
    pub fn embed_audio(
        &self,
        samples: &[f32],
        sample_rate: u32,
        seed: u64,
    ) -> Result<Vec<f32>, ClapError> {
        let mel = self.mel(samples, sample_rate, seed)?;
        let mut e = self.embed_mels(std::slice::from_ref(&mel))?;
        e.pop()
            .ok_or_else(|| ClapError::Input("no embedding".into()))
    }

    /// Normalised text embeddings [n, projection_dim] (texts padded to the longest, as
    /// `tokenizer(texts, padding=True)`).
    pub fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ClapError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = tokenize(
            &self.tokenizer,
            texts,
            &self.config.text_config,
            &self.device,
        )?;
        let pooled = self.text.forward(&ids, &mask)?;
        rows(&l2_normalize(&self.text_projection.forward(&pooled)?)?)
    }

    /// A one-line description for reports: the snapshot and its architecture.
    pub fn description(&self) -> String {
        let a = &self.config.audio_config;
        format!(
            "CLAP {} (HTSAT width {} depths {:?}{}, RoBERTa {}×{}, projection {})",
            self.dir.display(),
            a.patch_embeds_hidden_size,
            a.depths,
            if a.enable_fusion { ", fusion" } else { "" },
            self.config.text_config.num_hidden_layers,
            self.config.text_config.hidden_size,
            self.config.projection_dim
        )
    }
}

/// Dot product of two normalised embeddings = their cosine.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}
