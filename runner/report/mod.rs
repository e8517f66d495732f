//! Plots and a self-contained HTML report per spec (issue 11).
//!
//! - [`ReportStage`] plans one `report` node in `plan_final` with every result node of the plan as
//!   input (datasets, activations, probes, directions, generations, evaluations, toy nodes).
//! - [`ReportNode`] renders `index.html` + `assets/` (SVG plots, copied audio, stylesheet) into its
//!   output dir. It reads ONLY the node formats of CONTRACT.md, and tolerates missing files.
//! - After `rfmx run`, [`ReportStage::summary`] publishes the report to `reports/<experiment>/`
//!   (temp dir + rename for `assets/`, temp file + rename for `index.html`): a copy of the report
//!   node's output, or, when the node could not run (a failed input), a report rendered from
//!   whatever results exist with the missing ones marked — as `rfmx report SPEC` does.

pub mod collect;
pub mod plots;
pub mod render;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dag::store::{EntryState, Store};
use crate::dag::{NodeCtx, NodeError, NodeKind, NodeSpec, Plan, PlanBuilder, PlanError, PlannedNode, Stage};
use crate::spec::LoadedSpec;
use crate::spec::schema::LayerStrategy;

pub use collect::{NodeEntry, NodeState};
pub use render::{Provenance, ReportInput, Rendered, render};

/// The node kinds whose outputs the report reads, in section order.
pub const INPUT_KINDS: [&str; 8] = [
    "dataset",
    "activations",
    "probe",
    "directions",
    "generation",
    "evaluation",
    "toy_square",
    "toy_sum",
];

#[derive(Debug, thiserror::Error)]
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
    #[error("{0} plans no report node: it has no result nodes (no stage consumes its sections)")]
    NoReport(String),
}

/// The report node's params: what it needs from the spec (hashed into its key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportParams {
    pub experiment: String,
    pub spec: String,
    pub model: Option<ModelParams>,
    pub layers: Option<serde_json::Value>,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub png: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelParams {
    pub name: String,
    pub path: Option<String>,
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
            layers: self.layers(),
            metrics: self.metrics.clone(),
            nodes,
            png: self.png,
            provenance,
        }
    }
}

pub struct ReportStage;

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
        for kind in INPUT_KINDS {
            for (i, (r, _)) in plan.nodes_of_kind(kind).into_iter().enumerate() {
                inputs.push((format!("{kind}:{i}"), r));
            }
        }
        if inputs.is_empty() {
            return Ok(());
        }
        let base = &spec.base;
        let params = ReportParams {
            experiment: spec.experiment().to_string(),
            spec: spec.resolved_toml(),
            model: base.model.as_ref().map(|m| ModelParams {
                name: m.name.clone(),
                path: m.path.clone(),
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
        };
        let params = serde_json::to_value(&params).map_err(|e| PlanError::Stage {
            stage: "report".into(),
            message: e.to_string(),
        })?;
        let mut node = NodeSpec::new("report", "report", params);
        for (name, r) in inputs {
            node = node.input(name, r);
        }
        plan.add(node)?;
        Ok(())
    }

    /// Publishes the report to `reports/<experiment>/` and says where it is.
    fn summary(&self, plan: &Plan, store: &Store) -> Option<String> {
        let node = plan.nodes.iter().find(|n| n.kind == "report")?;
        let params: ReportParams = serde_json::from_value(node.params.clone()).ok()?;
        let dest = reports_dir(&params.experiment);
        let result = match store.verify(&node.key) {
            EntryState::Valid(_) => publish(&store.out_dir(&node.key), &dest).map(|()| None),
            _ => render_from_store(plan, node, store, &dest, false).map(Some),
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

/// `reports/<experiment>` (relative to the working directory).
pub fn reports_dir(experiment: &str) -> PathBuf {
    PathBuf::from("reports").join(experiment)
}

/// The node kind: renders into its output dir.
pub struct ReportNode;

impl NodeKind for ReportNode {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let params: ReportParams = ctx.params_as()?;
        let nodes: Vec<NodeEntry> = ctx
            .inputs
            .iter()
            .map(|i| {
                let kind = i.name.split(':').next().unwrap_or_default().to_string();
                entry_from_dir(&i.id, &kind, &i.key, &i.dir)
            })
            .collect();
        // The store root is three levels above an input's out dir (store/<key>/out).
        let root = ctx.inputs.first().and_then(|i| i.dir.ancestors().nth(3));
        let (cached, log) = root
            .map(|r| run_log(&r.join("runs"), &params.experiment))
            .unwrap_or_default();
        let nodes = with_cache(nodes, &cached);
        ctx.progress(0, 1, "rendering");
        let r = render(
            &params.input(nodes, Provenance::current(log)),
            ctx.out_dir,
        )?;
        ctx.log(&format!(
            "rendered {} node(s): {} missing, {} failed",
            r.nodes, r.missing, r.failed
        ));
        ctx.progress(1, 1, "done");
        Ok(())
    }
}

/// A finished node's entry: its manifest (beside `out/`) gives timings, params and fingerprint.
fn entry_from_dir(id: &str, kind: &str, key: &str, dir: &Path) -> NodeEntry {
    let manifest: Option<serde_json::Value> = dir
        .parent()
        .and_then(|p| std::fs::read(p.join("manifest.json")).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let m = manifest.unwrap_or(serde_json::Value::Null);
    NodeEntry {
        id: id.to_string(),
        kind: kind.to_string(),
        key: key.to_string(),
        state: NodeState::Done(dir.to_path_buf()),
        seconds: m.get("seconds").and_then(serde_json::Value::as_f64),
        fingerprint: m
            .get("fingerprint")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        params: m.get("params").cloned().unwrap_or(serde_json::Value::Null),
        cached: None,
    }
}

fn with_cache(
    mut nodes: Vec<NodeEntry>,
    cached: &std::collections::HashMap<String, bool>,
) -> Vec<NodeEntry> {
    for n in &mut nodes {
        n.cached = cached.get(&n.key).copied();
    }
    nodes
}

/// The newest run log of `experiment`: node key -> whether that run found it cached.
pub fn run_log(
    runs: &Path,
    experiment: &str,
) -> (std::collections::HashMap<String, bool>, Option<String>) {
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
        .max();
    let mut map = std::collections::HashMap::new();
    let Some(path) = newest else {
        return (map, None);
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
    (map, Some(format!("run log {name}")))
}

/// The entries of the report node's inputs as the store has them now (missing and failed marked).
pub fn entries_from_store(plan: &Plan, report: &PlannedNode, store: &Store) -> Vec<NodeEntry> {
    report
        .inputs
        .iter()
        .map(|i| {
            let kind = i.name.split(':').next().unwrap_or_default();
            match store.verify(&i.key) {
                EntryState::Valid(_) => entry_from_dir(&i.id, kind, &i.key, &store.out_dir(&i.key)),
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
                    }
                }
            }
        })
        .collect()
}

/// Renders from whatever the store holds into `dest` (published atomically).
pub fn render_from_store(
    plan: &Plan,
    report: &PlannedNode,
    store: &Store,
    dest: &Path,
    png: bool,
) -> Result<Rendered, ReportError> {
    let mut params: ReportParams = serde_json::from_value(report.params.clone())
        .map_err(|e| ReportError::Params(e.to_string()))?;
    params.png |= png;
    let (cached, log) = run_log(&store.runs_dir(), &params.experiment);
    let nodes = with_cache(entries_from_store(plan, report, store), &cached);
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| ReportError::Write {
        path: parent.display().to_string(),
        source,
    })?;
    let tmp = crate::fsx::temp_sibling(dest);
    let result = render(&params.input(nodes, Provenance::current(log)), &tmp)
        .and_then(|r| publish(&tmp, dest).map(|()| r));
    let _ = std::fs::remove_dir_all(&tmp);
    result
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
            std::fs::copy(e.path(), &target).map_err(io)?;
        }
    }
    Ok(())
}

