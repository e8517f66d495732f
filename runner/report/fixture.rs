//! The report's test result set, written by the node kinds' own output types (so that a change
//! of a producer's format changes what the report is tested on): one target under two schedules
//! × four η values with their generations (0.1 s tones) and a shared baseline, four probe layers
//! of one concept, its directions node, one missing and one failed evaluation, and a prompt that
//! needs escaping. Used by the snapshot and browser tests; `build` writes it into a fresh dir.

use std::path::Path;

use indexmap::IndexMap;

use super::ReportError;
use super::collect::{NodeEntry, NodeState};
use super::render::{Provenance, ReportInput};
use crate::dag::Label;
use crate::data::{DatasetConfig, Manifest, RendererInfo};
use crate::eval::stats::MetricEntry;
use crate::probe::{ProbeKind, RfmHyper};
use crate::spec::schema::{EtaMode, GateMode, LayerStrategy, Pooling, Schedule};
use crate::stages::activations::ActivationsIndex;
use crate::stages::contract::{ContractError, Output};
use crate::stages::directions::{DirectionLayer, DirectionScores, Judge};
use crate::stages::evaluation::{EvalPoint, Metrics, Sample};
use crate::stages::generation::{GenerationMeta, Trace, TraceTerm};
use crate::stages::probe::{ClassScores, Hyper, MulticlassScores, ProbeScores};
use crate::steer::gate::Psi;

const SR: u32 = 32_000;
const CLASSES: [&str; 3] = ["C", "D", "E"];
const LAYERS: [usize; 4] = [0, 1, 2, 3];
const QUALITY: [f64; 4] = [0.55, 0.7, 0.93, 0.81];
const ETAS: [f64; 4] = [0.15, 0.3, 0.45, 0.6];
const TARGET: &str = "notes:C";
pub const PROMPT: &str = r#"calm piano <script>alert("x")</script> & "strings""#;
const MODEL: &str = "tiny";
const MODEL_DESCRIPTION: &str =
    "tiny: embedded seeded model, RANDOM WEIGHTS (seed 0x5eed) — not a trained model";
const FINGERPRINT: &str = "b3:fixture-tiny-0000";

fn strategy() -> LayerStrategy {
    LayerStrategy::TopK { k: 2 }
}

fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

struct Builder<'a> {
    root: &'a Path,
    nodes: Vec<NodeEntry>,
}

