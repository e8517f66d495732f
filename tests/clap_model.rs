//! The assembled CLAP model against transformers (fixtures/make_clap.py): snapshot → features →
//! HTSAT / RoBERTa → projections → normalised embeddings and cosines, for the unfused
//! (rand_trunc) and fused (fusion) tiny snapshots; and `rfmx clap` on the command line.

mod common;

use candle_core::{Device, Tensor};
use rfmx::clap_model::features::Crops;
use rfmx::clap_model::model::{Clap, ClapSource, cosine};
use serde_json::Value;

use common::clap_fixtures::{fixtures, refs, wave};
use common::numeric::rel_err;

/// Relative tolerance of every embedding and cosine (the 1e-4).
const TOL: f32 = 1e-4;

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

/// max |a − b| / max |b| over all rows.
fn rows_rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let t =
        |r: &[Vec<f32>]| Tensor::from_vec(r.concat(), (r.len(), r[0].len()), &Device::Cpu).unwrap();
    rel_err(&t(a), &t(b))
}

fn crops_b(meta: &Value) -> Crops {
    let c = &meta["crops"]["clip_b"];
    if let Some(i) = c["rand_trunc"].as_u64() {
        Crops::Given(vec![i as usize])
    } else {
        Crops::Given(
            c["fusion"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
        )
    }
}

fn check_variant(variant: &str) {
    let (r, meta) = refs(variant);
    let model = Clap::load(&fixtures().join(variant), &Device::Cpu).unwrap();
    let mel_a = model
        .features
        .extract(&wave("clip_a.wav"), &Crops::Seeded(0))
        .unwrap();
    let mel_b = model
        .features
        .extract(&wave("clip_b.wav"), &crops_b(&meta))
        .unwrap();
    let audio = model.embed_mels(&[mel_a, mel_b]).unwrap();
    let want_audio: Vec<Vec<f32>> = ["audio_a", "audio_b"]
        .iter()
        .map(|k| rows(&r[*k])[0].clone())
        .collect();
    let ea = rows_rel_err(&audio, &want_audio);
    let texts: Vec<String> = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let text = model.embed_texts(&texts).unwrap();
    let et = rows_rel_err(&text, &rows(&r["text"]));
    let cos: Vec<Vec<f32>> = audio
        .iter()
        .map(|a| text.iter().map(|t| cosine(a, t) as f32).collect())
        .collect();
    let ec = rows_rel_err(&cos, &rows(&r["cosine"]));
    eprintln!("{variant}: audio rel err {ea:.2e}, text {et:.2e}, cosine {ec:.2e}");
    assert!(ea <= TOL, "{variant} audio embeddings: {ea}");
    assert!(et <= TOL, "{variant} text embeddings: {et}");
    assert!(ec <= TOL, "{variant} cosines: {ec}");
    // Embeddings are unit length.
    for e in audio.iter().chain(&text) {
        let n: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
}

#[test]
fn unfused_snapshot_matches_transformers() {
    check_variant("tiny_clap");
}

#[test]
fn fused_snapshot_matches_transformers() {
    check_variant("tiny_clap_fused");
}

#[test]
fn audio_at_another_rate_is_resampled_and_a_short_clip_needs_no_crop() {
    let model = Clap::load(&fixtures().join("tiny_clap"), &Device::Cpu).unwrap();
    let x: Vec<f32> = wave("clip_a.wav").iter().map(|&v| v as f32).collect();
    let direct = model.embed_audio(&x, 48_000, 1).unwrap();
    let again = model.embed_audio(&x, 48_000, 99).unwrap();
    assert_eq!(
        direct, again,
        "a clip under 10 s must not depend on the crop seed"
    );
    let (r, _) = refs("tiny_clap");
    let e = rows_rel_err(
        std::slice::from_ref(&direct),
        &[rows(&r["audio_a"])[0].clone()],
    );
    assert!(e <= TOL, "{e}");
    // The same clip at 32 kHz (as MusicGen writes it) goes through the resampler: close, not equal.
    let at32 = rfmx::audio::resample::resample(&x, 48_000, 32_000).unwrap();
    let via = model.embed_audio(&at32, 32_000, 1).unwrap();
    let c = cosine(&direct, &via);
    eprintln!("48 kHz vs 48→32→48 kHz embedding cosine {c:.5}");
    assert!(c > 0.99, "{c}");
    assert!(model.embed_audio(&[], 48_000, 0).is_err());
    assert!(model.embed_audio(&[0.1, f32::NAN], 48_000, 0).is_err());
}

#[test]
fn missing_snapshot_names_where_it_looked_and_the_download() {
    let e = ClapSource::parse("/nonexistent/clap")
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no CLAP snapshot at /nonexistent/clap"), "{e}");
    assert!(
        e.contains("huggingface-cli download laion/larger_clap_music"),
        "{e}"
    );
    let cache = tempfile::tempdir().unwrap();
    let e = rfmx::model::hub::find_snapshot_in(cache.path(), "laion/larger_clap_music")
        .unwrap_err()
        .to_string();
    assert!(e.contains("models--laion--larger_clap_music"), "{e}");
}

#[test]
fn fingerprint_follows_content_not_location() {
    let a = rfmx::clap_model::model::fingerprint(&fixtures().join("tiny_clap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixtures().join("tiny_clap")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let b = rfmx::clap_model::model::fingerprint(dir.path()).unwrap();
    assert_eq!(a, b);
    let cfg = dir.path().join("preprocessor_config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"frequency_min\": 50", "\"frequency_min\": 40");
    std::fs::write(&cfg, text).unwrap();
    let c = rfmx::clap_model::model::fingerprint(dir.path()).unwrap();
    assert_ne!(a, c, "the extractor settings are part of the model");
}

impl common::Work {
    fn clap(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["clap"];
        a.extend_from_slice(args);
        self.rfmx(&a)
    }
}

#[test]
fn cli_scores_clips_against_texts() {
    let w = common::Work::new();
    let model = fixtures().join("tiny_clap");
    let clip = fixtures().join("clip_a.wav");
    let (r, meta) = refs("tiny_clap");
    let t0 = meta["texts"][0].as_str().unwrap();
    let t1 = meta["texts"][1].as_str().unwrap();
    let out = w.path().join("scores.json");
    let o = w.clap(&[
        "--model",
        model.to_str().unwrap(),
        "--text",
        t0,
        "--text",
        t1,
        "--json",
        out.to_str().unwrap(),
        clip.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("clips/s"), "{stderr}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let got: Vec<f32> = v["clips"][0]["cosines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap() as f32)
        .collect();
    let e = rows_rel_err(&[got], &[rows(&r["cosine"])[0].clone()]);
    assert!(e <= TOL, "{e}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("text 2"));
}

#[test]
fn cli_missing_model_or_clip_exits_2_and_writes_nothing() {
    let w = common::Work::new();
    let out = w.path().join("scores.json");
    let clip = fixtures().join("clip_a.wav");
    let o = w.clap(&[
        "--model",
        "/nonexistent/clap",
        "--text",
        "piano",
        "--json",
        out.to_str().unwrap(),
        clip.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("no CLAP snapshot at /nonexistent/clap"),
        "{stderr}"
    );
    assert!(stderr.contains("huggingface-cli download"), "{stderr}");
    assert!(!out.exists());
    let model = fixtures().join("tiny_clap");
    let o = w.clap(&[
        "--model",
        model.to_str().unwrap(),
        "--text",
        "piano",
        "nope.wav",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.wav"));
    let o = w.clap(&["--model", model.to_str().unwrap(), clip.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "--text is required");
}
