//! Reads node outputs (CONTRACT.md formats only) into a [`ReportData`]. Every file is optional: a
//! missing or unreadable file becomes a note in the report, never an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

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

/// One metric of one sweep point.
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

/// The point fields that identify a sweep point (strings for display and grouping).
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
    pub node_id: String,
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

/// The sweep label the engine appends to ids that differ across points (`id{key=value,...}`).
fn sweep_label(id: &str) -> Option<&str> {
    id.strip_suffix('}')
        .and_then(|s| s.rsplit_once('{'))
        .map(|(_, l)| l)
        .filter(|l| !l.is_empty())
}

/// A number in its shortest form: `0` for 0.0, `0.45` for 0.45.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn read_json(path: &Path, problems: &mut Vec<String>) -> Option<Value> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{} does not parse: {e}", path.display()));
            None
        }
    }
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn point_key(p: &Value) -> PointKey {
    PointKey {
        target: p.get("target").map(label).unwrap_or_default(),
        schedule: p.get("schedule").map(label).unwrap_or_default(),
        cropping: p
            .get("layers")
            .or_else(|| p.get("cropping"))
            .map(label)
            .unwrap_or_default(),
        gate: p.get("gate").map(label).unwrap_or_default(),
    }
}

/// Parses `kind[<target>|<schedule>|g<gate>|eta<eta>...]` (the steer node ids) for nodes without
/// outputs, so that a missing sweep point still gets its row.
fn point_from_id(id: &str) -> (PointKey, Option<f64>) {
    let inner = id
        .split_once('[')
        .and_then(|(_, r)| r.rsplit_once(']'))
        .map_or("", |(i, _)| i);
    let parts: Vec<&str> = inner.split('|').collect();
    let mut key = PointKey {
        cropping: sweep_label(id).unwrap_or_default().to_string(),
        ..PointKey::default()
    };
    let mut eta = None;
    if let Some(t) = parts.first() {
        key.target = (*t).to_string();
    }
    if let Some(s) = parts.get(1) {
        key.schedule = (*s).to_string();
    }
    for p in parts.iter().skip(2) {
        if let Some(g) = p.strip_prefix('g') {
            key.gate = g.parse().map_or_else(|_| g.to_string(), number);
        } else if let Some(e) = p.strip_prefix("eta") {
            eta = e.parse().ok();
        }
    }
    (key, eta)
}

