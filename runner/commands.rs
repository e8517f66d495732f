//! The CLI commands: load the spec, plan, print, execute. Exit codes: 0 ok, 1 some nodes failed,
//! 2 bad spec or usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{Cli, Command, ExecutorArg, NodeCommand, SpecArgs};
use crate::dag::status::{NodeStatus, statuses};
use crate::dag::store::{EntryState, FailureRecord, Index, Store};
use crate::dag::{Plan, PlannedNode, Registry, StoreResults, build_plan};
use crate::events::{Event, EventSink, JsonlSink, TerminalSink, spawn_consumers, timestamp};
use crate::registry::default_registry;
use crate::spec::{ExecutorKind, LoadedSpec, env_overrides};

const FAILED: u8 = 1;
const BAD_INPUT: u8 = 2;
/// Diagnostics are rendered at a fixed width so that they are stable in logs and snapshots.
pub const RENDER_WIDTH: usize = 100;

pub fn main(cli: Cli) -> ExitCode {
    let store = Store::from_env();
    let registry = default_registry();
    let code = match cli.command {
        Command::Run {
            spec,
            jobs,
            dry_run,
            executor,
            detach,
        } => run(&spec, jobs, dry_run, executor, detach, &store, &registry),
        Command::Cancel { spec } => cancel(&spec, &store, &registry),
        Command::Plan { spec, estimate } => plan_cmd(&spec, estimate, &store, &registry),
        Command::Explain { spec, node } => explain(&spec, &node, &store, &registry),
        Command::Check { specs, set } => check(&specs, &set, &registry),
        Command::Status { verify } => status(&store, verify),
        Command::Gc { dry_run } => gc(&store, dry_run),
        Command::Node {
            command: NodeCommand::Run { key },
        } => node_run(&key, &store, &registry),
        Command::Node {
            command: NodeCommand::RunArray { index },
        } => node_run_array(&index, &store, &registry),
        Command::Report { spec, png } => {
            report_command(&spec.spec, &spec.set, png, &store, &registry)
        }
        Command::Data(args) => tool_exit(crate::data::cli::run(args)),
        Command::Probe(args) => tool_exit(crate::probe::cli::run(&args)),
        Command::Stimuli(args) => tool_exit(crate::stimuli::cli::run(args)),
        Command::Generate(args) => crate::model::cli::exit(crate::model::cli::generate(&args)),
        Command::Encode(args) => crate::model::cli::exit(crate::model::cli::encode(&args)),
        Command::Decode(args) => crate::model::cli::exit(crate::model::cli::decode(&args)),
        Command::Clap(args) => crate::clap_model::cli::run(&args),
        Command::Calibrate(args) => match crate::estimate::cli::run(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("Error: {e}");
                crate::estimate::exit_code(&e)
            }
        },
    };
    ExitCode::from(code)
}

/// Exit code of a stand-alone tool command (probe, data, ...): its errors are bad input.
fn tool_exit(result: miette::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(report) => {
            eprintln!("{report:?}");
            BAD_INPUT
        }
    }
}

fn load(path: &Path, sets: &[String]) -> Result<LoadedSpec, u8> {
    crate::spec::load(path, sets, &env_overrides()).map_err(|e| {
        eprint!("{}", e.render(RENDER_WIDTH));
        BAD_INPUT
    })
}

fn load_and_plan(
    args: &SpecArgs,
    registry: &Registry,
    store: &Store,
) -> Result<(LoadedSpec, Plan), u8> {
    let spec = load(&args.spec, &args.set)?;
    let plan = build_plan(&spec, registry, &StoreResults(store)).map_err(|e| {
        eprintln!("Error: cannot plan {}: {e}", args.spec.display());
        BAD_INPUT
    })?;
    Ok((spec, plan))
}

/// `run` and `plan` refuse a spec whose sections no stage of this build consumes: it would otherwise
/// "succeed" doing nothing. (`check` still validates such specs.)
fn require_nodes(plan: &Plan, path: &Path) -> Result<(), u8> {
    if plan.nodes.is_empty() {
        eprintln!(
            "Error: {} plans no nodes: no stage in this build of rfmx consumes its sections.\n  \
             help: name the music sections ([model] [data] [extract] [probe] ...), as in \
             `specs/pooling_ablation.toml`, or [toy] as in `specs/toy.toml`",
            path.display()
        );
        return Err(BAD_INPUT);
    }
    Ok(())
}

