//! `rfmx generate`, `rfmx encode` and `rfmx decode` through the binary: files and shapes,
//! determinism against the library, parity with transformers on the tiny MusicGen snapshot written by
//! fixtures/make_t5.py, missing models, and bad flags (clear error, nothing written).

mod common;
use common::t5_fixtures::fixture;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use rfmx::model::musicgen::{GenerateConfig, NoHook};
use rfmx::model::{ModelSource, Pipeline};

/// Runs the binary with an empty, private HF cache (so `auto` and hub ids never see a real one).
fn rfmx_in(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rfmx"))
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .output()
        .expect("rfmx runs")
}

fn rfmx(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    rfmx_in(cache.path(), args)
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "rfmx failed ({:?}):\n{err}\nstdout:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

fn fails(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "expected exit 2:\n{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An int64 `[K, F]` codes file.
fn read_codes(path: &Path) -> (Vec<usize>, Vec<i64>) {
    let t = Tensor::read_npy(path).unwrap();
    assert_eq!(t.dtype(), DType::I64, "{} is not int64", path.display());
    (
        t.dims().to_vec(),
        t.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

/// A 32 kHz mono 32-bit float WAV.
fn read_wav(path: &Path) -> Vec<f32> {
    let r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 32_000);
    assert_eq!(spec.channels, 1);
    assert_eq!(spec.bits_per_sample, 32);
    assert_eq!(spec.sample_format, hound::SampleFormat::Float);
    r.into_samples::<f32>().map(Result::unwrap).collect()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    diff / scale
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn generate_tiny_writes_a_32k_float_wav_and_int64_codes() {
    let d = tempfile::tempdir().unwrap();
    let (wav, npy) = (d.path().join("x.wav"), d.path().join("codes.npy"));
    let o = rfmx(&[
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "solo piano",
        "--seconds",
        "4",
        "--out",
        s(&wav),
        "--codes-out",
        s(&npy),
    ]);
    let err = ok(&o);
    assert!(
        err.contains("RANDOM WEIGHTS"),
        "says which model ran:\n{err}"
    );
    let audio = read_wav(&wav);
    assert_eq!(audio.len(), 4 * 32_000);
    assert!(audio.iter().all(|v| v.is_finite()));
    assert!(audio.iter().any(|v| v.abs() > 1e-4), "silent audio");
    let (shape, codes) = read_codes(&npy);
    assert_eq!(shape, vec![4, 200]);
    assert!(codes.iter().all(|c| (0..2048).contains(c)));
    // sampled (top-k 250 by default), so not one code repeated
    assert!(codes.iter().any(|c| *c != codes[0]));
    // only the two outputs, no temp files left
    assert_eq!(files_in(d.path()), vec!["codes.npy", "x.wav"]);
}

#[test]
fn greedy_is_deterministic_and_equals_the_library() {
    let d = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| {
        let (wav, npy) = (
            d.path().join(format!("{name}.wav")),
            d.path().join(format!("{name}.npy")),
        );
        ok(&rfmx(&[
            "generate",
            "--model",
            "tiny",
            "--prompt",
            "ambient synth pad",
            "--steps",
            "23",
            "--top-k",
            "1",
            "--seed",
            seed,
            "--out",
            s(&wav),
            "--codes-out",
            s(&npy),
        ]));
        (read_codes(&npy), read_wav(&wav))
    };
    let ((shape, a), audio) = run("1", "a");
    let ((_, b), _) = run("2", "b");
    // --steps is exact: 23 steps - (4 - 1) delay = 20 frames
    assert_eq!(shape, vec![4, 20]);
    assert_eq!(a, b, "greedy codes depend on the seed");
    // the library's greedy codes and audio (CFG 3.0 by default)
    let p = Pipeline::load(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let cond = p.condition(&["ambient synth pad".to_string()]).unwrap();
    let cfg = GenerateConfig {
        steps: 23,
        guidance_scale: 3.0,
        top_k: 1,
        temperature: 1.0,
        seed: 0,
    };
    let g = p.decoder.generate(&cond, &cfg, &mut NoHook).unwrap();
    let want: Vec<i64> = g
        .codes
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(a, want);
    let want_audio: Vec<f32> = p
        .decode_codes(&g.codes)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(rel(&audio, &want_audio) <= 1e-6);
    assert_eq!(audio.len(), 20 * 640);
}

#[test]
fn sampling_follows_the_seed_and_the_knobs() {
    let d = tempfile::tempdir().unwrap();
    let run = |extra: &[&str], name: &str| {
        let npy = d.path().join(format!("{name}.npy"));
        let mut args = vec![
            "generate",
            "--model",
            "tiny",
            "--prompt",
            "jazz",
            "--seconds",
            "0.4",
            "--codes-out",
            s(&npy),
        ];
        args.extend_from_slice(extra);
        ok(&rfmx(&args));
        read_codes(&npy)
    };
    let (shape, a) = run(&["--seed", "5"], "a");
    assert_eq!(shape, vec![4, 20]);
    assert_eq!(run(&["--seed", "5"], "a2").1, a, "same seed, other codes");
    assert_ne!(run(&["--seed", "6"], "b").1, a, "the seed changes nothing");
    // temperature 0 and top-k 1 are both greedy; the guidance scale matters
    let greedy = run(&["--top-k", "1"], "g").1;
    assert_eq!(run(&["--temperature", "0", "--seed", "9"], "t0").1, greedy);
    assert_ne!(run(&["--top-k", "1", "--cfg", "1"], "nocfg").1, greedy);
    assert_ne!(greedy, a);
}

/// The transformers reference of fixtures/make_t5.py: prompts, steps, greedy CFG codes and audio.
fn reference() -> (Vec<String>, usize, Tensor, Tensor) {
    let r = common::t5_fixtures::refs();
    assert_eq!(r.guidance_scale, 3.0);
    (
        r.prompts,
        r.steps,
        r.tensors["gen_codes"].to_dtype(DType::I64).unwrap(),
        r.tensors["gen_audio"].to_dtype(DType::F32).unwrap(),
    )
}

fn generate_greedy(
    model: &str,
    prompt: &str,
    steps: usize,
    dir: &Path,
    cache: &Path,
) -> (Vec<usize>, Vec<i64>, Vec<f32>) {
    let (wav, npy) = (dir.join("x.wav"), dir.join("codes.npy"));
    let steps = steps.to_string();
    ok(&rfmx_in(
        cache,
        &[
            "generate",
            "--model",
            model,
            "--prompt",
            prompt,
            "--steps",
            &steps,
            "--top-k",
            "1",
            "--cfg",
            "3",
            "--out",
            s(&wav),
            "--codes-out",
            s(&npy),
        ],
    ));
    let (shape, codes) = read_codes(&npy);
    (shape, codes, read_wav(&wav))
}

#[test]
fn snapshot_directory_matches_transformers_greedy_generation() {
    let (prompts, steps, codes, audio) = reference();
    let cache = tempfile::tempdir().unwrap();
    let model = fixture("tiny_musicgen");
    for (i, prompt) in prompts.iter().enumerate() {
        let d = tempfile::tempdir().unwrap();
        let (shape, got, wav) = generate_greedy(s(&model), prompt, steps, d.path(), cache.path());
        let want = codes.get(i).unwrap();
        assert_eq!(shape, want.dims(), "prompt {i}");
        assert_eq!(
            got,
            want.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
            "prompt {i} {prompt:?}: greedy codes differ from transformers"
        );
        let want_audio: Vec<f32> = audio
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let e = rel(&wav, &want_audio);
        assert!(e <= 1e-4, "prompt {i}: audio rel {e:e}");
    }
}

#[test]
fn hub_id_resolves_in_the_hf_cache() {
    let (prompts, steps, codes, _) = reference();
    let cache = tempfile::tempdir().unwrap();
    let snap = cache
        .path()
        .join("models--acme--tiny-musicgen")
        .join("snapshots")
        .join("0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    for f in std::fs::read_dir(fixture("tiny_musicgen_sharded")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), snap.join(f.file_name())).unwrap();
    }
    std::fs::create_dir_all(cache.path().join("models--acme--tiny-musicgen/refs")).unwrap();
    std::fs::write(
        cache.path().join("models--acme--tiny-musicgen/refs/main"),
        "0123abcd",
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let (_, got, _) = generate_greedy(
        "acme/tiny-musicgen",
        &prompts[1],
        steps,
        d.path(),
        cache.path(),
    );
    assert_eq!(
        got,
        codes
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    );
}

#[test]
fn decode_matches_transformers_and_encode_round_trips_shapes() {
    let (_, _, codes, audio) = reference();
    let d = tempfile::tempdir().unwrap();
    let model = fixture("tiny_musicgen");
    // the reference's codes as a [K, F] int64 .npy -> the audio transformers decoded
    let npy = d.path().join("ref.npy");
    codes.get(1).unwrap().write_npy(&npy).unwrap();
    let wav = d.path().join("dec.wav");
    ok(&rfmx(&[
        "decode",
        "--model",
        s(&model),
        s(&npy),
        "--out",
        s(&wav),
    ]));
    let want: Vec<f32> = audio
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got = read_wav(&wav);
    let e = rel(&got, &want);
    assert!(e <= 1e-4, "decoded audio rel {e:e}");
    // [1, K, F] and u32 codes are read too
    let npy3 = d.path().join("ref3.npy");
    codes
        .get(1)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .write_npy(&npy3)
        .unwrap();
    let wav3 = d.path().join("dec3.wav");
    ok(&rfmx(&[
        "decode",
        "--model",
        s(&model),
        s(&npy3),
        "--out",
        s(&wav3),
    ]));
    assert_eq!(read_wav(&wav3), got);
    // encode: the decoded clip back to [K, F] codes, as the library encodes it
    let out = d.path().join("enc.npy");
    ok(&rfmx(&[
        "encode",
        "--model",
        s(&model),
        s(&wav),
        "--codes-out",
        s(&out),
    ]));
    let (shape, enc) = read_codes(&out);
    assert_eq!(shape, codes.get(1).unwrap().dims());
    let p = Pipeline::load(&ModelSource::Path(model.clone()), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(enc, library_codes(&p, got.clone()));
}

/// What the library's EnCodec gives for 32 kHz mono samples, flattened as the CLI's codes.npy.
fn library_codes(p: &Pipeline, mono_32k: Vec<f32>) -> Vec<i64> {
    let n = mono_32k.len();
    let x = Tensor::from_vec(mono_32k, (1, 1, n), &Device::Cpu).unwrap();
    let codes = p.encode_audio(&x).unwrap().flatten_all().unwrap();
    codes
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect()
}

#[test]
fn encode_mixes_to_mono_and_resamples() {
    let d = tempfile::tempdir().unwrap();
    // 1 s of a stereo 44.1 kHz tone -> 50 frames of 4 codebooks
    let n = 44_100;
    let mut stereo = Vec::with_capacity(2 * n);
    for i in 0..n {
        let v = 0.4 * (2.0 * std::f32::consts::PI * 330.0 * i as f32 / 44_100.0).sin();
        stereo.extend([v, 0.5 * v]);
    }
    let clip = d.path().join("tone.wav");
    rfmx::audio::wav::write_f32(&clip, &stereo, 2, 44_100).unwrap();
    let out = d.path().join("codes.npy");
    let err = ok(&rfmx(&[
        "encode",
        "--model",
        "tiny",
        s(&clip),
        "--codes-out",
        s(&out),
    ]));
    assert!(err.contains("44100 Hz -> 32000 Hz"), "{err}");
    let (shape, codes) = read_codes(&out);
    assert_eq!(shape, vec![4, 50]);
    // as the library encodes the mono mixdown resampled to 32 kHz
    let mono: Vec<f32> = stereo.chunks(2).map(|c| (c[0] + c[1]) / 2.0).collect();
    let x = rfmx::audio::resample::resample(&mono, 44_100, 32_000).unwrap();
    let p = Pipeline::load(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(codes, library_codes(&p, x));
    // and decode gives 1 s back
    let wav = d.path().join("back.wav");
    ok(&rfmx(&[
        "decode",
        "--model",
        "tiny",
        s(&out),
        "--out",
        s(&wav),
    ]));
    assert_eq!(read_wav(&wav).len(), 32_000);
}

#[test]
fn missing_snapshot_names_where_it_looked_and_the_download_command() {
    let cache = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let wav = d.path().join("x.wav");
    let o = rfmx_in(
        cache.path(),
        &[
            "generate",
            "--model",
            "facebook/musicgen-small",
            "--prompt",
            "x",
            "--out",
            s(&wav),
        ],
    );
    let err = fails(&o);
    let looked = cache.path().join("models--facebook--musicgen-small");
    assert!(
        err.contains(s(&looked)),
        "does not say where it looked:\n{err}"
    );
    assert!(
        err.contains("huggingface-cli download facebook/musicgen-small"),
        "no download command:\n{err}"
    );
    assert!(files_in(d.path()).is_empty());
    // a directory that is not there
    let missing = d.path().join("models").join("nope");
    let err = fails(&rfmx(&[
        "decode",
        "--model",
        s(&missing),
        s(&wav),
        "--out",
        s(&wav),
    ]));
    assert!(err.contains("no such codes file"), "{err}");
    let npy = d.path().join("c.npy");
    std::fs::write(&npy, b"").unwrap();
    let err = fails(&rfmx(&[
        "decode",
        "--model",
        s(&missing),
        s(&npy),
        "--out",
        s(&wav),
    ]));
    assert!(
        err.contains("no such model directory") && err.contains(s(&missing)),
        "{err}"
    );
    assert_eq!(files_in(d.path()), vec!["c.npy"]);
}

#[test]
fn auto_falls_back_to_tiny_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let npy = d.path().join("c.npy");
    let err = ok(&rfmx(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "5",
        "--codes-out",
        s(&npy),
    ]));
    assert!(
        err.contains("falls back to the embedded tiny model"),
        "{err}"
    );
    assert!(
        err.contains("huggingface-cli download facebook/musicgen-small"),
        "{err}"
    );
    assert!(err.contains("model: tiny"), "{err}");
    assert_eq!(read_codes(&npy).0, vec![4, 2]);
}

#[test]
fn bad_flags_are_clear_errors_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    let wav = d.path().join("x.wav");
    let npy = d.path().join("c.npy");
    let cases: &[(&[&str], &str)] = &[
        (&["--seconds", "-1"], "--seconds"),
        (&["--seconds", "0"], "--seconds"),
        (&["--seconds", "nan"], "--seconds"),
        (&["--top-k", "0"], "--top-k"),
        (&["--top-k", "-3"], "--top-k"),
        (&["--temperature", "-0.5"], "--temperature"),
        (&["--cfg", "inf"], "--cfg"),
        (&["--steps", "0"], "--steps"),
        // fewer steps than codebooks: found once the model is known, still before any write
        (&["--steps", "3"], "--steps"),
    ];
    for (extra, flag) in cases {
        let mut args = vec![
            "generate",
            "--model",
            "tiny",
            "--prompt",
            "x",
            "--out",
            s(&wav),
            "--codes-out",
            s(&npy),
        ];
        args.extend_from_slice(extra);
        let err = fails(&rfmx(&args));
        assert!(
            err.contains(flag),
            "{extra:?}: the error does not name {flag}:\n{err}"
        );
        assert!(
            files_in(d.path()).is_empty(),
            "{extra:?} wrote {:?}",
            files_in(d.path())
        );
    }
    let err = fails(&rfmx(&["generate", "--model", "tiny", "--prompt", "x"]));
    assert!(
        err.contains("--out") && err.contains("--codes-out"),
        "{err}"
    );
}

#[test]
fn bad_codes_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let wav = d.path().join("x.wav");
    let cases: Vec<(Tensor, &str)> = vec![
        (
            Tensor::zeros((3, 10), DType::I64, &Device::Cpu).unwrap(),
            "3 codebooks, but the model has 4",
        ),
        (
            Tensor::full(5000i64, (4, 10), &Device::Cpu).unwrap(),
            "outside the codebook",
        ),
        (
            Tensor::full(-1i64, (4, 10), &Device::Cpu).unwrap(),
            "outside the codebook",
        ),
        (
            Tensor::zeros((4, 10), DType::F32, &Device::Cpu).unwrap(),
            "must be integers",
        ),
        (
            Tensor::zeros((2, 4, 10), DType::I64, &Device::Cpu).unwrap(),
            "[codebooks, frames]",
        ),
    ];
    for (i, (t, msg)) in cases.into_iter().enumerate() {
        let npy = d.path().join(format!("c{i}.npy"));
        t.write_npy(&npy).unwrap();
        let err = fails(&rfmx(&[
            "decode",
            "--model",
            "tiny",
            s(&npy),
            "--out",
            s(&wav),
        ]));
        assert!(err.contains(msg), "case {i}: {err}");
        assert!(
            err.contains(s(&npy)),
            "case {i} does not name the file: {err}"
        );
        assert!(!wav.exists());
    }
    let not_wav = d.path().join("c0.npy");
    let err = fails(&rfmx(&[
        "encode",
        "--model",
        "tiny",
        s(&not_wav),
        "--codes-out",
        s(&wav),
    ]));
    assert!(err.contains(s(&not_wav)), "{err}");
    assert!(!wav.exists());
}

#[test]
fn encode_and_decode_match_transformers_on_a_1s_signal() {
    // fixtures/make_t5.py --encode-refs: make_codec.py's signal through the snapshot's EnCodec
    let refs =
        candle_core::safetensors::load(fixture("encode_refs.safetensors"), &Device::Cpu).unwrap();
    let d = tempfile::tempdir().unwrap();
    let model = fixture("tiny_musicgen");
    let npy = d.path().join("codes.npy");
    ok(&rfmx(&[
        "encode",
        "--model",
        s(&model),
        s(&fixture("signal_1s.wav")),
        "--codes-out",
        s(&npy),
    ]));
    let (shape, codes) = read_codes(&npy);
    let want = refs["codes"]
        .squeeze(0)
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    assert_eq!(shape, want.dims());
    assert_eq!(codes, want.flatten_all().unwrap().to_vec1::<i64>().unwrap());
    let wav = d.path().join("x.wav");
    ok(&rfmx(&[
        "decode",
        "--model",
        s(&model),
        s(&npy),
        "--out",
        s(&wav),
    ]));
    let want: Vec<f32> = refs["audio"].flatten_all().unwrap().to_vec1().unwrap();
    let e = rel(&read_wav(&wav), &want);
    assert!(e <= 1e-4, "audio rel {e:e}");
}
