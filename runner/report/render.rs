//! Turns a [`ReportData`] into `index.html` + `assets/` (plots, audio copies, stylesheet).
//!
//! All values are formatted here; the template (templates/report.html) only loops and prints, and
//! minijinja escapes everything it prints (auto-escaping for `.html` templates).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::ReportError;
use super::collect::{self, MetricValue, NodeEntry, NodeState, PointKey, ReportData};
use super::plots::{self, Chart, Series};
use crate::spec::schema::LayerStrategy;

pub const TEMPLATE: &str = include_str!("../../templates/report.html");
pub const STYLESHEET: &str = include_str!("../../templates/report.css");

/// What the report is about besides the node outputs.
#[derive(Debug, Clone)]
pub struct ReportInput {
    pub experiment: String,
    /// The resolved spec (TOML).
    pub spec_toml: String,
    /// `[model] name` / `path`; `None` without a model section.
    pub model_name: Option<String>,
    pub model_path: Option<String>,
    /// `[steer] layers`: marks the layers selected for steering on the probe plots.
    pub layers: Option<LayerStrategy>,
    /// `[evaluate] metrics`, in spec order (columns of the summary table).
    pub metrics: Vec<String>,
    pub nodes: Vec<NodeEntry>,
    /// Also write every plot as PNG.
    pub png: bool,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub rfmx_version: String,
    pub git_commit: String,
    /// The run log the cache hits come from (`None`: no run log found).
    pub run_log: Option<String>,
    /// The page is the cached report node's output, a pure function of its inputs: what changes
    /// per run or per build is not on it but in [`Provenance::FILE`] beside it, written at publish
    /// (docs/design.md §7).
    pub beside: bool,
}

impl Provenance {
    /// Written beside a published `index.html`.
    pub const FILE: &'static str = "provenance.json";

    /// This build's version and the git commit it was built from (recorded by build.rs).
    pub fn current(run_log: Option<String>) -> Provenance {
        Provenance {
            rfmx_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: crate::GIT_COMMIT.into(),
            run_log,
            beside: false,
        }
    }

    /// For the report node: the page points at the file written at publish.
    pub fn beside() -> Provenance {
        let note = format!("in {} beside this page", Provenance::FILE);
        Provenance {
            rfmx_version: note.clone(),
            git_commit: note,
            run_log: None,
            beside: true,
        }
    }
}

/// Counts of what the report could and could not show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub nodes: usize,
    pub missing: usize,
    pub failed: usize,
}

// ---- view model (strings only) ----

#[derive(Serialize)]
struct Cell {
    text: String,
    class: &'static str,
}

#[derive(Serialize)]
struct SummaryRow {
    target: String,
    schedule: String,
    cropping: String,
    gate: String,
    eta: String,
    status: String,
    status_class: &'static str,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct SummaryTable {
    metrics: Vec<String>,
    rows: Vec<SummaryRow>,
    /// `[k] unavailable: <reason>` for the `n/a [k]` cells.
    notes: Vec<String>,
}

#[derive(Serialize)]
struct Figure {
    /// "<colour> <marker>: <full series label>" (the plot's legend truncates long labels).
    legend: Vec<String>,
    src: String,
    alt: String,
    caption: String,
    png: Vec<String>,
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct Table1Row {
    concept: String,
    kind: String,
    best_layer: String,
    test_acc: String,
    mean_test_auc: String,
    layers: String,
}

#[derive(Serialize)]
struct Selection {
    direction: String,
    layers: String,
    judge: String,
}

#[derive(Serialize)]
struct ConfusionRow {
    class: String,
    cells: Vec<ConfusionCell>,
}

#[derive(Serialize)]
struct ConfusionCell {
    text: String,
    /// `shade-0` … `shade-10`: the row fraction in tenths (colours in report.css; no inline styles,
    /// which the page's Content-Security-Policy forbids).
    class: String,
}

#[derive(Serialize)]
struct Confusion {
    title: String,
    classes: Vec<String>,
    rows: Vec<ConfusionRow>,
}

#[derive(Serialize)]
struct ClipRow {
    point: String,
    eta: String,
    prompt: String,
    seed: String,
    steered: Vec<String>,
    baseline: Vec<String>,
    steered_id: String,
}

#[derive(Serialize)]
struct NodeRow {
    id: String,
    kind: String,
    state: String,
    state_class: &'static str,
    seconds: String,
    cache: String,
    key: String,
    error: String,
}

#[derive(Serialize)]
struct MissingRow {
    id: String,
    kind: String,
    state: String,
    error: String,
}

#[derive(Serialize)]
struct Model {
    name: String,
    weights: String,
    weights_class: &'static str,
    descriptions: Vec<String>,
    fingerprints: Vec<String>,
}

#[derive(Serialize)]
struct Page {
    experiment: String,
    counts: String,
    missing: Vec<MissingRow>,
    problems: Vec<String>,
    summary: Vec<SummaryTable>,
    eta_figures: Vec<Figure>,
    probe_figures: Vec<Figure>,
    selections: Vec<Selection>,
    table1: Vec<Table1Row>,
    table1_mean: Vec<Table1Row>,
    confusions: Vec<Confusion>,
    trace_figures: Vec<Figure>,
    clips: Vec<ClipRow>,
    toy: Vec<(String, String)>,
    model: Model,
    renderers: Vec<String>,
    provenance: Provenance,
    cache: String,
    total_seconds: String,
    nodes: Vec<NodeRow>,
    spec: String,
}

// ---- formatting ----

fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.001 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), num)
}

