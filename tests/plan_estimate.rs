//! `rfmx plan SPEC --estimate` (docs/design.md §9): every node kind of the plan gets a line, the
//! calibration is measured once per device/model/dtype and then read from the store.

mod common;

use std::path::Path;

fn notes_sweep() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/specs/notes_sweep.toml")
}

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The estimate's line of `kind`: `  kind  nodes  time  memory  scaling`.
fn row<'a>(out: &'a str, kind: &str) -> &'a str {
    let section = &out[out
        .find("estimate (nodes to run")
        .expect("no estimate section")..];
    section
        .lines()
        .find(|l| l.split_whitespace().next() == Some(kind))
        .unwrap_or_else(|| panic!("no `{kind}` row in\n{section}"))
}

fn calibration_files(home: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(home.join("calibration"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, bytes, mtime)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn estimate_prints_every_kind_and_reuses_its_calibration() {
    let w = common::Work::new();
    let first = stdout(&w.rfmx(&["plan", notes_sweep(), "--estimate"]));
    assert!(first.contains("measured now"), "{first}");
    let planned = first.lines().next().unwrap();
    assert!(planned.starts_with("755 node(s)"), "{planned}");
    let counts = [
        ("dataset", 1),
        ("activations", 1),
        ("probe", 4),
        ("directions", 12),
        ("generation", 580),
        ("evaluation", 156),
        ("report", 1),
        ("total", 755),
    ];
    for (kind, n) in counts {
        let cols: Vec<&str> = row(&first, kind).split_whitespace().collect();
        assert_eq!(cols[1], n.to_string(), "{kind} count in {first}");
    }
    // The modelled kinds have a time; the total is theirs summed and is not zero.
    for kind in [
        "dataset",
        "activations",
        "probe",
        "generation",
        "evaluation",
        "total",
    ] {
        let r = row(&first, kind);
        assert!(
            r.contains(" s ") || r.contains(" min ") || r.contains(" h "),
            "{kind} has no time: {r}"
        );
    }
    assert!(row(&first, "directions").contains("not modelled"));

    let files = calibration_files(&w.home());
    assert_eq!(
        files.len(),
        2,
        "a model and a renderer calibration: {files:?}"
    );
    let second = stdout(&w.rfmx(&["plan", notes_sweep(), "--estimate"]));
    assert!(!second.contains("measured now"), "recalibrated:\n{second}");
    assert_eq!(second.matches(": cached (").count(), 2, "{second}");
    assert_eq!(
        calibration_files(&w.home()),
        files,
        "calibration files rewritten"
    );
    // Same calibration, same plan: the same numbers.
    let tail = |s: &str| s[s.find("  kind").unwrap()..].to_string();
    assert_eq!(tail(&first), tail(&second));

    // Longer generations cost more, from the same calibration.
    let longer = stdout(&w.rfmx(&[
        "plan",
        notes_sweep(),
        "--estimate",
        "--set",
        "steer.seconds=8",
    ]));
    assert!(!longer.contains("measured now"));
    let secs = |out: &str| -> f64 {
        let r = row(out, "generation");
        let t: Vec<&str> = r.split_whitespace().collect();
        match t[3] {
            "s" => t[2].parse().unwrap(),
            "min" => t[2].parse::<f64>().unwrap() * 60.0 + t[4].parse::<f64>().unwrap(),
            "h" => t[2].parse::<f64>().unwrap() * 3600.0 + t[4].parse::<f64>().unwrap() * 60.0,
            u => panic!("unit {u} in {r}"),
        }
    };
    assert!(
        secs(&longer) > 3.0 * secs(&first),
        "{} vs {}",
        secs(&longer),
        secs(&first)
    );

    // A calibration another rfmx build measured is measured again: an upgrade can change the
    // speed of the code it timed. The renderer's file, still this build's, is read.
    let (model_file, bytes, _) = files
        .iter()
        .find(|(p, _, _)| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("render-")
        })
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(v["build"], rfmx::VERSION, "{v}");
    v["build"] = "0.0.1 (0123456789ab)".into();
    std::fs::write(model_file, serde_json::to_vec(&v).unwrap()).unwrap();
    let upgraded = stdout(&w.rfmx(&["plan", notes_sweep(), "--estimate"]));
    assert_eq!(upgraded.matches("measured now").count(), 1, "{upgraded}");
    assert_eq!(upgraded.matches(": cached (").count(), 1, "{upgraded}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(model_file).unwrap()).unwrap();
    assert_eq!(v["build"], rfmx::VERSION);
}

#[test]
fn estimate_leaves_cached_nodes_out() {
    let w = common::Work::new();
    let spec = w.spec("toy.toml", "[toy]\nvalues = [1, 2]\n");
    let spec = spec.to_str().unwrap();
    let before = stdout(&w.rfmx(&["plan", spec, "--estimate"]));
    assert!(row(&before, "toy_square").contains("not modelled"));
    assert_eq!(row(&before, "total").split_whitespace().nth(1), Some("3"));
    stdout(&w.rfmx(&["run", spec]));
    let after = stdout(&w.rfmx(&["plan", spec, "--estimate"]));
    assert_eq!(
        row(&after, "total").split_whitespace().nth(1),
        Some("0"),
        "{after}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn estimate_on_a_device_this_build_lacks_is_a_user_error() {
    let w = common::Work::new();
    let o = w.rfmx(&[
        "plan",
        notes_sweep(),
        "--estimate",
        "--set",
        "model.device=cuda",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot calibrate on `cuda`"), "{err}");
    assert!(!w.home().join("calibration").exists() || calibration_files(&w.home()).is_empty());
}

/// The GPU benchmark's dry mode runs the whole script on the CPU at toy size with this build's
/// binary: every rfmx flag it uses exists, and the table has its rows. (Its table is formatted by
/// `$PYTHON`, default python3, standard library only.)
#[test]
fn gpu_bench_script_dry_run_prints_its_table() {
    let w = common::Work::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bench_gpu.sh");
    let o = std::process::Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_rfmx"))
        .env("BENCH_DRY", "1")
        .env("BENCH_DIR", w.path().join("bench"))
        .env("RFMX_HOME", w.home())
        .output()
        .unwrap();
    let out = stdout(&o);
    for row in [
        "| generation steps/s, batch 1 | tiny | f32 |",
        "| generation steps/s, batch 16 | tiny | f32 |",
        "| extraction 4 s clips/s, batch 16 | tiny | f32 |",
        "| probe stage s, one layer, 13 probes x 2 it | n=240 d=32 | f32 |",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row `{row}` in\n{out}"));
        // The rfmx column holds a positive number.
        let rfmx: f64 = line.split('|').nth(5).unwrap().trim().parse().unwrap();
        assert!(rfmx > 0.0, "{line}");
    }
}

#[test]
fn kinds_partly_modelled_say_what_they_leave_out() {
    let w = common::Work::new();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/pooling_ablation.toml");
    let out = stdout(&w.rfmx(&["plan", spec, "--estimate"]));
    // RFM probes are estimated; the linear ones of the ablation are counted but left out.
    let probe = row(&out, "probe");
    assert!(probe.contains("not included: linear probes"), "{probe}");
    assert!(!probe.contains(" — "), "{probe}");
}

#[test]
fn calibrate_refuses_bad_flags_with_exit_2() {
    let w = common::Work::new();
    for args in [
        &["calibrate", "--what", "everything"][..],
        &["calibrate", "--batches", "0"],
        &["calibrate", "--model", "no/such-model-here"],
    ] {
        let o = w.rfmx(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            o.stdout.is_empty() || !String::from_utf8_lossy(&o.stdout).contains("generate_cfg")
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Error: cannot calibrate"),
            "{args:?}"
        );
    }
}

/// A folder of the user's audio is counted (one clip per listed file) but its decoding is not
/// calibrated: the estimate says so instead of failing on the folder's params.
#[test]
fn a_folder_dataset_is_counted_and_named_as_not_calibrated() {
    let w = common::Work::new();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/transfer.toml");
    let out = stdout(&w.rfmx(&["plan", spec, "--estimate"]));
    let dataset = row(&out, "dataset");
    assert!(dataset.contains("a folder of audio"), "{dataset}");
    assert!(row(&out, "total").contains(" s"), "{out}");
}
