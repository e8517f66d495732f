//! Plots and a self-contained HTML report per spec (docs/design.md §7).
//!
//! - [`ReportStage`] plans one `report` node in `plan_final` with every result node of the plan as
//!   input (datasets, activations, probes, directions, generations, evaluations, toy nodes).
//! - [`ReportNode`] renders the pages (`index.html`: the overview; `settings.html`, `probes.html`,
//!   `provenance.html`, one `audio-<target>.html` per target) + `assets/` (SVG plots, each distinct
//!   clip once as Ogg Vorbis or 16-bit WAV, stylesheet) into its output dir (docs/design.md §7). It reads node outputs only through their output types (docs/contracts.md) and tolerates
//!   missing files.
//! - After `rfmx run`, [`ReportStage::summary`] publishes the report to `reports/<experiment>/`
//!   (temp dir + rename for `assets/`, temp file + rename for `index.html`): a copy of the report
//!   node's output, or, when the node could not run (a failed input), a report rendered from
//!   whatever results exist with the missing ones marked — as `rfmx report SPEC` does.

pub mod collect;
pub mod fixture;
pub mod plots;
pub mod render;
mod search_page;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dag::store::{EntryState, Store};
use crate::dag::{
    InputRef, Label, NodeCtx, NodeError, NodeKind, NodeSpec, Plan, PlanBuilder, PlanError, Stage,
};
use crate::spec::LoadedSpec;
use crate::spec::schema::{LayerStrategy, ReportAudio};

pub use collect::{NodeEntry, NodeState};
pub use render::{Provenance, Rendered, ReportInput, render};

/// The node kinds whose outputs the report reads, in section order.
pub const INPUT_KINDS: [&str; 10] = [
    "dataset",
    "activations",
    "probe",
    "directions",
    "transfer",
    "generation",
    "evaluation",
    "search",
    "toy_square",
    "toy_sum",
];

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReportError {
    #[error("cannot write {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    #[error("report template: {0}")]
    Template(String),
    #[error("bad report params: {0}")]
    Params(String),
    #[error("{0} has no result nodes to report on (no stage consumes its sections)")]
    NoReport(String),
}

/// The report node's params: what it needs from the spec (hashed into its key). `spec` is the
/// resolved spec without `[executor]` and without its path (keys never depend on either).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportParams {
    pub experiment: String,
    pub spec: String,
    pub model: Option<ModelParams>,
    pub layers: Option<serde_json::Value>,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub png: bool,
    /// `[report] audio` (the default without a `[report]` section).
    #[serde(default)]
    pub audio: ReportAudio,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelParams {
    pub name: String,
    pub path: Option<String>,
    /// Resolved `[model] dtype`; absent (f32) so that f32 report keys predate the knob.
    #[serde(default, skip_serializing_if = "crate::model::Precision::is_f32")]
    pub dtype: crate::model::Precision,
}

impl ReportParams {
    fn layers(&self) -> Option<LayerStrategy> {
        self.layers
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// The render input for these params and nodes.
    pub fn input(&self, nodes: Vec<NodeEntry>, provenance: Provenance) -> ReportInput {
        ReportInput {
            experiment: self.experiment.clone(),
            spec_toml: self.spec.clone(),
            model_name: self.model.as_ref().map(|m| m.name.clone()),
            model_path: self.model.as_ref().and_then(|m| m.path.clone()),
            model_dtype: self.model.as_ref().map(|m| m.dtype.name()),
            layers: self.layers(),
            metrics: self.metrics.clone(),
            nodes,
            png: self.png,
            audio: self.audio,
            provenance,
        }
    }
}

/// The report stage. `ReportStage::default()` (the registry's) plans the report node when the plan
/// has results of the music stages, and publishes to `reports/`; the runner's toy specs get their
/// report from `rfmx report` only (so toy plans, which test the engine, keep their node counts).
#[derive(Debug, Clone)]
pub struct ReportStage {
    /// Where `reports/<experiment>/` go (relative paths: the working directory).
    pub reports_root: PathBuf,
    /// Also plan a report node for plans with only toy nodes.
    pub include_toy: bool,
}

impl Default for ReportStage {
    fn default() -> Self {
        ReportStage {
            reports_root: PathBuf::from("reports"),
            include_toy: false,
        }
    }
}

/// The report params of a spec.
pub fn report_params(spec: &LoadedSpec) -> ReportParams {
    let base = &spec.base;
    ReportParams {
        experiment: spec.experiment().to_string(),
        spec: spec.keyed_toml(),
        model: base.model.as_ref().map(|m| ModelParams {
            name: m.name.clone(),
            path: m.path.clone(),
            dtype: m.precision(),
        }),
        layers: base
            .steer
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.layers).ok()),
        metrics: base
            .evaluate
            .as_ref()
            .map(|e| {
                e.metrics
                    .iter()
                    .filter_map(|m| serde_json::to_value(m).ok())
                    .map(|v| collect::label(&v))
                    .collect()
            })
            .unwrap_or_default(),
        png: false,
        audio: base.report.unwrap_or_default().audio,
    }
}

