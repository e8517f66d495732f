//! The Slurm executor: submits the nodes that must run as `sbatch` jobs running this same binary
//! against the shared store, chained with `--dependency=afterok:`, then (unless detached) polls
//! `squeue` and reports the same events as the local executor. Ready nodes of one kind whose
//! inputs are in the same jobs go out as one job array (docs/design.md §2, Slurm): task `t` runs
//! the nodes listed at `t` in an index file (`rfmx node run-array INDEX`), up to the kind's
//! `group` of them one after another; a lone node is a plain job (`rfmx node run KEY`). Each
//! node's job (`J` or `J_t`) is kept in `<store>/slurm/<experiment>.json`, so that a re-run leaves
//! queued/running jobs alone, `rfmx status` lists them and `rfmx cancel` finds them.
//!
//! The worker writes the failure record of a node that fails; a job that dies without one
//! (cancelled, out of memory, time limit) gets one written here from its Slurm state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RunSummary;
use super::core::{Backend, Completion, Growth, Readiness, drive};
use super::node::{Outcome, record_failure};
use crate::dag::status::NodeStatus;
use crate::dag::store::{EntryState, FailureRecord, Store, unix_now};
use crate::dag::{Plan, PlannedNode};
use crate::events::{Event, EventSender};
use crate::spec::{JobResources, SlurmSpec};

/// Tasks per array: Slurm's default `MaxArraySize` is 1001 (indices 0..=1000); a larger group is
/// split into several arrays.
pub const MAX_ARRAY_TASKS: usize = 1000;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SlurmError {
    #[error("`{0}` is not installed or not on PATH")]
    #[diagnostic(
        code(rfmx::slurm::missing),
        help(
            "the Slurm executor needs the Slurm client commands (sbatch, squeue, scontrol, scancel); use --executor local otherwise"
        )
    )]
    Missing(&'static str),
    #[error("`{command}` failed ({status}): {stderr}")]
    #[diagnostic(code(rfmx::slurm::command))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("sbatch printed no job id for {id}: `{stdout}`")]
    #[diagnostic(code(rfmx::slurm::parse))]
    NoJobId { id: String, stdout: String },
    #[error("cannot use the store: {0}")]
    #[diagnostic(code(rfmx::slurm::store))]
    Store(String),
}

/// One submitted node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub job_id: String,
    pub log: PathBuf,
    pub submitted_unix: f64,
}

/// `<store>/slurm/<experiment>.json`: cache key -> its latest job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmState {
    pub jobs: BTreeMap<String, JobRecord>,
}

pub fn state_path(store: &Store, experiment: &str) -> PathBuf {
    store.root.join("slurm").join(format!("{experiment}.json"))
}

pub fn load_state(store: &Store, experiment: &str) -> SlurmState {
    read_state(store, experiment).0
}

/// The state file of `experiment` with every record rfmx can trust, and why it dropped the others
/// (or the whole file). The file is untrusted (docs/contracts.md, "Files rfmx reads"): a key that
/// is not a cache key would lead `status` out of the store, and a job id that is not a Slurm id
/// would reach `scancel` as an option (`--user=...`).
pub fn read_state(store: &Store, experiment: &str) -> (SlurmState, Vec<String>) {
    let path = state_path(store, experiment);
    let mut state: SlurmState = match store.read_json(&path) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return (SlurmState::default(), vec![e.to_string()]),
    };
    let mut problems = Vec::new();
    state.jobs.retain(|key, rec| {
        let why = if !crate::dag::store::is_key(key) {
            "its key is not a cache key"
        } else if !is_job_id(&rec.job_id) {
            "its job id is not a Slurm job id"
        } else {
            return true;
        };
        problems.push(format!(
            "{}: ignored the record {:?} (job {:?}): {why}",
            path.display(),
            crate::dag::store::short_key(key),
            rec.job_id.chars().take(24).collect::<String>()
        ));
        false
    });
    (state, problems)
}

/// What sbatch prints and squeue/scancel take: digits, `_` for array tasks.
fn is_job_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_digit() || c == '_')
}

fn save_state(store: &Store, experiment: &str, state: &SlurmState) -> Result<(), SlurmError> {
    store
        .write_json(&state_path(store, experiment), state)
        .map_err(|e| SlurmError::Store(e.to_string()))
}

