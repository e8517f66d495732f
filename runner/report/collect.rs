//! Reads node outputs, through the kinds' own output types (`crate::stages::contract`), into a
//! [`ReportData`]. Every file is optional: a missing or unreadable file becomes a note in the
//! report, never an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dag::Label;
use crate::eval::stats::MetricEntry;
use crate::stages::activations::ActivationsIndex;
use crate::stages::contract::Output;
use crate::stages::directions::DirectionScores as DirectionsOut;
use crate::stages::evaluation::Metrics;
use crate::stages::generation::{GenerationMeta, Trace as TraceOut};
use crate::stages::probe::ProbeScores as ProbeOut;
use crate::stages::toy::{ToyTotal, ToyValue};

/// The state of one node whose results the report shows.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeState {
    /// Computed: its output directory.
    Done(PathBuf),
    /// Not computed (yet).
    Missing,
    /// Its last run failed: the error chain.
    Failed(String),
}

/// One node of the plan as the report sees it.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub id: String,
    pub kind: String,
    pub key: String,
    /// What the node is about (target, schedule, gate, η, sweep assignment, ...).
    pub label: Label,
    pub state: NodeState,
    /// Compute time from the node's manifest.
    pub seconds: Option<f64>,
    pub fingerprint: Option<String>,
    pub params: Value,
    /// Whether the run that rendered the report found it cached (`None`: no run log says).
    pub cached: Option<bool>,
    /// When its computation started (unix seconds, from the manifest).
    pub started: Option<f64>,
}

impl NodeEntry {
    pub fn dir(&self) -> Option<&Path> {
        match &self.state {
            NodeState::Done(d) => Some(d),
            _ => None,
        }
    }
}

/// One metric of one setting (target · schedule · layers · gate · η).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Value {
        value: f64,
        ci_low: Option<f64>,
        ci_high: Option<f64>,
        n: Option<u64>,
    },
    Unavailable(String),
}

/// The fields that identify a setting apart from η (strings for display and grouping).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PointKey {
    pub target: String,
    pub schedule: String,
    pub cropping: String,
    pub gate: String,
}

#[derive(Debug, Clone)]
pub struct PointResult {
    pub node_id: String,
    pub key: PointKey,
    pub eta: Option<f64>,
    /// `None` while the evaluation node is missing or failed.
    pub metrics: Option<BTreeMap<String, MetricValue>>,
    pub status: String,
    /// Generations behind the metrics (0 while missing).
    pub generations: usize,
    /// Planned by a search (not by the spec's grid).
    pub search: bool,
}

#[derive(Debug, Clone)]
pub struct Clip {
    pub node_key: String,
    pub node_id: String,
    pub audio: Option<PathBuf>,
    pub point: PointKey,
    pub eta: f64,
    pub prompt: String,
    pub seed: String,
    pub model: String,
    pub trace: Option<Trace>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// φ(t)·ψ(t) per step.
    pub phi_psi: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct ClassScore {
    pub class: String,
    pub val_auc: Option<f64>,
    pub test_auc: Option<f64>,
    pub test_acc: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct ProbeScores {
    /// The node's own output (for the rules shared with the terminal summary).
    pub scores: ProbeOut,
    pub node_id: String,
    /// The pooling of the activations it was fitted on (from its label).
    pub pooling: String,
    pub concept: String,
    pub layer: i64,
    pub kind: String,
    pub classes: Vec<ClassScore>,
    pub mc_val_acc: Option<f64>,
    pub mc_test_acc: Option<f64>,
    pub confusion: Vec<Vec<f64>>,
    pub mc_classes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DirectionScores {
    pub concept: String,
    pub class: String,
    /// (layer, val_auc) of the layers with a usable direction
    pub layers: Vec<(i64, f64)>,
    /// Layers whose direction is degenerate (weight 0 in layer cropping), with the reason.
    pub degenerate: Vec<(i64, String)>,
    pub judge_layer: Option<i64>,
}

/// Everything the report shows, read from the nodes' outputs.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub points: Vec<PointResult>,
    pub clips: Vec<Clip>,
    pub probes: Vec<ProbeScores>,
    pub directions: Vec<DirectionScores>,
    /// Model descriptions found in outputs (generation meta, activations index).
    pub model_descriptions: Vec<String>,
    pub fingerprints: Vec<String>,
    /// How the datasets were rendered.
    pub renderers: Vec<String>,
    /// Outputs of the runner's toy nodes: (id, value).
    pub toy: Vec<(String, String)>,
    /// Transfer blocks: probes scored on another dataset (docs/design.md §5).
    pub transfers: Vec<crate::stages::transfer::TransferScores>,
    /// Finished searches (`search.json`), with their node ids.
    pub searches: Vec<(String, crate::stages::search::SearchResult)>,
    /// Files that exist but could not be read.
    pub problems: Vec<String>,
}

/// A JSON value as a short label: strings as they are, other values compactly.
pub fn label(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), number),
        Value::Object(o) if o.is_empty() => String::new(),
        // `{"strategy": "top_k", "k": 2}` -> `top_k(k=2)`; other objects -> `a=1, b=x`.
        Value::Object(o) => {
            let args: Vec<String> = o
                .iter()
                .filter(|(k, _)| k.as_str() != "strategy")
                .map(|(k, v)| format!("{k}={}", label(v)))
                .collect();
            match o.get("strategy") {
                Some(s) => format!("{}({})", label(s), args.join(", ")),
                None => args.join(", "),
            }
        }
        other => other.to_string(),
    }
}

