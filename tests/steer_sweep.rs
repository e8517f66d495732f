//! A steering sweep through the engine (plan → run → summary) on the embedded model, with the
//! directions and probe nodes supplied by a stand-in stage that writes them through their output
//! types (`rfmx::stages::contract`). Checks the shared baselines, the node ids, that a
//! point whose generation blows up (absurd η) is recorded as failed while the others finish, the
//! metrics (CLAP scored with the tiny fixture snapshot and checked against a direct computation)
//! and the summary table.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rfmx::dag::status::statuses;
use rfmx::dag::store::{Index, Store};
use rfmx::dag::{
    Label, NodeCtx, NodeError, NodeKind, NodeSpec, PlanBuilder, PlanError, Registry, Stage,
    build_plan,
};
use rfmx::probe::{Features, ProbeConfig, ProbeKind, Targets, Task};
use rfmx::spec::ResolvedSpec;
use rfmx::stages::contract::Output;
use rfmx::stages::directions::{DirectionLayer, DirectionScores, Judge};
use rfmx::stages::probe::{Hyper, MulticlassScores, ProbeScores};
use rfmx::stages::{DirectionsOf, ProbeOf};
use serde_json::{Value, json};

const CLASSES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];
const HIDDEN: usize = 64;
const LAYERS: usize = 4;

/// Plans `probe[notes,L<l>,linear]` and `directions[notes:C]` and exports them as the probe stage does.
struct StandIn;

impl Stage for StandIn {
    fn name(&self) -> &'static str {
        "stand_in"
    }
    fn plan(&self, spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        if spec.spec.steer.is_none() {
            return Ok(());
        }
        let mut probes = Vec::new();
        for l in 0..LAYERS {
            let r = plan.add(
                NodeSpec::new(
                    format!("probe[notes,L{l},linear]"),
                    "probe",
                    json!({ "layer": l }),
                )
                .label(Label {
                    concept: Some("notes".into()),
                    layer: Some(l),
                    ..Label::default()
                }),
            )?;
            plan.export::<ProbeOf>(&("notes".into(), l), r)?;
            probes.push(r);
        }
        let mut d = NodeSpec::new("directions[notes:C]", "directions", json!({}));
        for (l, r) in probes.into_iter().enumerate() {
            d = d.input(format!("L{l}"), r);
        }
        let r = plan.add(d)?;
        plan.export::<DirectionsOf>(&("notes".into(), "C".into()), r)?;
        Ok(())
    }
}

/// A multiclass linear judge on Gaussian clusters (class k centred at 3·e_k).
struct FakeProbe;

impl NodeKind for FakeProbe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..240 {
            let k = i % 12;
            for j in 0..HIDDEN {
                let noise = ((i * 131 + j * 17) as f32 * 0.618).sin();
                data.push(noise + if j == k { 3.0 } else { 0.0 });
            }
            labels.push(k);
        }
        let x = Features::new(240, HIDDEN, data)?;
        let cfg = ProbeConfig {
            kind: ProbeKind::Linear,
            task: Task::Multiclass,
            ..Default::default()
        };
        let fit = rfmx::probe::fit(&x, &Targets::Classes(labels), &cfg)?;
        fit.save(&ctx.out_dir.join("multiclass"))?;
        let hyper = Hyper::Linear { lambda: 1.0 };
        ProbeScores {
            concept: "notes".into(),
            layer: ctx.params["layer"].as_u64().unwrap() as usize,
            kind: ProbeKind::Linear,
            split_seed: 0,
            hidden: HIDDEN,
            classes: Default::default(),
            multiclass: MulticlassScores {
                val_acc: fit.val.accuracy,
                test_acc: fit.test.accuracy,
                val_auc: None,
                test_auc: None,
                confusion: vec![],
                classes: CLASSES.iter().map(|c| c.to_string()).collect(),
                hyper,
                dir: "multiclass".into(),
            },
            regression: None,
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}

struct FakeDirections;

impl NodeKind for FakeDirections {
    fn name(&self) -> &'static str {
        "directions"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let mut map = HashMap::new();
        for l in 0..LAYERS {
            let mut q = vec![0f32; HIDDEN];
            q[0] = 1.0;
            map.insert(
                format!("layer.{l}"),
                Tensor::from_vec(q, (1, HIDDEN), &Device::Cpu)?,
            );
        }
        candle_core::safetensors::save(&map, ctx.out_dir.join("directions.safetensors"))?;
        DirectionScores {
            concept: "notes".into(),
            class: "C".into(),
            kind: "linear".into(),
            layers: (0..LAYERS)
                .map(|l| DirectionLayer {
                    layer: l,
                    val_auc: Some(0.6 + 0.1 * l as f64),
                    test_auc: Some(0.5),
                    k: 1,
                    degenerate: None,
                })
                .collect(),
            degenerate_layers: vec![],
            judge_layer: 3,
            judge: Judge {
                layer: 3,
                val_acc: None,
                test_acc: None,
                probe: "probe[notes,L3,linear]".into(),
            },
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}

fn clap_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clap/tiny_clap")
}

