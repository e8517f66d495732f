//! Executors. One scheduler core ([`core::drive`]: readiness, batching of ready siblings,
//! failure/skip propagation, the live plan's growth, events, counts) drives two backends: threads
//! in this process ([`local`]) and Slurm jobs ([`slurm`]). Every node is computed by
//! [`node::execute_group`] under its lock file, with the store re-checked after the lock is taken,
//! so two concurrent runs never compute the same node twice.

pub mod core;
pub mod local;
pub mod node;
pub mod slurm;

pub use local::run_plan;
pub use node::{Outcome, execute_group, execute_node};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub computed: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub failed_ids: Vec<String>,
    /// What stopped planning or dispatching early (a stage still waiting, a planning error).
    pub planning: Vec<String>,
    /// Slurm: the `sbatch` calls (jobs and job arrays) of this run.
    pub slurm_jobs: Option<usize>,
}
