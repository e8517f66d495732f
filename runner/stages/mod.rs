//! The probe pipeline's stages (docs/design.md §2, docs/contracts.md): per concept a
//! `dataset` node, an `activations` node (dataset × model × pooling), one `probe` node per
//! (layer × probe kind) and one `directions` node per class, planned from the spec sections
//! `[model] [data] [extract] [probe]`. The summary after a run is a Table-1-style probe table
//! plus the layer-selection weights steering would use.

pub mod activations;
pub mod contract;
pub mod dataset;
pub mod directions;
pub mod evaluation;
pub mod generation;
pub mod judge;
pub mod probe;
pub mod search;
pub mod steer;
pub mod toy;
pub mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::dag::store::Store;
use crate::dag::{Export, Label, NodeRef, NodeSpec, Plan, PlanBuilder, PlanError, Stage};
use crate::model::{ModelError, ModelSource, Pipeline};
use crate::spec::ResolvedSpec;
use crate::spec::schema::{AllOr, DataSource, JudgeLayer, LayerStrategy, Pooling, ProbeKind};

pub use activations::ActivationsNode;
pub use dataset::DatasetNode;
pub use directions::DirectionsNode;
pub use probe::{ProbeNode, ProbeScores};

use contract::Output;
use judge::table1_row;

/// Errors of the stage nodes; the engine records the chain in the failure record.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Musicgen(#[from] crate::model::musicgen::MusicgenError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Contract(#[from] contract::ContractError),
}

pub type Result<T> = std::result::Result<T, StageError>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Saves f32 tensors as safetensors through a temp sibling + rename.
pub(crate) fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, candle_core::Tensor>,
) -> Result<()> {
    let tmp = crate::fsx::temp_sibling(path);
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| StageError::Format {
        path: path.to_path_buf(),
        reason: format!("cannot write safetensors: {e}"),
    })?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

pub(crate) fn load_tensors(path: &Path) -> Result<HashMap<String, candle_core::Tensor>> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| {
        StageError::Format {
            path: path.to_path_buf(),
            reason: format!("cannot read safetensors: {e}"),
        }
    })
}

/// A class name as a directory name: characters outside `[A-Za-z0-9_#.-]` become `_`
/// (`4/4` -> `4_4`; progressions such as `major-(1, 4, 5, 1)` keep their digits). A name that
/// still could not be its own folder (`..`, a leading dot, `NUL`: docs/contracts.md, "Names")
/// gets a `_` prefix, which leaves every ordinary class name as it was.
pub fn class_dir(class: &str) -> String {
    let dir: String = class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_#.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut dir = if crate::fsx::component_problem(&dir).is_some() {
        format!("_{dir}")
    } else {
        dir
    };
    // Windows drops trailing dots, which would merge `x.` into `x`.
    while dir.ends_with('.') {
        dir.pop();
        dir.push('_');
    }
    dir
}

pub fn pooling_name(p: Pooling) -> &'static str {
    match p {
        Pooling::Mean => "mean",
        Pooling::Last => "last",
        Pooling::Max => "max",
    }
}

pub fn kind_name(k: ProbeKind) -> &'static str {
    match k {
        ProbeKind::Rfm => "rfm",
        ProbeKind::Linear => "linear",
        ProbeKind::Mlp => "mlp",
    }
}

/// Decoder layers of a model source (tiny: the embedded spec; a snapshot: its config.json).
pub fn model_layers(source: &ModelSource) -> std::result::Result<usize, ModelError> {
    Pipeline::num_layers_of(source)
}

/// The probe pipeline's planner.
pub struct ProbeStage;

/// The typed handles the probe stage publishes for later stages of the same sweep point.
/// A concept's `probe` node at a decoder layer (of the point's pooling and probe kind).
pub struct ProbeOf;
impl Export for ProbeOf {
    /// (concept, layer)
    type Key = (String, usize);
}

/// A concept's judge probe at a decoder layer when `[evaluate] judge_on` names a folder: fitted
/// on that folder's clips, it replaces [`ProbeOf`] as the steering evaluation's judge.
pub struct JudgeProbeOf;
impl Export for JudgeProbeOf {
    /// (concept, layer)
    type Key = (String, usize);
}

/// The id suffix of the nodes `[evaluate] judge_on` plans.
pub const JUDGE_ON: &str = "judge_on";

