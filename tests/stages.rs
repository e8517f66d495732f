//! The probe pipeline end to end through the binary on the embedded tiny model: dataset ->
//! activations -> probe (per layer) -> directions, with the node output formats (docs/contracts.md), caching,
//! partial re-runs and the summary table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;
use common::Work;

impl Work {
    /// id -> output dir of every node in the experiment's index (the last run's plan).
    fn outputs(&self, experiment: &str) -> HashMap<String, PathBuf> {
        let index = json(&self.home().join(format!("index/{experiment}.json")));
        index["nodes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, n)| {
                let key = n["key"].as_str().unwrap();
                (id.clone(), self.home().join("store").join(key).join("out"))
            })
            .collect()
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(out: &Output) -> String {
    let (so, se) = text(out);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{so}\nstderr:\n{se}",
        out.status.code()
    );
    so
}

/// `computed` / `cached` counts from the run summary.
fn count(stdout: &str, what: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix(what).map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no `{what}` in\n{stdout}"))
}

const SPEC: &str = r#"
[experiment]
name = "stages_t"
seed = 3

[model]
name = "tiny"
device = "cpu"

[data]
concepts = ["chords"]
instruments = [0, 24, 40]
per_class = 8

[extract]
pooling = "mean"
layers = [1, 3]

[probe]
kind = "rfm"
iterations = 3
trials = 2
directions_k = 3

[steer]
targets = ["chords:major"]
# Steering runs too (the pipeline sections come as a group): kept to one short sample.
eta = [0.3]
samples = 1
seconds = 0.2
"#;

