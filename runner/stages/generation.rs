//! The `generation` node kind and the steering stage that plans it (docs/contracts.md).
//!
//! One node per sweep point × target × schedule × η × prompt × sample seed; η = 0 is the shared
//! unsteered baseline of a prompt/seed (no direction inputs, no steering params, so every target,
//! schedule and gate plans the same node). Outputs:
//! - `audio.wav` (32 kHz mono f32), `codes.npy` `[K, frames]` int64
//! - `trace.json` {steps, layers, eta_lt (steps × layers, Σ over terms of the realised
//!   η0·w_l·φ(t)·ψ(t,l)[·‖h‖]), phi, psi, terms:[{target, eta_lt, phi, psi}]}
//! - `meta.json` {target, schedule, gate, gate_mode, eta, eta_mode, prompt, seed, seconds, model, ...}
//! - `captured.safetensors` `layer.<l>` = `[hidden]`: the conditional branch's block output during
//!   generation, averaged over steps (what the steering acted on)
//! - `features.safetensors` `layer.<l>` = `[hidden]`: the audio-level features: decode → re-encode →
//!   teacher-forced extraction pooled as `[extract] pooling` (what the probes were trained on)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dag::{NodeCtx, NodeError, NodeKind};
use crate::model::musicgen::{
    GenerateConfig, LayerHook, MusicgenError, Pool, RowHooks, parse_device,
};
use crate::model::{ModelSource, Pipeline, Precision};
use crate::spec::schema::{
    EtaMode, GateMode, LayerStrategy, Pooling, Schedule, Target, TargetTerm,
};
use crate::stages::contract::Output;
use crate::stages::directions::DirectionScores;

use crate::steer::gate::{Gate, Psi};
use crate::steer::inject::{SteerHook, Term};
use crate::steer::layers::layer_weights;
use crate::steer::schedule::{ScheduleConstants, phi};

pub const KIND: &str = "generation";
pub const STAGE: &str = "steer";

