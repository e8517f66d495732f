//! EnCodec 32 kHz against Hugging Face `EncodecModel` on tiny random checkpoints
//! (fixtures/make_codec.py): codes exactly, decoded audio to 1e-4 relative (max|a-b| / max|b|).

mod common;
use common::numeric::rel_err;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rfmx::model::encodec::{Encodec, EncodecConfig, load_safetensors_dir};

const AUDIO_RTOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/codec")
        .join(name)
}

fn signal() -> Tensor {
    Tensor::read_npy(fixture("signal.npy")).unwrap()
}

fn codes_as_i64(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The full 1 s clip, a length that is not a multiple of the hop, and one shorter than deep layers'
/// reflect padding (fixtures/make_codec.py `LENGTHS`).
const LENGTHS: [(usize, &str); 3] = [(32000, ""), (10007, "_T10007"), (5, "_T5")];

fn check_model(path: &Path) {
    let dev = Device::Cpu;
    let dir = path.display();
    let model = Encodec::load(path, &dev).unwrap();
    assert_eq!(model.num_codebooks(), 4);
    for (len, suffix) in LENGTHS {
        let clip = signal().narrow(2, 0, len).unwrap();
        let want_codes = Tensor::read_npy(path.join(format!("codes{suffix}.npy"))).unwrap();
        let codes = model.encode(&clip).unwrap();
        assert_eq!(codes.dims(), want_codes.dims(), "{dir} T={len}");
        assert_eq!(
            codes_as_i64(&codes),
            codes_as_i64(&want_codes),
            "{dir} T={len}: codes differ"
        );

        // decode HF's codes, so a code mismatch could not hide an audio mismatch
        let want_audio = Tensor::read_npy(path.join(format!("audio{suffix}.npy"))).unwrap();
        let audio = model.decode(&want_codes).unwrap();
        let err = rel_err(&audio, &want_audio);
        eprintln!("{dir} T={len}: decoded audio max|a-b|/max|b| = {err:.3e}");
        assert!(
            err <= AUDIO_RTOL,
            "{dir} T={len}: audio relative error {err}"
        );
    }
}

#[test]
fn codec_32khz_codes_and_audio_match_hf() {
    check_model(&fixture("tiny_encodec_32khz"));
}

/// causal padding, right-trimmed transposed convs, conv shortcut, dilation growth, zero padding
#[test]
fn codec_causal_variant_codes_and_audio_match_hf() {
    check_model(&fixture("tiny_encodec_causal"));
}

/// facebook/encodec_32khz at full size (random weights; 230 MB, so not committed). Run:
/// `python fixtures/make_codec.py --full DIR && RFMX_CODEC_FULL=DIR cargo test --test codec_parity -- --ignored`
#[test]
#[ignore = "needs a generated full-size model: see the doc comment"]
fn codec_full_size_matches_hf() {
    let dir = std::env::var("RFMX_CODEC_FULL")
        .expect("set RFMX_CODEC_FULL to make_codec.py --full's DIR");
    let dir = Path::new(&dir);
    let model = dir.join("encodec_32khz_full");
    assert_eq!(
        Encodec::load(&model, &Device::Cpu)
            .unwrap()
            .config()
            .codebook_size,
        2048
    );
    // the same clip as the committed fixtures
    assert_eq!(
        Tensor::read_npy(dir.join("signal.npy"))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        signal().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    check_model(&model);
}

#[test]
fn codec_weight_norm_layouts_load_to_identical_tensors() {
    let dev = Device::Cpu;
    let a = load_safetensors_dir(&fixture("tiny_encodec_32khz"), &dev).unwrap();
    let b = load_safetensors_dir(&fixture("tiny_encodec_32khz_alt_layout"), &dev).unwrap();
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    let mut names_b: Vec<_> = b.keys().collect();
    names_b.sort();
    assert_eq!(names, names_b);
    assert!(
        names.iter().all(|n| !n.contains("original")
            && !n.ends_with("weight_g")
            && !n.ends_with("weight_v"))
    );
    assert!(names.iter().any(|n| n.ends_with("conv.weight")));
    for n in names {
        let x: Vec<f32> = a[n].flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[n].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x, y, "{n} differs between layouts");
    }
    // and the model loaded from the other layout gives the same codes
    let model = Encodec::load(&fixture("tiny_encodec_32khz_alt_layout"), &dev).unwrap();
    let want = Tensor::read_npy(fixture("tiny_encodec_32khz").join("codes.npy")).unwrap();
    assert_eq!(
        codes_as_i64(&model.encode(&signal()).unwrap()),
        codes_as_i64(&want)
    );
}

#[test]
fn codec_32khz_config_matches_musicgen_codec() {
    let cfg = EncodecConfig::encodec_32khz();
    cfg.validate().unwrap();
    assert_eq!(cfg.hop_length(), 640);
    assert_eq!(cfg.frame_rate(), 50);
    assert_eq!(cfg.num_quantizers(), 4);
    assert_eq!(cfg.num_quantizers_for_bandwidth(2.2), 4);
    // HF's JSON parses (strings, not enums) and round-trips the fixture's settings
    let text = std::fs::read_to_string(fixture("tiny_encodec_32khz/config.json")).unwrap();
    let tiny = EncodecConfig::from_json(&text).unwrap();
    assert_eq!(tiny.pad_mode, "reflect");
    assert!(!tiny.use_causal_conv);
}

#[test]
fn codec_rejects_bad_input() {
    let dev = Device::Cpu;
    let model = Encodec::load(&fixture("tiny_encodec_32khz"), &dev).unwrap();
    let stereo = Tensor::zeros((1, 2, 640), DType::F32, &dev).unwrap();
    assert!(model.encode(&stereo).is_err());
    assert!(model.encode_with_bandwidth(&signal(), 6.0).is_err());
    let out_of_range = Tensor::full(64u32, (1, 4, 3), &dev).unwrap();
    assert!(model.decode(&out_of_range).is_err());
    let too_many = Tensor::zeros((1, 5, 3), DType::U32, &dev).unwrap();
    assert!(model.decode(&too_many).is_err());
    let err = EncodecConfig::from_json(r#"{"norm_type": "time_group_norm"}"#).unwrap_err();
    assert!(err.to_string().contains("time_group_norm"));
    let err = Encodec::load(&fixture("does_not_exist"), &dev)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("does_not_exist/config.json"),
        "{err}"
    );
}
