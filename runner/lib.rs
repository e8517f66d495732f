//! rfmx: one TOML spec in, a reproducible MusicRFM experiment out.
//!
//! Data flows one way: spec -> plan (DAG) -> executor -> node functions -> store -> report.

pub mod audio;
pub mod cli;
pub mod data;
pub mod fsx;
