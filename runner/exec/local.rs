//! The local backend: worker threads in this process. A node occupies the resources its kind
//! declares: nodes that use every core (candle's and rayon's pools span the machine) run alone,
//! light nodes run side by side up to `jobs`, and one GPU node runs at a time — so nodes × threads
//! never exceeds the cores.

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::RunSummary;
use super::core::{Backend, Completion, FixedPlan, Growth, Readiness, drive};
use super::node::{Outcome, execute_group};
use crate::dag::status::NodeStatus;
use crate::dag::store::Store;
use crate::dag::{Cpus, Plan, PlannedNode, Registry, Resources};
use crate::events::EventSender;

type Task = (Vec<usize>, Vec<PlannedNode>);
type Done = (Vec<usize>, Vec<Outcome>);

struct Local<'r> {
    registry: &'r Registry,
    /// The CPU budget: `jobs` one-core nodes, or one all-core node.
    budget: usize,
    tasks: Sender<Task>,
    results: Receiver<Done>,
    /// Running groups: (their nodes, CPU cost, GPU).
    running: Vec<(Vec<usize>, usize, bool)>,
}

impl Local<'_> {
    fn resources(&self, plan: &Plan, group: &[usize]) -> Resources {
        let node = &plan.nodes[group[0]];
        self.registry
            .get(&node.kind)
            .map(|k| k.resources(node))
            .unwrap_or_default()
    }

    fn cost(&self, r: Resources, group: &[usize]) -> usize {
        match (r.gpu, r.cpus) {
            (true, _) => 1,
            (false, Cpus::All) => self.budget,
            (false, Cpus::One) => group.len(),
        }
    }
}

impl Backend for Local<'_> {
    fn readiness(&self) -> Readiness {
        Readiness::InputsDone
    }

    fn group_key(&self, plan: &Plan, node: usize) -> Option<(String, usize)> {
        let n = &plan.nodes[node];
        let kind = self.registry.get(&n.kind)?;
        let key = kind.batch_key(n)?;
        Some((format!("{}:{key}", n.kind), kind.batch_limit(n)))
    }

    fn can_start(&self, plan: &Plan, group: &[usize]) -> bool {
        let r = self.resources(plan, group);
        let used: usize = self.running.iter().map(|(_, c, _)| c).sum();
        let gpu_busy = self.running.iter().any(|(_, _, g)| *g);
        !(r.gpu && gpu_busy) && used + self.cost(r, group) <= self.budget
    }

    fn dispatch(&mut self, plan: &Plan, group: Vec<usize>) -> Result<(), String> {
        let r = self.resources(plan, &group);
        let cost = self.cost(r, &group);
        let nodes = group.iter().map(|&i| plan.nodes[i].clone()).collect();
        self.tasks
            .send((group.clone(), nodes))
            .map_err(|_| "the worker threads have stopped".to_string())?;
        self.running.push((group, cost, r.gpu));
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.running.len()
    }

    fn wait(&mut self, _plan: &Plan) -> Result<Vec<Completion>, String> {
        let (group, outcomes) = self
            .results
            .recv()
            .map_err(|_| "the worker threads have stopped".to_string())?;
        self.running.retain(|(g, _, _)| *g != group);
        Ok(group
            .into_iter()
            .zip(outcomes)
            .map(|(node, outcome)| Completion { node, outcome })
            .collect())
    }
}