/// A number in its shortest form: `0` for 0.0, `0.45` for 0.45.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A node's output file through its contract type; a file that exists but cannot be read or does
/// not match its format is noted in `problems`.
fn read<T: Output>(dir: &Path, problems: &mut Vec<String>) -> Option<T> {
    let path = dir.join(T::FILE);
    if !path.exists() {
        return None;
    }
    match T::read(dir) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    }
}

/// The setting a node belongs to, from its label (for nodes without outputs, so that a missing
/// setting still gets its row).
fn point_from_label(l: &Label) -> (PointKey, Option<f64>) {
    let key = PointKey {
        target: l.target.clone().unwrap_or_default(),
        schedule: l.schedule.clone().unwrap_or_default(),
        cropping: l.sweep_text(),
        gate: l.gate.map(number).unwrap_or_default(),
    };
    (key, l.eta)
}

fn metric(v: &MetricEntry) -> MetricValue {
    match v {
        MetricEntry::Unavailable { unavailable } => MetricValue::Unavailable(unavailable.clone()),
        MetricEntry::Estimate {
            value: Some(value),
            ci_low,
            ci_high,
            n,
            ..
        } if value.is_finite() => MetricValue::Value {
            value: *value,
            ci_low: ci_low.filter(|x| x.is_finite()),
            ci_high: ci_high.filter(|x| x.is_finite()),
            n: Some(*n as u64),
        },
        MetricEntry::Estimate { .. } => MetricValue::Unavailable("no numeric value".into()),
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !s.is_empty() && !v.contains(&s) {
        v.push(s);
    }
}

/// Reads every node's outputs.
pub fn collect(nodes: &[NodeEntry]) -> ReportData {
    let mut d = ReportData::default();
    for n in nodes {
        if let Some(fp) = &n.fingerprint {
            push_unique(&mut d.fingerprints, fp.clone());
        }
        match n.kind.as_str() {
            "evaluation" => evaluation(n, &mut d),
            "search" => {
                if let Some(dir) = n.dir()
                    && let Some(v) = read(dir, &mut d.problems)
                {
                    d.searches.push((n.id.clone(), v));
                }
            }
            "generation" => generation(n, &mut d),
            "probe" => probe(n, &mut d),
            "directions" => directions(n, &mut d),
            "transfer" => {
                if let Some(dir) = n.dir()
                    && let Some(v) = read(dir, &mut d.problems)
                {
                    d.transfers.push(v);
                }
            }
            "activations" => {
                if let Some(dir) = n.dir()
                    && let Some(v) = read::<ActivationsIndex>(dir, &mut d.problems)
                {
                    push_unique(&mut d.model_descriptions, v.model);
                }
            }
            "dataset" => {
                // The data store's manifest says which renderer ran; the params say what was asked.
                let ran = n
                    .dir()
                    .and_then(|dir| read::<crate::data::Manifest>(dir, &mut d.problems))
                    .map(|m| m.renderer);
                let r = match ran {
                    Some(r) => renderer(&r),
                    None => soundfont_param(n.params.get("soundfont").unwrap_or(&Value::Null)),
                };
                push_unique(&mut d.renderers, r);
            }
            "toy_square" => {
                if let Some(dir) = n.dir()
                    && let Some(v) = read::<ToyValue>(dir, &mut d.problems)
                {
                    d.toy
                        .push((n.id.clone(), serde_json::to_string(&v).unwrap_or_default()));
                }
            }
            "toy_sum" => {
                if let Some(dir) = n.dir()
                    && let Some(v) = read::<ToyTotal>(dir, &mut d.problems)
                {
                    d.toy
                        .push((n.id.clone(), serde_json::to_string(&v).unwrap_or_default()));
                }
            }
            _ => {}
        }
    }
    // A search's screening rungs (fewer generations than the full sample set) are shown with
    // their search, not as settings beside the full evaluations of the same point.
    let full = d.points.iter().map(|p| p.generations).max().unwrap_or(0);
    d.points.retain(|p| !(p.search && p.generations < full));
    d
}

/// How a dataset was rendered.
fn renderer(r: &crate::data::RendererInfo) -> String {
    match r {
        crate::data::RendererInfo::Soundfont { path, blake3 } => {
            format!("SoundFont {path} (blake3 {blake3})")
        }
        crate::data::RendererInfo::Builtin { version } => {
            format!("built-in synthesiser (version {version}), no SoundFont")
        }
        crate::data::RendererInfo::Folder { files, fingerprint } => {
            format!("folder of {files} audio file(s) (blake3 {fingerprint})")
        }
    }
}

/// The dataset node's `soundfont` param (what was asked, when the node has not run).
fn soundfont_param(sf: &Value) -> String {
    match sf {
        Value::Null => "built-in synthesiser (no SoundFont)".into(),
        Value::Object(o) if o.contains_key("missing") => format!(
            "SoundFont {} missing: built-in synthesiser",
            o.get("missing").map(label).unwrap_or_default()
        ),
        Value::Object(o) => format!(
            "SoundFont{} (blake3 {})",
            o.get("path")
                .map(|p| format!(" {}", label(p)))
                .unwrap_or_default(),
            o.get("blake3").map(label).unwrap_or_default()
        ),
        other => format!("SoundFont {}", label(other)),
    }
}

fn evaluation(n: &NodeEntry, d: &mut ReportData) {
    let status = match &n.state {
        NodeState::Done(_) => "done",
        NodeState::Missing => "missing",
        NodeState::Failed(_) => "failed",
    };
    let from_file = n
        .dir()
        .and_then(|dir| read::<Metrics>(dir, &mut d.problems));
    let generations = from_file.as_ref().map_or(0, |m| m.point.n_generations);
    let (key, eta, metrics, status) = match from_file {
        Some(m) => {
            let metrics: BTreeMap<String, MetricValue> = m
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), metric(v)))
                .collect();
            // The CLAP model that scored text alignment is named beside the generating model.
            if let Some(MetricEntry::Estimate {
                model: Some(model), ..
            }) = m.metrics.get("clap")
            {
                push_unique(&mut d.model_descriptions, format!("clap: {model}"));
            }
            let p = &m.point;
            let mut key = PointKey {
                target: p.target.clone(),
                schedule: p.schedule.clone(),
                cropping: p.layers.as_ref().map(layers_label).unwrap_or_default(),
                gate: number(p.gate),
            };
            if key.cropping.is_empty() {
                // Points that differ only in a swept knob the point does not name.
                key.cropping = n.label.sweep_text();
            }
            (
                key,
                Some(p.eta).filter(|e| e.is_finite()),
                Some(metrics),
                status,
            )
        }
        None => {
            let (k, e) = point_from_label(&n.label);
            let status = if status == "done" {
                "no metrics.json"
            } else {
                status
            };
            (k, e, None, status)
        }
    };
    d.points.push(PointResult {
        node_id: n.id.clone(),
        key,
        eta,
        metrics,
        status: status.to_string(),
        generations,
        search: n.label.search.is_some(),
    });
}

