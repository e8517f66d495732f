//! Hostile files through the binary: each is a clear error naming the file, exit 2, never an
//! abort or an allocation of what a header claims (docs/contracts.md, "Files rfmx reads").

mod common;

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

/// A valid 4×2 f32 features file in `dir`.
fn features(dir: &Path) -> std::path::PathBuf {
    let x = dir.join("x.npy");
    std::fs::write(
        &x,
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }",
            &[0; 32],
        ),
    )
    .unwrap();
    x
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
    let x = features(d.path());
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

fn rfmx_home(home: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rfmx"))
        .args(args)
        .env("RFMX_HOME", home)
        .output()
        .expect("rfmx runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn manifest(key: &str, output: &str) -> String {
    serde_json::json!({
        "rfmx_version": "0", "key": key, "id": "x", "kind": "x", "version": 1, "params": {},
        "inputs": [], "outputs": {output: {"blake3": "00", "bytes": 1}},
        "started_unix": 0.0, "seconds": 0.0,
    })
    .to_string()
}

/// `status` and `gc` on a store seeded with hostile manifests, failure records and lock names:
/// each entry is reported corrupt with its reason and removed, nothing outside the store is
/// touched, and short or non-ASCII keys never panic a display slice.
#[test]
fn status_and_gc_survive_a_store_of_hostile_manifests() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let outside = d.path().join("x");
    std::fs::write(&outside, "user file").unwrap();
    let entry = |key: &str, text: &str| {
        let e = home.join("store").join(key);
        std::fs::create_dir_all(e.join("out")).unwrap();
        std::fs::write(e.join("manifest.json"), text).unwrap();
    };
    entry("escape", &manifest("escape", "../../x"));
    entry("absolute", &manifest("absolute", "/etc/passwd"));
    entry("foreign", &manifest("ééééééééééééééé", "a"));
    entry("garbage", "\u{0}{{{not json");
    entry("truncated", &manifest("truncated", "a"));
    std::fs::write(home.join("store/truncated/out/a"), "").unwrap();
    std::fs::create_dir_all(home.join("failures")).unwrap();
    let rec = serde_json::json!({
        "id": "n", "key": "é", "kind": "k", "params": {}, "error_chain": ["boom"],
        "log": "l", "failed_unix": 0.0,
    });
    std::fs::write(home.join("failures/é.json"), rec.to_string()).unwrap();
    std::fs::write(home.join("failures/short.json"), "{\"id\": 3").unwrap();
    std::fs::create_dir_all(home.join("locks")).unwrap();
    std::fs::write(home.join("locks/ü.lock"), "").unwrap();
    // Outputs that are a link to an endless device, a FIFO, and a size no file has: verify must
    // neither follow, block nor believe them.
    #[cfg(unix)]
    {
        entry("linked", &manifest("linked", "a"));
        std::os::unix::fs::symlink("/dev/zero", home.join("store/linked/out/a")).unwrap();
        entry("fifo", &manifest("fifo", "a"));
        let made = Command::new("mkfifo")
            .arg(home.join("store/fifo/out/a"))
            .status()
            .unwrap();
        assert!(made.success());
        let huge = manifest("huge", "a").replace("\"bytes\":1", &format!("\"bytes\":{}", u64::MAX));
        assert!(huge.contains(&u64::MAX.to_string()), "{huge}");
        entry("huge", &huge);
        std::fs::write(home.join("store/huge/out/a"), "x").unwrap();
    }
    // A Slurm state file with a job id that would reach scancel as an option and a key that
    // climbs out of the store.
    std::fs::create_dir_all(home.join("slurm")).unwrap();
    let job =
        |id: &str| serde_json::json!({"id": "n", "job_id": id, "log": "l", "submitted_unix": 0.0});
    let state =
        serde_json::json!({"jobs": {"../../x": job("1"), "ab".repeat(32): job("--user=root")}});
    std::fs::write(home.join("slurm/exp.json"), state.to_string()).unwrap();
    std::fs::write(home.join("slurm/broken.json"), [0xff, 0xfe]).unwrap();

    let (code, out, err) = rfmx_home(&home, &["status", "--verify"]);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(code, 0, "{out}");
    for want in [
        "output name `../../x` leaves the entry's out/ folder",
        "output name `/etc/passwd` is absolute",
        "manifest.json belongs to key éééééééééééé",
        "manifest.json does not parse",
        "output `a` does not match its manifest hash",
        "[é]",
        "ignored the record \"../../x\" (job \"1\"): its key is not a cache key",
        "(job \"--user=root\"): its job id is not a Slurm job id",
        "slurm jobs of broken:",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }

    #[cfg(unix)]
    for want in [
        "output `a` is a symbolic link",
        "output `a` is not a regular file (a folder, FIFO or device)",
        "output `a` does not match its manifest hash",
        "8 corrupt",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    #[cfg(not(unix))]
    assert!(out.contains("5 corrupt"), "{out}");

    let (code, out, err) = rfmx_home(&home, &["gc"]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, 0, "{out}{err}");
    let left: Vec<_> = std::fs::read_dir(home.join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "user file");
}

/// A file over its kind's size limit is refused before anything is allocated for it (sparse
/// files: nothing is written to disk).
#[test]
fn oversized_labels_and_manifests_are_refused_before_reading() {
    let d = tempfile::tempdir().unwrap();
    let x = features(d.path());
    let y = d.path().join("big.csv");
    std::fs::File::create(&y)
        .unwrap()
        .set_len(rfmx::fsx::CSV_LIMIT + 1)
        .unwrap();
    let (code, err) = fit(&x, &y);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("big.csv") && err.contains("limit"), "{err}");

    let home = d.path().join("home");
    let e = home.join("store/big");
    std::fs::create_dir_all(&e).unwrap();
    std::fs::File::create(e.join("manifest.json"))
        .unwrap()
        .set_len(rfmx::fsx::TEXT_LIMIT + 1)
        .unwrap();
    let (code, out, err) = rfmx_home(&home, &["status", "--verify"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains("cannot read manifest.json") && out.contains("limit"),
        "{out}{err}"
    );
}

/// Hostile `pytorch_model.bin` files in an otherwise valid snapshot: each is exit 2 with the file
/// and the reason, no panic, no allocation of what the pickle claims, nothing written.
#[test]
fn generate_refuses_hostile_pytorch_checkpoints() {
    use common::torch_bin::{Pickle, checkpoint, seed};
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("snap");
    std::fs::create_dir_all(&snap).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/t5/tiny_musicgen_bin");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(f), snap.join(f)).unwrap();
    }
    let one_tensor = |numel: u32, size: &[u32], stride: &[u32]| {
        let pickle = Pickle::state_dict(false, |p| {
            p.tensor("w", ("FloatStorage", "0", numel), 0, size, stride, false);
        });
        checkpoint(&pickle, &[("0", &[0; 16])])
    };
    let mut deep = vec![0x80, 2, b'N'];
    deep.extend(std::iter::repeat_n(0x85, 1_000_000));
    deep.push(b'.');
    let mut long_string = vec![0x80, 2, b'X'];
    long_string.extend(u32::MAX.to_le_bytes());
    let valid = seed(false);
    let cases: [(&str, Vec<u8>, &str); 8] = [
        (
            "truncated zip",
            valid[..valid.len() / 2].to_vec(),
            "not a PyTorch zip",
        ),
        (
            "storage of 2^31 floats",
            one_tensor(0x7fff_ffff, &[0x7fff_ffff], &[1]),
            "claims 2147483647 elements",
        ),
        (
            "tensor beyond its storage",
            one_tensor(4, &[0xffff, 0xffff], &[0xffff, 1]),
            "outside its storage",
        ),
        (
            "storage larger than its entry",
            one_tensor(100, &[100], &[1]),
            "holds 16 bytes",
        ),
        (
            "bogus opcode",
            checkpoint(&[0x80, 2, 0xff], &[]),
            "opcode 0xff",
        ),
        (
            "a million nested tuples",
            checkpoint(&deep, &[]),
            "nest more than",
        ),
        ("a 4 GB string", checkpoint(&long_string, &[]), "truncated"),
        (
            "not a state dict",
            checkpoint(b"\x80\x02N.", &[]),
            "holds None",
        ),
    ];
    for (what, bytes, want) in cases {
        std::fs::write(snap.join("pytorch_model.bin"), bytes).unwrap();
        let codes = d.path().join("c.npy");
        let o = rfmx(&[
            "generate",
            "--model",
            snap.to_str().unwrap(),
            "--prompt",
            "x",
            "--steps",
            "2",
            "--codes-out",
            codes.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("pytorch_model.bin") && err.contains(want),
            "{what}: want {want:?} in\n{err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!codes.exists(), "{what}");
    }
}
