//! The steering stage: plans, per sweep point, the baselines and steered `generation` nodes and
//! the `evaluation` node that compares them (docs/design.md §4–§5). The node kinds themselves live
//! in `generation` and `evaluation`; this module is the only one that knows both.

use std::path::Path;

use serde_json::json;

use crate::dag::store::Store;
use crate::dag::{Label, NodeRef, NodeSpec, Plan, PlanBuilder, PlanError, Stage};
use crate::model::{ModelSource, Pipeline};
use crate::spec::ResolvedSpec;
use crate::spec::schema::{EtaMode, GateMode, Metric, Pooling, Schedule, Spec, Target};
use crate::stages::evaluation::{
    BASE_ROLE, EvalParams, GEN_ROLE, KIND as EVAL_KIND, PROBE_ROLE, evaluation_id,
};
use crate::stages::generation::{
    DIR_ROLE, GenParams, KIND, ModelHint, STAGE, dir_index, generation_id, schedule_label,
};
use crate::stages::{DirectionsOf, ProbeOf};

use crate::steer::schedule::ScheduleConstants;

/// The sample seeds of a spec: experiment seed + 0..samples.
pub fn sample_seeds(spec: &Spec, samples: u32) -> Vec<u64> {
    (0..samples as u64)
        .map(|s| spec.experiment.seed.wrapping_add(s))
        .collect()
}

fn stage_err(message: impl Into<String>) -> PlanError {
    PlanError::Stage {
        stage: STAGE.into(),
        message: message.into(),
    }
}

/// Model fingerprint, hint and external input for a spec's `[model]`.
pub fn model_of(
    spec: &Spec,
) -> Result<(String, ModelHint, Option<crate::external::External>), PlanError> {
    let m = spec
        .model
        .as_ref()
        .ok_or_else(|| stage_err("[steer] needs a [model] section"))?;
    let source = ModelSource::from_spec(&m.name, m.path.as_deref().map(Path::new));
    let (fp, external) = Pipeline::identity_of(&source).map_err(|e| stage_err(e.to_string()))?;
    Ok((
        fp,
        ModelHint {
            name: m.name.clone(),
            path: m.path.clone(),
            device: Some(m.device.clone()),
        },
        external,
    ))
}

fn pooling_of(spec: &Spec) -> Pooling {
    spec.extract
        .as_ref()
        .map(|e| e.pooling)
        .unwrap_or(Pooling::Mean)
}

/// Plans the baselines and steered generations of one sweep point.
pub struct SteerStage;

