//! `ClapFeatureExtractor` port against transformers' own output (fixtures/make_clap.py), replaying
//! the crops the reference drew, and the 32 → 48 kHz resampler.

mod common;

use candle_core::Device;
use rfmx::clap_model::ClapError;
use rfmx::clap_model::config::{FeatureConfig, Padding, Truncation};
use rfmx::clap_model::features::{Crops, FeatureExtractor, resample};

use common::clap_fixtures::{fixtures, refs, wave};
use common::numeric::rel_err;

fn check_variant(variant: &str, truncation: Truncation, crops_b: Crops) {
    let cfg = FeatureConfig::load(&fixtures().join(variant)).unwrap();
    assert_eq!(cfg.truncation, truncation);
    assert_eq!(cfg.frequency_min, 50.0);
    let fe = FeatureExtractor::new(cfg).unwrap();
    let (t, _) = refs(variant);
    for (clip, crops) in [("a", Crops::Seeded(0)), ("b", crops_b)] {
        let wave = wave(&format!("clip_{clip}.wav"));
        let mel = fe.extract(&wave, &crops).unwrap();
        let ours = mel.to_tensor(&Device::Cpu).unwrap();
        let reference = &t[&format!("features_{clip}")];
        let err = rel_err(&ours, reference);
        eprintln!(
            "{variant} clip_{clip}: {:?} max|diff| / max|ref| {err:.3e}",
            ours.dims()
        );
        // The tolerance: 1e-5 relative to the largest feature magnitude.
        assert!(err <= 1e-5, "{variant} clip_{clip}: {err:e} > 1e-5");
        let longer = t[&format!("is_longer_{clip}")].to_vec1::<f32>().unwrap();
        assert_eq!(
            mel.is_longer,
            longer[0] == 1.0,
            "{variant} is_longer_{clip}"
        );
    }
}

#[test]
fn rand_trunc_matches_transformers() {
    let (_, j) = refs("tiny_clap");
    let idx = j["crops"]["clip_b"]["rand_trunc"].as_u64().unwrap() as usize;
    check_variant("tiny_clap", Truncation::RandTrunc, Crops::Given(vec![idx]));
}

