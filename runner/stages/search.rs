//! The search stage and the `search` node kind (docs/design.md §10). Per sweep point,
//! target and schedule, `[search]` plans its trials round by round through the live plan: round
//! 1 at once, each next round from the finished evaluations of the rounds before
//! ([`crate::search::Problem::next`]), and, when the strategy is done, one `search` node that
//! gathers every trial and writes `search.json` (every trial with its metrics and CIs, the chosen
//! setting, whether the constraints held). A trial is an ordinary generation + evaluation point
//! (`crate::stages::steer::Steering`), so trials already in the store are cache hits and a grid
//! sweep and a search share results.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dag::{
    Export, Label, NodeCtx, NodeError, NodeKind, NodeRef, NodeSpec, PlanBuilder, PlanError,
    Results, Round, Stage,
};
use crate::eval::stats::MetricEntry;
use crate::search::{Assessment, Problem, Setting, Trial, constraint};
use crate::spec::ResolvedSpec;
use crate::spec::schema::{LayerStrategy, SearchSpec, SteerSpec, Target};
use crate::stages::contract::{ContractError, Output};
use crate::stages::evaluation::Metrics;
use crate::stages::generation::schedule_label;
use crate::stages::steer::{PointSettings, Steering};

pub const KIND: &str = "search";
const STAGE: &str = "search";

/// A planned trial: which search, round and slot, and what it evaluates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialKey {
    /// `<target>|<schedule label>`.
    pub search: String,
    pub round: u32,
    pub index: usize,
    pub samples: u32,
    pub setting: Setting,
}

/// Every trial's evaluation node, by [`TrialKey`].
pub struct SearchTrial;
impl Export for SearchTrial {
    type Key = TrialKey;
}

/// A finished search's `search` node, by search name.
pub struct SearchOf;
impl Export for SearchOf {
    type Key = String;
}

fn stage_err(message: impl Into<String>) -> PlanError {
    PlanError::Stage {
        stage: STAGE.into(),
        message: message.into(),
    }
}