/// Orders the nodes of one input kind: nodes of the initial plan keep their planning order;
/// nodes planned from results (a search's rounds) follow in id order, so that the report's key
/// does not depend on when each round happened to be planned (`rfmx plan` on a full store plans
/// them all at once, a run one round at a time).
fn report_order<T>(nodes: &mut [(T, &crate::dag::PlannedNode)]) {
    let later = |n: &crate::dag::PlannedNode| n.label.round > 0;
    nodes.sort_by(|(_, a), (_, b)| {
        later(a).cmp(&later(b)).then_with(|| {
            if later(a) {
                a.id.cmp(&b.id).then_with(|| a.key.cmp(&b.key))
            } else {
                std::cmp::Ordering::Equal
            }
        })
    });
}

/// The report's inputs: every node of [`INPUT_KINDS`] in the plan, named `<kind>:<i>` in
/// [`report_order`].
pub fn report_inputs(plan: &Plan) -> Vec<InputRef> {
    let mut out = vec![];
    for kind in INPUT_KINDS {
        let mut nodes: Vec<((), &crate::dag::PlannedNode)> = plan
            .nodes
            .iter()
            .filter(|n| n.kind == kind)
            .map(|n| ((), n))
            .collect();
        report_order(&mut nodes);
        for (i, (_, n)) in nodes.into_iter().enumerate() {
            out.push(InputRef {
                name: format!("{kind}:{i}"),
                role: Some(kind.to_string()),
                id: n.id.clone(),
                key: n.key.clone(),
                kind: n.kind.clone(),
                label: n.label.clone(),
            });
        }
    }
    out
}