/// A layer strategy as a short label: `top_k(k=2)`, `exponential(kappa=0.95, w0=1)`.
fn layers_label(l: &crate::spec::schema::LayerStrategy) -> String {
    serde_json::to_value(l)
        .map(|v| label(&v))
        .unwrap_or_default()
}

fn generation(n: &NodeEntry, d: &mut ReportData) {
    let Some(dir) = n.dir() else {
        return;
    };
    let meta = read::<GenerationMeta>(dir, &mut d.problems);
    let (label_key, label_eta) = point_from_label(&n.label);
    let mut point = match &meta {
        Some(m) => PointKey {
            target: m.target.clone(),
            schedule: m.schedule.clone(),
            cropping: m.layers.as_ref().map(layers_label).unwrap_or_default(),
            gate: number(m.gate),
        },
        None => label_key,
    };
    if point.cropping.is_empty() {
        point.cropping = n
            .params
            .get("layers")
            .map(label)
            .filter(|t| !t.is_empty())
            .or_else(|| Some(n.label.sweep_text()).filter(|t| !t.is_empty()))
            .unwrap_or_default();
    }
    let trace = read::<TraceOut>(dir, &mut d.problems).map(|t| {
        let psi = t.psi.open_fraction();
        Trace {
            phi_psi: t
                .phi
                .iter()
                .enumerate()
                .map(|(i, p)| p * psi.get(i).copied().unwrap_or(1.0))
                .collect(),
        }
    });
    let model = meta.as_ref().map(|m| m.model.clone()).unwrap_or_default();
    push_unique(
        &mut d.model_descriptions,
        meta.as_ref()
            .map(|m| m.model_description.clone())
            .unwrap_or_else(|| model.clone()),
    );
    let audio = dir.join("audio.wav");
    d.clips.push(Clip {
        node_key: n.key.clone(),
        node_id: n.id.clone(),
        audio: audio.is_file().then_some(audio),
        point,
        eta: meta.as_ref().map(|m| m.eta).or(label_eta).unwrap_or(0.0),
        prompt: meta.as_ref().map(|m| m.prompt.clone()).unwrap_or_default(),
        seed: meta
            .as_ref()
            .map(|m| m.seed.to_string())
            .unwrap_or_default(),
        model,
        trace,
    });
}

