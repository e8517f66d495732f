//! Whether each planned node is cached or must run, and why.

use std::fmt;

use serde_json::Value;

use super::store::{EntryState, Index, Store};
use super::{Plan, PlannedNode};

#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    New,
    ParamsChanged(Vec<String>),
    InputsChanged(Vec<String>),
    VersionChanged {
        old: u32,
        new: u32,
    },
    FingerprintChanged,
    PreviousFailure(String),
    Corrupt(String),
    /// Same key as last time but no output: interrupted, or removed by gc.
    Missing,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::New => f.write_str("new"),
            Reason::ParamsChanged(d) => write!(f, "param {} changed", d.join(", ")),
            Reason::InputsChanged(d) => write!(f, "input changed: {}", d.join(", ")),
            Reason::VersionChanged { old, new } => {
                write!(f, "kind version changed ({old} -> {new})")
            }
            Reason::FingerprintChanged => f.write_str("model fingerprint changed"),
            Reason::PreviousFailure(e) => write!(f, "previous failure: {e}"),
            Reason::Corrupt(e) => write!(f, "corrupt output ({e})"),
            Reason::Missing => f.write_str("output missing (interrupted run or removed)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeStatus {
    Cached,
    ToRun(Reason),
}

/// The status of every node of `plan`, diffing against the experiment's last index.
pub fn statuses(plan: &Plan, store: &Store, index: &Index) -> Vec<NodeStatus> {
    // Verifying re-hashes every output: spread it over the cores.
    use rayon::prelude::*;
    plan.nodes
        .par_iter()
        .map(|n| status(n, store, index))
        .collect()
}

fn status(n: &PlannedNode, store: &Store, index: &Index) -> NodeStatus {
    match store.check(&n.key) {
        EntryState::Valid(_) => return NodeStatus::Cached,
        EntryState::Corrupt(why) => return NodeStatus::ToRun(Reason::Corrupt(why)),
        EntryState::Missing => {}
    }
    if let Some(f) = store.failure(&n.key) {
        return NodeStatus::ToRun(Reason::PreviousFailure(
            f.error_chain.first().cloned().unwrap_or_default(),
        ));
    }
    let Some(old) = index.nodes.get(&n.id) else {
        return NodeStatus::ToRun(Reason::New);
    };
    if old.key == n.key {
        return NodeStatus::ToRun(Reason::Missing);
    }
    if old.version != n.version {
        return NodeStatus::ToRun(Reason::VersionChanged {
            old: old.version,
            new: n.version,
        });
    }
    let mut changes = Vec::new();
    diff(&old.params, &n.params, "", &mut changes);
    if !changes.is_empty() {
        return NodeStatus::ToRun(Reason::ParamsChanged(changes));
    }
    if old.fingerprint != n.fingerprint {
        return NodeStatus::ToRun(Reason::FingerprintChanged);
    }
    let mut inputs = Vec::new();
    for i in &n.inputs {
        match old.inputs.iter().find(|o| o.name == i.name) {
            Some(o) if o.key == i.key => {}
            Some(_) => inputs.push(format!("`{}` ({})", i.name, i.id)),
            None => inputs.push(format!("`{}` added ({})", i.name, i.id)),
        }
    }
    for o in &old.inputs {
        if !n.inputs.iter().any(|i| i.name == o.name) {
            inputs.push(format!("`{}` removed", o.name));
        }
    }
    NodeStatus::ToRun(Reason::InputsChanged(inputs))
}

/// Dotted paths of the params that differ, with old and new values.
fn diff(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, &join(k), out),
                    (None, Some(y)) => out.push(format!("`{}` (added: {y})", join(k))),
                    (Some(x), None) => out.push(format!("`{}` (removed: was {x})", join(k))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if super::key::canonical_json(a) != super::key::canonical_json(b) => {
            let p = if path.is_empty() {
                "params".to_string()
            } else {
                path.to_string()
            };
            out.push(format!("`{p}` ({a} -> {b})"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn param_diff_names_the_changed_keys() {
        let mut out = Vec::new();
        diff(
            &json!({"x": 1, "o": {"a": 1.0}}),
            &json!({"x": 2, "o": {"a": 1}, "n": true}),
            "",
            &mut out,
        );
        assert_eq!(
            out,
            vec!["`n` (added: true)".to_string(), "`x` (1 -> 2)".to_string()]
        );
    }
}
