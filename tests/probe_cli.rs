//! `rfmx probe fit` end to end (through the command function, no subprocess): files in, JSON
//! and probe files out; save/load round trip; and the bad inputs that must be clear errors.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rfmx::probe::cli::{ApplyArgs, FitArgs, KindArg, TaskArg, apply_command, fit_command};
use rfmx::probe::{
    Features, ProbeConfig, ProbeError, ProbeFit, ProbeKind, RfmHyper, Targets, Task,
};
use std::path::{Path, PathBuf};

/// Three Gaussian blobs in d = 8 separated along coordinates 0 and 1.
fn blobs(n_per: usize, seed: u64) -> (Vec<f32>, Vec<usize>, usize) {
    let d = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = vec![];
    let mut y = vec![];
    for c in 0..3 {
        for _ in 0..n_per {
            for j in 0..d {
                let z: f32 = StandardNormal.sample(&mut rng);
                let shift = match (c, j) {
                    (1, 0) | (2, 1) => 4.0,
                    _ => 0.0,
                };
                x.push(z + shift);
            }
            y.push(c);
        }
    }
    (x, y, d)
}

fn write_inputs(dir: &Path, x: &[f32], n: usize, d: usize, labels_csv: &str) -> (PathBuf, PathBuf) {
    let xp = dir.join("X.npy");
    Tensor::from_slice(x, (n, d), &Device::Cpu)
        .unwrap()
        .write_npy(&xp)
        .unwrap();
    let yp = dir.join("y.csv");
    std::fs::write(&yp, labels_csv).unwrap();
    (xp, yp)
}

fn args(
    features: PathBuf,
    labels: PathBuf,
    kind: KindArg,
    task: Option<TaskArg>,
    out: Option<PathBuf>,
) -> FitArgs {
    FitArgs {
        features,
        labels,
        column: None,
        kind,
        task,
        out,
        seed: 3,
        trials: 2,
        iterations: 3,
        reg: None,
        bandwidth: None,
        q: None,
        centre: false,
        top_k: 4,
        no_standardise: false,
        threads: Some(1),
        f64: false,
        no_early_stop: false,
    }
}