/// Sampling as MusicGen's defaults (top-k 250, temperature 1).
pub const TOP_K: usize = 250;
pub const TEMPERATURE: f64 = 1.0;

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("{0}")]
    Input(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
    #[error("generation produced non-finite values ({0}); η is probably too large")]
    NonFinite(String),
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> SteerError {
    SteerError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> SteerError {
    SteerError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The hashed params of a generation node. Baselines have `target = None`, `eta = 0` and fixed
/// steering fields, so that their key is the same for every target, schedule and gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub target: Option<String>,
    pub schedule: Option<Schedule>,
    pub layers: Option<LayerStrategy>,
    pub gate: f64,
    pub gate_mode: GateMode,
    pub eta: f64,
    pub eta_mode: EtaMode,
    pub prompt: String,
    pub seed: u64,
    pub seconds: f64,
    pub cfg: f64,
    pub pooling: Pooling,
    /// The schedule constants (None for baselines, which have no schedule).
    pub constants: Option<ScheduleConstants>,
    /// `[model] dtype` resolved; absent (f32) in the key so that f32 keys predate the knob.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub dtype: Precision,
}

impl GenParams {
    /// The unsteered generation of a prompt and seed: the fixed steering fields that give every
    /// target, schedule and gate the same baseline key.
    pub fn baseline(prompt: &str, seed: u64, seconds: f64, cfg: f64, pooling: Pooling) -> Self {
        GenParams {
            target: None,
            schedule: None,
            layers: None,
            gate: 1.0,
            gate_mode: GateMode::PerStep,
            eta: 0.0,
            eta_mode: EtaMode::Absolute,
            prompt: prompt.to_string(),
            seed,
            seconds,
            cfg,
            pooling,
            constants: None,
            dtype: Precision::default(),
        }
    }
}

/// The model to load (a hint: the key carries the model's fingerprint, never a path).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelHint {
    pub name: String,
    pub path: Option<String>,
    /// `[model] device` (auto | cpu | cuda[:N] | metal); absent = cpu.
    #[serde(default)]
    pub device: Option<String>,
}

pub fn fmt_num(v: f64) -> String {
    format!("{v}")
}

/// Short schedule label for node ids (`piecewise#i` for the i-th entry when several exist).
pub fn schedule_label(s: &Schedule, index: usize) -> String {
    match s {
        Schedule::Piecewise { .. } | Schedule::Feedback(_) => format!("{}#{index}", s.name()),
        other => other.name().to_string(),
    }
}

/// `generation[<target>|<schedule>|g<gate>|eta<eta>|<prompt idx>|s<seed>]`; baselines
/// `generation[baseline|none|g1|eta0|<prompt idx>|s<seed>]`.
pub fn generation_id(point: Option<(&Target, &str, f64, f64)>, prompt: usize, seed: u64) -> String {
    match point {
        Some((t, s, g, eta)) => format!(
            "generation[{t}|{s}|g{}|eta{}|{prompt}|s{seed}]",
            fmt_num(g),
            fmt_num(eta)
        ),
        None => format!("generation[baseline|none|g1|eta0|{prompt}|s{seed}]"),
    }
}

/// The input role of a term's directions node; the input is named `dir:<concept>:<class>`.
pub const DIR_ROLE: &str = "dir";

/// `dir:<concept>:<class>` — the input name of a term's directions node.
pub fn dir_input(t: &TargetTerm) -> String {
    format!("{DIR_ROLE}:{}", dir_index(t))
}

pub fn dir_index(t: &TargetTerm) -> String {
    format!("{}:{}", t.concept, t.class)
}

/// One term's directions as read from a `directions` node.
pub struct TermDirections {
    /// `q_l` (unit norm, f32) per decoder layer; None where the node has no direction.
    pub directions: Vec<Option<Vec<f32>>>,
    /// Per decoder layer the probe's validation score, None where absent.
    pub scores: Vec<Option<f64>>,
    pub judge_layer: Option<usize>,
}

/// Reads `directions.safetensors` (`layer.<l>` = `[k, hidden]`, first row used) and `scores.json`
/// of a directions node for a `layers`-deep decoder of width `hidden`.
pub fn read_directions(
    dir: &Path,
    layers: usize,
    hidden: usize,
) -> Result<TermDirections, SteerError> {
    let path = dir.join("directions.safetensors");
    let ts = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| read_err(&path, e))?;
    let mut directions = vec![None; layers];
    for (name, t) in &ts {
        let Some(l) = name
            .strip_prefix("layer.")
            .and_then(|l| l.parse::<usize>().ok())
        else {
            continue;
        };
        if l >= layers {
            return Err(read_err(
                &path,
                format!("direction for layer {l} but the decoder has {layers} layers"),
            ));
        }
        let t = t.to_dtype(DType::F32).map_err(|e| read_err(&path, e))?;
        let rows = match t.rank() {
            1 => t.unsqueeze(0),
            _ => Ok(t),
        }
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(|e| read_err(&path, e))?;
        let q = rows
            .first()
            .ok_or_else(|| read_err(&path, format!("{name} has no rows")))?;
        if q.len() != hidden {
            return Err(read_err(
                &path,
                format!(
                    "{name} has width {} but the decoder's hidden size is {hidden}",
                    q.len()
                ),
            ));
        }
        let n = q.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        if !(n.is_finite() && n > 0.0) {
            return Err(read_err(&path, format!("{name} is zero or not finite")));
        }
        directions[l] = Some(q.iter().map(|v| (*v as f64 / n) as f32).collect());
    }
    if directions.iter().all(Option::is_none) {
        return Err(read_err(&path, "no `layer.<l>` directions"));
    }
    let d = DirectionScores::read(dir).map_err(|e| SteerError::Input(e.to_string()))?;
    let mut scores = vec![None; layers];
    for e in &d.layers {
        if e.layer < layers {
            scores[e.layer] = e.val_auc;
        }
    }
    let judge_layer = Some(d.judge_layer);
    Ok(TermDirections {
        directions,
        scores,
        judge_layer,
    })
}

