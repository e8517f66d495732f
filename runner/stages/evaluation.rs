//! The `evaluation` node kind: one per sweep point (target × schedule × gate × η), gathering the
//! point's generations (every prompt × sample seed) and their unsteered baselines. Planned by the
//! steering stage right after the generations (`crate::steer::stage`), summarised in a Table-2-style
//! table after `rfmx run`.
//!
//! `metrics.json` = {point:{target, schedule, gate, gate_mode, eta, eta_mode, layers},
//! metrics:{<name>: {value, ci_low, ci_high, n} | {unavailable: "<reason>"}}, embedding, samples}.
//! - `probe_accuracy`: the concept's multiclass probe (the judge, at the directions node's
//!   `judge_layer`) applied to the audio-level features (decode → re-encode → pooled) → fraction
//!   labelled as the target class. With several terms: the mean over terms, and one entry per term
//!   (`probe_accuracy:<concept>:<class>`). `probe_accuracy_captured` is the same probe on the
//!   activations captured during generation (what the steering acted on).
//! - `pitch_hit` / `chord_hit` / `tempo_error`: DSP judges (`crate::eval::judges`) for a notes /
//!   chords / tempos term of the target; unavailable when the target has none.
//! - `fd` / `mmd`: between the steered and the baseline audio-level features at the first term's
//!   judge layer (the last layer when there is none).
//! - `clap`: CLAP cosine of each generation's audio with its own prompt (`crate::eval::clap`);
//!   unavailable, with where it looked and the download command, when there is no snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::dag::store::Store;
use crate::dag::{NodeCtx, NodeError, NodeKind, Plan};
use crate::probe::{Features, ProbeFit};
use crate::spec::schema::{Concept, EtaMode, GateMode, LayerStrategy, Metric, Schedule, Target};
use crate::stages::contract::Output;
use crate::stages::directions::DirectionScores;
use crate::stages::probe::ProbeScores;

use crate::eval::judges;
use crate::eval::stats::{self, Estimate, MetricEntry};
use crate::stages::generation::GenerationMeta;
use indexmap::IndexMap;

pub const KIND: &str = "evaluation";

/// Input roles of an evaluation node: the point's generations, their unsteered baselines (both
/// `<role>:<prompt index>:<seed>`), and the probe nodes of the target's concepts
/// (`probe:<concept>:L<layer>`, read by their labels). Directions come as `dir:<concept>:<class>`.
pub const GEN_ROLE: &str = "gen";
pub const BASE_ROLE: &str = "base";
pub const PROBE_ROLE: &str = "probe";

/// Bootstrap resamples for means and for the two-sample distances.
pub const BOOT_MEAN: usize = 1000;
pub const BOOT_TWO_SAMPLE: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalParams {
    pub target: String,
    pub schedule: Option<Schedule>,
    pub layers: Option<LayerStrategy>,
    pub gate: f64,
    pub gate_mode: GateMode,
    pub eta: f64,
    pub eta_mode: EtaMode,
    pub metrics: Vec<Metric>,
    /// The probe kind whose judge is used (the spec's `[probe] kind`).
    pub probe_kind: Option<String>,
    pub seed: u64,
    /// The CLAP snapshot, resolved at plan time (`crate::eval::clap::plan_param`); absent unless
    /// the spec asks for `clap`, so other evaluation keys do not depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clap: Option<Value>,
}

/// `evaluation[<target>|<schedule>|g<gate>|eta<eta>]`.
pub fn evaluation_id(target: &Target, schedule: &str, gate: f64, eta: f64) -> String {
    format!(
        "evaluation[{target}|{schedule}|g{}|eta{}]",
        crate::stages::generation::fmt_num(gate),
        crate::stages::generation::fmt_num(eta)
    )
}

pub fn metric_name(m: Metric) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{m:?}"))
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Input(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `layer.<l>` of a per-sample safetensors file as f64.
fn read_layer(path: &Path, layer: usize) -> Result<Vec<f64>, EvalError> {
    let ts = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| read_err(path, e))?;
    let t = ts
        .get(&format!("layer.{layer}"))
        .ok_or_else(|| read_err(path, format!("no tensor layer.{layer}")))?;
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(|e| read_err(path, e))
}

fn layer_count(path: &Path) -> Result<usize, EvalError> {
    let ts = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| read_err(path, e))?;
    Ok(ts.keys().filter(|k| k.starts_with("layer.")).count())
}

