//! `rfmx plan SPEC --estimate`: per node kind, how many nodes will run, how long they take and how
//! much memory the largest needs on the spec's device, and the total (docs/design.md §9).
//!
//! Times come from a short calibration on the chosen device, model and dtype ([`calibrate`], cached
//! in the store's `calibration/` directory), scaled to the plan's sizes by each kind's known
//! complexity. Peak memory is counted from the sizes (weights, KV cache, kernel matrices), not
//! measured.

pub mod calibrate;
pub mod cli;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dag::{Plan, PlannedNode};
use crate::probe::cpu::IterationShape;
use calibrate::{ModelCalibration, ModelTarget, RenderCalibration, RfmPass};

#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// The spec's device or dtype cannot be used by this build or machine (a user error).
    #[error("cannot calibrate on `{spec}`: {msg}")]
    Device { spec: String, msg: String },
    #[error("calibration failed: {0}")]
    Measure(String),
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("cannot estimate node {node}: {msg}")]
    Node { node: String, msg: String },
}

/// 2 for a device, dtype or model this build or machine cannot use (user input), else 1.
pub fn exit_code(e: &EstimateError) -> u8 {
    match e {
        EstimateError::Device { .. } => 2,
        _ => 1,
    }
}

impl EstimateError {
    pub fn measure(e: impl std::fmt::Display) -> EstimateError {
        EstimateError::Measure(e.to_string())
    }
}

/// One node kind's line of the estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct KindEstimate {
    pub kind: String,
    /// Nodes of this kind that will run (cached ones cost nothing).
    pub count: usize,
    /// None: the kind is not modelled (`scaling` says why).
    pub seconds: Option<f64>,
    pub peak_bytes: Option<u64>,
    pub scaling: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub kinds: Vec<KindEstimate>,
    pub total_seconds: f64,
    pub peak_bytes: u64,
    /// What was calibrated, where it is cached and whether it was measured by this call.
    pub calibration: Vec<String>,
    pub notes: Vec<String>,
}

/// One dataset's size as the dataset node will build it (before silent clips are dropped).
#[derive(Debug, Clone)]
struct DataSize {
    clips: usize,
    per_class: Vec<usize>,
    mean_seconds: f64,
    concept: String,
    /// The SynTheory rendering config; None for a folder of the user's audio (decoded, not
    /// rendered).
    cfg: Option<crate::data::DatasetConfig>,
}

fn node_err(n: &PlannedNode, e: impl std::fmt::Display) -> EstimateError {
    EstimateError::Node {
        node: n.id.clone(),
        msg: e.to_string(),
    }
}

fn data_size(n: &PlannedNode) -> Result<DataSize, EstimateError> {
    if let Some(folder) = n.params.get("folder") {
        // One clip per file (windowed files give more: a lower bound then).
        let f: crate::data::folder::FolderConfig =
            serde_json::from_value(folder.clone()).map_err(|e| node_err(n, e))?;
        let mut per_class: Vec<usize> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (_, class) in &f.rows {
            match seen.iter().position(|c| c == class) {
                Some(i) => per_class[i] += 1,
                None => {
                    seen.push(class);
                    per_class.push(1);
                }
            }
        }
        return Ok(DataSize {
            clips: f.rows.len(),
            per_class,
            mean_seconds: f.clip_seconds,
            concept: f.concept.clone(),
            cfg: None,
        });
    }
    let cfg =
        crate::stages::dataset::dataset_config(&n.params, &n.hints).map_err(|e| node_err(n, e))?;
    let concept = crate::data::Concept::parse(&cfg.concept)
        .ok_or_else(|| node_err(n, format!("unknown concept {}", cfg.concept)))?;
    let e = crate::data::enumerate(concept, cfg.seed);
    let sel = crate::data::select::select(&cfg, concept, &e).map_err(|e| node_err(n, e))?;
    let mut per_class = Vec::new();
    let mut samples = 0usize;
    for (_, cands) in &sel.classes {
        let want = sel.per_class.map_or(cands.len(), |p| p.min(cands.len()));
        samples += cands[..want]
            .iter()
            .map(|&i| e.clip_samples(i))
            .sum::<usize>();
        per_class.push(want);
    }
    let clips: usize = per_class.iter().sum();
    Ok(DataSize {
        clips,
        per_class,
        mean_seconds: samples as f64 / clips.max(1) as f64 / crate::data::SAMPLE_RATE as f64,
        concept: cfg.concept.clone(),
        cfg: Some(cfg),
    })
}

