//! The steering stage: plans, per sweep point, the baselines and steered `generation` nodes and
//! the `evaluation` node that compares them (docs/design.md §4–§5). The node kinds themselves live
//! in `generation` and `evaluation`; this module is the only one that knows both.

use std::path::Path;

use serde_json::json;

use crate::dag::store::Store;
use crate::dag::{Label, NodeRef, NodeSpec, Plan, PlanBuilder, PlanError, Stage};
use crate::model::{ModelSource, Pipeline};
use crate::spec::ResolvedSpec;
use crate::spec::schema::{
    EtaMode, GateMode, LayerStrategy, Metric, Pooling, Schedule, Spec, SteerSpec, Target,
};
use crate::stages::evaluation::{
    BASE_ROLE, EvalParams, GEN_ROLE, KIND as EVAL_KIND, PROBE_ROLE, evaluation_id,
};
use crate::stages::generation::{
    DIR_ROLE, GenParams, KIND, ModelHint, STAGE, dir_index, generation_id, schedule_label,
};
use crate::stages::{DirectionsOf, JudgeProbeOf, ProbeOf};

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

/// One steered setting of a target: what a grid point or a search trial plans.
#[derive(Debug, Clone)]
pub struct PointSettings {
    pub schedule: Schedule,
    /// The schedule's label in ids and the report (`constant`, `piecewise#1`).
    pub label: String,
    pub layers: LayerStrategy,
    pub gate: f64,
    pub eta: f64,
    /// The first `samples` sample seeds (fewer than `[steer] samples` for a screening rung).
    pub samples: u32,
    /// Set for nodes a search plans first: names the search (`<target>|<schedule>`).
    pub search: Option<String>,
}

/// Plans steering nodes for one sweep point: the unsteered baselines, and per target and setting
/// the steered generations and their `evaluation` node. Equal settings give equal keys, so the
/// grid sweep and a search share every node they have in common.
pub struct Steering<'s> {
    spec: &'s Spec,
    pub steer: &'s SteerSpec,
    fp: String,
    model_ext: Option<crate::external::External>,
    dtype: crate::model::Precision,
    hints: serde_json::Value,
    pooling: Pooling,
    seeds: Vec<u64>,
    probe_kind: Option<String>,
    clap_param: Option<serde_json::Value>,
    clap_hints: serde_json::Value,
    clap_ext: Option<crate::external::External>,
    baselines: Vec<(usize, u64, NodeRef)>,
}

impl<'s> Steering<'s> {
    /// None when `[steer]` is absent or disabled. Plans the baselines (shared when present).
    pub fn new(spec: &'s Spec, plan: &mut PlanBuilder<'_>) -> Result<Option<Self>, PlanError> {
        let Some(steer) = spec.steer.as_ref().filter(|st| st.enabled) else {
            return Ok(None);
        };
        let (fp, hint, model_ext) = model_of(spec)?;
        let probe_kind = spec.probe.as_ref().and_then(|p| {
            serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        });
        // The CLAP snapshot enters evaluation keys by content (or by the reason it is missing), so a
        // snapshot that appears or changes re-scores; its path is only a hint.
        let (clap_param, clap_hints, clap_ext) = match &spec.evaluate {
            Some(ev) if ev.metrics.contains(&Metric::Clap) => {
                crate::eval::clap::plan_param(&ev.clap_model)
            }
            _ => (None, serde_json::Value::Null, None),
        };
        let mut me = Steering {
            spec,
            steer,
            fp,
            model_ext,
            dtype: spec
                .model
                .as_ref()
                .map(|m| m.precision())
                .unwrap_or_default(),
            // The batch bound is an executor setting: a hint, never a param (docs/design.md).
            hints: json!({ "model": hint, "batch": steer.batch }),
            pooling: pooling_of(spec),
            seeds: sample_seeds(spec, steer.samples),
            probe_kind,
            clap_param,
            clap_hints,
            clap_ext,
            baselines: Vec::new(),
        };
        for (p, prompt) in steer.prompts.iter().enumerate() {
            for &seed in &me.seeds {
                let params = serde_json::to_value(me.base(prompt, seed))
                    .map_err(|e| stage_err(e.to_string()))?;
                let r = plan.add(
                    NodeSpec::new(generation_id(None, p, seed), KIND, params)
                        .label(Label {
                            eta: Some(0.0),
                            prompt: Some(p),
                            seed: Some(seed),
                            ..Label::default()
                        })
                        .hints(me.hints.clone())
                        .fingerprint(me.fp.clone())
                        .external(me.model_ext.clone()),
                )?;
                me.baselines.push((p, seed, r));
            }
        }
        Ok(Some(me))
    }

