//! FD and MMD against fixtures/make_eval.py (numpy/scipy) on fixed random embeddings.
//! Tolerance: 1e-6 relative (both are f64 end to end; the observed gap is ~1e-12).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rfmx::eval::stats::{
    FdSpace, bootstrap_two_sample, frechet, frechet_in, median_bandwidth, mmd2,
};

fn load(name: &str) -> Vec<Vec<f64>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/eval")
        .join(name);
    let t = Tensor::read_npy(p).unwrap();
    assert_eq!(t.device().location(), Device::Cpu.location());
    t.to_vec2::<f64>().unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn fd_and_mmd_match_numpy_scipy() {
    let (x, y) = (load("X.npy"), load("Y.npy"));
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/eval/ref.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let fd = frechet(&x, &y).unwrap();
    assert!(
        rel(fd, r["fd"].as_f64().unwrap()) < 1e-6,
        "fd {fd} vs {}",
        r["fd"]
    );
    assert!(rel(fd, r["fd_symmetric"].as_f64().unwrap()) < 1e-6);
    // The sample-space form (used when samples < features) is the same number.
    for space in [FdSpace::Features, FdSpace::Samples] {
        let v = frechet_in(&x, &y, space).unwrap();
        assert!(rel(v, r["fd"].as_f64().unwrap()) < 1e-6, "{space:?}: {v}");
        let v = frechet_in(&x[..5], &y[..7], space).unwrap();
        let w = frechet_in(&x[..5], &y[..7], FdSpace::Features).unwrap();
        assert!(rel(v, w) < 1e-6, "{space:?} few samples: {v} vs {w}");
    }
    let s = median_bandwidth(&x, &y);
    assert!(rel(s, r["sigma"].as_f64().unwrap()) < 1e-6, "sigma {s}");
    let m = mmd2(&x, &y).unwrap();
    assert!(
        rel(m, r["mmd2"].as_f64().unwrap()) < 1e-6,
        "mmd2 {m} vs {}",
        r["mmd2"]
    );
    // FD is symmetric in its arguments and zero on identical sets.
    assert!(rel(frechet(&y, &x).unwrap(), fd) < 1e-6);
    assert!(frechet(&x, &x).unwrap().abs() < 1e-8);
    let e = bootstrap_two_sample(&x, &y, frechet, 200, 5).unwrap();
    assert_eq!(e.value, fd);
    assert!(e.ci_low < e.ci_high && e.ci_low > 0.0, "{e:?}");
}