impl Builder<'_> {
    /// Adds a node; returns its output dir when it is done.
    fn node(
        &mut self,
        id: &str,
        kind: &str,
        key: &str,
        label: Label,
        state: &str,
        seconds: f64,
    ) -> Result<std::path::PathBuf, ContractError> {
        let dir = self.root.join("nodes").join(key);
        let state = match state {
            "done" => {
                std::fs::create_dir_all(&dir).map_err(|e| ContractError {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
                NodeState::Done(dir.clone())
            }
            "missing" => NodeState::Missing,
            error => NodeState::Failed(error.to_string()),
        };
        let done = matches!(state, NodeState::Done(_));
        self.nodes.push(NodeEntry {
            id: id.into(),
            kind: kind.into(),
            key: key.into(),
            label,
            state,
            seconds: done.then_some(seconds),
            fingerprint: matches!(kind, "activations" | "generation").then(|| FINGERPRINT.into()),
            params: serde_json::Value::Null,
            cached: None,
            started: None,
        });
        Ok(dir)
    }
}

fn tone(freq: f64) -> Vec<f32> {
    let n = (SR as f64 * 0.1) as usize;
    (0..n)
        .map(|i| {
            let ramp = ((n - i) as f64 / 400.0).min(1.0);
            (0.2 * (2.0 * std::f64::consts::PI * freq * i as f64 / SR as f64).sin() * ramp) as f32
        })
        .collect()
}

fn meta(schedule: &str, eta: f64, steered: bool) -> GenerationMeta {
    GenerationMeta {
        target: if steered {
            TARGET.into()
        } else {
            "none".into()
        },
        schedule: schedule.into(),
        schedule_spec: None,
        schedule_constants: None,
        layers: steered.then(strategy),
        gate: 1.0,
        gate_mode: GateMode::PerStep,
        eta,
        eta_mode: EtaMode::Absolute,
        prompt: PROMPT.into(),
        seed: 0,
        seconds: 0.1,
        steps: 10,
        cfg: 3.0,
        top_k: 250,
        temperature: 1.0,
        pooling: Pooling::Mean,
        model: MODEL.into(),
        model_description: MODEL_DESCRIPTION.into(),
        sample_rate: SR,
        samples: tone(220.0).len(),
    }
}

fn estimate(value: f64, below: f64, above: f64) -> MetricEntry {
    MetricEntry::Estimate {
        value: Some(r4(value)),
        ci_low: Some(r4(value - below)),
        ci_high: Some(r4(value + above)),
        n: 8,
        model: None,
    }
}

/// (value, below, above) of probe accuracy and FD.
fn metrics(schedule: &str, eta: f64, accuracy: (f64, f64, f64), fd: (f64, f64, f64)) -> Metrics {
    let mut m = IndexMap::new();
    m.insert(
        "probe_accuracy".to_string(),
        estimate(accuracy.0, accuracy.1, accuracy.2),
    );
    m.insert("fd".to_string(), estimate(fd.0, fd.1, fd.2));
    m.insert(
        "clap".to_string(),
        MetricEntry::unavailable("CLAP weights not found (<none> in HF cache)"),
    );
    Metrics {
        point: EvalPoint {
            target: TARGET.into(),
            schedule: schedule.into(),
            schedule_spec: None,
            layers: (eta != 0.0).then(strategy),
            gate: 1.0,
            gate_mode: GateMode::PerStep,
            eta,
            eta_mode: EtaMode::Absolute,
            n_generations: 1,
            n_baselines: 1,
        },
        metrics: m,
        embedding: "fixture embedding".into(),
        samples: vec![Sample {
            prompt: PROMPT.into(),
            seed: 0,
            values: IndexMap::new(),
        }],
    }
}

fn point_label(schedule: &str, eta: f64) -> Label {
    Label {
        target: Some(TARGET.into()),
        schedule: Some(schedule.into()),
        gate: Some(1.0),
        eta: Some(eta),
        ..Label::default()
    }
}

fn rfm_hyper() -> Hyper {
    Hyper::Rfm {
        rfm: RfmHyper {
            reg: 1e-3,
            bandwidth: 10.0,
            q: 1.0,
            centre: false,
            iterations: 5,
        },
        best_iter: Some(2),
    }
}

fn write_all(b: &mut Builder<'_>) -> Result<(), ContractError> {
    let concept = Label {
        concept: Some("notes".into()),
        ..Label::default()
    };
    let renderer = RendererInfo::Soundfont {
        path: "/usr/share/sounds/sf2/TimGM6mb.sf2".into(),
        blake3: "ab12cd34".into(),
    };
    let d = b.node(
        "dataset[notes]",
        "dataset",
        "k-dataset",
        concept.clone(),
        "done",
        1.5,
    )?;
    Manifest {
        config: DatasetConfig::new("notes"),
        concept: crate::data::Concept::Notes,
        renderer: renderer.clone(),
        native_rate: 44_100,
        model_rate: SR,
        resampler: crate::data::store::RESAMPLER.into(),
        enumerated: 12,
        rendered: 12,
        silent_dropped: 0,
        kept: 12,
        per_class: CLASSES.iter().map(|c| (c.to_string(), 4)).collect(),
    }
    .write(&d)?;
    let pooled = Label {
        pooling: Some("mean".into()),
        ..concept.clone()
    };
    let d = b.node(
        "activations[notes,mean]",
        "activations",
        "k-activations",
        pooled.clone(),
        "done",
        3.25,
    )?;
    ActivationsIndex {
        concept: "notes".into(),
        n: 12,
        hidden: 16,
        layers: LAYERS.to_vec(),
        pooling: "mean".into(),
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        labels: (0..12).map(|i| CLASSES[i % 3].to_string()).collect(),
        programs: vec![0; 12],
        model: MODEL_DESCRIPTION.into(),
        model_fingerprint: FINGERPRINT.into(),
        renderer,
    }
    .write(&d)?;
    let hyper = rfm_hyper();
    for (&layer, &q) in LAYERS.iter().zip(&QUALITY) {
        let d = b.node(
            &format!("probe[notes,L{layer},rfm]"),
            "probe",
            &format!("k-probe-{layer}"),
            Label {
                layer: Some(layer),
                probe: Some("rfm".into()),
                ..pooled.clone()
            },
            "done",
            0.5 + layer as f64 / 10.0,
        )?;
        let classes = CLASSES
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let i = i as f64;
                let s = class_scores(c, [0.02, 0.03, 0.04, 0.05].map(|d| r4(q - d * i)), &hyper);
                (c.to_string(), s)
            })
            .collect();
        let right = (4.0 * q).round() as usize;
        let confusion = (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| {
                        if i == j {
                            right
                        } else {
                            (4 - right) / 2 + usize::from(j == (i + 1) % 3 && (4 - right) % 2 == 1)
                        }
                    })
                    .collect()
            })
            .collect();
        ProbeScores {
            concept: "notes".into(),
            layer,
            kind: ProbeKind::Rfm,
            split_seed: 7,
            hidden: 16,
            classes,
            multiclass: MulticlassScores {
                val_acc: Some(r4(q - 0.04)),
                test_acc: Some(r4(q - 0.06)),
                val_auc: Some(r4(q - 0.01)),
                test_auc: Some(r4(q - 0.02)),
                confusion,
                classes: CLASSES.iter().map(|c| c.to_string()).collect(),
                hyper: hyper.clone(),
                dir: "multiclass".into(),
            },
            regression: None,
        }
        .write(&d)?;
    }
    let d = b.node(
        "directions[notes:C]",
        "directions",
        "k-directions",
        Label {
            class: Some("C".into()),
            probe: Some("rfm".into()),
            ..concept.clone()
        },
        "done",
        0.1,
    )?;
    DirectionScores {
        concept: "notes".into(),
        class: "C".into(),
        kind: "rfm".into(),
        layers: LAYERS
            .iter()
            .zip(&QUALITY)
            .map(|(&layer, &q)| DirectionLayer {
                layer,
                val_auc: Some(q),
                test_auc: Some(r4(q - 0.01)),
                // Layer 0's probe found nothing: a degenerate layer, marked and given weight 0.
                k: usize::from(layer != 0),
                degenerate: (layer == 0)
                    .then(|| "zero or non-finite direction (the probe found no signal)".into()),
            })
            .collect(),
        degenerate_layers: vec![0],
        judge_layer: 2,
        judge: Judge {
            layer: 2,
            val_acc: Some(0.89),
            test_acc: Some(0.87),
            probe: "probe[notes,L2,rfm]".into(),
        },
    }
    .write(&d)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: crate::audio::AudioError| ContractError {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    let base_label = Label {
        eta: Some(0.0),
        prompt: Some(0),
        seed: Some(0),
        ..Label::default()
    };
    let d = b.node(
        "generation[baseline|none|g1|eta0|0|s0]",
        "generation",
        "k-gen-base",
        base_label,
        "done",
        2.0,
    )?;
    let wav = d.join("audio.wav");
    crate::audio::wav::write_f32(&wav, &tone(220.0), 1, SR).map_err(io(&wav))?;
    meta("none", 0.0, false).write(&d)?;
    let d = b.node(
        &format!("evaluation[{TARGET}|none|g1|eta0]"),
        "evaluation",
        "k-eval-base",
        point_label("none", 0.0),
        "done",
        0.2,
    )?;
    metrics("none", 0.0, (0.12, 0.07, 0.08), (0.09, 0.02, 0.02)).write(&d)?;
    for (si, schedule) in ["constant", "linear_down"].iter().enumerate() {
        for (ei, &eta) in ETAS.iter().enumerate() {
            let point = format!("{TARGET}|{schedule}|g1|eta{eta}");
            let key = format!("k-eval-{schedule}-{ei}");
            let label = point_label(schedule, eta);
            if si == 1 && ei == 3 {
                b.node(
                    &format!("evaluation[{point}]"),
                    "evaluation",
                    &key,
                    label,
                    "missing",
                    0.0,
                )?;
                continue;
            }
            if si == 1 && ei == 2 {
                let error = "judge probe missing: <probe[notes,L2,rfm]> not found";
                b.node(
                    &format!("evaluation[{point}]"),
                    "evaluation",
                    &key,
                    label,
                    error,
                    0.0,
                )?;
                continue;
            }
            let g = b.node(
                &format!("generation[{point}|0|s0]"),
                "generation",
                &format!("k-gen-{schedule}-{ei}"),
                Label {
                    prompt: Some(0),
                    seed: Some(0),
                    ..label.clone()
                },
                "done",
                2.0 + ei as f64 / 4.0,
            )?;
            let wav = g.join("audio.wav");
            crate::audio::wav::write_f32(&wav, &tone(261.63 * (1.0 + 0.01 * ei as f64)), 1, SR)
                .map_err(io(&wav))?;
            let mut m = meta(schedule, eta, true);
            m.schedule_spec = Some(if si == 0 {
                Schedule::Constant
            } else {
                Schedule::LinearDown
            });
            m.write(&g)?;
            let steps = 10;
            let phi: Vec<f64> = (0..steps)
                .map(|t| {
                    let x = t as f64 / (steps - 1) as f64;
                    r4(if si == 0 { 1.0 } else { 1.0 - x })
                })
                .collect();
            let eta_lt: Vec<Vec<f64>> = phi
                .iter()
                .map(|p| {
                    LAYERS
                        .iter()
                        .map(|&l| if l == 2 { r4(eta * p) } else { 0.0 })
                        .collect()
                })
                .collect();
            Trace {
                steps,
                layers: LAYERS.len(),
                eta_lt: eta_lt.clone(),
                phi: phi.clone(),
                psi: Psi::PerStep(vec![1; steps]),
                terms: vec![TraceTerm {
                    target: TARGET.into(),
                    eta,
                    weights: vec![0.0, 0.0, 1.0, 0.0],
                    eta_lt,
                    phi,
                    psi: Psi::PerStep(vec![1; steps]),
                    feedback_scores: None,
                }],
            }
            .write(&g)?;
            let acc = 0.2 + 0.9 * eta - 0.1 * si as f64;
            let e = b.node(
                &format!("evaluation[{point}]"),
                "evaluation",
                &key,
                label,
                "done",
                0.3,
            )?;
            let fd = 0.1 + 0.12 * eta;
            metrics(schedule, eta, (acc, 0.08, 0.07), (fd, 0.02, 0.03)).write(&e)?;
        }
    }
    Ok(())
}