fn print_plan(plan: &Plan, st: &[NodeStatus]) {
    let cached = st.iter().filter(|s| **s == NodeStatus::Cached).count();
    println!(
        "{} node(s): {cached} cached, {} to run",
        plan.nodes.len(),
        plan.nodes.len() - cached
    );
    for (n, s) in plan.nodes.iter().zip(st) {
        match s {
            NodeStatus::Cached => println!("  cached   {}  [{}]", n.id, &n.key[..12]),
            NodeStatus::ToRun(r) => println!("  to run   {}  [{}]  {r}", n.id, &n.key[..12]),
        }
    }
    if plan.round > 0 {
        println!("planned from finished results: {} round(s)", plan.round);
    }
    for w in &plan.waiting {
        println!("later: {w}");
    }
    if !plan.waiting.is_empty() && !plan.finalised {
        println!("later: the final nodes (report) are planned once nothing waits any more");
    }
}

fn plan_cmd(args: &SpecArgs, estimate: bool, store: &Store, registry: &Registry) -> u8 {
    match load_and_plan(args, registry, store) {
        Ok((spec, plan)) => {
            if let Err(code) = require_nodes(&plan, &args.spec) {
                return code;
            }
            let st = statuses(&plan, store, &store.index(spec.experiment()));
            print_plan(&plan, &st);
            if estimate {
                let to_run: Vec<bool> = st
                    .iter()
                    .map(|s| !matches!(s, NodeStatus::Cached))
                    .collect();
                match crate::estimate::estimate(&plan, &to_run, &store.root) {
                    Ok(mut e) => {
                        let (evals, gens) = crate::stages::search::unplanned_bound(&spec, &plan);
                        if evals > 0 {
                            let per_gen = e
                                .kinds
                                .iter()
                                .find(|k| k.kind == "generation" && k.count > 0)
                                .and_then(|k| k.seconds.map(|s| s / k.count as f64));
                            e.notes.push(format!(
                                "later search rounds are not in the table: at most {evals} more evaluation(s), {gens} generation(s){}",
                                per_gen.map_or(String::new(), |s| format!(
                                    " (about {:.0} s more at this table's time per generation)",
                                    s * gens as f64
                                ))
                            ));
                        }
                        print!("{}", e.render())
                    }
                    Err(e) => {
                        eprintln!("Error: {e}");
                        return crate::estimate::exit_code(&e);
                    }
                }
            }
            0
        }
        Err(code) => code,
    }
}

/// The live plan of a run: grows the plan from the store's results, and persists every planned
/// node (for `rfmx node run` on Slurm) and the experiment's index (for `plan`'s reasons) as it
/// grows, so that a killed run resumes with the same plan.
struct LiveGrowth<'a> {
    spec: &'a LoadedSpec,
    registry: &'a Registry,
    store: &'a Store,
    /// The index before this run (statuses diff against it) and the one being written.
    old_index: Index,
    index: Index,
    experiment: &'a str,
}

impl LiveGrowth<'_> {
    fn persist(&mut self, plan: &Plan, from: usize) -> Result<(), crate::dag::store::StoreError> {
        for n in &plan.nodes[from..] {
            self.store.write_json(&self.store.node_path(&n.key), n)?;
            self.index.nodes.insert(n.id.clone(), n.clone());
        }
        self.store
            .write_json(&self.store.index_path(self.experiment), &self.index)
    }
}

