//! Loads a result set written outside the store (fixtures/report/, made by
//! fixtures/report/make_fixture.py) as a [`ReportInput`]: `results.json` lists the nodes
//! ({id, kind, key, state: done|missing|failed, dir, seconds, error, fingerprint, params}) and the
//! spec-derived fields; node outputs live in the listed dirs, in the CONTRACT.md formats.

use std::path::Path;

use serde::Deserialize;

use super::ReportError;
use super::collect::{NodeEntry, NodeState};
use super::render::{Provenance, ReportInput};

#[derive(Deserialize)]
struct Results {
    experiment: String,
    spec: String,
    model: Option<super::ModelParams>,
    layers: Option<serde_json::Value>,
    #[serde(default)]
    metrics: Vec<String>,
    nodes: Vec<FixtureNode>,
}

#[derive(Deserialize)]
struct FixtureNode {
    id: String,
    kind: String,
    key: String,
    state: String,
    dir: Option<String>,
    seconds: Option<f64>,
    error: Option<String>,
    fingerprint: Option<String>,
    #[serde(default)]
    params: serde_json::Value,
    cached: Option<bool>,
}

/// Reads `dir/results.json`; provenance is fixed (`rfmx_version`, `git_commit` given) so that the
/// rendering is reproducible.
pub fn load(dir: &Path, provenance: Provenance) -> Result<ReportInput, ReportError> {
    let path = dir.join("results.json");
    let bytes = std::fs::read(&path).map_err(|source| ReportError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let r: Results = serde_json::from_slice(&bytes)
        .map_err(|e| ReportError::Params(format!("{}: {e}", path.display())))?;
    let nodes = r
        .nodes
        .into_iter()
        .map(|n| NodeEntry {
            state: match (n.state.as_str(), &n.dir) {
                ("done", Some(d)) => NodeState::Done(dir.join(d)),
                ("failed", _) => NodeState::Failed(n.error.clone().unwrap_or_default()),
                _ => NodeState::Missing,
            },
            id: n.id,
            kind: n.kind,
            key: n.key,
            seconds: n.seconds.filter(|_| n.state == "done"),
            fingerprint: n.fingerprint,
            params: n.params,
            cached: n.cached,
            started: None,
        })
        .collect();
    let params = super::ReportParams {
        experiment: r.experiment,
        spec: r.spec,
        model: r.model,
        layers: r.layers,
        metrics: r.metrics,
        png: false,
    };
    Ok(params.input(nodes, provenance))
}