/// The notes_sweep spec's shape (specs/notes_sweep.toml): 12 targets in the spec's order (C first),
/// 3 schedules × 4 steered η values, 4 samples of one prompt, 5 metrics, 4 layers.
pub const SWEEP_TARGETS: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];
const SWEEP_SCHEDULES: [(&str, Schedule); 3] = [
    ("constant", Schedule::Constant),
    ("linear_up", Schedule::LinearUp),
    ("exp_down", Schedule::ExpDown),
];
const SWEEP_SAMPLES: u64 = 4;

/// A sweep clip: a note with three harmonics over seeded broadband noise. The embedded model's
/// generations (random weights) are noise-like, the hardest input for a perceptual codec, so the
/// report size measured on these clips is not flattered by pure tones (docs/design.md §7).
fn sweep_tone(freq: f64, seconds: f64, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let n = (SR as f64 * seconds) as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(freq.to_bits() ^ seed);
    let wobble = 1.0 + 0.002 * seed as f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / SR as f64;
            let note: f64 = [(1.0, 0.2), (2.0, 0.1), (3.0, 0.05)]
                .iter()
                .map(|(h, a)| a * (std::f64::consts::TAU * freq * wobble * h * t).sin())
                .sum();
            (note + NOISE * rng.random_range(-1.0..1.0)) as f32
        })
        .collect()
}

