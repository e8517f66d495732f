//! A stable-Rust mutational fuzzer over the readers of files rfmx reads (docs/contracts.md,
//! "Files rfmx reads"): one target per reader, seeded from the committed corpora under
//! tests/fuzz/<target>/ (the spec target from the shipped specs/). Each target must return a
//! value or an error for every input; a panic fails the test, an unbounded allocation aborts it.
//!
//! - `corpus_replays_*` (ordinary tests): every seed, then 300 seeded mutations of it.
//! - `fuzz_bounded` (ignored): each target for `RFMX_FUZZ_SECS` seconds (default 30), printing
//!   how many inputs each survived: `RFMX_FUZZ_SECS=30 cargo test --release --test fuzz -- --ignored`
//!   (`RFMX_FUZZ_ONLY=pytorch_bin,config` runs only those targets).

mod common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Target = fn(&[u8]);

fn npy(b: &[u8]) {
    if let Ok(t) = rfmx::npy::parse_npy(b) {
        // What parses must be exactly what the header said.
        assert!(t.elem_count() * t.dtype().size_in_bytes() <= b.len());
    }
}

fn wav(b: &[u8]) {
    if let Ok((samples, channels, _)) = rfmx::audio::wav::decode(b, Path::new("fuzz.wav")) {
        // Samples come from the bytes read, never from the header's claims.
        assert!(samples.len() <= b.len());
        assert!(channels > 0 || samples.is_empty());
    }
}

fn csv(b: &[u8]) {
    let _ = rfmx::stimuli::csv::parse(&String::from_utf8_lossy(b));
}

fn safetensors(b: &[u8]) {
    let _ = candle_core::safetensors::load_buffer(b, &candle_core::Device::Cpu);
}

fn pytorch_bin(b: &[u8]) {
    if let Ok(tensors) = rfmx::model::torch_bin::read_bytes(b) {
        // Every tensor is made from the file's bytes, never from a size the pickle claims.
        for (_, t) in tensors {
            assert!(t.elem_count() * t.dtype().size_in_bytes() <= b.len());
        }
    }
}

/// A composite MusicGen config.json: what the pipeline takes from it before the weights, and the
/// sizes it derives.
fn musicgen_config(b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    if let Ok((m, t5, codec)) =
        rfmx::model::Pipeline::snapshot_configs(&text, Path::new("config.json"))
    {
        let d = &m.decoder;
        let _ = (
            d.head_dim(),
            d.pad_token(),
            d.bos_token(),
            m.needs_text_projection(),
        );
        let _ = (
            t5.d_model,
            codec.hop_length(),
            codec.frame_rate(),
            codec.codebook_dim(),
        );
        let _ = (
            codec.num_quantizers(),
            codec.num_quantizers_for_bandwidth(1.5),
        );
    }
}

fn clap_config(b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    let _ = rfmx::clap_model::config::ClapConfig::from_json_str(&text, Path::new("config.json"));
}

/// preprocessor_config.json, and the feature extractor built from it (filter bank and window are
/// sized by the config).
fn preprocessor_config(b: &[u8]) {
    use rfmx::clap_model::{config::FeatureConfig, features::FeatureExtractor};
    let text = String::from_utf8_lossy(b);
    if let Ok(cfg) = FeatureConfig::from_json_str(&text, Path::new("preprocessor_config.json")) {
        let _ = FeatureExtractor::new(cfg);
    }
}

/// tokenizer.json (the T5 one of MusicGen snapshots and CLAP's), and one prompt through it.
fn tokenizer(b: &[u8]) {
    if let Ok(tok) = rfmx::model::text::tokenizer_from_bytes(b, Path::new("tokenizer.json")) {
        let _ = rfmx::model::text::encode_prompt(&tok, "solo piano, 90 bpm <mask>");
    }
}

/// CLAP's slow tokenizer files: vocab.json, merges.txt and tokenizer_config.json, NUL-separated
/// (a missing third part: no tokenizer_config.json).
fn clap_bpe(b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    let mut parts = text.split('\0');
    let (vocab, merges) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let config = parts.next();
    if let Ok(tok) =
        rfmx::clap_model::text::bpe_tokenizer(vocab, merges, config, Path::new("snapshot"))
    {
        let _ = rfmx::clap_model::text::tokenize(
            &tok,
            &["solo piano, 90 bpm <mask>".to_string()],
            &rfmx::clap_model::config::TextConfig::default(),
            &candle_core::Device::Cpu,
        );
    }
}

fn spec(b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    let _ = rfmx::spec::load_str("fuzz.toml", "fuzz", &text, &[], &[]);
}

const TARGETS: [(&str, Target); 11] = [
    ("npy", npy),
    ("wav", wav),
    ("csv", csv),
    ("safetensors", safetensors),
    ("spec", spec),
    ("pytorch_bin", pytorch_bin),
    ("musicgen_config", musicgen_config),
    ("clap_config", clap_config),
    ("preprocessor_config", preprocessor_config),
    ("tokenizer", tokenizer),
    ("clap_bpe", clap_bpe),
];