/// The RFM cost model (docs/design.md §9): an iteration costs `a·flops + b·r³`, the products
/// [`IterationShape::flops`] counts and M's r×r eigendecomposition, with `a` and `b`
/// fitted to the calibration's iterations by least squares on relative error (when one comes out
/// negative, the other is fitted alone). Later iterations are priced at the rank M reached in the
/// calibration's fits on a synthetic concept (`later_ranks`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmCost {
    pub a: f64,
    pub b: f64,
    /// Whether iteration 0's Gram is shared by a search's trials (the CPU path's `Shared`).
    pub shared_gram: bool,
}

impl RfmCost {
    pub fn fit(passes: &[RfmPass], d: usize, shared_gram: bool) -> Self {
        let rows: Vec<(f64, f64, f64)> = passes
            .iter()
            .filter(|p| p.seconds > 0.0)
            .map(|p| {
                let s = IterationShape {
                    n: p.rows,
                    nv: p.val_rows,
                    d,
                    r: p.rank,
                    c: p.outputs,
                    gram: true,
                    agop: p.agop,
                };
                let (f, e) = (s.flops(), s.eig());
                // Relative error: divide each equation by its own time.
                (f / p.seconds, e / p.seconds, 1.0)
            })
            .collect();
        let dot = |g: &dyn Fn(&(f64, f64, f64)) -> f64| rows.iter().map(g).sum::<f64>();
        let (ff, fe, ee) = (
            dot(&|r| r.0 * r.0),
            dot(&|r| r.0 * r.1),
            dot(&|r| r.1 * r.1),
        );
        let (ft, et) = (dot(&|r| r.0 * r.2), dot(&|r| r.1 * r.2));
        let det = ff * ee - fe * fe;
        let alone_a = if ff > 0.0 { ft / ff } else { 0.0 };
        let alone_b = if ee > 0.0 { et / ee } else { 0.0 };
        let (a, b) = if det.abs() <= 1e-12 * ff * ee || !det.is_finite() {
            (alone_a, 0.0)
        } else {
            let a = (ft * ee - et * fe) / det;
            let b = (ff * et - fe * ft) / det;
            if b < 0.0 {
                (alone_a, 0.0)
            } else if a < 0.0 {
                (0.0, alone_b)
            } else {
                (a, b)
            }
        };
        RfmCost { a, b, shared_gram }
    }

    /// Seconds of one iteration.
    pub fn iteration(&self, s: IterationShape) -> f64 {
        self.a * s.flops() + self.b * s.eig()
    }

    /// Seconds of one probe on `rows` rows (70 % train, 15 % validation): `trials` random-search
    /// trials of `iterations` updates and the final refit each; iteration 0 at rank d (its Gram
    /// formed once when shared), iteration 1 at rank `ranks.0`, the later ones at `ranks.1`; no
    /// early stopping (an upper bound there).
    pub fn probe(
        &self,
        rows: usize,
        d: usize,
        c: usize,
        ranks: (usize, usize),
        trials: f64,
        iterations: usize,
    ) -> f64 {
        let n = (0.70 * rows as f64) as usize;
        let nv = (0.15 * rows as f64) as usize;
        let (r1, r2) = (ranks.0.min(d), ranks.1.min(d));
        let shape = |r: usize, gram: bool, agop: bool| IterationShape {
            n,
            nv,
            d,
            r,
            c,
            gram,
            agop,
        };
        let gram_once = if self.shared_gram {
            self.iteration(shape(d, true, false)) - self.iteration(shape(d, false, false))
        } else {
            0.0
        };
        // Iteration t works at rank(t) and updates M unless it is the last.
        let rank = |t: usize| match t {
            0 => d,
            1 => r1,
            _ => r2,
        };
        let per_trial: f64 = (0..=iterations)
            .map(|t| {
                let gram = t > 0 || !self.shared_gram;
                self.iteration(shape(rank(t), gram, t < iterations))
            })
            .sum();
        gram_once + trials * per_trial
    }
}

