//! The MusicGen pipeline: text -> T5 -> `enc_to_dec_proj` + mask -> decoder (CFG) -> codes ->
//! EnCodec -> 32 kHz audio, from the embedded tiny model or a Hugging Face snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use super::cache::LruCache;
use super::encodec::{Encodec, EncodecConfig};
use super::error::ModelError;
use super::musicgen::{Condition, Layout, MusicgenConfig, MusicgenModel, TinySpec};
use super::text::{self, TextEncoder};
use super::{fingerprint, hub, random_small, weights};

/// MusicGen's audio rate (the EnCodec 32 kHz codec).
pub const SAMPLE_RATE: u32 = 32_000;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// `facebook/musicgen-small` when the HF cache has it, else the embedded tiny model (warned).
    Auto,
    /// The embedded seeded model: random weights, no download.
    Tiny,
    /// The embedded seeded model at musicgen-small's dimensions: random weights, no download.
    RandomSmall,
    /// A repo id looked up in the local HF cache, e.g. `facebook/musicgen-small`.
    Hub(String),
    /// A `save_pretrained` snapshot directory.
    Path(PathBuf),
}

impl ModelSource {
    /// From the spec's `[model] name` / `path` (a path wins). `name = "auto"`: the musicgen-small
    /// snapshot when the HF cache has it, else the embedded tiny model (with a warning naming where
    /// it looked). `name = "tiny"`: embedded.
    pub fn from_spec(name: &str, path: Option<&Path>) -> ModelSource {
        match path {
            Some(p) => ModelSource::Path(p.to_path_buf()),
            None => Self::parse(name),
        }
    }

    /// `auto`, `tiny`, an existing directory, a hub id (`org/name`), else a directory path.
    pub fn parse(s: &str) -> ModelSource {
        match s.trim() {
            "auto" | "" => ModelSource::Auto,
            "tiny" => ModelSource::Tiny,
            "random-small" => ModelSource::RandomSmall,
            s if Path::new(s).is_dir() || !hub::looks_like_repo_id(s) => {
                ModelSource::Path(PathBuf::from(s))
            }
            s => ModelSource::Hub(s.to_string()),
        }
    }

    /// Resolves `Auto`/`Hub` to a concrete `Tiny`, `RandomSmall` or `Path` (error for a missing explicit hub id:
    /// where it looked + the download command; a `Path` must hold a config.json).
    pub fn resolve(&self) -> Result<ModelSource, ModelError> {
        match self {
            ModelSource::Tiny => Ok(ModelSource::Tiny),
            ModelSource::RandomSmall => Ok(ModelSource::RandomSmall),
            ModelSource::Path(p) => {
                if p.join("config.json").is_file() {
                    Ok(ModelSource::Path(p.clone()))
                } else if !p.exists() {
                    Err(ModelError::snapshot(
                        p,
                        format!(
                            "no such model directory (a hub id is written `org/name`, e.g. `{}`; \
                             `tiny` is the embedded model)",
                            hub::DEFAULT_HUB_ID
                        ),
                    ))
                } else {
                    Err(ModelError::snapshot(
                        p,
                        "not a model snapshot: no config.json (expected a save_pretrained directory)",
                    ))
                }
            }
            ModelSource::Hub(id) => Ok(ModelSource::Path(hub::find_snapshot(id)?)),
            ModelSource::Auto => match hub::find_snapshot(hub::DEFAULT_HUB_ID) {
                Ok(p) => Ok(ModelSource::Path(p)),
                Err(e) => {
                    warn_auto_fallback(&e);
                    Ok(ModelSource::Tiny)
                }
            },
        }
    }

    /// "tiny", "random-small", the repo id or the snapshot path: for node ids and metadata (cache keys use the
    /// fingerprint, which never contains a path).
    pub fn label(&self) -> String {
        match self {
            ModelSource::Tiny => "tiny".into(),
            ModelSource::RandomSmall => "random-small".into(),
            ModelSource::Hub(id) => id.clone(),
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Auto => match hub::find_snapshot(hub::DEFAULT_HUB_ID) {
                Ok(_) => hub::DEFAULT_HUB_ID.into(),
                Err(_) => "tiny".into(),
            },
        }
    }
}

