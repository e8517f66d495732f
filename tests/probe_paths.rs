//! The RFM's execution paths and shared work give the fits they replace:
//! - the CPU kernels (factored M) and the tensor-operation path (what a GPU runs; here on the CPU
//!   device) agree on predictions and M to 1e-4 relative (f32) / 1e-8 (f64);
//! - truncating M's spectrum (default tolerance) changes predictions by < 1e-4 relative and never
//!   raises the rank; the M-distances of the truncated metric are within the documented bound;
//! - a search sharing the raw Gram across trials scores every trial exactly as an independent fit;
//! - one factorisation with a c-column right-hand side gives the α of c separate fits (1e-5);
//! - the AGOP of many outputs through the n×n gradient Gram equals the one from the explicit
//!   gradients (1e-8 relative in f64, 1e-4 in f32), centred or not;
//! - with the cuda feature, probes fitted on the GPU equal CPU probes to 1e-4.

use candle_core::DType;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rfmx::probe::data::{Features, Targets, Task};
use rfmx::probe::rfm::{RfmHyper, RfmOptions, fit_rfm};
use rfmx::probe::search;

fn problem(n: usize, d: usize, seed: u64) -> (Features, Vec<f64>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..n * d)
        .map(|_| {
            let v: f64 = StandardNormal.sample(&mut rng);
            v as f32
        })
        .collect();
    let x = Features::new(n, d, data).unwrap();
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let r = x.row(i);
            (r[0] * r[1]) as f64 + 0.5 * (r[2] as f64).sin() + 0.3 * r[3] as f64
        })
        .collect();
    let cls = (0..n)
        .map(|i| {
            let r = x.row(i);
            usize::from(r[0] > 0.0) + 2 * usize::from(r[1] + r[2] > 0.0)
        })
        .collect();
    (x, y, cls)
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn hyper(iterations: usize, centre: bool) -> RfmHyper {
    RfmHyper {
        reg: 1e-2,
        bandwidth: 6.0,
        q: 1.0,
        centre,
        iterations,
    }
}

fn split(x: &Features, y: &Targets) -> (Features, Targets, Features, Targets) {
    let tr: Vec<usize> = (0..x.n * 4 / 5).collect();
    let va: Vec<usize> = (x.n * 4 / 5..x.n).collect();
    (x.select(&tr), y.select(&tr), x.select(&va), y.select(&va))
}

#[test]
fn cpu_kernels_and_tensor_path_agree() {
    let (x, y, cls) = problem(260, 24, 1);
    for (task, targets, c) in [
        (Task::Regression, Targets::Values(y), 0),
        (Task::Multiclass, Targets::Classes(cls), 4),
    ] {
        let (xtr, ytr, xva, yva) = split(&x, &targets);
        for (dtype, tol) in [(DType::F64, 1e-8), (DType::F32, 1e-4)] {
            let fit = |tensor_path: bool| {
                let opt = RfmOptions {
                    dtype,
                    tensor_path,
                    keep_ms: true,
                    early_stop_multiplier: f64::INFINITY,
                    ..Default::default()
                };
                fit_rfm(&xtr, &ytr, &xva, &yva, task, c, &hyper(3, true), &opt).unwrap()
            };
            let (a, ta) = fit(false);
            let (b, tb) = fit(true);
            assert_eq!(ta.val.len(), tb.val.len());
            for (t, (ma, mb)) in ta.ms.iter().zip(&tb.ms).enumerate() {
                let e = rel(ma, mb);
                assert!(e <= tol, "{task:?} {dtype:?}: M{t} differs by {e:e}");
            }
            let (pa, pb) = (
                a.predict_with(&xva, dtype).unwrap(),
                b.predict_with(&xva, dtype).unwrap(),
            );
            let e = rel(&pa, &pb);
            assert!(e <= tol, "{task:?} {dtype:?}: predictions differ by {e:e}");
        }
    }
}

#[test]
fn truncated_metric_predicts_like_the_full_one() {
    // Low intrinsic dimension: the later metrics have a tail the default tolerance drops.
    let (x, y, _) = problem(400, 48, 2);
    let t = Targets::Values(y);
    let (xtr, ytr, xva, yva) = split(&x, &t);
    let fit = |tol: f64| {
        let opt = RfmOptions {
            truncate_tol: Some(tol),
            early_stop_multiplier: f64::INFINITY,
            ..Default::default()
        };
        fit_rfm(
            &xtr,
            &ytr,
            &xva,
            &yva,
            Task::Regression,
            0,
            &hyper(4, false),
            &opt,
        )
        .unwrap()
    };
    let (full, tf) = fit(0.0);
    let (trunc, tt) = fit(1e-6);
    for (a, b) in tt.ranks.iter().zip(&tf.ranks) {
        assert!(
            a <= b,
            "truncation raised a rank: {:?} vs {:?}",
            tt.ranks,
            tf.ranks
        );
    }
    let e = rel(&trunc.predict(&xva).unwrap(), &full.predict(&xva).unwrap());
    assert!(e < 1e-4, "predictions differ by {e:e}");
    // The M-distance of any pair moves by at most the dropped tail times ‖δ‖² (λ_max of the
    // dropped part ≤ its trace ≤ tol · trace M).
    let (mf, mt) = (&full.m, &trunc.m);
    let d = x.d;
    let trace: f64 = (0..d).map(|i| mf[i * d + i]).sum();
    for p in 0..20 {
        let (a, b) = (xva.row(p), xva.row(p + 20));
        let delta: Vec<f64> = a.iter().zip(b).map(|(u, v)| (*u - *v) as f64).collect();
        let q = |m: &[f64]| -> f64 {
            (0..d)
                .map(|i| {
                    (0..d)
                        .map(|j| delta[i] * m[i * d + j] * delta[j])
                        .sum::<f64>()
                })
                .sum()
        };
        let norm2: f64 = delta.iter().map(|v| v * v).sum();
        let diff = (q(mf) - q(mt)).abs();
        assert!(
            diff <= 1e-6 * trace * norm2 + 1e-5 * q(mf),
            "pair {p}: {diff:e} (bound {:e})",
            1e-6 * trace * norm2
        );
    }
}