impl Stage for SteerStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn plan(&self, spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        let s = &spec.spec;
        let Some(steer) = s.steer.as_ref().filter(|st| st.enabled) else {
            return Ok(());
        };
        let (fp, hint, model_ext) = model_of(s)?;
        let dtype = s.model.as_ref().map(|m| m.precision()).unwrap_or_default();
        // The batch bound is an executor setting: a hint, never a param (docs/design.md).
        let hints = json!({ "model": hint, "batch": steer.batch });
        let pooling = pooling_of(s);
        let seeds = sample_seeds(s, steer.samples);
        let base = |prompt: &str, seed: u64| GenParams {
            dtype,
            ..GenParams::baseline(prompt, seed, steer.seconds, steer.cfg, pooling)
        };
        let mut baselines = Vec::new();
        for (p, prompt) in steer.prompts.iter().enumerate() {
            for &seed in &seeds {
                let params = serde_json::to_value(base(prompt, seed))
                    .map_err(|e| stage_err(e.to_string()))?;
                let r = plan.add(
                    NodeSpec::new(generation_id(None, p, seed), KIND, params)
                        .label(Label {
                            eta: Some(0.0),
                            prompt: Some(p),
                            seed: Some(seed),
                            ..Label::default()
                        })
                        .hints(hints.clone())
                        .fingerprint(fp.clone())
                        .external(model_ext.clone()),
                )?;
                baselines.push((p, seed, r));
            }
        }
        let probe_kind = s.probe.as_ref().and_then(|p| {
            serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        });
        // The CLAP snapshot enters evaluation keys by content (or by the reason it is missing), so a
        // snapshot that appears or changes re-scores; its path is only a hint.
        let (clap_param, clap_hints, clap_ext) = match &s.evaluate {
            Some(ev) if ev.metrics.contains(&Metric::Clap) => {
                crate::eval::clap::plan_param(&ev.clap_model)
            }
            _ => (None, serde_json::Value::Null, None),
        };
        let evaluate = |plan: &mut PlanBuilder<'_>,
                        target: &Target,
                        schedule: Option<(&Schedule, &str)>,
                        eta: f64,
                        gens: &[(usize, u64, NodeRef)],
                        dirs: &[(String, NodeRef)]|
         -> Result<(), PlanError> {
            let Some(ev) = &s.evaluate else {
                return Ok(());
            };
            let steered = eta != 0.0;
            let params = EvalParams {
                target: target.to_string(),
                schedule: schedule.filter(|_| steered).map(|(s, _)| s.clone()),
                layers: steered.then(|| steer.layers.clone()),
                gate: if steered { steer.gate } else { 1.0 },
                gate_mode: if steered {
                    steer.gate_mode
                } else {
                    GateMode::PerStep
                },
                eta,
                eta_mode: if steered {
                    steer.eta_mode
                } else {
                    EtaMode::Absolute
                },
                metrics: ev.metrics.clone(),
                probe_kind: probe_kind.clone(),
                seed: s.experiment.seed,
                clap: clap_param.clone(),
            };
            let label = match schedule {
                Some((_, l)) if steered => l.to_string(),
                _ => "none".to_string(),
            };
            let id = evaluation_id(target, &label, params.gate, eta);
            let node_label = Label {
                target: Some(target.to_string()),
                schedule: Some(label),
                gate: Some(params.gate),
                eta: Some(eta),
                ..Label::default()
            };
            let params = serde_json::to_value(params).map_err(|e| stage_err(e.to_string()))?;
            let mut node = NodeSpec::new(id, EVAL_KIND, params)
                .label(node_label)
                .hints(clap_hints.clone())
                .external(clap_ext.clone());
            for (p, seed, r) in gens {
                node = node.input_in(GEN_ROLE, format!("{p}:{seed}"), *r);
            }
            for (p, seed, r) in &baselines {
                node = node.input_in(BASE_ROLE, format!("{p}:{seed}"), *r);
            }
            for (index, r) in dirs {
                node = node.input_in(DIR_ROLE, index, *r);
            }
            if probe_kind.is_some() {
                for term in &target.terms {
                    // In the order of the input names (`<concept>:L<layer>`), as keys hash them.
                    let mut probes: Vec<(String, NodeRef)> = plan
                        .imports::<ProbeOf>()
                        .into_iter()
                        .filter(|((c, _), _)| *c == term.concept.name())
                        .map(|((c, l), r)| (format!("{c}:L{l}"), r))
                        .collect();
                    probes.sort_by(|a, b| a.0.cmp(&b.0));
                    for (index, r) in probes {
                        node = node.input_in(PROBE_ROLE, index, r);
                    }
                }
            }
            plan.add(node)?;
            Ok(())
        };
        for target in &steer.targets {
            let mut dirs = Vec::new();
            for term in &target.terms {
                let r = plan
                    .import::<DirectionsOf>(&(term.concept.name().to_string(), term.class.clone()))
                    .ok_or_else(|| {
                        stage_err(format!(
                            "target `{target}` needs the directions node `directions[{}:{}]`, which \
                             no stage planned (is `{}` in data.concepts and a [probe] section present?)",
                            term.concept, term.class, term.concept
                        ))
                    })?;
                dirs.push((dir_index(term), r));
            }
            evaluate(plan, target, None, 0.0, &baselines, &dirs)?;
            for (si, schedule) in steer.schedule.iter().enumerate() {
                let label = schedule_label(schedule, si);
                for &eta in steer.eta.iter().filter(|&&e| e != 0.0) {
                    let mut gens = Vec::new();
                    for (p, prompt) in steer.prompts.iter().enumerate() {
                        for &seed in &seeds {
                            let params = GenParams {
                                target: Some(target.to_string()),
                                schedule: Some(schedule.clone()),
                                layers: Some(steer.layers.clone()),
                                gate: steer.gate,
                                gate_mode: steer.gate_mode,
                                eta,
                                eta_mode: steer.eta_mode,
                                constants: Some(ScheduleConstants::from_spec(steer)),
                                ..base(prompt, seed)
                            };
                            let params = serde_json::to_value(params)
                                .map_err(|e| stage_err(e.to_string()))?;
                            let id =
                                generation_id(Some((target, &label, steer.gate, eta)), p, seed);
                            let mut node = NodeSpec::new(id, KIND, params)
                                .label(Label {
                                    target: Some(target.to_string()),
                                    schedule: Some(label.clone()),
                                    gate: Some(steer.gate),
                                    eta: Some(eta),
                                    prompt: Some(p),
                                    seed: Some(seed),
                                    ..Label::default()
                                })
                                .hints(hints.clone())
                                .fingerprint(fp.clone())
                                .external(model_ext.clone());
                            for (index, r) in &dirs {
                                node = node.input_in(DIR_ROLE, index, *r);
                            }
                            gens.push((p, seed, plan.add(node)?));
                        }
                    }
                    evaluate(plan, target, Some((schedule, &label)), eta, &gens, &dirs)?;
                }
            }
        }
        Ok(())
    }

    fn summary(&self, plan: &Plan, store: &Store) -> Option<String> {
        crate::stages::evaluation::summary(plan, store)
    }
}
