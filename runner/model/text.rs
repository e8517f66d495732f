//! T5 text conditioning: the tokenizer (`tokenizers`, from a snapshot's `tokenizer.json`, or the
//! embedded byte-level one) and candle-transformers' T5 encoder.
//!
//! Prompts are encoded one at a time and the states zero-padded on the right with a `[B, S]` mask.
//! For the unpadded positions this is exactly what transformers computes for a right-padded batch
//! with an attention mask (masked keys get zero weight; T5's relative position bias does not depend
//! on the padding), and MusicGen multiplies the padded positions by the mask anyway.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Activation, VarBuilder};
use candle_transformers::models::t5;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::error::ModelError;
use super::seeded::SeededBackend;

/// Special tokens of the embedded tokenizer, at T5's ids.
const PAD: (&str, u32) = ("<pad>", 0);
const EOS: (&str, u32) = ("</s>", 1);
const UNK: (&str, u32) = ("<unk>", 2);
/// Byte `b` is token `BYTE_OFFSET + b`.
const BYTE_OFFSET: u32 = 3;

pub struct TextEncoder {
    model: t5::T5EncoderModel,
    tokenizer: Tokenizer,
    device: Device,
    hidden: usize,
}

impl TextEncoder {
    pub fn new(model: t5::T5EncoderModel, tokenizer: Tokenizer, hidden: usize) -> Self {
        let device = model.device().clone();
        Self {
            model,
            tokenizer,
            device,
            hidden,
        }
    }

    /// The embedded encoder: [`tiny_config`] with seeded weights and [`tiny_tokenizer`].
    pub fn tiny(d_model: usize, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let cfg = tiny_config(d_model);
        let backend = SeededBackend::new("rfmx t5 seeded v1", seed, tiny_init);
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let model = t5::T5EncoderModel::load(vb, &cfg)?;
        Ok(Self::new(model, tiny_tokenizer()?, d_model))
    }

    /// The encoder of a MusicGen snapshot: `vb` rooted at `text_encoder.`, always f32 (T5 overflows
    /// in f16, and it runs once per prompt).
    pub fn load(
        cfg: &t5::Config,
        vb: VarBuilder,
        tokenizer_json: &Path,
    ) -> Result<Self, ModelError> {
        let model = t5::T5EncoderModel::load(vb, cfg)?;
        Ok(Self::new(
            model,
            load_tokenizer(tokenizer_json)?,
            cfg.d_model,
        ))
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Token ids of each prompt, with T5's trailing `</s>`.
    pub fn tokenize(&self, prompts: &[String]) -> Result<Vec<Vec<u32>>, ModelError> {
        prompts
            .iter()
            .map(|p| encode_prompt(&self.tokenizer, p))
            .collect()
    }

    /// `(states [B, S, D] f32, mask [B, S] f32)` for the prompts; padded rows are zero.
    pub fn encode(&self, prompts: &[String]) -> Result<(Tensor, Tensor), ModelError> {
        self.encode_ids(&self.tokenize(prompts)?)
    }

    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Result<(Tensor, Tensor), ModelError> {
        if ids.is_empty() || ids.iter().any(Vec::is_empty) {
            return Err(ModelError::Input(
                "text conditioning needs at least one prompt, each with at least one token".into(),
            ));
        }
        let s = ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(ids.len());
        let mut mask = Vec::with_capacity(ids.len() * s);
        for row in ids {
            // The encoder is stateless (no cache) but `forward` takes `&mut self`: clone the handles.
            let mut model = self.model.clone();
            let input = Tensor::new(row.as_slice(), &self.device)?.unsqueeze(0)?;
            let h = model.forward(&input)?.to_dtype(DType::F32)?;
            let pad = s - row.len();
            let h = if pad > 0 {
                let z = Tensor::zeros((1, pad, self.hidden), DType::F32, &self.device)?;
                Tensor::cat(&[&h, &z], 1)?
            } else {
                h
            };
            rows.push(h);
            mask.extend((0..s).map(|i| if i < row.len() { 1f32 } else { 0.0 }));
        }
        let states = Tensor::cat(&rows, 0)?;
        let mask = Tensor::from_vec(mask, (ids.len(), s), &self.device)?;
        Ok((states, mask))
    }
}

/// The embedded T5: the t5-base layout at toy size (2 layers, 4 heads of 16, FFN 128) with the width
/// the decoder's `enc_to_dec_proj` expects.
pub fn tiny_config(d_model: usize) -> t5::Config {
    t5::Config {
        vocab_size: (BYTE_OFFSET + 256) as usize,
        d_model,
        d_kv: 16,
        d_ff: 128,
        num_layers: 2,
        num_decoder_layers: None,
        num_heads: 4,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        dropout_rate: 0.0,
        layer_norm_epsilon: 1e-6,
        initializer_factor: 1.0,
        feed_forward_proj: t5::ActivationWithOptionalGating {
            gated: false,
            activation: Activation::Relu,
        },
        tie_word_embeddings: true,
        is_decoder: false,
        is_encoder_decoder: true,
        use_cache: false,
        pad_token_id: PAD.1 as usize,
        eos_token_id: EOS.1 as usize,
        decoder_start_token_id: Some(0),
    }
}

pub(crate) fn tiny_init(name: &str, dims: &[usize]) -> (f32, f32) {
    if name.ends_with("layer_norm.weight") {
        (1.0, 0.1)
    } else if name.ends_with("relative_attention_bias.weight") {
        (0.0, 0.5)
    } else if name.ends_with("shared.weight") || dims.len() < 2 {
        // T5 initialises the shared embedding with unit scale
        (0.0, 1.0)
    } else {
        // uniform with variance 1 / fan_in: activations stay O(1) through the blocks
        (0.0, (3.0 / dims[1].max(1) as f32).sqrt())
    }
}

/// The embedded tokenizer: one token per UTF-8 byte (ids 3..=258, so every prompt, in any language,
/// has its own ids with no vocabulary file), T5's `<pad>`/`</s>`/`<unk>` at 0/1/2, and `</s>`
/// appended as T5's post-processor does. A byte-level BPE with no merges, built in code.
pub fn tiny_tokenizer() -> Result<Tokenizer, ModelError> {
    let mut vocab = serde_json::Map::new();
    for (tok, id) in [PAD, EOS, UNK] {
        vocab.insert(tok.into(), id.into());
    }
    for (b, ch) in byte_chars().iter().enumerate() {
        vocab.insert(ch.to_string(), (BYTE_OFFSET + b as u32).into());
    }
    let special = |(content, id): (&str, u32)| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(PAD), special(EOS), special(UNK)],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": false},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": EOS.0, "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": EOS.0, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": EOS.0, "type_id": 0}}],
            "special_tokens": {EOS.0: {"id": EOS.0, "ids": [EOS.1], "tokens": [EOS.0]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": UNK.0,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false, "vocab": Value::Object(vocab),
                  "merges": []}
    });
    Tokenizer::from_bytes(json.to_string()).map_err(|e| ModelError::Tokenizer {
        origin: "embedded tiny tokenizer".into(),
        message: e.to_string(),
    })
}