fn unavailable(reason: impl Into<String>) -> MetricEntry {
    MetricEntry::unavailable(reason)
}

/// `metrics.json` of an evaluation node: one sweep point's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub point: EvalPoint,
    /// In the order the spec lists the metrics (per-term and `_captured` entries beside theirs).
    pub metrics: IndexMap<String, MetricEntry>,
    /// What the FD/MMD embeddings are.
    pub embedding: String,
    /// Per generation: its prompt and seed and its per-sample values.
    pub samples: Vec<Sample>,
}

impl Output for Metrics {
    const FILE: &'static str = "metrics.json";
}

/// The sweep point an evaluation node scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub target: String,
    /// The schedule's name, `none` for the unsteered point.
    pub schedule: String,
    pub schedule_spec: Option<Schedule>,
    pub layers: Option<LayerStrategy>,
    pub gate: f64,
    pub gate_mode: GateMode,
    pub eta: f64,
    pub eta_mode: EtaMode,
    pub n_generations: usize,
    pub n_baselines: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub prompt: String,
    pub seed: u64,
    /// Metric (or judge detail, e.g. `dominant_pitch_class`) -> this generation's value.
    #[serde(flatten)]
    pub values: IndexMap<String, Value>,
}

/// What the node needs: dirs of the point's generations, baselines, directions and probe nodes.
pub struct EvalInputs {
    pub generations: Vec<PathBuf>,
    pub baselines: Vec<PathBuf>,
    /// Per term, its directions node.
    pub directions: Vec<PathBuf>,
    /// `(concept, layer)` → probe node dir.
    pub probes: BTreeMap<(String, usize), PathBuf>,
    /// The CLAP snapshot directory (the node's `clap_path` hint).
    pub clap_path: Option<PathBuf>,
}

/// A term's multiclass judge: its fit, the target class's output column and its layer.
pub struct Judge {
    pub fit: ProbeFit,
    pub class: usize,
    pub layer: usize,
}

/// Loads the multiclass judge of a term: the directions node's `judge_layer`, that layer's probe
/// node, `multiclass/` and the class index from its `scores.json`. Shared by the evaluation and
/// by feedback-scheduled generations (docs/design.md §3).
pub fn judge_of(
    directions: &Path,
    probes: &BTreeMap<(String, usize), PathBuf>,
    concept: Concept,
    class: &str,
) -> Result<Judge, String> {
    let (layer, probe) = judge_probe(directions, probes, concept)?;
    let classes = ProbeScores::read(probe)
        .map_err(|e| e.to_string())?
        .multiclass
        .classes;
    let class_idx = classes
        .iter()
        .position(|c| c == class)
        .ok_or_else(|| format!("class {class} is not among the judge's classes {classes:?}"))?;
    let fit = ProbeFit::load(&probe.join("multiclass")).map_err(|e| e.to_string())?;
    Ok(Judge {
        fit,
        class: class_idx,
        layer,
    })
}

/// The judge layer a term's directions node names, and that layer's probe node dir.
pub fn judge_probe<'p>(
    directions: &Path,
    probes: &'p BTreeMap<(String, usize), PathBuf>,
    concept: Concept,
) -> Result<(usize, &'p PathBuf), String> {
    let layer = DirectionScores::read(directions)
        .map_err(|e| e.to_string())?
        .judge_layer;
    probes
        .get(&(concept.name().to_string(), layer))
        .map(|p| (layer, p))
        .ok_or_else(|| format!("no probe node for {concept} at the judge layer {layer}"))
}

/// The probe inputs of a node (`probe:<concept>:L<layer>`, read by their labels).
pub fn probe_inputs(ctx: &NodeCtx<'_>) -> Result<BTreeMap<(String, usize), PathBuf>, String> {
    let mut probes = BTreeMap::new();
    for i in ctx.inputs_in(PROBE_ROLE) {
        let (Some(concept), Some(layer)) = (&i.label.concept, i.label.layer) else {
            return Err(format!("probe input {} has no concept/layer label", i.id));
        };
        probes.insert((concept.clone(), layer), i.dir.clone());
    }
    Ok(probes)
}