fn warn_auto_fallback(e: &ModelError) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        eprintln!(
            "warning: model \"auto\" falls back to the embedded tiny model (RANDOM weights: the audio \
             and probe results mean nothing musically) because {e}"
        );
    });
}

/// The embedded model's parts, in one place so its fingerprint covers all of them.
struct TinyParts {
    decoder: TinySpec,
    codec: EncodecConfig,
    /// Seeds the T5 and EnCodec streams (each in its own domain).
    seed: u64,
}

impl TinyParts {
    fn new() -> Self {
        let decoder = TinySpec::default();
        let codec = EncodecConfig {
            // one code per decoder vocabulary entry: 11 bits x 50 Hz x 4 codebooks = 2.2 kb/s
            codebook_size: decoder.vocab_size,
            target_bandwidths: vec![2.2],
            ..EncodecConfig::tiny()
        };
        Self {
            seed: decoder.seed,
            decoder,
            codec,
        }
    }

    fn identity(&self) -> String {
        format!(
            "decoder {:?}\nt5 {:?}\ncodec {:?}\nseed {}",
            self.decoder,
            text::tiny_config(self.decoder.text_hidden_size),
            self.codec,
            self.seed
        )
    }
}

pub struct Pipeline {
    pub decoder: MusicgenModel,
    pub codec: Encodec,
    /// e.g. "tiny: embedded seeded model, RANDOM WEIGHTS ..." or the snapshot path.
    pub description: String,
    /// Hex; config + weight-file hashes (memoised by path/size/mtime).
    pub fingerprint: String,
    /// The resolved source (`Tiny`, `RandomSmall` or `Path`).
    pub source: ModelSource,
    /// Bytes of the weights as loaded (the model cache's size bound).
    pub weight_bytes: usize,
    text: TextEncoder,
}

type SharedKey = (ModelSource, String, String);

/// Models kept loaded per process (a run rarely uses more than one model and one CLAP).
const SHARED_MODELS: usize = 2;

fn shared_pipelines() -> &'static LruCache<SharedKey, Pipeline> {
    static SHARED: OnceLock<LruCache<SharedKey, Pipeline>> = OnceLock::new();
    SHARED.get_or_init(|| LruCache::new(SHARED_MODELS, usize::MAX))
}

impl Pipeline {
    /// The key fingerprint of a model and, for a snapshot, the external input it comes from (the
    /// embedded model has no files; its fingerprint covers what determines its weights).
    pub fn identity_of(
        source: &ModelSource,
    ) -> Result<(String, Option<crate::external::External>), ModelError> {
        match source.resolve()? {
            ModelSource::Path(dir) => {
                let e = fingerprint::snapshot_external(&dir, &weights::weight_files(&dir)?)?;
                Ok((e.fingerprint.clone(), Some(e)))
            }
            ModelSource::RandomSmall => {
                Ok((fingerprint::embedded(&random_small::identity()), None))
            }
            _ => Ok((fingerprint::embedded(&TinyParts::new().identity()), None)),
        }
    }

    pub fn fingerprint_of(source: &ModelSource) -> Result<String, ModelError> {
        Ok(Self::identity_of(source)?.0)
    }

    /// Decoder layers of a source, without loading its weights (a snapshot: its config.json).
    pub fn num_layers_of(source: &ModelSource) -> Result<usize, ModelError> {
        match source.resolve()? {
            ModelSource::Path(dir) => {
                let path = dir.join("config.json");
                let cfg = MusicgenConfig::from_file(&path)
                    .map_err(|e| ModelError::snapshot(&dir, e.to_string()))?;
                Ok(cfg.decoder.num_hidden_layers)
            }
            ModelSource::RandomSmall => Ok(random_small::decoder_spec().num_hidden_layers),
            _ => Ok(TinyParts::new().decoder.num_hidden_layers),
        }
    }

