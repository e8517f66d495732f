//! The spec's Rust types: exactly the tables of docs/design.md §1 plus `[executor]` and `[toy]`.
//!
//! Every struct denies unknown fields; defaults live in `defaults.toml` (the lowest layer), not here,
//! so that a field missing from both is a bug in the defaults file rather than a silent value.
//! Range checks that serde cannot express live in `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole spec after layering (one sweep point, or the base before sweep expansion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub experiment: ExperimentSpec,
    pub executor: ExecutorSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExtractSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steer: Option<SteerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate: Option<EvaluateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toy: Option<ToySpec>,
    /// Absent = every default (the report still runs); optional so that specs without it keep
    /// their resolved TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportSpec>,
    /// Dotted key path -> the values it takes; the cartesian product gives the sweep points.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sweep: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Local,
    Slurm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    pub kind: ExecutorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    pub slurm: SlurmSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub time: String,
    pub mem: String,
    pub cpus: u32,
    pub gpus: u32,
    pub extra: Vec<String>,
    /// `sbatch --array=0-N%T`: at most T tasks of one array run at once; absent = no `%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_throttle: Option<u32>,
    /// Per node kind: what its jobs ask for, over the flat keys above (docs/design.md §2, Slurm).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, KindResources>,
}

/// `[executor.slurm.resources.<kind>]`: each key set here replaces the flat `[executor.slurm]`
/// key of the same name for that kind's jobs; a key left out keeps the flat value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// One job (one array task) runs up to this many nodes of the kind one after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

/// What one Slurm job of a node kind asks for: the flat keys overridden by the kind's table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobResources {
    pub partition: Option<String>,
    pub time: String,
    pub mem: String,
    pub cpus: u32,
    pub gpus: u32,
    pub group: u32,
}

/// Every node kind the registry knows (`crate::registry::default_registry`, whose test checks the
/// two agree): the names `[executor.slurm.resources]` accepts.
pub const NODE_KINDS: [&str; 11] = [
    "toy_square",
    "toy_sum",
    "dataset",
    "activations",
    "probe",
    "directions",
    "transfer",
    "generation",
    "evaluation",
    "search",
    "report",
];