/// Runs `plan` in this process with `jobs` workers, growing it through `growth` (the live plan).
pub fn run(
    plan: &mut Plan,
    statuses: Vec<NodeStatus>,
    store: &Store,
    registry: &Registry,
    jobs: usize,
    events: &EventSender,
    growth: &mut dyn Growth,
) -> RunSummary {
    let jobs = jobs.max(1);
    std::thread::scope(|scope| {
        let (task_tx, task_rx) = unbounded::<Task>();
        let (res_tx, res_rx) = unbounded::<Done>();
        for _ in 0..jobs {
            let task_rx = task_rx.clone();
            let res_tx = res_tx.clone();
            scope.spawn(move || {
                for (group, nodes) in task_rx {
                    let outcomes = execute_group(&nodes, store, registry, events);
                    if res_tx.send((group, outcomes)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        let mut backend = Local {
            registry,
            budget: jobs,
            tasks: task_tx,
            results: res_rx,
            running: Vec::new(),
        };
        drive(plan, statuses, &mut backend, growth, events)
        // `backend` (the task sender) drops here, and the workers end.
    })
}

/// Runs a plan as it is, without growing it (tests, tools).
pub fn run_plan(
    plan: &Plan,
    statuses: &[NodeStatus],
    store: &Store,
    registry: &Registry,
    jobs: usize,
    events: &EventSender,
) -> RunSummary {
    let mut plan = plan.clone();
    run(
        &mut plan,
        statuses.to_vec(),
        store,
        registry,
        jobs,
        events,
        &mut FixedPlan,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::dag::{
        NodeCtx, NodeError, NodeKind, NodeSpec, PlanBuilder, PlanError, Stage, build_plan,
    };
    use crate::spec::ResolvedSpec;

    /// Running heavy / light nodes now, the most seen at once, and the batch sizes.
    #[derive(Default)]
    struct Seen {
        heavy: AtomicUsize,
        light: AtomicUsize,
        max_heavy: AtomicUsize,
        max_light: AtomicUsize,
        heavy_with_others: AtomicUsize,
        batches: Mutex<Vec<usize>>,
    }

    struct Work {
        name: &'static str,
        heavy: bool,
        batch: bool,
        seen: &'static Seen,
    }

    impl NodeKind for Work {
        fn name(&self) -> &'static str {
            self.name
        }
        fn version(&self) -> u32 {
            1
        }
        fn resources(&self, _node: &PlannedNode) -> Resources {
            Resources {
                cpus: if self.heavy { Cpus::All } else { Cpus::One },
                gpu: false,
            }
        }
        fn batch_key(&self, _node: &PlannedNode) -> Option<String> {
            self.batch.then(|| "same prompt".into())
        }
        fn batch_limit(&self, _node: &PlannedNode) -> usize {
            3
        }
        fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
            let (now, max) = if self.heavy {
                (&self.seen.heavy, &self.seen.max_heavy)
            } else {
                (&self.seen.light, &self.seen.max_light)
            };
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            if self.heavy && self.seen.light.load(Ordering::SeqCst) > 0 {
                self.seen.heavy_with_others.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
            now.fetch_sub(1, Ordering::SeqCst);
            std::fs::write(ctx.out_dir.join("x.json"), ctx.params.to_string())?;
            Ok(())
        }
        fn run_batch(&self, ctxs: &mut [NodeCtx<'_>]) -> Vec<Result<(), NodeError>> {
            self.seen.batches.lock().unwrap().push(ctxs.len());
            ctxs.iter_mut().map(|c| self.run(c)).collect()
        }
    }

    struct Plans(&'static [(&'static str, usize)]);
    impl Stage for Plans {
        fn name(&self) -> &'static str {
            "plans"
        }
        fn plan(&self, _s: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
            for &(kind, n) in self.0 {
                for i in 0..n {
                    plan.add(NodeSpec::new(
                        format!("{kind}[{i}]"),
                        kind,
                        serde_json::json!({ "i": i }),
                    ))?;
                }
            }
            Ok(())
        }
    }

    fn run_all(registry: &Registry, jobs: usize) -> RunSummary {
        let spec =
            crate::spec::load_str("t.toml", "t", "[experiment]\nseed = 1\n", &[], &[]).unwrap();
        let plan = build_plan(&spec, registry, &crate::dag::NoResults).unwrap();
        let home = tempfile::tempdir().unwrap();
        let store = Store {
            root: home.path().to_path_buf(),
        };
        let st = vec![NodeStatus::ToRun(crate::dag::status::Reason::New); plan.nodes.len()];
        let (tx, _rx) = unbounded();
        run_plan(&plan, &st, &store, registry, jobs, &tx)
    }

    #[test]
    fn all_core_nodes_run_alone_and_one_core_nodes_side_by_side_up_to_jobs() {
        static SEEN: Seen = Seen {
            heavy: AtomicUsize::new(0),
            light: AtomicUsize::new(0),
            max_heavy: AtomicUsize::new(0),
            max_light: AtomicUsize::new(0),
            heavy_with_others: AtomicUsize::new(0),
            batches: Mutex::new(Vec::new()),
        };
        let registry = Registry::default()
            .stage(Plans(&[("heavy", 4), ("light", 8)]))
            .kind(Work {
                name: "heavy",
                heavy: true,
                batch: false,
                seen: &SEEN,
            })
            .kind(Work {
                name: "light",
                heavy: false,
                batch: false,
                seen: &SEEN,
            });
        let s = run_all(&registry, 3);
        assert_eq!((s.computed, s.failed), (12, 0));
        assert_eq!(SEEN.max_heavy.load(Ordering::SeqCst), 1);
        assert_eq!(SEEN.heavy_with_others.load(Ordering::SeqCst), 0);
        assert_eq!(
            SEEN.max_light.load(Ordering::SeqCst),
            3,
            "jobs bound the light nodes"
        );
    }

    #[test]
    fn ready_siblings_with_one_batch_key_run_as_batches_within_the_limit() {
        static SEEN: Seen = Seen {
            heavy: AtomicUsize::new(0),
            light: AtomicUsize::new(0),
            max_heavy: AtomicUsize::new(0),
            max_light: AtomicUsize::new(0),
            heavy_with_others: AtomicUsize::new(0),
            batches: Mutex::new(Vec::new()),
        };
        let registry = Registry::default().stage(Plans(&[("gen", 7)])).kind(Work {
            name: "gen",
            heavy: true,
            batch: true,
            seen: &SEEN,
        });
        let s = run_all(&registry, 2);
        assert_eq!((s.computed, s.failed), (7, 0));
        let mut b = SEEN.batches.lock().unwrap().clone();
        b.sort();
        assert_eq!(b, [1, 3, 3]);
    }
}
