//! The model pipeline: the embedded tiny model end to end (text -> T5 -> conditioning ->
//! CFG generation -> EnCodec audio), model sources, snapshot loading in every weight layout, and
//! parity with transformers on the tiny MusicGen written by fixtures/make_t5.py.

mod common;
use common::t5_fixtures::{fixture, refs};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rfmx::model::hub;
use rfmx::model::musicgen::{GenerateConfig, NoHook};
use rfmx::model::{ModelError, ModelSource, Pipeline};

fn flat<T: candle_core::WithDType>(t: &Tensor) -> Vec<T> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn tiny() -> Arc<Pipeline> {
    Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap()
}

fn prompts(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

#[test]
fn shared_loads_once_per_source_device_and_dtype() {
    let a = tiny();
    let b = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "the tiny pipeline was loaded twice");
    assert_eq!(a.source, ModelSource::Tiny);
    assert!(
        a.description.contains("RANDOM WEIGHTS"),
        "{}",
        a.description
    );
    assert_eq!(a.sample_rate(), rfmx::model::SAMPLE_RATE);
}

#[test]
fn tiny_fingerprint_is_stable_and_matches_the_loaded_model() {
    let f = Pipeline::fingerprint_of(&ModelSource::Tiny).unwrap();
    assert_eq!(f.len(), 64);
    assert!(f.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(f, Pipeline::fingerprint_of(&ModelSource::Tiny).unwrap());
    assert_eq!(f, tiny().fingerprint);
}

#[test]
fn tiny_tokenizer_is_byte_level_with_t5_specials() {
    let p = tiny();
    let ids = p.text_encoder().tokenize(&prompts(&["ab é", ""])).unwrap();
    // bytes + 3, then </s> = 1
    assert_eq!(ids[0], vec![3 + 97, 3 + 98, 3 + 32, 3 + 0xC3, 3 + 0xA9, 1]);
    assert_eq!(ids[1], vec![1]);
}

#[test]
fn tiny_conditioning_masks_padding_and_zeroes_the_unconditional_branch() {
    let p = tiny();
    let cond = p
        .condition(&prompts(&["solo piano", "ambient synth pad"]))
        .unwrap();
    let (b, s, h) = cond.states.dims3().unwrap();
    assert_eq!((b, s, h), (2, 18, p.decoder.hidden_size()));
    let mask = flat::<f32>(cond.mask.as_ref().unwrap());
    // "solo piano" is 10 bytes + </s>: 11 tokens, the rest padding
    assert_eq!(mask[..18].iter().sum::<f32>(), 11.0);
    assert_eq!(mask[18..].iter().sum::<f32>(), 18.0);
    let states = cond.states.to_vec3::<f32>().unwrap();
    assert!(states[0][11..].iter().flatten().all(|v| *v == 0.0));
    assert!(states[0][..11].iter().flatten().any(|v| *v != 0.0));
    assert!(flat::<f32>(&cond.uncond_states).iter().all(|v| *v == 0.0));
    // different prompts condition differently; the same prompt identically
    let again = p.condition(&prompts(&["solo piano"])).unwrap();
    let a1 = again.states.to_vec3::<f32>().unwrap();
    assert_eq!(a1[0][..11], states[0][..11]);
    assert_ne!(states[0][..11], states[1][..11]);
}

#[test]
fn tiny_text_to_audio_end_to_end() {
    let p = tiny();
    let cond = p
        .condition(&prompts(&["solo piano", "ambient synth pad"]))
        .unwrap();
    let steps = p.steps_for_seconds(0.2).unwrap();
    assert_eq!(steps, 10 + 3);
    let gen_cfg = GenerateConfig {
        steps,
        guidance_scale: 3.0,
        top_k: 1,
        temperature: 1.0,
        seed: 0,
    };
    let g = p.decoder.generate(&cond, &gen_cfg, &mut NoHook).unwrap();
    assert_eq!(g.codes.dims(), &[2, 4, 10]);
    let codes = flat::<u32>(&g.codes);
    assert!(codes.iter().all(|c| *c < 2048));
    let audio = p.decode_codes(&g.codes).unwrap();
    assert_eq!(audio.dims(), &[2, 1, 10 * 640]);
    let samples = flat::<f32>(&audio);
    assert!(samples.iter().all(|v| v.is_finite()));
    assert!(samples.iter().any(|v| v.abs() > 1e-4), "silent audio");
    // the prompt matters, and so does guidance
    assert_ne!(codes[..40], codes[40..]);
    let plain = GenerateConfig {
        guidance_scale: 1.0,
        ..gen_cfg.clone()
    };
    let g1 = p.decoder.generate(&cond, &plain, &mut NoHook).unwrap();
    assert_ne!(flat::<u32>(&g1.codes), codes, "CFG had no effect");
    // deterministic
    let again = p.decoder.generate(&cond, &gen_cfg, &mut NoHook).unwrap();
    assert_eq!(flat::<u32>(&again.codes), codes);
}

#[test]
fn tiny_audio_round_trip_shapes() {
    let p = tiny();
    let x: Vec<f32> = (0..32000)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 220.0 * i as f32 / 32000.0).sin())
        .collect();
    let audio = Tensor::from_vec(x, (1, 1, 32000), &Device::Cpu).unwrap();
    let codes = p.encode_audio(&audio).unwrap();
    assert_eq!(codes.dims(), &[1, 4, 50]);
    assert!(flat::<u32>(&codes).iter().all(|c| *c < 2048));
    let back = p.decode_codes(&codes).unwrap();
    assert_eq!(back.dims(), &[1, 1, 32000]);
    // the codes feed the decoder directly (probe extraction)
    let pooled = p
        .decoder
        .extract_pooled(&codes, &[rfmx::model::musicgen::Pool::Mean])
        .unwrap();
    assert_eq!(pooled[0].dims(), &[4, 1, 64]);
}