fn metric(v: &Value) -> MetricValue {
    if let Some(r) = v.get("unavailable") {
        return MetricValue::Unavailable(label(r));
    }
    match f(v, "value") {
        Some(value) => MetricValue::Value {
            value,
            ci_low: f(v, "ci_low"),
            ci_high: f(v, "ci_high"),
            n: v.get("n").and_then(Value::as_u64),
        },
        None => MetricValue::Unavailable("no numeric value".into()),
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
            "generation" => generation(n, &mut d),
            "probe" => probe(n, &mut d),
            "directions" => directions(n, &mut d),
            "activations" => {
                if let Some(dir) = n.dir()
                    && let Some(v) = read_json(&dir.join("index.json"), &mut d.problems)
                {
                    push_unique(
                        &mut d.model_descriptions,
                        v.get("model").map(label).unwrap_or_default(),
                    );
                }
            }
            "dataset" => {
                // The data store's manifest says which renderer ran; the params say what was asked.
                let ran = n
                    .dir()
                    .and_then(|dir| read_json(&dir.join("manifest.json"), &mut d.problems))
                    .and_then(|m| m.get("renderer").cloned());
                let r = match ran {
                    Some(r) => renderer(&r),
                    None => soundfont_param(n.params.get("soundfont").unwrap_or(&Value::Null)),
                };
                push_unique(&mut d.renderers, r);
            }
            "toy_square" | "toy_sum" => {
                if let Some(dir) = n.dir() {
                    let file = if n.kind == "toy_sum" {
                        "sum.json"
                    } else {
                        "value.json"
                    };
                    if let Some(v) = read_json(&dir.join(file), &mut d.problems) {
                        d.toy.push((n.id.clone(), v.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    d
}

/// `RendererInfo` of the data store manifest: `{kind: soundfont, path, blake3}` | `{kind: builtin, version}`.
fn renderer(r: &Value) -> String {
    match r.get("kind").and_then(Value::as_str) {
        Some("soundfont") => format!(
            "SoundFont {} (blake3 {})",
            r.get("path").map(label).unwrap_or_default(),
            r.get("blake3").map(label).unwrap_or_default()
        ),
        Some("builtin") => format!(
            "built-in synthesiser (version {}), no SoundFont",
            r.get("version").map(label).unwrap_or_default()
        ),
        _ => label(r),
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
        .and_then(|dir| read_json(&dir.join("metrics.json"), &mut d.problems));
    let (key, eta, metrics, status) = match from_file {
        Some(v) => {
            let p = v.get("point").cloned().unwrap_or(Value::Null);
            let metrics: BTreeMap<String, MetricValue> = v
                .get("metrics")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), metric(v))).collect())
                .unwrap_or_default();
            // The CLAP model that scored text alignment is named beside the generating model.
            if let Some(m) = v.pointer("/metrics/clap/model") {
                push_unique(&mut d.model_descriptions, format!("clap: {}", label(m)));
            }
            let mut key = point_key(&p);
            if key.cropping.is_empty() {
                // Points that differ only in a swept knob the point does not name.
                key.cropping = sweep_label(&n.id).unwrap_or_default().to_string();
            }
            (key, f(&p, "eta"), Some(metrics), status)
        }
        None => {
            let (k, e) = point_from_id(&n.id);
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
    });
}

fn generation(n: &NodeEntry, d: &mut ReportData) {
    let Some(dir) = n.dir() else {
        return;
    };
    let meta = read_json(&dir.join("meta.json"), &mut d.problems).unwrap_or(Value::Null);
    let (id_key, id_eta) = point_from_id(&n.id);
    let mut point = if meta.is_null() {
        id_key
    } else {
        point_key(&meta)
    };
    if point.cropping.is_empty() {
        point.cropping = n
            .params
            .get("layers")
            .map(label)
            .or_else(|| sweep_label(&n.id).map(str::to_string))
            .unwrap_or_default();
    }
    let trace = read_json(&dir.join("trace.json"), &mut d.problems).and_then(|t| {
        let phi: Vec<f64> = t
            .get("phi")?
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let psi: Vec<f64> = t
            .get("psi")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_else(|| vec![1.0; phi.len()]);
        Some(Trace {
            phi_psi: phi.iter().zip(&psi).map(|(a, b)| a * b).collect(),
        })
    });
    let model = meta.get("model").map(label).unwrap_or_default();
    push_unique(
        &mut d.model_descriptions,
        meta.get("model_description")
            .map(label)
            .unwrap_or_else(|| model.clone()),
    );
    let audio = dir.join("audio.wav");
    d.clips.push(Clip {
        node_key: n.key.clone(),
        node_id: n.id.clone(),
        audio: audio.is_file().then_some(audio),
        point,
        eta: f(&meta, "eta").or(id_eta).unwrap_or(0.0),
        prompt: meta.get("prompt").map(label).unwrap_or_default(),
        seed: meta.get("seed").map(label).unwrap_or_default(),
        model,
        trace,
    });
}

fn probe(n: &NodeEntry, d: &mut ReportData) {
    let Some(dir) = n.dir() else {
        return;
    };
    let Some(v) = read_json(&dir.join("scores.json"), &mut d.problems) else {
        return;
    };
    let classes = v
        .get("classes")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(c, s)| ClassScore {
                    class: c.clone(),
                    val_auc: f(s, "val_auc"),
                    test_auc: f(s, "test_auc"),
                    test_acc: f(s, "test_acc"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mc = v.get("multiclass").cloned().unwrap_or(Value::Null);
    let confusion = mc
        .get("confusion")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| r.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    d.probes.push(ProbeScores {
        node_id: n.id.clone(),
        concept: v.get("concept").map(label).unwrap_or_default(),
        layer: v.get("layer").and_then(Value::as_i64).unwrap_or(-1),
        kind: v.get("kind").map(label).unwrap_or_default(),
        classes,
        mc_val_acc: f(&mc, "val_acc"),
        mc_test_acc: f(&mc, "test_acc"),
        confusion,
        mc_classes: mc
            .get("classes")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(label).collect())
            .unwrap_or_default(),
    });
}

fn directions(n: &NodeEntry, d: &mut ReportData) {
    let Some(dir) = n.dir() else {
        return;
    };
    let Some(v) = read_json(&dir.join("scores.json"), &mut d.problems) else {
        return;
    };
    d.directions.push(DirectionScores {
        concept: v.get("concept").map(label).unwrap_or_default(),
        class: v.get("class").map(label).unwrap_or_default(),
        layers: v
            .get("layers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|l| l.get("degenerate").is_none())
                    .filter_map(|l| Some((l.get("layer")?.as_i64()?, f(l, "val_auc")?)))
                    .collect()
            })
            .unwrap_or_default(),
        degenerate: v
            .get("layers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|l| {
                        Some((l.get("layer")?.as_i64()?, l.get("degenerate").map(label)?))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        judge_layer: v.get("judge_layer").and_then(Value::as_i64),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_parse_for_missing_nodes() {
        let (k, eta) = point_from_id("evaluation[notes:C|linear_down|g0.50|eta0.45]{steer.x=1}");
        assert_eq!(k.target, "notes:C");
        assert_eq!(k.schedule, "linear_down");
        assert_eq!(k.gate, "0.5");
        assert_eq!(point_from_id("evaluation[t|c|g0.0|eta0]").0.gate, "0");
        assert_eq!(label(&serde_json::json!(0.0)), "0");
        assert_eq!(eta, Some(0.45));
        assert_eq!(
            label(&serde_json::json!({"strategy": "top_k", "k": 2})),
            "top_k(k=2)"
        );
        assert_eq!(label(&serde_json::json!({"a": 1, "b": "x"})), "a=1, b=x");
        assert_eq!(
            sweep_label("evaluation[a|b]{steer.layers=x}"),
            Some("steer.layers=x")
        );
        assert_eq!(sweep_label("evaluation[a|b]"), None);
        let (k, eta) = point_from_id("nonsense");
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