const SPEC: &str = r#"
[experiment]
name = "steer_sweep_test"
seed = 7

[model]
name = "tiny"

[data]
concepts = ["notes"]

[probe]
kind = "linear"

[steer]
targets = ["notes:C"]
layers = { strategy = "exponential", w0 = 1.0, kappa = 0.95 }
schedule = ["constant", "exp_down"]
gate = 1.0
eta = [0, 2.0, 1e39]
prompts = ["solo piano"]
seconds = 0.2
samples = 2
exp_down_ratio = 0.9
exp_down_steps = 13

[evaluate]
metrics = ["probe_accuracy", "pitch_hit", "chord_hit", "fd", "mmd", "clap"]
clap_model = "CLAP_DIR"
"#;

/// The stand-in probe stage with the real steering and evaluation stages.
fn registry() -> Registry {
    Registry::default()
        .stage(StandIn)
        .kind(FakeProbe)
        .kind(FakeDirections)
        .stage(rfmx::stages::steer::SteerStage)
        .kind(rfmx::stages::generation::GenerationKind)
        .kind(rfmx::stages::evaluation::EvaluationKind)
}

#[test]
fn sweep_runs_records_the_failing_point_and_summarises() {
    let t0 = std::time::Instant::now();
    let registry = registry();
    let text = SPEC.replace("CLAP_DIR", clap_dir().to_str().unwrap());
    let spec = rfmx::spec::load_str("t.toml", "t", &text, &[], &[]).unwrap();
    let plan = build_plan(&spec, &registry, &rfmx::dag::NoResults).unwrap();
    let ids: Vec<&str> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
    let gens: Vec<&&str> = ids
        .iter()
        .filter(|i| i.starts_with("generation["))
        .collect();
    // 2 baselines (shared by both schedules) + 2 schedules × 2 nonzero η × 2 seeds.
    assert_eq!(gens.len(), 2 + 2 * 2 * 2, "{gens:?}");
    assert!(ids.contains(&"generation[baseline|none|g1|eta0|0|s7]"));
    assert!(ids.contains(&"generation[notes:C|exp_down|g1|eta2|0|s8]"));
    // One η = 0 evaluation per target + one per schedule × nonzero η.
    let evals: Vec<&&str> = ids
        .iter()
        .filter(|i| i.starts_with("evaluation["))
        .collect();
    assert_eq!(evals.len(), 1 + 2 * 2, "{evals:?}");
    assert!(ids.contains(&"evaluation[notes:C|none|g1|eta0]"));

    let home = tempfile::tempdir().unwrap();
    let store = Store {
        root: home.path().to_path_buf(),
    };
    let st = statuses(&plan, &store, &Index::default());
    let (tx, rx) = crossbeam_channel::unbounded();
    let summary = rfmx::exec::run_plan(&plan, &st, &store, &registry, 2, &tx);
    for e in rx.try_iter() {
        if let rfmx::events::Event::Finished { id, seconds, .. } = e {
            eprintln!("{seconds:>7.2}s {id}");
        }
    }
    // The absurd-η generations (2 schedules × 2 seeds) fail; their 2 evaluations are skipped.
    assert_eq!(summary.failed, 4, "{summary:?}");
    assert_eq!(summary.skipped, 2, "{summary:?}");
    assert_eq!(summary.computed, plan.nodes.len() - 6, "{summary:?}");
    for id in &summary.failed_ids {
        assert!(id.contains("|eta1000000000"), "{id}");
    }
    // The spec's schedule constants reach the generation: 0.2 s = 13 steps, so r = 0.9^(13/13).
    let g = plan
        .nodes
        .iter()
        .find(|n| n.id == "generation[notes:C|exp_down|g1|eta2|0|s7]")
        .unwrap();
    let trace: Value = store
        .read_json(&store.out_dir(&g.key).join("trace.json"))
        .unwrap()
        .unwrap();
    assert_eq!(trace["steps"], 13);
    for t in 0..13 {
        let phi = trace["phi"][t].as_f64().unwrap();
        assert!((phi - 0.9f64.powi(t as i32)).abs() < 1e-12, "t {t}: {phi}");
    }
    let eval = plan
        .nodes
        .iter()
        .find(|n| n.id == "evaluation[notes:C|constant|g1|eta2]")
        .unwrap();
    let m: Value = store
        .read_json(&store.out_dir(&eval.key).join("metrics.json"))
        .unwrap()
        .unwrap();
    let metrics = &m["metrics"];
    for k in [
        "probe_accuracy",
        "probe_accuracy_captured",
        "pitch_hit",
        "fd",
        "mmd",
    ] {
        let v = metrics[k]["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {m}"));
        assert!(v.is_finite() && v >= 0.0, "{k} = {v}");
        assert_eq!(metrics[k]["n"], 2, "{k}");
        assert!(metrics[k]["ci_low"].as_f64().unwrap() <= metrics[k]["ci_high"].as_f64().unwrap());
    }
    assert!(metrics["probe_accuracy"]["value"].as_f64().unwrap() <= 1.0);
    // CLAP: the mean of the per-sample cosines, each equal to a direct computation.
    let clap = metrics["clap"]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(metrics["clap"]["n"], 2);
    let per: Vec<f64> = m["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["clap"].as_f64().unwrap())
        .collect();
    assert!((per.iter().sum::<f64>() / 2.0 - clap).abs() < 1e-12);
    let model = rfmx::clap_model::model::Clap::load(&clap_dir(), &Device::Cpu).unwrap();
    let prompt = model.embed_texts(&["solo piano".to_string()]).unwrap();
    for s in m["samples"].as_array().unwrap() {
        let id = format!("generation[notes:C|constant|g1|eta2|0|s{}]", s["seed"]);
        let g = plan.nodes.iter().find(|n| n.id == id).unwrap();
        let (x, _, sr) = rfmx::audio::wav::read(&store.out_dir(&g.key).join("audio.wav")).unwrap();
        let a = model.embed_audio(&x, sr, 0).unwrap();
        let want = rfmx::clap_model::model::cosine(&a, &prompt[0]);
        assert!(
            (want - s["clap"].as_f64().unwrap()).abs() < 1e-6,
            "{id}: {want} vs {s}"
        );
        assert!((-1.0..=1.0).contains(&want));
    }
    assert!(
        metrics["clap"]["model"]
            .as_str()
            .unwrap()
            .contains("tiny_clap")
    );
    assert!(
        metrics["chord_hit"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("no chords term")
    );
    assert_eq!(m["point"]["eta"], 2.0);
    // The baseline evaluation compares the baselines with themselves: FD = MMD = 0.
    let base = plan
        .nodes
        .iter()
        .find(|n| n.id == "evaluation[notes:C|none|g1|eta0]")
        .unwrap();
    let b: Value = store
        .read_json(&store.out_dir(&base.key).join("metrics.json"))
        .unwrap()
        .unwrap();
    let (bfd, sfd) = (
        b["metrics"]["fd"]["value"].as_f64().unwrap(),
        metrics["fd"]["value"].as_f64().unwrap(),
    );
    eprintln!("FD baseline vs itself {bfd}, steered eta=2 vs baseline {sfd}");
    assert!(bfd.abs() < 1e-6 * sfd, "{bfd} vs {sfd}");
    assert!(b["metrics"]["mmd"]["value"].as_f64().unwrap().abs() < 1e-9);
    let table = registry
        .stages()
        .iter()
        .find_map(|s| s.summary(&plan, &store))
        .unwrap();
    eprintln!("{table}");
    assert!(table.contains("probe_accuracy"));
    assert!(table.contains("not computed"));
    assert!(
        table.contains("clap") && !table.contains("n/a clap"),
        "{table}"
    );
    assert!(table.contains("n/a chord_hit"), "{table}");
    eprintln!("sweep test: {:.1}s", t0.elapsed().as_secs_f64());
}

/// `[steer] batch` is an executor setting: the same spec at batch 1 and batch 8 plans the same
/// keys, and every generation writes the same codes, trace and meta (docs/design.md, batched
/// generation). The absurd-η rows fail in both, alone.
#[test]
fn batch_size_changes_neither_keys_nor_outputs() {
    let registry = registry();
    let run = |batch: &str| {
        let text = SPEC
            .replace("CLAP_DIR", clap_dir().to_str().unwrap())
            .replace("samples = 2\n", &format!("samples = 2\nbatch = {batch}\n"));
        let spec = rfmx::spec::load_str("t.toml", "t", &text, &[], &[]).unwrap();
        let plan = build_plan(&spec, &registry, &rfmx::dag::NoResults).unwrap();
        let home = tempfile::tempdir().unwrap();
        let store = Store {
            root: home.path().to_path_buf(),
        };
        let st = statuses(&plan, &store, &Index::default());
        let (tx, _rx) = crossbeam_channel::unbounded();
        let summary = rfmx::exec::run_plan(&plan, &st, &store, &registry, 2, &tx);
        assert_eq!(summary.failed, 4, "batch {batch}: {summary:?}");
        let mut outs = std::collections::BTreeMap::new();
        let mut batched = 0;
        for n in plan.nodes.iter().filter(|n| n.kind == "generation") {
            let log = std::fs::read_to_string(store.log_path(&n.key)).unwrap_or_default();
            batched += log.contains("generated in a batch of") as usize;
            let dir = store.out_dir(&n.key);
            let files: Vec<Option<Vec<u8>>> = ["codes.npy", "trace.json", "meta.json"]
                .iter()
                .map(|f| std::fs::read(dir.join(f)).ok())
                .collect();
            outs.insert((n.id.clone(), n.key.clone()), files);
        }
        (outs, batched, home)
    };
    let (one, batched_one, _h1) = run("1");
    let (eight, batched_eight, _h8) = run("8");
    assert_eq!(batched_one, 0);
    assert!(batched_eight > 0, "no generation ran in a batch");
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        eight.keys().collect::<Vec<_>>()
    );
    for (k, v) in &one {
        assert_eq!(v, &eight[k], "{k:?}");
    }
}
