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
use crate::spec::schema::{LayerStrategy, ReportAudio};

/// The report's pages (minijinja, `templates/report/`): the overview, per-section detail pages and
/// one audio page per target share `base.html`.
pub const TEMPLATES: [(&str, &str); 8] = [
    (
        "base.html",
        include_str!("../../templates/report/base.html"),
    ),
    (
        "macros.html",
        include_str!("../../templates/report/macros.html"),
    ),
    (
        "index.html",
        include_str!("../../templates/report/index.html"),
    ),
    (
        "settings.html",
        include_str!("../../templates/report/settings.html"),
    ),
    (
        "probes.html",
        include_str!("../../templates/report/probes.html"),
    ),
    (
        "audio.html",
        include_str!("../../templates/report/audio.html"),
    ),
    (
        "provenance.html",
        include_str!("../../templates/report/provenance.html"),
    ),
    (
        "search.html",
        include_str!("../../templates/report/search.html"),
    ),
];
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
    /// The precision the model ran in (`[model] dtype` resolved).
    pub model_dtype: Option<&'static str>,
    /// `[steer] layers`: marks the layers selected for steering on the probe plots.
    pub layers: Option<LayerStrategy>,
    /// `[evaluate] metrics`, in spec order (columns of the summary table).
    pub metrics: Vec<String>,
    pub nodes: Vec<NodeEntry>,
    /// Also write every plot as PNG.
    pub png: bool,
    /// How each clip is written (`[report] audio`).
    pub audio: ReportAudio,
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
    /// The 95% CI, printed below the value.
    ci: String,
    class: &'static str,
}

#[derive(Serialize)]
struct SettingRow {
    variant: String,
    eta: String,
    status_class: &'static str,
    cells: Vec<Cell>,
}

/// One target's settings (rows) × metrics (columns).
#[derive(Serialize)]
struct SettingsTable {
    title: String,
    anchor: String,
    metrics: Vec<String>,
    rows: Vec<SettingRow>,
}

#[derive(Serialize, Clone)]
struct Link {
    href: String,
    text: String,
    current: bool,
}

/// What every page shows at its top.
#[derive(Serialize, Clone)]
struct Common {
    experiment: String,
    weights: String,
    weights_class: &'static str,
    counts: String,
    nav: Vec<Link>,
}