fn safetensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (v.shape().to_vec(), data))
        })
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn tiny_probe_pipeline_outputs_caching_and_partial_reruns() {
    let w = Work::new();
    let spec = w.spec("s.toml", SPEC);
    let spec = spec.to_str().unwrap();
    let t0 = std::time::Instant::now();
    let first = ok(&w.rfmx(&["run", spec]));
    eprintln!("first run: {:.1}s", t0.elapsed().as_secs_f64());
    // 1 dataset + 1 activations + 2 probes + 4 directions
    // + steering: 1 baseline + 1 steered generation, 2 evaluations (η = 0, 0.3); + the report
    assert_eq!(count(&first, "computed"), 13, "{first}");
    assert!(first.contains("probe summary"), "{first}");
    assert!(first.contains("layer selection"), "{first}");
    assert!(first.contains("chords"), "{first}");

    let out = w.outputs("stages_t");
    // dataset: the data::store layout
    let ds = &out["dataset[chords]"];
    for f in ["audio_32k.f32", "clips.json", "labels.csv", "manifest.json"] {
        assert!(ds.join(f).is_file(), "{f}");
    }
    let manifest = json(&ds.join("manifest.json"));
    assert_eq!(manifest["kept"], 32);
    let clips = json(&ds.join("clips.json"));
    assert!(
        clips
            .as_array()
            .unwrap()
            .iter()
            .all(|c| [0, 24, 40].contains(&c["program"].as_u64().unwrap())),
        "data.instruments restricts the programs"
    );

    // activations: layer.<l> = [n, hidden] for the extracted layers only
    let act = &out["activations[chords,mean]"];
    let idx = json(&act.join("index.json"));
    assert_eq!(idx["n"], 32);
    assert_eq!(idx["hidden"], 64);
    assert_eq!(idx["layers"], serde_json::json!([1, 3]));
    assert_eq!(idx["pooling"], "mean");
    assert_eq!(
        idx["classes"],
        serde_json::json!(["major", "minor", "aug", "dim"])
    );
    assert_eq!(idx["labels"].as_array().unwrap().len(), 32);
    let feats = safetensors(&act.join("features.safetensors"));
    assert_eq!(feats.len(), 2);
    for l in [1, 3] {
        let (shape, data) = &feats[&format!("layer.{l}")];
        assert_eq!(shape, &vec![32, 64]);
        assert!(data.iter().all(|v| v.is_finite()));
    }
    assert_ne!(feats["layer.1"].1, feats["layer.3"].1);

    // probe: scores + per-class fits and raw-space directions + the multiclass judge
    let pr = &out["probe[chords,L3,rfm]"];
    let scores = json(&pr.join("scores.json"));
    assert_eq!(scores["layer"], 3);
    assert_eq!(scores["kind"], "rfm");
    assert_eq!(scores["split_seed"], 3);
    for class in ["major", "minor", "aug", "dim"] {
        let c = &scores["classes"][class];
        for k in ["val_auc", "test_auc", "test_acc"] {
            let v = c[k].as_f64().unwrap_or_else(|| panic!("{class}.{k}: {c}"));
            assert!((0.0..=1.0).contains(&v), "{class}.{k} = {v}");
        }
        assert!(c["hyper"]["rfm"]["bandwidth"].is_number(), "{c}");
        let dir = pr.join(c["dir"].as_str().unwrap());
        assert!(dir.join("probe.json").is_file());
        let d = safetensors(&dir.join("directions.safetensors"));
        let (shape, v) = &d["directions"];
        assert_eq!(shape, &vec![3, 64]);
        for row in v.chunks(64) {
            let n: f32 = row.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "norm {n}");
        }
    }
    let mc = &scores["multiclass"];
    assert!(mc["val_acc"].as_f64().is_some() && mc["test_acc"].as_f64().is_some());
    let conf = mc["confusion"].as_array().unwrap();
    assert_eq!(conf.len(), 4);
    let n_test: u64 = conf
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(n_test > 0);
    assert!(pr.join("multiclass/probe.json").is_file());
    // The judge loads back and classifies raw pooled activations.
    let judge = rfmx::probe::ProbeFit::load(&pr.join("multiclass")).unwrap();
    let (_, x) = &feats["layer.3"];
    let x = rfmx::probe::Features::new(32, 64, x.clone()).unwrap();
    assert_eq!(judge.predict_classes(&x).unwrap().len(), 32);

    // directions: per layer [k, hidden], unit norm, equal to the probe node's raw directions
    let dn = &out["directions[chords:minor]"];
    let d = safetensors(&dn.join("directions.safetensors"));
    assert_eq!(d.len(), 2);
    for l in [1, 3] {
        let (shape, v) = &d[&format!("layer.{l}")];
        assert_eq!(shape, &vec![3, 64]);
        for row in v.chunks(64) {
            let n: f32 = row.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "norm {n}");
        }
    }
    let from_probe = safetensors(&pr.join("class/minor/directions.safetensors"));
    assert_eq!(d["layer.3"].1, from_probe["directions"].1);
    let ds_scores = json(&dn.join("scores.json"));
    assert_eq!(ds_scores["class"], "minor");
    assert_eq!(ds_scores["layers"].as_array().unwrap().len(), 2);
    let jl = ds_scores["judge_layer"].as_u64().unwrap();
    assert!(jl == 1 || jl == 3);

    // Second run: everything cached.
    let again = ok(&w.rfmx(&["run", spec]));
    assert_eq!(count(&again, "computed"), 0, "{again}");
    assert_eq!(count(&again, "cached"), 13, "{again}");
    assert!(again.contains("probe summary"));

    // Another pooling: only activations and what depends on it run again (the generations too:
    // their audio-level features are pooled as the probes' were).
    let t1 = std::time::Instant::now();
    let max = ok(&w.rfmx(&["run", spec, "--set", "extract.pooling=max"]));
    eprintln!("pooling=max run: {:.1}s", t1.elapsed().as_secs_f64());
    assert_eq!(count(&max, "cached"), 1, "{max}");
    assert_eq!(count(&max, "computed"), 12, "{max}");
    let out = w.outputs("stages_t");
    assert_eq!(
        json(&out["activations[chords,max]"].join("index.json"))["pooling"],
        "max"
    );

    // A fixed judge layer changes only the directions nodes (and, downstream, the steered
    // generation, the evaluations and the report; the unsteered baseline stays cached).
    let fixed = ok(&w.rfmx(&["run", spec, "--set", "probe.judge_layer=1"]));
    assert_eq!(count(&fixed, "cached"), 5, "{fixed}");
    assert_eq!(count(&fixed, "computed"), 8, "{fixed}");
    let out = w.outputs("stages_t");
    let s = json(&out["directions[chords:aug]"].join("scores.json"));
    assert_eq!(s["judge_layer"], 1, "{s}");
    assert_eq!(s["judge"]["probe"], "probe[chords,L1,rfm]", "{s}");

    // CLAP: without a snapshot the metric says where it looked and how to download one, and the
    // run succeeds; only the evaluations (and the report) run again.
    let clap_dir = w.path().join("clap_snapshot");
    let clap_sets = [
        "--set",
        "probe.judge_layer=1",
        "--set",
        r#"evaluate.metrics=["probe_accuracy", "clap"]"#,
    ];
    let model_set = format!("evaluate.clap_model={}", clap_dir.display());
    let mut args = vec!["run", spec];
    args.extend_from_slice(&clap_sets);
    args.extend_from_slice(&["--set", &model_set]);
    let missing = ok(&w.rfmx(&args));
    assert_eq!(count(&missing, "computed"), 3, "{missing}");
    assert!(
        missing.contains("n/a clap: no CLAP snapshot at"),
        "{missing}"
    );
    let out = w.outputs("stages_t");
    let m = json(&out["evaluation[chords:major|constant|g1|eta0.3]"].join("metrics.json"));
    let reason = m["metrics"]["clap"]["unavailable"].as_str().unwrap();
    assert!(reason.contains(&clap_dir.display().to_string()), "{reason}");
    assert!(
        reason.contains("huggingface-cli download laion/larger_clap_music"),
        "{reason}"
    );
    // The snapshot appears: the evaluations re-score (the key follows the snapshot's content).
    std::fs::create_dir(&clap_dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clap/tiny_clap");
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, clap_dir.join(f.file_name().unwrap())).unwrap();
    }
    let found = ok(&w.rfmx(&args));
    assert_eq!(count(&found, "computed"), 3, "{found}");
    assert!(!found.contains("n/a clap"), "{found}");
    let out = w.outputs("stages_t");
    let m = json(&out["evaluation[chords:major|constant|g1|eta0.3]"].join("metrics.json"));
    let v = m["metrics"]["clap"]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{m}"));
    assert!((-1.0..=1.0).contains(&v), "{v}");
    assert_eq!(count(&ok(&w.rfmx(&args)), "computed"), 0);
}