/// `w_l` over the layers that have both a direction and a score (0 elsewhere). A top-k larger than
/// the number of such layers is clamped (logged by the caller).
pub fn term_weights(
    strategy: &LayerStrategy,
    d: &TermDirections,
) -> Result<(Vec<f64>, Option<String>), SteerError> {
    let usable: Vec<usize> = (0..d.directions.len())
        .filter(|&l| d.directions[l].is_some() && d.scores[l].is_some())
        .collect();
    if usable.is_empty() {
        return Err(SteerError::Input(
            "the directions node has no layer with both a direction and a validation score".into(),
        ));
    }
    let scores: Vec<f64> = usable.iter().filter_map(|&l| d.scores[l]).collect();
    let mut note = None;
    let strategy = match *strategy {
        LayerStrategy::TopK { k } if k > usable.len() => {
            note = Some(format!(
                "top_k = {k} but only {} layers have directions: using all of them",
                usable.len()
            ));
            LayerStrategy::TopK { k: usable.len() }
        }
        ref s => s.clone(),
    };
    let w = layer_weights(&strategy, &scores).map_err(|e| SteerError::Input(e.to_string()))?;
    let mut out = vec![0.0; d.directions.len()];
    for (i, &l) in usable.iter().enumerate() {
        out[l] = w[i];
    }
    Ok((out, note))
}

/// Averages the conditional rows' block outputs over steps, per layer.
pub struct MeanCapture {
    rows: usize,
    sums: Vec<Option<Tensor>>,
    counts: Vec<usize>,
}

impl MeanCapture {
    /// `rows` = the conditional batch rows (the first `rows` of every block output).
    pub fn new(layers: usize, rows: usize) -> Self {
        Self {
            rows,
            sums: vec![None; layers],
            counts: vec![0; layers],
        }
    }

    /// Per layer `[rows, hidden]` f32 means (None for a layer never seen).
    pub fn means(&self) -> Result<Vec<Option<Tensor>>, MusicgenError> {
        self.sums
            .iter()
            .zip(&self.counts)
            .map(|(s, &c)| match s {
                Some(s) => Ok(Some((s / c as f64)?)),
                None => Ok(None),
            })
            .collect()
    }
}

impl LayerHook for MeanCapture {
    fn on_block_output(
        &mut self,
        layer: usize,
        _step: usize,
        h: &Tensor,
    ) -> Result<Option<Tensor>, MusicgenError> {
        if layer >= self.sums.len() {
            return Ok(None);
        }
        let x = h.narrow(0, 0, self.rows)?.to_dtype(DType::F32)?.sum(1)?;
        let n = h.dim(1)?;
        self.sums[layer] = Some(match self.sums[layer].take() {
            Some(s) => (s + x)?,
            None => x,
        });
        self.counts[layer] += n;
        Ok(None)
    }
}

fn pool_of(p: Pooling) -> Pool {
    match p {
        Pooling::Mean => Pool::Mean,
        Pooling::Last => Pool::Last,
        Pooling::Max => Pool::Max,
    }
}

fn all_finite(t: &Tensor) -> Result<bool, candle_core::Error> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.iter().all(|x| x.is_finite()))
}

fn save_layers(path: &Path, layers: &[Option<Tensor>]) -> Result<(), SteerError> {
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (l, t) in layers.iter().enumerate() {
        if let Some(t) = t {
            let t = t.to_device(&Device::Cpu).map_err(|e| write_err(path, e))?;
            map.insert(format!("layer.{l}"), t);
        }
    }
    candle_core::safetensors::save(&map, path).map_err(|e| write_err(path, e))
}

fn write_output<T: Output>(dir: &Path, v: &T) -> Result<(), SteerError> {
    v.write(dir)
        .map_err(|e| write_err(&e.path.clone(), e.reason))
}

/// `meta.json` of a generation node: what was generated, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// The steering target, `none` for an unsteered baseline.
    pub target: String,
    /// The schedule's name, `none` for a baseline.
    pub schedule: String,
    pub schedule_spec: Option<Schedule>,
    pub schedule_constants: Option<ScheduleConstants>,
    pub layers: Option<LayerStrategy>,
    pub gate: f64,
    pub gate_mode: GateMode,
    pub eta: f64,
    pub eta_mode: EtaMode,
    pub prompt: String,
    pub seed: u64,
    pub seconds: f64,
    /// Decoder steps (`seconds` × 50 Hz + the delay pattern's 3).
    pub steps: usize,
    pub cfg: f64,
    pub top_k: usize,
    pub temperature: f64,
    pub pooling: Pooling,
    /// The model's label (`tiny`, a hub id or a snapshot path) and its description.
    pub model: String,
    pub model_description: String,
    pub sample_rate: u32,
    /// Length of `audio.wav` in samples.
    pub samples: usize,
}

impl Output for GenerationMeta {
    const FILE: &'static str = "meta.json";
}