    fn base(&self, prompt: &str, seed: u64) -> GenParams {
        let s = self.steer;
        GenParams {
            dtype: self.dtype,
            ..GenParams::baseline(prompt, seed, s.seconds, s.cfg, self.pooling)
        }
    }

    /// A target's directions nodes, one per term (planned by the probe stage).
    pub fn directions(
        &self,
        plan: &PlanBuilder<'_>,
        target: &Target,
    ) -> Result<Vec<(String, NodeRef)>, PlanError> {
        target
            .terms
            .iter()
            .map(|term| {
                plan.import::<DirectionsOf>(&(term.concept.name().to_string(), term.class.clone()))
                    .map(|r| (dir_index(term), r))
                    .ok_or_else(|| {
                        stage_err(format!(
                            "target `{target}` needs the directions node `directions[{}:{}]`, which \
                             no stage planned (is `{}` in data.concepts and a [probe] section present?)",
                            term.concept, term.class, term.concept
                        ))
                    })
            })
            .collect()
    }

    /// The unsteered point's evaluation of a target (None without `[evaluate]`).
    pub fn baseline_evaluation(
        &self,
        plan: &mut PlanBuilder<'_>,
        target: &Target,
        dirs: &[(String, NodeRef)],
    ) -> Result<Option<NodeRef>, PlanError> {
        self.evaluation(plan, target, None, &self.baselines, dirs)
    }

    /// The steered generations of one setting and their evaluation (None without `[evaluate]`).
    pub fn point(
        &self,
        plan: &mut PlanBuilder<'_>,
        target: &Target,
        at: &PointSettings,
        dirs: &[(String, NodeRef)],
    ) -> Result<Option<NodeRef>, PlanError> {
        let s = self.steer;
        let mut gens = Vec::new();
        for (p, prompt) in s.prompts.iter().enumerate() {
            for &seed in self.seeds.iter().take(at.samples as usize) {
                let params = GenParams {
                    target: Some(target.to_string()),
                    schedule: Some(at.schedule.clone()),
                    layers: Some(at.layers.clone()),
                    gate: at.gate,
                    gate_mode: s.gate_mode,
                    eta: at.eta,
                    eta_mode: s.eta_mode,
                    constants: Some(ScheduleConstants::from_spec(s)),
                    ..self.base(prompt, seed)
                };
                let params = serde_json::to_value(params).map_err(|e| stage_err(e.to_string()))?;
                let params = super::with_concept_defs(params, target.concepts());
                let id = generation_id(Some((target, &at.label, at.gate, at.eta)), p, seed);
                let mut node = NodeSpec::new(id, KIND, params)
                    .label(Label {
                        target: Some(target.to_string()),
                        schedule: Some(at.label.clone()),
                        gate: Some(at.gate),
                        eta: Some(at.eta),
                        prompt: Some(p),
                        seed: Some(seed),
                        search: at.search.clone(),
                        ..Label::default()
                    })
                    .hints(self.hints.clone())
                    .fingerprint(self.fp.clone())
                    .external(self.model_ext.clone());
                for (index, r) in dirs {
                    node = node.input_in(DIR_ROLE, index, *r);
                }
                if matches!(at.schedule, Schedule::Feedback(_)) {
                    // The controller reads the judge during generation (docs/design.md §3).
                    node = with_probes(node, plan, target, false);
                }
                gens.push((p, seed, plan.add(node)?));
            }
        }
        self.evaluation(plan, target, Some(at), &gens, dirs)
    }

