//! CLAP's text tower (`ClapTextModel`, a RoBERTa encoder with a BERT pooler) and its tokenizer.
//!
//! The encoder is candle-transformers' `XLMRobertaModel`, which is exactly `ClapTextModel` minus the
//! pooler: same weight names (`embeddings.{word,position,token_type}_embeddings`, `LayerNorm`,
//! `encoder.layer.N.{attention.{self,output},intermediate,output}`), RoBERTa position ids
//! (`cumsum(ids != pad) · (ids != pad) + pad`, i.e. `create_position_ids_from_input_ids`), post-LN
//! layers, the padding mask added as `(1 − mask) · f32::MIN` before the softmax, and `hidden_act`
//! "gelu" mapped to the erf GELU. The pooler (`pooler.dense` + tanh on token 0) is added here.
//! candle's `bert` is not used: its embeddings take positions `0..S` (BERT), not RoBERTa's.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, Linear, VarBuilder};
use candle_transformers::models::xlm_roberta::{Config as RobertaConfig, XLMRobertaModel};
use tokenizers::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use super::ClapError;
use super::config::TextConfig;

pub struct TextEncoder {
    roberta: XLMRobertaModel,
    pooler: Linear,
    cfg: TextConfig,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl TextEncoder {
    /// `vb` rooted at `text_model`.
    pub fn load(vb: VarBuilder, cfg: &TextConfig) -> Result<Self, ClapError> {
        let hidden_act: Activation = serde_json::from_value(serde_json::json!(cfg.hidden_act))
            .map_err(|_| {
                ClapError::snapshot(
                    "config.json",
                    format!(
                        "text_config.hidden_act {:?} is not supported",
                        cfg.hidden_act
                    ),
                )
            })?;
        if cfg.max_position_embeddings <= cfg.pad_token_id as usize + 1 {
            return Err(ClapError::snapshot(
                "config.json",
                format!(
                    "text_config.max_position_embeddings {} leaves no position after pad_token_id {}",
                    cfg.max_position_embeddings, cfg.pad_token_id
                ),
            ));
        }
        let rc = RobertaConfig {
            hidden_size: cfg.hidden_size,
            layer_norm_eps: cfg.layer_norm_eps,
            attention_probs_dropout_prob: 0.0,
            hidden_dropout_prob: 0.0,
            num_attention_heads: cfg.num_attention_heads,
            position_embedding_type: "absolute".into(),
            intermediate_size: cfg.intermediate_size,
            hidden_act,
            num_hidden_layers: cfg.num_hidden_layers,
            vocab_size: cfg.vocab_size,
            max_position_embeddings: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            pad_token_id: cfg.pad_token_id,
        };
        let roberta = XLMRobertaModel::new(&rc, vb.clone())?;
        let pooler = candle_nn::linear(cfg.hidden_size, cfg.hidden_size, vb.pp("pooler.dense"))?;
        Ok(Self {
            roberta,
            pooler,
            cfg: cfg.clone(),
        })
    }

    /// input_ids / attention_mask [B, S] (u32 or i64 ok); returns pooler_output [B, hidden].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor, ClapError> {
        let (b, s) = input_ids.dims2().map_err(|_| {
            ClapError::Input(format!(
                "CLAP text: input_ids must be [batch, seq], got {:?}",
                input_ids.dims()
            ))
        })?;
        if attention_mask.dims() != [b, s] {
            return Err(ClapError::Input(format!(
                "CLAP text: attention_mask {:?} does not match input_ids [{b}, {s}]",
                attention_mask.dims()
            )));
        }
        if b == 0 || s == 0 {
            return Err(ClapError::Input(format!(
                "CLAP text: empty batch [{b}, {s}]"
            )));
        }
        // Positions run to pad_token_id + S; the table must hold them.
        let room = self.cfg.max_position_embeddings - self.cfg.pad_token_id as usize - 1;
        if s > room {
            return Err(ClapError::Input(format!(
                "CLAP text: {s} tokens exceed the {room} positions of the text encoder"
            )));
        }
        let ids = input_ids.to_dtype(DType::U32)?;
        let vocab = ids.max_all()?.to_scalar::<u32>()?;
        if vocab as usize >= self.cfg.vocab_size {
            return Err(ClapError::Input(format!(
                "CLAP text: token id {vocab} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let mask = attention_mask.to_dtype(DType::U32)?;
        let token_types = ids.zeros_like()?;
        let hidden = self
            .roberta
            .forward(&ids, &mask, &token_types, None, None, None)?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.pooler.forward(&first)?.tanh()?)
    }
}

fn tok_err(origin: &Path, e: impl std::fmt::Display) -> ClapError {
    ClapError::Tokenizer {
        origin: origin.display().to_string(),
        message: e.to_string(),
    }
}

/// The special-token strings and `add_prefix_space` of `tokenizer_config.json`, with
/// RobertaTokenizer's defaults for what it does not say (or when it is absent).
struct SlowConfig {
    bos: String,
    eos: String,
    sep: String,
    cls: String,
    unk: String,
    pad: String,
    mask: String,
    add_prefix_space: bool,
}

/// `tokenizer_config.json` of `dir`, `None` when the snapshot has none.
fn read_slow_config(dir: &Path) -> Result<Option<String>, ClapError> {
    let path = dir.join("tokenizer_config.json");
    match crate::fsx::read_text_limited(&path, crate::fsx::TEXT_LIMIT) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClapError::io(&path, e)),
    }
}

fn parse_slow_config(text: Option<&str>, path: &Path) -> Result<SlowConfig, ClapError> {
    let v: serde_json::Value = match text {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ClapError::snapshot(path, format!("bad JSON: {e}")))?,
        None => serde_json::Value::Null,
    };
    // A token is a string or an AddedToken dict {"content": ...}.
    let token = |key: &str, default: &str| -> String {
        match &v[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or(default)
                .to_string(),
            _ => default.to_string(),
        }
    };
    Ok(SlowConfig {
        bos: token("bos_token", "<s>"),
        eos: token("eos_token", "</s>"),
        sep: token("sep_token", "</s>"),
        cls: token("cls_token", "<s>"),
        unk: token("unk_token", "<unk>"),
        pad: token("pad_token", "<pad>"),
        mask: token("mask_token", "<mask>"),
        add_prefix_space: v["add_prefix_space"].as_bool().unwrap_or(false),
    })
}

