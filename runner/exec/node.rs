//! Running nodes in this process: each node under its lock file, its inputs re-hashed before they
//! are read, its outputs computed into a temp dir inside the store and renamed into place, or a
//! failure record written. Used by the local executor and by `rfmx node run` (a Slurm job).

use std::collections::HashSet;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use crate::dag::store::{EntryState, FailureRecord, Store, unix_now};
use crate::dag::{NodeCtx, NodeError, NodeInput, PlannedNode, Registry};
use crate::events::{Event, EventSender};

/// How one node's execution ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Computed {
        seconds: f64,
    },
    /// Another process finished it while we waited for the lock.
    CachedByOther,
    Failed {
        error: String,
        record: PathBuf,
    },
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut chain = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        chain.push(s.to_string());
        cur = s.source();
    }
    chain
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Writes the node's failure record and returns the outcome.
pub fn record_failure(node: &PlannedNode, store: &Store, chain: Vec<String>) -> Outcome {
    let record = store.failure_path(&node.key);
    let rec = FailureRecord {
        id: node.id.clone(),
        key: node.key.clone(),
        kind: node.kind.clone(),
        params: node.params.clone(),
        error_chain: chain.clone(),
        log: store.log_path(&node.key),
        failed_unix: unix_now(),
    };
    let _ = store.write_json(&record, &rec);
    Outcome::Failed {
        error: chain.join(": "),
        record,
    }
}

/// Keys whose outputs this process has re-hashed and found intact (each input is hashed once per
/// process, however many nodes read it).
fn verified() -> &'static std::sync::Mutex<HashSet<(PathBuf, String)>> {
    static V: std::sync::OnceLock<std::sync::Mutex<HashSet<(PathBuf, String)>>> =
        std::sync::OnceLock::new();
    V.get_or_init(Default::default)
}

/// Re-hashes every input a node is about to read. A corrupt input is moved aside (so that the next
/// run recomputes it) and fails the node with the reason; it is never read.
fn verify_inputs(inputs: &[NodeInput], store: &Store) -> Result<(), Vec<String>> {
    for i in inputs {
        let id = (store.root.clone(), i.key.clone());
        if verified().lock().is_ok_and(|v| v.contains(&id)) {
            continue;
        }
        match store.verify(&i.key) {
            EntryState::Valid(_) => {
                if let Ok(mut v) = verified().lock() {
                    v.insert(id);
                }
            }
            EntryState::Missing => {
                return Err(vec![format!(
                    "input `{}` ({}) is not in the store",
                    i.name, i.id
                )]);
            }
            EntryState::Corrupt(why) => {
                let moved = match store.quarantine(&i.key) {
                    Ok(to) => format!("moved aside to {}", to.display()),
                    Err(e) => format!("could not move it aside: {e}"),
                };
                return Err(vec![format!(
                    "input `{}` ({}) is corrupt in the store ({why}); {moved}; `rfmx run` again recomputes it",
                    i.name, i.id
                )]);
            }
        }
    }
    Ok(())
}

/// A node ready to compute: its inputs, temp dir and log.
struct Prepared {
    index: usize,
    inputs: Vec<NodeInput>,
    tmp: PathBuf,
    out_dir: PathBuf,
    log_path: PathBuf,
    log: File,
}

/// Takes the lock, re-checks the store and prepares the node (None + outcome when it needs no run
/// or cannot run).
fn prepare(
    index: usize,
    node: &PlannedNode,
    store: &Store,
    events: &EventSender,
) -> Result<Prepared, Outcome> {
    match store.check(&node.key) {
        EntryState::Valid(_) => return Err(Outcome::CachedByOther),
        EntryState::Corrupt(_) | EntryState::Missing => {}
    }
    let _ = events.send(Event::Started {
        id: node.id.clone(),
        key: node.key.clone(),
        kind: node.kind.clone(),
    });
    let fail = |chain: Vec<String>| record_failure(node, store, chain);
    let inputs: Vec<NodeInput> = node
        .inputs
        .iter()
        .map(|i| NodeInput {
            name: i.name.clone(),
            role: i.role.clone(),
            id: i.id.clone(),
            key: i.key.clone(),
            kind: i.kind.clone(),
            label: i.label.clone(),
            dir: store.out_dir(&i.key),
        })
        .collect();
    if let Some(missing) = inputs.iter().find(|i| !i.dir.is_dir()) {
        return Err(fail(vec![format!(
            "input `{}` ({}) is not in the store",
            missing.name, missing.id
        )]));
    }
    verify_inputs(&inputs, store).map_err(fail)?;
    for e in &node.externals {
        e.check().map_err(|why| fail(vec![why]))?;
    }
    let tmp = store
        .temp_dir(&node.key)
        .map_err(|e| fail(error_chain(&e)))?;
    let log_path = store.log_path(&node.key);
    let _ = std::fs::create_dir_all(log_path.parent().unwrap_or(store.root.as_path()));
    let log = match File::options().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(fail(vec![format!(
                "cannot open log {}: {e}",
                log_path.display()
            )]));
        }
    };
    Ok(Prepared {
        index,
        inputs,
        out_dir: tmp.join("out"),
        tmp,
        log_path,
        log,
    })
}

/// Runs one node (lock, re-check, compute into a temp dir, commit or record the failure).
pub fn execute_node(
    node: &PlannedNode,
    store: &Store,
    registry: &Registry,
    events: &EventSender,
) -> Outcome {
    execute_group(std::slice::from_ref(node), store, registry, events)
        .pop()
        .unwrap_or(Outcome::CachedByOther)
}

