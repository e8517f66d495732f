//! rfmx: one TOML spec in, a reproducible MusicRFM experiment out.
//!
//! Data flows one way: spec -> plan (DAG) -> executor -> node functions -> store -> report.

pub mod audio;
pub mod clap_model;
pub mod cli;
pub mod commands;
pub mod dag;
pub mod data;
pub mod eval;
pub mod events;
pub mod exec;
pub mod fsx;
pub mod model;
pub mod probe;
pub mod registry;
pub mod report;
pub mod spec;
pub mod stages;
pub mod steer;
pub mod stimuli;
