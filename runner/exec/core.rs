//! The one scheduler core of every executor: which nodes are ready, grouping of ready siblings
//! into batches, failure and skip propagation, the live plan's growth, events and counts. A
//! [`Backend`] only starts work (threads here, jobs on Slurm) and says how it ended.

use super::RunSummary;
use super::node::Outcome;
use crate::dag::Plan;
use crate::dag::status::{NodeStatus, Reason};
use crate::events::{Event, EventSender};

/// When a node may be handed to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Once every input has finished (threads in this process).
    InputsDone,
    /// Once every input has finished or been handed over (Slurm: `afterok` dependencies).
    InputsDispatched,
}

/// A dispatched node that ended.
#[derive(Debug)]
pub struct Completion {
    pub node: usize,
    pub outcome: Outcome,
}

/// Where the work runs.
pub trait Backend {
    fn readiness(&self) -> Readiness;
    /// The key under which ready nodes may share one dispatch, and the group's size limit.
    fn group_key(&self, _plan: &Plan, _node: usize) -> Option<(String, usize)> {
        None
    }
    /// Whether `group` may start now (free resources). Never called with nothing in flight
    /// unless the group fits an empty machine: a group always starts when nothing runs.
    fn can_start(&self, plan: &Plan, group: &[usize]) -> bool;
    fn dispatch(&mut self, plan: &Plan, group: Vec<usize>) -> Result<(), String>;
    /// Dispatched groups not yet reported.
    fn in_flight(&self) -> usize;
    /// Blocks until at least one dispatched node has ended.
    fn wait(&mut self, plan: &Plan) -> Result<Vec<Completion>, String>;
    /// Dispatched nodes whose inputs failed: they will never run (cancel their jobs).
    fn abandon(&mut self, _plan: &Plan, _nodes: &[usize]) {}
    /// Stop once everything that can be handed over has been (a detached Slurm run).
    fn detached(&self) -> bool {
        false
    }
    /// The backend emits its own `queued` events (with a job id), at dispatch.
    fn announces_queued(&self) -> bool {
        false
    }
}

/// The live plan as the scheduler sees it: more nodes from finished results, and their status.
pub trait Growth {
    /// Nodes planned from the results that exist now (empty: nothing more can be planned yet).
    fn grow(&mut self, plan: &mut Plan) -> Result<Vec<usize>, String>;
    fn status(&self, plan: &Plan, node: usize) -> NodeStatus;
}

/// A plan that does not grow.
pub struct FixedPlan;

impl Growth for FixedPlan {
    fn grow(&mut self, _plan: &mut Plan) -> Result<Vec<usize>, String> {
        Ok(Vec::new())
    }
    fn status(&self, _plan: &Plan, _node: usize) -> NodeStatus {
        NodeStatus::ToRun(Reason::New)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Dispatched,
    Done,
    Failed,
    Skipped,
}

struct Core<'e> {
    state: Vec<State>,
    statuses: Vec<NodeStatus>,
    summary: RunSummary,
    events: &'e EventSender,
}