fn metric_cell(m: &MetricValue) -> Cell {
    match m {
        MetricValue::Value {
            value,
            ci_low,
            ci_high,
            n,
        } => {
            let mut text = num(*value);
            if let (Some(lo), Some(hi)) = (ci_low, ci_high) {
                text.push_str(&format!(" [{}, {}]", num(*lo), num(*hi)));
            }
            if let Some(n) = n {
                text.push_str(&format!(" (n={n})"));
            }
            Cell {
                text,
                class: "value",
            }
        }
        MetricValue::Unavailable(why) => Cell {
            text: format!("unavailable: {why}"),
            class: "unavailable",
        },
    }
}

/// A summary cell; an unavailable metric's reason is listed once under the table (a long reason,
/// e.g. where the CLAP snapshot was looked for, would otherwise repeat in every row).
fn summary_cell(m: &MetricValue, notes: &mut Vec<String>) -> Cell {
    match m {
        MetricValue::Unavailable(why) => {
            let i = notes.iter().position(|n| n == why).unwrap_or_else(|| {
                notes.push(why.clone());
                notes.len() - 1
            });
            Cell {
                text: format!("n/a [{}]", i + 1),
                class: "unavailable",
            }
        }
        value => metric_cell(value),
    }
}

/// Axis label (with unit) of a metric.
pub fn metric_axis(metric: &str) -> String {
    match metric {
        "probe_accuracy" => "judge-probe accuracy (fraction of clips)".into(),
        "pitch_hit" => "pitch hit rate (fraction of clips)".into(),
        "chord_hit" => "chord hit rate (fraction of clips)".into(),
        "tempo_error" => "tempo error (BPM)".into(),
        "fd" => "Fréchet distance to baseline (feature units²)".into(),
        "mmd" => "MMD to baseline (kernel units)".into(),
        "clap" => "CLAP text–audio cosine (−1…1)".into(),
        other => format!("{other} (as reported)"),
    }
}

fn point_label(k: &PointKey) -> String {
    let mut parts = vec![k.target.clone(), k.schedule.clone()];
    if !k.cropping.is_empty() {
        parts.push(format!("layers {}", k.cropping));
    }
    if !k.gate.is_empty() {
        parts.push(format!("gate {}", k.gate));
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" · ")
}

fn strategy_label(s: &LayerStrategy) -> String {
    match s {
        LayerStrategy::TopK { k } => format!("top-{k} layers by validation AUC"),
        LayerStrategy::Exponential { w0, kappa } => {
            format!("exponential weights w0={w0}, κ={kappa}; shaded: weight > 0")
        }
        LayerStrategy::All => "all layers".into(),
    }
}

fn safe_name(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "x".into() } else { t }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::fsx::write_atomic(path, bytes).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Hard-links `from` to `to` (store outputs never change; clips can be large), copying when the
/// link fails (another file system); either way through a temp name and a rename.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<(), ReportError> {
    let tmp = crate::fsx::temp_sibling(to);
    let werr = |source| ReportError::Write {
        path: to.display().to_string(),
        source,
    };
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(|source| ReportError::Read {
            path: from.display().to_string(),
            source,
        })?;
    }
    std::fs::rename(&tmp, to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e)
    })
}

