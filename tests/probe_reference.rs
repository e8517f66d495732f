//! RFM parity with the reference (xRFM, float64) on fixtures/rfm (made by fixtures/make_rfm.py):
//! M after every AGOP update, the kept iteration, predictions and the top eigenvector.
//! Tolerance: max |ours − ref| ≤ 1e-4 × max |ref| for M (per iteration) and predictions;
//! top eigenvector equal up to sign within 1e-4 (∞-norm). Both fit paths are checked: the CPU
//! kernels (factored M) and the tensor-operation path a GPU runs, here on the CPU device.

use candle_core::{DType, Tensor};
use rfmx::probe::data::{Features, Targets, Task};
use rfmx::probe::directions::eigh_desc;
use rfmx::probe::rfm::{RfmHyper, RfmOptions, fit_rfm};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<f64> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/rfm")
        .join(name);
    Tensor::read_npy(&p)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rel_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

struct Case {
    hyper: RfmHyper,
    best_iter: usize,
}

fn cases() -> Vec<(String, Case)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/rfm/cases.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| {
            let hyper = RfmHyper {
                reg: c["reg"].as_f64().unwrap(),
                bandwidth: c["bandwidth"].as_f64().unwrap(),
                q: c["q"].as_f64().unwrap(),
                centre: c["centre"].as_bool().unwrap(),
                iterations: c["iters"].as_u64().unwrap() as usize,
            };
            (
                k.clone(),
                Case {
                    hyper,
                    best_iter: c["best_iter"].as_u64().unwrap() as usize,
                },
            )
        })
        .collect()
}

fn check(dtype: DType, tensor_path: bool) {
    let (n, d) = (200, 16);
    let x = fixture("X.npy");
    let y = fixture("y.npy");
    let split: Vec<usize> = fixture("split.npy").iter().map(|&v| v as usize).collect();
    let feats = Features::new(n, d, x.iter().map(|&v| v as f32).collect()).unwrap();
    let (tr, va, te) = (&split[..140], &split[140..170], &split[170..]);
    let ys = Targets::Values(y.clone());
    for (name, case) in cases() {
        let opt = RfmOptions {
            dtype,
            keep_ms: true,
            tensor_path,
            ..Default::default()
        };
        let (model, trace) = fit_rfm(
            &feats.select(tr),
            &ys.select(tr),
            &feats.select(va),
            &ys.select(va),
            Task::Regression,
            0,
            &case.hyper,
            &opt,
        )
        .unwrap();
        let ms = fixture(&format!("{name}_Ms.npy"));
        assert_eq!(
            trace.ms.len() * d * d,
            ms.len(),
            "{name}: number of M updates"
        );
        for (t, m) in trace.ms.iter().enumerate() {
            let e = rel_err(m, &ms[t * d * d..(t + 1) * d * d]);
            eprintln!("{name} {dtype:?} M{t} {e:e}");
            assert!(
                e <= 1e-4,
                "{name} {dtype:?}: M after update {t} rel err {e:e}"
            );
        }
        assert_eq!(trace.best_iter, case.best_iter, "{name}: kept iteration");
        let e = rel_err(&model.m, &fixture(&format!("{name}_M_best.npy")));
        assert!(e <= 1e-4, "{name}: best M rel err {e:e}");
        for (split, rows) in [("val", va), ("test", te)] {
            let p = model.predict_with(&feats.select(rows), dtype).unwrap();
            let e = rel_err(&p, &fixture(&format!("{name}_pred_{split}.npy")));
            eprintln!("{name} {dtype:?} {split} {e:e}");
            assert!(
                e <= 1e-4,
                "{name} {dtype:?}: {split} predictions rel err {e:e}"
            );
        }
        let (_, vecs) = eigh_desc(&model.m, d);
        let r = fixture(&format!("{name}_top_eigvec.npy"));
        let sign = if vecs[0].iter().zip(&r).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
            -1.0
        } else {
            1.0
        };
        let e = vecs[0]
            .iter()
            .zip(&r)
            .fold(0.0f64, |m, (a, b)| m.max((sign * a - b).abs()));
        assert!(e <= 1e-4, "{name}: top eigenvector differs by {e:e}");
    }
}

#[test]
fn rfm_matches_xrfm_in_f64() {
    check(DType::F64, false);
}

#[test]
fn rfm_matches_xrfm_in_f32() {
    check(DType::F32, false);
}

#[test]
fn tensor_path_rfm_matches_xrfm_in_f64() {
    check(DType::F64, true);
}

#[test]
fn tensor_path_rfm_matches_xrfm_in_f32() {
    check(DType::F32, true);
}