impl Stage for ReportStage {
    fn name(&self) -> &'static str {
        "report"
    }

    fn plan(
        &self,
        _spec: &crate::spec::ResolvedSpec,
        _plan: &mut PlanBuilder<'_>,
    ) -> Result<(), PlanError> {
        Ok(())
    }

    fn plan_final(&self, spec: &LoadedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        let mut inputs = vec![];
        let mut real = false;
        for kind in INPUT_KINDS {
            let mut nodes = plan.nodes_of_kind(kind);
            report_order(&mut nodes);
            for (i, (r, _)) in nodes.into_iter().enumerate() {
                inputs.push((kind, i, r));
                real |= !kind.starts_with("toy_");
            }
        }
        if inputs.is_empty() || !(real || self.include_toy) {
            return Ok(());
        }
        let params = serde_json::to_value(report_params(spec)).map_err(|e| PlanError::Stage {
            stage: "report".into(),
            message: e.to_string(),
        })?;
        // The report reads dataset manifests naming the spec's own concepts (docs/design.md §5).
        let concepts = std::iter::once(&spec.base)
            .chain(spec.points.iter().map(|p| &p.spec))
            .filter_map(|s| s.data.as_ref())
            .flat_map(|d| d.concepts.iter().copied());
        let params = crate::stages::with_concept_defs(params, concepts);
        let mut node = NodeSpec::new("report", "report", params);
        for (kind, i, r) in inputs {
            node = node.input_in(kind, i, r);
        }
        plan.add(node)?;
        Ok(())
    }

    /// Publishes the report to `reports/<experiment>/` and says where it is.
    fn summary(&self, plan: &Plan, store: &Store) -> Option<String> {
        let node = plan.nodes.iter().find(|n| n.kind == "report")?;
        let params: ReportParams = serde_json::from_value(node.params.clone()).ok()?;
        let dest = self.reports_root.join(&params.experiment);
        let result = match store.check(&node.key) {
            EntryState::Valid(_) => publish(&store.out_dir(&node.key), &dest).and_then(|()| {
                let log = run_log(&store.runs_dir(), &params.experiment);
                let nodes = with_cache(entries_from_store(plan, &node.inputs, store), &log);
                write_provenance(&dest, &nodes, &log, Some(&node.key)).map(|()| None)
            }),
            _ => render_from_store(plan, &params, &node.inputs, store, &dest).map(Some),
        };
        Some(match result {
            Ok(None) => format!("report: {}", dest.join("index.html").display()),
            Ok(Some(r)) => format!(
                "report: {} (partial: {} missing, {} failed result node(s) marked)",
                dest.join("index.html").display(),
                r.missing,
                r.failed
            ),
            Err(e) => format!("report: cannot publish to {}: {e}", dest.display()),
        })
    }
}

/// The node kind: renders into its output dir.
pub struct ReportNode;

impl NodeKind for ReportNode {
    fn name(&self) -> &'static str {
        "report"
    }
    /// 3: an overview page with per-page details and audio pages, clips as 16-bit WAV; params
    /// carry the spec without `[executor]` and path; per-run provenance moved out of the output
    /// into `provenance.json` beside the published pages. 4: a search page (searches' traces,
    /// fronts and trials); a search's screening rungs left out of the settings tables. 5: clips as
    /// Ogg Vorbis by default (`[report] audio`, in the params), `<source type>` in the players.
    fn version(&self) -> u32 {
        5
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let params: ReportParams = ctx.params_as()?;
        // A pure function of the inputs: no run log, no build id (those go beside the published
        // page, see `write_provenance`).
        let nodes: Vec<NodeEntry> = ctx
            .inputs
            .iter()
            .map(|i| entry_from_dir(&i.id, &i.kind, &i.key, &i.label, &i.dir))
            .collect();
        ctx.progress(0, 1, "rendering");
        let r = render(&params.input(nodes, Provenance::beside()), ctx.out_dir)?;
        ctx.log(&format!(
            "rendered {} node(s): {} missing, {} failed",
            r.nodes, r.missing, r.failed
        ));
        ctx.progress(1, 1, "done");
        Ok(())
    }
}

/// A finished node's entry: its manifest (beside `out/`) gives timings, params and fingerprint.
fn entry_from_dir(id: &str, kind: &str, key: &str, label: &Label, dir: &Path) -> NodeEntry {
    let manifest: Option<serde_json::Value> = dir
        .parent()
        .and_then(|p| std::fs::read(p.join("manifest.json")).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let m = manifest.unwrap_or(serde_json::Value::Null);
    NodeEntry {
        id: id.to_string(),
        kind: kind.to_string(),
        key: key.to_string(),
        label: label.clone(),
        state: NodeState::Done(dir.to_path_buf()),
        seconds: m.get("seconds").and_then(serde_json::Value::as_f64),
        fingerprint: m
            .get("fingerprint")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        params: m.get("params").cloned().unwrap_or(serde_json::Value::Null),
        cached: None,
        started: m.get("started_unix").and_then(serde_json::Value::as_f64),
    }
}

/// Marks each node cache hit / computed from the run log; a finished node the log does not
/// (yet) mention — its event may still be in flight while the report node runs — counts as
/// computed when its manifest says it started after the run did.
fn with_cache(mut nodes: Vec<NodeEntry>, log: &RunLog) -> Vec<NodeEntry> {
    for n in &mut nodes {
        n.cached = log.cached.get(&n.key).copied().or_else(|| {
            let (start, run) = (n.started?, log.started?);
            Some(start < run)
        });
    }
    nodes
}

/// What the newest run log of an experiment says.
#[derive(Debug, Default)]
pub struct RunLog {
    /// Node key -> whether that run found it cached.
    pub cached: std::collections::HashMap<String, bool>,
    /// The run's start (unix seconds, from the log's file name).
    pub started: Option<f64>,
    /// The log's file name.
    pub name: Option<String>,
}

/// Unix seconds of a `YYYYMMDDTHHMMSSZ` timestamp (the run logs' file-name prefix).
fn parse_timestamp(s: &str) -> Option<f64> {
    let s = s.get(..15)?;
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    if s.as_bytes()[8] != b'T' || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (H. Hinnant), the inverse of `events::timestamp`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64)
}