/// Copies a rendered report (`index.html` + `assets/`) to `dest`: the new `assets/` is built in a
/// temp dir and swapped in by rename, then `index.html` is replaced by rename. Other files in
/// `dest` (e.g. `spec.resolved.toml`) are kept.
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
        let html = from.join("index.html");
        let bytes = std::fs::read(&html).map_err(|source| ReportError::Read {
            path: html.display().to_string(),
            source,
        })?;
        crate::fsx::write_atomic(&dest.join("index.html"), &bytes).map_err(werr(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&new);
    }
    result
}

/// `rfmx report SPEC`: renders from whatever results exist (missing ones marked) into
/// `reports/<experiment>/`.
pub fn report_command(spec_path: &Path, sets: &[String], png: bool, store: &Store) -> u8 {
    let spec = match crate::spec::load(spec_path, sets, &crate::spec::env_overrides()) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{}", e.render(crate::commands::RENDER_WIDTH));
            return 2;
        }
    };
    let registry = crate::registry::default_registry();
    let plan = match crate::dag::build_plan(&spec, &registry) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: cannot plan {}: {e}", spec_path.display());
            return 2;
        }
    };
    let Some(node) = plan.nodes.iter().find(|n| n.kind == "report") else {
        eprintln!(
            "Error: {}",
            ReportError::NoReport(spec_path.display().to_string())
        );
        return 2;
    };
    let dest = reports_dir(spec.experiment());
    match render_from_store(&plan, node, store, &dest, png) {
        Ok(r) => {
            println!(
                "report: {} ({} result node(s): {} missing, {} failed)",
                dest.join("index.html").display(),
                r.nodes,
                r.missing,
                r.failed
            );
            0
        }
        Err(e) => {
            eprintln!("{:?}", miette::Report::new(e));
            1
        }
    }
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
        let (m, log) = run_log(dir.path(), "exp");
        assert_eq!(m.get("a"), Some(&true));
        assert_eq!(m.get("b"), Some(&false));
        assert_eq!(log.as_deref(), Some("run log 20250102T000000-1-exp.jsonl"));
        assert_eq!(run_log(&dir.path().join("none"), "exp").1, None);
    }

    #[test]
    fn publish_replaces_assets_and_keeps_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("assets/plots")).unwrap();
        std::fs::write(from.join("index.html"), "new").unwrap();
        std::fs::write(from.join("assets/plots/a.svg"), "<svg/>").unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir_all(dest.join("assets")).unwrap();
        std::fs::write(dest.join("assets/stale.svg"), "old").unwrap();
        std::fs::write(dest.join("spec.resolved.toml"), "x").unwrap();
        publish(&from, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("index.html")).unwrap(), "new");
        assert!(dest.join("assets/plots/a.svg").is_file());
        assert!(!dest.join("assets/stale.svg").exists());
        assert!(dest.join("spec.resolved.toml").is_file());
        let names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