struct Figures<'a> {
    dir: &'a Path,
    png: bool,
}

impl Figures<'_> {
    fn add(
        &self,
        chart: &Chart,
        stem: &str,
        alt: String,
        caption: String,
    ) -> Result<Figure, ReportError> {
        let names = plots::write(chart, self.dir, stem, self.png)?;
        let (width, height) = plots::size(chart);
        Ok(Figure {
            legend: chart
                .series
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{}: {}", plots::style_name(i), s.label))
                .collect(),
            src: format!("assets/plots/{}", names[0]),
            alt,
            caption,
            png: names[1..]
                .iter()
                .map(|n| format!("assets/plots/{n}"))
                .collect(),
            width,
            height,
        })
    }
}

// ---- sections ----

fn summary(input: &ReportInput, d: &ReportData) -> Vec<SummaryTable> {
    if d.points.is_empty() {
        return vec![];
    }
    let mut metrics = input.metrics.clone();
    for p in &d.points {
        for m in p.metrics.iter().flat_map(|m| m.keys()) {
            if !metrics.contains(m) {
                metrics.push(m.clone());
            }
        }
    }
    let mut points: Vec<&collect::PointResult> = d.points.iter().collect();
    points.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(
                a.eta
                    .unwrap_or(f64::NAN)
                    .total_cmp(&b.eta.unwrap_or(f64::NAN)),
            )
            .then(a.node_id.cmp(&b.node_id))
    });
    let mut notes = Vec::new();
    let rows = points
        .iter()
        .map(|p| SummaryRow {
            target: p.key.target.clone(),
            schedule: p.key.schedule.clone(),
            cropping: p.key.cropping.clone(),
            gate: p.key.gate.clone(),
            eta: opt(p.eta),
            status: p.status.clone(),
            status_class: if p.metrics.is_some() {
                "done"
            } else {
                "missing"
            },
            cells: metrics
                .iter()
                .map(|m| match &p.metrics {
                    None => Cell {
                        text: p.status.clone(),
                        class: "missing",
                    },
                    Some(ms) => ms.get(m).map_or(
                        Cell {
                            text: "not reported".into(),
                            class: "unavailable",
                        },
                        |v| summary_cell(v, &mut notes),
                    ),
                })
                .collect(),
        })
        .collect();
    let notes = notes
        .into_iter()
        .enumerate()
        .map(|(i, text)| format!("[{}] unavailable: {text}", i + 1))
        .collect();
    vec![SummaryTable {
        metrics,
        rows,
        notes,
    }]
}

fn eta_figures(
    input: &ReportInput,
    d: &ReportData,
    figs: &Figures,
) -> Result<Vec<Figure>, ReportError> {
    let mut metrics: Vec<String> = input.metrics.clone();
    for p in &d.points {
        for m in p.metrics.iter().flat_map(|m| m.keys()) {
            if !metrics.contains(m) {
                metrics.push(m.clone());
            }
        }
    }
    let mut out = Vec::new();
    for m in &metrics {
        let mut groups: BTreeMap<&PointKey, Vec<plots::Point>> = BTreeMap::new();
        let mut baselines: Vec<(&PointKey, plots::Point)> = vec![];
        for p in &d.points {
            let Some(MetricValue::Value {
                value,
                ci_low,
                ci_high,
                ..
            }) = p.metrics.as_ref().and_then(|ms| ms.get(m))
            else {
                continue;
            };
            let Some(eta) = p.eta else { continue };
            let point = (eta, *value, ci_low.zip(*ci_high));
            if eta == 0.0 {
                baselines.push((&p.key, point));
            } else {
                groups.entry(&p.key).or_default().push(point);
            }
        }
        // The unsteered (η = 0) point of a target starts every curve of that target.
        for (key, point) in baselines {
            let mut joined = false;
            for (k, pts) in groups.iter_mut() {
                if k.target == key.target {
                    pts.push(point);
                    joined = true;
                }
            }
            if !joined {
                groups.entry(key).or_default().push(point);
            }
        }
        if groups.is_empty() {
            continue;
        }
        let chart = Chart {
            title: format!("{m} vs steering strength η"),
            x_label: "steering strength η (unitless)".into(),
            y_label: metric_axis(m),
            series: groups
                .into_iter()
                .map(|(k, points)| Series {
                    label: point_label(k),
                    points,
                })
                .collect(),
            marks: vec![],
            marks_label: String::new(),
            y_range: None,
            integer_x: false,
        };
        let n = chart.series.len();
        out.push(figs.add(
            &chart,
            &format!("eta_{}", safe_name(m)),
            format!("{m} against η, one line per schedule and layer cropping, with 95% CIs"),
            format!("{m}: mean with 95% CI per sweep point; {n} line(s), one per target · schedule · cropping · gate."),
        )?);
    }
    Ok(out)
}