/// The ranks M had after its first and its last update in the largest calibration fit with
/// (`multi`) or without several outputs: what iteration 1 and the later ones are priced at
/// (the rank falls as the iterations concentrate M). d where nothing truncated.
pub fn later_ranks(passes: &[RfmPass], d: usize, multi: bool) -> (usize, usize) {
    let fit: Vec<&RfmPass> = passes.iter().filter(|p| (p.outputs > 1) == multi).collect();
    let Some(rows) = fit.iter().map(|p| p.rows).max() else {
        return (d, d);
    };
    let largest: Vec<usize> = fit
        .iter()
        .filter(|p| p.rows == rows)
        .map(|p| p.rank)
        .collect();
    match largest.as_slice() {
        [_, r1, .., last] => (*r1, *last),
        [_, r1] => (*r1, *r1),
        _ => (d, d),
    }
}

fn bytes_of(dtype: &str) -> u64 {
    match dtype {
        "f16" | "bf16" => 2,
        "f64" => 8,
        _ => 4,
    }
}

fn input_key<'a>(n: &'a PlannedNode, name: &str) -> Option<&'a str> {
    n.inputs
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.key.as_str())
}

/// The model a model node (activations or generation) runs: source, device, dtype, fingerprint.
fn target_of(n: &PlannedNode, eval_samples: usize) -> Option<ModelTarget> {
    let str_of = |v: &Value| v.as_str().map(String::from);
    let (name, path, device) = match n.kind.as_str() {
        "activations" => (
            str_of(&n.hints["model"]),
            str_of(&n.hints["model_path"]),
            str_of(&n.hints["device"]),
        ),
        "generation" => (
            str_of(&n.hints["model"]["name"]),
            str_of(&n.hints["model"]["path"]),
            str_of(&n.hints["model"]["device"]),
        ),
        _ => return None,
    };
    let name = name.unwrap_or_else(|| "tiny".into());
    Some(ModelTarget {
        source: crate::model::ModelSource::from_spec(&name, path.as_deref().map(Path::new)),
        device: device.unwrap_or_else(|| "cpu".into()),
        dtype: str_of(&n.params["dtype"]).unwrap_or_else(|| "f32".into()),
        fingerprint: n.fingerprint.clone().unwrap_or_default(),
        eval_samples,
    })
}

/// The node whose model `n` depends on: itself (activations, generation), its activations input
/// (probe) or its first generation (evaluation).
fn model_node<'a>(
    n: &'a PlannedNode,
    by_key: &HashMap<&str, &'a PlannedNode>,
) -> Option<&'a PlannedNode> {
    match n.kind.as_str() {
        "activations" | "generation" => Some(n),
        "probe" => by_key.get(input_key(n, "activations")?).copied(),
        "evaluation" => {
            let first = n.inputs.iter().find(|i| i.role.as_deref() == Some("gen"))?;
            by_key.get(first.key.as_str()).copied()
        }
        _ => None,
    }
}