/// A class's `directions` node.
pub struct DirectionsOf;
impl Export for DirectionsOf {
    /// (concept, class)
    type Key = (String, String);
}

/// `params` plus the definitions of the user concepts among `concepts` (`concept_defs`): in the
/// key, so that editing a concept's classes re-runs what depends on it, and read back by the
/// executor, so that the node resolves the names in any process (docs/design.md §5). Absent for
/// built-in concepts: their nodes keep the keys they had.
pub fn with_concept_defs(
    mut params: Value,
    concepts: impl IntoIterator<Item = crate::data::Concept>,
) -> Value {
    if let (Some(defs), Some(map)) = (
        crate::data::concepts::defs_param(concepts),
        params.as_object_mut(),
    ) {
        map.insert(crate::data::concepts::DEFS_PARAM.into(), defs);
    }
    params
}

fn stage_err(message: impl Into<String>) -> PlanError {
    PlanError::Stage {
        stage: "probe".into(),
        message: message.into(),
    }
}

impl Stage for ProbeStage {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn plan(
        &self,
        spec: &ResolvedSpec,
        plan: &mut PlanBuilder<'_>,
    ) -> std::result::Result<(), PlanError> {
        let s = &spec.spec;
        let (Some(model), Some(data), Some(extract), Some(probe)) =
            (&s.model, &s.data, &s.extract, &s.probe)
        else {
            return Ok(());
        };
        let source = ModelSource::from_spec(&model.name, model.path.as_deref().map(Path::new));
        let (fingerprint, model_ext) = Pipeline::identity_of(&source)
            .map_err(|e| stage_err(format!("model (model.name / model.path): {e}")))?;
        let n_layers = model_layers(&source)
            .map_err(|e| stage_err(format!("model (model.name / model.path): {e}")))?;
        let layers: Vec<usize> = match &extract.layers {
            AllOr::All => (0..n_layers).collect(),
            AllOr::Some(list) => {
                if let Some(l) = list.iter().find(|&&l| l >= n_layers) {
                    return Err(stage_err(format!(
                        "extract.layers: layer {l} does not exist: model `{}` has {n_layers} decoder layers (0..={})",
                        source.label(),
                        n_layers.saturating_sub(1)
                    )));
                }
                let mut v = list.clone();
                v.sort_unstable();
                v.dedup();
                v
            }
        };
        if let JudgeLayer::Layer(l) = probe.judge_layer
            && !layers.contains(&l)
        {
            return Err(stage_err(format!(
                "probe.judge_layer: layer {l} is not extracted (layers {layers:?})"
            )));
        }
        let seed = s.experiment.seed;
        let pooling = pooling_name(extract.pooling);
        let kind = kind_name(probe.kind);
        let (sf_param, sf_hint, sf_ext) = dataset::soundfont_param(data.soundfont.as_deref());
        let steer_layers = s.steer.as_ref().map(|st| json!(st.layers));
        // A folder source is validated once, before any node is planned: a bad CSV or file is a
        // plan error (exit 2 from `check`, `plan` and `run`), never a half-built dataset.
        let folder = match &data.source {
            Some(src) => {
                let (dir, csv) = src.paths();
                let labels = crate::data::folder::read_labels(&dir, &csv, &data.concepts)
                    .map_err(|e| stage_err(format!("data.source: {e}")))?;
                Some((src, labels))
            }
            None => None,
        };
        let eval_sets = probe
            .evaluate_on
            .iter()
            .map(|src| {
                let (dir, csv) = src.paths();
                crate::data::folder::read_labels(&dir, &csv, &data.concepts)
                    .map(|labels| (src, labels))
                    .map_err(|e| stage_err(format!("probe.evaluate_on: {e}")))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let judge_set = match s.evaluate.as_ref().and_then(|e| e.judge_on.as_ref()) {
            Some(src) if s.steer.as_ref().is_some_and(|st| st.enabled) => {
                let (dir, csv) = src.paths();
                let labels = crate::data::folder::read_labels(&dir, &csv, &data.concepts)
                    .map_err(|e| stage_err(format!("evaluate.judge_on: {e}")))?;
                Some((src, labels))
            }
            _ => None,
        };
        for concept in &data.concepts {
            let c = concept.name();
            let per_class = match data.per_class {
                AllOr::All => Value::Null,
                AllOr::Some(n) => json!(n),
            };
            let instruments = match &data.instruments {
                AllOr::All => Value::Null,
                AllOr::Some(v) => json!(v),
            };
            let concept_label = Label {
                concept: Some(c.to_string()),
                ..Label::default()
            };
            let ds_node = match &folder {
                Some((src, labels)) => {
                    dataset::folder_node(format!("dataset[{c}]"), *concept, src, labels)
                        .map_err(stage_err)?
                }
                None => NodeSpec::new(
                    format!("dataset[{c}]"),
                    "dataset",
                    json!({
                        "concept": c,
                        "per_class": per_class,
                        "instruments": instruments,
                        "soundfont": sf_param,
                        "seed": seed,
                    }),
                )
                .hints(json!({ "soundfont_path": sf_hint }))
                .external(sf_ext.clone()),
            };
            let ds = plan.add(ds_node.label(concept_label.clone()))?;
            let activations_node = |id: String, ds| {
                NodeSpec::new(
                    id,
                    "activations",
                    with_concept_defs(
                        json!({
                            "concept": c,
                            "pooling": pooling,
                            "layers": layers,
                            "dtype": model.precision(),
                        }),
                        [*concept],
                    ),
                )
                .input("dataset", ds)
                .label(Label {
                    pooling: Some(pooling.to_string()),
                    ..concept_label.clone()
                })
                .hints(json!({
                    "model": model.name,
                    "model_path": model.path,
                    "device": model.device,
                    "fingerprint": fingerprint,
                    "batch": activations::DEFAULT_BATCH,
                }))
                .fingerprint(fingerprint.clone())
                .external(model_ext.clone())
            };
            let act = plan.add(activations_node(format!("activations[{c},{pooling}]"), ds))?;
            // `group` is the probe's pooling label, which groups probes into Table-1 rows.
            let probe_node = |id: String, act, l: usize, group: String| {
                NodeSpec::new(
                    id,
                    "probe",
                    with_concept_defs(
                        json!({
                            "concept": c,
                            "layer": l,
                            "kind": kind,
                            "iterations": probe.iterations,
                            "trials": probe.trials,
                            "directions_k": probe.directions_k,
                            "seed": seed,
                        }),
                        [*concept],
                    ),
                )
                .input("activations", act)
                .hints(json!({ "device": model.device }))
                .label(Label {
                    layer: Some(l),
                    pooling: Some(group),
                    probe: Some(kind.to_string()),
                    ..concept_label.clone()
                })
            };
            let mut probes = Vec::new();
            for &l in &layers {
                let r = plan.add(probe_node(
                    format!("probe[{c},L{l},{kind}]"),
                    act,
                    l,
                    pooling.to_string(),
                ))?;
                plan.export::<ProbeOf>(&(c.to_string(), l), r)?;
                probes.push((l, r));
            }
            // `[evaluate] judge_on` (docs/design.md §6): the same probes fitted on a folder's
            // clips judge the steering evaluation; the directions stay those of `[data]`.
            // A folder's dataset and activations of this concept, their ids suffixed `suffix`.
            let folder_activations = |plan: &mut PlanBuilder<'_>,
                                      suffix: &str,
                                      src: &DataSource,
                                      labels: &crate::data::folder::FolderLabels|
             -> std::result::Result<NodeRef, PlanError> {
                let ds = plan.add(
                    dataset::folder_node(format!("dataset[{c},{suffix}]"), *concept, src, labels)
                        .map_err(stage_err)?
                        .label(concept_label.clone()),
                )?;
                plan.add(activations_node(
                    format!("activations[{c},{pooling},{suffix}]"),
                    ds,
                ))
            };
            if let Some((src, labels)) = &judge_set {
                let act = folder_activations(plan, JUDGE_ON, src, labels)?;
                for &l in &layers {
                    let r = plan.add(probe_node(
                        format!("probe[{c},L{l},{kind},{JUDGE_ON}]"),
                        act,
                        l,
                        format!("{pooling}, {JUDGE_ON}"),
                    ))?;
                    plan.export::<JudgeProbeOf>(&(c.to_string(), l), r)?;
                }
            }
            // Transfer (docs/design.md §5): the same probes scored on each `evaluate_on` set,
            // extracted with the same model, pooling and layers.
            for (i, (src, labels)) in eval_sets.iter().enumerate() {
                let test = format!("evaluate_on[{i}]");
                let act = folder_activations(plan, &test, src, labels)?;
                let mut node = NodeSpec::new(
                    format!("transfer[{c},{pooling},{kind},{test}]"),
                    "transfer",
                    with_concept_defs(
                        json!({ "concept": c, "layers": layers, "seed": seed }),
                        [*concept],
                    ),
                )
                .input("activations", act)
                .label(Label {
                    pooling: Some(pooling.to_string()),
                    probe: Some(kind.to_string()),
                    ..concept_label.clone()
                })
                .hints(json!({
                    "train": match &data.source {
                        Some(src) => format!("folder {}", src.path),
                        None => "SynTheory".to_string(),
                    },
                    "test": format!("folder {}", src.path),
                }));
                for &(l, r) in &probes {
                    node = node.input(format!("L{l}"), r);
                }
                plan.add(node)?;
            }
            let data_concept = *concept;
            let judge = match probe.judge_layer {
                JudgeLayer::Best => json!("best"),
                JudgeLayer::Layer(l) => json!(l),
            };
            // Directions only when something uses them: steering, or a spec that asks.
            let wanted = probe.directions || s.steer.as_ref().is_some_and(|st| st.enabled);
            // A folder dataset has directions for the classes its CSV names.
            let classes = match &folder {
                Some((_, labels)) => labels.classes_of(data_concept),
                None => data_concept.classes(),
            };
            for class in classes.into_iter().filter(|_| wanted) {
                let mut node = NodeSpec::new(
                    format!("directions[{c}:{class}]"),
                    "directions",
                    with_concept_defs(
                        json!({
                            "concept": c,
                            "class": class,
                            "kind": kind,
                            "layers": layers,
                            "judge_layer": judge,
                        }),
                        [*concept],
                    ),
                )
                .label(Label {
                    class: Some(class.to_string()),
                    probe: Some(kind.to_string()),
                    ..concept_label.clone()
                })
                .hints(json!({ "steer_layers": steer_layers }));
                for &(l, r) in &probes {
                    node = node.input(format!("L{l}"), r);
                }
                let r = plan.add(node)?;
                plan.export::<DirectionsOf>(&(c.to_string(), class.to_string()), r)?;
            }
        }
        Ok(())
    }

    fn summary(&self, plan: &Plan, store: &Store) -> Option<String> {
        summary(plan, store)
    }
}

fn fmt3(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "-".into(),
    }
}

/// (concept, pooling, probe kind) and the scores of its layers.
pub type ProbeGroup = ((String, String, String), Vec<ProbeScores>);

/// The finished probe nodes' scores grouped by (concept, pooling, kind), layers ascending, in the
/// order the plan first names each group.
pub fn probe_groups(plan: &Plan, store: &Store) -> Vec<ProbeGroup> {
    let mut groups: Vec<ProbeGroup> = Vec::new();
    for n in plan.nodes.iter().filter(|n| n.kind == "probe") {
        let Ok(scores) = ProbeScores::read(&store.out_dir(&n.key)) else {
            continue;
        };
        let key = (
            scores.concept.clone(),
            n.label.pooling.clone().unwrap_or_else(|| "?".into()),
            n.label.probe.clone().unwrap_or_else(|| "?".into()),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(scores),
            None => groups.push((key, vec![scores])),
        }
    }
    for (_, v) in &mut groups {
        v.sort_by_key(|s| s.layer);
    }
    groups
}

fn summary(plan: &Plan, store: &Store) -> Option<String> {
    let groups = probe_groups(plan, store);
    if groups.is_empty() {
        return None;
    }
    let strategy: Option<LayerStrategy> = plan
        .nodes
        .iter()
        .find(|n| n.kind == "directions")
        .and_then(|n| serde_json::from_value(n.hints["steer_layers"].clone()).ok());
    let mut out = String::from(
        "probe summary (Table 1 style): the multiclass judge at its layer (best validation accuracy; \
         ties: validation AUC, then the lower layer); AUC = mean one-vs-rest test AUC at that layer\n",
    );
    out.push_str(&format!(
        "  {:<16}{:<9}{:<8}{:>8}{:>9}{:>10}{:>10}\n",
        "concept", "pooling", "kind", "judge L", "val acc", "test acc", "test AUC"
    ));
    for ((_, pooling, _), layers) in &groups {
        let Some(r) = table1_row(pooling, layers) else {
            continue;
        };
        out.push_str(&format!(
            "  {:<16}{:<9}{:<8}{:>8}{:>9}{:>10}{:>10}\n",
            r.concept,
            r.pooling,
            r.kind,
            r.judge_layer,
            fmt3(r.val_acc),
            fmt3(r.test_acc),
            fmt3(r.mean_test_auc)
        ));
    }
    out.push_str(&layer_selection(&groups, strategy.as_ref()));
    out.push_str(&transfer_block(plan, store));
    Some(out.trim_end().to_string())
}

/// The finished transfer nodes' scores, in plan order.
pub fn transfer_scores(plan: &Plan, store: &Store) -> Vec<transfer::TransferScores> {
    plan.nodes
        .iter()
        .filter(|n| n.kind == "transfer")
        .filter_map(|n| transfer::TransferScores::read(&store.out_dir(&n.key)).ok())
        .collect()
}

/// Transfer rows (docs/design.md §5): train set -> test set, test accuracy per layer with its
/// bootstrap 95 % CI beside the probes' in-domain test accuracy.
fn transfer_block(plan: &Plan, store: &Store) -> String {
    let all = transfer_scores(plan, store);
    if all.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\ntransfer: probes fitted on the train set, scored on the test set (accuracy, bootstrap 95 % CI; \
         in-domain = the same probe on its own test split)\n",
    );
    for t in &all {
        out.push_str(&format!(
            "  {} : {} -> {} ({} clips{}{})\n",
            t.concept,
            t.train,
            t.test,
            t.n,
            if t.unseen > 0 {
                format!(", {} of classes the probes never saw, not scored", t.unseen)
            } else {
                String::new()
            },
            t.best_layer
                .map(|l| format!(", best layer {l}"))
                .unwrap_or_default()
        ));
        for r in &t.layers {
            out.push_str(&format!(
                "    L{:<4} accuracy {:>6} [{}, {}]  n {:<5} in-domain {}",
                r.layer,
                fmt3(r.accuracy),
                fmt3(r.ci_low),
                fmt3(r.ci_high),
                r.n,
                fmt3(r.in_domain_test_accuracy)
            ));
            if let Some(g) = &r.r2 {
                out.push_str(&format!(
                    "  R² {} [{}, {}] (in-domain {})",
                    fmt3(g.r2),
                    fmt3(g.ci_low),
                    fmt3(g.ci_high),
                    fmt3(g.in_domain_test_r2)
                ));
            }
            out.push('\n');
        }
    }
    out
}

