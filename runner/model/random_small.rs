//! `random-small`: MusicGen at musicgen-small's real dimensions with seeded RANDOM weights, built in
//! code like `tiny` and just as download-free. Decoder 1024 x 24 layers x 16 heads (FFN 4096, 4
//! codebooks of 2048 codes), a t5-base-shaped text encoder (768 x 12 layers x 12 heads, FFN 3072,
//! 32128-token embedding, fed by the embedded byte-level tokenizer) and EnCodec 32 kHz at its real
//! widths (64 filters, 128-d latents, 4 x 2048 codebooks). It exists to test robustness and measure
//! speed at the size users run; its audio and probe results mean nothing musically.
//!
//! Its ~2.3 GB of f32 weights are drawn on every load by [`super::seeded::seeded_map`] (parallel,
//! SIMD keyed streams): the list of tensors comes from building each network once against a
//! recording backend, so the names and shapes are exactly what the networks ask for.

use std::collections::HashMap;

use candle_core::{DType, Device};
use candle_nn::{Activation, VarBuilder};
use candle_transformers::models::t5;

use super::encodec::{Encodec, EncodecConfig};
use super::error::ModelError;
use super::musicgen::{MusicgenModel, TinySpec};
use super::seeded::{RecordingBackend, seeded_map};
use super::text::{self, TextEncoder};

/// Seeds all three networks (each in its own stream domain).
pub const SEED: u64 = 0x5EED_5A11;

/// The stream domains; changing one changes every random-small weight of that network.
const DECODER_DOMAIN: &str = "rfmx random-small decoder v1";
const T5_DOMAIN: &str = "rfmx random-small t5 v1";
const CODEC_DOMAIN: &str = "rfmx random-small encodec v1";

/// musicgen-small's decoder sizes.
pub fn decoder_spec() -> TinySpec {
    TinySpec {
        hidden_size: 1024,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        ffn_dim: 4096,
        vocab_size: 2048,
        num_codebooks: 4,
        text_hidden_size: 768,
        seed: SEED,
    }
}

/// t5-base's encoder sizes (the text encoder of every MusicGen checkpoint).
pub fn t5_config() -> t5::Config {
    t5::Config {
        vocab_size: 32128,
        d_model: 768,
        d_kv: 64,
        d_ff: 3072,
        num_layers: 12,
        num_heads: 12,
        feed_forward_proj: t5::ActivationWithOptionalGating {
            gated: false,
            activation: Activation::Relu,
        },
        ..text::tiny_config(768)
    }
}

/// Everything that determines the weights (the model fingerprint hashes it).
pub fn identity() -> String {
    format!(
        "random-small\ndecoder {:?} {DECODER_DOMAIN}\nt5 {:?} {T5_DOMAIN}\ncodec {:?} {CODEC_DOMAIN}\nseed {SEED}",
        decoder_spec(),
        t5_config(),
        EncodecConfig::encodec_32khz()
    )
}

pub fn description() -> String {
    let d = decoder_spec();
    let t = t5_config();
    format!(
        "random-small: embedded seeded model at musicgen-small dimensions, RANDOM WEIGHTS (seed {SEED:#x}; \
         decoder hidden {} x {} layers x {} heads, T5 {} x {} layers, EnCodec 32 kHz with {} filters, \
         byte-level tokenizer) — not a trained model",
        d.hidden_size,
        d.num_hidden_layers,
        d.num_attention_heads,
        t.d_model,
        t.num_layers,
        EncodecConfig::encodec_32khz().num_filters
    )
}

/// The three networks with freshly drawn weights, the decoder in `dtype` (T5 and EnCodec in f32,
/// as for snapshots).
pub fn build(
    device: &Device,
    dtype: DType,
) -> Result<(MusicgenModel, TextEncoder, Encodec), ModelError> {
    let spec = decoder_spec();
    let decoder_names = record(|vb| MusicgenModel::new(spec.config(), vb).map(drop))?;
    let weights = seeded_map(DECODER_DOMAIN, SEED, &decoder_names, decoder_init)?;
    let decoder = MusicgenModel::new(
        spec.config(),
        VarBuilder::from_tensors(weights, dtype, device),
    )?;

    let t5_cfg = t5_config();
    let t5_names = record(|vb| t5::T5EncoderModel::load(vb, &t5_cfg).map(drop))?;
    let weights = seeded_map(T5_DOMAIN, SEED, &t5_names, text::tiny_init)?;
    let model = t5::T5EncoderModel::load(
        VarBuilder::from_tensors(weights, DType::F32, device),
        &t5_cfg,
    )?;
    let text = TextEncoder::new(model, text::tiny_tokenizer()?, t5_cfg.d_model);

    let codec_cfg = EncodecConfig::encodec_32khz();
    let codec_names = record(|vb| Encodec::new(codec_cfg.clone(), vb).map(drop))?;
    let weights = seeded_map(
        CODEC_DOMAIN,
        SEED,
        &codec_names,
        super::encodec::seeded_init,
    )?;
    let codec = Encodec::new(
        codec_cfg,
        VarBuilder::from_tensors(weights, DType::F32, device),
    )?;
    Ok((decoder, text, codec))
}

/// The (name, shape) of every weight `make` asks its VarBuilder for, in no particular order.
fn record<E>(
    make: impl FnOnce(VarBuilder<'static>) -> Result<(), E>,
) -> Result<Vec<(String, Vec<usize>)>, ModelError>
where
    ModelError: From<E>,
{
    let rec = RecordingBackend::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    make(vb)?;
    // A name asked for twice (shared weights) is drawn once.
    let mut seen = HashMap::new();
    Ok(rec
        .take()
        .into_iter()
        .filter(|(n, s)| seen.insert(n.clone(), s.clone()).is_none())
        .collect())
}

/// The decoder's init, as the tiny model's: embeddings U(±0.5), linear weights uniform with
/// variance 1/fan_in (activations stay O(1) through 24 blocks), layer norms near identity,
/// biases U(±0.1).
fn decoder_init(name: &str, dims: &[usize]) -> (f32, f32) {
    if name.contains("embed_tokens") {
        (0.0, 0.5)
    } else if name.contains("layer_norm") && name.ends_with(".weight") {
        (1.0, 0.1)
    } else if dims.len() >= 2 {
        (0.0, (3.0 / dims[1].max(1) as f32).sqrt())
    } else {
        (0.0, 0.1)
    }
}
