//! rfmx: one TOML spec in, a reproducible MusicRFM experiment out.
//!
//! Data flows one way: spec -> plan (DAG) -> executor -> node functions -> store -> report.

pub mod fsx;
pub mod model;