/// Every experiment with a Slurm state file.
pub fn experiments(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.root.join("slurm"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "json" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

fn run_cmd(program: &'static str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SlurmError::Missing(program)
        } else {
            SlurmError::Command {
                command: program.into(),
                status: "not started".into(),
                stderr: e.to_string(),
            }
        }
    })?;
    if !out.status.success() {
        return Err(SlurmError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a job stands, from `squeue -t all` (which still lists jobs that ended recently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued(String),
    Running(String),
    /// Ended (any terminal Slurm state) or no longer known to Slurm.
    Ended {
        state: String,
        /// Cancelled by Slurm because an `afterok` job failed (`--kill-on-invalid-dep`): the job
        /// never started.
        dependency_never_satisfied: bool,
    },
}

impl JobState {
    pub fn is_active(&self) -> bool {
        !matches!(self, JobState::Ended { .. })
    }

    pub fn label(&self) -> &str {
        match self {
            JobState::Queued(s) | JobState::Running(s) | JobState::Ended { state: s, .. } => s,
        }
    }
}

fn classify(state: &str, reason: &str) -> JobState {
    let s = state.to_string();
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" | "SUSPENDED" => JobState::Queued(s),
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => JobState::Running(s),
        _ => JobState::Ended {
            dependency_never_satisfied: state == "CANCELLED"
                && reason == "DependencyNeverSatisfied",
            state: s,
        },
    }
}

/// The state of every job Slurm knows about, each array task under `J_t` (`squeue -r`).
pub fn job_states() -> Result<HashMap<String, JobState>, SlurmError> {
    let out = run_cmd(
        "squeue",
        &["-h", "-r", "-t", "all", "-o", "%i %T %r"].map(String::from),
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (id, st) = (f.next()?, f.next()?);
            Some((id.to_string(), classify(st, f.next().unwrap_or(""))))
        })
        .collect())
}

fn state_of(states: &HashMap<String, JobState>, job_id: &str) -> JobState {
    states
        .get(job_id)
        .cloned()
        .unwrap_or_else(|| JobState::Ended {
            state: "UNKNOWN (no longer in squeue)".into(),
            dependency_never_satisfied: false,
        })
}

/// What one `sbatch` runs: one node, or the tasks of an index file as an array.
#[derive(Debug, Clone, PartialEq)]
enum Work<'a> {
    Node(&'a str),
    /// The index file and its number of tasks.
    Array(&'a Path, usize),
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[allow(clippy::too_many_arguments)]
fn sbatch_args(
    name: &str,
    work: &Work<'_>,
    res: &JobResources,
    cfg: &SlurmSpec,
    home: &Path,
    exe: &Path,
    log: &Path,
    after: &[String],
) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=rfmx:{name}"),
        format!("--output={}", log.display()),
        format!("--time={}", res.time),
        format!("--mem={}", res.mem),
        format!("--cpus-per-task={}", res.cpus),
        format!("--export=ALL,RFMX_HOME={}", home.display()),
    ];
    if let Ok(cwd) = std::env::current_dir() {
        a.push(format!("--chdir={}", cwd.display()));
    }
    if res.gpus > 0 {
        a.push(format!("--gres=gpu:{}", res.gpus));
    }
    if let Some(p) = &res.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(acc) = &cfg.account {
        a.push(format!("--account={acc}"));
    }
    if let Work::Array(_, tasks) = work {
        a.push(match cfg.array_throttle {
            Some(t) => format!("--array=0-{}%{t}", tasks - 1),
            None => format!("--array=0-{}", tasks - 1),
        });
    }
    if !after.is_empty() {
        a.push(format!("--dependency=afterok:{}", after.join(":")));
        a.push("--kill-on-invalid-dep=yes".into());
    }
    a.extend(cfg.extra.iter().cloned());
    a.push(match work {
        Work::Node(key) => format!("--wrap=exec {} node run {key}", quoted(exe)),
        Work::Array(index, _) => {
            format!(
                "--wrap=exec {} node run-array {}",
                quoted(exe),
                quoted(index)
            )
        }
    });
    a
}

/// The `afterok` list of a job: each input job once, an array named by its id alone when the job
/// needs every one of its tasks (Slurm: `afterok:J` waits for all of J's tasks), else by `J_t`.
fn dependency_list(jobs: &BTreeSet<String>, array_tasks: &HashMap<String, usize>) -> Vec<String> {
    let mut by_array: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut out = Vec::new();
    for j in jobs {
        match j.split_once('_') {
            Some((base, _)) => by_array.entry(base).or_default().push(j),
            None => out.push(j.clone()),
        }
    }
    for (base, tasks) in by_array {
        if array_tasks.get(base) == Some(&tasks.len()) {
            out.push(base.to_string());
        } else {
            out.extend(tasks.into_iter().map(String::from));
        }
    }
    out
}