fn judge_hits(judge: &Judge, dirs: &[PathBuf], file: &str) -> Result<Vec<f64>, String> {
    let mut rows = Vec::new();
    for d in dirs {
        rows.push(read_layer(&d.join(file), judge.layer).map_err(|e| e.to_string())?);
    }
    let d = rows.first().map(|r| r.len()).unwrap_or(0);
    let data: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let x = Features::new(rows.len(), d, data).map_err(|e| e.to_string())?;
    let pred = judge.fit.predict_classes(&x).map_err(|e| e.to_string())?;
    Ok(pred
        .iter()
        .map(|&p| f64::from(u8::from(p == judge.class)))
        .collect())
}

fn est(e: Estimate) -> MetricEntry {
    e.entry()
}

/// Reads a generation's mono audio.
fn audio(dir: &Path) -> Result<(Vec<f32>, u32), String> {
    let (x, ch, sr) = crate::audio::wav::read(&dir.join("audio.wav")).map_err(|e| e.to_string())?;
    if ch != 1 {
        return Err(format!("{} is not mono", dir.join("audio.wav").display()));
    }
    Ok((x, sr))
}

/// Computes `metrics.json` for one sweep point.
pub fn evaluate(p: &EvalParams, inputs: &EvalInputs) -> Result<Metrics, NodeError> {
    let target: Target = p.target.parse().map_err(EvalError::Input)?;
    if inputs.generations.is_empty() {
        return Err(EvalError::Input("no generations to evaluate".into()).into());
    }
    let mut metrics: IndexMap<String, MetricEntry> = IndexMap::new();
    let mut judges_by_term: Vec<Result<Judge, String>> = Vec::new();
    for (k, term) in target.terms.iter().enumerate() {
        judges_by_term.push(if inputs.directions.len() > k {
            judge_of(
                &inputs.directions[k],
                &inputs.probes,
                term.concept,
                &term.class,
            )
        } else {
            Err("no directions node for this term".into())
        });
    }
    let n_layers = layer_count(&inputs.generations[0].join("features.safetensors"))?;
    let embed_layer = judges_by_term
        .first()
        .and_then(|j| j.as_ref().ok())
        .map(|j| j.layer)
        .unwrap_or(n_layers.saturating_sub(1));
    let mut per_sample: Vec<Sample> = inputs
        .generations
        .iter()
        .map(|d| {
            let meta = GenerationMeta::read(d)?;
            Ok(Sample {
                prompt: meta.prompt,
                seed: meta.seed,
                values: IndexMap::new(),
            })
        })
        .collect::<Result<_, crate::stages::contract::ContractError>>()?;
    for &metric in &p.metrics {
        let name = metric_name(metric);
        match metric {
            Metric::ProbeAccuracy => {
                let mut means = Vec::new();
                let mut captured = Vec::new();
                let mut reasons = Vec::new();
                for (term, judge) in target.terms.iter().zip(&judges_by_term) {
                    let label = format!("{name}:{}:{}", term.concept, term.class);
                    match judge.as_ref().map_err(Clone::clone).and_then(|j| {
                        Ok((
                            judge_hits(j, &inputs.generations, "features.safetensors")?,
                            judge_hits(j, &inputs.generations, "captured.safetensors")?,
                        ))
                    }) {
                        Ok((hits, cap)) => {
                            for (s, h) in per_sample.iter_mut().zip(&hits) {
                                s.values.insert(label.clone(), json!(h));
                            }
                            if target.terms.len() > 1 {
                                metrics.insert(
                                    label.clone(),
                                    est(stats::bootstrap_mean(&hits, BOOT_MEAN, p.seed)),
                                );
                            }
                            means.push(hits);
                            captured.push(cap);
                        }
                        Err(r) => reasons.push(format!("{label}: {r}")),
                    }
                }
                if !reasons.is_empty() {
                    metrics.insert(name.clone(), unavailable(reasons.join("; ")));
                    continue;
                }
                let avg = |v: &[Vec<f64>]| -> Vec<f64> {
                    (0..v[0].len())
                        .map(|i| v.iter().map(|h| h[i]).sum::<f64>() / v.len() as f64)
                        .collect()
                };
                metrics.insert(
                    name.clone(),
                    est(stats::bootstrap_mean(&avg(&means), BOOT_MEAN, p.seed)),
                );
                metrics.insert(
                    format!("{name}_captured"),
                    est(stats::bootstrap_mean(&avg(&captured), BOOT_MEAN, p.seed)),
                );
            }
            Metric::PitchHit | Metric::ChordHit | Metric::TempoError => {
                let (concept, what) = match metric {
                    Metric::PitchHit => (Concept::Notes, "notes"),
                    Metric::ChordHit => (Concept::Chords, "chords"),
                    _ => (Concept::Tempos, "tempos"),
                };
                let Some(term) = target.terms.iter().find(|t| t.concept == concept) else {
                    metrics.insert(
                        name.clone(),
                        unavailable(format!("the target `{target}` has no {what} term")),
                    );
                    continue;
                };
                let mut values = Vec::new();
                let mut reason = None;
                for (d, s) in inputs.generations.iter().zip(per_sample.iter_mut()) {
                    let (x, sr) = audio(d)?;
                    let v = match metric {
                        Metric::PitchHit => match judges::pitch_class(&term.class) {
                            Some(pc) => {
                                if let Some(got) = judges::dominant_pitch_class(&x, sr) {
                                    s.values.insert("dominant_pitch_class".into(), json!(got));
                                }
                                Some(f64::from(u8::from(judges::pitch_hit(&x, sr, pc))))
                            }
                            None => {
                                reason = Some(format!("`{}` is not a note name", term.class));
                                None
                            }
                        },
                        Metric::ChordHit => match judges::triad(&term.class) {
                            Some(q) => Some(f64::from(u8::from(judges::chord_hit(&x, sr, q)))),
                            None => {
                                reason = Some(format!("`{}` is not a triad quality", term.class));
                                None
                            }
                        },
                        _ => match term.class.parse::<f64>() {
                            Ok(bpm) => judges::tempo_error(&x, sr, bpm),
                            Err(_) => {
                                reason = Some(format!("`{}` is not a BPM value", term.class));
                                None
                            }
                        },
                    };
                    if let Some(v) = v {
                        s.values.insert(name.clone(), json!(v));
                        values.push(v);
                    }
                }
                if let Some(r) = reason {
                    metrics.insert(name.clone(), unavailable(r));
                } else if values.is_empty() {
                    metrics.insert(
                        name.clone(),
                        unavailable("no sample gave an estimate (fewer than 3 onsets)"),
                    );
                } else {
                    metrics.insert(
                        name.clone(),
                        est(stats::bootstrap_mean(&values, BOOT_MEAN, p.seed)),
                    );
                }
            }
            Metric::Fd | Metric::Mmd => {
                let load = |dirs: &[PathBuf]| -> Result<Vec<Vec<f64>>, EvalError> {
                    dirs.iter()
                        .map(|d| read_layer(&d.join("features.safetensors"), embed_layer))
                        .collect()
                };
                let (x, y) = (load(&inputs.generations)?, load(&inputs.baselines)?);
                let f = if metric == Metric::Fd {
                    stats::frechet
                } else {
                    stats::mmd2
                };
                metrics.insert(
                    name.clone(),
                    match stats::bootstrap_two_sample(&x, &y, f, BOOT_TWO_SAMPLE, p.seed) {
                        Ok(e) => est(e),
                        Err(e) => unavailable(e.to_string()),
                    },
                );
            }
            Metric::Clap => {
                let mut audios = Vec::new();
                for d in &inputs.generations {
                    audios.push(audio(d)?);
                }
                let prompts: Vec<String> = per_sample.iter().map(|s| s.prompt.clone()).collect();
                let clips: Vec<crate::eval::clap::Clip<'_>> = audios
                    .iter()
                    .zip(&prompts)
                    .map(|((x, sr), prompt)| crate::eval::clap::Clip {
                        samples: x,
                        sample_rate: *sr,
                        prompt,
                    })
                    .collect();
                let (value, cosines) = crate::eval::clap::metric(
                    p.clap.as_ref(),
                    inputs.clap_path.clone(),
                    &clips,
                    BOOT_MEAN,
                    p.seed,
                );
                for (s, c) in per_sample.iter_mut().zip(&cosines) {
                    s.values.insert(name.clone(), json!(c));
                }
                metrics.insert(name.clone(), value);
            }
        }
    }
    Ok(Metrics {
        point: EvalPoint {
            target: p.target.clone(),
            schedule: p
                .schedule
                .as_ref()
                .map(|s| s.name())
                .unwrap_or("none")
                .into(),
            schedule_spec: p.schedule.clone(),
            layers: p.layers.clone(),
            gate: p.gate,
            gate_mode: p.gate_mode,
            eta: p.eta,
            eta_mode: p.eta_mode,
            n_generations: inputs.generations.len(),
            n_baselines: inputs.baselines.len(),
        },
        metrics,
        embedding: format!(
            "decoder layer {embed_layer} block output, pooled, of the decoded and re-encoded audio \
             (teacher-forced); FD/MMD compare steered vs unsteered generations of the same prompts and seeds"
        ),
        samples: per_sample,
    })
}