/// Seeds read from the committed fixtures rather than copied into tests/fuzz/.
const FIXTURE_SEEDS: [(&str, &[&str]); 4] = [
    (
        "musicgen_config",
        &[
            "fixtures/t5/tiny_musicgen/config.json",
            "fixtures/musicgen/tiny_a/config.json",
            "fixtures/codec/tiny_encodec_32khz/config.json",
        ],
    ),
    (
        "clap_config",
        &[
            "fixtures/clap/tiny_clap/config.json",
            "fixtures/clap/tiny_clap_fused/config.json",
        ],
    ),
    (
        "preprocessor_config",
        &[
            "fixtures/clap/tiny_clap/preprocessor_config.json",
            "fixtures/clap/tiny_clap_fused/preprocessor_config.json",
        ],
    ),
    (
        "tokenizer",
        &[
            "fixtures/t5/tiny_musicgen/tokenizer.json",
            "fixtures/clap/tiny_clap/tokenizer.json",
        ],
    ),
];

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: PathBuf| {
        let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (p, b)
    };
    if let Some((_, files)) = FIXTURE_SEEDS.iter().find(|(t, _)| *t == target) {
        return files.iter().map(|f| read(root.join(f))).collect();
    }
    if target == "clap_bpe" {
        let dir = root.join("fixtures/clap/tiny_clap");
        let part = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let mut with_config = [part("vocab.json"), part("merges.txt")].join(&0u8);
        let without = with_config.clone();
        with_config.push(0);
        with_config.extend(part("tokenizer_config.json"));
        return vec![(dir.clone(), with_config), (dir, without)];
    }
    let dir = if target == "spec" {
        root.join("specs")
    } else {
        root.join("tests/fuzz").join(target)
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files.into_iter().map(read).collect()
}

/// Values that break size arithmetic when they land in a length field.
const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn mutate(rng: &mut ChaCha8Rng, seed: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let n = b.len();
        match rng.random_range(0..8) {
            0 if n > 0 => {
                let i = rng.random_range(0..n);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.random_range(0..n);
                b[i] = rng.random();
            }
            2 if n > 0 => {
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.random_range(0..4)];
                let i = rng.random_range(0..n);
                for (k, byte) in v[..w].iter().enumerate() {
                    if let Some(x) = b.get_mut(i + k) {
                        *x = *byte;
                    }
                }
            }
            3 => b.truncate(rng.random_range(0..=n)),
            4 if n > 0 => {
                let i = rng.random_range(0..n);
                let j = rng.random_range(i..=n.min(i + 16));
                b.drain(i..j);
            }
            5 => {
                // Digits where a shape, length or count is written in text.
                let i = rng.random_range(0..=n);
                let digits: String = (0..rng.random_range(1..24))
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                b.splice(i..i, digits.into_bytes());
            }
            6 => {
                let other = &pool[rng.random_range(0..pool.len())];
                if !other.is_empty() {
                    let s = rng.random_range(0..other.len());
                    let e = rng.random_range(s..=other.len());
                    let i = rng.random_range(0..=n);
                    b.splice(i..i, other[s..e].iter().copied());
                }
            }
            _ => {
                let i = rng.random_range(0..=n);
                let byte: u8 = rng.random();
                b.insert(i, byte);
            }
        }
    }
    b
}

/// Runs `target` on every seed and on mutations until `budget` runs out (`Err`) or `runs` inputs
/// are done; returns how many inputs ran.
fn drive(name: &str, target: Target, rng_seed: u64, limit: Result<usize, Duration>) -> u64 {
    let seeds = seeds(name);
    let pool: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
    for (p, b) in &seeds {
        let r = std::panic::catch_unwind(|| target(b));
        assert!(r.is_ok(), "{name}: seed {} panicked", p.display());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let start = Instant::now();
    let mut execs = seeds.len() as u64;
    loop {
        match limit {
            Ok(n) if execs >= n as u64 => break,
            Err(d) if start.elapsed() >= d => break,
            _ => {}
        }
        let seed = &pool[rng.random_range(0..pool.len())];
        let input = mutate(&mut rng, seed, &pool);
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            let keep = std::env::temp_dir().join(format!("rfmx-fuzz-{name}-crash.bin"));
            let _ = std::fs::write(&keep, &input);
            panic!("{name}: input panicked; saved to {}", keep.display());
        }
        execs += 1;
    }
    execs
}

macro_rules! replay {
    ($test:ident, $i:expr) => {
        #[test]
        fn $test() {
            let (name, target) = TARGETS[$i];
            drive(name, target, 0, Ok(300));
        }
    };
}
replay!(corpus_replays_npy, 0);
replay!(corpus_replays_wav, 1);
replay!(corpus_replays_csv, 2);
replay!(corpus_replays_safetensors, 3);
replay!(corpus_replays_spec, 4);
replay!(corpus_replays_pytorch_bin, 5);
replay!(corpus_replays_musicgen_config, 6);
replay!(corpus_replays_clap_config, 7);
replay!(corpus_replays_preprocessor_config, 8);
replay!(corpus_replays_tokenizer, 9);
replay!(corpus_replays_clap_bpe, 10);