/// The nodes of array task `SLURM_ARRAY_TASK_ID` (absent: task 0) in an index file's tasks.
pub fn task_keys(tasks: &[Vec<String>], task_id: Option<&str>) -> Result<Vec<String>, String> {
    let t = match task_id {
        None => 0,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("SLURM_ARRAY_TASK_ID `{s}` is not a task index"))?,
    };
    tasks.get(t).cloned().ok_or_else(|| {
        format!(
            "array task {t} is not in the index (it has {} task(s))",
            tasks.len()
        )
    })
}

/// Whether a finished job left a result: Ok(seconds) or Err(failure record path, message).
fn outcome_of(
    store: &Store,
    node: &PlannedNode,
    rec: &JobRecord,
    slurm_state: &str,
) -> Result<f64, (PathBuf, String)> {
    if let EntryState::Valid(m) = store.check(&node.key) {
        return Ok(m.seconds);
    }
    let path = store.failure_path(&node.key);
    if let Some(f) = store.failure(&node.key)
        && f.failed_unix >= rec.submitted_unix
    {
        return Err((path, f.error_chain.join(": ")));
    }
    let chain = vec![format!(
        "slurm job {} ended as {slurm_state} without a result (killed, out of memory or out of time?)",
        rec.job_id
    )];
    let f = FailureRecord {
        id: node.id.clone(),
        key: node.key.clone(),
        kind: node.kind.clone(),
        params: node.params.clone(),
        error_chain: chain.clone(),
        log: rec.log.clone(),
        failed_unix: unix_now(),
    };
    let _ = store.write_json(&path, &f);
    Err((path, chain.join(": ")))
}

struct Slurm<'a> {
    store: &'a Store,
    experiment: &'a str,
    cfg: &'a SlurmSpec,
    detach: bool,
    events: &'a EventSender,
    exe: PathBuf,
    home: PathBuf,
    state: SlurmState,
    /// The job of each dispatched node (new, or still queued/running from an earlier run).
    job_of: HashMap<usize, JobRecord>,
    /// Dispatched nodes not yet reported, and those already known to have ended.
    open: Vec<usize>,
    ready: Vec<Completion>,
    started: HashSet<usize>,
    delay: Duration,
    /// Tasks of each array this run submitted (to name a whole array in `afterok`).
    array_tasks: HashMap<String, usize>,
    /// `sbatch` calls of this run.
    submitted_jobs: usize,
    /// Nodes whose submission was refused, and their dispatched dependents: never submitted
    /// (without a job to wait on they would start before their input exists); the core skips
    /// them once it has taken the refusal.
    held: HashSet<usize>,
}

