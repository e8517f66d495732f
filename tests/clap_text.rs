//! CLAP's RoBERTa text tower and tokenizer against transformers (fixtures/make_clap.py): token ids
//! and mask from tokenizer.json and from vocab.json + merges.txt alone, the pooler output, and the
//! projected, normalised text embedding.

mod common;

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use rfmx::clap_model::ClapError;
use rfmx::clap_model::config::ClapConfig;
use rfmx::clap_model::text::{TextEncoder, load_tokenizer, tokenize};

use common::clap_fixtures::{self, fixtures};
use common::numeric::rel_err;

const VARIANTS: [&str; 2] = ["tiny_clap", "tiny_clap_fused"];

struct Refs {
    tensors: std::collections::HashMap<String, Tensor>,
    texts: Vec<String>,
}

fn refs(variant: &str) -> Refs {
    let (tensors, j) = clap_fixtures::refs(variant);
    let texts = j["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    Refs { tensors, texts }
}

/// The snapshot's config, its weights and the text tower loaded from them.
fn text_encoder(dir: &Path) -> (ClapConfig, VarBuilder<'static>, TextEncoder) {
    let cfg = ClapConfig::load(dir).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let enc = TextEncoder::load(vb.pp("text_model"), &cfg.text_config).unwrap();
    (cfg, vb, enc)
}

fn as_i64(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_dtype(DType::I64).unwrap().to_vec2().unwrap()
}

fn check_tokens(dir: &Path, variant: &str, what: &str) {
    let r = refs(variant);
    let cfg = ClapConfig::load(&fixtures().join(variant)).unwrap();
    let tok = load_tokenizer(dir).unwrap();
    let (ids, mask) = tokenize(&tok, &r.texts, &cfg.text_config, &Device::Cpu).unwrap();
    assert_eq!(ids.dtype(), DType::U32);
    assert_eq!(mask.dtype(), DType::U32);
    assert_eq!(
        as_i64(&ids),
        as_i64(&r.tensors["input_ids"]),
        "{variant} {what}: input_ids"
    );
    assert_eq!(
        as_i64(&mask),
        as_i64(&r.tensors["attention_mask"]),
        "{variant} {what}: attention_mask"
    );
}

#[test]
fn tokenizer_json_matches_transformers() {
    for v in VARIANTS {
        check_tokens(&fixtures().join(v), v, "tokenizer.json");
    }
}

#[test]
fn vocab_and_merges_alone_match_transformers() {
    for v in VARIANTS {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["vocab.json", "merges.txt", "config.json"] {
            std::fs::copy(fixtures().join(v).join(f), tmp.path().join(f)).unwrap();
        }
        check_tokens(tmp.path(), v, "vocab.json + merges.txt");
    }
}

#[test]
fn pooler_and_projection_match_transformers() {
    for v in VARIANTS {
        let r = refs(v);
        let dir = fixtures().join(v);
        let (cfg, vb, enc) = text_encoder(&dir);
        // The reference ids are i64: the encoder takes them as they are.
        let pooled = enc
            .forward(&r.tensors["input_ids"], &r.tensors["attention_mask"])
            .unwrap();
        let e = rel_err(&pooled, &r.tensors["text_pooler"]);
        eprintln!("{v}: text_pooler max rel err {e:.3e}");
        assert!(e <= 1e-4, "{v}: text_pooler rel err {e}");

        // Our own tokens give the same pooled output (padding row included).
        let tok = load_tokenizer(&dir).unwrap();
        let (ids, mask) = tokenize(&tok, &r.texts, &cfg.text_config, &Device::Cpu).unwrap();
        let again = enc.forward(&ids, &mask).unwrap();
        assert!(rel_err(&again, &r.tensors["text_pooler"]) <= 1e-4);

        // ClapProjectionLayer (linear1 → relu → linear2), then L2 normalisation.
        let h = cfg.text_config.hidden_size;
        let p = cfg.projection_dim;
        let l1 = candle_nn::linear(h, p, vb.pp("text_projection.linear1")).unwrap();
        let l2 = candle_nn::linear(p, p, vb.pp("text_projection.linear2")).unwrap();
        let x = l2
            .forward(&l1.forward(&pooled).unwrap().relu().unwrap())
            .unwrap();
        let norm = x
            .sqr()
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap()
            .sqrt()
            .unwrap();
        let text = x.broadcast_div(&norm).unwrap();
        let e = rel_err(&text, &r.tensors["text"]);
        eprintln!("{v}: text (projected, normalised) max rel err {e:.3e}");
        assert!(e <= 1e-4, "{v}: text rel err {e}");
    }
}

#[test]
fn padding_does_not_leak_into_the_pooled_output() {
    // A text alone and the same text padded beside a longer one pool to the same vector.
    let dir = fixtures().join("tiny_clap");
    let (cfg, _, enc) = text_encoder(&dir);
    let tok = load_tokenizer(&dir).unwrap();
    let short = vec!["jazz".to_string()];
    let both = vec![
        "jazz".to_string(),
        "a string quartet in a minor key".to_string(),
    ];
    let (i1, m1) = tokenize(&tok, &short, &cfg.text_config, &Device::Cpu).unwrap();
    let (i2, m2) = tokenize(&tok, &both, &cfg.text_config, &Device::Cpu).unwrap();
    assert!(i2.dim(1).unwrap() > i1.dim(1).unwrap());
    let alone = enc.forward(&i1, &m1).unwrap();
    let padded = enc.forward(&i2, &m2).unwrap().narrow(0, 0, 1).unwrap();
    assert!(rel_err(&padded, &alone) < 1e-5);
}

#[test]
fn truncates_to_the_position_table() {
    let dir = fixtures().join("tiny_clap");
    let cfg = ClapConfig::load(&dir).unwrap();
    let tok = load_tokenizer(&dir).unwrap();
    let long = vec!["piano ".repeat(200)];
    let (ids, mask) = tokenize(&tok, &long, &cfg.text_config, &Device::Cpu).unwrap();
    let max = cfg.text_config.max_position_embeddings - 2;
    assert_eq!(ids.dims(), [1, max]);
    let row = &as_i64(&ids)[0];
    assert_eq!((row[0], row[max - 1]), (0, 2), "<s> … </s> kept");
    assert!(as_i64(&mask)[0].iter().all(|&m| m == 1));
}

#[test]
fn empty_texts_and_missing_files_are_clear_errors() {
    let dir = fixtures().join("tiny_clap");
    let cfg = ClapConfig::load(&dir).unwrap();
    let tok = load_tokenizer(&dir).unwrap();
    let err = tokenize(&tok, &[], &cfg.text_config, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ClapError::Input(_)), "{err}");
    assert!(err.to_string().contains("no texts"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("vocab.json"), tmp.path().join("vocab.json")).unwrap();
    let err = load_tokenizer(tmp.path()).unwrap_err();
    assert!(matches!(err, ClapError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("merges.txt"), "{err}");

    std::fs::write(tmp.path().join("tokenizer.json"), "{not json").unwrap();
    let err = load_tokenizer(tmp.path()).unwrap_err();
    assert!(matches!(err, ClapError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn both_tokenizer_sources_agree_on_awkward_text() {
    // Special tokens in the text, non-ASCII bytes, runs of spaces, empty text.
    let dir = fixtures().join("tiny_clap");
    let cfg = ClapConfig::load(&dir).unwrap();
    let fast = load_tokenizer(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let slow = load_tokenizer(tmp.path()).unwrap();
    let texts: Vec<String> = [
        "a <mask> piano</s> with <s>drums",
        "café — naïve 🎹 ",
        "  two   spaces\tand\nnewline",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (a_ids, a_mask) = tokenize(&fast, &texts, &cfg.text_config, &Device::Cpu).unwrap();
    let (b_ids, b_mask) = tokenize(&slow, &texts, &cfg.text_config, &Device::Cpu).unwrap();
    assert_eq!(as_i64(&a_ids), as_i64(&b_ids));
    assert_eq!(as_i64(&a_mask), as_i64(&b_mask));
    // `<mask>` and `</s>` inside the text are single special tokens, as in transformers.
    let row = &as_i64(&a_ids)[0];
    assert!(
        row.contains(&4) && row.iter().filter(|&&t| t == 2).count() == 2,
        "{row:?}"
    );
    // The empty text is `<s> </s>` and padding.
    assert_eq!(&as_i64(&a_ids)[3][..3], &[0, 2, 1]);
}
