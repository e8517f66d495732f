//! Steering: layer cropping, schedules, gates, multi-direction composition, the generation loop
//! (DESIGN.md §3). `layers` is shared with the probe stage's layer-selection summary.

pub mod gate;
pub mod inject;
pub mod layers;
pub mod schedule;
pub mod stage;