fn probe(n: &NodeEntry, d: &mut ReportData) {
    let Some(dir) = n.dir() else {
        return;
    };
    let Some(v) = read::<ProbeOut>(dir, &mut d.problems) else {
        return;
    };
    d.probes.push(ProbeScores {
        node_id: n.id.clone(),
        pooling: n.label.pooling.clone().unwrap_or_default(),
        concept: v.concept.clone(),
        layer: v.layer as i64,
        kind: serde_json::to_value(v.kind)
            .map(|k| label(&k))
            .unwrap_or_default(),
        classes: v
            .classes
            .iter()
            .map(|(c, s)| ClassScore {
                class: c.clone(),
                val_auc: s.val_auc,
                test_auc: s.test_auc,
                test_acc: s.test_acc,
            })
            .collect(),
        mc_val_acc: v.multiclass.val_acc,
        mc_test_acc: v.multiclass.test_acc,
        confusion: v
            .multiclass
            .confusion
            .iter()
            .map(|r| r.iter().map(|&x| x as f64).collect())
            .collect(),
        mc_classes: v.multiclass.classes.clone(),
        scores: v,
    });
}

fn directions(n: &NodeEntry, d: &mut ReportData) {
    let Some(dir) = n.dir() else {
        return;
    };
    let Some(v) = read::<DirectionsOut>(dir, &mut d.problems) else {
        return;
    };
    d.directions.push(DirectionScores {
        concept: v.concept,
        class: v.class,
        layers: v
            .layers
            .iter()
            .filter(|l| l.degenerate.is_none())
            .filter_map(|l| Some((l.layer as i64, l.val_auc?)))
            .collect(),
        degenerate: v
            .layers
            .iter()
            .filter_map(|l| Some((l.layer as i64, l.degenerate.clone()?)))
            .collect(),
        judge_layer: Some(v.judge_layer as i64),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_points_are_placed_by_their_labels() {
        let l = Label {
            target: Some("notes:C".into()),
            schedule: Some("linear_down".into()),
            gate: Some(0.5),
            eta: Some(0.45),
            sweep: vec![("steer.x".into(), serde_json::json!(1))],
            ..Label::default()
        };
        let (k, eta) = point_from_label(&l);
        assert_eq!(k.target, "notes:C");
        assert_eq!(k.schedule, "linear_down");
        assert_eq!(k.gate, "0.5");
        assert_eq!(k.cropping, "steer.x=1");
        assert_eq!(eta, Some(0.45));
        assert_eq!(label(&serde_json::json!(0.0)), "0");
        assert_eq!(
            label(&serde_json::json!({"strategy": "top_k", "k": 2})),
            "top_k(k=2)"
        );
        assert_eq!(label(&serde_json::json!({"a": 1, "b": "x"})), "a=1, b=x");
        let (k, eta) = point_from_label(&Label::default());
        assert_eq!(k, PointKey::default());
        assert_eq!(eta, None);
    }

    #[test]
    fn unreadable_files_are_noted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.json"), b"{ not json").unwrap();
        let n = NodeEntry {
            id: "evaluation[t|constant|g0|eta0.3]".into(),
            kind: "evaluation".into(),
            key: "k".into(),
            label: Label {
                eta: Some(0.3),
                ..Label::default()
            },
            state: NodeState::Done(dir.path().into()),
            seconds: None,
            fingerprint: None,
            params: Value::Null,
            cached: None,
            started: None,
        };
        let d = collect(&[n]);
        assert_eq!(d.points.len(), 1);
        assert_eq!(d.points[0].status, "no metrics.json");
        assert_eq!(d.points[0].eta, Some(0.3));
        assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    }
}