    /// Loads once per process and shares (Arc): nodes call this instead of loading per node.
    /// Loading one model does not block users of another; the [`SHARED_MODELS`] most recently
    /// used models stay loaded.
    pub fn shared(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
    ) -> Result<Arc<Pipeline>, ModelError> {
        let resolved = source.resolve()?;
        let key = (
            resolved.clone(),
            format!("{:?}", device.location()),
            format!("{dtype:?}"),
        );
        shared_pipelines().get_or_load(
            &key,
            |p| p.weight_bytes,
            || Self::load(&resolved, device, dtype),
        )
    }

    /// Loads without sharing.
    pub fn load(source: &ModelSource, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        match source.resolve()? {
            ModelSource::Path(dir) => Self::load_dir(&dir, device, dtype),
            ModelSource::RandomSmall => Self::random_small(device, dtype),
            _ => Self::tiny(device, dtype),
        }
    }

    /// The embedded model: tiny seeded decoder, T5 and EnCodec 32 kHz, random weights.
    pub fn tiny(device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let parts = TinyParts::new();
        let decoder = parts.decoder.build(device, dtype)?;
        let codec = Encodec::seeded(parts.codec.clone(), parts.seed, device)?;
        let text = TextEncoder::tiny(parts.decoder.text_hidden_size, parts.seed, device)?;
        Ok(Self {
            description: format!(
                "tiny: embedded seeded model, RANDOM WEIGHTS (seed {:#x}; decoder hidden {} x {} layers, \
                 T5 2 layers, EnCodec 32 kHz with {} filters, byte-level tokenizer) — not a trained model",
                parts.seed,
                parts.decoder.hidden_size,
                parts.decoder.num_hidden_layers,
                parts.codec.num_filters
            ),
            fingerprint: fingerprint::embedded(&parts.identity()),
            source: ModelSource::Tiny,
            weight_bytes: decoder.weight_bytes(),
            decoder,
            codec,
            text,
        })
    }

    /// The embedded model at musicgen-small's dimensions (see [`random_small`]): random weights
    /// drawn on load.
    pub fn random_small(device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let (decoder, text, codec) = random_small::build(device, dtype)?;
        Ok(Self {
            description: random_small::description(),
            fingerprint: fingerprint::embedded(&random_small::identity()),
            source: ModelSource::RandomSmall,
            weight_bytes: decoder.weight_bytes(),
            decoder,
            codec,
            text,
        })
    }

    /// The decoder, T5 and EnCodec configs of a composite snapshot's config.json (`text`, read
    /// from `path`): everything [`Pipeline::load_dir`] takes from it before the weights.
    pub fn snapshot_configs(
        text: &str,
        path: &Path,
    ) -> Result<
        (
            MusicgenConfig,
            candle_transformers::models::t5::Config,
            EncodecConfig,
        ),
        ModelError,
    > {
        let cfg = MusicgenConfig::from_json_str(text, &path.display().to_string())?;
        if cfg.layout != Layout::Composite {
            return Err(ModelError::snapshot(
                path,
                "a bare MusicGen decoder config; the pipeline needs a full \
                 MusicgenForConditionalGeneration snapshot (text_encoder, audio_encoder, decoder)",
            ));
        }
        let json: Value =
            serde_json::from_str(text).map_err(|e| ModelError::snapshot(path, e.to_string()))?;
        let t5_cfg = text::t5_config(&json["text_encoder"], path)?;
        let codec_cfg = EncodecConfig::from_json(&json["audio_encoder"].to_string())
            .map_err(|e| ModelError::snapshot(path, format!("audio_encoder: {e}")))?;
        Ok((cfg, t5_cfg, codec_cfg))
    }

