//! Resolving each (condition, target) cell to source audio files.
//!
//! `files` conditions list WAV paths; `generations` conditions select `generation[...]` nodes of an
//! experiment from the store index by their `meta.json` (docs/contracts.md), so the same spec works on
//! fixture audio now and on steered generations once they exist.

use super::spec::{ConditionSpec, ListeningSpec, SourceKind, TargetSpec};
use super::{Result, StimuliError};
use crate::dag::store::Store;
use std::path::PathBuf;

/// One source clip of a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceClip {
    pub path: PathBuf,
    /// Where it came from (a path, or a node id), recorded in the private key.
    pub origin: String,
}

/// The first `clips_per_cell` sources of a cell, in a deterministic order.
pub fn resolve(
    spec: &ListeningSpec,
    cond: &ConditionSpec,
    target: &TargetSpec,
) -> Result<Vec<SourceClip>> {
    let n = spec.test.clips_per_cell;
    let err = |msg: String| StimuliError::Source {
        condition: cond.id.clone(),
        target: target.id.clone(),
        msg,
    };
    let all = match cond.source {
        SourceKind::Files => {
            let paths = cond.files.get(&target.id).cloned().unwrap_or_default();
            for p in &paths {
                if !p.is_file() {
                    return Err(err(format!("{} does not exist", p.display())));
                }
            }
            paths
                .into_iter()
                .map(|p| SourceClip {
                    origin: p.display().to_string(),
                    path: p,
                })
                .collect::<Vec<_>>()
        }
        SourceKind::Generations => {
            let experiment = cond.experiment.as_deref().unwrap_or_default();
            let store = match &cond.store {
                Some(root) => Store { root: root.clone() },
                None => Store::from_env(),
            };
            let index = store.index(experiment);
            if index.nodes.is_empty() {
                return Err(err(format!(
                    "the store {} has no index for experiment `{experiment}`: run \
                     `rfmx run` on its spec first (or set `store`)",
                    store.root.display()
                )));
            }
            let mut found = Vec::new();
            for node in index.nodes.values().filter(|n| n.kind == "generation") {
                let dir = store.out_dir(&node.key);
                let audio = dir.join("audio.wav");
                let Ok(text) = std::fs::read_to_string(dir.join("meta.json")) else {
                    continue;
                };
                let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    err(format!(
                        "{}: bad meta.json: {e}",
                        dir.join("meta.json").display()
                    ))
                })?;
                if audio.is_file() && matches(&meta, cond, target) {
                    found.push(SourceClip {
                        path: audio,
                        origin: node.id.clone(),
                    });
                }
            }
            found.sort_by(|a, b| a.origin.cmp(&b.origin));
            if found.len() < n {
                return Err(err(format!(
                    "{} finished generation node(s) of `{experiment}` match {} (need {n}); \
                     is that sweep point in the experiment's spec and has it run?",
                    found.len(),
                    describe(cond, target)
                )));
            }
            found
        }
    };
    if all.len() < n {
        return Err(err(format!(
            "{} clip(s) given, test.clips_per_cell = {n}",
            all.len()
        )));
    }
    Ok(all.into_iter().take(n).collect())
}

/// A `match` value for one target: placeholders expanded, a per-target table resolved.
fn expanded(v: &serde_json::Value, target: &TargetSpec) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(target.expand(s)),
        Value::Object(per_target) => per_target
            .get(&target.id)
            .map_or(Value::Null, |v| expanded(v, target)),
        Value::Array(any) => Value::Array(any.iter().map(|v| expanded(v, target)).collect()),
        other => other.clone(),
    }
}

/// Whether a `meta.json` value is the wanted one (numbers within 1e-9; a list: any of its values).
fn value_matches(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    match want {
        serde_json::Value::Array(any) => any.iter().any(|w| value_matches(got, w)),
        serde_json::Value::Number(w) => match (got.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() <= 1e-9,
            _ => false,
        },
        w => got == w,
    }
}

fn describe(cond: &ConditionSpec, target: &TargetSpec) -> String {
    let m: serde_json::Map<String, serde_json::Value> = cond
        .matches
        .iter()
        .map(|(k, v)| (k.clone(), expanded(v, target)))
        .collect();
    serde_json::Value::Object(m).to_string()
}

/// Whether a generation's `meta.json` has every field of the condition's `match`.
pub fn matches(meta: &serde_json::Value, cond: &ConditionSpec, target: &TargetSpec) -> bool {
    cond.matches.iter().all(|(k, want)| {
        meta.get(k)
            .is_some_and(|got| value_matches(got, &expanded(want, target)))
    })
}
