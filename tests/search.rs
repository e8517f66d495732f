//! Closed-loop search end to end on the embedded model (docs/design.md §10): the shipped
//! specs/eta_search.toml bisects η for two targets under an FD bound, round by round through the
//! live plan; a re-run is all cache hits; a run killed with SIGKILL during round 2 and re-run ends
//! with byte-identical search.json files; successive halving screens on fewer samples and
//! re-evaluates the better half on the full sample set. The feedback schedule holds the target
//! probe's score on the captured activations nearer its setpoint than a constant η of the same mean.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::Work;

const BOUND: f64 = 12.5;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(stdout: &str, what: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(what)
                .map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no `{what}` in:\n{stdout}"))
}

fn shipped_spec() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/eta_search.toml"))
        .unwrap()
}

/// Every search node's `search.json` in the store, as bytes (not the report's list of them).
fn search_files(w: &Work) -> Vec<Vec<u8>> {
    std::fs::read_dir(w.home().join("store"))
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("out/search.json")).ok())
        .filter(|b| b.first() == Some(&b'{'))
        .collect()
}

/// The stores's bisections: "<target>|<schedule>" -> (bytes, parsed).
fn searches(w: &Work) -> BTreeMap<String, (Vec<u8>, Value)> {
    search_files(w)
        .into_iter()
        .map(|bytes| {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            let name = format!(
                "{}|{}",
                v["target"].as_str().unwrap(),
                v["schedule"].as_str().unwrap()
            );
            (name, (bytes, v))
        })
        .filter(|(_, (_, v))| v["strategy"] == "bisect")
        .collect()
}

fn metric(t: &Value, name: &str) -> f64 {
    t["metrics"][name]["value"].as_f64().unwrap()
}