impl Core<'_> {
    fn add(&mut self, plan: &Plan, status: NodeStatus, announce: bool) {
        let i = self.state.len();
        if let NodeStatus::ToRun(reason) = &status {
            if let Reason::Corrupt(why) = reason {
                let _ = self.events.send(Event::Warning {
                    id: Some(plan.nodes[i].id.clone()),
                    message: format!("corrupt output detected ({why}); rebuilding"),
                });
            }
            if announce {
                let _ = self.events.send(Event::Queued {
                    id: plan.nodes[i].id.clone(),
                    key: plan.nodes[i].key.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        self.state.push(State::Pending);
        self.statuses.push(status);
    }

    /// Marks cached nodes whose inputs are done as done, until none is left.
    fn settle_cached(&mut self, plan: &Plan) {
        loop {
            let mut changed = false;
            for i in 0..self.state.len() {
                if self.state[i] == State::Pending
                    && self.statuses[i] == NodeStatus::Cached
                    && plan
                        .inputs_of(i)
                        .iter()
                        .all(|&d| self.state[d] == State::Done)
                {
                    self.state[i] = State::Done;
                    self.summary.cached += 1;
                    let n = &plan.nodes[i];
                    let _ = self.events.send(Event::Cached {
                        id: n.id.clone(),
                        key: n.key.clone(),
                        by_other_run: false,
                    });
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    fn ready(&self, plan: &Plan, readiness: Readiness) -> Vec<usize> {
        (0..self.state.len())
            .filter(|&i| self.state[i] == State::Pending && self.statuses[i] != NodeStatus::Cached)
            .filter(|&i| {
                plan.inputs_of(i).iter().all(|&d| match readiness {
                    Readiness::InputsDone => self.state[d] == State::Done,
                    Readiness::InputsDispatched => {
                        matches!(self.state[d], State::Done | State::Dispatched)
                    }
                })
            })
            .collect()
    }

    /// Skips every transitive dependent of a failed node; returns those already dispatched.
    fn skip_dependents(&mut self, plan: &Plan, failed: usize) -> Vec<usize> {
        let mut abandoned = Vec::new();
        let mut stack = plan.dependents(failed);
        while let Some(d) = stack.pop() {
            if matches!(self.state[d], State::Pending | State::Dispatched) {
                if self.state[d] == State::Dispatched {
                    abandoned.push(d);
                }
                self.state[d] = State::Skipped;
                self.summary.skipped += 1;
                let _ = self.events.send(Event::Skipped {
                    id: plan.nodes[d].id.clone(),
                    key: plan.nodes[d].key.clone(),
                    because: plan.nodes[failed].id.clone(),
                });
                stack.extend(plan.dependents(d));
            }
        }
        abandoned
    }

    fn complete(&mut self, plan: &Plan, c: Completion, backend: &mut dyn Backend) {
        if self.state[c.node] != State::Dispatched {
            return; // skipped while it was queued (its job was cancelled)
        }
        let n = &plan.nodes[c.node];
        match c.outcome {
            Outcome::Computed { seconds } => {
                self.state[c.node] = State::Done;
                self.summary.computed += 1;
                let _ = self.events.send(Event::Finished {
                    id: n.id.clone(),
                    key: n.key.clone(),
                    kind: n.kind.clone(),
                    seconds,
                });
            }
            Outcome::CachedByOther => {
                self.state[c.node] = State::Done;
                self.summary.cached += 1;
                let _ = self.events.send(Event::Cached {
                    id: n.id.clone(),
                    key: n.key.clone(),
                    by_other_run: true,
                });
            }
            Outcome::Failed { error, record } => {
                self.state[c.node] = State::Failed;
                self.summary.failed += 1;
                self.summary.failed_ids.push(n.id.clone());
                let _ = self.events.send(Event::Failed {
                    id: n.id.clone(),
                    key: n.key.clone(),
                    kind: n.kind.clone(),
                    error,
                    record,
                });
                let abandoned = self.skip_dependents(plan, c.node);
                if !abandoned.is_empty() {
                    backend.abandon(plan, &abandoned);
                }
            }
        }
    }
}

/// Groups ready nodes by the backend's key (each group within its limit), in plan order.
fn groups(plan: &Plan, ready: &[usize], backend: &dyn Backend) -> Vec<Vec<usize>> {
    let mut out: Vec<(Option<String>, usize, Vec<usize>)> = Vec::new();
    for &i in ready {
        match backend.group_key(plan, i) {
            Some((key, limit)) => {
                match out
                    .iter_mut()
                    .find(|(k, l, g)| k.as_deref() == Some(key.as_str()) && g.len() < *l)
                {
                    Some((_, _, g)) => g.push(i),
                    None => out.push((Some(key), limit.max(1), vec![i])),
                }
            }
            None => out.push((None, 1, vec![i])),
        }
    }
    out.into_iter().map(|(_, _, g)| g).collect()
}

/// Runs the plan to the end (or, detached, until everything is handed over): dispatches what is
/// ready, propagates failures to dependents, grows the plan whenever nothing is in flight, and
/// reports every step on `events`.
pub fn drive(
    plan: &mut Plan,
    statuses: Vec<NodeStatus>,
    backend: &mut dyn Backend,
    growth: &mut dyn Growth,
    events: &EventSender,
) -> RunSummary {
    let t0 = std::time::Instant::now();
    let announce = !backend.announces_queued();
    let mut core = Core {
        state: Vec::new(),
        statuses: Vec::new(),
        summary: RunSummary::default(),
        events,
    };
    for s in statuses {
        core.add(plan, s, announce);
    }
    loop {
        // Hand over everything that can go now.
        loop {
            core.settle_cached(plan);
            let ready = core.ready(plan, backend.readiness());
            let mut dispatched = false;
            for g in groups(plan, &ready, &*backend) {
                if backend.in_flight() > 0 && !backend.can_start(plan, &g) {
                    continue;
                }
                for &i in &g {
                    core.state[i] = State::Dispatched;
                }
                if let Err(e) = backend.dispatch(plan, g.clone()) {
                    core.summary.planning.push(format!("cannot dispatch: {e}"));
                    for i in g {
                        core.state[i] = State::Skipped;
                        core.summary.skipped += 1;
                    }
                    continue;
                }
                dispatched = true;
            }
            if !dispatched {
                break;
            }
        }
        if backend.detached() {
            core.summary.seconds = t0.elapsed().as_secs_f64();
            return core.summary;
        }
        if backend.in_flight() == 0 {
            // Nothing runs and nothing more can start: the live plan may grow from the results.
            match growth.grow(plan) {
                Ok(new) if !new.is_empty() => {
                    let _ = events.send(Event::Planned {
                        round: plan.round,
                        nodes: new.len(),
                        waiting: plan.waiting.clone(),
                    });
                    for i in new {
                        let s = growth.status(plan, i);
                        core.add(plan, s, announce);
                    }
                    continue;
                }
                Ok(_) => break,
                Err(e) => {
                    core.summary.planning.push(e);
                    break;
                }
            }
        }
        match backend.wait(plan) {
            Ok(done) => {
                for c in done {
                    core.complete(plan, c, backend);
                }
            }
            Err(e) => {
                core.summary.planning.push(e);
                break;
            }
        }
    }
    if !plan.complete() {
        core.summary
            .planning
            .extend(plan.waiting.iter().map(|w| format!("not planned: {w}")));
    }
    core.summary.seconds = t0.elapsed().as_secs_f64();
    let s = &core.summary;
    let _ = events.send(Event::RunFinished {
        computed: s.computed,
        cached: s.cached,
        failed: s.failed,
        skipped: s.skipped,
        seconds: s.seconds,
    });
    core.summary
}