/// The snapshot's tokenizer: tokenizer.json if present, else vocab.json + merges.txt (byte-level BPE,
/// RoBERTa post-processing `<s> $A </s>`), as RobertaTokenizer(Fast) does. Every file is read
/// bounded and parsed from memory ([`tokenizer_from_json`], [`bpe_tokenizer`]).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, ClapError> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        let bytes = crate::fsx::read_limited(&json, crate::fsx::TEXT_LIMIT)
            .map_err(|e| tok_err(&json, e))?;
        return tokenizer_from_json(&bytes, &json);
    }
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if !vocab.is_file() || !merges.is_file() {
        return Err(tok_err(
            dir,
            "no tokenizer.json, nor vocab.json + merges.txt (the RoBERTa BPE files) in the snapshot",
        ));
    }
    let read = |f: &Path| {
        crate::fsx::read_text_limited(f, crate::fsx::TEXT_LIMIT).map_err(|e| tok_err(f, e))
    };
    let (vocab_text, merges_text) = (read(&vocab)?, read(&merges)?);
    let config = read_slow_config(dir)?;
    bpe_tokenizer(&vocab_text, &merges_text, config.as_deref(), dir)
}

/// A tokenizer.json's bytes (read from `path`, named in errors).
pub fn tokenizer_from_json(bytes: &[u8], path: &Path) -> Result<Tokenizer, ClapError> {
    crate::model::text::parse_tokenizer_json(bytes).map_err(|e| tok_err(path, e))
}