impl SlurmSpec {
    pub fn resources_for(&self, kind: &str) -> JobResources {
        let k = self.resources.get(kind).cloned().unwrap_or_default();
        JobResources {
            partition: k.partition.or_else(|| self.partition.clone()),
            time: k.time.unwrap_or_else(|| self.time.clone()),
            mem: k.mem.unwrap_or_else(|| self.mem.clone()),
            cpus: k.cpus.unwrap_or(self.cpus),
            gpus: k.gpus.unwrap_or(self.gpus),
            group: k.group.unwrap_or(1).max(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub device: String,
    /// Absent = `auto`. Optional rather than defaulted so that the resolved spec (hashed into the
    /// report node's key) of a spec without it stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<ModelDtype>,
}

/// `[model] dtype`: the decoder's precision; `auto` is resolved per device
/// ([`crate::model::Precision::auto_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelDtype {
    Auto,
    F32,
    Bf16,
    F16,
}

impl ModelSpec {
    /// The precision the model's nodes run in (and are keyed by).
    pub fn precision(&self) -> crate::model::Precision {
        use crate::model::Precision;
        match self.dtype.unwrap_or(ModelDtype::Auto) {
            ModelDtype::Auto => Precision::auto_for(&self.device),
            ModelDtype::F32 => Precision::F32,
            ModelDtype::Bf16 => Precision::Bf16,
            ModelDtype::F16 => Precision::F16,
        }
    }
}

/// The seven SynTheory concepts, `keys` and the spec's own (`[data.define]`): the data stage's
/// type, so that a spec can only name classes the generators produce or the spec declares.
pub use crate::data::{Concept, UserConcept};

/// `"all"` or an explicit value (a list of layers, of instruments, a count).
#[derive(Debug, Clone, PartialEq)]
pub enum AllOr<T> {
    All,
    Some(T),
}

impl<T: Serialize> Serialize for AllOr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AllOr::All => s.serialize_str("all"),
            AllOr::Some(v) => v.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for AllOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if let Some(s) = v.as_str() {
            return if s == "all" {
                Ok(AllOr::All)
            } else {
                Err(D::Error::custom(format!(
                    "expected \"all\" or a value, found the string \"{s}\""
                )))
            };
        }
        T::deserialize(v)
            .map(AllOr::Some)
            .map_err(|e| D::Error::custom(format!("expected \"all\" or {e}")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub concepts: Vec<Concept>,
    pub instruments: AllOr<Vec<u32>>,
    pub per_class: AllOr<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soundfont: Option<String>,
    /// Absent: SynTheory, generated. `{ kind = "folder", ... }`: the user's labelled audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataSource>,
    /// The spec's own concepts (`[data.define.<name>] classes = [...]`, docs/design.md §5), for
    /// folder datasets. Left out of the resolved spec when empty, so that the keys of specs
    /// without user concepts stay what they were.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub define: BTreeMap<String, ConceptDef>,
}

/// One user concept's definition: its classes, in the order reports list them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptDef {
    pub classes: Vec<String>,
}

impl DataSpec {
    /// The declared user concepts whose names are not built-in (a colliding name is a
    /// validation error, never a definition).
    pub fn user_concepts(&self) -> Vec<UserConcept> {
        user_concepts_of(&self.define)
    }
}

/// [`DataSpec::user_concepts`] of a `[data.define]` table (also read before the rest of the spec,
/// so that `data.concepts` and `[steer] targets` can name them).
pub fn user_concepts_of(define: &BTreeMap<String, ConceptDef>) -> Vec<UserConcept> {
    define
        .iter()
        .filter(|(name, _)| Concept::builtin(name).is_none())
        .map(|(name, d)| UserConcept {
            name: name.clone(),
            classes: d.classes.clone(),
        })
        .collect()
}

/// Where a dataset comes from other than the SynTheory generator (docs/design.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    pub kind: DataSourceKind,
    /// The folder of audio files; a relative path is relative to the spec file's directory.
    pub path: String,
    /// The labels CSV, relative to `path` unless absolute.
    #[serde(default = "default_labels")]
    pub labels: String,
    /// Every clip's length: shorter files are zero-padded, longer ones cut (or windowed).
    #[serde(default = "default_clip_seconds")]
    pub clip_seconds: f64,
    /// Absent: one clip from each file's start; else windows every `hop_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_seconds: Option<f64>,
}

fn default_labels() -> String {
    "labels.csv".into()
}

fn default_clip_seconds() -> f64 {
    crate::data::CLIP_SECS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSourceKind {
    Folder,
}

impl DataSource {
    /// (folder, labels CSV) as paths.
    pub fn paths(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let folder = std::path::PathBuf::from(&self.path);
        let labels = folder.join(&self.labels);
        (folder, labels)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    Mean,
    Last,
    Max,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSpec {
    pub pooling: Pooling,
    pub layers: AllOr<Vec<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Rfm,
    Linear,
    Mlp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub iterations: u32,
    pub trials: u32,
    /// Directions kept per (concept, class, layer): the top eigenvectors of M.
    pub directions_k: usize,
    /// The layer whose multiclass probe is the evaluation judge.
    pub judge_layer: JudgeLayer,
    /// Plan the `directions` nodes even when nothing steers (they are planned whenever `[steer]`
    /// is enabled; a probe-only spec otherwise skips them).
    pub directions: bool,
    /// Datasets the probes are also scored on (transfer, docs/design.md §5): folder sources.
    /// Left out of the resolved spec when empty, so that the report keys of specs without
    /// transfer stay what they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluate_on: Vec<DataSource>,
}

/// `"best"` (the layer with the best multiclass validation accuracy) or a layer index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeLayer {
    Best,
    Layer(usize),
}

impl Serialize for JudgeLayer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JudgeLayer::Best => s.serialize_str("best"),
            JudgeLayer::Layer(l) => s.serialize_u64(*l as u64),
        }
    }
}

impl<'de> Deserialize<'de> for JudgeLayer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if v.as_str() == Some("best") {
            return Ok(JudgeLayer::Best);
        }
        match v.as_u64() {
            Some(l) => Ok(JudgeLayer::Layer(l as usize)),
            None => Err(D::Error::custom(format!(
                "expected \"best\" or a layer index (a non-negative integer), found {v}"
            ))),
        }
    }
}

/// One steering target: one or more `concept:class` terms (several = multi-direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub terms: Vec<TargetTerm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTerm {
    pub concept: Concept,
    pub class: String,
}

