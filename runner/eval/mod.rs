//! Evaluation of steered generations (DESIGN.md §6): distribution distances with bootstrap CIs
//! (`stats`), model-independent DSP judges (`judges`), CLAP text alignment (`clap`), and the
//! `evaluation` node kind (`stage`).

pub mod clap;
pub mod judges;
pub mod stage;
pub mod stats;