/// The byte-level BPE tokenizer of the texts of vocab.json, merges.txt and tokenizer_config.json
/// (`None` when absent) in `dir`.
///
/// This builds what transformers' `RobertaConverter` makes of the slow tokenizer:
/// BPE without an unk token, ByteLevel pre-tokenizer and decoder (`add_prefix_space` from
/// `tokenizer_config.json`, default false), `RobertaProcessing(sep, cls, trim_offsets=True)`, and
/// the special tokens registered so that they are matched whole in the text. The files are parsed
/// as `BPE::read_file` does, except that an id beyond u32 is an error instead of wrapping.
pub fn bpe_tokenizer(
    vocab_text: &str,
    merges_text: &str,
    config: Option<&str>,
    dir: &Path,
) -> Result<Tokenizer, ClapError> {
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let json: serde_json::Value =
        serde_json::from_str(vocab_text).map_err(|e| tok_err(&vocab, format!("bad JSON: {e}")))?;
    let serde_json::Value::Object(entries) = json else {
        return Err(tok_err(&vocab, "not a JSON object of token: id"));
    };
    let mut ids = tokenizers::models::bpe::Vocab::default();
    for (token, id) in entries {
        if let serde_json::Value::Number(n) = id {
            let id = n
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| tok_err(&vocab, format!("token {token:?} has id {n}, not a u32")))?;
            ids.insert(token, id);
        }
    }
    let mut pairs = Vec::new();
    for (i, line) in merges_text
        .lines()
        .filter(|l| !l.starts_with("#version"))
        .enumerate()
    {
        match line.split(' ').collect::<Vec<_>>().as_slice() {
            // The builder indexes a buffer as long as the longest token with the merged pair,
            // so a merge whose result is not a token panics it: refused here.
            [a, b]
                if [a.to_string(), b.to_string(), format!("{a}{b}")]
                    .iter()
                    .all(|t| ids.contains_key(t)) =>
            {
                pairs.push((a.to_string(), b.to_string()))
            }
            [a, b] => {
                return Err(tok_err(
                    &merges,
                    format!(
                        "merge {} ({:?} + {:?}): a part or the merged token is not in vocab.json",
                        i + 1,
                        a,
                        b
                    ),
                ));
            }
            _ => {
                return Err(tok_err(
                    &merges,
                    format!("merge {} is not two tokens separated by one space", i + 1),
                ));
            }
        }
    }
    let sc = parse_slow_config(config, &dir.join("tokenizer_config.json"))?;
    let bpe = BPE::builder()
        .vocab_and_merges(ids, pairs)
        .build()
        .map_err(|e| tok_err(&vocab, e))?;
    let mut tok = Tokenizer::new(bpe);
    let id = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| {
            tok_err(
                &vocab,
                format!("special token {t:?} is not in the vocabulary"),
            )
        })
    };
    let sep = (sc.sep.clone(), id(&sc.sep)?);
    let cls = (sc.cls.clone(), id(&sc.cls)?);
    for t in [&sc.bos, &sc.eos, &sc.unk, &sc.pad, &sc.mask] {
        id(t)?;
    }
    tok.with_pre_tokenizer(Some(
        ByteLevel::default()
            .add_prefix_space(sc.add_prefix_space)
            .trim_offsets(true),
    ));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.with_post_processor(Some(
        RobertaProcessing::new(sep, cls)
            .trim_offsets(true)
            .add_prefix_space(sc.add_prefix_space),
    ));
    // transformers 5's RobertaTokenizer registers `<mask>` without lstrip (the space before it stays
    // a `Ġ` token), unlike the lstrip=True of older releases; we follow the installed reference.
    let mut specials = vec![];
    for t in [
        &sc.bos, &sc.eos, &sc.unk, &sc.sep, &sc.pad, &sc.cls, &sc.mask,
    ] {
        if !specials.iter().any(|a: &AddedToken| &a.content == t) {
            specials.push(AddedToken::from(t.clone(), true));
        }
    }
    tok.add_special_tokens(specials)
        .map_err(|e| tok_err(&vocab, e))?;
    Ok(tok)
}

/// Tokenize and pad to the longest (pad id from cfg.pad_token_id), truncating to
/// max_position_embeddings - 2 tokens; returns (input_ids, attention_mask) [B, S] u32 tensors.
pub fn tokenize(
    tok: &Tokenizer,
    texts: &[String],
    cfg: &TextConfig,
    device: &Device,
) -> Result<(Tensor, Tensor), ClapError> {
    if texts.is_empty() {
        return Err(ClapError::Input(
            "CLAP text: no texts to tokenize (empty list)".into(),
        ));
    }
    let origin = Path::new("(CLAP text tokenizer)");
    let max_length = cfg.max_position_embeddings.saturating_sub(2);
    if max_length < 3 {
        return Err(ClapError::Input(format!(
            "CLAP text: max_position_embeddings {} leaves no room for tokens",
            cfg.max_position_embeddings
        )));
    }
    let pad_token = tok.id_to_token(cfg.pad_token_id).ok_or_else(|| {
        tok_err(
            origin,
            format!("pad_token_id {} is not in the vocabulary", cfg.pad_token_id),
        )
    })?;
    // Padding and truncation live on the tokenizer; set them on a copy so the caller's stays as
    // the snapshot made it.
    let mut tok = tok.clone();
    tok.with_truncation(Some(TruncationParams {
        direction: TruncationDirection::Right,
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    }))
    .map_err(|e| tok_err(origin, e))?;
    tok.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        direction: PaddingDirection::Right,
        pad_to_multiple_of: None,
        pad_id: cfg.pad_token_id,
        pad_type_id: 0,
        pad_token,
    }));
    // Deserialisation does not check everything encoding relies on (a template naming a special
    // token it does not define panics here).
    let enc = crate::fsx::catch_panic(|| {
        tok.encode_batch(texts.iter().map(|t| t.as_str()).collect(), true)
    })
    .map_err(|p| tok_err(origin, format!("the tokenizer cannot encode: {p}")))?
    .map_err(|e| tok_err(origin, e))?;
    let s = enc[0].get_ids().len();
    let mut ids = Vec::with_capacity(texts.len() * s);
    let mut mask = Vec::with_capacity(texts.len() * s);
    for e in &enc {
        ids.extend_from_slice(e.get_ids());
        mask.extend_from_slice(e.get_attention_mask());
    }
    let b = texts.len();
    Ok((
        Tensor::from_vec(ids, (b, s), device)?,
        Tensor::from_vec(mask, (b, s), device)?,
    ))
}