impl Slurm<'_> {
    /// The jobs of `i`'s inputs that have not ended yet (an ended job is never named: Slurm
    /// forgets it after `MinJobAge` and would refuse the dependency).
    fn input_jobs(&self, plan: &Plan, i: usize) -> BTreeSet<String> {
        plan.inputs_of(i)
            .into_iter()
            .filter(|j| self.open.contains(j))
            .filter_map(|j| self.job_of.get(&j).map(|r| r.job_id.clone()))
            .collect()
    }

    /// Submits `nodes` (one kind, one resource set) as one job, or as one array of
    /// `⌈n / group⌉` tasks per [`MAX_ARRAY_TASKS`].
    fn submit(&mut self, plan: &Plan, nodes: &[usize]) -> Result<(), SlurmError> {
        let Some(&first) = nodes.first() else {
            return Ok(());
        };
        let kind = plan.nodes[first].kind.clone();
        let res = self.cfg.resources_for(&kind);
        let tasks: Vec<&[usize]> = nodes.chunks(res.group as usize).collect();
        for part in tasks.chunks(MAX_ARRAY_TASKS) {
            self.submit_one(plan, &kind, &res, part)?;
        }
        Ok(())
    }

    fn submit_one(
        &mut self,
        plan: &Plan,
        kind: &str,
        res: &JobResources,
        tasks: &[&[usize]],
    ) -> Result<(), SlurmError> {
        let nodes: Vec<usize> = tasks.iter().flat_map(|t| t.iter().copied()).collect();
        let after: BTreeSet<String> = nodes
            .iter()
            .flat_map(|&i| self.input_jobs(plan, i))
            .collect();
        let after = dependency_list(&after, &self.array_tasks);
        let logs = self.home.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| SlurmError::Store(e.to_string()))?;
        let single = nodes.len() == 1;
        let index_path;
        let (name, work, log) = if single {
            let node = &plan.nodes[nodes[0]];
            (
                node.id.clone(),
                Work::Node(&node.key),
                logs.join(format!("slurm-{}-%j.out", &node.key[..16])),
            )
        } else {
            // Named by its content: the same tasks always map to the same file.
            let keys: Vec<Vec<&str>> = tasks
                .iter()
                .map(|t| t.iter().map(|&i| plan.nodes[i].key.as_str()).collect())
                .collect();
            let json = serde_json::to_vec(&keys).map_err(|e| SlurmError::Store(e.to_string()))?;
            let hash = blake3::hash(&json).to_hex();
            index_path = self
                .home
                .join("slurm")
                .join("arrays")
                .join(format!("{kind}-{}.json", &hash[..16]));
            self.store
                .write_json(&index_path, &keys)
                .map_err(|e| SlurmError::Store(e.to_string()))?;
            (
                format!("{kind}[{}]", nodes.len()),
                Work::Array(&index_path, tasks.len()),
                logs.join(format!("slurm-{kind}-{}-%A_%a.out", &hash[..8])),
            )
        };
        let submitted_unix = unix_now();
        let out = run_cmd(
            "sbatch",
            &sbatch_args(
                &name, &work, res, self.cfg, &self.home, &self.exe, &log, &after,
            ),
        )?;
        let job_id = out
            .trim()
            .split(';')
            .next()
            .filter(|s| is_job_id(s))
            .ok_or_else(|| SlurmError::NoJobId {
                id: name.clone(),
                stdout: out.trim().into(),
            })?
            .to_string();
        self.submitted_jobs += 1;
        if !single {
            self.array_tasks.insert(job_id.clone(), tasks.len());
        }
        for (t, task) in tasks.iter().enumerate() {
            let (job, log) = if single {
                (job_id.clone(), log.to_string_lossy().replace("%j", &job_id))
            } else {
                (
                    format!("{job_id}_{t}"),
                    log.to_string_lossy()
                        .replace("%A", &job_id)
                        .replace("%a", &t.to_string()),
                )
            };
            for &i in task.iter() {
                let node = &plan.nodes[i];
                let rec = JobRecord {
                    id: node.id.clone(),
                    log: PathBuf::from(&log),
                    job_id: job.clone(),
                    submitted_unix,
                };
                let _ = self.events.send(Event::Queued {
                    id: node.id.clone(),
                    key: node.key.clone(),
                    reason: if single {
                        format!("submitted as slurm job {job}")
                    } else {
                        format!(
                            "submitted as slurm job {job} (task {t} of an array of {})",
                            tasks.len()
                        )
                    },
                });
                self.state.jobs.insert(node.key.clone(), rec.clone());
                self.job_of.insert(i, rec);
                self.open.push(i);
            }
        }
        save_state(self.store, self.experiment, &self.state)
    }

    /// Submits `nodes` grouped as the scheduler core groups ready nodes (kind, resources, input
    /// jobs), inputs before dependents; a group whose submission is refused fails its nodes.
    fn submit_grouped(&mut self, plan: &Plan, mut nodes: Vec<usize>) {
        nodes.sort_unstable();
        while !nodes.is_empty() {
            // A wave: nodes none of whose inputs wait in this list.
            let (wave, rest): (Vec<usize>, Vec<usize>) = nodes
                .iter()
                .partition(|&&i| !plan.inputs_of(i).iter().any(|j| nodes.contains(j)));
            let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
            for i in wave {
                if plan.inputs_of(i).iter().any(|j| self.held.contains(j)) {
                    self.held.insert(i);
                    continue;
                }
                let key = self.group_of(plan, i);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.push(i),
                    None => groups.push((key, vec![i])),
                }
            }
            for (_, g) in groups {
                if let Err(e) = self.submit(plan, &g) {
                    // A rejected submission fails the nodes (recorded like any failure).
                    for i in g {
                        let outcome =
                            record_failure(&plan.nodes[i], self.store, vec![e.to_string()]);
                        self.ready.push(Completion { node: i, outcome });
                        self.held.insert(i);
                    }
                }
            }
            nodes = rest;
        }
    }

    /// Nodes share a job when they are of one kind (so one resource set) and wait on the same
    /// jobs: one array then waits on exactly what each of its tasks needs, or on a little more
    /// (other tasks of the same input arrays), never on another stage.
    fn group_of(&self, plan: &Plan, i: usize) -> String {
        let mut bases: Vec<String> = self
            .input_jobs(plan, i)
            .into_iter()
            .map(|j| j.split('_').next().unwrap_or_default().to_string())
            .collect();
        bases.dedup();
        format!("{}|{}", plan.nodes[i].kind, bases.join(":"))
    }
}