/// GPT-2's byte -> printable character table (what the ByteLevel pre-tokenizer emits).
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| {
        (u32::from('!')..=u32::from('~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("printable Latin-1")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("below the surrogates")
            }
        })
        .collect()
}

/// A snapshot's `tokenizer.json`, with any padding/truncation it carries switched off: prompts are
/// encoded one by one and padded by [`TextEncoder::encode_ids`].
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    let bytes = crate::fsx::read_limited(path, crate::fsx::TEXT_LIMIT)
        .map_err(|e| ModelError::io(path, e))?;
    tokenizer_from_bytes(&bytes, path)
}

/// [`load_tokenizer`] over the bytes of a tokenizer.json read from `path` (named in errors).
pub fn tokenizer_from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer, ModelError> {
    let err = |message: String| ModelError::Tokenizer {
        origin: path.display().to_string(),
        message,
    };
    let mut tok = parse_tokenizer_json(bytes).map_err(err)?;
    tok.with_padding(None);
    tok.with_truncation(None).map_err(|e| err(e.to_string()))?;
    Ok(tok)
}

/// The token ids of `prompt` with the special tokens the tokenizer adds.
pub fn encode_prompt(tok: &Tokenizer, prompt: &str) -> Result<Vec<u32>, ModelError> {
    let err = |message: String| ModelError::Tokenizer {
        origin: format!("encoding {prompt:?}"),
        message,
    };
    // A tokenizer.json can deserialise into one that panics when it encodes (a template naming a
    // special token it does not define).
    crate::fsx::catch_panic(|| tok.encode(prompt, true))
        .map_err(|m| err(format!("the tokenizer cannot encode: {m}")))?
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| err(e.to_string()))
}

/// A tokenizer.json's bytes as a [`Tokenizer`]. The JSON is checked first (the tokenizers crate
/// panics on some syntax errors), and what it still panics on (its `expect`s in normalizer and
/// decoder deserialisation) is an error with the panic's message.
pub fn parse_tokenizer_json(bytes: &[u8]) -> Result<Tokenizer, String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| format!("bad JSON: {e}"))?;
    crate::fsx::catch_panic(|| Tokenizer::from_bytes(bytes))
        .map_err(|p| format!("not a tokenizer the tokenizers crate can build ({p})"))?
        .map_err(|e| e.to_string())
}

/// candle's `t5::Config` from the `text_encoder` object of a MusicGen config.json, with T5's
/// defaults for keys that older `save_pretrained` versions leave out.
pub fn t5_config(text_encoder: &Value, origin: &Path) -> Result<t5::Config, ModelError> {
    let defaults = serde_json::json!({
        "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
        "num_heads": 8, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
        "feed_forward_proj": "relu", "is_encoder_decoder": true, "pad_token_id": 0,
        "eos_token_id": 1, "decoder_start_token_id": 0
    });
    let Value::Object(given) = text_encoder else {
        return Err(ModelError::snapshot(
            origin,
            "`text_encoder` in config.json is not an object",
        ));
    };
    let Value::Object(mut merged) = defaults else {
        unreachable!("a JSON object literal")
    };
    for (k, v) in given {
        if !v.is_null() {
            merged.insert(k.clone(), v.clone());
        }
    }
    let cfg: t5::Config = serde_json::from_value(Value::Object(merged))
        .map_err(|e| ModelError::snapshot(origin, format!("text_encoder config: {e}")))?;
    if cfg.is_decoder {
        return Err(ModelError::snapshot(
            origin,
            "text_encoder config has is_decoder = true",
        ));
    }
    Ok(cfg)
}