pub struct EvaluationKind;

impl NodeKind for EvaluationKind {
    fn name(&self) -> &'static str {
        KIND
    }
    fn version(&self) -> u32 {
        1
    }
    /// Reading features and DSP judges take one core; a CLAP model takes the machine.
    fn resources(&self, node: &crate::dag::PlannedNode) -> crate::dag::Resources {
        let clap = node.params["metrics"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "clap"));
        if clap {
            crate::dag::Resources::heavy(None)
        } else {
            crate::dag::Resources::default()
        }
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: EvalParams = ctx.params_as()?;
        let mut inputs = EvalInputs {
            generations: Vec::new(),
            baselines: Vec::new(),
            directions: Vec::new(),
            probes: BTreeMap::new(),
            clap_path: ctx
                .hints
                .get("clap_path")
                .and_then(Value::as_str)
                .map(PathBuf::from),
        };
        inputs.generations = ctx.inputs_in(GEN_ROLE).map(|i| i.dir.clone()).collect();
        inputs.baselines = ctx.inputs_in(BASE_ROLE).map(|i| i.dir.clone()).collect();
        inputs.directions = ctx
            .inputs_in(crate::stages::generation::DIR_ROLE)
            .map(|i| i.dir.clone())
            .collect();
        inputs.probes = probe_inputs(ctx)?;
        ctx.progress(0, 1, "evaluating");
        evaluate(&p, &inputs)?.write(ctx.out_dir)?;
        ctx.progress(1, 1, "done");
        Ok(())
    }
}