/// The per-layer scores and the weights top-K and exponential layer selection give them
/// (`crate::steer::layers::layer_weights`, the same function steering uses). K and (w0, κ) come
/// from `[steer] layers` where it names that strategy, else K = ⌈L/3⌉ and the authors' w0 = 1,
/// κ = 0.95.
fn layer_selection(groups: &[ProbeGroup], strategy: Option<&LayerStrategy>) -> String {
    use crate::steer::layers::layer_weights;
    let mut out = String::from(
        "\nlayer selection: per-layer validation AUC -> steering weights w_l \
         (top_k: 1 on the K best layers; exponential: w0 * s^(1/kappa), s = AUC min-max normalised)\n",
    );
    let mut header_done = false;
    for ((concept, pooling, kind), rows) in groups {
        let scores: Vec<f64> = rows
            .iter()
            .map(|r| r.mean_class_auc(false).unwrap_or(f64::NAN))
            .collect();
        let n = rows.len();
        let k = match strategy {
            Some(LayerStrategy::TopK { k }) => (*k).min(n),
            _ => n.div_ceil(3).max(1),
        };
        let (w0, kappa) = match strategy {
            Some(LayerStrategy::Exponential { w0, kappa }) => (*w0, *kappa),
            _ => (1.0, 0.95),
        };
        if !header_done {
            out.push_str(&format!(
                "  {:<16}{:<9}{:<8}{:>6}{:>9}{:>10}{:>12}{:>24}\n",
                "concept",
                "pooling",
                "kind",
                "layer",
                "val AUC",
                "test AUC",
                format!("top_k K={k}"),
                format!("exp w0={w0} kappa={kappa}")
            ));
            header_done = true;
        }
        let top = layer_weights(&LayerStrategy::TopK { k }, &scores);
        let exp = layer_weights(&LayerStrategy::Exponential { w0, kappa }, &scores);
        for (i, r) in rows.iter().enumerate() {
            let w = |ws: &std::result::Result<Vec<f64>, _>| match ws {
                Ok(w) => fmt3(Some(w[i])),
                Err(_) => "-".to_string(),
            };
            out.push_str(&format!(
                "  {:<16}{:<9}{:<8}{:>6}{:>9}{:>10}{:>12}{:>24}\n",
                if i == 0 { concept.as_str() } else { "" },
                if i == 0 { pooling.as_str() } else { "" },
                if i == 0 { kind.as_str() } else { "" },
                r.layer,
                fmt3(r.mean_class_auc(false)),
                fmt3(r.mean_class_auc(true)),
                w(&top),
                w(&exp)
            ));
        }
        if let Err(e) = top.as_ref().and(exp.as_ref()) {
            out.push_str(&format!(
                "  (weights unavailable for {concept}/{pooling}/{kind}: {e})\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_dirs_are_safe_names() {
        assert_eq!(class_dir("C#"), "C#");
        assert_eq!(class_dir("4/4"), "4_4");
        assert_eq!(class_dir(".."), "_._");
        assert_eq!(class_dir("."), "__");
        assert_eq!(class_dir(".git"), "_.git");
        assert_eq!(class_dir("nul"), "_nul");
        assert_eq!(class_dir(""), "_");
        assert_eq!(class_dir("major-(1, 4, 5, 1)"), "major-_1__4__5__1_");
    }

    fn plan(text: &str) -> Plan {
        let spec = crate::spec::load_str("t.toml", "t", text, &[], &[]).unwrap();
        crate::dag::build_plan(
            &spec,
            &crate::registry::default_registry(),
            &crate::dag::NoResults,
        )
        .unwrap()
    }

    #[test]
    fn plans_one_probe_per_layer_and_one_directions_node_per_class() {
        let p = plan(
            "[model]\nname = \"tiny\"\n[data]\nconcepts = [\"chords\"]\nper_class = 4\n\
             [extract]\nlayers = [1, 3]\n[steer]\ntargets = [\"chords:major\"]\n",
        );
        let ids: Vec<&str> = p.nodes.iter().map(|n| n.id.as_str()).collect();
        for id in [
            "dataset[chords]",
            "activations[chords,mean]",
            "probe[chords,L1,rfm]",
            "probe[chords,L3,rfm]",
            "directions[chords:major]",
            "directions[chords:dim]",
        ] {
            assert!(ids.contains(&id), "{id} not in {ids:?}");
        }
        assert!(!ids.iter().any(|i| i.contains("L0")));
        let act = p.find("activations[chords,mean]").unwrap();
        assert!(p.nodes[act].fingerprint.is_some());
        let d = p.find("directions[chords:aug]").unwrap();
        assert_eq!(p.inputs_of(d).len(), 2);
    }

    #[test]
    fn a_probe_only_spec_plans_directions_only_when_asked() {
        let base = "[model]\nname = \"tiny\"\n[data]\nconcepts = [\"chords\"]\nper_class = 4\n\
                    [extract]\nlayers = [1]\n[steer]\nenabled = false\ntargets = [\"chords:major\"]\n";
        let count = |p: &Plan| p.nodes.iter().filter(|n| n.kind == "directions").count();
        let p = plan(base);
        assert_eq!(count(&p), 0);
        assert!(p.find("probe[chords,L1,rfm]").is_some());
        let p = plan(&format!("{base}[probe]\ndirections = true\n"));
        assert_eq!(count(&p), 4, "one per chord class");
    }

    #[test]
    fn a_layer_the_model_lacks_is_a_plan_error_naming_the_key() {
        let spec = crate::spec::load_str(
            "t.toml",
            "t",
            "[model]\nname = \"tiny\"\n[extract]\nlayers = [9]\n",
            &[],
            &[],
        )
        .unwrap();
        let e = crate::dag::build_plan(
            &spec,
            &crate::registry::default_registry(),
            &crate::dag::NoResults,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("extract.layers") && msg.contains("layer 9"),
            "{msg}"
        );
    }
}
