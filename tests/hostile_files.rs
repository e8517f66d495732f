//! Hostile files through the binary: each is a clear error naming the file, exit 2, never an
//! abort or an allocation of what a header claims (docs/contracts.md, "Files rfmx reads").

use std::path::Path;
use std::process::Command;

fn rfmx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rfmx"))
        .args(args)
        .output()
        .expect("rfmx runs")
}

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn fit(features: &Path, labels: &Path) -> (i32, String) {
    let o = rfmx(&[
        "probe",
        "fit",
        "--features",
        features.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn probe_fit_refuses_an_npy_header_claiming_409_tb() {
    let d = tempfile::tempdir().unwrap();
    let x = d.path().join("huge.npy");
    std::fs::write(
        &x,
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 1024), }",
            &[0; 64],
        ),
    )
    .unwrap();
    let y = d.path().join("y.csv");
    std::fs::write(&y, "0\n1\n0\n1\n").unwrap();
    let (code, err) = fit(&x, &y);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("huge.npy"), "{err}");
    assert!(err.contains("409600000000000 bytes"), "{err}");
    assert!(!err.contains("memory allocation"), "{err}");
}

#[test]
fn probe_fit_refuses_truncated_and_garbage_label_npys() {
    let d = tempfile::tempdir().unwrap();
    let x = d.path().join("x.npy");
    std::fs::write(
        &x,
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }",
            &[0; 32],
        ),
    )
    .unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "short.npy",
            npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }",
                &[0; 8],
            ),
            "holds 8 bytes",
        ),
        ("garbage.npy", b"not numpy at all".to_vec(), "magic"),
        (
            "neg.npy",
            npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (-4,), }",
                &[],
            ),
            "\"-4\"",
        ),
    ];
    for (name, bytes, want) in cases {
        let y = d.path().join(name);
        std::fs::write(&y, bytes).unwrap();
        let (code, err) = fit(&x, &y);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
}