/// The committed seeds are what `common::torch_bin::seed` writes (`RFMX_BLESS=1` rewrites them), and
/// they read to the tensors it put in.
#[test]
fn pytorch_bin_seeds_are_reproducible_and_read_back() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/pytorch_bin");
    for (file, proto4) in [("proto2.bin", false), ("proto4.bin", true)] {
        let made = common::torch_bin::seed(proto4);
        let path = dir.join(file);
        if std::env::var_os("RFMX_BLESS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &made).unwrap();
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            made,
            "{file}: RFMX_BLESS=1 rewrites it"
        );
        let t: std::collections::HashMap<String, candle_core::Tensor> =
            rfmx::model::torch_bin::read_bytes(&made)
                .unwrap()
                .into_iter()
                .collect();
        let mut names: Vec<&str> = t.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["fortran", "half", "scalar", "tied", "w"], "{file}");
        let w: Vec<Vec<f32>> = t["w"].to_vec2().unwrap();
        assert_eq!(w, [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]);
        assert_eq!(t["tied"].to_vec2::<f32>().unwrap(), w);
        let half = t["half"].to_dtype(candle_core::DType::F32).unwrap();
        assert_eq!(half.to_vec1::<f32>().unwrap(), [2.0, -0.5, 0.25]);
        // Column-major storage [-2, -1, 0, 1] is the matrix [[-2, 0], [-1, 1]].
        assert_eq!(t["fortran"].to_vec2::<i64>().unwrap(), [[-2, 0], [-1, 1]]);
        assert_eq!(
            t["scalar"].to_scalar::<f64>().unwrap(),
            std::f64::consts::PI
        );
    }
}

#[test]
#[ignore = "bounded fuzz run for CI: RFMX_FUZZ_SECS per target (default 30), in --release"]
fn fuzz_bounded() {
    let secs: u64 = std::env::var("RFMX_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let rng_seed = std::env::var("RFMX_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    // RFMX_FUZZ_ONLY=name,name narrows the run while working on one reader.
    let only = std::env::var("RFMX_FUZZ_ONLY").unwrap_or_default();
    for (name, target) in TARGETS {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        let n = drive(name, target, rng_seed, Err(Duration::from_secs(secs)));
        println!("fuzz {name}: {n} inputs survived in {secs} s (seed {rng_seed})");
    }
}

/// Config values that panicked or sized allocations before the readers checked them: each is an
/// error naming the value.
#[test]
fn hostile_config_values_are_errors() {
    use rfmx::clap_model::{config, features::FeatureExtractor, text::bpe_tokenizer};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let musicgen: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("fixtures/t5/tiny_musicgen/config.json")).unwrap(),
    )
    .unwrap();
    // hop_length and frame_rate divide and multiply by the ratios.
    for ratios in [
        serde_json::json!([0, 4]),
        serde_json::json!([u64::MAX / 2, 4]),
    ] {
        let mut cfg = musicgen.clone();
        cfg["audio_encoder"]["upsampling_ratios"] = ratios.clone();
        let e = rfmx::model::Pipeline::snapshot_configs(&cfg.to_string(), Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upsampling_ratios"), "{ratios}: {e}");
    }
    // 70 stages would shift the width past usize.
    let ones = vec![1; 70];
    let deep = serde_json::json!({"audio_config": {"depths": ones, "num_attention_heads": ones}});
    let e = config::ClapConfig::from_json_str(&deep.to_string(), Path::new("c.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("(overflow)"), "{e}");
    // The filter bank and window are sized by the config; the clip length overflows.
    for (json, want) in [
        (
            r#"{"fft_window_size": 1073741824}"#,
            "fft_window_size 1073741824",
        ),
        (r#"{"feature_size": 100000000}"#, "feature_size 100000000"),
        (r#"{"max_length_s": 18446744073709551615}"#, "max_length_s"),
    ] {
        let cfg = config::FeatureConfig::from_json_str(json, Path::new("p.json")).unwrap();
        let e = FeatureExtractor::new(cfg).unwrap_err().to_string();
        assert!(e.contains(want), "{json}: {e}");
    }
    // A merge whose result is not a token indexed past the builder's buffer.
    let vocab =
        r#"{"a": 0, "bcdefgh": 1, "<s>": 2, "</s>": 3, "<unk>": 4, "<pad>": 5, "<mask>": 6}"#;
    let e = bpe_tokenizer(vocab, "#version: 0.2\na bcdefgh\n", None, Path::new("snap"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("merges.txt") && e.contains("merge 1"), "{e}");
    // Ids beyond u32 are refused, not wrapped onto other tokens.
    let e = bpe_tokenizer(r#"{"a": 4294967296}"#, "", None, Path::new("snap"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a u32"), "{e}");
}