#[test]
fn fit_multiclass_writes_probe_and_reports_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y, d) = blobs(40, 1);
    let n = y.len();
    let names = ["do", "re", "mi"];
    let csv = std::iter::once("note".to_string())
        .chain(y.iter().map(|&c| names[c].to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let (xp, yp) = write_inputs(dir.path(), &x, n, d, &csv);
    let out = dir.path().join("probe");
    let mut a = args(xp.clone(), yp, KindArg::Rfm, None, Some(out.clone()));
    a.column = Some("note".into());
    let v = fit_command(&a).unwrap();
    assert_eq!(v["task"], "multiclass");
    assert_eq!(v["split_seed"], 3);
    assert_eq!(v["classes"], serde_json::json!(["do", "mi", "re"]));
    let acc = v["test"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "test accuracy {acc}");
    assert!(v["val"]["auc"].as_f64().unwrap() > 0.9);
    for f in [
        "M.npy",
        "eigenvalues.npy",
        "directions.npy",
        "hyper.json",
        "probe.json",
        "probe.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let dirs = Tensor::read_npy(out.join("directions.npy")).unwrap();
    assert_eq!(dirs.dims(), &[4, d]);
    // Directions are unit norm.
    for row in dirs.to_vec2::<f32>().unwrap() {
        let norm: f32 = row.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    // Apply the saved probe: same predictions as the in-memory one.
    let ap = apply_command(&ApplyArgs {
        probe: out.clone(),
        features: xp,
        out: None,
    })
    .unwrap();
    assert_eq!(ap["outputs"], 3);
    let loaded = ProbeFit::load(&out).unwrap();
    let feats = Features::new(n, d, x.clone()).unwrap();
    let classes = loaded.predict_classes(&feats).unwrap();
    // Class indices follow the sorted names: do=0, mi=1, re=2.
    let sorted = ["do", "mi", "re"];
    let want: Vec<usize> = y
        .iter()
        .map(|&c| sorted.iter().position(|s| *s == names[c]).unwrap())
        .collect();
    let agree = classes.iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(agree as f64 / n as f64 > 0.8);
}

#[test]
fn save_load_round_trip_preserves_predictions_for_every_kind() {
    let (x, y, d) = blobs(30, 2);
    let n = y.len();
    let feats = Features::new(n, d, x).unwrap();
    let targets = Targets::Classes(y.iter().map(|&c| usize::from(c == 1)).collect());
    for kind in [ProbeKind::Rfm, ProbeKind::Linear, ProbeKind::Mlp] {
        let mut cfg = ProbeConfig {
            kind,
            task: Task::Binary,
            trials: 2,
            iterations: 2,
            threads: Some(1),
            ..Default::default()
        };
        cfg.mlp.max_steps = 200;
        let fit = rfmx::probe::fit(&feats, &targets, &cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fit.save(dir.path()).unwrap();
        let back = ProbeFit::load(dir.path()).unwrap();
        assert_eq!(
            fit.predict(&feats).unwrap(),
            back.predict(&feats).unwrap(),
            "{kind:?}"
        );
        assert_eq!(back.split, fit.split);
        // JSON keeps scores to the last ulp or so (serde_json without float_roundtrip).
        assert!((back.val.auc.unwrap() - fit.val.auc.unwrap()).abs() < 1e-12);
        assert!(
            fit.val.auc.unwrap() > 0.8,
            "{kind:?} val AUC {:?}",
            fit.val.auc
        );
    }
}

#[test]
fn regression_and_fixed_hyper_parameters_skip_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let (x, _, d) = blobs(30, 3);
    let n = x.len() / d;
    let csv: String = (0..n)
        .map(|i| format!("{}\n", x[i * d] as f64 * 2.0 + 0.5 * x[i * d + 1] as f64))
        .collect();
    let (xp, yp) = write_inputs(dir.path(), &x, n, d, &csv);
    let mut a = args(xp, yp, KindArg::Rfm, Some(TaskArg::Regression), None);
    a.reg = Some(1e-3);
    a.bandwidth = Some(10.0);
    a.q = Some(1.0);
    let v = fit_command(&a).unwrap();
    assert_eq!(v["hyper"]["bandwidth"], 10.0);
    assert!(v["test"]["r2"].as_f64().unwrap() > 0.9, "{v}");
}

#[test]
fn safetensors_features_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y, d) = blobs(20, 5);
    let n = y.len();
    let t = Tensor::from_slice(&x, (n, d), &Device::Cpu).unwrap();
    let xp = dir.path().join("X.safetensors");
    let mut m = std::collections::HashMap::new();
    m.insert("features".to_string(), t.clone());
    m.insert("other".to_string(), t);
    candle_core::safetensors::save(&m, &xp).unwrap();
    let yp = dir.path().join("y.npy");
    Tensor::from_vec(
        y.iter().map(|&c| c as i64).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap()
    .write_npy(&yp)
    .unwrap();
    let v = fit_command(&args(xp, yp, KindArg::Linear, None, None)).unwrap();
    assert_eq!(v["task"], "multiclass");
    assert_eq!(v["d"], d);
}

fn expect_err(r: Result<serde_json::Value, ProbeError>, pat: &str) {
    match r {
        Ok(v) => panic!("expected an error containing {pat:?}, got {v}"),
        Err(e) => assert!(
            e.to_string().contains(pat),
            "error {e:?} does not mention {pat:?}"
        ),
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut x, y, d) = blobs(10, 4);
    let n = y.len();
    let csv: String = y.iter().map(|c| format!("{c}\n")).collect();

    // n mismatch: one label short.
    let short: String = y[1..].iter().map(|c| format!("{c}\n")).collect();
    let (xp, yp) = write_inputs(dir.path(), &x, n, d, &short);
    expect_err(
        fit_command(&args(xp, yp, KindArg::Rfm, None, None)),
        "labels have",
    );

    // A class with a single sample.
    let mut one = y.clone();
    one[0] = 7;
    let one_csv: String = one.iter().map(|c| format!("{c}\n")).collect();
    let (xp, yp) = write_inputs(dir.path(), &x, n, d, &one_csv);
    expect_err(
        fit_command(&args(xp, yp, KindArg::Rfm, None, None)),
        "only 1 sample",
    );

    // NaN feature.
    x[5 * d + 2] = f32::NAN;
    let (xp, yp) = write_inputs(dir.path(), &x, n, d, &csv);
    expect_err(
        fit_command(&args(xp, yp, KindArg::Linear, None, None)),
        "row 5, column 2",
    );
    x[5 * d + 2] = 0.0;

    // d mismatch between the fitted probe and the rows it is applied to.
    let out = dir.path().join("p");
    let (xp, yp) = write_inputs(dir.path(), &x, n, d, &csv);
    fit_command(&args(xp, yp, KindArg::Linear, None, Some(out.clone()))).unwrap();
    let narrow = dir.path().join("narrow.npy");
    Tensor::from_slice(&x[..n * (d - 1)], (n, d - 1), &Device::Cpu)
        .unwrap()
        .write_npy(&narrow)
        .unwrap();
    expect_err(
        apply_command(&ApplyArgs {
            probe: out,
            features: narrow,
            out: None,
        }),
        "fitted on d = 8, got d = 7",
    );

    // 1-D features, and invalid fixed hyper-parameters.
    let flat = dir.path().join("flat.npy");
    Tensor::from_slice(&x[..n], n, &Device::Cpu)
        .unwrap()
        .write_npy(&flat)
        .unwrap();
    let (_, yp) = write_inputs(dir.path(), &x, n, d, &csv);
    expect_err(
        fit_command(&args(flat, yp.clone(), KindArg::Rfm, None, None)),
        "2-D",
    );
    let feats = Features::new(n, d, x).unwrap();
    let cfg = ProbeConfig {
        task: Task::Multiclass,
        fixed: Some(RfmHyper {
            reg: 1e-3,
            bandwidth: -1.0,
            q: 1.0,
            centre: false,
            iterations: 2,
        }),
        ..Default::default()
    };
    let e = rfmx::probe::fit(&feats, &Targets::Classes(y), &cfg).unwrap_err();
    assert!(e.to_string().contains("bandwidth > 0"), "{e}");
}