impl crate::exec::core::Growth for LiveGrowth<'_> {
    fn grow(&mut self, plan: &mut Plan) -> Result<Vec<usize>, String> {
        let results = StoreResults(self.store);
        let new = crate::dag::extend_plan(plan, self.spec, self.registry, &results)
            .map_err(|e| format!("cannot plan further: {e}"))?;
        if let Some(&first) = new.first() {
            self.persist(plan, first).map_err(|e| e.to_string())?;
        }
        Ok(new)
    }

    fn status(&self, plan: &Plan, node: usize) -> NodeStatus {
        crate::dag::status::node_status(&plan.nodes[node], self.store, &self.old_index)
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    args: &SpecArgs,
    jobs: Option<usize>,
    dry_run: bool,
    executor: Option<ExecutorArg>,
    detach: bool,
    store: &Store,
    registry: &Registry,
) -> u8 {
    let (spec, mut plan) = match load_and_plan(args, registry, store) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if let Err(code) = require_nodes(&plan, &args.spec) {
        return code;
    }
    let experiment = spec.experiment().to_string();
    let index = store.index(&experiment);
    let st = statuses(&plan, store, &index);
    if dry_run {
        print_plan(&plan, &st);
        return 0;
    }
    let slurm = match executor {
        Some(e) => e == ExecutorArg::Slurm,
        None => spec.base.executor.kind == ExecutorKind::Slurm,
    };
    if detach && !slurm {
        eprintln!("Error: --detach needs the Slurm executor (--executor slurm)");
        return BAD_INPUT;
    }
    // Slurm must answer before anything is written.
    if slurm && let Err(e) = crate::exec::slurm::job_states() {
        return slurm_error(e);
    }
    let jobs = jobs
        .or(spec.base.executor.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        eprintln!("Error: --jobs must be at least 1");
        return BAD_INPUT;
    }
    // Provenance and resumability are written before anything runs.
    let resolved = PathBuf::from("reports")
        .join(&experiment)
        .join("spec.resolved.toml");
    if let Err(e) = crate::fsx::write_atomic(&resolved, spec.resolved_toml().as_bytes()) {
        eprintln!("Error: cannot write {}: {e}", resolved.display());
        return FAILED;
    }
    let mut growth = LiveGrowth {
        spec: &spec,
        registry,
        store,
        old_index: index,
        index: Index::default(),
        experiment: &experiment,
    };
    if let Err(e) = growth.persist(&plan, 0) {
        eprintln!("Error: {e}");
        return FAILED;
    }

    let log_path = store.runs_dir().join(format!(
        "{}-{}-{experiment}.jsonl",
        timestamp(),
        std::process::id()
    ));
    let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(TerminalSink::new())];
    match JsonlSink::create(&log_path) {
        Ok(s) => sinks.push(Box::new(s)),
        Err(e) => eprintln!("warning: no run log ({}: {e})", log_path.display()),
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let consumer = spawn_consumers(rx, sinks);
    let to_run = st.iter().filter(|s| **s != NodeStatus::Cached).count();
    let _ = tx.send(Event::RunStarted {
        experiment: experiment.clone(),
        nodes: plan.nodes.len(),
        to_run,
        jobs,
    });
    let summary = if slurm {
        match crate::exec::slurm::run(
            &mut plan,
            st,
            store,
            &experiment,
            &spec.base.executor.slurm,
            detach,
            &tx,
            &mut growth,
        ) {
            Ok(s) => s,
            Err(e) => {
                drop(tx);
                let _ = consumer.join();
                return slurm_error(e);
            }
        }
    } else {
        crate::exec::local::run(&mut plan, st, store, registry, jobs, &tx, &mut growth)
    };
    drop(tx);
    let _ = consumer.join();
    if slurm && detach {
        let state = crate::exec::slurm::load_state(store, &experiment);
        println!(
            "submitted {} slurm job(s) (arrays count once); {} node job(s) recorded in {} (see `rfmx status`, `rfmx cancel`)",
            summary.slurm_jobs.unwrap_or(0),
            state.jobs.len(),
            crate::exec::slurm::state_path(store, &experiment).display()
        );
        println!("run log: {}", log_path.display());
        return 0;
    }

    println!(
        "summary for {experiment} ({} node(s), {jobs} job(s)):",
        plan.nodes.len()
    );
    println!("  {:<9}{:>6}", "computed", summary.computed);
    println!("  {:<9}{:>6}", "cached", summary.cached);
    println!("  {:<9}{:>6}", "failed", summary.failed);
    println!("  {:<9}{:>6}", "skipped", summary.skipped);
    println!("  {:<9}{:>6.3}s", "time", summary.seconds);
    if let Some(n) = summary.slurm_jobs {
        println!("  slurm jobs {n} (a job array counts once)");
    }
    for p in &summary.planning {
        println!("  note: {p}");
    }
    println!("run log: {}", log_path.display());
    println!("resolved spec: {}", resolved.display());
    for stage in registry.stages() {
        if let Some(table) = stage.summary(&plan, store) {
            println!("\n{table}");
        }
    }
    if summary.failed > 0 {
        println!(
            "failed: {} (see `rfmx status`)",
            summary.failed_ids.join(", ")
        );
        FAILED
    } else {
        0
    }
}

fn slurm_error(e: crate::exec::slurm::SlurmError) -> u8 {
    let code = match e {
        crate::exec::slurm::SlurmError::Missing(_) => BAD_INPUT,
        _ => FAILED,
    };
    eprintln!("{:?}", miette::Report::new(e));
    code
}