/// Reads or measures the calibration of `target`; returns it, its file and whether it was
/// measured now.
fn calibration_of(
    target: &ModelTarget,
    dir: &Path,
) -> Result<(ModelCalibration, PathBuf, bool), EstimateError> {
    let bad = |spec: &str, e: crate::model::musicgen::MusicgenError| EstimateError::Device {
        spec: spec.to_string(),
        msg: e.to_string(),
    };
    let device =
        crate::model::musicgen::parse_device(&target.device).map_err(|e| bad(&target.device, e))?;
    let dtype = crate::model::musicgen::parse_dtype(&target.dtype, &device)
        .map_err(|e| bad(&target.dtype, e))?;
    let dtype = format!("{dtype:?}").to_lowercase();
    let threads = rayon::current_num_threads();
    let label = calibrate::device_label(&device);
    let path = calibrate::model_file(dir, &label, threads, &target.fingerprint, &dtype);
    let (c, fresh) = calibrate::cached(&path, || {
        calibrate::measure_model(&ModelTarget {
            dtype: dtype.clone(),
            ..target.clone()
        })
    })?;
    Ok((c, path, fresh))
}

/// Estimates the nodes of `plan` flagged in `to_run`, calibrating (or reading the calibrations
/// cached under `store_root/calibration/`: one per device, model and dtype the plan uses) first.
pub fn estimate(
    plan: &Plan,
    to_run: &[bool],
    store_root: &Path,
) -> Result<Estimate, EstimateError> {
    let dir = store_root.join("calibration");
    std::fs::create_dir_all(&dir).map_err(|e| EstimateError::Io {
        path: dir.clone(),
        msg: e.to_string(),
    })?;
    let by_key: HashMap<&str, &PlannedNode> =
        plan.nodes.iter().map(|n| (n.key.as_str(), n)).collect();
    let mut calibration = Vec::new();
    let mut notes = Vec::new();
    let eval_samples = plan
        .nodes
        .iter()
        .find(|n| n.kind == "evaluation")
        .map_or(4, |n| {
            n.inputs
                .iter()
                .filter(|i| i.role.as_deref() == Some("gen"))
                .count()
        });
    // Node index -> its model's calibration (index into `models`), one per (model, device, dtype).
    let mut models: Vec<ModelCalibration> = Vec::new();
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    let mut model_of: HashMap<usize, usize> = HashMap::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let Some(target) = to_run[i]
            .then(|| model_node(n, &by_key))
            .flatten()
            .and_then(|m| target_of(m, eval_samples))
        else {
            continue;
        };
        let id = (
            target.fingerprint.clone(),
            target.device.clone(),
            target.dtype.clone(),
        );
        if let Some(&slot) = seen.get(&id) {
            model_of.insert(i, slot);
            continue;
        }
        let (c, path, fresh) = calibration_of(&target, &dir)?;
        calibration.push(format!(
            "model: {} on {} ({} thread(s)), {}: {} ({})",
            c.model,
            c.device,
            c.threads,
            c.dtype,
            if fresh {
                format!("measured now in {}", human(c.seconds))
            } else {
                "cached".into()
            },
            path.display()
        ));
        seen.insert(id, models.len());
        model_of.insert(i, models.len());
        models.push(c);
    }
    let mut sizes: HashMap<&str, DataSize> = HashMap::new();
    let mut render: Option<RenderCalibration> = None;
    for n in plan.nodes.iter().filter(|n| n.kind == "dataset") {
        let size = data_size(n)?;
        let wanted = plan
            .nodes
            .iter()
            .zip(to_run)
            .any(|(m, &run)| run && m.key == n.key);
        if let Some(cfg) = size.cfg.as_ref().filter(|_| wanted && render.is_none()) {
            let tag = calibrate::render_tag(cfg);
            let threads = rayon::current_num_threads();
            let path = dir.join(format!("render-{tag}-t{threads}.json"));
            let (r, fresh) = calibrate::cached(&path, || calibrate::measure_render(cfg, &dir))?;
            calibration.push(format!(
                "renderer: {}, {} clips: {} ({})",
                r.renderer,
                r.clips,
                if fresh { "measured now" } else { "cached" },
                path.display()
            ));
            render = Some(r);
        }
        sizes.insert(n.key.as_str(), size);
    }
    let data_of = |n: &PlannedNode| -> Option<&DataSize> {
        let act = match n.kind.as_str() {
            "dataset" => return sizes.get(n.key.as_str()),
            "activations" => n,
            _ => by_key.get(input_key(n, "activations")?)?,
        };
        sizes.get(input_key(act, "dataset")?)
    };

    let mut kinds: Vec<KindEstimate> = Vec::new();
    // Per kind: nodes not modelled and why (e.g. linear probes beside RFM ones).
    let mut unmodelled: Vec<(usize, String)> = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        if !to_run[i] {
            continue;
        }
        let slot = match kinds.iter().position(|k| k.kind == n.kind) {
            Some(s) => s,
            None => {
                kinds.push(KindEstimate {
                    kind: n.kind.clone(),
                    count: 0,
                    seconds: None,
                    peak_bytes: None,
                    scaling: String::new(),
                });
                unmodelled.push((0, String::new()));
                kinds.len() - 1
            }
        };
        let k = &mut kinds[slot];
        k.count += 1;
        let model = model_of.get(&i).map(|&m| &models[m]);
        let (cost, scaling) = node_cost(n, model, render.as_ref(), data_of(n), &by_key);
        match cost {
            Some((s, b)) => {
                k.seconds = Some(k.seconds.unwrap_or(0.0) + s);
                k.peak_bytes = Some(k.peak_bytes.unwrap_or(0).max(b));
                k.scaling = scaling;
            }
            None => {
                unmodelled[slot].0 += 1;
                unmodelled[slot].1 = scaling;
            }
        }
    }
    for (k, (missing, why)) in kinds.iter_mut().zip(unmodelled) {
        if missing == k.count {
            k.scaling = why;
        } else if missing > 0 {
            k.scaling = format!("{} ({missing} not included: {why})", k.scaling);
        }
    }
    let full_rank: f64 = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            to_run[*i] && n.kind == "probe" && n.params["kind"].as_str().unwrap_or("rfm") == "rfm"
        })
        .filter_map(|(i, n)| {
            Some(probe_seconds(
                n,
                &models[*model_of.get(&i)?],
                data_of(n)?,
                true,
            ))
        })
        .sum();
    if full_rank > 0.0 {
        notes.push(format!(
            "probe iterations after the first are priced at the ranks M reached in the calibration's fits on a synthetic concept; data whose AGOP spectrum does not decay keep rank d and would take up to {} for the probes; early stopping ends fits sooner",
            human(full_rank)
        ));
    }
    if kinds.iter().any(|k| k.kind == "evaluation")
        && plan.nodes.iter().any(|n| {
            n.kind == "evaluation"
                && n.params["metrics"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x == "clap"))
                && n.params["clap"].get("missing").is_none()
        })
    {
        notes.push("CLAP scoring is not calibrated: evaluation times leave it out".into());
    }
    let total_seconds = kinds.iter().filter_map(|k| k.seconds).sum::<f64>() + 0.0;
    let peak_bytes = kinds.iter().filter_map(|k| k.peak_bytes).max().unwrap_or(0);
    Ok(Estimate {
        kinds,
        total_seconds,
        peak_bytes,
        calibration,
        notes,
    })
}