struct ProbeSections {
    figures: Vec<Figure>,
    selections: Vec<Selection>,
    table1: Vec<Table1Row>,
    table1_mean: Vec<Table1Row>,
    confusions: Vec<Confusion>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn probes(
    input: &ReportInput,
    d: &ReportData,
    figs: &Figures,
) -> Result<ProbeSections, ReportError> {
    let mut s = ProbeSections {
        figures: vec![],
        selections: vec![],
        table1: vec![],
        table1_mean: vec![],
        confusions: vec![],
    };
    let concepts: BTreeSet<&str> = d
        .probes
        .iter()
        .map(|p| p.concept.as_str())
        .chain(d.directions.iter().map(|x| x.concept.as_str()))
        .collect();
    let mut accs = vec![];
    let mut aucs = vec![];
    for concept in concepts {
        let mut layers: Vec<&collect::ProbeScores> =
            d.probes.iter().filter(|p| p.concept == concept).collect();
        layers.sort_by_key(|p| p.layer);
        // Selected layers: the spec's cropping applied to each direction's per-layer scores.
        let mut marks = BTreeSet::new();
        for dir in d.directions.iter().filter(|x| x.concept == concept) {
            let mut sel = vec![];
            if let Some(strategy) = &input.layers {
                let scores: Vec<f64> = dir.layers.iter().map(|l| l.1).collect();
                match crate::steer::layers::layer_weights(strategy, &scores) {
                    Ok(w) => {
                        for (l, w) in dir.layers.iter().zip(w) {
                            if w > 0.0 {
                                sel.push(l.0);
                                marks.insert(l.0);
                            }
                        }
                    }
                    Err(e) => s.selections.push(Selection {
                        direction: format!("{}:{}", dir.concept, dir.class),
                        layers: format!("cannot select: {e}"),
                        judge: opt(dir.judge_layer.map(|l| l as f64)),
                    }),
                }
            }
            s.selections.push(Selection {
                direction: format!("{}:{}", dir.concept, dir.class),
                layers: {
                    let mut text = if input.layers.is_none() {
                        "no [steer] layers in the spec".to_string()
                    } else {
                        sel.iter()
                            .map(|l| l.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    // Degenerate layers have no direction: weight 0, shown so nobody wonders.
                    if !dir.degenerate.is_empty() {
                        let list: Vec<String> = dir
                            .degenerate
                            .iter()
                            .map(|(l, why)| format!("{l} ({why})"))
                            .collect();
                        text.push_str(&format!("; degenerate, weight 0: {}", list.join(", ")));
                    }
                    text
                },
                judge: dir
                    .judge_layer
                    .map_or_else(|| "–".into(), |l| l.to_string()),
            });
        }
        if !layers.is_empty() {
            let per_layer =
                |f: &dyn Fn(&collect::ProbeScores) -> Option<f64>| -> Vec<plots::Point> {
                    layers
                        .iter()
                        .filter_map(|p| f(p).map(|y| (p.layer as f64, y, None)))
                        .collect()
                };
            let mut series = vec![
                Series {
                    label: "mean one-vs-rest validation AUC".into(),
                    points: per_layer(&|p| mean(p.classes.iter().filter_map(|c| c.val_auc))),
                },
                Series {
                    label: "judge (multiclass) validation accuracy".into(),
                    points: per_layer(&|p| p.mc_val_acc),
                },
            ];
            series.retain(|x| !x.points.is_empty());
            let kind = layers[0].kind.clone();
            let chart = Chart {
                title: format!("{concept}: probe score per layer ({kind})"),
                x_label: "decoder layer (index)".into(),
                y_label: "score (AUC or accuracy, 0–1)".into(),
                series,
                marks: marks.iter().map(|&l| l as f64).collect(),
                marks_label: input
                    .layers
                    .as_ref()
                    .map_or_else(String::new, |l| format!("selected: {}", strategy_label(l))),
                y_range: Some((0.0, 1.02)),
                integer_x: true,
            };
            s.figures.push(figs.add(
                &chart,
                &format!("probe_{}", safe_name(concept)),
                format!("{concept} probe scores against layer; selected layers shaded"),
                format!(
                    "{concept}: per-layer probe scores ({} layer(s)); shaded layers are selected for steering.",
                    layers.len()
                ),
            )?);
            // Table 1: the judge at its layer, by the rule the terminal summary uses too.
            let scores: Vec<crate::stages::ProbeScores> =
                layers.iter().map(|p| p.scores.clone()).collect();
            let pooling = layers[0].pooling.clone();
            let row = crate::stages::judge::table1_row(&pooling, &scores);
            if let Some(r) = &row {
                accs.extend(r.test_acc);
                aucs.extend(r.mean_test_auc);
                s.table1.push(Table1Row {
                    concept: concept.to_string(),
                    kind: r.kind.clone(),
                    best_layer: r.judge_layer.to_string(),
                    test_acc: opt(r.test_acc),
                    mean_test_auc: opt(r.mean_test_auc),
                    layers: r.layers.to_string(),
                });
            }
            // The judge: the directions' judge layer, else the rule's layer.
            let judge_layer = d
                .directions
                .iter()
                .find(|x| x.concept == concept)
                .and_then(|x| x.judge_layer)
                .or(row.map(|r| r.judge_layer as i64));
            if let Some(j) = layers.iter().find(|p| Some(p.layer) == judge_layer)
                && !j.confusion.is_empty()
            {
                s.confusions.push(confusion(concept, j));
            }
        }
    }
    if s.table1.len() > 1 {
        s.table1_mean.push(Table1Row {
            concept: "average".into(),
            kind: String::new(),
            best_layer: String::new(),
            test_acc: opt(mean(accs.into_iter())),
            mean_test_auc: opt(mean(aucs.into_iter())),
            layers: String::new(),
        });
    }
    Ok(s)
}

fn confusion(concept: &str, p: &collect::ProbeScores) -> Confusion {
    let n = p.confusion.len();
    let classes: Vec<String> = (0..n)
        .map(|i| {
            p.mc_classes
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class {i}"))
        })
        .collect();
    let rows = p
        .confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let total: f64 = row.iter().sum();
            ConfusionRow {
                class: classes[i].clone(),
                cells: row
                    .iter()
                    .map(|&c| {
                        let frac = if total > 0.0 { c / total } else { 0.0 };
                        ConfusionCell {
                            text: if c.fract() == 0.0 {
                                format!("{c:.0}")
                            } else {
                                num(c)
                            },
                            class: format!(
                                "shade-{}",
                                (frac * 10.0).round().clamp(0.0, 10.0) as u32
                            ),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Confusion {
        title: format!(
            "{concept}: judge probe at layer {} (test split; rows true class, columns predicted; {})",
            p.layer,
            if p.mc_test_acc.is_some() {
                format!("accuracy {}", opt(p.mc_test_acc))
            } else {
                "accuracy not reported".into()
            }
        ),
        classes,
        rows,
    }
}

fn traces(d: &ReportData, figs: &Figures) -> Result<Vec<Figure>, ReportError> {
    let mut groups: BTreeMap<(String, String), Vec<&[f64]>> = BTreeMap::new();
    for c in d.clips.iter().filter(|c| c.eta != 0.0) {
        if let Some(t) = &c.trace {
            let gate = if c.point.gate.is_empty() {
                "–".into()
            } else {
                c.point.gate.clone()
            };
            groups
                .entry((c.point.schedule.clone(), gate))
                .or_default()
                .push(&t.phi_psi);
        }
    }
    if groups.is_empty() {
        return Ok(vec![]);
    }
    let series: Vec<Series> = groups
        .iter()
        .map(|((schedule, gate), traces)| {
            let steps = traces.iter().map(|t| t.len()).max().unwrap_or(0);
            let points = (0..steps)
                .filter_map(|s| {
                    mean(traces.iter().filter_map(|t| t.get(s).copied()))
                        .map(|y| (s as f64, y, None))
                })
                .collect();
            Series {
                label: format!("{schedule} (gate {gate}, mean of {} clip(s))", traces.len()),
                points,
            }
        })
        .collect();
    let chart = Chart {
        title: "steering envelope φ(t)·ψ(t)".into(),
        x_label: "generation step (decoder frames)".into(),
        y_label: "φ(t)·ψ(t) (unitless multiplier of η)".into(),
        series,
        marks: vec![],
        marks_label: String::new(),
        y_range: None,
        integer_x: true,
    };
    Ok(vec![figs.add(
        &chart,
        "traces",
        "schedule times gate against generation step, one line per schedule".into(),
        "φ(t)·ψ(t) per generation step as realised by the steered generations (schedule × gate).".into(),
    )?])
}

fn clips(d: &ReportData, audio_dir: &Path) -> Result<Vec<ClipRow>, ReportError> {
    let mut copied: BTreeMap<String, String> = BTreeMap::new();
    let mut copy = |c: &collect::Clip| -> Result<Vec<String>, ReportError> {
        let Some(src) = &c.audio else {
            return Ok(vec![]);
        };
        if let Some(rel) = copied.get(&c.node_key) {
            return Ok(vec![rel.clone()]);
        }
        let name = format!("{}.wav", safe_name(&c.node_key));
        link_or_copy(src, &audio_dir.join(&name))?;
        let rel = format!("assets/audio/{name}");
        copied.insert(c.node_key.clone(), rel.clone());
        Ok(vec![rel])
    };
    let baselines: Vec<&collect::Clip> = d.clips.iter().filter(|c| c.eta == 0.0).collect();
    let mut steered: Vec<&collect::Clip> = d.clips.iter().filter(|c| c.eta != 0.0).collect();
    steered.sort_by(|a, b| {
        a.point
            .cmp(&b.point)
            .then(a.eta.total_cmp(&b.eta))
            .then(a.prompt.cmp(&b.prompt))
            .then(a.seed.cmp(&b.seed))
            .then(a.node_id.cmp(&b.node_id))
    });
    let mut used = BTreeSet::new();
    let mut rows = vec![];
    for c in steered {
        let base = baselines
            .iter()
            .find(|b| b.prompt == c.prompt && b.seed == c.seed && b.model == c.model);
        if let Some(b) = base {
            used.insert(b.node_key.clone());
        }
        rows.push(ClipRow {
            point: point_label(&c.point),
            eta: num(c.eta),
            prompt: c.prompt.clone(),
            seed: c.seed.clone(),
            steered: copy(c)?,
            baseline: match base {
                Some(b) => copy(b)?,
                None => vec![],
            },
            steered_id: c.node_id.clone(),
        });
    }
    for b in baselines.iter().filter(|b| !used.contains(&b.node_key)) {
        rows.push(ClipRow {
            point: "unsteered baseline only".into(),
            eta: "0".into(),
            prompt: b.prompt.clone(),
            seed: b.seed.clone(),
            steered: vec![],
            baseline: copy(b)?,
            steered_id: String::new(),
        });
    }
    Ok(rows)
}

fn model(input: &ReportInput, d: &ReportData) -> Model {
    let tiny_named = input.model_name.as_deref() == Some("tiny") && input.model_path.is_none();
    let random = tiny_named
        || d.model_descriptions
            .iter()
            .any(|s| s.to_ascii_lowercase().contains("random weights"));
    let name = match (&input.model_name, &input.model_path) {
        (_, Some(p)) => format!("snapshot at {p}"),
        (Some(n), None) => n.clone(),
        (None, None) => "no model section (no model ran)".into(),
    };
    let (weights, weights_class) = if random {
        (
            "RANDOM WEIGHTS: the embedded tiny model is seeded, not trained. These results exercise the \
             pipeline; they say nothing about music."
                .to_string(),
            "warning",
        )
    } else if input.model_name.is_none() && d.model_descriptions.is_empty() {
        ("No model weights were involved.".into(), "note")
    } else {
        (
            "Trained weights (see the description and fingerprint below).".into(),
            "note",
        )
    };
    Model {
        name,
        weights,
        weights_class,
        descriptions: d.model_descriptions.clone(),
        fingerprints: d.fingerprints.clone(),
    }
}

fn nodes(input: &ReportInput) -> (Vec<NodeRow>, Vec<MissingRow>, String, String) {
    let mut rows = vec![];
    let mut missing = vec![];
    let (mut hits, mut computed, mut total) = (0, 0, 0.0);
    for n in &input.nodes {
        let (state, class, error) = match &n.state {
            NodeState::Done(_) => ("done", "done", String::new()),
            NodeState::Missing => ("missing", "missing", String::new()),
            NodeState::Failed(e) => ("failed", "failed", e.clone()),
        };
        if !matches!(n.state, NodeState::Done(_)) {
            missing.push(MissingRow {
                id: n.id.clone(),
                kind: n.kind.clone(),
                state: state.into(),
                error: error.clone(),
            });
        }
        match n.cached {
            Some(true) => hits += 1,
            Some(false) => computed += 1,
            None => {}
        }
        total += n.seconds.unwrap_or(0.0);
        rows.push(NodeRow {
            id: n.id.clone(),
            kind: n.kind.clone(),
            state: state.into(),
            state_class: class,
            seconds: n.seconds.map_or_else(|| "–".into(), |s| format!("{s:.2}")),
            cache: match n.cached {
                Some(true) => "cache hit".into(),
                Some(false) => "computed".into(),
                None => "–".into(),
            },
            key: n.key.chars().take(12).collect(),
            error,
        });
    }
    let cache = match &input.provenance.run_log {
        _ if input.provenance.beside => format!(
            "cache hits of the run that published this page: in {} beside it",
            Provenance::FILE
        ),
        Some(log) => format!(
            "{hits} cache hit(s), {computed} computed, {} not in the run log ({log})",
            input.nodes.len() - hits - computed
        ),
        None => "no run log found: cache hits unknown".into(),
    };
    (rows, missing, cache, format!("{total:.2} s"))
}

/// HTML-escapes every printed string (`&`, `<`, `>`, `"`, `'`); other values go through minijinja's
/// escaping formatter. Unlike minijinja's default it leaves `/` alone, so that paths stay readable.
fn html_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(s) if !value.is_safe() => {
            let mut escaped = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    '&' => escaped.push_str("&amp;"),
                    '<' => escaped.push_str("&lt;"),
                    '>' => escaped.push_str("&gt;"),
                    '"' => escaped.push_str("&quot;"),
                    '\'' => escaped.push_str("&#39;"),
                    c => escaped.push(c),
                }
            }
            out.write_str(&escaped).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Renders the report into `out_dir` (`index.html`, `assets/`).
pub fn render(input: &ReportInput, out_dir: &Path) -> Result<Rendered, ReportError> {
    let d = collect::collect(&input.nodes);
    let assets = out_dir.join("assets");
    let plot_dir = assets.join("plots");
    let audio_dir = assets.join("audio");
    for dir in [&plot_dir, &audio_dir] {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    write(&assets.join("report.css"), STYLESHEET.as_bytes())?;
    let figs = Figures {
        dir: &plot_dir,
        png: input.png,
    };
    let probe = probes(input, &d, &figs)?;
    let (node_rows, missing, cache, total_seconds) = nodes(input);
    let failed = missing.iter().filter(|m| m.state == "failed").count();
    let done = input.nodes.len() - missing.len();
    let page = Page {
        experiment: input.experiment.clone(),
        counts: format!(
            "{done} of {} result node(s) present, {} missing, {failed} failed",
            input.nodes.len(),
            missing.len() - failed
        ),
        problems: d.problems.clone(),
        summary: summary(input, &d),
        eta_figures: eta_figures(input, &d, &figs)?,
        probe_figures: probe.figures,
        selections: probe.selections,
        table1: probe.table1,
        table1_mean: probe.table1_mean,
        confusions: probe.confusions,
        trace_figures: traces(&d, &figs)?,
        clips: clips(&d, &audio_dir)?,
        toy: d.toy.clone(),
        model: model(input, &d),
        renderers: d.renderers.clone(),
        provenance: input.provenance.clone(),
        cache,
        total_seconds,
        nodes: node_rows,
        missing,
        spec: input.spec_toml.clone(),
    };
    let mut env = minijinja::Environment::new();
    env.set_formatter(html_formatter);
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| ReportError::Template(e.to_string()))?;
    let html = env
        .get_template("report.html")
        .and_then(|t| t.render(&page))
        .map_err(|e| ReportError::Template(format!("{e:#}")))?;
    write(&out_dir.join("index.html"), html.as_bytes())?;
    Ok(Rendered {
        nodes: input.nodes.len(),
        missing: page.missing.len() - failed,
        failed,
    })
}
