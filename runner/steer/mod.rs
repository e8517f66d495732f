//! Steering: layer cropping, schedules, gates, multi-direction composition and the injection hook;
//! the `generation` node kind and the steering stage that use them are `crate::stages::generation`
//! (docs/design.md §3). `layers` is shared with the probe stage's layer-selection summary.

pub mod feedback;
pub mod gate;
pub mod inject;
pub mod layers;
pub mod schedule;
