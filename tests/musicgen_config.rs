//! MusicGen config loading: sizes read from HF JSON, unsupported variants rejected.

use std::path::PathBuf;

use rfmx::model::musicgen::{Layout, MusicgenConfig, MusicgenError, parse_device, parse_dtype};

fn cfg(name: &str) -> Result<MusicgenConfig, MusicgenError> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/musicgen/configs")
        .join(name);
    MusicgenConfig::from_file(&p)
}

#[test]
fn reads_small_medium_large_sizes() {
    let s = cfg("small.json").unwrap();
    let d = &s.decoder;
    assert_eq!(
        (
            d.hidden_size,
            d.num_hidden_layers,
            d.num_attention_heads,
            d.ffn_dim
        ),
        (1024, 24, 16, 4096)
    );
    assert_eq!(
        (d.vocab_size, d.num_codebooks, d.pad_token()),
        (2048, 4, 2048)
    );
    assert_eq!(s.layout, Layout::Composite);
    assert_eq!(s.text_hidden_size, Some(512));
    assert!(s.needs_text_projection());

    let m = cfg("medium_decoder.json").unwrap();
    let d = &m.decoder;
    assert_eq!(
        (
            d.hidden_size,
            d.num_hidden_layers,
            d.num_attention_heads,
            d.ffn_dim
        ),
        (1536, 48, 24, 6144)
    );
    assert_eq!(m.layout, Layout::DecoderOnly);
    assert!(!m.needs_text_projection());

    let l = cfg("large.json").unwrap();
    let d = &l.decoder;
    assert_eq!(
        (
            d.hidden_size,
            d.num_hidden_layers,
            d.num_attention_heads,
            d.ffn_dim
        ),
        (2048, 48, 32, 8192)
    );
    assert_eq!(d.head_dim(), 64);
    assert_eq!(l.text_hidden_size, Some(1024));
}

#[test]
fn rejects_melody_and_stereo() {
    for name in ["melody.json", "stereo.json"] {
        let e = cfg(name).unwrap_err();
        assert!(matches!(e, MusicgenError::Unsupported(_)), "{name}: {e}");
        assert!(e.to_string().contains("not supported yet"), "{name}: {e}");
    }
}

#[test]
fn rejects_bad_configs_with_clear_errors() {
    let e = MusicgenConfig::from_json_str(r#"{"hidden_size": 30, "num_attention_heads": 4}"#, "x")
        .unwrap_err();
    assert!(e.to_string().contains("divisible"), "{e}");
    let e = MusicgenConfig::from_json_str(r#"{"model_type": "musicgen"}"#, "x").unwrap_err();
    assert!(e.to_string().contains("decoder"), "{e}");
    let e = MusicgenConfig::from_json_str("{", "cfg.json").unwrap_err();
    assert!(e.to_string().contains("cfg.json"), "{e}");
    let e = MusicgenConfig::from_json_str(r#"{"activation_function": "relu"}"#, "x").unwrap_err();
    assert!(matches!(e, MusicgenError::Unsupported(_)), "{e}");
}

#[test]
fn device_and_dtype_specs() {
    let cpu = parse_device("cpu").unwrap();
    assert!(cpu.is_cpu());
    assert!(parse_device("auto").is_ok());
    assert!(parse_device("tpu").is_err());
    assert!(parse_device("cuda:x").is_err());
    if !cfg!(feature = "cuda") {
        let e = parse_device("cuda:0").unwrap_err();
        assert!(e.to_string().contains("cuda"), "{e}");
    }
    assert_eq!(parse_dtype("auto", &cpu).unwrap(), candle_core::DType::F32);
    assert!(parse_dtype("bf16", &cpu).is_err());
    assert!(parse_dtype("f64", &cpu).is_err());
}