#[test]
fn model_sources_parse_from_spec_and_cli() {
    assert_eq!(ModelSource::parse("auto"), ModelSource::Auto);
    assert_eq!(ModelSource::parse("tiny"), ModelSource::Tiny);
    assert_eq!(
        ModelSource::parse("facebook/musicgen-small"),
        ModelSource::Hub("facebook/musicgen-small".into())
    );
    assert_eq!(
        ModelSource::parse("./models/x"),
        ModelSource::Path("./models/x".into())
    );
    assert_eq!(
        ModelSource::parse("/abs/dir"),
        ModelSource::Path("/abs/dir".into())
    );
    assert_eq!(
        ModelSource::from_spec("facebook/musicgen-small", Some(Path::new("/m"))),
        ModelSource::Path("/m".into())
    );
    assert_eq!(ModelSource::Tiny.label(), "tiny");
    assert_eq!(
        ModelSource::Hub("facebook/musicgen-small".into()).label(),
        "facebook/musicgen-small"
    );
}

#[test]
fn missing_snapshot_error_says_where_it_looked_and_how_to_download() {
    let cache = tempfile::tempdir().unwrap();
    let err = hub::find_snapshot_in(cache.path(), "facebook/musicgen-small").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::MissingSnapshot { .. }));
    assert!(
        msg.contains(
            &cache
                .path()
                .join("models--facebook--musicgen-small")
                .display()
                .to_string()
        ),
        "{msg}"
    );
    assert!(
        msg.contains("huggingface-cli download facebook/musicgen-small"),
        "{msg}"
    );
    // a bad directory is an error too, never the tiny model
    let err = ModelSource::Path(cache.path().join("nope"))
        .resolve()
        .unwrap_err();
    assert!(err.to_string().contains("no such model directory"), "{err}");
    let err = ModelSource::Path(cache.path().to_path_buf())
        .resolve()
        .unwrap_err();
    assert!(err.to_string().contains("no config.json"), "{err}");
}

/// A fake cache entry laid out as huggingface_hub writes it.
fn fake_cache(cache: &Path, id: &str, revs: &[&str], main: Option<&str>) -> PathBuf {
    let repo = cache.join(hub::repo_folder(id));
    for r in revs {
        let d = repo.join("snapshots").join(r);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), "{}").unwrap();
    }
    if let Some(m) = main {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), format!("{m}\n")).unwrap();
    }
    repo
}

#[test]
fn hub_cache_resolution_honours_refs_main() {
    let cache = tempfile::tempdir().unwrap();
    let id = "facebook/musicgen-small";
    let repo = fake_cache(cache.path(), id, &["aaa", "bbb"], Some("aaa"));
    assert_eq!(
        hub::find_snapshot_in(cache.path(), id).unwrap(),
        repo.join("snapshots").join("aaa")
    );
    // refs/main naming a revision that is not there is an error, not another revision
    std::fs::write(repo.join("refs").join("main"), "ccc").unwrap();
    let err = hub::find_snapshot_in(cache.path(), id).unwrap_err();
    assert!(err.to_string().contains("ccc"), "{err}");
    // no refs/main: the only snapshot
    let cache2 = tempfile::tempdir().unwrap();
    let repo2 = fake_cache(cache2.path(), id, &["only"], None);
    assert_eq!(
        hub::find_snapshot_in(cache2.path(), id).unwrap(),
        repo2.join("snapshots").join("only")
    );
}

// ---- parity with transformers (fixtures/make_t5.py) ----

/// rel = max|a − b| / max|b| on f32, CPU.
const TOL: f32 = 1e-4;

fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let e = common::numeric::rel_err(a, b);
    eprintln!("rel {e:e}");
    e
}