/// The bisection's invariants on a finished search.json.
fn check_bisection(name: &str, s: &Value) {
    let trials = s["trials"].as_array().unwrap();
    assert!(
        !trials.is_empty() && trials.len() <= 5,
        "{name}: {} trials",
        trials.len()
    );
    assert_eq!(
        trials[0]["setting"]["eta"], 8.0,
        "{name}: starts at the top"
    );
    // Each later η halves the interval between the highest η that met the bound and the lowest
    // that did not (η = 0, the baseline, meets it).
    for (i, t) in trials.iter().enumerate().skip(1) {
        let before = &trials[..i];
        let fd_ok = |t: &&Value| metric(t, "fd") <= BOUND;
        let low = before
            .iter()
            .filter(fd_ok)
            .map(|t| t["setting"]["eta"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let high = before
            .iter()
            .filter(|t| !fd_ok(t))
            .map(|t| t["setting"]["eta"].as_f64().unwrap())
            .filter(|&e| e > low)
            .fold(f64::INFINITY, f64::min);
        let eta = t["setting"]["eta"].as_f64().unwrap();
        assert!(
            (eta - (low + high) / 2.0).abs() <= 1e-6,
            "{name}: trial {i} at η {eta}"
        );
        assert_eq!(t["round"], i as u64 + 1, "{name}: one trial per round");
    }
    for t in trials {
        let feasible = metric(t, "fd") <= BOUND;
        assert_eq!(t["assessment"]["feasible"], feasible, "{name}: {t}");
    }
    // The chosen trial meets the bound and has the best objective of those that do.
    let chosen = &trials[s["chosen"].as_u64().expect("a chosen trial") as usize];
    assert_eq!(s["constraints_held"], true, "{name}");
    assert!(metric(chosen, "fd") <= BOUND);
    let best = trials
        .iter()
        .filter(|t| metric(t, "fd") <= BOUND)
        .map(|t| metric(t, "probe_accuracy_captured"))
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(metric(chosen, "probe_accuracy_captured"), best, "{name}");
}

#[test]
fn eta_search_bisects_each_target_resumes_after_kill_9_and_reruns_from_cache() {
    let spec = shipped_spec();
    let a = Work::new();
    a.spec("eta_search.toml", &spec);
    // Up front, the estimate bounds what the unplanned rounds may still cost: 2 searches × (5 − 1)
    // evaluations × 4 samples.
    let estimate = ok(&a.rfmx(&["plan", "--estimate", "eta_search.toml"]));
    assert!(
        estimate.contains("at most 8 more evaluation(s), 32 generation(s)"),
        "{estimate}"
    );
    let t0 = Instant::now();
    let first = ok(&a.rfmx(&["run", "eta_search.toml"]));
    println!("uninterrupted run: {:.1} s", t0.elapsed().as_secs_f64());
    let found = searches(&a);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["notes:C|constant", "notes:G|constant"],
        "{first}"
    );
    for (name, (_, s)) in &found {
        check_bisection(name, s);
    }
    let rounds = found
        .values()
        .flat_map(|(_, s)| s["trials"].as_array().unwrap().iter())
        .map(|t| t["round"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(rounds >= 2, "the bound must stop the first round's η");
    let page = std::fs::read_to_string(a.path().join("reports/eta_search/search.html")).unwrap();
    for needle in [
        "notes:C · constant",
        "notes:G · constant",
        "chosen: η = ",
        "class=\"chosen\"",
    ] {
        assert!(page.contains(needle), "search.html lacks {needle}");
    }
    assert!(
        std::fs::read_to_string(a.path().join("reports/eta_search/index.html"))
            .unwrap()
            .contains("href=\"search.html\""),
        "the overview links the search page"
    );

    // Another spec steers at each target's chosen setting: the same nodes, all in the store.
    let at_chosen = spec
        .replace("name = \"eta_search\"", "name = \"at_chosen\"")
        .replace(
            "samples = 4\n",
            "samples = 4\nfrom_search = \"eta_search\"\n",
        );
    let at_chosen = at_chosen[..at_chosen.find("[search]").unwrap()].to_string();
    a.spec("at_chosen.toml", &at_chosen);
    let plan = ok(&a.rfmx(&["plan", "at_chosen.toml"]));
    for (name, (_, s)) in &found {
        let chosen = &s["trials"][s["chosen"].as_u64().unwrap() as usize];
        let eta = chosen["setting"]["eta"].as_f64().unwrap();
        let target = name.split('|').next().unwrap();
        let id = format!("evaluation[{target}|constant|g1|eta{eta}]");
        assert!(
            plan.lines()
                .any(|l| l.contains("cached") && l.contains(&id)),
            "{id} not planned from the search, or not cached:\n{plan}"
        );
    }
    assert!(
        plan.contains(" 1 to run"),
        "only the report is new:\n{plan}"
    );
    let missing = a.rfmx(&[
        "plan",
        "at_chosen.toml",
        "--set",
        "steer.from_search=\"nothing_here\"",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("reports/nothing_here/search.json") && err.contains("first"),
        "{err}"
    );

    // A re-run computes nothing: every round is planned again from the store.
    let again = ok(&a.rfmx(&["run", "eta_search.toml"]));
    assert_eq!(count(&again, "computed"), 0, "{again}");
    let plan = ok(&a.rfmx(&["plan", "eta_search.toml"]));
    assert!(plan.contains(" 0 to run"), "{plan}");
    assert!(
        plan.contains(&format!(
            "planned from finished results: {} round(s)",
            rounds + 1
        )),
        "{plan}"
    );

    // Killed with SIGKILL once round 2 is planned, then re-run: the same searches, byte for byte.
    let b = Work::new();
    b.spec("eta_search.toml", &spec);
    let in_round_2 = || {
        std::fs::read_dir(b.home().join("runs"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .any(|log| {
                log.lines()
                    .any(|l| l.contains("\"planned\"") && l.contains("round 2 of"))
            })
    };
    b.kill_when(
        &["run", "eta_search.toml"],
        Duration::from_secs(300),
        in_round_2,
    );
    assert!(searches(&b).len() < 2, "killed after both searches ended");
    let plan = ok(&b.rfmx(&["plan", "eta_search.toml"]));
    assert!(
        plan.contains("later: search: notes:") && plan.contains("later rounds planned when round"),
        "{plan}"
    );
    ok(&b.rfmx(&["run", "eta_search.toml"]));
    let resumed = searches(&b);
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        found.keys().collect::<Vec<_>>()
    );
    for (name, (bytes, _)) in &found {
        assert!(
            resumed[name].0 == *bytes,
            "{name}: search.json differs after the kill"
        );
    }

    // Successive halving over η and the gate, in the same store (the probes are cache hits):
    // 3 evaluations = 2 settings on 2 samples, then the better one on all 4.
    let halving = spec
        .replace("name = \"eta_search\"", "name = \"halving\"")
        .replace("targets = [\"notes:C\", \"notes:G\"]", "targets = [\"notes:C\"]")
        .replace(
            "variables = { eta = [0.0, 8.0] }\nstrategy = \"bisect\"\nbudget = 5",
            "variables = { eta = [2.0, 8.0], gate = [0.5, 1.0] }\nstrategy = \"halving\"\nbudget = 3",
        );
    assert!(
        halving.contains("\"halving\""),
        "the shipped spec's [search] changed"
    );
    a.spec("halving.toml", &halving);
    let plan = ok(&a.rfmx(&["plan", "halving.toml"]));
    assert!(
        plan.contains("|n2]"),
        "screening evaluations on 2 samples:\n{plan}"
    );
    let out = ok(&a.rfmx(&["run", "halving.toml"]));
    let s = search_files(&a)
        .into_iter()
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .find(|v| v["strategy"] == "halving")
        .unwrap_or_else(|| panic!("no halving search.json:\n{out}"));
    let trials = s["trials"].as_array().unwrap();
    let shape: Vec<(u64, u64)> = trials
        .iter()
        .map(|t| (t["round"].as_u64().unwrap(), t["samples"].as_u64().unwrap()))
        .collect();
    assert_eq!(shape, [(1, 2), (1, 2), (2, 4)]);
    let etas: Vec<f64> = trials[..2]
        .iter()
        .map(|t| t["setting"]["eta"].as_f64().unwrap())
        .collect();
    assert_eq!(
        etas,
        [2.0, 8.0],
        "the hypercube's η levels include both ends"
    );
    let survivor = &trials[2]["setting"];
    assert!(trials[..2].iter().any(|t| &t["setting"] == survivor));
    assert_eq!(s["chosen"], 2, "chosen from the full-sample rung");
    feedback_beats_a_constant_eta_of_the_same_mean(&a, &spec);

    let settings = std::fs::read_to_string(a.path().join("reports/halving/settings.html")).unwrap();
    let rows = settings.matches("<tr class=").count();
    assert_eq!(
        rows, 2,
        "the baseline and the full-sample trial; the screening rungs are on the search page"
    );
}

/// The output dir of a node of a spec, by id.
fn out_dir(w: &Work, spec: &str, id: &str) -> std::path::PathBuf {
    let out = ok(&w.rfmx(&["explain", spec, id]));
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key"))
        .unwrap_or_else(|| panic!("no key for {id}:\n{out}"))
        .trim();
    w.home().join("store").join(key).join("out")
}

/// `layer.<l>` of a safetensors file of `[hidden]` rows.
fn layer_row(path: &Path, layer: usize) -> Vec<f32> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    t[&format!("layer.{layer}")]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

const SETPOINT: f64 = 0.5;

fn feedback_beats_a_constant_eta_of_the_same_mean(a: &Work, shipped: &str) {
    let base = shipped[..shipped.find("[search]").unwrap()].replace(
        "targets = [\"notes:C\", \"notes:G\"]",
        "targets = [\"notes:C\"]",
    );
    let feedback = base
        .replace("name = \"eta_search\"", "name = \"feedback\"")
        .replace(
            "schedule = [\"constant\"]",
            &format!("schedule = [{{ kind = \"feedback\", setpoint = {SETPOINT}, gain = 0.2, max = 1.0 }}]"),
        )
        .replace("eta = [0.0] ", "eta = [0.0, 6.0] ");
    assert!(
        feedback.contains("feedback\", setpoint"),
        "the shipped spec changed"
    );
    a.spec("feedback.toml", &feedback);
    ok(&a.rfmx(&["run", "feedback.toml"]));
    let seeds = 0..4;
    let mut phis = Vec::new();
    for s in seeds.clone() {
        let dir = out_dir(
            a,
            "feedback.toml",
            &format!("generation[notes:C|feedback#0|g1|eta6|0|s{s}]"),
        );
        let trace: Value =
            serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
        let term = &trace["terms"][0];
        let phi: Vec<f64> = term["phi"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            phi.iter().all(|p| (0.0..=1.0).contains(p)),
            "φ clamped to [0, max]: {phi:?}"
        );
        let scores = term["feedback_scores"].as_array().unwrap();
        assert!(
            scores[0].is_null()
                && scores[1..]
                    .iter()
                    .all(|v| v.as_f64().is_some_and(f64::is_finite))
        );
        // The realised η is η0 · w_l · φ(t): the trace records what the controller chose.
        let eta_lt = term["eta_lt"].as_array().unwrap();
        let w: Vec<f64> = term["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (t, row) in eta_lt.iter().enumerate() {
            for (l, v) in row.as_array().unwrap().iter().enumerate() {
                assert!((v.as_f64().unwrap() - 6.0 * w[l] * phi[t]).abs() < 1e-9);
            }
        }
        phis.extend(phi);
    }
    let mean_eta = 6.0 * phis.iter().sum::<f64>() / phis.len() as f64;
    let eta_c = (mean_eta * 1e4).round() / 1e4;
    assert!(eta_c > 0.0, "the controller never steered");
    let constant = base
        .replace("name = \"eta_search\"", "name = \"constant_eq\"")
        .replace("eta = [0.0] ", &format!("eta = [0.0, {eta_c}] "));
    a.spec("constant.toml", &constant);
    ok(&a.rfmx(&["run", "constant.toml"]));

    // Score both with the target probe at the judge layer, on the mean activations of the whole
    // generation (the running mean the controller saw at the end).
    let dirs = out_dir(a, "feedback.toml", "directions[notes:C]");
    let judge: Value =
        serde_json::from_slice(&std::fs::read(dirs.join("scores.json")).unwrap()).unwrap();
    let layer = judge["judge_layer"].as_u64().unwrap() as usize;
    let probe = out_dir(a, "feedback.toml", &format!("probe[notes,L{layer},linear]"));
    let scores: Value =
        serde_json::from_slice(&std::fs::read(probe.join("scores.json")).unwrap()).unwrap();
    let fit =
        rfmx::probe::ProbeFit::load(&probe.join(scores["classes"]["C"]["dir"].as_str().unwrap()))
            .unwrap();
    let score = |dir: &Path| {
        let x = layer_row(&dir.join("captured.safetensors"), layer);
        let f = rfmx::probe::Features::new(1, x.len(), x).unwrap();
        fit.predict(&f).unwrap()[0]
    };
    let (mut err_fb, mut err_c) = (0.0, 0.0);
    for s in seeds {
        let fb = score(&out_dir(
            a,
            "feedback.toml",
            &format!("generation[notes:C|feedback#0|g1|eta6|0|s{s}]"),
        ));
        let c = score(&out_dir(
            a,
            "constant.toml",
            &format!("generation[notes:C|constant|g1|eta{eta_c}|0|s{s}]"),
        ));
        println!("seed {s}: feedback score {fb:.3}, constant η {eta_c} score {c:.3}");
        err_fb += (fb - SETPOINT).abs();
        err_c += (c - SETPOINT).abs();
    }
    assert!(
        err_fb < err_c,
        "feedback |score − setpoint| summed over seeds {err_fb:.3} vs constant {err_c:.3}"
    );
}