/// Peak of the sweep clips' uniform noise (rms ≈ 0.29): they then encode at about the bitrate of
/// the embedded model's own 2-second clips (docs/design.md §7).
const NOISE: f64 = 0.5;

fn write_sweep(b: &mut Builder<'_>, seconds: f64) -> Result<(), ContractError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: crate::audio::AudioError| ContractError {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    let layers = [0usize, 1, 2, 3];
    for &layer in &layers {
        let d = b.node(
            &format!("probe[notes,L{layer},rfm]"),
            "probe",
            &format!("k-probe-{layer}"),
            Label {
                concept: Some("notes".into()),
                layer: Some(layer),
                pooling: Some("mean".into()),
                probe: Some("rfm".into()),
                ..Label::default()
            },
            "done",
            0.5,
        )?;
        let hyper = rfm_hyper();
        let classes = SWEEP_TARGETS
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let q = r4(0.6 + 0.03 * ((i + layer) % 4) as f64);
                (c.to_string(), class_scores(c, [q; 4], &hyper))
            })
            .collect();
        let n = SWEEP_TARGETS.len();
        ProbeScores {
            concept: "notes".into(),
            layer,
            kind: ProbeKind::Rfm,
            split_seed: 7,
            hidden: 16,
            classes,
            multiclass: MulticlassScores {
                val_acc: Some(0.5),
                test_acc: Some(0.45),
                val_auc: Some(0.7),
                test_auc: Some(0.68),
                confusion: (0..n)
                    .map(|i| {
                        (0..n)
                            .map(|j| if i == j { 5 } else { (i + j) % 2 })
                            .collect()
                    })
                    .collect(),
                classes: SWEEP_TARGETS.iter().map(|c| c.to_string()).collect(),
                hyper,
                dir: "multiclass".into(),
            },
            regression: None,
        }
        .write(&d)?;
    }
    // Unsteered generations, shared by every target.
    for seed in 0..SWEEP_SAMPLES {
        let d = b.node(
            &format!("generation[baseline|none|g1|eta0|0|s{seed}]"),
            "generation",
            &format!("k-gen-base-{seed}"),
            Label {
                eta: Some(0.0),
                prompt: Some(0),
                seed: Some(seed),
                ..Label::default()
            },
            "done",
            1.0,
        )?;
        let wav = d.join("audio.wav");
        crate::audio::wav::write_f32(&wav, &sweep_tone(220.0, seconds, seed), 1, SR)
            .map_err(io(&wav))?;
        let mut m = meta("none", 0.0, false);
        m.prompt = "solo piano".into();
        m.seed = seed;
        m.seconds = seconds;
        m.write(&d)?;
    }
    for (ti, class) in SWEEP_TARGETS.iter().enumerate() {
        let target = format!("notes:{class}");
        let d = b.node(
            &format!("directions[{target}]"),
            "directions",
            &format!("k-directions-{ti}"),
            Label {
                concept: Some("notes".into()),
                class: Some(class.to_string()),
                probe: Some("rfm".into()),
                ..Label::default()
            },
            "done",
            0.1,
        )?;
        DirectionScores {
            concept: "notes".into(),
            class: class.to_string(),
            kind: "rfm".into(),
            layers: layers
                .iter()
                .map(|&layer| DirectionLayer {
                    layer,
                    // A different best pair of layers per target, as real probes give.
                    val_auc: Some(r4(0.6 + 0.1 * ((ti + layer) % 4) as f64)),
                    test_auc: Some(0.7),
                    k: 1,
                    degenerate: None,
                })
                .collect(),
            degenerate_layers: vec![],
            judge_layer: 2,
            judge: Judge {
                layer: 2,
                val_acc: Some(0.5),
                test_acc: Some(0.45),
                probe: "probe[notes,L2,rfm]".into(),
            },
        }
        .write(&d)?;
        let label = |schedule: &str, eta: f64| Label {
            target: Some(target.clone()),
            schedule: Some(schedule.into()),
            gate: Some(1.0),
            eta: Some(eta),
            ..Label::default()
        };
        let eval =
            |b: &mut Builder<'_>, schedule: &str, spec: Option<Schedule>, eta: f64, si: f64| {
                let e = b.node(
                    &format!("evaluation[{target}|{schedule}|g1|eta{eta}]"),
                    "evaluation",
                    &format!("k-eval-{ti}-{schedule}-{eta}"),
                    label(schedule, eta),
                    "done",
                    0.2,
                )?;
                // Each schedule its own curve (so that lines that coincide would show).
                let acc = 0.1 + eta * (1.0 - 0.25 * si);
                let mut m = metrics(
                    schedule,
                    eta,
                    (acc, 0.05, 0.05),
                    (0.1 + eta / (2.0 + si), 0.02, 0.02),
                );
                m.point.target = target.clone();
                m.point.schedule_spec = spec;
                m.point.layers = (eta != 0.0).then_some(LayerStrategy::Exponential {
                    w0: 1.0,
                    kappa: 0.95,
                });
                m.metrics
                    .insert("pitch_hit".into(), estimate(0.2 + eta / 2.0, 0.1, 0.1));
                m.metrics
                    .insert("mmd".into(), estimate(0.01 + eta / 10.0, 0.005, 0.005));
                m.metrics.insert(
                    "probe_accuracy_captured".into(),
                    estimate(0.1 + eta * 0.8, 0.05, 0.05),
                );
                m.write(&e)
            };
        eval(b, "none", None, 0.0, 0.0)?;
        for (si, (schedule, spec)) in SWEEP_SCHEDULES.iter().enumerate() {
            for &eta in &ETAS {
                for seed in 0..SWEEP_SAMPLES {
                    let g = b.node(
                        &format!("generation[{target}|{schedule}|g1|eta{eta}|0|s{seed}]"),
                        "generation",
                        &format!("k-gen-{ti}-{schedule}-{eta}-{seed}"),
                        Label {
                            prompt: Some(0),
                            seed: Some(seed),
                            ..label(schedule, eta)
                        },
                        "done",
                        1.0,
                    )?;
                    let wav = g.join("audio.wav");
                    let hz = 261.63
                        * 2f64.powf(ti as f64 / 12.0)
                        * (1.0 + eta / 10.0 + si as f64 / 300.0);
                    crate::audio::wav::write_f32(&wav, &sweep_tone(hz, seconds, seed), 1, SR)
                        .map_err(io(&wav))?;
                    let mut m = meta(schedule, eta, true);
                    m.target = target.clone();
                    m.prompt = "solo piano".into();
                    m.seed = seed;
                    m.seconds = seconds;
                    m.schedule_spec = Some(spec.clone());
                    m.layers = Some(LayerStrategy::Exponential {
                        w0: 1.0,
                        kappa: 0.95,
                    });
                    m.write(&g)?;
                }
                eval(b, schedule, Some(spec.clone()), eta, si as f64)?;
            }
        }
    }
    Ok(())
}