/// Tokens, T5 states, greedy CFG codes and decoded audio of a snapshot against transformers.
fn check_parity(dir: &Path) {
    let common::t5_fixtures::Refs {
        tensors: r,
        prompts,
        steps,
        ..
    } = refs();
    let p = Pipeline::load(
        &ModelSource::Path(dir.to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    // tokenizer.json through the `tokenizers` crate = transformers' fast tokenizer
    let ids = p.text_encoder().tokenize(&prompts).unwrap();
    let want_ids = r["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let want_mask = r["attention_mask"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    for (i, row) in ids.iter().enumerate() {
        let n = want_mask[i].iter().sum::<u32>() as usize;
        assert_eq!(row, &want_ids[i][..n], "prompt {i} tokens");
    }
    // T5 states where the mask is 1 (HF's padded rows are unused: MusicGen zeroes them)
    let (states, mask) = p.text_encoder().encode(&prompts).unwrap();
    let hf_mask = r["attention_mask"].to_dtype(DType::F32).unwrap();
    assert_eq!(flat::<f32>(&mask), flat::<f32>(&hf_mask));
    let want = r["text_states"]
        .broadcast_mul(&hf_mask.unsqueeze(2).unwrap())
        .unwrap();
    let e = rel(&states, &want);
    assert!(e <= TOL, "{}: T5 states rel {e:e}", dir.display());
    // greedy CFG generation from text: codes exactly
    let cond = p.condition(&prompts).unwrap();
    let gen_cfg = GenerateConfig {
        steps,
        guidance_scale: 3.0,
        top_k: 1,
        temperature: 1.0,
        seed: 0,
    };
    let g = p.decoder.generate(&cond, &gen_cfg, &mut NoHook).unwrap();
    let want_codes = r["gen_codes"].to_dtype(DType::U32).unwrap();
    assert_eq!(g.codes.dims(), want_codes.dims());
    assert_eq!(
        flat::<u32>(&g.codes),
        flat::<u32>(&want_codes),
        "{}: greedy codes",
        dir.display()
    );
    // and the audio EnCodec decodes from them
    let audio = p.decode_codes(&g.codes).unwrap();
    let e = rel(&audio, &r["gen_audio"]);
    assert!(e <= TOL, "{}: decoded audio rel {e:e}", dir.display());
}

#[test]
fn parity_text_to_codes_with_transformers_safetensors() {
    check_parity(&fixture("tiny_musicgen"));
}

#[test]
fn parity_from_sharded_safetensors_copy() {
    let dir = fixture("tiny_musicgen_sharded");
    assert!(
        rfmx::model::weights::weight_files(&dir).unwrap().len() > 1,
        "the sharded copy is not sharded"
    );
    check_parity(&dir);
}

#[test]
fn parity_from_pytorch_bin_copy() {
    let dir = fixture("tiny_musicgen_bin");
    let files = rfmx::model::weights::weight_files(&dir).unwrap();
    assert_eq!(files, vec![dir.join("pytorch_model.bin")]);
    check_parity(&dir);
}

#[test]
fn snapshot_fingerprint_covers_contents_not_location() {
    let src = fixture("tiny_musicgen");
    let f = Pipeline::fingerprint_of(&ModelSource::Path(src.clone())).unwrap();
    assert_ne!(f, Pipeline::fingerprint_of(&ModelSource::Tiny).unwrap());
    // a copy elsewhere has the same fingerprint
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(name), tmp.path().join(name)).unwrap();
    }
    let copy = ModelSource::Path(tmp.path().to_path_buf());
    assert_eq!(Pipeline::fingerprint_of(&copy).unwrap(), f);
    // the same weights in another layout are other files: another fingerprint
    let bin = Pipeline::fingerprint_of(&ModelSource::Path(fixture("tiny_musicgen_bin"))).unwrap();
    assert_ne!(bin, f);
    // changing the config changes it (size differs, so the memo cannot hide it)
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(tmp.path().join("config.json"), format!("{cfg}\n")).unwrap();
    assert_ne!(Pipeline::fingerprint_of(&copy).unwrap(), f);
    // and the loaded pipeline reports the same value
    let p = Pipeline::load(&ModelSource::Path(src), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(p.fingerprint, f);
}

#[test]
fn broken_snapshots_are_clear_errors() {
    let src = fixture("tiny_musicgen");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let source = ModelSource::Path(tmp.path().to_path_buf());
    let err = Pipeline::load(&source, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::copy(
        src.join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let err = Pipeline::load(&source, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no weights") && err.contains("pytorch_model.bin"),
        "{err}"
    );
    // a shard index naming a missing shard
    let index = serde_json::json!({"weight_map": {"a": "model-00001-of-00002.safetensors"}});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let err = Pipeline::load(&source, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model-00001-of-00002.safetensors is missing"),
        "{err}"
    );
}