/// The newest run log of `experiment`.
pub fn run_log(runs: &Path, experiment: &str) -> RunLog {
    let suffix = format!("-{experiment}.jsonl");
    let newest = std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
        })
        // Names carry whole seconds only: two runs in one second are told apart by the time
        // their logs were last written.
        .max_by_key(|p| {
            (
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                p.clone(),
            )
        });
    let mut map = std::collections::HashMap::new();
    let Some(path) = newest else {
        return RunLog::default();
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let key = v.get("key").and_then(|k| k.as_str()).map(str::to_string);
        match (v.get("event").and_then(|e| e.as_str()), key) {
            (Some("cached"), Some(k)) => {
                map.insert(k, true);
            }
            (Some("finished"), Some(k)) => {
                map.insert(k, false);
            }
            _ => {}
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    RunLog {
        cached: map,
        started: parse_timestamp(&name),
        name: Some(format!("run log {name}")),
    }
}

/// The entries of the report node's inputs as the store has them now (missing and failed marked).
pub fn entries_from_store(plan: &Plan, inputs: &[InputRef], store: &Store) -> Vec<NodeEntry> {
    inputs
        .iter()
        .map(|i| {
            let kind = i.kind.as_str();
            match store.check(&i.key) {
                EntryState::Valid(_) => {
                    entry_from_dir(&i.id, kind, &i.key, &i.label, &store.out_dir(&i.key))
                }
                other => {
                    let state = match (other, store.failure(&i.key)) {
                        (_, Some(f)) => NodeState::Failed(f.error_chain.join(": ")),
                        (EntryState::Corrupt(why), None) => {
                            NodeState::Failed(format!("corrupt store entry: {why}"))
                        }
                        _ => NodeState::Missing,
                    };
                    NodeEntry {
                        id: i.id.clone(),
                        kind: kind.to_string(),
                        key: i.key.clone(),
                        label: i.label.clone(),
                        state,
                        seconds: None,
                        fingerprint: None,
                        params: plan
                            .nodes
                            .iter()
                            .find(|n| n.key == i.key)
                            .map(|n| n.params.clone())
                            .unwrap_or_default(),
                        cached: None,
                        started: None,
                    }
                }
            }
        })
        .collect()
}

/// Renders from whatever the store holds into `dest` (published atomically).
pub fn render_from_store(
    plan: &Plan,
    params: &ReportParams,
    inputs: &[InputRef],
    store: &Store,
    dest: &Path,
) -> Result<Rendered, ReportError> {
    let log = run_log(&store.runs_dir(), &params.experiment);
    let nodes = with_cache(entries_from_store(plan, inputs, store), &log);
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| ReportError::Write {
        path: parent.display().to_string(),
        source,
    })?;
    let tmp = crate::fsx::temp_sibling(dest);
    let result = render(
        &params.input(nodes.clone(), Provenance::current(log.name.clone())),
        &tmp,
    )
    .and_then(|r| publish(&tmp, dest).map(|()| r))
    .and_then(|r| write_provenance(dest, &nodes, &log, None).map(|()| r));
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// `provenance.json` beside a published report: what changes per run or per build, kept out of
/// the cached report node's output (docs/contracts.md, report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedProvenance {
    pub rfmx_version: String,
    pub git_commit: String,
    /// The run log the cache hits come from (`None`: no run log found).
    pub run_log: Option<String>,
    /// The report node's key when the page is its (cached) output; `None`: rendered from the
    /// store by `rfmx report` or for a partial run.
    pub report_key: Option<String>,
    pub cache_hits: usize,
    pub computed: usize,
    /// Result nodes the run log does not mention.
    pub unknown: usize,
    /// Result node id -> whether that run found it cached (absent: unknown).
    pub cached: std::collections::BTreeMap<String, bool>,
}

