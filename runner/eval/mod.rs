//! Evaluation of steered generations (docs/design.md §6): distribution distances with bootstrap CIs
//! (`stats`), model-independent DSP judges (`judges`) and CLAP text alignment (`clap`); the
//! `evaluation` node kind that uses them is `crate::stages::evaluation`.

pub mod clap;
pub mod judges;
pub mod stats;