/// `trace.json` of a generation node: the realised steering strengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub steps: usize,
    /// Decoder layers.
    pub layers: usize,
    /// `[step][layer]`: Σ over terms of the realised η0·w_l·φ(t)·ψ(t, l) (× mean ‖h_l‖ when
    /// norm-relative).
    pub eta_lt: Vec<Vec<f64>>,
    /// The first term's φ(t) and ψ (zeros for a baseline).
    pub phi: Vec<f64>,
    pub psi: Psi,
    pub terms: Vec<TraceTerm>,
}

impl Output for Trace {
    const FILE: &'static str = "trace.json";
}

/// One target term's share of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceTerm {
    pub target: String,
    pub eta: f64,
    /// w_l per decoder layer.
    pub weights: Vec<f64>,
    pub eta_lt: Vec<Vec<f64>>,
    pub phi: Vec<f64>,
    pub psi: Psi,
    /// A feedback schedule's judge score before each step's update (null at step 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_scores: Option<Vec<Option<f64>>>,
}

/// Everything one generation needs besides the model.
pub struct GenerationInputs<'a> {
    pub params: &'a GenParams,
    /// Per target term (in order): its directions node's output dir.
    pub direction_dirs: Vec<&'a Path>,
    /// `(concept, layer)` → probe node dir: the judges of a feedback schedule (else empty).
    pub probes: std::collections::BTreeMap<(String, usize), PathBuf>,
}

/// Seed of a term's gate: the sample seed and the term index, mixed.
pub fn gate_seed(seed: u64, term: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(term as u64 + 1)
        .rotate_left(17)
}

/// A row of a batch, ready to generate: its steering hook (terms, gates, trace) and its capture.
struct Row {
    /// The steering hook, then the capture of the steered stream.
    hooks: (SteerHook, MeanCapture),
    log: Vec<String>,
}

/// Reads a row's directions and draws its gates (everything that depends on the row alone).
fn prepare_row(
    pipeline: &Pipeline,
    inputs: &GenerationInputs<'_>,
    steps: usize,
) -> Result<Row, NodeError> {
    let p = inputs.params;
    let mut log = Vec::new();
    let dec = &pipeline.decoder;
    let (layers, hidden) = (dec.num_layers(), dec.hidden_size());
    let consts = p.constants.unwrap_or_default();
    let target: Option<Target> = p
        .target
        .as_deref()
        .map(|t| t.parse::<Target>().map_err(SteerError::Input))
        .transpose()?;
    let mut terms = Vec::new();
    if let Some(target) = &target {
        if target.terms.len() != inputs.direction_dirs.len() {
            return Err(SteerError::Input(format!(
                "target `{target}` has {} terms but {} directions inputs",
                target.terms.len(),
                inputs.direction_dirs.len()
            ))
            .into());
        }
        let schedule = p
            .schedule
            .as_ref()
            .ok_or_else(|| SteerError::Input("a steered generation needs a schedule".into()))?;
        let strategy = p.layers.as_ref().ok_or_else(|| {
            SteerError::Input("a steered generation needs a layer strategy".into())
        })?;
        let phi_t = phi(schedule, steps, &consts).map_err(|e| SteerError::Input(e.to_string()))?;
        for (k, (term, dir)) in target.terms.iter().zip(&inputs.direction_dirs).enumerate() {
            let d = read_directions(dir, layers, hidden)?;
            let (weights, note) = term_weights(strategy, &d)?;
            if let Some(n) = note {
                log.push(format!("{}:{}: {n}", term.concept, term.class));
            }
            log.push(format!(
                "{}:{}: layer weights {weights:?}",
                term.concept, term.class
            ));
            let directions = d
                .directions
                .iter()
                .map(|q| {
                    q.as_ref()
                        .map(|q| Tensor::from_vec(q.clone(), hidden, &Device::Cpu))
                        .transpose()
                })
                .collect::<Result<Vec<_>, _>>()?;
            terms.push(Term {
                label: format!("{}:{}", term.concept, term.class),
                directions,
                weights,
                eta: p.eta,
                phi: phi_t.clone(),
                gate: Gate::draw(p.gate, p.gate_mode, steps, layers, gate_seed(p.seed, k))
                    .map_err(|e| SteerError::Input(e.to_string()))?,
            });
        }
    }
    let mut hook = SteerHook::new(terms, p.eta_mode, layers)?;
    if let (Some(Schedule::Feedback(fb)), Some(target)) = (&p.schedule, &target) {
        for (k, (term, dir)) in target.terms.iter().zip(&inputs.direction_dirs).enumerate() {
            let (layer, fit) = target_probe(dir, &inputs.probes, term.concept, &term.class)
                .map_err(|e| {
                    SteerError::Input(format!(
                        "feedback schedule for {}:{}: {e}",
                        term.concept, term.class
                    ))
                })?;
            log.push(format!(
                "{}:{}: feedback on its one-vs-rest probe at the judge layer {layer} (setpoint {}, gain {}, max {})",
                term.concept, term.class, fb.setpoint, fb.gain, fb.max
            ));
            let score: crate::steer::feedback::Scorer = Box::new(move |x: &[f32]| {
                let f = crate::probe::Features::new(1, x.len(), x.to_vec())
                    .map_err(|e| e.to_string())?;
                let out = fit.predict(&f).map_err(|e| e.to_string())?;
                out.first()
                    .copied()
                    .ok_or_else(|| "the probe gave no score".to_string())
            });
            hook.set_feedback(k, crate::steer::feedback::Feedback::new(fb, layer, score))?;
        }
    }
    Ok(Row {
        hooks: (hook, MeanCapture::new(layers, 1)),
        log,
    })
}