fn cancel(args: &SpecArgs, store: &Store, registry: &Registry) -> u8 {
    let (spec, _) = match load_and_plan(args, registry, store) {
        Ok(x) => x,
        Err(c) => return c,
    };
    match crate::exec::slurm::cancel(store, spec.experiment()) {
        Ok(jobs) => {
            // Array tasks are jobs of their own; the nodes of one packed task share it.
            let distinct: std::collections::BTreeSet<&str> =
                jobs.iter().map(|(_, j)| j.as_str()).collect();
            println!(
                "cancelled {} slurm job(s) ({} node(s)) of {}",
                distinct.len(),
                jobs.len(),
                spec.experiment()
            );
            for (id, job) in jobs {
                println!("  {job}  {id}");
            }
            0
        }
        Err(e) => slurm_error(e),
    }
}

fn explain(args: &SpecArgs, query: &str, store: &Store, registry: &Registry) -> u8 {
    let (spec, plan) = match load_and_plan(args, registry, store) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let Some(i) = plan.find(query) else {
        eprintln!(
            "Error: no node `{query}` in {} (ids or a unique key prefix of 4+ chars):",
            args.spec.display()
        );
        for n in &plan.nodes {
            eprintln!("  {}", n.id);
        }
        return BAD_INPUT;
    };
    let n = &plan.nodes[i];
    let st = statuses(&plan, store, &store.index(spec.experiment()));
    println!("node      {}", n.id);
    println!("kind      {} (version {})", n.kind, n.version);
    println!("key       {}", n.key);
    match &st[i] {
        NodeStatus::Cached => println!("status    cached"),
        NodeStatus::ToRun(r) => println!("status    to run: {r}"),
    }
    println!(
        "params    {}",
        serde_json::to_string_pretty(&n.params)
            .unwrap_or_default()
            .replace('\n', "\n          ")
    );
    if !n.hints.is_null() {
        println!("hints     {} (not part of the key)", n.hints);
    }
    if let Some(fp) = &n.fingerprint {
        println!("model     {fp}");
    }
    if n.inputs.is_empty() {
        println!("inputs    (none)");
    }
    for inp in &n.inputs {
        println!(
            "input     {} = {} [{}]",
            inp.name,
            inp.id,
            crate::dag::store::short_key(&inp.key)
        );
    }
    match store.verify(&n.key) {
        EntryState::Valid(m) => {
            println!(
                "outputs   {} ({:.3}s, rfmx {})",
                store.out_dir(&n.key).display(),
                m.seconds,
                m.rfmx_version
            );
            for (rel, f) in &m.outputs {
                println!(
                    "          {rel}  {} bytes  blake3 {}",
                    f.bytes,
                    &f.blake3[..16]
                );
            }
        }
        EntryState::Corrupt(why) => println!("outputs   corrupt: {why}"),
        EntryState::Missing => println!("outputs   (not computed)"),
    }
    if let Some(f) = store.failure(&n.key) {
        println!("failure   {}", f.error_chain.join(": "));
        println!("log       {}", f.log.display());
    }
    0
}

fn check(specs: &[PathBuf], sets: &[String], registry: &Registry) -> u8 {
    let mut code = 0;
    for path in specs {
        if let Some(c) = crate::stimuli::cli::check_listening_spec(path) {
            code = code.max(c);
            continue;
        }
        let args = SpecArgs {
            spec: path.clone(),
            set: sets.to_vec(),
        };
        match load_and_plan(&args, registry, &Store::from_env()) {
            Ok((spec, plan)) => println!(
                "ok   {}: experiment `{}`, {} sweep point(s), {} node(s)",
                path.display(),
                spec.experiment(),
                spec.points.len(),
                plan.nodes.len()
            ),
            Err(c) => code = c,
        }
    }
    code
}

fn list_json(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "lock"))
        .collect();
    v.sort();
    v
}

fn key_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn node_id(store: &Store, key: &str) -> String {
    store
        .read_json::<PlannedNode>(&store.node_path(key))
        .ok()
        .flatten()
        .map_or_else(
            || format!("[{}]", crate::dag::store::short_key(key)),
            |n| n.id,
        )
}

