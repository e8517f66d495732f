//! The one list of stages and node kinds. A stage adds its lines here and nothing else in the
//! engine changes (see `crate::dag` for the traits).

use crate::dag::Registry;

pub fn default_registry() -> Registry {
    Registry::default()
        // toy: the runner's own test kinds
        .stage(crate::stages::toy::ToyStage)
        .kind(crate::stages::toy::ToySquare)
        .kind(crate::stages::toy::ToySum)
        // probe pipeline: dataset -> activations -> probe (per layer) -> directions (per class)
        .stage(crate::stages::ProbeStage)
        .kind(crate::stages::DatasetNode)
        .kind(crate::stages::ActivationsNode)
        .kind(crate::stages::ProbeNode)
        .kind(crate::stages::DirectionsNode)
        .kind(crate::stages::transfer::TransferNode)
        // steering + evaluation (after the stages that plan the directions/probe nodes)
        .stage(crate::stages::steer::SteerStage)
        .kind(crate::stages::generation::GenerationKind)
        .kind(crate::stages::evaluation::EvaluationKind)
        // closed-loop search: rounds of steering points planned from finished evaluations
        .stage(crate::stages::search::SearchStage)
        .kind(crate::stages::search::SearchNode)
        // report: planned last (plan_final), after every result node
        .stage(crate::report::ReportStage::default())
        .kind(crate::report::ReportNode)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_spec_knows_every_registered_node_kind() {
        let mut registered = super::default_registry().kind_names();
        registered.sort_unstable();
        let mut listed = crate::spec::schema::NODE_KINDS.to_vec();
        listed.sort_unstable();
        assert_eq!(registered, listed);
    }
}