impl Backend for Slurm<'_> {
    fn readiness(&self) -> Readiness {
        Readiness::InputsDispatched
    }

    fn group_key(&self, plan: &Plan, node: usize) -> Option<(String, usize)> {
        let group = self.cfg.resources_for(&plan.nodes[node].kind).group as usize;
        Some((self.group_of(plan, node), MAX_ARRAY_TASKS * group))
    }

    fn can_start(&self, _plan: &Plan, _group: &[usize]) -> bool {
        true
    }

    fn announces_queued(&self) -> bool {
        true
    }

    fn detached(&self) -> bool {
        self.detach
    }

    fn dispatch(&mut self, plan: &Plan, group: Vec<usize>) -> Result<(), String> {
        // Job states are read now, before deciding: a job that ended since the plan's statuses
        // were taken has either left its result (taken from the store) or not (resubmitted).
        let states = job_states().map_err(|e| e.to_string())?;
        let mut to_submit = Vec::new();
        for i in group {
            let node = &plan.nodes[i];
            if let Some(rec) = self.state.jobs.get(&node.key).cloned() {
                if state_of(&states, &rec.job_id).is_active() {
                    let _ = self.events.send(Event::Queued {
                        id: node.id.clone(),
                        key: node.key.clone(),
                        reason: format!("still queued or running as slurm job {}", rec.job_id),
                    });
                    self.job_of.insert(i, rec);
                    self.open.push(i);
                    continue;
                }
                if matches!(self.store.check(&node.key), EntryState::Valid(_)) {
                    self.ready.push(Completion {
                        node: i,
                        outcome: Outcome::CachedByOther,
                    });
                    continue;
                }
            }
            to_submit.push(i);
        }
        // Still-live jobs adopted above may change the input jobs of the rest: regroup.
        self.submit_grouped(plan, to_submit);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.open.len() + self.ready.len()
    }

    fn wait(&mut self, plan: &Plan) -> Result<Vec<Completion>, String> {
        loop {
            if !self.ready.is_empty() {
                return Ok(std::mem::take(&mut self.ready));
            }
            if self.open.is_empty() {
                return Ok(Vec::new());
            }
            std::thread::sleep(self.delay);
            let states = job_states().map_err(|e| e.to_string())?;
            let mut changed = false;
            let mut still = Vec::new();
            // In plan order, so that a job Slurm ended because its input's job failed in this same
            // poll (an afterok that can never hold) is left to the skip, not recorded as a failure.
            self.open.sort_unstable();
            let mut failed_now: HashSet<usize> = HashSet::new();
            let mut resubmit = Vec::new();
            for &i in &self.open {
                let node = &plan.nodes[i];
                let Some(rec) = self.job_of.get(&i) else {
                    continue;
                };
                match state_of(&states, &rec.job_id) {
                    JobState::Queued(_) => still.push(i),
                    JobState::Running(_) => {
                        if self.started.insert(i) {
                            changed = true;
                            let _ = self.events.send(Event::Started {
                                id: node.id.clone(),
                                key: node.key.clone(),
                                kind: node.kind.clone(),
                            });
                        }
                        still.push(i);
                    }
                    JobState::Ended {
                        state: st,
                        dependency_never_satisfied,
                    } => {
                        changed = true;
                        let valid = matches!(self.store.check(&node.key), EntryState::Valid(_));
                        if plan.inputs_of(i).iter().any(|d| failed_now.contains(d)) && !valid {
                            failed_now.insert(i);
                            continue;
                        }
                        if dependency_never_satisfied && !valid {
                            // Its job shared an array (or a packed task) with a dependent of a
                            // failed node, or waited on a task that also ran a failed node: Slurm
                            // cancelled it although none of its own inputs failed. It is
                            // submitted again, waiting only on its own inputs.
                            resubmit.push(i);
                            continue;
                        }
                        let outcome = match outcome_of(self.store, node, rec, &st) {
                            Ok(seconds) => Outcome::Computed { seconds },
                            Err((record, error)) => {
                                failed_now.insert(i);
                                Outcome::Failed { error, record }
                            }
                        };
                        self.ready.push(Completion { node: i, outcome });
                    }
                }
            }
            self.open = still;
            if !resubmit.is_empty() {
                let ids: Vec<&str> = resubmit
                    .iter()
                    .map(|&i| plan.nodes[i].id.as_str())
                    .collect();
                let _ = self.events.send(Event::Warning {
                    id: None,
                    message: format!(
                        "slurm cancelled the jobs of {} node(s) whose inputs did not fail \
                         (their array waited on a failed task); submitting them again: {}",
                        ids.len(),
                        ids.join(", ")
                    ),
                });
                self.submit_grouped(plan, resubmit);
            }
            self.delay = if changed {
                Duration::from_millis(200)
            } else {
                (self.delay.mul_f64(1.5)).min(Duration::from_secs(5))
            };
        }
    }

    /// Dependents of a failed node: Slurm would hold them forever on an `afterok` that can no
    /// longer be satisfied, so their jobs are cancelled.
    fn abandon(&mut self, _plan: &Plan, nodes: &[usize]) {
        self.open.retain(|i| !nodes.contains(i));
        // A packed task also runs other nodes: it is cancelled only when none of them is left.
        let live: HashSet<&str> = self
            .open
            .iter()
            .filter_map(|i| self.job_of.get(i).map(|r| r.job_id.as_str()))
            .collect();
        let jobs: Vec<String> = nodes
            .iter()
            .filter_map(|i| self.job_of.get(i).map(|r| r.job_id.clone()))
            .filter(|j| !live.contains(j.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !jobs.is_empty()
            && let Err(e) = run_cmd("scancel", &jobs)
        {
            let _ = self.events.send(Event::Warning {
                id: None,
                message: format!("cannot cancel the dependents' jobs: {e}"),
            });
        }
    }
}

/// Submits the nodes of `plan` that must run, then (unless `detach`) waits for them, growing the
/// plan from finished results between rounds (each round is submitted when the previous ends).
#[allow(clippy::too_many_arguments)]
pub fn run(
    plan: &mut Plan,
    statuses: Vec<NodeStatus>,
    store: &Store,
    experiment: &str,
    cfg: &SlurmSpec,
    detach: bool,
    events: &EventSender,
    growth: &mut dyn Growth,
) -> Result<RunSummary, SlurmError> {
    let exe = std::env::current_exe().map_err(|e| SlurmError::Store(e.to_string()))?;
    std::fs::create_dir_all(&store.root).map_err(|e| SlurmError::Store(e.to_string()))?;
    let home = store
        .root
        .canonicalize()
        .map_err(|e| SlurmError::Store(e.to_string()))?;
    job_states()?;
    let mut backend = Slurm {
        store,
        experiment,
        cfg,
        detach,
        events,
        exe,
        home,
        state: load_state(store, experiment),
        job_of: HashMap::new(),
        open: Vec::new(),
        ready: Vec::new(),
        started: HashSet::new(),
        delay: Duration::from_millis(200),
        array_tasks: HashMap::new(),
        submitted_jobs: 0,
        held: HashSet::new(),
    };
    let mut summary = drive(plan, statuses, &mut backend, growth, events);
    summary.slurm_jobs = Some(backend.submitted_jobs);
    Ok(summary)
}

/// Cancels the queued/running jobs of `experiment`; returns the cancelled job ids.
pub fn cancel(store: &Store, experiment: &str) -> Result<Vec<(String, String)>, SlurmError> {
    let state = load_state(store, experiment);
    let states = job_states()?;
    let active: Vec<(String, String)> = state
        .jobs
        .values()
        .filter(|r| state_of(&states, &r.job_id).is_active())
        .map(|r| (r.id.clone(), r.job_id.clone()))
        .collect();
    if !active.is_empty() {
        // The nodes of one packed task share its job: cancelled once.
        let jobs: BTreeSet<String> = active.iter().map(|(_, j)| j.clone()).collect();
        run_cmd("scancel", &jobs.into_iter().collect::<Vec<_>>())?;
    }
    Ok(active)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records whose key would lead out of the store or whose job id would reach scancel as an
    /// option are dropped with the reason; a file that does not parse is one reason.
    #[test]
    fn hostile_job_records_are_dropped_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let store = Store {
            root: d.path().to_path_buf(),
        };
        let rec = |job: &str| JobRecord {
            id: "n".into(),
            job_id: job.into(),
            log: "l".into(),
            submitted_unix: 0.0,
        };
        let mut state = SlurmState::default();
        state.jobs.insert("ab".repeat(32), rec("123_4"));
        state.jobs.insert("cd".repeat(32), rec("--user=root"));
        state.jobs.insert("../../x".into(), rec("5"));
        state.jobs.insert("é".into(), rec("6"));
        save_state(&store, "exp", &state).unwrap();
        let (kept, problems) = read_state(&store, "exp");
        assert_eq!(kept.jobs.keys().collect::<Vec<_>>(), [&"ab".repeat(32)]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"--user=root\"") && p.contains("not a Slurm job id"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("../../x") && p.contains("not a cache key"))
        );
        std::fs::write(state_path(&store, "exp"), [0xff, b'{']).unwrap();
        let (kept, problems) = read_state(&store, "exp");
        assert!(kept.jobs.is_empty());
        assert!(problems[0].contains("exp.json"), "{problems:?}");
    }

    fn cfg(gpus: u32) -> SlurmSpec {
        SlurmSpec {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            time: "01:00:00".into(),
            mem: "8G".into(),
            cpus: 2,
            gpus,
            extra: vec!["--qos=short".into()],
            array_throttle: None,
            resources: BTreeMap::new(),
        }
    }

    #[test]
    fn sbatch_args_carry_resources_dependencies_and_the_worker_command() {
        let c = cfg(1);
        let key = "ab".repeat(32);
        let a = sbatch_args(
            "toy_sum",
            &Work::Node(&key),
            &c.resources_for("toy_sum"),
            &c,
            Path::new("/shared/.rfmx"),
            Path::new("/opt/it's/rfmx"),
            Path::new("/shared/.rfmx/logs/x-%j.out"),
            &["11".into(), "12_3".into()],
        );
        for want in [
            "--parsable",
            "--job-name=rfmx:toy_sum",
            "--time=01:00:00",
            "--mem=8G",
            "--cpus-per-task=2",
            "--gres=gpu:1",
            "--partition=gpu",
            "--account=lab",
            "--qos=short",
            "--dependency=afterok:11:12_3",
            "--kill-on-invalid-dep=yes",
            "--export=ALL,RFMX_HOME=/shared/.rfmx",
            "--output=/shared/.rfmx/logs/x-%j.out",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert!(!a.iter().any(|x| x.starts_with("--array")), "{a:?}");
        let wrap = a.last().unwrap();
        assert_eq!(
            wrap,
            &format!("--wrap=exec '/opt/it'\\''s/rfmx' node run {key}")
        );
        // No GPUs, no inputs: neither flag.
        let c = cfg(0);
        let a = sbatch_args(
            "x",
            &Work::Node(&key),
            &c.resources_for("x"),
            &c,
            Path::new("/h"),
            Path::new("/e"),
            Path::new("/l"),
            &[],
        );
        assert!(
            !a.iter()
                .any(|x| x.starts_with("--gres") || x.starts_with("--dependency"))
        );
    }

    #[test]
    fn arrays_are_throttled_when_asked_and_run_their_index() {
        let mut c = cfg(0);
        let index = Path::new("/s/slurm/arrays/gen-1.json");
        let args = |c: &SlurmSpec| {
            sbatch_args(
                "generation[7]",
                &Work::Array(index, 7),
                &c.resources_for("generation"),
                c,
                Path::new("/s"),
                Path::new("/e"),
                Path::new("/l"),
                &[],
            )
        };
        let a = args(&c);
        assert!(a.iter().any(|x| x == "--array=0-6"), "{a:?}");
        assert_eq!(
            a.last().unwrap(),
            "--wrap=exec '/e' node run-array '/s/slurm/arrays/gen-1.json'"
        );
        c.array_throttle = Some(50);
        assert!(args(&c).iter().any(|x| x == "--array=0-6%50"));
    }

    #[test]
    fn a_kinds_table_overrides_the_flat_keys_it_names() {
        let mut c = cfg(1);
        c.resources.insert(
            "dataset".into(),
            crate::spec::KindResources {
                cpus: Some(8),
                gpus: Some(0),
                group: Some(4),
                ..Default::default()
            },
        );
        c.resources.insert(
            "generation".into(),
            crate::spec::KindResources {
                partition: Some("a100".into()),
                mem: Some("24G".into()),
                time: Some("00:20:00".into()),
                ..Default::default()
            },
        );
        let d = c.resources_for("dataset");
        assert_eq!(
            (
                d.cpus,
                d.gpus,
                d.group,
                d.mem.as_str(),
                d.partition.as_deref()
            ),
            (8, 0, 4, "8G", Some("gpu"))
        );
        let g = c.resources_for("generation");
        assert_eq!(
            (g.cpus, g.gpus, g.group, g.mem.as_str(), g.time.as_str()),
            (2, 1, 1, "24G", "00:20:00")
        );
        assert_eq!(g.partition.as_deref(), Some("a100"));
        // A kind without a table: the flat keys.
        let r = c.resources_for("report");
        assert_eq!((r.cpus, r.gpus, r.mem.as_str()), (2, 1, "8G"));
        let a = sbatch_args(
            "d",
            &Work::Node("k"),
            &d,
            &c,
            Path::new("/h"),
            Path::new("/e"),
            Path::new("/l"),
            &[],
        );
        assert!(a.iter().any(|x| x == "--cpus-per-task=8"));
        assert!(!a.iter().any(|x| x.starts_with("--gres")), "{a:?}");
    }

    #[test]
    fn by_default_only_the_model_kinds_ask_for_a_gpu() {
        let spec = crate::spec::load_str("s.toml", "s", "[toy]\nvalues = [1]\n", &[], &[]).unwrap();
        let slurm = &spec.base.executor.slurm;
        for kind in crate::spec::NODE_KINDS {
            let r = slurm.resources_for(kind);
            let model = matches!(kind, "activations" | "generation");
            assert_eq!(r.gpus, u32::from(model), "{kind}");
            // Everything else is the flat defaults.
            assert_eq!(
                (r.cpus, r.mem.as_str(), r.time.as_str(), r.group),
                (4, "32G", "04:00:00", 1),
                "{kind}"
            );
        }
        // A spec's table merges with the default one, key by key.
        let spec = crate::spec::load_str(
            "s.toml",
            "s",
            "[toy]\nvalues = [1]\n[executor.slurm.resources]\ndataset = { cpus = 8 }\n",
            &["executor.slurm.gpus=2".to_string()],
            &[],
        )
        .unwrap();
        let slurm = &spec.base.executor.slurm;
        assert_eq!(
            (
                slurm.resources_for("dataset").cpus,
                slurm.resources_for("dataset").gpus
            ),
            (8, 0)
        );
        assert_eq!(slurm.resources_for("generation").gpus, 2);
    }

    #[test]
    fn dependencies_name_a_whole_array_only_when_every_task_is_needed() {
        let arrays: HashMap<String, usize> = [("10".to_string(), 3), ("20".to_string(), 2)]
            .into_iter()
            .collect();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            dependency_list(&set(&["10_0", "10_1", "10_2", "20_1", "7"]), &arrays),
            ["7", "10", "20_1"]
        );
        // An array of an earlier run (task count unknown here) is named by its tasks.
        assert_eq!(dependency_list(&set(&["30_0"]), &arrays), ["30_0"]);
    }

    #[test]
    fn an_array_task_finds_its_nodes() {
        let tasks = vec![vec!["a".to_string(), "b".into()], vec!["c".into()]];
        assert_eq!(task_keys(&tasks, Some("1")).unwrap(), ["c"]);
        assert_eq!(task_keys(&tasks, None).unwrap(), ["a", "b"]);
        assert!(
            task_keys(&tasks, Some("2"))
                .unwrap_err()
                .contains("has 2 task(s)")
        );
        assert!(task_keys(&tasks, Some("x")).is_err());
    }

    #[test]
    fn slurm_states_classify_into_queued_running_ended() {
        assert_eq!(
            classify("PENDING", "Dependency"),
            JobState::Queued("PENDING".into())
        );
        assert_eq!(
            classify("RUNNING", "None"),
            JobState::Running("RUNNING".into())
        );
        assert!(classify("COMPLETING", "None").is_active());
        for s in [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
        ] {
            assert!(!classify(s, "None").is_active(), "{s}");
        }
        assert_eq!(
            classify("CANCELLED", "DependencyNeverSatisfied"),
            JobState::Ended {
                state: "CANCELLED".into(),
                dependency_never_satisfied: true
            }
        );
        assert_eq!(
            classify("CANCELLED", "None"),
            JobState::Ended {
                state: "CANCELLED".into(),
                dependency_never_satisfied: false
            }
        );
    }
}