#[test]
fn a_missing_soundfont_fails_the_dataset_node_naming_the_key() {
    let w = Work::new();
    let spec = w.spec(
        "sf.toml",
        &SPEC.replace(
            "per_class = 8",
            "per_class = 8\nsoundfont = \"/no/such/font.sf2\"",
        ),
    );
    let out = w.rfmx(&["run", spec.to_str().unwrap()]);
    let (so, se) = text(&out);
    assert!(!out.status.success(), "{so}\n{se}");
    assert!(se.contains("FAILED   dataset[chords]"), "{se}");
    assert!(se.contains("data.soundfont"), "{se}");
    assert!(se.contains("/no/such/font.sf2"), "{se}");
    assert!(so.contains("failed: dataset[chords]"), "{so}");
    // Nothing downstream ran (only the unsteered baseline generation, which needs no data).
    assert_eq!(count(&so, "computed"), 1, "{so}");
}

#[test]
fn a_program_the_concept_does_not_use_is_an_error_naming_data_instruments() {
    let mut cfg = rfmx::data::DatasetConfig::new("chords");
    cfg.per_class = Some(2);
    cfg.builtin_synth = true;
    cfg.instruments = Some(vec![0, 127]);
    let dir = tempfile::tempdir().unwrap();
    let e = rfmx::data::build(&cfg, dir.path(), &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.instruments") && e.contains("127"), "{e}");
}

#[test]
fn steering_can_be_switched_off_for_a_probe_only_spec() {
    let w = Work::new();
    let spec = w.spec("s.toml", SPEC);
    let spec = spec.to_str().unwrap();
    let on = ok(&w.rfmx(&["plan", spec]));
    assert!(
        on.contains("generation[") && on.contains("evaluation["),
        "{on}"
    );
    let off = ok(&w.rfmx(&["plan", spec, "--set", "steer.enabled=false"]));
    // Nothing steers, so no directions either, unless the spec asks for them.
    assert!(!off.contains("directions["), "{off}");
    let asked = ok(&w.rfmx(&[
        "plan",
        spec,
        "--set",
        "steer.enabled=false",
        "--set",
        "probe.directions=true",
    ]));
    assert!(asked.contains("directions[chords:major]"), "{asked}");
    assert!(!asked.contains("generation["), "{asked}");
    assert!(
        !off.contains("generation[") && !off.contains("evaluation["),
        "{off}"
    );
    // A probe-only spec of another concept need not name steering targets: the default target
    // (notes:C) is not validated against `data.concepts` when nothing steers.
    let probe_only = w.spec(
        "probe_only.toml",
        "[experiment]\nname = \"probe_only\"\n[model]\nname = \"tiny\"\n\
         [data]\nconcepts = [\"chords\"]\ninstruments = [0]\nper_class = 4\n\
         [steer]\nenabled = false\n",
    );
    ok(&w.rfmx(&["check", probe_only.to_str().unwrap()]));
}

/// `id -> key` of every node in `rfmx plan`'s listing.
fn plan_keys(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once("  [")?;
            let id = head.split_whitespace().last()?;
            let key = rest.split(']').next()?;
            Some((id.to_string(), key.to_string()))
        })
        .collect()
}