impl Target {
    /// The concepts of the terms, in term order.
    pub fn concepts(&self) -> Vec<Concept> {
        self.terms.iter().map(|t| t.concept).collect()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{}:{}", t.concept, t.class)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in s.split('+') {
            let term = raw.trim();
            let Some((concept, class)) = term.split_once(':') else {
                return Err(format!(
                    "malformed target `{term}`: expected `concept:class` (e.g. `notes:C`), terms joined with ` + `"
                ));
            };
            let (concept, class) = (concept.trim(), class.trim());
            let Some(c) = Concept::parse(concept) else {
                return Err(super::error::unknown_name_message(
                    "concept",
                    concept,
                    &Concept::names_in_scope(),
                ));
            };
            if class.is_empty() {
                return Err(format!(
                    "malformed target `{term}`: the class after `{concept}:` is empty"
                ));
            }
            let classes = c.classes();
            if c == Concept::Tempos && !classes.iter().any(|k| k == class) {
                // 161 numeric classes: a range says more than a list or a nearest spelling.
                return Err(format!(
                    "tempos class `{class}` is not a BPM from {} to {} (whole numbers)",
                    classes[0],
                    classes[classes.len() - 1]
                ));
            }
            if !classes.iter().any(|k| k == class) {
                let names: Vec<&str> = classes.iter().map(String::as_str).collect();
                return Err(super::error::unknown_name_message(
                    &format!("{concept} class"),
                    class,
                    &names,
                ));
            }
            terms.push(TargetTerm {
                concept: c,
                class: class.to_string(),
            });
        }
        Ok(Target { terms })
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// How the steering weight is spread over layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum LayerStrategy {
    /// w_l = 1 for the k layers with the best probe validation score.
    TopK {
        k: usize,
    },
    /// w_l = w0 · ŝ_l^(1/κ).
    Exponential {
        w0: f64,
        kappa: f64,
    },
    All,
}

impl<'de> Deserialize<'de> for LayerStrategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written so that unknown keys name the strategy's own fields (serde's internally
        // tagged enums lose them), which the diagnostics turn into "did you mean".
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let strategy = match map.get("strategy") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(D::Error::custom("`strategy` must be a string")),
            None => {
                return Err(D::Error::custom(
                    "missing field `strategy` (top_k | exponential | all)",
                ));
            }
        };
        let fields: &'static [&'static str] = match strategy.as_str() {
            "top_k" => &["strategy", "k"],
            "exponential" => &["strategy", "w0", "kappa"],
            "all" => &["strategy"],
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &["top_k", "exponential", "all"],
                ));
            }
        };
        if let Some(bad) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(D::Error::unknown_field(bad, fields));
        }
        let field = |name: &str| -> Result<serde_json::Value, D::Error> {
            map.get(name).cloned().ok_or_else(|| {
                D::Error::custom(format!("missing field `{name}` for strategy `{strategy}`"))
            })
        };
        let num = |name: &str| -> Result<f64, D::Error> {
            let v = field(name)?;
            v.as_f64()
                .ok_or_else(|| D::Error::custom(format!("`{name}` must be a number, found {v}")))
        };
        Ok(match strategy.as_str() {
            "top_k" => {
                let v = field("k")?;
                let k = v.as_u64().ok_or_else(|| {
                    D::Error::custom(format!("`k` must be a non-negative integer, found {v}"))
                })?;
                LayerStrategy::TopK { k: k as usize }
            }
            "exponential" => LayerStrategy::Exponential {
                w0: num("w0")?,
                kappa: num("kappa")?,
            },
            _ => LayerStrategy::All,
        })
    }
}

/// The schedule φ(t) over generation steps, t normalised to [0, 1] for `piecewise`.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Constant,
    LinearUp,
    LinearDown,
    ExpDown,
    LogisticUp,
    Sine,
    /// Linear interpolation through `(t, value)` points, t in [0, 1] strictly increasing.
    Piecewise {
        points: Vec<[f64; 2]>,
    },
    /// φ(t) set during generation by a clamped PI controller from the target judge's score on the
    /// captured activations (`crate::steer::feedback`, docs/design.md §3).
    Feedback(FeedbackSchedule),
}