/// The `[search]` of one target and schedule as a [`Problem`]; the Latin hypercube's seed mixes
/// the experiment seed with the search's name, so targets do not share one design.
pub fn problem(
    search: &SearchSpec,
    steer: &SteerSpec,
    name: &str,
    seed: u64,
) -> Result<Problem, String> {
    let constraints = search
        .constraints
        .iter()
        .map(|c| constraint::parse(c).map_err(|e| format!("search.constraints `{c}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let kappa = match steer.layers {
        LayerStrategy::Exponential { kappa, .. } => Some(kappa),
        _ => None,
    };
    let mix = blake3::hash(name.as_bytes());
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&mix.as_bytes()[..8]);
    Ok(Problem {
        objective: search.objective.clone(),
        maximise: search.maximise,
        constraints,
        variables: search.variables,
        strategy: search.strategy,
        budget: search.budget,
        samples: steer.samples,
        fixed: Setting {
            eta: 0.0,
            gate: steer.gate,
            kappa,
        },
        seed: seed ^ u64::from_le_bytes(eight),
    })
}

/// A metrics file's finite point estimates.
fn values(m: &Metrics) -> BTreeMap<String, f64> {
    m.metrics
        .iter()
        .filter_map(|(k, v)| match v {
            MetricEntry::Estimate { value: Some(v), .. } if v.is_finite() => Some((k.clone(), *v)),
            _ => None,
        })
        .collect()
}

fn read_metrics(dir: &Path) -> Result<Metrics, PlanError> {
    Metrics::read(dir).map_err(|e| stage_err(e.to_string()))
}

/// The layer strategy of a setting: `[steer] layers` with κ replaced when it is searched.
pub fn layers_at(steer: &SteerSpec, s: &Setting) -> LayerStrategy {
    match (&steer.layers, s.kappa) {
        (LayerStrategy::Exponential { w0, .. }, Some(kappa)) => {
            LayerStrategy::Exponential { w0: *w0, kappa }
        }
        (other, _) => other.clone(),
    }
}

pub struct SearchStage;

impl Stage for SearchStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn plan(&self, _spec: &ResolvedSpec, _plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        // Round 1 is planned by the first `plan_round`, which runs right after the initial plan.
        Ok(())
    }

    fn plan_round(
        &self,
        spec: &ResolvedSpec,
        plan: &mut PlanBuilder<'_>,
        results: &dyn Results,
    ) -> Result<Round, PlanError> {
        let s = &spec.spec;
        let Some(search) = &s.search else {
            return Ok(Round::Done);
        };
        let Some(steering) = Steering::new(s, plan)? else {
            return Ok(Round::Done);
        };
        let steer = steering.steer;
        let mut waiting = Vec::new();
        for target in &steer.targets {
            let dirs = steering.directions(plan, target)?;
            let base = steering
                .baseline_evaluation(plan, target, &dirs)?
                .ok_or_else(|| stage_err("[search] needs an [evaluate] section"))?;
            for (si, schedule) in steer.schedule.iter().enumerate() {
                let label = schedule_label(schedule, si);
                let name = format!("{target}|{label}");
                if plan.import::<SearchOf>(&name).is_some() {
                    continue;
                }
                let problem =
                    problem(search, steer, &name, s.experiment.seed).map_err(stage_err)?;
                let mut planned: Vec<(TrialKey, NodeRef)> = plan
                    .imports::<SearchTrial>()
                    .into_iter()
                    .filter(|(k, _)| k.search == name)
                    .collect();
                // In evaluation order (imports come in key order, which is not round order).
                planned.sort_by_key(|(k, _)| (k.round, k.index));
                let last = planned.iter().map(|(k, _)| k.round).max().unwrap_or(0);
                let mut trials = Vec::new();
                let mut ready = true;
                for (k, r) in &planned {
                    match results.output(plan.node(*r)) {
                        Some(dir) => trials.push(Trial {
                            round: k.round,
                            setting: k.setting,
                            samples: k.samples,
                            metrics: values(&read_metrics(&dir)?),
                        }),
                        None => ready = false,
                    }
                }
                let baseline = match results.output(plan.node(base)) {
                    Some(dir) => values(&read_metrics(&dir)?),
                    None => {
                        // The first round needs no results; later ones compare with η = 0.
                        ready &= last == 0;
                        BTreeMap::new()
                    }
                };
                let max = problem.max_rounds();
                if !ready {
                    waiting.push(format!(
                        "{name}: round {last} of ≤ {max}; later rounds planned when round {last} finishes"
                    ));
                    continue;
                }
                match problem.next(&baseline, &trials) {
                    crate::search::Next::Evaluate(points) => {
                        let round = last + 1;
                        for (index, (setting, samples)) in points.into_iter().enumerate() {
                            let at = PointSettings {
                                schedule: schedule.clone(),
                                label: match (search.variables.kappa, setting.kappa) {
                                    (Some(_), Some(k)) => format!("{label}|k{k}"),
                                    _ => label.clone(),
                                },
                                layers: layers_at(steer, &setting),
                                gate: setting.gate,
                                eta: setting.eta,
                                samples,
                                search: Some(name.clone()),
                            };
                            let node = if setting.eta == 0.0 {
                                base
                            } else {
                                steering
                                    .point(plan, target, &at, &dirs)?
                                    .ok_or_else(|| stage_err("[search] needs [evaluate]"))?
                            };
                            let key = TrialKey {
                                search: name.clone(),
                                round,
                                index,
                                samples,
                                setting,
                            };
                            plan.export::<SearchTrial>(&key, node)?;
                        }
                        waiting.push(format!(
                            "{name}: round {round} of ≤ {max}; later rounds planned when round {round} finishes"
                        ));
                    }
                    crate::search::Next::Done => {
                        let r = plan_search_node(plan, target, &label, &problem, base, &planned)?;
                        plan.export::<SearchOf>(&name, r)?;
                    }
                }
            }
        }
        Ok(if waiting.is_empty() {
            Round::Done
        } else {
            Round::Waiting(waiting.join("; "))
        })
    }
}

/// Params of a `search` node: the problem and each trial input's key, in input order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchParams {
    pub target: String,
    pub schedule: String,
    pub problem: Problem,
    /// Trial `t<k>` is the input named `t<k>`.
    pub trials: Vec<TrialKey>,
}

const BASE_INPUT: &str = "baseline";

fn plan_search_node(
    plan: &mut PlanBuilder<'_>,
    target: &Target,
    label: &str,
    problem: &Problem,
    base: NodeRef,
    planned: &[(TrialKey, NodeRef)],
) -> Result<NodeRef, PlanError> {
    let params = SearchParams {
        target: target.to_string(),
        schedule: label.to_string(),
        problem: problem.clone(),
        trials: planned.iter().map(|(k, _)| k.clone()).collect(),
    };
    let params = serde_json::to_value(params).map_err(|e| stage_err(e.to_string()))?;
    let params = super::with_concept_defs(params, target.concepts());
    let mut node = NodeSpec::new(format!("search[{target}|{label}]"), KIND, params)
        .label(Label {
            target: Some(target.to_string()),
            schedule: Some(label.to_string()),
            search: Some(format!("{target}|{label}")),
            ..Label::default()
        })
        .input(BASE_INPUT, base);
    for (k, (_, r)) in planned.iter().enumerate() {
        node = node.input(format!("t{k}"), *r);
    }
    plan.add(node)
}