fn status(store: &Store, verify: bool) -> u8 {
    println!("store: {}", store.root.display());
    let failures = list_json(&store.root.join("failures"));
    println!("failed nodes: {}", failures.len());
    for f in &failures {
        if let Ok(Some(rec)) = store.read_json::<FailureRecord>(f) {
            println!(
                "  {}  [{}]  {}",
                rec.id,
                crate::dag::store::short_key(&rec.key),
                rec.kind
            );
            println!("    error:  {}", rec.error_chain.join(": "));
            println!("    params: {}", rec.params);
            println!("    log:    {}", rec.log.display());
            println!("    record: {}", f.display());
        }
    }
    let running: Vec<String> = list_json(&store.root.join("locks"))
        .iter()
        .map(|p| key_of(p))
        .filter(|k| store.is_locked(k))
        .collect();
    println!("running nodes (locks held): {}", running.len());
    for k in &running {
        println!(
            "  {}  [{}]",
            node_id(store, k),
            crate::dag::store::short_key(k)
        );
    }
    let entries = std::fs::read_dir(store.store_dir())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    slurm_status(store);
    println!("store size: {} entries, {} bytes", entries, store.size());
    if verify {
        let corrupt = corrupt_entries(store);
        println!(
            "verified every entry's outputs (blake3): {} corrupt",
            corrupt.len()
        );
        for (key, why) in &corrupt {
            println!(
                "  {}  [{}]  {why}",
                node_id(store, key),
                crate::dag::store::short_key(key)
            );
        }
        if !corrupt.is_empty() {
            println!("  (`rfmx gc` removes them; `rfmx run` recomputes what a spec needs)");
            return FAILED;
        }
    }
    0
}

/// Every committed entry whose outputs no longer match their manifest (re-hashed), with the reason.
fn corrupt_entries(store: &Store) -> Vec<(String, String)> {
    use rayon::prelude::*;
    let keys: Vec<String> = std::fs::read_dir(store.store_dir())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let mut v: Vec<(String, String)> = keys
        .into_par_iter()
        .filter(|k| !store.is_locked(k))
        .filter_map(|k| match store.verify(&k) {
            EntryState::Corrupt(why) => Some((k, why)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The recorded Slurm jobs of every experiment with their current state (nothing when none).
fn slurm_status(store: &Store) {
    let experiments = crate::exec::slurm::experiments(store);
    if experiments.is_empty() {
        return;
    }
    let states = match crate::exec::slurm::job_states() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("slurm jobs: cannot query slurm ({e})");
            None
        }
    };
    for exp in experiments {
        let (state, problems) = crate::exec::slurm::read_state(store, &exp);
        for p in problems {
            println!("slurm jobs of {exp}: {p}");
        }
        let done = state
            .jobs
            .keys()
            .filter(|k| matches!(store.check(k), EntryState::Valid(_)))
            .count();
        println!(
            "slurm jobs of {exp}: {} recorded, {done} done; the others:",
            state.jobs.len()
        );
        for (key, r) in &state.jobs {
            if matches!(store.check(key), EntryState::Valid(_)) {
                continue;
            }
            let label = match &states {
                Some(s) => s
                    .get(&r.job_id)
                    .map_or("ENDED (no longer in squeue)".into(), |j| {
                        // "failed" only with a failure record, as `failed nodes:` counts them; a
                        // job that ended without a result (cancelled) is resubmitted by a re-run.
                        let why = if j.is_active() {
                            ""
                        } else if store.failure(key).is_some() {
                            ", node failed"
                        } else {
                            ", no result"
                        };
                        format!("{}{why}", j.label())
                    }),
                None => "?".into(),
            };
            println!("  {:<8} {:<28} {}", r.job_id, label, r.id);
            println!("    log: {}", r.log.display());
        }
    }
}

fn remove(path: &Path, dry_run: bool, what: &str) {
    if dry_run {
        println!("would remove {what}: {}", path.display());
        return;
    }
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Ok(()) => println!("removed {what}: {}", path.display()),
        Err(e) => eprintln!("warning: cannot remove {}: {e}", path.display()),
    }
}

/// Housekeeping. Stale lock files are only those no process holds; run it while no `rfmx run` is
/// starting, since a lock file removed between another process's open and lock would be unsafe.
fn gc(store: &Store, dry_run: bool) -> u8 {
    let mut referenced = std::collections::HashSet::new();
    for idx in list_json(&store.root.join("index")) {
        if let Ok(Some(index)) = store.read_json::<Index>(&idx) {
            referenced.extend(index.nodes.into_values().map(|n| n.key));
        }
    }
    for e in std::fs::read_dir(store.store_dir())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name
            .strip_prefix(".tmp-")
            .or_else(|| name.strip_prefix(".trash-"))
            .or_else(|| name.strip_prefix(".corrupt-"))
        {
            let key = rest.split('-').next().unwrap_or_default();
            let what = if name.starts_with(".corrupt-") {
                "corrupt entry moved aside by a run"
            } else {
                "temp dir of a killed run"
            };
            if !store.is_locked(key) {
                remove(&e.path(), dry_run, what);
            }
        } else if !referenced.contains(&name) && !store.is_locked(&name) {
            remove(&e.path(), dry_run, "unreferenced store entry");
        }
    }
    // Records of keys no index references any more (failures of since-changed nodes, logs).
    for (dir, what) in [
        ("failures", "old failure record"),
        ("nodes", "old node description"),
        ("logs", "old log"),
    ] {
        for e in std::fs::read_dir(store.root.join(dir))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let key = key_of(&e.path());
            if !referenced.contains(&key) && !store.is_locked(&key) && e.path().exists() {
                remove(&e.path(), dry_run, what);
            }
        }
    }
    // Entries whose bytes no longer match their manifest are never trusted again.
    for (key, why) in corrupt_entries(store) {
        if referenced.contains(&key) {
            remove(
                &store.entry_dir(&key),
                dry_run,
                &format!("corrupt store entry ({why})"),
            );
        }
    }
    for lock in list_json(&store.root.join("locks")) {
        if !store.is_locked(&key_of(&lock)) {
            remove(&lock, dry_run, "stale lock file");
        }
    }
    0
}