/// Seconds of one RFM probe node: its one-vs-rest probes (the class and as many negatives), the
/// multiclass judge and, for tempos, the regression, each a search (`RfmCost::probe`); later
/// iterations at the calibration's ranks, or at full rank d when `full_rank` (the bound for data
/// whose AGOP spectrum does not decay).
fn probe_seconds(n: &PlannedNode, c: &ModelCalibration, d: &DataSize, full_rank: bool) -> f64 {
    let trials = n.params["trials"].as_u64().unwrap_or(1) as f64;
    let iters = n.params["iterations"].as_u64().unwrap_or(1) as usize;
    let cost = RfmCost::fit(&c.rfm_passes, c.hidden, c.device == "cpu");
    let rank = |multi: bool| {
        if full_rank {
            (c.hidden, c.hidden)
        } else {
            later_ranks(&c.rfm_passes, c.hidden, multi)
        }
    };
    let classes = d.per_class.len();
    let mut probes: Vec<(usize, usize, (usize, usize))> = d
        .per_class
        .iter()
        .map(|&p| (2 * p.min(d.clips - p), 1, rank(false)))
        .collect();
    probes.push((d.clips, classes.max(2), rank(true)));
    if d.concept == "tempos" {
        probes.push((d.clips, 1, rank(false)));
    }
    probes
        .iter()
        .map(|&(rows, outputs, r)| cost.probe(rows, c.hidden, outputs, r, trials, iters))
        .sum()
}

