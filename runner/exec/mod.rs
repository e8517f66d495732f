//! The local executor: runs the nodes that must run, in parallel up to `jobs`, resuming from the
//! store. A failing node (error or panic) writes a failure record and only its dependents are
//! skipped. Each node is computed under its lock file and the store is re-checked after the lock
//! is taken, so two concurrent runs never compute the same node twice.

pub mod slurm;

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use crossbeam_channel::unbounded;

use crate::dag::status::{NodeStatus, Reason};
use crate::dag::store::{EntryState, FailureRecord, Store, unix_now};
use crate::dag::{NodeCtx, NodeError, NodeInput, Plan, PlannedNode, Registry};
use crate::events::{Event, EventSender};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub computed: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub failed_ids: Vec<String>,
}

/// How one node's execution ended.
#[derive(Debug)]
pub enum Outcome {
    Computed {
        seconds: f64,
    },
    /// Another process finished it while we waited for the lock.
    CachedByOther,
    Failed {
        error: String,
        record: std::path::PathBuf,
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

/// Keys whose outputs this process has re-hashed and found intact (each input is hashed once per
/// process, however many nodes read it).
fn verified() -> &'static std::sync::Mutex<HashSet<(std::path::PathBuf, String)>> {
    static V: std::sync::OnceLock<std::sync::Mutex<HashSet<(std::path::PathBuf, String)>>> =
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

/// Runs one node (lock, re-check, compute into a temp dir, commit or record the failure).
pub fn execute_node(
    node: &PlannedNode,
    store: &Store,
    registry: &Registry,
    events: &EventSender,
) -> Outcome {
    let fail = |chain: Vec<String>| -> Outcome {
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
    };
    let Some(kind) = registry.get(&node.kind) else {
        return fail(vec![format!(
            "node kind `{}` is not registered in this rfmx build",
            node.kind
        )]);
    };
    let _lock = match store.lock(&node.key) {
        Ok(l) => l,
        Err(e) => return fail(error_chain(&e)),
    };
    match store.check(&node.key) {
        EntryState::Valid(_) => return Outcome::CachedByOther,
        EntryState::Corrupt(_) | EntryState::Missing => {}
    }
    let _ = events.send(Event::Started {
        id: node.id.clone(),
        key: node.key.clone(),
        kind: node.kind.clone(),
    });
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
        return fail(vec![format!(
            "input `{}` ({}) is not in the store",
            missing.name, missing.id
        )]);
    }
    if let Err(chain) = verify_inputs(&inputs, store) {
        return fail(chain);
    }
    let tmp = match store.temp_dir(&node.key) {
        Ok(t) => t,
        Err(e) => return fail(error_chain(&e)),
    };
    let log_path = store.log_path(&node.key);
    let _ = std::fs::create_dir_all(log_path.parent().unwrap_or(store.root.as_path()));
    let mut log = match std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return fail(vec![format!("cannot open log {}: {e}", log_path.display())]);
        }
    };
    let id = node.id.clone();
    let progress = |done: u64, total: u64, message: &str| {
        let _ = events.send(Event::Progress {
            id: id.clone(),
            done,
            total,
            message: message.into(),
        });
    };
    let out_dir = tmp.join("out");
    let started_unix = unix_now();
    let t0 = Instant::now();
    let result: Result<(), NodeError> = {
        let mut ctx = NodeCtx {
            id: &node.id,
            key: &node.key,
            params: &node.params,
            hints: &node.hints,
            inputs: &inputs,
            out_dir: &out_dir,
            log_path: &log_path,
            log: &mut log,
            progress: &progress,
        };
        ctx.log(&format!(
            "== {} {} started at unix {started_unix:.3}",
            node.kind, node.id
        ));
        match std::panic::catch_unwind(AssertUnwindSafe(|| kind.run(&mut ctx))) {
            Ok(r) => r,
            Err(p) => Err(format!("panicked: {}", panic_message(p.as_ref())).into()),
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    match result.map_err(|e| error_chain(e.as_ref())).and_then(|()| {
        store
            .commit(node, &tmp, started_unix, seconds)
            .map_err(|e| error_chain(&e))
    }) {
        Ok(_) => {
            let _ = std::fs::remove_file(store.failure_path(&node.key));
            Outcome::Computed { seconds }
        }
        Err(chain) => {
            use std::io::Write;
            let _ = writeln!(log, "== failed: {}", chain.join(": "));
            let _ = std::fs::remove_dir_all(&tmp);
            fail(chain)
        }
    }
}

/// Runs `plan` given its statuses. Events go to `events`.
pub fn run_plan(
    plan: &Plan,
    statuses: &[NodeStatus],
    store: &Store,
    registry: &Registry,
    jobs: usize,
    events: &EventSender,
) -> RunSummary {
    let t0 = Instant::now();
    let n = plan.nodes.len();
    let mut summary = RunSummary::default();
    let mut done = vec![false; n];
    let mut pending: Vec<usize> = (0..n).map(|i| plan.inputs_of(i).len()).collect();
    let mut skipped: HashSet<usize> = HashSet::new();
    let (task_tx, task_rx) = unbounded::<usize>();
    let (res_tx, res_rx) = unbounded::<(usize, Outcome)>();

    for (i, s) in statuses.iter().enumerate() {
        match s {
            NodeStatus::Cached => {}
            NodeStatus::ToRun(reason) => {
                if let Reason::Corrupt(why) = reason {
                    let _ = events.send(Event::Warning {
                        id: Some(plan.nodes[i].id.clone()),
                        message: format!("corrupt output detected ({why}); rebuilding"),
                    });
                }
                let _ = events.send(Event::Queued {
                    id: plan.nodes[i].id.clone(),
                    key: plan.nodes[i].key.clone(),
                    reason: reason.to_string(),
                });
            }
        }
    }

    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let task_rx = task_rx.clone();
            let res_tx = res_tx.clone();
            scope.spawn(move || {
                for i in task_rx {
                    let outcome = execute_node(&plan.nodes[i], store, registry, events);
                    if res_tx.send((i, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);

        let mut remaining = n;
        // Completes node i (cached or computed) and dispatches dependents that became ready.
        let complete = |i: usize,
                        pending: &mut Vec<usize>,
                        done: &mut Vec<bool>,
                        ready: &mut VecDeque<usize>| {
            done[i] = true;
            for d in plan.dependents(i) {
                pending[d] -= 1;
                if pending[d] == 0 {
                    ready.push_back(d);
                }
            }
        };
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
        let mut in_flight = 0usize;
        loop {
            while let Some(i) = ready.pop_front() {
                if skipped.contains(&i) {
                    continue;
                }
                if statuses[i] == NodeStatus::Cached {
                    summary.cached += 1;
                    remaining -= 1;
                    let _ = events.send(Event::Cached {
                        id: plan.nodes[i].id.clone(),
                        key: plan.nodes[i].key.clone(),
                        by_other_run: false,
                    });
                    complete(i, &mut pending, &mut done, &mut ready);
                } else {
                    in_flight += 1;
                    let _ = task_tx.send(i);
                }
            }
            if in_flight == 0 {
                break;
            }
            let Ok((i, outcome)) = res_rx.recv() else {
                break;
            };
            in_flight -= 1;
            remaining -= 1;
            let node = &plan.nodes[i];
            match outcome {
                Outcome::Computed { seconds } => {
                    summary.computed += 1;
                    let _ = events.send(Event::Finished {
                        id: node.id.clone(),
                        key: node.key.clone(),
                        kind: node.kind.clone(),
                        seconds,
                    });
                    complete(i, &mut pending, &mut done, &mut ready);
                }
                Outcome::CachedByOther => {
                    summary.cached += 1;
                    let _ = events.send(Event::Cached {
                        id: node.id.clone(),
                        key: node.key.clone(),
                        by_other_run: true,
                    });
                    complete(i, &mut pending, &mut done, &mut ready);
                }
                Outcome::Failed { error, record } => {
                    summary.failed += 1;
                    summary.failed_ids.push(node.id.clone());
                    let _ = events.send(Event::Failed {
                        id: node.id.clone(),
                        key: node.key.clone(),
                        kind: node.kind.clone(),
                        error,
                        record,
                    });
                    // Skip every transitive dependent.
                    let mut stack = plan.dependents(i);
                    while let Some(d) = stack.pop() {
                        if skipped.insert(d) {
                            summary.skipped += 1;
                            remaining -= 1;
                            let _ = events.send(Event::Skipped {
                                id: plan.nodes[d].id.clone(),
                                key: plan.nodes[d].key.clone(),
                                because: node.id.clone(),
                            });
                            stack.extend(plan.dependents(d));
                        }
                    }
                }
            }
        }
        drop(task_tx);
        debug_assert_eq!(remaining, 0);
    });
    summary.seconds = t0.elapsed().as_secs_f64();
    let _ = events.send(Event::RunFinished {
        computed: summary.computed,
        cached: summary.cached,
        failed: summary.failed,
        skipped: summary.skipped,
        seconds: summary.seconds,
    });
    summary
}