/// Runs a group of nodes of one kind as one batch ([`crate::dag::NodeKind::run_batch`]); every
/// node keeps its own lock, temp dir, log, commit and failure record. Returns one outcome per node.
pub fn execute_group(
    nodes: &[PlannedNode],
    store: &Store,
    registry: &Registry,
    events: &EventSender,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; nodes.len()];
    let Some(kind) = nodes.first().and_then(|n| registry.get(&n.kind)) else {
        return nodes
            .iter()
            .map(|n| {
                record_failure(
                    n,
                    store,
                    vec![format!(
                        "node kind `{}` is not registered in this rfmx build",
                        n.kind
                    )],
                )
            })
            .collect();
    };
    // Locks are taken in key order, so that two processes with overlapping groups cannot each
    // hold what the other waits for.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| nodes[a].key.cmp(&nodes[b].key));
    let mut locks = Vec::new();
    for &i in &order {
        match store.lock(&nodes[i].key) {
            Ok(l) => locks.push(l),
            Err(e) => outcomes[i] = Some(record_failure(&nodes[i], store, error_chain(&e))),
        }
    }
    let mut prepared = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        match prepare(i, node, store, events) {
            Ok(p) => prepared.push(p),
            Err(o) => outcomes[i] = Some(o),
        }
    }
    if !prepared.is_empty() {
        let started_unix = unix_now();
        let t0 = Instant::now();
        let progress: Vec<_> = prepared
            .iter()
            .map(|p| {
                let id = nodes[p.index].id.clone();
                move |done: u64, total: u64, message: &str| {
                    let _ = events.send(Event::Progress {
                        id: id.clone(),
                        done,
                        total,
                        message: message.into(),
                    });
                }
            })
            .collect();
        let order: Vec<usize> = prepared.iter().map(|p| p.index).collect();
        let results: Vec<Result<(), Vec<String>>> = {
            let mut ctxs: Vec<NodeCtx<'_>> = prepared
                .iter_mut()
                .zip(&progress)
                .map(|(p, progress)| {
                    let node = &nodes[p.index];
                    NodeCtx {
                        id: &node.id,
                        key: &node.key,
                        params: &node.params,
                        hints: &node.hints,
                        inputs: &p.inputs,
                        out_dir: &p.out_dir,
                        log_path: &p.log_path,
                        log: &mut p.log,
                        progress,
                    }
                })
                .collect();
            for (c, &i) in ctxs.iter_mut().zip(&order) {
                c.log(&format!(
                    "== {} {} started at unix {started_unix:.3}",
                    nodes[i].kind, nodes[i].id
                ));
            }
            let n = ctxs.len();
            // The user concepts the nodes name, in scope while they run, also in a process that
            // never loaded the spec (`rfmx node run`; docs/design.md §5).
            let defs: Vec<_> = order
                .iter()
                .flat_map(|&i| crate::data::concepts::defs_in_params(&nodes[i].params))
                .collect();
            let run = || crate::data::concepts::with_scope(&defs, || kind.run_batch(&mut ctxs));
            match std::panic::catch_unwind(AssertUnwindSafe(run)) {
                Ok(r) if r.len() == n => r
                    .into_iter()
                    .map(|r: Result<(), NodeError>| r.map_err(|e| error_chain(e.as_ref())))
                    .collect(),
                Ok(r) => vec![
                    Err(vec![format!(
                        "node kind `{}` returned {} results for a batch of {n}",
                        kind.name(),
                        r.len()
                    )]);
                    n
                ],
                Err(p) => vec![Err(vec![format!("panicked: {}", panic_message(p.as_ref()))]); n],
            }
        };
        let seconds = t0.elapsed().as_secs_f64() / prepared.len() as f64;
        for (mut p, result) in prepared.into_iter().zip(results) {
            let node = &nodes[p.index];
            let committed = result.and_then(|()| {
                store
                    .commit(node, &p.tmp, started_unix, seconds)
                    .map_err(|e| error_chain(&e))
            });
            outcomes[p.index] = Some(match committed {
                Ok(_) => {
                    let _ = std::fs::remove_file(store.failure_path(&node.key));
                    Outcome::Computed { seconds }
                }
                Err(chain) => {
                    use std::io::Write;
                    let _ = writeln!(p.log, "== failed: {}", chain.join(": "));
                    let _ = std::fs::remove_dir_all(&p.tmp);
                    record_failure(node, store, chain)
                }
            });
        }
    }
    drop(locks);
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::CachedByOther))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::External;

    #[test]
    fn an_external_input_changed_after_planning_fails_the_node_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let font = dir.path().join("font.sf2");
        std::fs::write(&font, "planned bytes").unwrap();
        let node = PlannedNode {
            id: "toy_square[x=3]".into(),
            key: "ab".repeat(32),
            kind: "toy_square".into(),
            label: Default::default(),
            version: 1,
            params: serde_json::json!({ "x": 3, "offset": 0 }),
            hints: serde_json::Value::Null,
            inputs: vec![],
            fingerprint: None,
            externals: vec![External::file("SoundFont", &font).unwrap()],
        };
        let store = Store {
            root: dir.path().join("store"),
        };
        let registry = crate::registry::default_registry();
        let (tx, _rx) = crossbeam_channel::unbounded();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&font, "swapped bytes").unwrap();
        match execute_node(&node, &store, &registry, &tx) {
            Outcome::Failed { error, record } => {
                assert!(error.contains("the SoundFont at"), "{error}");
                assert!(
                    error.contains("changed since this node was planned"),
                    "{error}"
                );
                assert!(record.is_file());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(store.check(&node.key), EntryState::Missing));
        // Put back, the same planned node computes.
        std::fs::write(&font, "planned bytes").unwrap();
        assert!(matches!(
            execute_node(&node, &store, &registry, &tx),
            Outcome::Computed { .. }
        ));
    }
}
