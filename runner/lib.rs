//! rfmx: one TOML spec in, a reproducible MusicRFM experiment out.
//!
//! Data flows one way: spec -> plan (DAG) -> executor -> node functions -> store -> report.

pub mod fsx;
pub mod spec;
pub mod commands;
pub mod dag;
pub mod events;
pub mod exec;
pub mod registry;
pub mod toy;
pub mod cli;
