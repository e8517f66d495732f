//! `rfmx data export` through the binary: files, labels, manifest, and bad input.

use std::process::Command;

fn rfmx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rfmx"))
        .args(args)
        .output()
        .expect("rfmx runs")
}

#[test]
fn export_writes_wavs_labels_and_a_manifest() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("chords");
    let o = rfmx(&[
        "data",
        "export",
        "chords",
        "--per-class",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--builtin-synth",
        "--native",
        "--class",
        "major",
        "--class",
        "dim",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let labels = std::fs::read_to_string(out.join("labels.csv")).unwrap();
    let rows: Vec<&str> = labels.lines().collect();
    assert_eq!(rows.len(), 1 + 4, "{labels}");
    let header: Vec<&str> = rows[0].split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no `{name}` column in {header:?}"))
    };
    let (file_col, class_col) = (col("file"), col("class"));
    col("concept");
    col("instrument");
    for row in &rows[1..] {
        let file = row.split(',').nth(file_col).unwrap();
        let spec = hound::WavReader::open(out.join(file)).unwrap().spec();
        assert_eq!((spec.sample_rate, spec.channels), (32_000, 1), "{file}");
        let native = file.replace(".wav", "_44k.wav");
        let spec = hound::WavReader::open(out.join(&native)).unwrap().spec();
        assert_eq!((spec.sample_rate, spec.channels), (44_100, 2), "{native}");
        let class = row.split(',').nth(class_col).unwrap();
        assert!(class == "major" || class == "dim", "{row}");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["kept"], 4);
    assert_eq!(m["silent_dropped"], 0);
    assert!(
        m["renderer"].to_string().contains("uiltin"),
        "{}",
        m["renderer"]
    );
}

#[test]
fn bad_input_exits_non_zero_with_the_key_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["data", "export", "noets", "--out", o], "data.concept"),
        (
            vec!["data", "export", "notes", "--class", "H", "--out", o],
            "data.classes",
        ),
        (
            vec![
                "data",
                "export",
                "notes",
                "--per-class",
                "100000",
                "--out",
                o,
            ],
            "data.per_class",
        ),
        (
            vec![
                "data",
                "export",
                "notes",
                "--soundfont",
                "/no/such.sf2",
                "--out",
                o,
            ],
            "data.soundfont",
        ),
    ] {
        let r = rfmx(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.join("labels.csv").exists(), "{args:?} wrote labels");
    }
}
