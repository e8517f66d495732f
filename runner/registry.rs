//! The one list of stages and node kinds. A stage adds its lines here and nothing else in the
//! engine changes (see `crate::dag` for the traits).

use crate::dag::Registry;

pub fn default_registry() -> Registry {
    Registry::default()
        // toy: the runner's own test kinds
        .stage(crate::toy::ToyStage)
        .kind(crate::toy::ToySquare)
        .kind(crate::toy::ToySum)
        // steering + evaluation (after the stages that plan the directions/probe nodes)
        .stage(crate::steer::stage::SteerStage)
        .kind(crate::steer::stage::GenerationKind)
        .kind(crate::eval::stage::EvaluationKind)
}