/// A result set of notes_sweep's shape (755 nodes' worth of results: 580 clips of `seconds` each,
/// 156 evaluations, 12 directions, 4 probes), written by the node kinds' writers, as a report
/// input with the spec's metrics and layer strategy.
pub fn build_sweep(
    dir: &Path,
    provenance: Provenance,
    seconds: f64,
) -> Result<ReportInput, ReportError> {
    let mut b = Builder {
        root: dir,
        nodes: Vec::new(),
    };
    write_sweep(&mut b, seconds).map_err(|e| ReportError::Params(e.to_string()))?;
    let params = super::ReportParams {
        experiment: "notes_sweep".into(),
        spec: "[experiment]\nname = \"notes_sweep\"\n".into(),
        model: Some(super::ModelParams {
            name: "tiny".into(),
            path: None,
            dtype: Default::default(),
        }),
        layers: serde_json::to_value(LayerStrategy::Exponential {
            w0: 1.0,
            kappa: 0.95,
        })
        .ok(),
        metrics: ["probe_accuracy", "pitch_hit", "fd", "mmd", "clap"]
            .map(String::from)
            .to_vec(),
        png: false,
        audio: Default::default(),
    };
    Ok(params.input(b.nodes, provenance))
}

/// Writes the result set into `dir` and returns it as a report input; provenance is given so that
/// the rendering is reproducible.
pub fn build(dir: &Path, provenance: Provenance) -> Result<ReportInput, ReportError> {
    let mut b = Builder {
        root: dir,
        nodes: Vec::new(),
    };
    write_all(&mut b).map_err(|e| ReportError::Params(e.to_string()))?;
    let params = super::ReportParams {
        experiment: "fixture<&>".into(),
        spec: format!(
            "[experiment]\nname = \"fixture<&>\"\n\n[model]\nname = \"tiny\"\n\n[steer]\nprompts = [{}]\neta = {ETAS:?}\n",
            serde_json::to_string(PROMPT).unwrap_or_default()
        ),
        model: Some(super::ModelParams {
            name: "tiny".into(),
            path: None,
            dtype: Default::default(),
        }),
        layers: serde_json::to_value(strategy()).ok(),
        metrics: vec!["probe_accuracy".into(), "fd".into(), "clap".into()],
        png: false,
        audio: Default::default(),
    };
    Ok(params.input(b.nodes, provenance))
}

/// One class's probe scores: [val AUC, test AUC, val accuracy, test accuracy], 8 rows, one
/// direction.
fn class_scores(
    class: &str,
    [val_auc, test_auc, val_acc, test_acc]: [f64; 4],
    hyper: &Hyper,
) -> ClassScores {
    ClassScores {
        val_auc: Some(val_auc),
        test_auc: Some(test_auc),
        val_acc: Some(val_acc),
        test_acc: Some(test_acc),
        n: 8,
        hyper: hyper.clone(),
        dir: format!("class/{class}"),
        k: 1,
        direction_correlations: vec![0.5],
    }
}