/// One node's (seconds, peak bytes), or None when its kind is not modelled; and how it scales.
fn node_cost(
    n: &PlannedNode,
    model: Option<&ModelCalibration>,
    render: Option<&RenderCalibration>,
    data: Option<&DataSize>,
    by_key: &HashMap<&str, &PlannedNode>,
) -> (Option<(f64, u64)>, String) {
    let f32b = 4u64;
    match (n.kind.as_str(), model) {
        ("dataset", _) => {
            if n.params.get("folder").is_some() {
                return (None, "a folder of audio: decoding is not calibrated".into());
            }
            let cost = match (render, data) {
                (Some(r), Some(d)) => {
                    // Clips render in batches of 16 per thread; only one batch is in memory.
                    let batch = (r.threads * 16) as u64;
                    let bytes = batch * (d.mean_seconds * 32_000.0) as u64 * f32b * 3;
                    Some((d.clips as f64 * r.clip_s, bytes))
                }
                _ => None,
            };
            (
                cost,
                "clips × render time per clip (measured on every core)".into(),
            )
        }
        ("activations", Some(c)) => {
            let cost = data.map(|d| {
                let frames = d.mean_seconds * c.frame_rate as f64;
                let layers = n.params["layers"].as_array().map_or(c.layers, Vec::len) as u64;
                let t = d.clips as f64 * (d.mean_seconds * c.encode_s + frames * c.extract_frame_s);
                let batch = n.hints["batch"].as_u64().unwrap_or(16);
                let h = c.hidden as u64;
                // Weights, every layer's block outputs of one batch, and the pooled rows of every
                // clip (kept until written).
                let bytes = c.weight_bytes as u64
                    + batch * frames as u64 * h * c.layers as u64 * bytes_of(&c.dtype)
                    + d.clips as u64 * h * layers * f32b;
                (t, bytes)
            });
            (
                cost,
                "clips × (EnCodec encode + frames × teacher-forced forward ∝ L·d²; batch of 16 clips)"
                    .into(),
            )
        }
        ("probe", Some(c)) => {
            let kind = n.params["kind"].as_str().unwrap_or("rfm");
            if kind != "rfm" {
                return (None, format!("{kind} probes are not calibrated (RFM only)"));
            }
            let cost = data.map(|d| {
                let t = probe_seconds(n, c, d, false);
                let ntr = (0.7 * d.clips as f64) as u64;
                let h = c.hidden as u64;
                // Kernel, its factor and the gradient product (f64); the features and their
                // standardised copies; M and its eigenvectors.
                let bytes = 3 * ntr * ntr * 8 + 3 * d.clips as u64 * h * f32b + 3 * h * h * 8;
                (t, bytes)
            });
            (cost, {
                let (b, m) = (
                    later_ranks(&c.rfm_passes, c.hidden, false),
                    later_ranks(&c.rfm_passes, c.hidden, true),
                );
                format!(
                    "probes × trials × iterations at rank d = {}, then {} → {} (one-vs-rest) or {} → {} (judge); ∝ n³ + n²·r·c",
                    c.hidden, b.0, b.1, m.0, m.1
                )
            })
        }
        ("generation", Some(c)) => {
            let seconds = n.params["seconds"].as_f64().unwrap_or(10.0);
            let frames = (seconds * c.frame_rate as f64).round().max(1.0);
            let steps = frames + c.codebooks as f64 - 1.0;
            let t =
                steps * c.step_s + seconds * (c.decode_s + c.encode_s) + frames * c.extract_frame_s;
            let (h, l) = (c.hidden as u64, c.layers as u64);
            // Weights; the KV cache of both guidance rows; the activations captured per step.
            let bytes = c.weight_bytes as u64
                + 2 * l * 2 * steps as u64 * h * bytes_of(&c.dtype)
                + l * steps as u64 * h * f32b;
            (
                Some((t, bytes)),
                "steps × guided decoder step (∝ L·d², batch 1) + decode, re-encode, extract".into(),
            )
        }
        ("evaluation", Some(c)) => {
            let metrics: Vec<&str> = n.params["metrics"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let gens: Vec<&PlannedNode> = n
                .inputs
                .iter()
                .filter(|i| i.role.as_deref() == Some("gen"))
                .filter_map(|i| by_key.get(i.key.as_str()).copied())
                .collect();
            let seconds: f64 = gens
                .iter()
                .map(|g| g.params["seconds"].as_f64().unwrap_or(0.0))
                .sum();
            let mut t = 0.0;
            // Bootstraps resample the sets: their cost grows with the samples as the calibration's
            // (same count by default).
            let scale = gens.len().max(2) as f64 / c.eval_samples as f64;
            if metrics.contains(&"fd") {
                t += c.fd_s * scale;
            }
            if metrics.contains(&"mmd") {
                t += c.mmd_s * scale * scale;
            }
            if metrics
                .iter()
                .any(|m| matches!(*m, "pitch_hit" | "chord_hit" | "tempo_error"))
            {
                t += seconds * c.pitch_s;
            }
            let bytes = (seconds * 32_000.0) as u64 * f32b * 2
                + 2 * gens.len() as u64 * c.hidden as u64 * 8;
            (
                Some((t, bytes)),
                "bootstrap FD/MMD on (samples × d) + DSP judges × audio seconds".into(),
            )
        }
        (kind @ ("activations" | "probe" | "generation" | "evaluation"), None) => {
            (None, format!("{kind}: no model node to calibrate"))
        }
        ("directions", _) => (None, "not modelled: reads k×d per layer and class".into()),
        ("report", _) => (None, "not modelled: renders plots from the results".into()),
        (kind, _) => (None, format!("not modelled: {kind}")),
    }
}

/// `45 s`, `12 min 3 s`, `3 h 12 min`, `2 d 4 h`.
pub fn human(s: f64) -> String {
    // An empty f64 sum is -0.0.
    let s = if s > 0.0 { s } else { 0.0 };
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s < 86_400.0 {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else {
        format!(
            "{} d {} h",
            (s / 86_400.0) as u64,
            ((s % 86_400.0) / 3600.0) as u64
        )
    }
}

fn gib(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    }
}

impl Estimate {
    pub fn render(&self) -> String {
        let mut out = String::from("estimate (nodes to run; docs/design.md §9):\n");
        for c in &self.calibration {
            out.push_str(&format!("  calibration {c}\n"));
        }
        out.push_str(&format!(
            "  {:<12} {:>6}  {:>14}  {:>11}  scales as\n",
            "kind", "nodes", "time", "peak memory"
        ));
        for k in &self.kinds {
            out.push_str(&format!(
                "  {:<12} {:>6}  {:>14}  {:>11}  {}\n",
                k.kind,
                k.count,
                k.seconds.map_or("—".into(), human),
                k.peak_bytes.map_or("—".into(), gib),
                k.scaling
            ));
        }
        let count: usize = self.kinds.iter().map(|k| k.count).sum();
        out.push_str(&format!(
            "  {:<12} {:>6}  {:>14}  {:>11}  one node at a time (all-core and GPU nodes run alone)\n",
            "total",
            count,
            human(self.total_seconds),
            gib(self.peak_bytes)
        ));
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(rows: usize, outputs: usize, rank: usize, agop: bool, seconds: f64) -> RfmPass {
        RfmPass {
            rows,
            val_rows: rows / 5,
            outputs,
            rank,
            agop,
            seconds,
        }
    }

    #[test]
    fn rfm_cost_model_recovers_its_coefficients_and_prices_a_search() {
        let d = 512;
        let (a, b) = (2e-11, 5e-10);
        let it = |n: usize, nv: usize, c: usize, r: usize, gram: bool, agop: bool| {
            let s = IterationShape {
                n,
                nv,
                d,
                r,
                c,
                gram,
                agop,
            };
            a * s.flops() + b * s.eig()
        };
        // The calibration's shape: two binary fits and a 12-class one, iterations 0..=2, M's
        // rank falling from d to r1 to r2.
        let mut passes = vec![];
        for (rows, c, r1, r2) in [(179, 1, 150, 40), (716, 1, 400, 60), (716, 12, 500, 90)] {
            for (r, agop) in [(d, true), (r1, true), (r2, false)] {
                passes.push(pass(rows, c, r, agop, it(rows, rows / 5, c, r, true, agop)));
            }
        }
        let m = RfmCost::fit(&passes, d, false);
        assert!(
            (m.a / a - 1.0).abs() < 1e-9 && (m.b / b - 1.0).abs() < 1e-9,
            "{m:?}"
        );
        assert_eq!(later_ranks(&passes, d, false), (400, 60));
        assert_eq!(later_ranks(&passes, d, true), (500, 90));
        assert_eq!(
            later_ranks(&passes[..1], d, false),
            (d, d),
            "no update seen: rank d"
        );
        assert_eq!(later_ranks(&passes[..2], d, false), (150, 150));

        // A search without a shared Gram: trials × (iteration 0 at rank d, iteration 1 at r1, the
        // later updates and the final refit at r2), on 70 % of the rows, 15 % for validation.
        let (rows, n, nv) = (1000, 700, 150);
        let want = 20.0
            * (it(n, nv, 1, d, true, true)
                + it(n, nv, 1, 400, true, true)
                + 13.0 * it(n, nv, 1, 60, true, true)
                + it(n, nv, 1, 60, true, false));
        let got = m.probe(rows, d, 1, (400, 60), 20.0, 15);
        assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
        // Sharing iteration 0's Gram across trials saves 19 of the 20 Grams, nothing else.
        let shared = RfmCost {
            shared_gram: true,
            ..m
        };
        let gram = it(n, nv, 1, d, true, true) - it(n, nv, 1, d, false, true);
        let got = shared.probe(rows, d, 1, (400, 60), 20.0, 15);
        assert!((got / (want - 19.0 * gram) - 1.0).abs() < 1e-9);
        // Truncation is what makes later iterations cheap: at full rank it costs more.
        assert!(m.probe(rows, d, 1, (d, d), 20.0, 15) > 2.0 * want);

        // Noise that makes a coefficient negative: the other is fitted alone and stays positive.
        let noisy = [pass(716, 1, d, false, 1.0), pass(179, 1, d, true, 5.0)];
        let m = RfmCost::fit(&noisy, d, false);
        assert!(m.a >= 0.0 && m.b >= 0.0 && m.a + m.b > 0.0, "{m:?}");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(12.34), "12.3 s");
        assert_eq!(human(725.0), "12 min 5 s");
        assert_eq!(human(3.5 * 3600.0), "3 h 30 min");
        assert_eq!(human(50.0 * 3600.0), "2 d 2 h");
        assert_eq!(human(-0.0), "0.0 s");
    }
}
