//! End-to-end tests of the runner through the built binary, each in its own temp working dir
//! with its own RFMX_HOME, on the built-in toy node kinds.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::Work;

impl Work {
    /// The run logs, oldest first.
    fn run_logs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.home().join("runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        // Log names carry whole seconds: order by when each was last written, as the report does.
        v.sort_by_key(|p| (std::fs::metadata(p).unwrap().modified().unwrap(), p.clone()));
        v
    }

    /// The store's finished entries: key -> manifest bytes.
    fn manifests(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.home().join("store"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter_map(|e| {
                        let m = std::fs::read(e.path().join("manifest.json")).ok()?;
                        Some((e.file_name().to_string_lossy().into_owned(), m))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Ids of the nodes with the given event in a run log.
fn ids_with(log: &Path, event: &str) -> Vec<String> {
    let mut v: Vec<String> = events(log)
        .into_iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn summary_count(out: &Output, what: &str) -> usize {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(what)
                .map(|n| n.trim().parse::<usize>().unwrap())
        })
        .unwrap_or_else(|| panic!("no `{what}` in summary:\n{stdout}"))
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn toy(values: &str, extra: &str) -> String {
    format!("[experiment]\nname = \"t\"\n\n[toy]\nvalues = {values}\n{extra}\n")
}

#[test]
fn extending_a_grid_from_2_to_4_values_computes_only_the_2_new_nodes() {
    let w = Work::new();
    // Without the fan-in node: exactly the 2 new nodes compute.
    let spec = w.spec("s.toml", &toy("[1, 2]", "sum = false"));
    ok(&w.rfmx(&["run", spec.to_str().unwrap()]));
    w.spec("s.toml", &toy("[1, 2, 3, 4]", "sum = false"));
    let out = w.rfmx(&["run", "s.toml"]);
    ok(&out);
    let log = w.run_logs().pop().unwrap();
    let kinds: std::collections::BTreeSet<String> = events(&log)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "run_started",
        "queued",
        "started",
        "progress",
        "cached",
        "finished",
        "run_finished",
    ] {
        assert!(kinds.contains(k), "no `{k}` event in {kinds:?}");
    }
    assert_eq!(
        ids_with(&log, "finished"),
        vec!["toy_square[x=3]", "toy_square[x=4]"]
    );
    assert_eq!(
        ids_with(&log, "cached"),
        vec!["toy_square[x=1]", "toy_square[x=2]"]
    );
    assert_eq!(summary_count(&out, "computed"), 2);
    assert_eq!(summary_count(&out, "cached"), 2);

    // With the fan-in toy_sum: the 2 new squares plus toy_sum (its inputs changed), nothing else.
    let w = Work::new();
    w.spec("s.toml", &toy("[1, 2]", ""));
    ok(&w.rfmx(&["run", "s.toml"]));
    w.spec("s.toml", &toy("[1, 2, 3, 4]", ""));
    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(plan.contains("to run   toy_sum"), "{plan}");
    assert!(plan.contains("input changed: `part2` added"), "{plan}");
    let out = w.rfmx(&["run", "s.toml"]);
    ok(&out);
    let log = w.run_logs().pop().unwrap();
    assert_eq!(
        ids_with(&log, "finished"),
        vec!["toy_square[x=3]", "toy_square[x=4]", "toy_sum"]
    );
    assert_eq!(summary_count(&out, "computed"), 3);
    // Stages print their own summary tables after the run (1 + 4 + 9 + 16 = 30).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("toy sums:") && stdout.contains("30.0"),
        "{stdout}"
    );
}

#[test]
fn a_second_identical_run_computes_nothing_in_under_a_second() {
    let w = Work::new();
    w.spec(
        "s.toml",
        &toy(
            "[1, 2, 3, 4, 5, 6, 7, 8]",
            "[sweep]\n\"toy.offset\" = [0, 1]",
        ),
    );
    let first = w.rfmx(&["run", "s.toml"]);
    ok(&first);
    assert_eq!(summary_count(&first, "computed"), 18);
    let t0 = Instant::now();
    let second = w.rfmx(&["run", "s.toml"]);
    let elapsed = t0.elapsed();
    ok(&second);
    println!(
        "second identical run (18 cached nodes): {:.3}s wall, process included",
        elapsed.as_secs_f64()
    );
    assert_eq!(summary_count(&second, "computed"), 0);
    assert_eq!(summary_count(&second, "cached"), 18);
    assert!(
        elapsed < Duration::from_secs(1),
        "second run took {elapsed:?}"
    );
    let log = w.run_logs().pop().unwrap();
    assert!(ids_with(&log, "started").is_empty());
}

#[test]
fn kill_9_mid_run_keeps_finished_nodes_and_reruns_only_the_rest() {
    let w = Work::new();
    // 10 squares of 150 ms on 2 jobs (~750 ms); killed once 2 of them are in the store.
    w.spec(
        "s.toml",
        &toy("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "sleep_ms = 150"),
    );
    w.kill_when(
        &["run", "s.toml", "--jobs", "2"],
        Duration::from_secs(20),
        || w.manifests().len() >= 2,
    );
    let before = w.manifests();
    let total = 11; // 10 squares + toy_sum
    assert!(
        before.len() >= 2 && before.len() < total,
        "{} finished",
        before.len()
    );

    // Nothing half-written: every entry in the store is complete and verifies.
    for key in before.keys() {
        let entry = w.home().join("store").join(key);
        assert!(entry.join("out").is_dir(), "{key}");
    }
    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert_eq!(plan.matches("  cached ").count(), before.len(), "{plan}");
    assert!(
        plan.contains("output missing (interrupted run or removed)"),
        "{plan}"
    );

    let out = w.rfmx(&["run", "s.toml", "--jobs", "2"]);
    ok(&out);
    assert_eq!(summary_count(&out, "computed"), total - before.len());
    assert_eq!(summary_count(&out, "cached"), before.len());
    let after = w.manifests();
    assert_eq!(after.len(), total);
    for (key, m) in &before {
        assert_eq!(&after[key], m, "finished node {key} was rewritten");
    }
    // Temp dirs of the killed run are ignored by the store and removed by gc.
    let temp_dirs = || {
        std::fs::read_dir(w.home().join("store"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .count()
    };
    let killed_temps = temp_dirs();
    println!("temp dirs left by the killed run: {killed_temps}");
    let dry = String::from_utf8(w.rfmx(&["gc", "--dry-run"]).stdout).unwrap();
    assert_eq!(
        dry.matches("would remove temp dir").count(),
        killed_temps,
        "{dry}"
    );
    assert_eq!(temp_dirs(), killed_temps, "--dry-run removed something");
    let gc = w.rfmx(&["gc"]);
    ok(&gc);
    let leftovers: Vec<_> = std::fs::read_dir(w.home().join("store"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(w.manifests(), after, "gc removed a referenced entry");
}

#[test]
fn a_corrupted_output_is_detected_and_rebuilt_with_a_warning() {
    let w = Work::new();
    w.spec("s.toml", &toy("[1, 2, 3]", ""));
    ok(&w.rfmx(&["run", "s.toml"]));
    let explain =
        String::from_utf8(w.rfmx(&["explain", "s.toml", "toy_square[x=2]"]).stdout).unwrap();
    let key = explain
        .lines()
        .find_map(|l| l.strip_prefix("key       "))
        .unwrap()
        .trim()
        .to_string();
    let file = w.home().join("store").join(&key).join("out/value.json");
    let original = std::fs::read(&file).unwrap();
    let mut bytes = original.clone();
    bytes[2] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(
        plan.contains("corrupt output (output `value.json` was modified after it was committed)"),
        "{plan}"
    );
    let out = w.rfmx(&["run", "s.toml"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: toy_square[x=2]: corrupt output detected"),
        "{stderr}"
    );
    // Only the corrupted node recomputes; toy_sum's key depends on input keys, not bytes.
    assert_eq!(
        ids_with(&w.run_logs().pop().unwrap(), "finished"),
        vec!["toy_square[x=2]"]
    );
    assert_eq!(std::fs::read(&file).unwrap(), original);
}

impl Work {
    /// The store key of a node, from `rfmx explain`.
    fn key_of(&self, spec: &str, id: &str) -> String {
        let explain = String::from_utf8(self.rfmx(&["explain", spec, id]).stdout).unwrap();
        explain
            .lines()
            .find_map(|l| l.strip_prefix("key       "))
            .unwrap_or_else(|| panic!("no key for {id}: {explain}"))
            .trim()
            .to_string()
    }
}

#[test]
fn a_stealthy_corruption_is_caught_when_a_node_reads_it_and_by_status_verify() {
    let w = Work::new();
    w.spec("s.toml", &toy("[1, 2, 3]", ""));
    ok(&w.rfmx(&["run", "s.toml"]));
    let key = w.key_of("s.toml", "toy_square[x=2]");
    // Same length, modification time put back: only re-hashing can tell.
    let file = w.home().join("store").join(&key).join("out/value.json");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(plan.contains("4 node(s): 4 cached"), "{plan}");
    let status = w.rfmx(&["status", "--verify"]);
    assert_eq!(status.status.code(), Some(1));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("1 corrupt")
            && text.contains("toy_square[x=2]")
            && text.contains("`value.json` does not match its manifest hash"),
        "{text}"
    );
    // A new fan-in node reads x=2: it refuses the corrupt bytes, moves them aside and fails.
    w.spec("s.toml", &toy("[1, 2, 3, 4]", ""));
    let out = w.rfmx(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let status = String::from_utf8(w.rfmx(&["status"]).stdout).unwrap();
    assert!(
        status.contains("(toy_square[x=2]) is corrupt in the store")
            && status.contains("`rfmx run` again recomputes it"),
        "{status}"
    );
    // The next run recomputes x=2 and the sum; nothing else.
    let out = w.rfmx(&["run", "s.toml"]);
    ok(&out);
    assert_eq!(
        ids_with(&w.run_logs().pop().unwrap(), "finished"),
        vec!["toy_square[x=2]", "toy_sum"]
    );
    ok(&w.rfmx(&["status", "--verify"]));
    ok(&w.rfmx(&["gc"]));
    let leftovers: Vec<_> = std::fs::read_dir(w.home().join("store"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_manifest_naming_files_outside_its_entry_is_never_trusted() {
    let w = Work::new();
    w.spec("s.toml", &toy("[1, 2]", "sum = false"));
    ok(&w.rfmx(&["run", "s.toml"]));
    let key = w.key_of("s.toml", "toy_square[x=1]");
    let mpath = w.home().join("store").join(&key).join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let outputs = m["outputs"].as_object_mut().unwrap();
    let entry = outputs.remove("value.json").unwrap();
    outputs.insert("../../../s.toml".into(), entry);
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(
        plan.contains(
            "corrupt output (output name `../../../s.toml` leaves the entry's out/ folder)"
        ),
        "{plan}"
    );
    let status = w.rfmx(&["status", "--verify"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("1 corrupt"));
    ok(&w.rfmx(&["run", "s.toml"]));
    assert_eq!(
        ids_with(&w.run_logs().pop().unwrap(), "finished"),
        vec!["toy_square[x=1]"]
    );
    assert!(w.path().join("s.toml").is_file());
}

#[test]
fn two_concurrent_runs_compute_every_node_once() {
    let w = Work::new();
    w.spec("s.toml", &toy("[1, 2, 3, 4, 5, 6]", "sleep_ms = 60"));
    let spawn = || {
        w.cmd(&["run", "s.toml", "--jobs", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    // Start the second run once the first is computing, so that both plan nodes as "to run"
    // and the locks (not the plan) must keep them from computing a node twice.
    let t0 = Instant::now();
    while w
        .home()
        .join("runs")
        .read_dir()
        .map_or(true, |mut d| d.next().is_none())
        || ids_with(&w.run_logs()[0], "started").is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "first run never started a node"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = String::from_utf8(w.rfmx(&["status"]).stdout).unwrap();
    let b = spawn();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    let logs = w.run_logs();
    assert_eq!(logs.len(), 2);
    let mut finished: Vec<String> = logs.iter().flat_map(|l| ids_with(l, "finished")).collect();
    finished.sort();
    let mut all: Vec<String> = (1..=6).map(|x| format!("toy_square[x={x}]")).collect();
    all.push("toy_sum".into());
    all.sort();
    assert_eq!(
        finished, all,
        "each node computed exactly once across both runs"
    );
    assert_eq!(
        summary_count(&a, "computed") + summary_count(&b, "computed"),
        7
    );
    assert_eq!(summary_count(&a, "cached") + summary_count(&b, "cached"), 7);
    // The second run waited on at least one lock held by the first.
    let b_log = String::from_utf8_lossy(&b.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("run log: ").map(PathBuf::from))
        .unwrap();
    let waited = events(&b_log)
        .iter()
        .filter(|e| e["event"] == "cached" && e["by_other_run"] == true)
        .count();
    assert!(waited >= 1, "second run never met a held lock");
    println!(
        "second run: {waited} node(s) computed by the first run while it waited on their locks"
    );
    let running: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("running nodes (locks held): "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(running >= 1, "status while a run computes:\n{status}");
}

#[test]
fn a_failing_node_is_recorded_its_siblings_finish_and_only_it_is_retried() {
    let w = Work::new();
    w.spec(
        "s.toml",
        &toy(
            "[1, 2, 3, 4, 5]",
            "fail_on = [2]\nnan_on = [3]\npanic_on = [5]",
        ),
    );
    let out = w.rfmx(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(summary_count(&out, "computed"), 2);
    assert_eq!(summary_count(&out, "failed"), 3);
    assert_eq!(summary_count(&out, "skipped"), 1);
    let log = w.run_logs().pop().unwrap();
    assert_eq!(
        ids_with(&log, "failed"),
        vec!["toy_square[x=2]", "toy_square[x=3]", "toy_square[x=5]"]
    );
    assert_eq!(ids_with(&log, "skipped"), vec!["toy_sum"]);

    let status = String::from_utf8(w.rfmx(&["status"]).stdout).unwrap();
    assert!(status.contains("failed nodes: 3"), "{status}");
    assert!(status.contains("was asked to fail"), "{status}");
    assert!(
        status.contains("panicked: toy_square[x=5] was asked to panic"),
        "{status}"
    );
    assert!(
        status.contains("non-finite output y = NaN for x = 3"),
        "{status}"
    );
    let records: Vec<Value> = std::fs::read_dir(w.home().join("failures"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert!(
            r["params"]["x"].is_i64() && Path::new(r["log"].as_str().unwrap()).exists(),
            "{r}"
        );
    }
    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(
        plan.contains("previous failure: toy_square[x=2] was asked to fail"),
        "{plan}"
    );

    // Run again: only the failed nodes are tried again.
    let out = w.rfmx(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let log = w.run_logs().pop().unwrap();
    assert_eq!(
        ids_with(&log, "started"),
        vec!["toy_square[x=2]", "toy_square[x=3]", "toy_square[x=5]"]
    );

    // Fixed: the three nodes and the fan-in compute; the old failure records go with gc.
    w.spec("s.toml", &toy("[1, 2, 3, 4, 5]", ""));
    let out = w.rfmx(&["run", "s.toml"]);
    ok(&out);
    assert_eq!(summary_count(&out, "computed"), 4);
    let status = String::from_utf8(w.rfmx(&["status"]).stdout).unwrap();
    assert!(
        status.contains("failed nodes: 3"),
        "old keys' records stay until gc: {status}"
    );
    ok(&w.rfmx(&["gc"]));
    let status = String::from_utf8(w.rfmx(&["status"]).stdout).unwrap();
    assert!(status.contains("failed nodes: 0"), "{status}");
}

#[test]
fn plan_explains_param_changes_and_explain_shows_a_node() {
    let w = Work::new();
    w.spec("s.toml", &toy("[1, 2]", ""));
    ok(&w.rfmx(&["run", "s.toml"]));
    let plan =
        String::from_utf8(w.rfmx(&["plan", "s.toml", "--set", "toy.offset=5"]).stdout).unwrap();
    assert!(
        plan.contains("to run   toy_square[x=1]")
            && plan.contains("param `offset` (0 -> 5) changed"),
        "{plan}"
    );
    assert!(
        plan.contains("input changed: `part0` (toy_square[x=1])"),
        "{plan}"
    );
    let explain = String::from_utf8(w.rfmx(&["explain", "s.toml", "toy_sum"]).stdout).unwrap();
    assert!(explain.contains("status    cached"), "{explain}");
    assert!(
        explain.contains("input     part1 = toy_square[x=2]"),
        "{explain}"
    );
    assert!(explain.contains("sum.json"), "{explain}");
    let resolved = std::fs::read_to_string(w.path().join("reports/t/spec.resolved.toml")).unwrap();
    assert!(resolved.contains("sleep_ms = 0"), "{resolved}");
}

#[test]
fn node_run_computes_a_planned_node_by_key() {
    let w = Work::new();
    w.spec("s.toml", &toy("[7]", "sum = false"));
    ok(&w.rfmx(&["run", "s.toml"]));
    let key = w.manifests().into_keys().next().unwrap();
    std::fs::remove_dir_all(w.home().join("store").join(&key)).unwrap();
    let out = w.rfmx(&["node", "run", &key]);
    ok(&out);
    let v: Value = serde_json::from_slice(
        &std::fs::read(w.home().join("store").join(&key).join("out/value.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["y"], 49.0);
}

#[test]
fn bad_specs_and_usage_exit_2() {
    let w = Work::new();
    w.spec("bad.toml", "[toy]\nvalues = [1]\nsleep_ms = \"x\"\n");
    let out = w.rfmx(&["check", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3:12"), "{stderr}");
    assert_eq!(w.rfmx(&["run", "bad.toml"]).status.code(), Some(2));
    assert_eq!(w.rfmx(&["frobnicate"]).status.code(), Some(2));
    w.spec("good.toml", &toy("[1]", ""));
    let out = w.rfmx(&["check", "good.toml", "--set", "toy.sleep_ms=-1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("comes from `--set toy.sleep_ms=-1`"),
        "{stderr}"
    );
    let out = w
        .cmd(&["check", "good.toml"])
        .env("RFMX_TOY__OFFSET", "\"x\"")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFMX_TOY__OFFSET"));
    ok(&w.rfmx(&["check", "good.toml"]));
    let help = String::from_utf8(w.rfmx(&["--help"]).stdout).unwrap();
    assert!(
        help.contains("Examples:") && help.contains("explain"),
        "{help}"
    );
}

#[test]
fn the_shipped_specs_check() {
    let w = Work::new();
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    for e in std::fs::read_dir(specs).unwrap() {
        let p = e.unwrap().path();
        let out = w.rfmx(&["check", p.to_str().unwrap()]);
        if !out.status.success() {
            // A spec naming a Hub model plans only where the model is in the local HF cache;
            // elsewhere the error names it, and the spec checks with the embedded model.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("model"), "{}: {stderr}", p.display());
            ok(&w.rfmx(&["check", p.to_str().unwrap(), "--set", "model.name=tiny"]));
        }
    }
}

#[test]
fn a_spec_no_stage_consumes_is_an_error_not_a_silent_success() {
    let w = Work::new();
    w.spec("music.toml", "[experiment]\nname = \"m\"\nseed = 4\n");
    for cmd in ["run", "plan"] {
        let out = w.rfmx(&[cmd, "music.toml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("plans no nodes"), "{stderr}");
    }
}

#[test]
fn a_live_plan_grows_round_by_round_and_resumes_after_kill_9() {
    let spec = toy("[1, 2]", "rounds = 3\nsleep_ms = 300");
    // Uninterrupted, for reference: three rounds planned from results, each after the last.
    let reference = Work::new();
    reference.spec("s.toml", &spec);
    let plan = String::from_utf8(reference.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(plan.contains("3 node(s): 0 cached, 3 to run"), "{plan}");
    assert!(
        plan.contains("later: toy: round 1 of ≤ 3; planned when round 0 (toy_sum) finishes"),
        "{plan}"
    );
    let out = reference.rfmx(&["run", "s.toml"]);
    ok(&out);
    assert_eq!(summary_count(&out, "computed"), 6);
    let log = events(&reference.run_logs().pop().unwrap());
    let planned: Vec<u64> = log
        .iter()
        .filter(|e| e["event"] == "planned")
        .map(|e| e["round"].as_u64().unwrap())
        .collect();
    assert_eq!(planned, [1, 2, 3]);
    // Round r's node is planned from round r-1's value: 1+4 = 5 -> 5%10+1 = 6 -> 36%10+2 = 8 ...
    assert_eq!(
        ids_with(&reference.run_logs().pop().unwrap(), "finished"),
        vec![
            "toy_square[x=1]",
            "toy_square[x=2]",
            "toy_square[x=6,round=1]",
            "toy_square[x=7,round=3]",
            "toy_square[x=8,round=2]",
            "toy_sum"
        ]
    );
    let done = String::from_utf8(reference.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(done.contains("6 node(s): 6 cached, 0 to run"), "{done}");
    assert!(
        done.contains("planned from finished results: 3 round(s)"),
        "{done}"
    );

    // Killed once round 1 is in the store, then resumed: the same plan and the same results.
    let w = Work::new();
    w.spec("s.toml", &spec);
    w.kill_when(&["run", "s.toml"], Duration::from_secs(30), || {
        w.manifests().len() >= 4
    });
    assert!(w.manifests().len() < 6, "killed after the last round");
    let plan = String::from_utf8(w.rfmx(&["plan", "s.toml"]).stdout).unwrap();
    assert!(
        plan.contains("planned from finished results: 2 round(s)"),
        "{plan}"
    );
    assert!(plan.contains("toy_square[x=8,round=2]"), "{plan}");
    let out = w.rfmx(&["run", "s.toml"]);
    ok(&out);
    assert_eq!(summary_count(&out, "cached"), 4);
    assert_eq!(summary_count(&out, "computed"), 2);
    assert_eq!(
        w.manifests().keys().collect::<Vec<_>>(),
        reference.manifests().keys().collect::<Vec<_>>()
    );
}