fn node_run(key: &str, store: &Store, registry: &Registry) -> u8 {
    let node: PlannedNode = match store.read_json(&store.node_path(key)) {
        Ok(Some(n)) => n,
        Ok(None) => {
            eprintln!("Error: no planned node {key} in {}", store.root.display());
            return BAD_INPUT;
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return BAD_INPUT;
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let consumer = spawn_consumers(rx, vec![Box::new(TerminalSink::new())]);
    let outcome = crate::exec::execute_node(&node, store, registry, &tx);
    drop(tx);
    let _ = consumer.join();
    match outcome {
        crate::exec::Outcome::Computed { seconds } => {
            println!("computed {} in {seconds:.3}s", node.id);
            0
        }
        crate::exec::Outcome::CachedByOther => {
            println!("cached {}", node.id);
            0
        }
        crate::exec::Outcome::Failed { error, record } => {
            eprintln!("FAILED {}: {error} (record {})", node.id, record.display());
            FAILED
        }
    }
}

/// One Slurm array task: its nodes one after another (docs/design.md §2, Slurm). Exits non-zero
/// when any of them failed, so that no `afterok` on the task holds; the others still run.
fn node_run_array(index: &Path, store: &Store, registry: &Registry) -> u8 {
    let tasks: Vec<Vec<String>> = match store.read_json(index) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!("Error: no array index {}", index.display());
            return BAD_INPUT;
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return BAD_INPUT;
        }
    };
    let task = std::env::var("SLURM_ARRAY_TASK_ID").ok();
    let keys = match crate::exec::slurm::task_keys(&tasks, task.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("Error: {}: {e}", index.display());
            return BAD_INPUT;
        }
    };
    keys.iter()
        .map(|k| node_run(k, store, registry))
        .fold(0, |worst, code| worst.max(code))
}

/// `rfmx report SPEC`: renders from whatever results exist (missing ones marked) into
/// `reports/<experiment>/`.
fn report_command(
    spec_path: &Path,
    sets: &[String],
    png: bool,
    store: &Store,
    registry: &Registry,
) -> u8 {
    let spec = match crate::spec::load(spec_path, sets, &crate::spec::env_overrides()) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{}", e.render(RENDER_WIDTH));
            return 2;
        }
    };
    let plan = match build_plan(&spec, registry, &StoreResults(store)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: cannot plan {}: {e}", spec_path.display());
            return 2;
        }
    };
    // The report node's inputs, or (toy plans) every result node of the plan.
    let inputs = match plan.nodes.iter().find(|n| n.kind == "report") {
        Some(node) => node.inputs.clone(),
        None => crate::report::report_inputs(&plan),
    };
    if inputs.is_empty() {
        eprintln!(
            "Error: {}",
            crate::report::ReportError::NoReport(spec_path.display().to_string())
        );
        return 2;
    }
    let mut params = crate::report::report_params(&spec);
    params.png = png;
    let dest = PathBuf::from("reports").join(spec.experiment());
    // Outputs name the spec's own concepts (docs/design.md §5): in scope while they are read.
    let users = spec.user_concepts();
    let rendered = crate::data::concepts::with_scope(&users, || {
        crate::report::render_from_store(&plan, &params, &inputs, store, &dest)
    });
    match rendered {
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