#[derive(Serialize)]
pub(super) struct Figure {
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

/// One train -> test block of the transfer table (docs/design.md §5).
#[derive(Serialize)]
struct TransferBlock {
    concept: String,
    train: String,
    test: String,
    n: usize,
    unseen: usize,
    best_layer: String,
    rows: Vec<TransferRow>,
}

#[derive(Serialize)]
struct TransferRow {
    layer: usize,
    accuracy: String,
    ci: String,
    n: usize,
    in_domain: String,
    /// Tempos: "R² [lo, hi] (in-domain R²)"; empty otherwise.
    r2: String,
}

fn transfer_blocks(d: &collect::ReportData) -> Vec<TransferBlock> {
    d.transfers
        .iter()
        .map(|t| TransferBlock {
            concept: t.concept.clone(),
            train: t.train.clone(),
            test: t.test.clone(),
            n: t.n,
            unseen: t.unseen,
            best_layer: t.best_layer.map(|l| l.to_string()).unwrap_or_default(),
            rows: t
                .layers
                .iter()
                .map(|r| TransferRow {
                    layer: r.layer,
                    accuracy: opt(r.accuracy),
                    ci: format!("[{}, {}]", opt(r.ci_low), opt(r.ci_high)),
                    n: r.n,
                    in_domain: opt(r.in_domain_test_accuracy),
                    r2: r.r2.as_ref().map_or_else(String::new, |g| {
                        format!(
                            "{} [{}, {}] (in-domain {})",
                            opt(g.r2),
                            opt(g.ci_low),
                            opt(g.ci_high),
                            opt(g.in_domain_test_r2)
                        )
                    }),
                })
                .collect(),
        })
        .collect()
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

#[derive(Serialize, Clone)]
struct Model {
    name: String,
    weights: String,
    weights_class: &'static str,
    dtype: Option<&'static str>,
    descriptions: Vec<String>,
    fingerprints: Vec<String>,
}

// ---- formatting ----

pub(super) fn num(x: f64) -> String {
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

/// A settings-table cell; an unavailable metric's reason is listed once under the tables (a long
/// reason, e.g. where the CLAP snapshot was looked for, would otherwise repeat in every row).
fn summary_cell(m: &MetricValue, notes: &mut Vec<String>) -> Cell {
    match m {
        MetricValue::Value {
            value,
            ci_low,
            ci_high,
            n,
        } => {
            let mut ci = match (ci_low, ci_high) {
                (Some(lo), Some(hi)) => format!("[{}, {}]", num(*lo), num(*hi)),
                _ => String::new(),
            };
            if let Some(n) = n {
                ci.push_str(&format!(" n={n}"));
            }
            Cell {
                text: num(*value),
                ci: ci.trim().to_string(),
                class: "value",
            }
        }
        MetricValue::Unavailable(why) => {
            let i = notes.iter().position(|n| n == why).unwrap_or_else(|| {
                notes.push(why.clone());
                notes.len() - 1
            });
            Cell {
                text: format!("n/a [{}]", i + 1),
                ci: String::new(),
                class: "unavailable",
            }
        }
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

/// A setting without its target: `constant · layers top_k(k=2) · gate 1`.
fn variant_label(k: &PointKey) -> String {
    let mut parts = vec![k.schedule.clone()];
    if !k.cropping.is_empty() {
        parts.push(format!("layers {}", k.cropping));
    }
    if !k.gate.is_empty() {
        parts.push(format!("gate {}", k.gate));
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" · ")
}

/// The spec's order of targets and schedules: the order in which the plan lists its nodes (the
/// steering stage plans target by target, schedule by schedule, as the spec lists them), so that
/// the report reads C, C#, D … rather than alphabetically.
#[derive(Default)]
struct Order {
    targets: Vec<String>,
    schedules: Vec<String>,
}

impl Order {
    fn of(d: &ReportData) -> Order {
        let mut o = Order::default();
        let keys = d
            .points
            .iter()
            .map(|p| &p.key)
            .chain(d.clips.iter().filter(|c| c.eta != 0.0).map(|c| &c.point));
        for k in keys {
            if !o.targets.contains(&k.target) {
                o.targets.push(k.target.clone());
            }
            if !o.schedules.contains(&k.schedule) {
                o.schedules.push(k.schedule.clone());
            }
        }
        o
    }

    fn target(&self, t: &str) -> usize {
        self.targets
            .iter()
            .position(|x| x == t)
            .unwrap_or(usize::MAX)
    }

    fn cmp(&self, a: &PointKey, b: &PointKey) -> std::cmp::Ordering {
        let schedule = |k: &PointKey| self.schedules.iter().position(|x| *x == k.schedule);
        self.target(&a.target)
            .cmp(&self.target(&b.target))
            .then(schedule(a).cmp(&schedule(b)))
            .then(a.cmp(b))
    }
}

fn strategy_label(s: &LayerStrategy) -> String {
    match s {
        LayerStrategy::TopK { k } => format!("top-{k} layers by validation AUC"),
        LayerStrategy::Exponential { w0, kappa } => {
            format!("exponential weights w0={w0}, κ={kappa}")
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

pub(super) struct Figures<'a> {
    dir: &'a Path,
    png: bool,
}

impl Figures<'_> {
    pub(super) fn add(
        &self,
        chart: &Chart,
        stem: &str,
        alt: String,
        caption: String,
    ) -> Result<Figure, ReportError> {
        let names = plots::write(chart, self.dir, stem, self.png)?;
        let labels: Vec<&str> = chart.series.iter().map(|s| s.label.as_str()).collect();
        let shading = (!chart.marks.is_empty()).then_some(chart.marks_label.as_str());
        Ok(figure(
            names,
            plots::size(chart),
            &labels,
            shading,
            alt,
            caption,
        ))
    }

    fn add_grid(
        &self,
        grid: &plots::Grid,
        stem: &str,
        alt: String,
        caption: String,
    ) -> Result<Figure, ReportError> {
        let names = plots::write_grid(grid, self.dir, stem, self.png)?;
        let labels: Vec<&str> = grid.labels.iter().map(String::as_str).collect();
        let shading = grid
            .panels
            .iter()
            .any(|p| !p.marks.is_empty())
            .then_some(grid.marks_label.as_str());
        Ok(figure(names, grid.size(), &labels, shading, alt, caption))
    }
}

/// A written plot as the page shows it, with its legend in words: "<colour> <marker>: <label>".
fn figure(
    names: Vec<String>,
    (width, height): (u32, u32),
    labels: &[&str],
    shading: Option<&str>,
    alt: String,
    caption: String,
) -> Figure {
    let mut legend: Vec<String> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{} with line: {l}", plots::style_name(i)))
        .collect();
    legend.extend(shading.map(|s| format!("grey band: {s}")));
    Figure {
        legend,
        src: format!("assets/plots/{}", names[0]),
        alt,
        caption,
        png: names[1..]
            .iter()
            .map(|n| format!("assets/plots/{n}"))
            .collect(),
        width,
        height,
    }
}

// ---- sections ----

/// The metrics shown: the spec's, then any other a node reported.
fn metric_names(input: &ReportInput, d: &ReportData) -> Vec<String> {
    let mut metrics = input.metrics.clone();
    for p in &d.points {
        for m in p.metrics.iter().flat_map(|m| m.keys()) {
            if !metrics.contains(m) {
                metrics.push(m.clone());
            }
        }
    }
    metrics
}

/// Metrics that measure what steering costs (distance from unsteered audio, text alignment).
const COST_METRICS: [&str; 3] = ["fd", "mmd", "clap"];

/// Per target (in spec order), its settings × metrics; and the notes of unavailable cells.
fn settings(
    input: &ReportInput,
    d: &ReportData,
    order: &Order,
) -> (Vec<SettingsTable>, Vec<String>) {
    let metrics = metric_names(input, d);
    let mut points: Vec<&collect::PointResult> = d.points.iter().collect();
    points.sort_by(|a, b| {
        order
            .target(&a.key.target)
            .cmp(&order.target(&b.key.target))
            // the unsteered point first, then each variant's η in order
            .then((a.eta != Some(0.0)).cmp(&(b.eta != Some(0.0))))
            .then(order.cmp(&a.key, &b.key))
            .then(
                a.eta
                    .unwrap_or(f64::NAN)
                    .total_cmp(&b.eta.unwrap_or(f64::NAN)),
            )
            .then(a.node_id.cmp(&b.node_id))
    });
    let mut notes = Vec::new();
    let mut tables: Vec<SettingsTable> = vec![];
    for p in points {
        let title = if p.key.target.is_empty() {
            "no target".to_string()
        } else {
            p.key.target.clone()
        };
        if tables.last().is_none_or(|t| t.title != title) {
            tables.push(SettingsTable {
                anchor: format!("t-{}", safe_name(&title)),
                title,
                metrics: metrics.clone(),
                rows: vec![],
            });
        }
        let cells = metrics
            .iter()
            .map(|m| match &p.metrics {
                None => Cell {
                    text: p.status.clone(),
                    ci: String::new(),
                    class: "missing",
                },
                Some(ms) => ms.get(m).map_or(
                    Cell {
                        text: "not reported".into(),
                        ci: String::new(),
                        class: "unavailable",
                    },
                    |v| summary_cell(v, &mut notes),
                ),
            })
            .collect();
        let row = SettingRow {
            variant: if p.eta == Some(0.0) {
                "unsteered".into()
            } else {
                variant_label(&p.key)
            },
            eta: opt(p.eta),
            status_class: if p.metrics.is_some() {
                "done"
            } else {
                "missing"
            },
            cells,
        };
        if let Some(t) = tables.last_mut() {
            t.rows.push(row);
        }
    }
    let notes = notes
        .into_iter()
        .enumerate()
        .map(|(i, text)| format!("[{}] unavailable: {text}", i + 1))
        .collect();
    (tables, notes)
}

/// The overview: per metric (effect metrics first, then cost metrics), small multiples of the
/// η-response with 95% CIs, one panel per target in spec order (per target · schedule when the
/// variants would outnumber the distinct styles), one line per variant, every line its own style.
fn overview(
    input: &ReportInput,
    d: &ReportData,
    order: &Order,
    figs: &Figures,
) -> Result<Vec<Figure>, ReportError> {
    let mut metrics = metric_names(input, d);
    metrics.sort_by_key(|m| COST_METRICS.contains(&m.as_str()));
    let mut out = Vec::new();
    for m in &metrics {
        let mut steered: Vec<(&PointKey, plots::Point)> = vec![];
        let mut baselines: Vec<(&str, plots::Point)> = vec![];
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
                baselines.push((&p.key.target, point));
            } else {
                steered.push((&p.key, point));
            }
        }
        if steered.is_empty() && baselines.is_empty() {
            continue;
        }
        let mut variants: Vec<PointKey> = vec![];
        for (k, _) in &steered {
            let v = PointKey {
                target: String::new(),
                ..(*k).clone()
            };
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        // Too many variants for distinct styles: a panel per target · schedule instead.
        let split = variants.len() > plots::STYLES;
        let panel_of = |k: &PointKey| {
            if split {
                format!("{} · {}", k.target, k.schedule)
            } else {
                k.target.clone()
            }
        };
        let series_of = |k: &PointKey| PointKey {
            target: String::new(),
            schedule: if split {
                String::new()
            } else {
                k.schedule.clone()
            },
            ..k.clone()
        };
        let mut labels: Vec<PointKey> = vec![];
        // (panel title, its target, series index -> points)
        type PanelSeries<'a> = (String, &'a str, BTreeMap<usize, Vec<plots::Point>>);
        let mut panels: Vec<PanelSeries> = vec![];
        let mut keys: Vec<&PointKey> = steered.iter().map(|s| s.0).collect();
        keys.sort_by(|a, b| order.cmp(a, b));
        keys.dedup();
        for k in &keys {
            let title = panel_of(k);
            if !panels.iter().any(|p| p.0 == title) {
                panels.push((title, &k.target, BTreeMap::new()));
            }
            let s = series_of(k);
            if !labels.contains(&s) {
                labels.push(s);
            }
        }
        for (k, point) in &steered {
            let s = series_of(k);
            let i = labels.iter().position(|l| *l == s).unwrap_or(0);
            if let Some(p) = panels.iter_mut().find(|p| p.0 == panel_of(k)) {
                p.2.entry(i).or_default().push(*point);
            }
        }
        // The unsteered (η = 0) point of a target starts every line of that target.
        for (target, point) in &baselines {
            let mut joined = false;
            for p in panels.iter_mut().filter(|p| p.1 == *target) {
                for pts in p.2.values_mut() {
                    pts.push(*point);
                    joined = true;
                }
            }
            if !joined {
                panels.push((
                    target.to_string(),
                    target,
                    BTreeMap::from([(0, vec![*point])]),
                ));
                if labels.is_empty() {
                    labels.push(PointKey {
                        schedule: "unsteered only".into(),
                        ..PointKey::default()
                    });
                }
            }
        }
        let label_text = |k: &PointKey| {
            let t = variant_label(k);
            if t.is_empty() { "steered".into() } else { t }
        };
        let grid = plots::Grid {
            title: format!("{m} vs steering strength η, per target"),
            x_label: "steering strength η (unitless)".into(),
            y_label: metric_axis(m),
            labels: labels.iter().map(label_text).collect(),
            panels: panels
                .into_iter()
                .map(|(title, _, series)| plots::Panel {
                    title,
                    series: series.into_iter().collect(),
                    marks: vec![],
                })
                .collect(),
            marks_label: String::new(),
            y_range: None,
            integer_x: false,
        };
        let cost = if COST_METRICS.contains(&m.as_str()) {
            " (a cost: distance from, or alignment against, unsteered audio)"
        } else {
            ""
        };
        out.push(figs.add_grid(
            &grid,
            &format!("eta_{}", safe_name(m)),
            format!("{m} against η: one panel per target, one line per schedule · layers · gate, with 95% CIs"),
            format!(
                "{m}{cost}: mean with 95% CI per setting; {} panel(s), {} line style(s), η = 0 is the unsteered generation.",
                grid.panels.len(),
                grid.labels.len()
            ),
        )?);
    }
    Ok(out)
}

struct ProbeSections {
    figures: Vec<Figure>,
    /// Per concept: one panel per target, its selection score per layer, its own layers shaded.
    selection_figures: Vec<Figure>,
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
    order: &Order,
    figs: &Figures,
) -> Result<ProbeSections, ReportError> {
    let mut s = ProbeSections {
        figures: vec![],
        selection_figures: vec![],
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
        // Selected layers: the spec's cropping applied to each direction's per-layer scores, per
        // target (targets of one concept select different layers).
        let mut dirs: Vec<&collect::DirectionScores> = d
            .directions
            .iter()
            .filter(|x| x.concept == concept)
            .collect();
        dirs.sort_by_key(|x| order.target(&format!("{}:{}", x.concept, x.class)));
        let mut panels = vec![];
        for dir in dirs {
            let mut sel = vec![];
            if let Some(strategy) = &input.layers {
                let scores: Vec<f64> = dir.layers.iter().map(|l| l.1).collect();
                match crate::steer::layers::layer_weights(strategy, &scores) {
                    Ok(w) => {
                        for (l, w) in dir.layers.iter().zip(w) {
                            if w > 0.0 {
                                sel.push(l.0);
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
            panels.push(plots::Panel {
                title: format!("{}:{}", dir.concept, dir.class),
                series: vec![(
                    0,
                    dir.layers
                        .iter()
                        .map(|&(l, auc)| (l as f64, auc, None))
                        .collect(),
                )],
                marks: sel.iter().map(|&l| l as f64).collect(),
            });
        }
        if !panels.is_empty() {
            let grid = plots::Grid {
                title: format!("{concept}: the layers each target steers"),
                x_label: "decoder layer (index)".into(),
                y_label: "validation AUC (0–1)".into(),
                labels: vec!["one-vs-rest validation AUC (selection score)".into()],
                panels,
                marks_label: "layers this target steers (weight > 0)".into(),
                y_range: Some((0.0, 1.02)),
                integer_x: true,
            };
            let n = grid.panels.len();
            s.selection_figures.push(figs.add_grid(
                &grid,
                &format!("selection_{}", safe_name(concept)),
                format!("{concept}: per target, validation AUC against layer; the target's steered layers shaded"),
                format!(
                    "{concept}: {n} target(s); shaded: exactly the layers that target's steering uses (weight > 0{}); degenerate layers have no point.",
                    input.layers.as_ref().map_or_else(String::new, |l| format!(" under {}", strategy_label(l)))
                ),
            )?);
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
                // Selection differs per target: shaded per target in the next figure.
                marks: vec![],
                marks_label: String::new(),
                y_range: Some((0.0, 1.02)),
                integer_x: true,
            };
            s.figures.push(figs.add(
                &chart,
                &format!("probe_{}", safe_name(concept)),
                format!("{concept} probe scores against layer"),
                format!(
                    "{concept}: per-layer probe scores ({} layer(s)); the layers each target steers are shaded in the figure below.",
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

/// At most this many players on one page (each is a request and a decoder; with
/// `preload="metadata"` every player shows its duration before it is played).
pub const MAX_PLAYERS: usize = 96;

#[derive(Serialize, Clone)]
struct BaselineClip {
    prompt: String,
    seed: String,
    src: ClipSrc,
    id: String,
}

#[derive(Serialize)]
struct ClipRow {
    variant: String,
    eta: String,
    prompt: String,
    seed: String,
    src: ClipSrc,
    id: String,
}

/// A clip file as a player's `<source>`: its path and MIME type (so that a browser which cannot
/// play the codec says so instead of fetching the file; empty `src`: no audio).
#[derive(Serialize, Clone, Default)]
struct ClipSrc {
    src: String,
    mime: &'static str,
}

#[derive(Serialize)]
struct AudioPage {
    file: String,
    stem: String,
    target: String,
    /// Short name for links (the target, with the part number when split).
    text: String,
    title: String,
    heading: String,
    note: String,
    pager: Vec<Link>,
    baselines: Vec<BaselineClip>,
    rows: Vec<ClipRow>,
}

/// Writes each distinct clip once (`assets/audio/<node key>.ogg` or `.wav`) and returns its page
/// path and type.
struct ClipFiles<'a> {
    dir: &'a Path,
    audio: ReportAudio,
    written: BTreeMap<String, ClipSrc>,
}

const WAV_MIME: &str = "audio/wav";
const VORBIS_MIME: &str = "audio/ogg; codecs=vorbis";

impl ClipFiles<'_> {
    /// Writes every distinct clip of `clips` at once, in parallel (encoding dominates the
    /// rendering of a sweep's report); the pages then only look them up.
    fn write_all(&mut self, clips: &[collect::Clip]) -> Result<(), ReportError> {
        use rayon::prelude::*;
        let mut todo: BTreeMap<&str, &Path> = BTreeMap::new();
        for c in clips {
            if let Some(from) = &c.audio {
                todo.entry(c.node_key.as_str()).or_insert(from);
            }
        }
        let (dir, audio) = (self.dir, self.audio);
        let done: Vec<(String, ClipSrc)> = todo
            .into_par_iter()
            .map(|(key, from)| Ok((key.to_string(), write_clip(dir, audio, key, from)?)))
            .collect::<Result<_, ReportError>>()?;
        self.written.extend(done);
        Ok(())
    }

    fn add(&mut self, c: &collect::Clip) -> Result<ClipSrc, ReportError> {
        let Some(from) = &c.audio else {
            return Ok(ClipSrc::default());
        };
        if let Some(written) = self.written.get(&c.node_key) {
            return Ok(written.clone());
        }
        let written = write_clip(self.dir, self.audio, &c.node_key, from)?;
        self.written.insert(c.node_key.clone(), written.clone());
        Ok(written)
    }

    fn baseline(&mut self, b: &collect::Clip) -> Result<BaselineClip, ReportError> {
        Ok(BaselineClip {
            prompt: b.prompt.clone(),
            seed: b.seed.clone(),
            src: self.add(b)?,
            id: b.node_id.clone(),
        })
    }
}

/// Writes one clip as `<dir>/<node key>.ogg` or `.wav` as `[report] audio` says.
fn write_clip(
    dir: &Path,
    audio: ReportAudio,
    node_key: &str,
    from: &Path,
) -> Result<ClipSrc, ReportError> {
    let stem = safe_name(node_key);
    let (name, mime) = match crate::audio::wav::read(from) {
        Ok((x, channels, rate)) => match audio {
            ReportAudio::Vorbis => {
                let name = format!("{stem}.ogg");
                vorbis_copy(&x, channels, rate, &dir.join(&name))?;
                (name, VORBIS_MIME)
            }
            ReportAudio::Wav => {
                let name = format!("{stem}.wav");
                pcm16_copy(&x, channels, rate, &dir.join(&name))?;
                (name, WAV_MIME)
            }
        },
        // Not a WAV this build reads: copied as it is, for the browser to try.
        Err(_) => {
            let name = format!("{stem}.wav");
            link_or_copy(from, &dir.join(&name))?;
            (name, WAV_MIME)
        }
    };
    Ok(ClipSrc {
        src: format!("assets/audio/{name}"),
        mime,
    })
}

/// The clip as Ogg Vorbis at [`crate::audio::vorbis::REPORT_QUALITY`] (docs/design.md §7): about
/// a tenth of 16-bit WAV, so that a sweep's report stays within ~20 MB.
fn vorbis_copy(x: &[f32], channels: u16, rate: u32, to: &Path) -> Result<(), ReportError> {
    let bytes =
        crate::audio::vorbis::encode(x, channels, rate, crate::audio::vorbis::REPORT_QUALITY)
            .map_err(|e| ReportError::Write {
                path: to.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
    write(to, &bytes)
}

/// The clip as 16-bit PCM WAV (the generations are 32-bit float: half the bytes, and 16 bits are
/// below audibility for listening in a browser).
fn pcm16_copy(x: &[f32], channels: u16, rate: u32, to: &Path) -> Result<(), ReportError> {
    let werr = |e: &dyn std::fmt::Display| ReportError::Write {
        path: to.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(44 + 2 * x.len()));
    {
        let mut w = hound::WavWriter::new(&mut bytes, spec).map_err(|e| werr(&e))?;
        for v in x {
            let q = (v.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            w.write_sample(q).map_err(|e| werr(&e))?;
        }
        w.finalize().map_err(|e| werr(&e))?;
    }
    write(to, &bytes.into_inner())
}

/// One page per target (split into parts of at most [`MAX_PLAYERS`] players): the target's
/// unsteered baselines once at the top, then every steered clip, in spec order.
fn audio_pages(
    d: &ReportData,
    order: &Order,
    audio_dir: &Path,
    audio: ReportAudio,
) -> Result<Vec<AudioPage>, ReportError> {
    let mut files = ClipFiles {
        dir: audio_dir,
        audio,
        written: BTreeMap::new(),
    };
    files.write_all(&d.clips)?;
    let baselines: Vec<&collect::Clip> = d.clips.iter().filter(|c| c.eta == 0.0).collect();
    let mut steered: Vec<&collect::Clip> = d.clips.iter().filter(|c| c.eta != 0.0).collect();
    steered.sort_by(|a, b| {
        order
            .cmp(&a.point, &b.point)
            .then(a.eta.total_cmp(&b.eta))
            .then(a.prompt.cmp(&b.prompt))
            .then(a.seed.cmp(&b.seed))
            .then(a.node_id.cmp(&b.node_id))
    });
    let mut by_target: Vec<(String, Vec<&collect::Clip>)> = vec![];
    for c in steered {
        match by_target.iter_mut().find(|t| t.0 == c.point.target) {
            Some(t) => t.1.push(c),
            None => by_target.push((c.point.target.clone(), vec![c])),
        }
    }
    let mut used = BTreeSet::new();
    let mut pages = vec![];
    for (target, clips) in &by_target {
        // The baselines these clips are compared with (same prompt, seed and model).
        let mut base: Vec<&collect::Clip> = baselines
            .iter()
            .copied()
            .filter(|b| {
                clips
                    .iter()
                    .any(|c| b.prompt == c.prompt && b.seed == c.seed && b.model == c.model)
            })
            .collect();
        base.sort_by(|a, b| a.prompt.cmp(&b.prompt).then(a.seed.cmp(&b.seed)));
        used.extend(base.iter().map(|b| b.node_key.clone()));
        let base_rows = base
            .iter()
            .map(|b| files.baseline(b))
            .collect::<Result<Vec<_>, ReportError>>()?;
        let per_page = MAX_PLAYERS.saturating_sub(base_rows.len()).max(1);
        let parts: Vec<&[&collect::Clip]> = clips.chunks(per_page).collect();
        let name = if target.is_empty() {
            "no target"
        } else {
            target
        };
        for (i, part) in parts.iter().enumerate() {
            let rows = part
                .iter()
                .map(|c| {
                    Ok(ClipRow {
                        variant: variant_label(&c.point),
                        eta: num(c.eta),
                        prompt: c.prompt.clone(),
                        seed: c.seed.clone(),
                        src: files.add(c)?,
                        id: c.node_id.clone(),
                    })
                })
                .collect::<Result<Vec<_>, ReportError>>()?;
            let suffix = if parts.len() > 1 {
                format!(" (part {} of {})", i + 1, parts.len())
            } else {
                String::new()
            };
            // Targets differing only in characters a file name cannot hold (C# / C_) stay apart.
            let mut stem = format!("audio-{}", safe_name(name));
            if pages
                .iter()
                .any(|p: &AudioPage| p.stem == stem && p.target != *target)
            {
                stem = format!("{stem}-{}", pages.len());
            }
            pages.push(AudioPage {
                file: format!(
                    "{stem}{}.html",
                    if i > 0 { format!("-{}", i + 1) } else { String::new() }
                ),
                stem,
                target: target.clone(),
                text: if parts.len() > 1 {
                    format!("{name} ({})", i + 1)
                } else {
                    name.to_string()
                },
                title: format!("audio {name}{suffix}"),
                heading: format!("Audio: steering towards {name}{suffix}"),
                note: format!(
                    "{} steered clip(s) of {name} in all; the {} unsteered baseline(s) they are compared with (same prompt and seed) are shown once, above. Every clip file is written once.",
                    clips.len(),
                    base_rows.len()
                ),
                pager: vec![],
                baselines: base_rows.clone(),
                rows,
            });
        }
    }
    let rest: Vec<&&collect::Clip> = baselines
        .iter()
        .filter(|b| !used.contains(&b.node_key))
        .collect();
    for (i, part) in rest.chunks(MAX_PLAYERS).enumerate() {
        let rows = part
            .iter()
            .map(|b| files.baseline(b))
            .collect::<Result<Vec<_>, ReportError>>()?;
        pages.push(AudioPage {
            file: format!(
                "audio-unsteered{}.html",
                if i > 0 {
                    format!("-{}", i + 1)
                } else {
                    String::new()
                }
            ),
            stem: "audio-unsteered".into(),
            target: String::new(),
            text: "unsteered only".into(),
            title: "audio unsteered".into(),
            heading: "Audio: unsteered generations without a steered counterpart".into(),
            note: String::new(),
            pager: vec![],
            baselines: rows,
            rows: vec![],
        });
    }
    // Parts of one target link to each other.
    let groups: Vec<(String, String)> = pages
        .iter()
        .map(|p| {
            (
                p.heading.split(" (part ").next().unwrap_or("").to_string(),
                p.file.clone(),
            )
        })
        .collect();
    for p in &mut pages {
        let head = p.heading.split(" (part ").next().unwrap_or("").to_string();
        let mine: Vec<&(String, String)> = groups.iter().filter(|g| g.0 == head).collect();
        if mine.len() > 1 {
            p.pager = mine
                .iter()
                .enumerate()
                .map(|(i, g)| Link {
                    href: g.1.clone(),
                    text: format!("part {}", i + 1),
                    current: g.1 == p.file,
                })
                .collect();
        }
    }
    Ok(pages)
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
        dtype: input.model_dtype,
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
    let order = Order::of(&d);
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
    let probe = probes(input, &d, &order, &figs)?;
    let (node_rows, missing, cache, total_seconds) = nodes(input);
    let failed = missing.iter().filter(|m| m.state == "failed").count();
    let done = input.nodes.len() - missing.len();
    let model = model(input, &d);
    let audio = audio_pages(&d, &order, &audio_dir, input.audio)?;
    let searches = super::search_page::blocks(&d, &figs)?;
    if !d.searches.is_empty() {
        // What `[steer] from_search` reads from the published report (docs/design.md §10).
        let all: Vec<&crate::stages::search::SearchResult> =
            d.searches.iter().map(|(_, r)| r).collect();
        let json = serde_json::to_vec_pretty(&all)
            .map_err(|e| ReportError::Template(format!("search.json: {e}")))?;
        write(&out_dir.join("search.json"), &json)?;
    }
    let (tables, notes) = settings(input, &d, &order);
    let settings_count = d.points.len();
    // A sweep point is one assignment of the spec's [sweep] table (as `rfmx check` and the
    // resolved spec count them); each evaluation is one setting of one sweep point.
    let sweep_points = input
        .nodes
        .iter()
        .map(|n| n.label.sweep_text())
        .collect::<BTreeSet<_>>()
        .len()
        .max(1);
    let nav = |current: &str| -> Vec<Link> {
        let search = (!searches.is_empty()).then_some(("search.html", "Search"));
        [
            Some(("index.html", "Overview")),
            Some(("settings.html", "Settings")),
            search,
            Some(("probes.html", "Probes & traces")),
            Some((
                audio
                    .first()
                    .map_or("index.html#details", |p| p.file.as_str()),
                "Audio",
            )),
            Some(("provenance.html", "Provenance")),
        ]
        .iter()
        .flatten()
        .map(|(href, text)| Link {
            href: href.to_string(),
            text: text.to_string(),
            current: *href == current,
        })
        .collect()
    };
    let common = |current: &str| Common {
        experiment: input.experiment.clone(),
        weights: model.weights.clone(),
        weights_class: model.weights_class,
        counts: format!(
            "{done} of {} result node(s) present, {} missing, {failed} failed; {settings_count} setting(s) in {sweep_points} sweep point(s)",
            input.nodes.len(),
            missing.len() - failed
        ),
        nav: nav(current),
    };
    let words = format!(
        "A setting is one row: target · schedule · layers · gate · η, evaluated against the unsteered generations. A sweep point is one assignment of the spec's [sweep] table; this spec has {sweep_points}, with {settings_count} setting(s) in all."
    );
    let overview = overview(input, &d, &order, &figs)?;
    let legend: Vec<(String, String)> = tables
        .first()
        .map(|t| {
            t.metrics
                .iter()
                .map(|m| (m.clone(), metric_axis(m)))
                .collect()
        })
        .unwrap_or_default();
    let mut env = minijinja::Environment::new();
    env.set_formatter(html_formatter);
    for (name, text) in TEMPLATES {
        env.add_template(name, text)
            .map_err(|e| ReportError::Template(e.to_string()))?;
    }
    let page = |template: &str, file: &str, ctx: minijinja::Value| -> Result<(), ReportError> {
        let html = env
            .get_template(template)
            .and_then(|t| t.render(ctx))
            .map_err(|e| ReportError::Template(format!("{e:#}")))?;
        write(&out_dir.join(file), html.as_bytes())
    };
    let audio_links: Vec<Link> = audio
        .iter()
        .map(|p| Link {
            href: p.file.clone(),
            text: format!("{} ({} clip(s))", p.text, p.rows.len() + p.baselines.len()),
            current: false,
        })
        .collect();
    page(
        "index.html",
        "index.html",
        minijinja::context! {
            c => common("index.html"),
            missing => &missing,
            problems => &d.problems,
            overview => overview,
            overview_note => format!(
                "One panel per target, in the spec's order; η = 0 is the unsteered generation. {words} Every number with its CI is on the settings page."
            ),
            toy => &d.toy,
            settings_count => format!("{settings_count} setting(s) in {sweep_points} sweep point(s)"),
            audio_pages => audio_links,
        },
    )?;
    page(
        "settings.html",
        "settings.html",
        minijinja::context! {
            c => common("settings.html"),
            words => words,
            tables => tables,
            notes => notes,
            legend => legend,
        },
    )?;
    page(
        "probes.html",
        "probes.html",
        minijinja::context! {
            c => common("probes.html"),
            probe_figures => probe.figures,
            selection_figures => probe.selection_figures,
            selections => probe.selections,
            table1 => probe.table1,
            table1_mean => probe.table1_mean,
            transfer => transfer_blocks(&d),
            confusions => probe.confusions,
            trace_figures => traces(&d, &figs)?,
        },
    )?;
    if !searches.is_empty() {
        page(
            "search.html",
            "search.html",
            minijinja::context! { c => common("search.html"), searches => &searches },
        )?;
    }
    for a in &audio {
        page(
            "audio.html",
            &a.file,
            minijinja::context! { c => common(&a.file), page => a },
        )?;
    }
    page(
        "provenance.html",
        "provenance.html",
        minijinja::context! {
            c => common("provenance.html"),
            model => &model,
            renderers => &d.renderers,
            provenance => &input.provenance,
            cache => cache,
            total_seconds => total_seconds,
            nodes => node_rows,
            spec => &input.spec_toml,
        },
    )?;
    Ok(Rendered {
        nodes: input.nodes.len(),
        missing: missing.len() - failed,
        failed,
    })
}