#[test]
fn fusion_matches_transformers() {
    let (_, j) = refs("tiny_clap_fused");
    let idx: Vec<usize> = j["crops"]["clip_b"]["fusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(idx.len(), 3);
    check_variant("tiny_clap_fused", Truncation::Fusion, Crops::Given(idx));
}

fn small_cfg(truncation: Truncation, padding: Padding) -> FeatureConfig {
    // 0.1 s at 8 kHz: keeps the shape checks fast.
    FeatureConfig {
        feature_size: 16,
        sampling_rate: 8_000,
        hop_length: 80,
        max_length_s: 1,
        fft_window_size: 256,
        frequency_min: 0.0,
        frequency_max: 4_000.0,
        top_db: None,
        truncation,
        padding,
    }
}

#[test]
fn seeded_crops_are_reproducible_and_in_range() {
    let wave: Vec<f64> = (0..9_000).map(|i| (i as f64 * 0.05).sin()).collect();
    for truncation in [Truncation::RandTrunc, Truncation::Fusion] {
        let fe = FeatureExtractor::new(small_cfg(truncation, Padding::Repeatpad)).unwrap();
        let a = fe.extract(&wave, &Crops::Seeded(3)).unwrap();
        let b = fe.extract(&wave, &Crops::Seeded(3)).unwrap();
        assert_eq!(a, b);
        assert!(a.is_longer);
        assert_eq!(a.frames, 8_000 / 80 + 1);
        assert_eq!(
            a.channels,
            if truncation == Truncation::Fusion {
                4
            } else {
                1
            }
        );
        assert_eq!(a.data.len(), a.channels * a.frames * 16);
    }
    // rand_trunc offset 0 must equal the features of the first max_samples samples.
    let fe = FeatureExtractor::new(small_cfg(Truncation::RandTrunc, Padding::Repeatpad)).unwrap();
    let cropped = fe.extract(&wave, &Crops::Given(vec![0])).unwrap();
    let head = fe.extract(&wave[..8_000], &Crops::Seeded(9)).unwrap();
    assert_eq!(cropped.data, head.data);
    assert!(!head.is_longer);
}

#[test]
fn bad_input_is_refused() {
    let fe = FeatureExtractor::new(small_cfg(Truncation::Fusion, Padding::Pad)).unwrap();
    assert!(matches!(
        fe.extract(&[], &Crops::Seeded(0)),
        Err(ClapError::Input(_))
    ));
    assert!(matches!(
        fe.extract(&[0.0, f64::NAN], &Crops::Seeded(0)),
        Err(ClapError::Input(_))
    ));
    let long = vec![0.1; 9_000];
    // fusion: 13 candidate offsets split [0..5), [5..9), [9..13); 7 is not in the front third.
    let err = fe
        .extract(&long, &Crops::Given(vec![7, 6, 10]))
        .unwrap_err();
    assert!(err.to_string().contains("fusion crops"), "{err}");
    assert!(fe.extract(&long, &Crops::Given(vec![4, 6, 12])).is_ok());
    let fe = FeatureExtractor::new(small_cfg(Truncation::RandTrunc, Padding::Pad)).unwrap();
    let err = fe.extract(&long, &Crops::Given(vec![1_001])).unwrap_err();
    assert!(err.to_string().contains("0..=1000"), "{err}");
    // padding modes change the tail, not the head.
    let short = vec![0.3; 3_000];
    let pad = fe.extract(&short, &Crops::Seeded(0)).unwrap();
    let fe = FeatureExtractor::new(small_cfg(Truncation::RandTrunc, Padding::Repeat)).unwrap();
    let rep = fe.extract(&short, &Crops::Seeded(0)).unwrap();
    assert_eq!(pad.data[..16 * 10], rep.data[..16 * 10]);
    assert_ne!(pad.data[16 * 90..], rep.data[16 * 90..]);
}

/// Frequency from the interpolated peak of a Hann-windowed DFT over `x`.
fn peak_hz(x: &[f32], sr: f64) -> f64 {
    let n = x.len();
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n);
    let mut input: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
            v as f64 * w
        })
        .collect();
    let mut out = fft.make_output_vec();
    fft.process(&mut input, &mut out).unwrap();
    let mag: Vec<f64> = out.iter().map(|c| c.norm().ln()).collect();
    let k = (1..mag.len() - 1)
        .max_by(|&a, &b| mag[a].total_cmp(&mag[b]))
        .unwrap();
    // Parabolic interpolation on the log magnitude.
    let (a, b, c) = (mag[k - 1], mag[k], mag[k + 1]);
    let delta = 0.5 * (a - c) / (a - 2.0 * b + c);
    (k as f64 + delta) * sr / n as f64
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

#[test]
fn resample_32k_to_48k_keeps_a_sine() {
    let x: Vec<f32> = (0..32_000)
        .map(|i| (0.5 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 32_000.0).sin()) as f32)
        .collect();
    let y = resample(&x, 32_000, 48_000).unwrap();
    assert!(
        (y.len() as i64 - 48_000).abs() <= 4,
        "length {} (want 48000 ± 4)",
        y.len()
    );
    // Away from the edges (filter transients): frequency within 0.5 Hz, RMS within 0.5 %.
    let mid = &y[4_800..43_200];
    let f = peak_hz(mid, 48_000.0);
    assert!((f - 1000.0).abs() < 0.5, "peak at {f} Hz");
    let (r_in, r_out) = (rms(&x[3_200..28_800]), rms(mid));
    assert!(
        (r_out / r_in - 1.0).abs() < 5e-3,
        "rms {r_out} vs {r_in} (ratio {})",
        r_out / r_in
    );
    eprintln!(
        "resampled: len {}, peak {f:.4} Hz, rms ratio {:.6}",
        y.len(),
        r_out / r_in
    );
    assert!(matches!(resample(&x, 0, 48_000), Err(ClapError::Input(_))));
    assert!(matches!(resample(&x, 32_000, 0), Err(ClapError::Input(_))));
    assert!(matches!(
        resample(&[], 32_000, 48_000),
        Err(ClapError::Input(_))
    ));
}
