//! rfmx: one TOML spec in, a reproducible MusicRFM experiment out.
//!
//! Data flows one way: spec -> plan (DAG) -> executor -> node functions -> store -> report.

pub mod alloc;
pub mod audio;
pub mod clap_model;
pub mod cli;
pub mod commands;
pub mod dag;
pub mod data;
pub mod estimate;
pub mod eval;
pub mod events;
pub mod exec;
pub mod external;
pub mod fsx;
pub mod model;
pub mod npy;
pub mod probe;
pub mod registry;
pub mod report;
pub mod search;
pub mod spec;
pub mod stages;
pub mod steer;
pub mod stimuli;
pub mod sysmem;

/// The git commit this binary was built from (`<12 hex>[-dirty]`, or "unknown" outside a git
/// checkout), recorded by build.rs.
pub const GIT_COMMIT: &str = env!("RFMX_GIT_COMMIT");
/// `rfmx --version`: the crate version and the commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RFMX_GIT_COMMIT"),
    ")"
);
