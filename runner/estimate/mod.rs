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
use calibrate::{ModelCalibration, ModelTarget, RenderCalibration};

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

/// The RFM cost of one iteration on `n` training rows of width `d`: `a·(n²d + n³/3 + n d²) +
/// b·d³` — distances, kernel and gradients (n²d), the Cholesky solve (n³/3), projecting rows on
/// M's eigenbasis (n d²) and M's eigendecomposition (d³). `a` and `b` are solved from the two
/// calibration fits; when timing noise makes one negative, it is set to 0 and the other is fitted
/// to the larger fit alone.
pub fn rfm_iteration_seconds(points: &[(usize, f64)], d: usize, rows: usize) -> f64 {
    let g = |rows: usize| {
        let n = 0.7 * rows as f64; // the 70 % training split
        let d = d as f64;
        n * n * d + n * n * n / 3.0 + n * d * d
    };
    let e = (d as f64).powi(3);
    let (a, b) = match points {
        [] => return 0.0,
        [(r, t)] => (t / (g(*r) + e), t / (g(*r) + e)),
        [(r1, t1), (r2, t2), ..] => {
            let (g1, g2) = (g(*r1), g(*r2));
            let det = (g1 - g2) * e;
            let a = (t1 - t2) * e / det;
            let b = (g1 * t2 - g2 * t1) / det;
            if det == 0.0 || !(a.is_finite() && b.is_finite()) {
                (t2 / (g2 + e), t2 / (g2 + e))
            } else if b < 0.0 {
                (t2 / g2, 0.0)
            } else if a < 0.0 {
                (0.0, t2 / e)
            } else {
                (a, b)
            }
        }
    };
    a * g(rows) + b * e
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
    let (c, fresh) = calibrate::cached(
        &path,
        |c: &ModelCalibration| c.version,
        || {
            calibrate::measure_model(&ModelTarget {
                dtype: dtype.clone(),
                ..target.clone()
            })
        },
    )?;
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
            let (r, fresh) = calibrate::cached(
                &path,
                |r: &RenderCalibration| r.version,
                || calibrate::measure_render(cfg, &dir),
            )?;
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
                let trials = n.params["trials"].as_u64().unwrap_or(1) as f64;
                let iters = n.params["iterations"].as_u64().unwrap_or(1) as f64;
                // One-vs-rest probes on the class and as many negatives; the multiclass judge (and
                // the tempo regression) on every clip.
                // (rows, cost factor): binary fits as calibrated, the multiclass judge by the
                // calibrated multiclass/binary ratio.
                let mut rows: Vec<(usize, f64)> = d
                    .per_class
                    .iter()
                    .map(|&p| (2 * p.min(d.clips - p), 1.0))
                    .collect();
                rows.push((d.clips, c.rfm_multiclass.max(1.0)));
                if d.concept == "tempos" {
                    rows.push((d.clips, 1.0));
                }
                let t: f64 = rows
                    .iter()
                    .map(|&(r, f)| {
                        f * trials * iters * rfm_iteration_seconds(&c.rfm_points, c.hidden, r)
                    })
                    .sum();
                let ntr = (0.7 * d.clips as f64) as u64;
                let h = c.hidden as u64;
                // Kernel, its factor and the gradient product (f64); the features and their
                // standardised copies; M and its eigenvectors.
                let bytes = 3 * ntr * ntr * 8 + 3 * d.clips as u64 * h * f32b + 3 * h * h * 8;
                (t, bytes)
            });
            (
                cost,
                "probes × trials × iterations × (a·(n²d + n³/3 + nd²) + b·d³), n training rows"
                    .into(),
            )
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

    #[test]
    fn rfm_cost_model_recovers_its_coefficients_and_scales_up() {
        let d = 512;
        let (a, b) = (2e-11, 5e-10);
        let truth = |rows: usize| {
            let n = 0.7 * rows as f64;
            a * (n * n * d as f64 + n.powi(3) / 3.0 + n * (d * d) as f64) + b * (d as f64).powi(3)
        };
        let pts = [(256, truth(256)), (1024, truth(1024))];
        for rows in [256, 1024, 7000, 9848] {
            let got = rfm_iteration_seconds(&pts, d, rows);
            assert!(
                (got / truth(rows) - 1.0).abs() < 1e-9,
                "{rows}: {got} vs {}",
                truth(rows)
            );
        }
        // Noise that makes a coefficient negative: it is dropped and the larger fit is matched.
        let slower_small = [(256, 1.0), (1024, 0.5)];
        let got = rfm_iteration_seconds(&slower_small, d, 1024);
        assert!((got - 0.5).abs() < 1e-12);
        assert!((rfm_iteration_seconds(&slower_small, d, 7000) - 0.5).abs() < 1e-12);
        let no_constant = [(256, 1e-9), (1024, truth(1024))];
        let got = rfm_iteration_seconds(&no_constant, d, 1024);
        assert!((got / truth(1024) - 1.0).abs() < 1e-9);
        assert!(rfm_iteration_seconds(&no_constant, d, 7000) > truth(1024));
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