/// One trial in `search.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub round: u32,
    pub setting: Setting,
    pub samples: u32,
    /// The evaluation node's id.
    pub node: String,
    /// Every metric of the point, with its CI (as in the evaluation's metrics.json).
    pub metrics: indexmap::IndexMap<String, MetricEntry>,
    pub assessment: Assessment,
}

/// `search.json` of a `search` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub target: String,
    pub schedule: String,
    pub objective: String,
    pub maximise: bool,
    pub constraints: Vec<String>,
    pub strategy: crate::spec::schema::SearchStrategy,
    pub budget: u32,
    /// The metrics at η = 0 (what `baseline` in a constraint stands for).
    pub baseline: BTreeMap<String, f64>,
    pub trials: Vec<TrialResult>,
    /// Index into `trials` of the chosen setting.
    pub chosen: Option<usize>,
    /// Whether the chosen setting meets every constraint.
    pub constraints_held: bool,
}

impl Output for SearchResult {
    const FILE: &'static str = "search.json";
}

pub struct SearchNode;

impl NodeKind for SearchNode {
    fn name(&self) -> &'static str {
        KIND
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: SearchParams = ctx.params_as()?;
        let dir_of = |name: &str| {
            ctx.inputs
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.dir.clone())
                .ok_or_else(|| ContractError {
                    path: ctx.out_dir.to_path_buf(),
                    reason: format!("the search node has no input `{name}`"),
                })
        };
        let baseline = values(&Metrics::read(&dir_of(BASE_INPUT)?)?);
        let mut trials = Vec::new();
        let mut results = Vec::new();
        for (k, key) in p.trials.iter().enumerate() {
            let name = format!("t{k}");
            let m = Metrics::read(&dir_of(&name)?)?;
            let trial = Trial {
                round: key.round,
                setting: key.setting,
                samples: key.samples,
                metrics: values(&m),
            };
            let node = ctx
                .inputs
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.id.clone())
                .unwrap_or_default();
            results.push(TrialResult {
                round: key.round,
                setting: key.setting,
                samples: key.samples,
                node,
                metrics: m.metrics.clone(),
                assessment: p.problem.assess(&baseline, &trial),
            });
            trials.push(trial);
        }
        let chosen = p.problem.choose(&baseline, &trials);
        let held = chosen.is_some_and(|i| results[i].assessment.feasible);
        if let Some(i) = chosen {
            let t = &results[i];
            ctx.log(&format!(
                "chose eta {} gate {} kappa {:?} ({} = {:?}; constraints {})",
                t.setting.eta,
                t.setting.gate,
                t.setting.kappa,
                p.problem.objective,
                t.assessment.objective,
                if held { "held" } else { "violated" }
            ));
        }
        SearchResult {
            target: p.target,
            schedule: p.schedule,
            objective: p.problem.objective.clone(),
            maximise: p.problem.maximise,
            constraints: p
                .problem
                .constraints
                .iter()
                .map(|c| c.text.clone())
                .collect(),
            strategy: p.problem.strategy,
            budget: p.problem.budget,
            baseline,
            trials: results,
            chosen,
            constraints_held: held,
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}

/// What the rounds a search has not planned yet may still cost at most: (evaluations,
/// generations), over every sweep point's unfinished searches. `rfmx plan --estimate` adds it, since
/// later rounds are planned only from results (docs/design.md §9, §10).
pub fn unplanned_bound(spec: &crate::spec::LoadedSpec, plan: &crate::dag::Plan) -> (usize, usize) {
    let (mut evals, mut gens) = (0, 0);
    for point in &spec.points {
        let s = &point.spec;
        let (Some(search), Some(steer)) = (&s.search, s.steer.as_ref().filter(|st| st.enabled))
        else {
            continue;
        };
        for target in &steer.targets {
            for (si, schedule) in steer.schedule.iter().enumerate() {
                let name = format!("{target}|{}", schedule_label(schedule, si));
                let label = |n: &&crate::dag::PlannedNode| n.label.search.as_deref() == Some(&name);
                if plan.nodes.iter().any(|n| n.kind == KIND && label(&n)) {
                    continue;
                }
                let planned = plan
                    .nodes
                    .iter()
                    .filter(|n| n.kind == crate::stages::evaluation::KIND && label(n))
                    .count();
                let left = (search.budget as usize).saturating_sub(planned);
                evals += left;
                gens += left * steer.samples as usize * steer.prompts.len();
            }
        }
    }
    (evals, gens)
}