#[test]
fn model_dtype_keys_f32_as_before_and_bf16_runs_the_tiny_pipeline_under_new_keys() {
    let w = Work::new();
    let spec = w.spec("s.toml", SPEC);
    let spec = spec.to_str().unwrap();
    let absent = plan_keys(&ok(&w.rfmx(&["plan", spec])));
    // On the CPU `auto` is f32, and an explicit f32 keys every model node as no dtype at all
    // (the report's key hashes the resolved spec's text, which now names the dtype).
    let without_report = |mut k: HashMap<String, String>| {
        k.remove("report");
        k
    };
    for set in ["model.dtype=\"f32\"", "model.dtype=\"auto\""] {
        let f32 = plan_keys(&ok(&w.rfmx(&["plan", spec, "--set", set])));
        assert_eq!(without_report(f32), without_report(absent.clone()), "{set}");
    }
    let bf16 = plan_keys(&ok(&w.rfmx(&[
        "plan",
        spec,
        "--set",
        "model.dtype=\"bf16\"",
    ])));
    assert_eq!(bf16.len(), absent.len());
    assert_eq!(bf16["dataset[chords]"], absent["dataset[chords]"]);
    for (id, key) in &absent {
        let model_dependent = id.starts_with("activations[")
            || id.starts_with("generation[")
            || id.starts_with("probe[")
            || id.starts_with("report");
        if model_dependent {
            assert_ne!(&bf16[id], key, "{id} kept its f32 key under bf16");
        }
    }
    let f16 = plan_keys(&ok(&w.rfmx(&[
        "plan",
        spec,
        "--set",
        "model.dtype=\"f16\"",
    ])));
    assert_ne!(
        f16["generation[baseline|none|g1|eta0|0|s3]"],
        bf16["generation[baseline|none|g1|eta0|0|s3]"]
    );

    let run = ok(&w.rfmx(&["run", spec, "--set", "model.dtype=\"bf16\""]));
    assert_eq!(count(&run, "computed"), 13, "{run}");
    let out = w.outputs("stages_t");
    let feats = safetensors(&out["activations[chords,mean]"].join("features.safetensors"));
    assert!(
        feats.values().all(|(_, v)| v.iter().all(|x| x.is_finite())),
        "non-finite bf16 features"
    );
    let gen_dir = &out["generation[baseline|none|g1|eta0|0|s3]"];
    assert!(gen_dir.join("audio.wav").is_file());
    let captured = safetensors(&gen_dir.join("captured.safetensors"));
    assert!(
        captured
            .values()
            .all(|(_, v)| v.iter().all(|x| x.is_finite()))
    );

    let bad = w.rfmx(&["plan", spec, "--set", "model.dtype=\"f64\""]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("dtype") && err.contains("bf16"), "{err}");
}