fn cell(v: Option<&MetricEntry>) -> String {
    match v {
        Some(MetricEntry::Estimate {
            value: Some(x),
            ci_low,
            ci_high,
            ..
        }) => match (ci_low, ci_high) {
            (Some(lo), Some(hi)) => format!("{x:.3} [{lo:.3},{hi:.3}]"),
            _ => format!("{x:.3}"),
        },
        Some(MetricEntry::Unavailable { .. }) => "n/a".into(),
        _ => "—".into(),
    }
}

/// Table-2-style summary of the finished evaluation nodes of a plan (rows: target, schedule,
/// gate, η; columns: metrics with their 95 % CIs); failed points are listed as failed.
pub fn summary(plan: &Plan, store: &Store) -> Option<String> {
    let nodes: Vec<_> = plan.nodes.iter().filter(|n| n.kind == KIND).collect();
    if nodes.is_empty() {
        return None;
    }
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    for n in &nodes {
        let p: Option<EvalParams> = serde_json::from_value(n.params.clone()).ok();
        let Some(p) = p else { continue };
        let point = format!(
            "{:<24} {:<12} {:>5} {:>6}",
            p.target,
            p.schedule.as_ref().map(|s| s.name()).unwrap_or("—"),
            crate::stages::generation::fmt_num(p.gate),
            crate::stages::generation::fmt_num(p.eta)
        );
        match Metrics::read(&store.out_dir(&n.key)).ok() {
            Some(m) => {
                for (k, val) in &m.metrics {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                    if let MetricEntry::Unavailable { unavailable } = val {
                        notes.insert(k.clone(), unavailable.clone());
                    }
                }
                rows.push((point, Some(m)));
            }
            None => rows.push((point, None)),
        }
    }
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .filter_map(|(_, m)| m.as_ref().map(|m| cell(m.metrics.get(c)).chars().count()))
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "{:<24} {:<12} {:>5} {:>6}",
        "target", "schedule", "gate", "eta"
    );
    for (c, w) in columns.iter().zip(&widths) {
        out.push_str(&format!("  {c:>w$}"));
    }
    out.push('\n');
    for (point, m) in rows {
        out.push_str(&point);
        match m {
            Some(m) => {
                for (c, w) in columns.iter().zip(&widths) {
                    out.push_str(&format!("  {:>w$}", cell(m.metrics.get(c))));
                }
            }
            None => out.push_str("  (not computed: failed or blocked; see `rfmx status`)"),
        }
        out.push('\n');
    }
    for (k, r) in notes {
        out.push_str(&format!("n/a {k}: {r}\n"));
    }
    Some(format!("steering evaluation (95% bootstrap CIs):\n{out}"))
}