/// The target class's one-vs-rest probe at the concept's judge layer (the layer the evaluation
/// judges at): what a feedback schedule scores (docs/design.md §3).
fn target_probe(
    directions: &Path,
    probes: &std::collections::BTreeMap<(String, usize), PathBuf>,
    concept: crate::spec::schema::Concept,
    class: &str,
) -> Result<(usize, crate::probe::ProbeFit), String> {
    let (layer, probe) = crate::stages::evaluation::judge_probe(directions, probes, concept)?;
    let scores = crate::stages::probe::ProbeScores::read(probe).map_err(|e| e.to_string())?;
    let c = scores
        .classes
        .get(class)
        .ok_or_else(|| format!("the probe at layer {layer} has no class {class}"))?;
    let fit = crate::probe::ProbeFit::load(&probe.join(&c.dir)).map_err(|e| e.to_string())?;
    Ok((layer, fit))
}

/// Runs one generation into `out` (see the module docs for the files). Returns log lines.
pub fn run_generation(
    pipeline: &Pipeline,
    model_label: &str,
    inputs: &GenerationInputs<'_>,
    out: &Path,
) -> Result<Vec<String>, NodeError> {
    run_generation_batch(pipeline, model_label, std::slice::from_ref(inputs), &[out])
        .pop()
        .unwrap_or_else(|| Err("an empty generation batch".into()))
}

/// What a batch's rows must share: one prompt, one length, one guidance scale (the model is the
/// caller's). Everything else (seed, target, schedule, gate, η) is per row.
fn batch_shape(p: &GenParams) -> (&str, u64, u64) {
    (&p.prompt, p.seconds.to_bits(), p.cfg.to_bits())
}