    /// A full `MusicgenForConditionalGeneration` snapshot: config.json (with `text_encoder`,
    /// `audio_encoder` and `decoder`), weights in any layout [`weights::weight_files`] accepts, and
    /// the T5 tokenizer.json.
    pub fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let config_path = dir.join("config.json");
        let config_text = crate::fsx::read_text_limited(&config_path, crate::fsx::TEXT_LIMIT)
            .map_err(|e| ModelError::io(&config_path, e))?;
        let (cfg, t5_cfg, codec_cfg) = Self::snapshot_configs(&config_text, &config_path)?;
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(ModelError::snapshot(
                dir,
                "no tokenizer.json (the T5 tokenizer; MusicGen snapshots ship one — incomplete download?)",
            ));
        }
        let files = weights::weight_files(dir)?;
        // The decoder in the asked dtype; T5 and EnCodec always in f32 (see TextEncoder::load).
        let tensors = weights::load_tensors_as(&files, &|name: &str| {
            if name.starts_with("text_encoder.") || name.starts_with("audio_encoder.") {
                Some(DType::F32)
            } else {
                Some(dtype)
            }
        })?;
        let weight_bytes = tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        let decoder = MusicgenModel::new(
            cfg.clone(),
            VarBuilder::from_tensors(tensors.clone(), dtype, device),
        )
        .map_err(|e| ModelError::snapshot(dir, format!("decoder weights: {e}")))?;
        let text_vb = VarBuilder::from_tensors(
            weights::strip_prefix(&tensors, "text_encoder"),
            DType::F32,
            device,
        );
        let text = TextEncoder::load(&t5_cfg, text_vb, &tokenizer)
            .map_err(|e| ModelError::snapshot(dir, format!("text encoder: {e}")))?;
        let audio = weights::strip_prefix(&tensors, "audio_encoder")
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
        drop(tensors);
        let codec = Encodec::from_tensors(codec_cfg, audio, device)
            .map_err(|e| ModelError::snapshot(dir, format!("audio encoder: {e}")))?;
        let d = &cfg.decoder;
        if codec.config().codebook_size != d.vocab_size || codec.num_codebooks() != d.num_codebooks
        {
            return Err(ModelError::snapshot(
                &config_path,
                format!(
                    "the audio encoder has {} codebooks of {} codes but the decoder {} of {}",
                    codec.num_codebooks(),
                    codec.config().codebook_size,
                    d.num_codebooks,
                    d.vocab_size
                ),
            ));
        }
        Ok(Self {
            description: format!(
                "MusicGen snapshot {} (decoder hidden {} x {} layers, T5 d_model {} x {} layers, \
                 EnCodec {} Hz)",
                dir.display(),
                d.hidden_size,
                d.num_hidden_layers,
                t5_cfg.d_model,
                t5_cfg.num_layers,
                codec.config().sampling_rate
            ),
            fingerprint: fingerprint::snapshot(dir, &files)?,
            source: ModelSource::Path(dir.to_path_buf()),
            weight_bytes,
            decoder,
            codec,
            text,
        })
    }

    pub fn text_encoder(&self) -> &TextEncoder {
        &self.text
    }

    /// Audio samples per second of the codec (32 000 for MusicGen).
    pub fn sample_rate(&self) -> u32 {
        self.codec.config().sampling_rate as u32
    }

    /// Code frames per second (50 for MusicGen).
    pub fn frame_rate(&self) -> usize {
        self.codec.config().frame_rate()
    }

    /// Decoder steps that yield `seconds` of audio (the delay pattern costs K - 1 extra steps).
    pub fn steps_for_seconds(&self, seconds: f64) -> Result<usize, ModelError> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(ModelError::Input(format!(
                "seconds must be a positive number, got {seconds}"
            )));
        }
        let frames = ((seconds * self.frame_rate() as f64).round() as usize).max(1);
        Ok(frames + self.decoder.num_codebooks() - 1)
    }

    /// T5 -> mask -> `enc_to_dec_proj`, plus the zeroed unconditional twin for CFG.
    pub fn condition(&self, prompts: &[String]) -> Result<Condition, ModelError> {
        let (states, mask) = self.text.encode(prompts)?;
        Ok(self.decoder.condition(&states, Some(&mask))?)
    }

    /// `[B, 1, S]` f32 at [`Pipeline::sample_rate`] -> codes `[B, K, F]` u32.
    pub fn encode_audio(&self, audio: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.codec.encode(audio)?)
    }

    /// Codes `[B, K, F]` -> audio `[B, 1, S]` f32.
    pub fn decode_codes(&self, codes: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.codec.decode(codes)?)
    }
}