/// `{ kind = "feedback", setpoint = 0.8, gain = 0.5, max = 1.0 }`: at each step the controller
/// compares the judge's score for the target class on the running (or `window`-step) mean of the
/// steered activations at the judge layer with `setpoint` and moves φ by `gain` × the error
/// (+ `kp` × its change), clamped to [0, max], starting from `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackSchedule {
    pub setpoint: f64,
    /// Integral gain: φ changes by gain × (setpoint − score) per step.
    pub gain: f64,
    /// φ's upper clamp (its lower clamp is 0).
    pub max: f64,
    /// Proportional gain on the error's change (velocity form); 0 = a pure integral controller.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub kp: f64,
    /// φ at step 0, before any activation was seen.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub start: f64,
    /// Steps in the moving mean the judge scores (absent: every step so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
}

impl FeedbackSchedule {
    /// φ before the controller has seen anything: `start` within [0, max].
    pub fn initial(&self) -> f64 {
        self.start.clamp(0.0, self.max.max(0.0))
    }
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl Schedule {
    pub const NAMES: [&'static str; 8] = [
        "constant",
        "linear_up",
        "linear_down",
        "exp_down",
        "logistic_up",
        "sine",
        "piecewise",
        "feedback",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::LinearUp => "linear_up",
            Schedule::LinearDown => "linear_down",
            Schedule::ExpDown => "exp_down",
            Schedule::LogisticUp => "logistic_up",
            Schedule::Sine => "sine",
            Schedule::Piecewise { .. } => "piecewise",
            Schedule::Feedback(_) => "feedback",
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Schedule::Piecewise { points } => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "piecewise")?;
                m.serialize_entry("points", points)?;
                m.end()
            }
            Schedule::Feedback(f) => {
                let mut v = serde_json::to_value(f).map_err(serde::ser::Error::custom)?;
                if let Some(m) = v.as_object_mut() {
                    m.insert("kind".into(), "feedback".into());
                }
                v.serialize(s)
            }
            other => s.serialize_str(other.name()),
        }
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let simple = |name: &str| -> Result<Schedule, D::Error> {
            Ok(match name {
                "constant" => Schedule::Constant,
                "linear_up" => Schedule::LinearUp,
                "linear_down" => Schedule::LinearDown,
                "exp_down" => Schedule::ExpDown,
                "logistic_up" => Schedule::LogisticUp,
                "sine" => Schedule::Sine,
                "piecewise" => {
                    return Err(D::Error::custom(
                        "`piecewise` needs points: write { kind = \"piecewise\", points = [[0.0, 0.0], [1.0, 1.0]] }",
                    ));
                }
                "feedback" => {
                    return Err(D::Error::custom(
                        "`feedback` needs a setpoint: write { kind = \"feedback\", setpoint = 0.8, gain = 0.5, max = 1.0 }",
                    ));
                }
                other => return Err(D::Error::unknown_variant(other, &Schedule::NAMES)),
            })
        };
        match v {
            serde_json::Value::String(s) => simple(&s),
            serde_json::Value::Object(mut map)
                if map.get("kind").and_then(|k| k.as_str()) == Some("feedback") =>
            {
                map.remove("kind");
                serde_json::from_value(serde_json::Value::Object(map))
                    .map(Schedule::Feedback)
                    .map_err(|e| D::Error::custom(format!("feedback schedule: {e}")))
            }
            serde_json::Value::Object(map) => {
                if let Some(bad) = map
                    .keys()
                    .find(|k| !["kind", "points"].contains(&k.as_str()))
                {
                    return Err(D::Error::unknown_field(bad, &["kind", "points"]));
                }
                let kind = map.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
                    D::Error::custom("a schedule table needs `kind = \"piecewise\"`")
                })?;
                if kind != "piecewise" {
                    if map.contains_key("points") {
                        return Err(D::Error::custom(format!(
                            "only `piecewise` takes points, not `{kind}`"
                        )));
                    }
                    return simple(kind);
                }
                let points = map
                    .get("points")
                    .cloned()
                    .ok_or_else(|| D::Error::custom("missing field `points`"))?;
                let points: Vec<[f64; 2]> = serde_json::from_value(points).map_err(|e| {
                    D::Error::custom(format!(
                        "`points` must be a list of [t, value] pairs of numbers: {e}"
                    ))
                })?;
                Ok(Schedule::Piecewise { points })
            }
            other => Err(D::Error::custom(format!(
                "a schedule is a name or a table, found {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMode {
    PerStep,
    PerLayer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtaMode {
    Absolute,
    NormRelative,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteerSpec {
    /// `false`: plan no generations or evaluations (probe-only specs; the pipeline sections'
    /// defaults come as a group, so steering is otherwise always planned).
    pub enabled: bool,
    pub targets: Vec<Target>,
    pub layers: LayerStrategy,
    pub schedule: Vec<Schedule>,
    pub gate: f64,
    pub gate_mode: GateMode,
    pub eta: Vec<f64>,
    pub eta_mode: EtaMode,
    pub prompts: Vec<String>,
    pub seconds: f64,
    pub samples: u32,
    pub cfg: f64,
    /// exp_down: φ(t) = r^t with r = exp_down_ratio^(exp_down_steps / T) (the authors' 0.998 at 1500).
    pub exp_down_ratio: f64,
    pub exp_down_steps: f64,
    /// logistic_up: the logistic's width as a fraction of T (the authors' 2/15).
    pub logistic_width: f64,
    /// The most generations run as one decoder batch (an executor setting: never in a key).
    pub batch: BatchSize,
    /// An experiment whose published searches (`reports/<name>/search.json`) give each target and
    /// schedule its operating point (η, gate, κ) instead of the η grid (docs/design.md §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_search: Option<String>,
}

/// `[steer] batch`: a number of rows (≥ 1) or `"auto"` (chosen from the device at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Auto,
    Rows(u64),
}

impl Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Auto => s.serialize_str("auto"),
            BatchSize::Rows(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = BatchSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer >= 1 or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<BatchSize, E> {
                u64::try_from(v)
                    .map(BatchSize::Rows)
                    .map_err(|_| E::custom(format!("batch must be >= 1, found {v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<BatchSize, E> {
                Ok(BatchSize::Rows(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BatchSize, E> {
                match v {
                    "auto" => Ok(BatchSize::Auto),
                    _ => Err(E::custom(format!(
                        "batch must be an integer >= 1 or \"auto\", found {v:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ProbeAccuracy,
    PitchHit,
    ChordHit,
    TempoError,
    Fd,
    Mmd,
    Clap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSpec {
    pub metrics: Vec<Metric>,
    /// The CLAP snapshot for the `clap` metric: `auto` (laion/larger_clap_music from the local
    /// Hugging Face cache), a hub id, or a `save_pretrained` directory.
    pub clap_model: String,
    /// A folder source whose clips the judge probes are fitted on (docs/design.md §6), instead of
    /// `[data]`'s. Left out of the resolved spec when absent, so existing keys stay what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_on: Option<DataSource>,
}

/// `[search]`: a closed-loop search per steering target for the settings that maximise an
/// evaluation metric under constraints (`crate::search`, docs/design.md §10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// A `metrics.json` entry: a metric of `[evaluate] metrics`, `probe_accuracy_captured`, or a
    /// per-term entry such as `probe_accuracy:notes:C`.
    pub objective: String,
    pub maximise: bool,
    /// `<metric> <= | >= <bound>`; the bound is linear in `baseline` (the metric at η = 0).
    pub constraints: Vec<String>,
    /// The searched settings and their closed ranges; the others stay as `[steer]` sets them.
    pub variables: SearchVariables,
    pub strategy: SearchStrategy,
    /// Evaluation nodes per target and schedule (the η = 0 baseline not counted).
    pub budget: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchVariables {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<[f64; 2]>,
    /// The gate's Bernoulli p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<[f64; 2]>,
    /// κ of exponential layer weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kappa: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchStrategy {
    /// η only, assuming the constraints hold below some η and fail above it.
    Bisect,
    /// Successive halving: many settings on few samples, the best half on twice as many.
    Halving,
}

/// `[report]`: how the published report is written (docs/design.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    pub audio: ReportAudio,
}

/// `[report] audio`: how each clip is written under `assets/audio/`. The `Default` is the value
/// `defaults.toml` documents (checked by a test), used when a spec has no `[report]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportAudio {
    /// Ogg Vorbis at a fixed quality: about a tenth of 16-bit WAV.
    #[default]
    Vorbis,
    /// 16-bit PCM WAV: lossless, for players without Vorbis.
    Wav,
}

/// The built-in toy node kinds (see `crate::stages::toy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToySpec {
    pub values: Vec<i64>,
    pub offset: i64,
    pub sleep_ms: u64,
    pub fail_on: Vec<i64>,
    pub nan_on: Vec<i64>,
    pub panic_on: Vec<i64>,
    pub sum: bool,
    /// Rounds of the live plan: each plans one more square from the previous round's result.
    pub rounds: u32,
}
