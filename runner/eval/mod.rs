//! Evaluation of steered generations (DESIGN.md §6): distribution distances with bootstrap CIs
//! (`stats`), model-independent DSP judges (`judges`), and the `evaluation` node kind (`stage`).

pub mod judges;
pub mod stage;
pub mod stats;