/// Writes [`PublishedProvenance`] to `dest/provenance.json` (atomically).
pub fn write_provenance(
    dest: &Path,
    nodes: &[NodeEntry],
    log: &RunLog,
    report_key: Option<&str>,
) -> Result<(), ReportError> {
    let cached: std::collections::BTreeMap<String, bool> = nodes
        .iter()
        .filter_map(|n| Some((n.id.clone(), n.cached?)))
        .collect();
    let hits = cached.values().filter(|c| **c).count();
    let p = PublishedProvenance {
        rfmx_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: crate::GIT_COMMIT.into(),
        run_log: log.name.clone(),
        report_key: report_key.map(str::to_string),
        cache_hits: hits,
        computed: cached.len() - hits,
        unknown: nodes.len() - cached.len(),
        cached,
    };
    let path = dest.join(Provenance::FILE);
    let mut bytes =
        serde_json::to_vec_pretty(&p).map_err(|e| ReportError::Params(e.to_string()))?;
    bytes.push(b'\n');
    crate::fsx::write_atomic(&path, &bytes).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ReportError> {
    for e in walkdir::WalkDir::new(from).sort_by_file_name() {
        let e = e.map_err(|e| ReportError::Read {
            path: from.display().to_string(),
            source: e.into(),
        })?;
        let rel = e.path().strip_prefix(from).unwrap_or(e.path());
        let target = to.join(rel);
        let io = |source| ReportError::Write {
            path: target.display().to_string(),
            source,
        };
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io)?;
        } else {
            render::link_or_copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// The report's pages in a rendered dir: its top-level `*.html` files.
fn pages(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "html") && e.path().is_file())
        .map(|e| e.file_name())
        .collect();
    v.sort();
    v
}