#[test]
fn shared_gram_search_scores_every_trial_like_an_independent_fit() {
    let (x, _, cls) = problem(240, 20, 3);
    let t = Targets::Classes(cls);
    let (xtr, ytr, xva, yva) = split(&x, &t);
    let opt = RfmOptions::default();
    let (_, _, log) =
        search::search(&xtr, &ytr, &xva, &yva, Task::Multiclass, 4, 4, 2, 9, &opt).unwrap();
    for trial in &log {
        let (_, tr) = fit_rfm(
            &xtr,
            &ytr,
            &xva,
            &yva,
            Task::Multiclass,
            4,
            &trial.hyper,
            &opt,
        )
        .unwrap();
        let alone = tr.val[tr.best_iter];
        assert!(
            (alone - trial.val).abs() <= 1e-12,
            "{:?}: {} shared vs {} alone",
            trial.hyper,
            trial.val,
            alone
        );
    }
}

#[test]
fn one_factorisation_serves_every_output_column() {
    // Iteration 0 only (M = I): every one-hot column sees the same K.
    let (x, _, cls) = problem(200, 16, 4);
    let t = Targets::Classes(cls.clone());
    let (xtr, ytr, xva, yva) = split(&x, &t);
    let opt = RfmOptions {
        dtype: DType::F64,
        ..Default::default()
    };
    let (all, _) = fit_rfm(
        &xtr,
        &ytr,
        &xva,
        &yva,
        Task::Multiclass,
        4,
        &hyper(0, false),
        &opt,
    )
    .unwrap();
    let Targets::Classes(tr_cls) = &ytr else {
        unreachable!()
    };
    let Targets::Classes(va_cls) = &yva else {
        unreachable!()
    };
    for k in 0..4 {
        let col =
            |c: &[usize]| Targets::Values(c.iter().map(|&v| f64::from(u8::from(v == k))).collect());
        let (one, _) = fit_rfm(
            &xtr,
            &col(tr_cls),
            &xva,
            &col(va_cls),
            Task::Regression,
            0,
            &hyper(0, false),
            &opt,
        )
        .unwrap();
        let a: Vec<f64> = (0..xtr.n).map(|i| all.alpha[i * 4 + k]).collect();
        let e = rel(&a, &one.alpha);
        assert!(e <= 1e-5, "class {k}: α differs by {e:e}");
    }
}

#[test]
fn gradient_gram_route_equals_explicit_gradients() {
    let (x, _, cls) = problem(220, 12, 6);
    let t = Targets::Classes(cls);
    let (xtr, ytr, xva, yva) = split(&x, &t);
    for centre in [false, true] {
        for (dtype, tol) in [(DType::F64, 1e-8), (DType::F32, 1e-4)] {
            let fit = |gram: bool| {
                let opt = RfmOptions {
                    dtype,
                    keep_ms: true,
                    gradient_gram: Some(gram),
                    early_stop_multiplier: f64::INFINITY,
                    ..Default::default()
                };
                fit_rfm(
                    &xtr,
                    &ytr,
                    &xva,
                    &yva,
                    Task::Multiclass,
                    4,
                    &hyper(3, centre),
                    &opt,
                )
                .unwrap()
                .1
            };
            let (a, b) = (fit(true), fit(false));
            for (t, (ma, mb)) in a.ms.iter().zip(&b.ms).enumerate() {
                let e = rel(ma, mb);
                assert!(e <= tol, "centre {centre} {dtype:?}: M{t} differs by {e:e}");
            }
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn probes_on_the_gpu_equal_cpu_probes() {
    use rfmx::probe::{ProbeConfig, ProbeKind, fit, fit_on};
    let dev = match candle_core::Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: built with cuda but no usable GPU here ({e})");
            return;
        }
    };
    let (x, _, cls) = problem(300, 32, 5);
    let t = Targets::Classes(cls);
    for kind in [ProbeKind::Rfm, ProbeKind::Linear] {
        let cfg = ProbeConfig {
            kind,
            task: Task::Multiclass,
            trials: 2,
            iterations: 3,
            ..ProbeConfig::default()
        };
        let cpu = fit(&x, &t, &cfg).unwrap();
        let gpu = fit_on(&x, &t, &cfg, &dev).unwrap();
        let (a, b) = (cpu.predict(&x).unwrap(), gpu.predict(&x).unwrap());
        let e = rel(&b, &a);
        assert!(
            e <= 1e-4,
            "{kind:?}: GPU vs CPU predictions differ by {e:e}"
        );
    }
}