    fn evaluation(
        &self,
        plan: &mut PlanBuilder<'_>,
        target: &Target,
        at: Option<&PointSettings>,
        gens: &[(usize, u64, NodeRef)],
        dirs: &[(String, NodeRef)],
    ) -> Result<Option<NodeRef>, PlanError> {
        let Some(ev) = &self.spec.evaluate else {
            return Ok(None);
        };
        let s = self.steer;
        let at = at.filter(|a| a.eta != 0.0);
        let eta = at.map_or(0.0, |a| a.eta);
        let params = EvalParams {
            target: target.to_string(),
            schedule: at.map(|a| a.schedule.clone()),
            layers: at.map(|a| a.layers.clone()),
            gate: at.map_or(1.0, |a| a.gate),
            gate_mode: if at.is_some() {
                s.gate_mode
            } else {
                GateMode::PerStep
            },
            eta,
            eta_mode: if at.is_some() {
                s.eta_mode
            } else {
                EtaMode::Absolute
            },
            metrics: ev.metrics.clone(),
            probe_kind: self.probe_kind.clone(),
            seed: self.spec.experiment.seed,
            clap: self.clap_param.clone(),
        };
        let label = at.map_or_else(|| "none".to_string(), |a| a.label.clone());
        let mut id = evaluation_id(target, &label, params.gate, eta);
        if let Some(a) = at.filter(|a| a.samples < s.samples) {
            // A screening rung on fewer samples is another node than the full point.
            id.insert_str(id.len() - 1, &format!("|n{}", a.samples));
        }
        let node_label = Label {
            target: Some(target.to_string()),
            schedule: Some(label),
            gate: Some(params.gate),
            eta: Some(eta),
            search: at.and_then(|a| a.search.clone()),
            ..Label::default()
        };
        let params = serde_json::to_value(params).map_err(|e| stage_err(e.to_string()))?;
        let params = super::with_concept_defs(params, target.concepts());
        let mut node = NodeSpec::new(id, EVAL_KIND, params)
            .label(node_label)
            .hints(self.clap_hints.clone())
            .external(self.clap_ext.clone());
        for (p, seed, r) in gens {
            node = node.input_in(GEN_ROLE, format!("{p}:{seed}"), *r);
        }
        for (p, seed, r) in &self.baselines {
            node = node.input_in(BASE_ROLE, format!("{p}:{seed}"), *r);
        }
        for (index, r) in dirs {
            node = node.input_in(DIR_ROLE, index, *r);
        }
        if self.probe_kind.is_some() {
            node = with_probes(node, plan, target, true);
        }
        plan.add(node).map(Some)
    }
}

/// Wires in the probe nodes of a target's concepts (the judges), as `probe:<concept>:L<layer>`.
/// `evaluation`: the evaluation's judges, fitted on `[evaluate] judge_on`'s folder when it names
/// one (docs/design.md §6); a feedback controller always reads the probes of `[data]`.
fn with_probes(
    mut node: NodeSpec,
    plan: &PlanBuilder<'_>,
    target: &Target,
    evaluation: bool,
) -> NodeSpec {
    let judges = plan.imports::<JudgeProbeOf>();
    let pool = if evaluation && !judges.is_empty() {
        judges
    } else {
        plan.imports::<ProbeOf>()
    };
    for term in &target.terms {
        // In the order of the input names (`<concept>:L<layer>`), as keys hash them.
        let mut probes: Vec<(String, NodeRef)> = pool
            .iter()
            .filter(|((c, _), _)| *c == term.concept.name())
            .map(|((c, l), r)| (format!("{c}:L{l}"), *r))
            .collect();
        probes.sort_by(|a, b| a.0.cmp(&b.0));
        for (index, r) in probes {
            node = node.input_in(PROBE_ROLE, index, r);
        }
    }
    node
}

