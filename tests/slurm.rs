//! The Slurm executor against a real single-node Slurm, started by `tests/slurm/start.sh`
//! (`.ci/run` runs it first; as root it installs and starts everything). Without a working Slurm
//! these tests fail with the reason: they never pass silently. They share the one Slurm, so they
//! run one at a time (a process-wide lock).

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::Work;

static SERIAL: Mutex<()> = Mutex::new(());

/// Panics with the reason unless `sinfo` answers and shows a usable node.
fn require_slurm() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("sinfo").args(["-h", "-o", "%T"]).output();
    match out {
        Err(e) => {
            panic!("Slurm is not available (sinfo: {e}); run tests/slurm/start.sh as root first")
        }
        Ok(o) => {
            let s = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success()
                    && s.lines().any(|l| l.starts_with("idle")
                        || l.starts_with("mixed")
                        || l.starts_with("alloc")),
                "Slurm is not usable (sinfo exit {}, states {s:?}, stderr {:?}); run tests/slurm/start.sh as root first",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    guard
}

const SLURM: &str = r#"
[executor]
kind = "slurm"
[executor.slurm]
time = "00:05:00"
mem = "100M"
cpus = 1
gpus = 0
"#;

impl Work {
    /// Runs the binary and logs what it printed (Slurm failures are hard to read otherwise).
    fn logged(&self, args: &[&str]) -> Output {
        let out = self.rfmx(args);
        eprintln!(
            "rfmx {args:?} -> {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// key -> (id, outputs' hashes and sizes); modification times differ between stores.
    fn entries(&self) -> BTreeMap<String, (String, Value)> {
        std::fs::read_dir(self.home().join("store"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("manifest.json").is_file())
            .map(|p| {
                let mut m: Value =
                    serde_json::from_slice(&std::fs::read(p.join("manifest.json")).unwrap())
                        .unwrap();
                for f in m["outputs"].as_object_mut().unwrap().values_mut() {
                    f.as_object_mut().unwrap().remove("mtime_ns");
                }
                (
                    m["key"].as_str().unwrap().to_string(),
                    (m["id"].as_str().unwrap().to_string(), m["outputs"].clone()),
                )
            })
            .collect()
    }

    /// Runs the binary with `path` as PATH (Slurm commands wrapped or faked), logging its output.
    fn run_with_path(&self, path: &str, args: &[&str]) -> Output {
        let out = self.cmd(args).env("PATH", path).output().unwrap();
        eprintln!(
            "rfmx {args:?} (PATH {path}) -> {}\n{}",
            out.status,
            text(&out)
        );
        out
    }

    fn state(&self, experiment: &str) -> Value {
        let p = self.home().join("slurm").join(format!("{experiment}.json"));
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    /// Job ids of the state file by node id.
    fn jobs(&self, experiment: &str) -> BTreeMap<String, String> {
        self.state(experiment)["jobs"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["job_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// Submissions made by one run, from the JSONL log it names.
fn submissions(w: &Work, out: &Output) -> usize {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run log: "))
        .expect("the run names its log");
    std::fs::read_to_string(w.path().join(log))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"queued\"") && l.contains("submitted as slurm job"))
        .count()
}

fn squeue_state(job: &str) -> String {
    let o = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", job, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const FAN: &str = r#"
[experiment]
name = "fan"
[toy]
values = [1, 2, 3, 4]
sum = true
"#;

#[test]
fn slurm_fan_out_fan_in_matches_local_and_rerun_submits_nothing() {
    let _g = require_slurm();
    let t0 = Instant::now();
    let local = Work::new();
    let spec = local.spec("spec.toml", FAN);
    assert!(
        local
            .logged(&["run", spec.to_str().unwrap(), "--executor", "local"])
            .status
            .success()
    );

    let slurm = Work::new();
    let spec = slurm.spec("spec.toml", &format!("{FAN}{SLURM}"));
    let out = slurm.logged(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        slurm.entries(),
        local.entries(),
        "same keys and output hashes as local"
    );
    assert_eq!(slurm.entries().len(), 5);
    assert_eq!(submissions(&slurm, &out), 5);
    let jobs = slurm.jobs("fan");
    assert_eq!(jobs.len(), 5);
    for (id, job) in &jobs {
        assert_eq!(squeue_state(job), "COMPLETED", "{id}");
    }

    let again = slurm.logged(&["run", spec.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(submissions(&slurm, &again), 0, "a re-run submits nothing");
    assert_eq!(slurm.jobs("fan"), jobs, "state file unchanged");
    assert!(text(&again).contains("cached        5"), "{}", text(&again));
    eprintln!(
        "fan-out/fan-in through slurm: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn slurm_failing_node_has_its_record_siblings_finish_and_only_it_is_resubmitted() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec("spec.toml", &format!(
        "[experiment]\nname = \"failing\"\n[toy]\nvalues = [1, 2, 3]\nsum = true\nfail_on = [2]\n{SLURM}"
    ));
    let out = w.logged(&["run", spec.to_str().unwrap(), "--executor", "slurm"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ids: Vec<String> = w.entries().into_values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2, "the siblings finish: {ids:?}");
    assert!(
        ids.contains(&"toy_square[x=1]".to_string())
            && ids.contains(&"toy_square[x=3]".to_string())
    );

    // The worker's own failure record, the same as a local failure.
    let failures: Vec<Value> = std::fs::read_dir(w.home().join("failures"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["id"], "toy_square[x=2]");
    assert!(
        failures[0]["error_chain"][0]
            .as_str()
            .unwrap()
            .contains("asked to fail")
    );
    let status = w.logged(&["status"]);
    let st = text(&status);
    assert!(
        st.contains("failed nodes: 1") && st.contains("asked to fail"),
        "{st}"
    );
    let failed_job = &w.jobs("failing")["toy_square[x=2]"];
    assert!(
        st.contains(failed_job.as_str()) && st.contains("FAILED, node failed"),
        "{st}"
    );
    assert!(st.contains("slurm-"), "log paths shown: {st}");

    // Again: only the failed node and its skipped dependent are submitted.
    let before = w.jobs("failing");
    let out = w.logged(&["run", spec.to_str().unwrap(), "--executor", "slurm"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(submissions(&w, &out), 2);
    resubmitted_only(&before, &w.jobs("failing"), &["toy_square[x=2]", "toy_sum"]);
}

/// Between two state files: exactly the nodes `ids` got new jobs.
fn resubmitted_only(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    ids: &[&str],
) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (id, job) in before {
        if ids.contains(&id.as_str()) {
            assert_ne!(job, &after[id], "{id} resubmitted");
        } else {
            assert_eq!(job, &after[id], "{id} not resubmitted");
        }
    }
}

#[test]
fn slurm_detach_keeps_live_jobs_and_cancel_cancels_them() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec("spec.toml", &format!(
        "[experiment]\nname = \"sleepy\"\n[toy]\nvalues = [1]\nsum = true\nsleep_ms = 60000\n{SLURM}"
    ));
    let spec = spec.to_str().unwrap();
    let out = w.logged(&["run", spec, "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(submissions(&w, &out), 2);
    let jobs = w.jobs("sleepy");
    assert_eq!(
        squeue_state(&jobs["toy_sum"]),
        "PENDING",
        "waits on its input"
    );

    // A re-run while they are queued/running submits nothing.
    let out = w.logged(&["run", spec, "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(submissions(&w, &out), 0);
    assert_eq!(w.jobs("sleepy"), jobs);
    let st = text(&w.logged(&["status"]));
    assert!(
        st.contains("PENDING") && st.contains(jobs["toy_sum"].as_str()),
        "{st}"
    );

    let out = w.logged(&["cancel", spec]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("cancelled 2 slurm job(s)"),
        "{}",
        text(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for job in jobs.values() {
        while squeue_state(job) != "CANCELLED" {
            assert!(
                Instant::now() < deadline,
                "job {job}: {}",
                squeue_state(job)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Cancelled jobs left no failure record: not labelled failed while "failed nodes: 0".
    let st = text(&w.logged(&["status"]));
    assert!(
        st.contains("failed nodes: 0")
            && st.contains("CANCELLED, no result")
            && !st.contains("FAILED"),
        "{st}"
    );
}

#[test]
fn slurm_job_killed_without_a_record_gets_one_from_the_submitter() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec(
        "spec.toml",
        &format!("[experiment]\nname = \"killed\"\n[toy]\nvalues = [1]\nsleep_ms = 60000\n{SLURM}"),
    );
    let child = w
        .cmd(&["run", spec.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        assert!(Instant::now() < deadline, "the job never started");
        if w.home().join("slurm/killed.json").is_file() {
            let j = w.jobs("killed")["toy_square[x=1]"].clone();
            if squeue_state(&j) == "RUNNING" {
                break j;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        Command::new("scancel")
            .arg(&job)
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rec: Value = serde_json::from_slice(
        &std::fs::read_dir(w.home().join("failures"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .next()
            .expect("a failure record"),
    )
    .unwrap();
    let err = rec["error_chain"][0].as_str().unwrap();
    assert!(
        err.contains(&format!("slurm job {job} ended as CANCELLED")),
        "{err}"
    );
    assert!(
        rec["log"]
            .as_str()
            .unwrap()
            .contains(&format!("-{job}.out"))
    );
}

#[test]
fn slurm_missing_is_a_clear_error_with_exit_2() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec(
        "spec.toml",
        &format!("[experiment]\nname = \"nos\"\n[toy]\nvalues = [1]\n{SLURM}"),
    );
    let out = w.run_with_path("/nonexistent", &["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("`squeue` is not installed"),
        "{}",
        text(&out)
    );
    assert!(!w.home().exists(), "nothing written before Slurm answers");

    // A rejected submission shows sbatch's own message.
    let spec = w.spec(
        "spec.toml",
        &format!(
            "[experiment]\nname = \"bad\"\n[toy]\nvalues = [1]\n{}",
            SLURM.replace("gpus = 0", "gpus = 0\npartition = \"nosuchpartition\"")
        ),
    );
    let out = w.logged(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("invalid partition"), "{}", text(&out));

    // Refused for one kind only: its dependent is skipped, never submitted without its input.
    let spec = w.spec(
        "spec.toml",
        &format!(
            "[experiment]\nname = \"refused\"\n[toy]\nvalues = [1]\nsum = true\n{SLURM}\
             [executor.slurm.resources]\ntoy_square = {{ partition = \"nosuchpartition\" }}\n"
        ),
    );
    let out = w.logged(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("invalid partition")
            && t.contains("failed        1")
            && t.contains("skipped       1"),
        "{t}"
    );
    assert_eq!(submissions(&w, &out), 0, "{t}");
}

/// The live plan on Slurm: each round is submitted once the previous one has ended, and the store
/// ends equal to a local run's (the same scheduler core drives both executors).
#[test]
fn slurm_live_plan_submits_each_round_after_the_previous_and_matches_local() {
    let _g = require_slurm();
    let spec = "[experiment]\nname = \"rounds\"\n[toy]\nvalues = [1, 2]\nrounds = 2\n";
    let local = Work::new();
    let path = local.spec("spec.toml", spec);
    assert!(
        local
            .logged(&["run", path.to_str().unwrap(), "--executor", "local"])
            .status
            .success()
    );
    let slurm = Work::new();
    let path = slurm.spec("spec.toml", &format!("{spec}{SLURM}"));
    let out = slurm.logged(&["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        slurm.entries(),
        local.entries(),
        "same keys and outputs as local"
    );
    assert_eq!(submissions(&slurm, &out), 5);
    // Round r's job is submitted after round r-1's node finished.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run log: "))
        .unwrap();
    let events: Vec<Value> = std::fs::read_to_string(slurm.path().join(log))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |event: &str, id: &str| {
        events
            .iter()
            .position(|e| {
                e["event"] == event && e["id"].as_str().is_some_and(|i| i.starts_with(id))
            })
            .unwrap_or_else(|| panic!("no {event} for {id}"))
    };
    assert!(at("finished", "toy_sum") < at("queued", "toy_square[x=6,round=1]"));
    assert!(at("finished", "toy_square[x=6,round=1]") < at("queued", "toy_square[x=8,round=2]"));
    let again = slurm.logged(&["run", path.to_str().unwrap()]);
    assert!(again.status.success());
    assert_eq!(submissions(&slurm, &again), 0, "a re-run submits nothing");
}

/// Writes an executable script into `<work>/bin` (put first on PATH to wrap a Slurm command).
fn script(w: &Work, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = w.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The real program `name` on PATH (before any wrapper is put in front of it).
fn real(name: &str) -> String {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!p.is_empty(), "{name} not on PATH");
    p
}

fn path_with(bin: &std::path::Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A logging `sbatch` in front of the real one: each call's arguments, one line per call.
fn logging_sbatch(w: &Work) -> (String, std::path::PathBuf) {
    let log = w.path().join("sbatch.log");
    let bin = script(
        w,
        "sbatch",
        &format!(
            "printf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real("sbatch")
        ),
    );
    (path_with(&bin), log)
}

fn sbatch_calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn scontrol_job(job: &str) -> String {
    let o = Command::new("scontrol")
        .args(["show", "job", job])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The whole notes_sweep plan (755 nodes) goes out as a handful of arrays with the per-kind
/// resources. Slurm is replaced by a fake `sbatch` (records, answers job ids) and an empty
/// `squeue`, so that nothing runs: only what would be submitted is checked.
#[test]
fn slurm_notes_sweep_goes_out_as_a_few_job_arrays_with_per_kind_resources() {
    let w = Work::new();
    let log = w.path().join("sbatch.log");
    let counter = w.path().join("n");
    let bin = script(
        &w,
        "sbatch",
        &format!(
            "n=$(( $(cat '{c}' 2>/dev/null || echo 100) + 1 ))\necho \"$n\" > '{c}'\n\
             printf '%s\\n' \"$n $*\" >> '{l}'\necho \"$n\"\n",
            c = counter.display(),
            l = log.display()
        ),
    );
    script(&w, "squeue", "exit 0\n");
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/notes_sweep.toml");
    let out = w.run_with_path(
        &path_with(&bin),
        &[
            "run",
            spec.to_str().unwrap(),
            "--executor",
            "slurm",
            "--detach",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let calls = sbatch_calls(&log);
    assert!(
        (5..=20).contains(&calls.len()),
        "{} jobs for notes_sweep:\n{}",
        calls.len(),
        calls.join("\n")
    );
    assert!(
        text(&out).contains(&format!("submitted {} slurm job(s)", calls.len())),
        "{}",
        text(&out)
    );
    assert_eq!(w.jobs("notes_sweep").len(), 755, "every node has its job");
    let job = |name: &str| -> (&str, &String) {
        calls
            .iter()
            .find(|c| c.contains(&format!("--job-name=rfmx:{name}")))
            .map(|c| (c.split(' ').next().unwrap(), c))
            .unwrap_or_else(|| panic!("no {name} job in\n{}", calls.join("\n")))
    };
    // Only the model kinds ask for the GPU.
    for c in &calls {
        let model = c.contains("rfmx:generation") || c.contains("rfmx:activations");
        assert_eq!(c.contains("--gres=gpu:1"), model, "{c}");
    }
    // The 12 directions are one array; the 576 steered generations one array waiting on it.
    let (directions, d) = job("directions[12]");
    assert!(d.contains("--array=0-11 "), "{d}");
    let (_, g) = job("generation[576]");
    assert!(g.contains("--array=0-575 "), "{g}");
    assert!(
        g.contains(&format!("--dependency=afterok:{directions} ")),
        "{g}"
    );
    assert!(g.contains("node run-array "), "{g}");
    // Every dependency names a job submitted before it.
    let ids: Vec<&str> = calls.iter().map(|c| c.split(' ').next().unwrap()).collect();
    for (k, c) in calls.iter().enumerate() {
        if let Some(dep) = c
            .split(' ')
            .find_map(|a| a.strip_prefix("--dependency=afterok:"))
        {
            for d in dep.split(':') {
                let base = d.split('_').next().unwrap();
                assert!(ids[..k].contains(&base), "{c}: {d} not submitted before");
            }
        }
    }
}

/// Per-kind resources reach the jobs (`scontrol show job`), sibling nodes go out as one
/// throttled array, and the sum waits on that array.
#[test]
fn slurm_kinds_get_their_resources_and_siblings_go_out_as_one_array() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec(
        "spec.toml",
        &format!(
            "{FAN}{SLURM}array_throttle = 2\n[executor.slurm.resources]\n\
             toy_square = {{ mem = \"60M\", time = \"00:03:00\" }}\ntoy_sum = {{ mem = \"80M\" }}\n"
        ),
    );
    let (path, log) = logging_sbatch(&w);
    let out = w.run_with_path(&path, &["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("slurm jobs 2"), "{}", text(&out));
    let calls = sbatch_calls(&log);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("--array=0-3%2") && calls[0].contains("--mem=60M"),
        "{}",
        calls[0]
    );
    let jobs = w.jobs("fan");
    let array = jobs["toy_square[x=1]"]
        .split('_')
        .next()
        .unwrap()
        .to_string();
    for x in 1..=4 {
        assert_eq!(
            jobs[&format!("toy_square[x={x}]")],
            format!("{array}_{}", x - 1)
        );
    }
    assert!(
        calls[1].contains(&format!("--dependency=afterok:{array} ")),
        "{}",
        calls[1]
    );
    let square = scontrol_job(&jobs["toy_square[x=2]"]);
    assert!(
        square.contains("MinMemoryNode=60M") && square.contains("TimeLimit=00:03:00"),
        "{square}"
    );
    assert!(!square.contains("gres/gpu"), "{square}");
    let sum = scontrol_job(&jobs["toy_sum"]);
    assert!(
        sum.contains("MinMemoryNode=80M") && sum.contains("TimeLimit=00:05:00"),
        "{sum}"
    );
}

/// `group = 2`: one array task computes two nodes one after another; a failing node fails alone
/// (its task-mate finishes), its dependent is skipped, and a re-run resubmits only those two.
#[test]
fn slurm_packed_nodes_fail_alone_and_only_the_failed_are_resubmitted() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec(
        "spec.toml",
        &format!(
            "[experiment]\nname = \"packed\"\n[toy]\nvalues = [1, 2, 3]\nsum = true\nfail_on = [1]\n\
             {SLURM}[executor.slurm.resources]\ntoy_square = {{ group = 2 }}\n"
        ),
    );
    let (path, log) = logging_sbatch(&w);
    let out = w.run_with_path(&path, &["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let calls = sbatch_calls(&log);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].contains("--array=0-1 "), "{}", calls[0]);
    let jobs = w.jobs("packed");
    assert_eq!(jobs["toy_square[x=1]"], jobs["toy_square[x=2]"], "one task");
    assert_ne!(jobs["toy_square[x=1]"], jobs["toy_square[x=3]"]);
    let ids: Vec<String> = w.entries().into_values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"toy_square[x=2]".to_string()), "{ids:?}");
    assert!(text(&out).contains("skipped       1"), "{}", text(&out));

    let before = w.jobs("packed");
    let out = w.run_with_path(&path, &["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(submissions(&w, &out), 2, "{}", text(&out));
    resubmitted_only(&before, &w.jobs("packed"), &["toy_square[x=1]", "toy_sum"]);
}

/// Two sums in one array wait on every square; one square fails, so Slurm cancels the whole sum
/// array (`afterok` on an array needs every task). The sum whose own squares all finished is
/// submitted again and computed; only the failed square's dependent is skipped.
#[test]
fn slurm_a_node_cancelled_for_a_failed_array_sibling_is_submitted_again() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec(
        "spec.toml",
        &format!(
            "[experiment]\nname = \"innocent\"\n[toy]\nvalues = [1, 2]\nsum = true\n\
             [sweep]\n\"toy.fail_on\" = [[], [2]]\n{SLURM}"
        ),
    );
    let (path, log) = logging_sbatch(&w);
    let out = w.run_with_path(&path, &["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let calls = sbatch_calls(&log);
    // Squares (one array of 3: x=1 is shared by both points), the two sums (one array), the
    // innocent sum again.
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[1].contains("--array=0-1 "), "{}", calls[1]);
    assert!(!calls[2].contains("--array"), "{}", calls[2]);
    assert!(
        text(&out).contains("submitting them again"),
        "{}",
        text(&out)
    );
    let ids: Vec<String> = w.entries().into_values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(
        ids.iter().filter(|i| i.starts_with("toy_sum")).count(),
        1,
        "{ids:?}"
    );
    let st = text(&out);
    assert!(
        st.contains("failed        1") && st.contains("skipped       1"),
        "{st}"
    );
}

/// The detach-then-rerun race: a re-run plans while a job still runs (its node has no result
/// yet), and the job ends before the re-run decides. `squeue` is wrapped to answer only once the
/// job has completed, so the re-run's statuses are taken while it runs and its Slurm states
/// after it ended: the node must come from the store, not be submitted again.
#[test]
fn slurm_rerun_takes_a_job_that_ended_meanwhile_from_the_store() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec(
        "spec.toml",
        &format!("[experiment]\nname = \"race\"\n[toy]\nvalues = [1]\nsum = false\nsleep_ms = 3000\n{SLURM}"),
    );
    let spec = spec.to_str().unwrap();
    let out = w.logged(&["run", spec, "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    let job = w.jobs("race")["toy_square[x=1]"].clone();
    assert!(
        !w.home().join("store").is_dir() || w.entries().is_empty(),
        "the job has not finished yet"
    );
    let bin = script(
        &w,
        "squeue",
        &format!(
            "i=0\nwhile [ \"$('{sq}' -h -t all -j {job} -o %T)\" != COMPLETED ]; do\n  \
             i=$((i + 1)); [ $i -gt 300 ] && exit 1; sleep 0.1\ndone\nexec '{sq}' \"$@\"\n",
            sq = real("squeue")
        ),
    );
    let out = w.run_with_path(&path_with(&bin), &["run", spec]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(submissions(&w, &out), 0, "{}", text(&out));
    assert_eq!(w.jobs("race")["toy_square[x=1]"], job);
    // Its statuses were taken while the job ran: one node to run, then cached by the job.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run_log = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run log: "))
        .unwrap();
    let events: Vec<Value> = std::fs::read_to_string(w.path().join(run_log))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "run_started" && e["to_run"] == 1),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "cached" && e["by_other_run"] == true),
        "{events:?}"
    );
}

/// Cache keys do not depend on the executor's settings nor on how the spec's path is written:
/// after a Slurm run, `plan` with other executor settings and `./spec.toml` says all cached; the
/// notes_sweep plan (its report node included) has the same keys under every variant.
#[test]
fn slurm_keys_do_not_depend_on_the_executor_or_the_spec_path() {
    let _g = require_slurm();
    let w = Work::new();
    let spec = w.spec("spec.toml", &format!("{FAN}{SLURM}"));
    let out = w.logged(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let sets = [
        "--set",
        "executor.kind=\"local\"",
        "--set",
        "executor.slurm.mem=\"2G\"",
        "--set",
        "executor.slurm.array_throttle=3",
        "--set",
        "executor.slurm.resources.toy_sum={ gpus = 1, group = 4 }",
    ];
    for args in [
        vec!["plan", "./spec.toml"],
        [&["plan", "spec.toml"][..], &sets].concat(),
        [&["plan", "./spec.toml"][..], &sets].concat(),
    ] {
        let out = w.logged(&args);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("5 node(s): 5 cached, 0 to run"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let notes = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/notes_sweep.toml"),
    )
    .unwrap();
    w.spec("notes_sweep.toml", &notes);
    let keys = |args: &[&str]| -> Vec<String> {
        let out = w.rfmx(args);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim_end().strip_suffix("new"))
            .map(String::from)
            .collect()
    };
    let base = keys(&["plan", "notes_sweep.toml"]);
    assert_eq!(base.len(), 755);
    assert!(base.iter().any(|l| l.contains("report")));
    assert_eq!(base, keys(&["plan", "./notes_sweep.toml"]));
    assert_eq!(
        base,
        keys(&[&["plan", "./notes_sweep.toml"][..], &sets].concat())
    );
}

/// The music pipeline on Slurm (tiny model, CPU): sibling generations go out as one array that
/// waits on the directions array, the unsteered ones as another with no dependency, and every
/// node ends with the key a local run gives it.
#[test]
fn slurm_sibling_generations_go_out_as_one_array_after_their_directions() {
    let _g = require_slurm();
    let spec = "[experiment]\nname = \"gens\"\n[model]\nname = \"tiny\"\ndevice = \"auto\"\n\
                [data]\nconcepts = [\"notes\"]\ninstruments = [0]\nper_class = 4\n\
                [extract]\nlayers = [0, 1]\n[probe]\niterations = 1\ntrials = 1\n\
                [steer]\ntargets = [\"notes:C\", \"notes:E\"]\neta = [0.3]\nsamples = 2\nseconds = 0.5\n\
                [evaluate]\nmetrics = [\"pitch_hit\"]\n";
    let local = Work::new();
    let path = local.spec("spec.toml", spec);
    let out = local.logged(&["run", path.to_str().unwrap(), "--executor", "local"]);
    assert!(out.status.success(), "{}", text(&out));

    let w = Work::new();
    let path = w.spec("spec.toml", &format!("{spec}{SLURM}"));
    let (bin_path, log) = logging_sbatch(&w);
    let out = w.run_with_path(&bin_path, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        w.entries().keys().collect::<Vec<_>>(),
        local.entries().keys().collect::<Vec<_>>(),
        "the same nodes under the same keys"
    );
    let calls = sbatch_calls(&log);
    assert!(
        calls.len() <= 10,
        "{} jobs for 27 nodes: {calls:#?}",
        calls.len()
    );
    let jobs = w.jobs("gens");
    let base = |id: &str| jobs[id].split('_').next().unwrap().to_string();
    let call = |name: &str| {
        calls
            .iter()
            .find(|c| c.contains(&format!("--job-name=rfmx:{name} ")))
            .unwrap_or_else(|| panic!("no {name} job: {calls:#?}"))
            .clone()
    };
    let directions = base("directions[notes:C]");
    assert_eq!(
        base("directions[notes:B]"),
        directions,
        "one directions array"
    );
    let steered = base("generation[notes:C|constant|g1|eta0.3|0|s0]");
    for id in [
        "generation[notes:C|constant|g1|eta0.3|0|s1]",
        "generation[notes:E|constant|g1|eta0.3|0|s0]",
        "generation[notes:E|constant|g1|eta0.3|0|s1]",
    ] {
        assert_eq!(base(id), steered, "{id}");
    }
    // Only the tasks of the two targets' directions (of 12), each once.
    let g = call("generation[4]");
    let wanted = format!(
        "--dependency=afterok:{}:{} ",
        jobs["directions[notes:C]"], jobs["directions[notes:E]"]
    );
    assert!(g.contains("--array=0-3 ") && g.contains(&wanted), "{g}");
    let unsteered = base("generation[baseline|none|g1|eta0|0|s0]");
    assert_eq!(base("generation[baseline|none|g1|eta0|0|s1]"), unsteered);
    let u = call("generation[2]");
    assert!(
        u.contains("--array=0-1") && !u.contains("--dependency"),
        "{u}"
    );
}