/// Runs several generations that share a prompt, length and guidance scale as one batch of the
/// decoder, each row with its own seed, steering terms, gates, capture and trace, into `outs[i]`
/// (docs/design.md, batched generation). Each result is what [`run_generation`] gives for that
/// row alone; a row that fails (bad directions, non-finite values) fails alone.
pub fn run_generation_batch(
    pipeline: &Pipeline,
    model_label: &str,
    inputs: &[GenerationInputs<'_>],
    outs: &[&Path],
) -> Vec<Result<Vec<String>, NodeError>> {
    let fail_all = |msg: String| -> Vec<Result<Vec<String>, NodeError>> {
        inputs.iter().map(|_| Err(msg.clone().into())).collect()
    };
    let Some(first) = inputs.first() else {
        return Vec::new();
    };
    if outs.len() != inputs.len() {
        return fail_all(format!(
            "{} outputs for {} generations",
            outs.len(),
            inputs.len()
        ));
    }
    if let Some(other) = inputs
        .iter()
        .find(|i| batch_shape(i.params) != batch_shape(first.params))
    {
        return fail_all(format!(
            "a generation batch mixes prompts, lengths or guidance ({:?} and {:?})",
            batch_shape(first.params),
            batch_shape(other.params)
        ));
    }
    let steps = match pipeline.steps_for_seconds(first.params.seconds) {
        Ok(s) => s,
        Err(e) => return fail_all(e.to_string()),
    };
    let mut results: Vec<Option<Result<Vec<String>, NodeError>>> =
        inputs.iter().map(|_| None).collect();
    let mut rows: Vec<(usize, Row)> = Vec::new();
    for (i, inp) in inputs.iter().enumerate() {
        match prepare_row(pipeline, inp, steps) {
            Ok(r) => rows.push((i, r)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    if !rows.is_empty() {
        match generate_rows(pipeline, first.params, steps, inputs, &mut rows) {
            Ok(codes) => {
                for (r, (i, row)) in rows.into_iter().enumerate() {
                    let res = codes
                        .narrow(0, r, 1)
                        .map_err(NodeError::from)
                        .and_then(|c| {
                            finish_row(
                                pipeline,
                                model_label,
                                inputs[i].params,
                                row,
                                &c,
                                steps,
                                outs[i],
                            )
                        });
                    results[i] = Some(res);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (i, _) in &rows {
                    results[*i] = Some(Err(msg.clone().into()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("a generation row was never run".into())))
        .collect()
}

/// The decoder loop for the prepared rows: the prompt's condition repeated once per row (exactly
/// the one-row condition, so every row attends to the same states it would alone).
fn generate_rows(
    pipeline: &Pipeline,
    p: &GenParams,
    steps: usize,
    inputs: &[GenerationInputs<'_>],
    rows: &mut [(usize, Row)],
) -> Result<Tensor, NodeError> {
    let n = rows.len();
    let cond = pipeline.condition(std::slice::from_ref(&p.prompt))?;
    let rep = |t: &Tensor| -> Result<Tensor, candle_core::Error> {
        let ones = vec![1; t.rank() - 1];
        let mut dims = vec![n];
        dims.extend(ones);
        t.repeat(dims.as_slice())
    };
    let cond = crate::model::musicgen::Condition {
        states: rep(&cond.states)?,
        mask: cond.mask.as_ref().map(rep).transpose()?,
        uncond_states: rep(&cond.uncond_states)?,
        uncond_mask: cond.uncond_mask.as_ref().map(rep).transpose()?,
    };
    let cfg = GenerateConfig {
        steps,
        guidance_scale: p.cfg,
        top_k: TOP_K,
        temperature: TEMPERATURE,
        seed: p.seed,
    };
    let seeds: Vec<u64> = rows.iter().map(|(i, _)| inputs[*i].params.seed).collect();
    let hooks: Vec<&mut dyn LayerHook> = rows
        .iter_mut()
        .map(|(_, r)| {
            let pair: &mut dyn LayerHook = &mut r.hooks;
            pair
        })
        .collect();
    let mut hooks = RowHooks::new(hooks, cfg.guidance_scale != 1.0);
    let generated = pipeline
        .decoder
        .generate_seeded(&cond, &cfg, &seeds, &mut hooks)?;
    Ok(generated.codes)
}

/// Checks, decodes and writes one row's outputs.
fn finish_row(
    pipeline: &Pipeline,
    model_label: &str,
    p: &GenParams,
    row: Row,
    codes: &Tensor,
    steps: usize,
    out: &Path,
) -> Result<Vec<String>, NodeError> {
    let Row {
        hooks: (steer, capture),
        log,
    } = row;
    let dec = &pipeline.decoder;
    let layers = dec.num_layers();
    let captured = capture.means()?;
    for (l, t) in captured.iter().enumerate() {
        if let Some(t) = t
            && !all_finite(t)?
        {
            return Err(SteerError::NonFinite(format!(
                "block output of layer {l} during generation at η = {}",
                p.eta
            ))
            .into());
        }
    }
    let audio = pipeline.decode_codes(codes)?;
    if !all_finite(&audio)? {
        return Err(SteerError::NonFinite("decoded audio".into()).into());
    }
    let samples = audio.flatten_all()?.to_vec1::<f32>()?;
    crate::audio::wav::write_f32(&out.join("audio.wav"), &samples, 1, pipeline.sample_rate())?;
    let codes = codes
        .squeeze(0)?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::I64)?;
    codes.write_npy(out.join("codes.npy"))?;
    // Audio-level features: decode -> re-encode -> teacher-forced extraction.
    let recoded = pipeline.encode_audio(&audio)?;
    let pooled = dec.extract_pooled(&recoded, &[pool_of(p.pooling)])?;
    let pooled = pooled
        .into_iter()
        .next()
        .ok_or_else(|| SteerError::Input("no pooled features".into()))?;
    let features: Vec<Option<Tensor>> = (0..layers)
        .map(|l| pooled.get(l)?.squeeze(0).map(Some))
        .collect::<Result<_, _>>()?;
    save_layers(&out.join("features.safetensors"), &features)?;
    let captured: Vec<Option<Tensor>> = captured
        .into_iter()
        .map(|t| t.map(|t| t.squeeze(0)).transpose())
        .collect::<Result<_, _>>()?;
    save_layers(&out.join("captured.safetensors"), &captured)?;
    let total = steer.total_trace();
    let terms: Vec<TraceTerm> = steer
        .terms()
        .iter()
        .zip(steer.trace())
        .enumerate()
        .map(|(k, (t, tr))| TraceTerm {
            target: t.label.clone(),
            eta: t.eta,
            weights: t.weights.clone(),
            eta_lt: tr.clone(),
            phi: t.phi.clone(),
            psi: t.gate.trace(),
            feedback_scores: steer.feedback_scores(k).map(<[_]>::to_vec),
        })
        .collect();
    let (phi0, psi0) = match terms.first() {
        Some(t) => (t.phi.clone(), t.psi.clone()),
        None => (vec![0.0; steps], Psi::PerStep(vec![0; steps])),
    };
    write_output(
        out,
        &Trace {
            steps,
            layers,
            eta_lt: if total.is_empty() {
                vec![vec![0.0; layers]; steps]
            } else {
                total
            },
            phi: phi0,
            psi: psi0,
            terms,
        },
    )?;
    write_output(
        out,
        &GenerationMeta {
            target: p.target.clone().unwrap_or_else(|| "none".into()),
            schedule: p
                .schedule
                .as_ref()
                .map(|s| s.name())
                .unwrap_or("none")
                .into(),
            schedule_spec: p.schedule.clone(),
            schedule_constants: p.constants,
            layers: p.layers.clone(),
            gate: p.gate,
            gate_mode: p.gate_mode,
            eta: p.eta,
            eta_mode: p.eta_mode,
            prompt: p.prompt.clone(),
            seed: p.seed,
            seconds: p.seconds,
            steps,
            cfg: p.cfg,
            top_k: TOP_K,
            temperature: TEMPERATURE,
            pooling: p.pooling,
            model: model_label.to_string(),
            model_description: pipeline.description.clone(),
            sample_rate: pipeline.sample_rate(),
            samples: samples.len(),
        },
    )?;
    Ok(log)
}

pub struct GenerationKind;

impl NodeKind for GenerationKind {
    fn name(&self) -> &'static str {
        KIND
    }
    fn version(&self) -> u32 {
        // 2: the vectorised exact-erf GELU and the per-tap EnCodec convolutions change the
        //    audio and features in their last digits.
        2
    }
    fn resources(&self, node: &crate::dag::PlannedNode) -> crate::dag::Resources {
        crate::dag::Resources::heavy(node.hints["model"]["device"].as_str())
    }
    /// Generations of one prompt, length, guidance scale and model run together; seeds, targets,
    /// schedules, gates and η differ per row (docs/design.md, batched generation).
    fn batch_key(&self, node: &crate::dag::PlannedNode) -> Option<String> {
        let p: GenParams = serde_json::from_value(node.params.clone()).ok()?;
        serde_json::to_string(&serde_json::json!([
            p.prompt,
            p.seconds,
            p.cfg,
            p.dtype,
            node.hints["model"],
            node.fingerprint,
        ]))
        .ok()
    }
    fn batch_limit(&self, node: &crate::dag::PlannedNode) -> usize {
        let device = node.hints["model"]["device"].as_str().unwrap_or("cpu");
        batch_limit_of(&node.hints["batch"], device)
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        self.run_batch(std::slice::from_mut(ctx))
            .pop()
            .unwrap_or_else(|| Err("an empty generation batch".into()))
    }
    fn run_batch(&self, ctxs: &mut [NodeCtx<'_>]) -> Vec<Result<(), NodeError>> {
        let prepared: Vec<Result<NodeInputs, NodeError>> = ctxs.iter().map(node_inputs).collect();
        let Some(first) = ctxs.first_mut() else {
            return Vec::new();
        };
        let pipeline = (|| -> Result<_, NodeError> {
            let hint: ModelHint = serde_json::from_value(first.hints["model"].clone())
                .map_err(|e| format!("generation node without a model hint: {e}"))?;
            let source = ModelSource::from_spec(&hint.name, hint.path.as_deref().map(Path::new));
            first.progress(0, 2, "loading model");
            let device = parse_device(hint.device.as_deref().unwrap_or("cpu"))?;
            // Rows of a batch share the model's precision (it is part of the batch key).
            let params: GenParams = first.params_as()?;
            let pipeline = Pipeline::shared(&source, &device, params.dtype.dtype())?;
            Ok((pipeline, source.label()))
        })();
        let (pipeline, label) = match pipeline {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                return ctxs.iter().map(|_| Err(msg.clone().into())).collect();
            }
        };
        // Rows whose params or inputs could not be read fail alone; the others run as one batch.
        let mut results: Vec<Option<Result<(), NodeError>>> = Vec::new();
        let mut ok = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Ok(v) => {
                    results.push(None);
                    ok.push((i, v));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let inputs: Vec<GenerationInputs<'_>> = ok
            .iter()
            .map(|(_, (params, dirs, probes))| GenerationInputs {
                params,
                direction_dirs: dirs.iter().map(|d| d.as_path()).collect(),
                probes: probes.clone(),
            })
            .collect();
        let outs: Vec<PathBuf> = ok
            .iter()
            .map(|(i, _)| ctxs[*i].out_dir.to_path_buf())
            .collect();
        let out_refs: Vec<&Path> = outs.iter().map(|o| o.as_path()).collect();
        for &(i, _) in &ok {
            ctxs[i].progress(1, 2, &format!("generating (batch of {})", ok.len()));
        }
        let rows = run_generation_batch(&pipeline, &label, &inputs, &out_refs);
        for ((i, _), r) in ok.iter().zip(rows) {
            let ctx = &mut ctxs[*i];
            results[*i] = Some(r.map(|log| {
                if ok.len() > 1 {
                    ctx.log(&format!("generated in a batch of {}", ok.len()));
                }
                for line in log {
                    ctx.log(&line);
                }
                ctx.progress(2, 2, "done");
            }));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("a generation node was never run".into())))
            .collect()
    }
}

type Probes = std::collections::BTreeMap<(String, usize), PathBuf>;
/// What a generation node reads: its params, directions dirs and probe dirs.
type NodeInputs = (GenParams, Vec<PathBuf>, Probes);

/// A node's params, its directions inputs' dirs and its probe inputs (feedback judges).
fn node_inputs(ctx: &NodeCtx<'_>) -> Result<NodeInputs, NodeError> {
    let params: GenParams = ctx.params_as()?;
    let mut dirs = Vec::new();
    if let Some(t) = &params.target {
        let target: Target = t.parse().map_err(SteerError::Input)?;
        for term in &target.terms {
            dirs.push(ctx.input(&dir_input(term))?.to_path_buf());
        }
    }
    let probes = crate::stages::evaluation::probe_inputs(ctx)?;
    Ok((params, dirs, probes))
}

/// `[steer] batch` on the CPU when "auto": a small decoder step is bound by per-op overhead that
/// a few rows share, while each row's hooks still cost their own ops; `rfmx calibrate --batches
/// 1,4,8` on the tiny model (debug build, loaded 2-core machine) gave batch 4 about 1.3–1.6× the
/// clip-steps/s of batch 1 and batch 8 less than batch 4 (docs/design.md §9, batched generation).
pub const AUTO_BATCH_CPU: usize = 4;
/// `[steer] batch` on a GPU when "auto" (docs/design.md, batched generation).
pub const AUTO_BATCH_GPU: usize = 16;

/// The batch bound from the node's `batch` hint (a number or "auto"; absent = 1) and its device.
pub fn batch_limit_of(hint: &serde_json::Value, device: &str) -> usize {
    match hint {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n.max(1) as usize).unwrap_or(1),
        serde_json::Value::String(s) if s == "auto" => {
            if crate::dag::Resources::heavy(Some(device)).gpu {
                AUTO_BATCH_GPU
            } else {
                AUTO_BATCH_CPU
            }
        }
        _ => 1,
    }
}