/// Where an experiment's run publishes its searches: `reports/<name>/search.json` (relative to
/// the working directory, where `rfmx run` publishes reports).
pub fn published_search_path(name: &str) -> std::path::PathBuf {
    Path::new("reports").join(name).join("search.json")
}

/// `[steer] from_search`: the searches another experiment published (docs/design.md §10).
fn published_searches(
    name: &str,
) -> Result<(String, Vec<crate::stages::search::SearchResult>), PlanError> {
    if let Some(why) = crate::fsx::component_problem(name) {
        return Err(stage_err(format!("steer.from_search `{name}`: {why}")));
    }
    let path = published_search_path(name);
    let bytes = crate::fsx::read_limited(&path, crate::fsx::TEXT_LIMIT).map_err(|e| {
        stage_err(format!(
            "steer.from_search: cannot read {} ({e}); run the experiment `{name}` (its spec has a \
             [search] section) first: its report publishes the chosen settings there",
            path.display()
        ))
    })?;
    let searches = serde_json::from_slice(&bytes)
        .map_err(|e| stage_err(format!("steer.from_search: {}: {e}", path.display())))?;
    Ok((name.to_string(), searches))
}

/// The setting a published search chose for a target and schedule.
fn chosen_setting(
    name: &str,
    searches: &[crate::stages::search::SearchResult],
    target: &Target,
    schedule: &str,
) -> Result<crate::search::Setting, PlanError> {
    let t = target.to_string();
    let found = searches
        .iter()
        .find(|r| r.target == t && r.schedule == schedule)
        .ok_or_else(|| {
            let have: Vec<String> = searches
                .iter()
                .map(|r| format!("{} · {}", r.target, r.schedule))
                .collect();
            stage_err(format!(
                "steer.from_search: experiment `{name}` has no search for {t} · {schedule} (it searched: {})",
                have.join(", ")
            ))
        })?;
    found
        .chosen
        .and_then(|i| found.trials.get(i))
        .map(|trial| trial.setting)
        .ok_or_else(|| {
            stage_err(format!(
                "steer.from_search: the `{name}` search for {t} · {schedule} chose nothing"
            ))
        })
}

/// Plans the baselines and steered generations of one sweep point.
pub struct SteerStage;

impl Stage for SteerStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn plan(&self, spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        let Some(steering) = Steering::new(&spec.spec, plan)? else {
            return Ok(());
        };
        let steer = steering.steer;
        let searched = steer
            .from_search
            .as_deref()
            .map(published_searches)
            .transpose()?;
        for target in &steer.targets {
            let dirs = steering.directions(plan, target)?;
            steering.baseline_evaluation(plan, target, &dirs)?;
            for (si, schedule) in steer.schedule.iter().enumerate() {
                if let Some((name, searches)) = &searched {
                    let label = schedule_label(schedule, si);
                    let setting = chosen_setting(name, searches, target, &label)?;
                    let at = PointSettings {
                        schedule: schedule.clone(),
                        label,
                        layers: crate::stages::search::layers_at(steer, &setting),
                        gate: setting.gate,
                        eta: setting.eta,
                        samples: steer.samples,
                        search: None,
                    };
                    steering.point(plan, target, &at, &dirs)?;
                    continue;
                }
                for &eta in steer.eta.iter().filter(|&&e| e != 0.0) {
                    let at = PointSettings {
                        schedule: schedule.clone(),
                        label: schedule_label(schedule, si),
                        layers: steer.layers.clone(),
                        gate: steer.gate,
                        eta,
                        samples: steer.samples,
                        search: None,
                    };
                    steering.point(plan, target, &at, &dirs)?;
                }
            }
        }
        Ok(())
    }

    fn summary(&self, plan: &Plan, store: &Store) -> Option<String> {
        crate::stages::evaluation::summary(plan, store)
    }
}