/// Copies a rendered report (its pages + `assets/`) to `dest`: the new `assets/` is built in a
/// temp dir and swapped in by rename, then each page is replaced by rename (`index.html` last,
/// so that it never links to a page not yet there) and pages of an older render that this one
/// no longer has (e.g. a target dropped from the spec) are removed. Other files in `dest`
/// (e.g. `spec.resolved.toml`) are kept.
pub fn publish(from: &Path, dest: &Path) -> Result<(), ReportError> {
    let werr = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Write { path, source }
    };
    std::fs::create_dir_all(dest).map_err(werr(dest))?;
    let assets = dest.join("assets");
    let new = crate::fsx::temp_sibling(&assets);
    let result = (|| {
        copy_tree(&from.join("assets"), &new)?;
        let old = crate::fsx::temp_sibling(&assets);
        if assets.exists() {
            std::fs::rename(&assets, &old).map_err(werr(&assets))?;
        }
        std::fs::rename(&new, &assets).map_err(werr(&assets))?;
        let _ = std::fs::remove_dir_all(&old);
        let mut new_pages = pages(from);
        new_pages.sort_by_key(|p| p == "index.html");
        for name in &new_pages {
            let html = from.join(name);
            let bytes = std::fs::read(&html).map_err(|source| ReportError::Read {
                path: html.display().to_string(),
                source,
            })?;
            crate::fsx::write_atomic(&dest.join(name), &bytes).map_err(werr(dest))?;
        }
        for stale in pages(dest).iter().filter(|p| !new_pages.contains(p)) {
            let _ = std::fs::remove_file(dest.join(stale));
        }
        // The searches' chosen settings, which `[steer] from_search` reads (docs/design.md §10).
        let searches = from.join("search.json");
        if searches.exists() {
            let bytes = std::fs::read(&searches).map_err(|source| ReportError::Read {
                path: searches.display().to_string(),
                source,
            })?;
            crate::fsx::write_atomic(&dest.join("search.json"), &bytes).map_err(werr(dest))?;
        } else {
            let _ = std::fs::remove_file(dest.join("search.json"));
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&new);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_log_reads_cached_and_finished_from_the_newest_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("20250101T000000-1-exp.jsonl"),
            "{\"event\":\"finished\",\"key\":\"a\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("20250102T000000-1-exp.jsonl"),
            "{\"event\":\"cached\",\"key\":\"a\"}\n{\"event\":\"finished\",\"key\":\"b\"}\nnot json\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("20250103T000000-1-other.jsonl"), "").unwrap();
        let log = run_log(dir.path(), "exp");
        assert_eq!(log.cached.get("a"), Some(&true));
        assert_eq!(log.cached.get("b"), Some(&false));
        assert_eq!(
            log.name.as_deref(),
            Some("run log 20250102T000000-1-exp.jsonl")
        );
        assert_eq!(log.started, Some(1_735_776_000.0));
        assert!(run_log(&dir.path().join("none"), "exp").name.is_none());
    }

    #[test]
    fn report_params_do_not_depend_on_the_executor_or_the_spec_path() {
        let text = "[model]\nname = \"tiny\"\n[steer]\neta = [0.1]\n";
        let load = |name: &str, sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let spec = crate::spec::load_str(name, "x", text, &sets, &[]).unwrap();
            serde_json::to_value(report_params(&spec)).unwrap()
        };
        let base = load("specs/x.toml", &[]);
        assert_eq!(base, load("./specs/x.toml", &[]));
        assert_eq!(
            base,
            load(
                "specs/x.toml",
                &[
                    "executor.jobs=1",
                    "executor.slurm.gpus=0",
                    "executor.kind=\"slurm\""
                ]
            )
        );
        assert_ne!(base, load("specs/x.toml", &["steer.gate=0.25"]));
        // `[report] audio` is a param (so in the key); without the section, the default.
        assert_eq!(base["audio"], "vorbis");
        let wav = load("specs/x.toml", &["report.audio=\"wav\""]);
        assert_eq!(wav["audio"], "wav");
        assert_ne!(base, wav);
    }

    #[test]
    fn timestamps_round_trip_with_the_run_logs() {
        let now = crate::events::timestamp();
        let t = parse_timestamp(&now).unwrap();
        assert!(
            (t - crate::dag::store::unix_now()).abs() < 5.0,
            "{now} -> {t}"
        );
        assert_eq!(parse_timestamp("19700101T000000Z"), Some(0.0));
        assert_eq!(parse_timestamp("2024022 9T000000"), None);
        assert_eq!(parse_timestamp("garbage"), None);
    }

    #[test]
    fn publish_replaces_assets_and_keeps_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("assets/plots")).unwrap();
        std::fs::write(from.join("index.html"), "new").unwrap();
        std::fs::write(from.join("audio-notes_C.html"), "page").unwrap();
        std::fs::write(from.join("assets/plots/a.svg"), "<svg/>").unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir_all(dest.join("assets")).unwrap();
        std::fs::write(dest.join("assets/stale.svg"), "old").unwrap();
        std::fs::write(dest.join("spec.resolved.toml"), "x").unwrap();
        std::fs::write(dest.join("audio-dropped.html"), "stale").unwrap();
        publish(&from, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("audio-notes_C.html")).unwrap(),
            "page"
        );
        assert!(!dest.join("audio-dropped.html").exists());
        assert_eq!(
            std::fs::read_to_string(dest.join("index.html")).unwrap(),
            "new"
        );
        assert!(dest.join("assets/plots/a.svg").is_file());
        assert!(!dest.join("assets/stale.svg").exists());
        assert!(dest.join("spec.resolved.toml").is_file());
        let names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }
}
