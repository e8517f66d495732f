//! The Slurm executor: submits every node that must run as one `sbatch` job running
//! `rfmx node run KEY` (this same binary) against the shared store, chained with
//! `--dependency=afterok:`, then (unless detached) polls `squeue` and reports the same events as
//! the local executor. Submitted job ids are kept in `<store>/slurm/<experiment>.json`, so that a
//! re-run leaves queued/running jobs alone, `rfmx status` lists them and `rfmx cancel` finds them.
//!
//! The worker writes the failure record of a node that fails; a job that dies without one
//! (cancelled, out of memory, time limit) gets one written here from its Slurm state.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::spec::SlurmSpec;

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
    Ended(String),
}

impl JobState {
    pub fn is_active(&self) -> bool {
        !matches!(self, JobState::Ended(_))
    }

    pub fn label(&self) -> &str {
        match self {
            JobState::Queued(s) | JobState::Running(s) | JobState::Ended(s) => s,
        }
    }
}

fn classify(state: &str) -> JobState {
    let s = state.to_string();
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" | "SUSPENDED" => JobState::Queued(s),
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => JobState::Running(s),
        _ => JobState::Ended(s),
    }
}

/// The state of every job Slurm knows about.
pub fn job_states() -> Result<HashMap<String, JobState>, SlurmError> {
    let out = run_cmd(
        "squeue",
        &["-h", "-t", "all", "-o", "%i %T"].map(String::from),
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (id, st) = l.trim().split_once(' ')?;
            Some((id.to_string(), classify(st.trim())))
        })
        .collect())
}

fn state_of(states: &HashMap<String, JobState>, job_id: &str) -> JobState {
    states
        .get(job_id)
        .cloned()
        .unwrap_or_else(|| JobState::Ended("UNKNOWN (no longer in squeue)".into()))
}

fn sbatch_args(
    node: &PlannedNode,
    cfg: &SlurmSpec,
    home: &Path,
    exe: &Path,
    log: &Path,
    after: &[String],
) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=rfmx:{}", node.id),
        format!("--output={}", log.display()),
        format!("--time={}", cfg.time),
        format!("--mem={}", cfg.mem),
        format!("--cpus-per-task={}", cfg.cpus),
        format!("--export=ALL,RFMX_HOME={}", home.display()),
    ];
    if let Ok(cwd) = std::env::current_dir() {
        a.push(format!("--chdir={}", cwd.display()));
    }
    if cfg.gpus > 0 {
        a.push(format!("--gres=gpu:{}", cfg.gpus));
    }
    if let Some(p) = &cfg.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(acc) = &cfg.account {
        a.push(format!("--account={acc}"));
    }
    if !after.is_empty() {
        a.push(format!("--dependency=afterok:{}", after.join(":")));
        a.push("--kill-on-invalid-dep=yes".into());
    }
    a.extend(cfg.extra.iter().cloned());
    a.push(format!(
        "--wrap=exec '{}' node run {}",
        exe.display().to_string().replace('\'', r"'\''"),
        node.key
    ));
    a
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
}

impl Slurm<'_> {
    fn submit(&mut self, plan: &Plan, i: usize) -> Result<(), SlurmError> {
        let node = &plan.nodes[i];
        let after: Vec<String> = plan
            .inputs_of(i)
            .into_iter()
            .filter_map(|j| self.job_of.get(&j).map(|r| r.job_id.clone()))
            .collect();
        let log = self
            .home
            .join("logs")
            .join(format!("slurm-{}-%j.out", &node.key[..16]));
        std::fs::create_dir_all(self.home.join("logs"))
            .map_err(|e| SlurmError::Store(e.to_string()))?;
        let submitted_unix = unix_now();
        let out = run_cmd(
            "sbatch",
            &sbatch_args(node, self.cfg, &self.home, &self.exe, &log, &after),
        )?;
        let job_id = out
            .trim()
            .split(';')
            .next()
            .filter(|s| is_job_id(s))
            .ok_or_else(|| SlurmError::NoJobId {
                id: node.id.clone(),
                stdout: out.trim().into(),
            })?
            .to_string();
        let rec = JobRecord {
            id: node.id.clone(),
            log: PathBuf::from(log.to_string_lossy().replace("%j", &job_id)),
            job_id: job_id.clone(),
            submitted_unix,
        };
        let _ = self.events.send(Event::Queued {
            id: node.id.clone(),
            key: node.key.clone(),
            reason: format!("submitted as slurm job {job_id}"),
        });
        self.state.jobs.insert(node.key.clone(), rec.clone());
        save_state(self.store, self.experiment, &self.state)?;
        self.job_of.insert(i, rec);
        self.open.push(i);
        Ok(())
    }
}

impl Backend for Slurm<'_> {
    fn readiness(&self) -> Readiness {
        Readiness::InputsDispatched
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
            if let Err(e) = self.submit(plan, i) {
                // A rejected submission fails the node (recorded like any failure).
                let outcome = record_failure(node, self.store, vec![e.to_string()]);
                self.ready.push(Completion { node: i, outcome });
            }
        }
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
                    JobState::Ended(st) => {
                        changed = true;
                        if plan.inputs_of(i).iter().any(|d| failed_now.contains(d))
                            && !matches!(self.store.check(&node.key), EntryState::Valid(_))
                        {
                            failed_now.insert(i);
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
        let jobs: Vec<String> = nodes
            .iter()
            .filter_map(|i| self.job_of.get(i).map(|r| r.job_id.clone()))
            .collect();
        self.open.retain(|i| !nodes.contains(i));
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
    };
    Ok(drive(plan, statuses, &mut backend, growth, events))
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
        run_cmd(
            "scancel",
            &active.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>(),
        )?;
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

    fn node() -> PlannedNode {
        PlannedNode {
            id: "toy_sum".into(),
            key: "ab".repeat(32),
            kind: "toy_sum".into(),
            label: Default::default(),
            version: 1,
            params: serde_json::json!({}),
            hints: serde_json::Value::Null,
            inputs: vec![],
            fingerprint: None,
            externals: vec![],
        }
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
        }
    }

    #[test]
    fn sbatch_args_carry_resources_dependencies_and_the_worker_command() {
        let a = sbatch_args(
            &node(),
            &cfg(1),
            Path::new("/shared/.rfmx"),
            Path::new("/opt/it's/rfmx"),
            Path::new("/shared/.rfmx/logs/x-%j.out"),
            &["11".into(), "12".into()],
        );
        for want in [
            "--parsable",
            "--time=01:00:00",
            "--mem=8G",
            "--cpus-per-task=2",
            "--gres=gpu:1",
            "--partition=gpu",
            "--account=lab",
            "--qos=short",
            "--dependency=afterok:11:12",
            "--kill-on-invalid-dep=yes",
            "--export=ALL,RFMX_HOME=/shared/.rfmx",
            "--output=/shared/.rfmx/logs/x-%j.out",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        let wrap = a.last().unwrap();
        assert_eq!(
            wrap,
            &format!(
                "--wrap=exec '/opt/it'\\''s/rfmx' node run {}",
                "ab".repeat(32)
            )
        );
        // No GPUs, no inputs: neither flag.
        let a = sbatch_args(
            &node(),
            &cfg(0),
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
    fn slurm_states_classify_into_queued_running_ended() {
        assert_eq!(classify("PENDING"), JobState::Queued("PENDING".into()));
        assert_eq!(classify("RUNNING"), JobState::Running("RUNNING".into()));
        assert!(classify("COMPLETING").is_active());
        for s in [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
        ] {
            assert!(!classify(s).is_active(), "{s}");
        }
    }
}
