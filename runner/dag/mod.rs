//! The DAG: node kinds, planning, cache keys and the content-addressed store.
//!
//! # Extension points (how a stage plugs in without touching the engine)
//! 1. Implement [`NodeKind`] for each kind of node the stage computes: a name, a version constant
//!    (bump it when the output of the same params changes) and `run`, a pure function of
//!    (params, input outputs) that writes files into `ctx.out_dir`.
//! 2. Implement [`Stage`]: `plan` reads one [`ResolvedSpec`] (one sweep point) and adds nodes with
//!    [`PlanBuilder::add`]; inputs are [`NodeRef`]s returned by earlier `add`s. A node another
//!    stage needs is published with [`PlanBuilder::export`] under a typed [`Export`] key and taken
//!    with [`PlanBuilder::import`]: stages are wired by typed handles, never by looking ids up.
//!    Every node carries a structured [`Label`]; its id is for people and logs, and nothing parses
//!    it back.
//! 3. Register both in `crate::registry::default_registry` (one line each).
//!
//! The engine owns keys, the store, locks, failure records, events and parallelism.

pub mod key;
pub mod status;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::{LoadedSpec, ResolvedSpec};

/// The error a node returns; its `source()` chain is recorded in the failure record.
pub type NodeError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A kind of node: a pure function of (params, inputs) writing files to its output dir.
pub trait NodeKind: Send + Sync {
    /// Unique name, e.g. `toy_square`.
    fn name(&self) -> &'static str;
    /// Bump when the same params and inputs would now give different outputs.
    fn version(&self) -> u32;
    /// Computes the node's outputs into `ctx.out_dir`.
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError>;
    /// What one node of this kind occupies while it runs; the executors never run more than the
    /// machine (local) or the allocation (Slurm) holds.
    fn resources(&self, _node: &PlannedNode) -> Resources {
        Resources::default()
    }
    /// Nodes with the same key that are ready together may run as one batch ([`NodeKind::run_batch`]),
    /// e.g. generations that share a prompt, length and model in one forward pass. `None`: alone.
    fn batch_key(&self, _node: &PlannedNode) -> Option<String> {
        None
    }
    /// The most nodes one batch may hold.
    fn batch_limit(&self, _node: &PlannedNode) -> usize {
        1
    }
    /// Runs a batch of nodes of this kind (one result each, in order); the default runs them one
    /// after the other. A batched implementation must give each node exactly the outputs `run`
    /// would (keys and caching do not know about batches).
    fn run_batch(&self, ctxs: &mut [NodeCtx<'_>]) -> Vec<Result<(), NodeError>> {
        ctxs.iter_mut().map(|c| self.run(c)).collect()
    }
}

/// What a running node occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Every core (candle's and rayon's thread pools span the machine) or one.
    pub cpus: Cpus,
    /// It computes on a GPU (then its CPU share is one core).
    pub gpu: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    One,
    All,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: Cpus::One,
            gpu: false,
        }
    }
}

impl Resources {
    /// A node that uses every core, or a GPU when its device hint names one.
    pub fn heavy(device: Option<&str>) -> Resources {
        let gpu = match device.map(|d| d.trim().to_ascii_lowercase()) {
            Some(d) if d == "auto" => {
                crate::model::musicgen::auto_device_here()
                    != crate::model::musicgen::AutoDevice::Cpu
            }
            Some(d) => d.starts_with("cuda") || d.starts_with("metal"),
            None => false,
        };
        Resources {
            cpus: if gpu { Cpus::One } else { Cpus::All },
            gpu,
        }
    }
}

/// A stage's planning hook: adds the nodes one sweep point needs.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn plan(&self, spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError>;
    /// The live plan: called whenever every node planned so far has finished (or was found in the
    /// store), per sweep point, so that a stage can plan more nodes from finished, typed results
    /// (read through `results`) — a next round of a search, classes known only after reading a
    /// dataset. It must be deterministic in (spec, results). Return [`Round::Waiting`] with what
    /// it waits for while later rounds may follow; `rfmx plan` shows it.
    fn plan_round(
        &self,
        _spec: &ResolvedSpec,
        _plan: &mut PlanBuilder<'_>,
        _results: &dyn Results,
    ) -> Result<Round, PlanError> {
        Ok(Round::Done)
    }
    /// Called once every stage is done planning rounds (for most specs: right after the sweep
    /// points were planned), for nodes that gather across points (a report): find earlier nodes
    /// with [`PlanBuilder::nodes_of_kind`].
    fn plan_final(&self, _spec: &LoadedSpec, _plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        Ok(())
    }
    /// A text table printed after `rfmx run` (e.g. a Table-1-style probe summary), built from the
    /// finished nodes' outputs; `None` when the stage has nothing to say for this plan.
    fn summary(&self, _plan: &Plan, _store: &store::Store) -> Option<String> {
        None
    }
}

/// Whether a stage's live planning is finished for a sweep point.
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    Done,
    /// More nodes may follow once planned nodes finish: what it waits for, e.g. "round 3 of ≤ 6;
    /// later rounds planned when round 3 finishes".
    Waiting(String),
}

/// Finished results as a planning stage sees them: the output dir of a node that is in the store.
pub trait Results {
    fn output(&self, node: &PlannedNode) -> Option<PathBuf>;
}

/// Results read from a store (entries checked from their manifests).
pub struct StoreResults<'s>(pub &'s store::Store);

impl Results for StoreResults<'_> {
    fn output(&self, node: &PlannedNode) -> Option<PathBuf> {
        matches!(self.0.check(&node.key), store::EntryState::Valid(_))
            .then(|| self.0.out_dir(&node.key))
    }
}

/// No results (planning without a store).
pub struct NoResults;

impl Results for NoResults {
    fn output(&self, _node: &PlannedNode) -> Option<PathBuf> {
        None
    }
}

/// One input of a running node: the output directory of a finished node.
#[derive(Debug, Clone)]
pub struct NodeInput {
    pub name: String,
    /// The group the input was wired in with [`NodeSpec::input_in`] (None for a plain input).
    pub role: Option<String>,
    pub id: String,
    pub key: String,
    /// The input node's kind and label (what it is, without parsing its id).
    pub kind: String,
    pub label: Label,
    pub dir: PathBuf,
}

/// What a node is about, in structured form: shown by `plan`/`explain`, used by the report to
/// place results, persisted with the plan. Not part of the cache key (the params are) and never
/// recovered from an id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Label {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concept: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooling: Option<String>,
    /// The probe kind (rfm | linear | mlp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// A steering target (`concept:class`, `a:x + b:y`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The schedule's label (`constant`, `piecewise#1`, `none` for unsteered points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    /// Index of the prompt in `[steer] prompts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// A toy node's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// The search (`<target>|<schedule>`) that planned the node first (a search trial, not a
    /// grid point: the report shows it with its search).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// The sweep assignment of the point that planned the node, kept only when the node differs
    /// across points (a node shared by every point has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<(String, serde_json::Value)>,
    /// The planning round that added it (0 = the initial plan; later rounds are planned from
    /// finished results).
    #[serde(skip_serializing_if = "is_zero")]
    pub round: u32,
}

fn is_zero(r: &u32) -> bool {
    *r == 0
}

impl Label {
    /// `key=value,...` of the sweep assignment (empty without one).
    pub fn sweep_text(&self) -> String {
        self.sweep
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::spec::sweep::value_text(v)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A typed name under which a stage publishes nodes for later stages of the same sweep point (e.g.
/// the probe stage's directions per (concept, class)); the marker type lives with its producer.
pub trait Export: 'static {
    type Key: Serialize + serde::de::DeserializeOwned;
}

/// What a running node sees.
pub struct NodeCtx<'a> {
    pub id: &'a str,
    pub key: &'a str,
    /// The resolved params (hashed into the key).
    pub params: &'a serde_json::Value,
    /// Execution hints (not hashed: sleep times, devices, thread counts).
    pub hints: &'a serde_json::Value,
    pub inputs: &'a [NodeInput],
    /// A fresh temp dir inside the store; renamed into place when `run` succeeds.
    pub out_dir: &'a Path,
    pub log_path: &'a Path,
    pub(crate) log: &'a mut std::fs::File,
    pub(crate) progress: &'a (dyn Fn(u64, u64, &str) + Sync),
}

impl NodeCtx<'_> {
    /// The params deserialised into the kind's own type.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, NodeError> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| format!("bad params for {}: {e}", self.id).into())
    }

    /// The output dir of the input called `name`.
    pub fn input(&self, name: &str) -> Result<&Path, NodeError> {
        self.inputs
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.dir.as_path())
            .ok_or_else(|| format!("node {} has no input `{name}`", self.id).into())
    }

    /// The inputs wired in under `role` ([`NodeSpec::input_in`]), in planning order.
    pub fn inputs_in<'s>(&'s self, role: &'s str) -> impl Iterator<Item = &'s NodeInput> + 's {
        self.inputs
            .iter()
            .filter(move |i| i.role.as_deref() == Some(role))
    }

    /// Appends a line to the node's log file.
    pub fn log(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
    }

    /// Reports progress (shown as a bar; recorded in the run log).
    pub fn progress(&self, done: u64, total: u64, message: &str) {
        (self.progress)(done, total, message);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("stage `{stage}` uses node kind `{kind}`, which is not registered")]
    UnknownKind { stage: String, kind: String },
    #[error("node id `{id}` is used for two different nodes in one sweep point")]
    DuplicateId { id: String },
    #[error("stage `{stage}`: {message}")]
    Stage { stage: String, message: String },
}

/// Node kinds and stages, in planning order.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn NodeKind>>,
    stages: Vec<Arc<dyn Stage>>,
}

impl Registry {
    pub fn kind(mut self, k: impl NodeKind + 'static) -> Self {
        self.kinds.insert(k.name(), Arc::new(k));
        self
    }
    pub fn stage(mut self, s: impl Stage + 'static) -> Self {
        self.stages.push(Arc::new(s));
        self
    }
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn NodeKind>> {
        self.kinds.get(kind)
    }
    pub fn stages(&self) -> &[Arc<dyn Stage>] {
        &self.stages
    }

    pub fn kind_names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

/// A reference to a node added to the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeRef(usize);

/// One input as a stage wires it: its name (hashed into the key), optional role, and the node.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub role: Option<String>,
    pub node: NodeRef,
}

/// A node as a stage describes it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub kind: String,
    pub label: Label,
    pub params: serde_json::Value,
    pub hints: serde_json::Value,
    pub inputs: Vec<InputSpec>,
    pub fingerprint: Option<String>,
    pub externals: Vec<crate::external::External>,
}

impl NodeSpec {
    /// `id` should be readable and stable, e.g. `toy_square[x=3]`.
    pub fn new(id: impl Into<String>, kind: &str, params: serde_json::Value) -> Self {
        NodeSpec {
            id: id.into(),
            kind: kind.into(),
            label: Label::default(),
            params,
            hints: serde_json::Value::Null,
            inputs: Vec::new(),
            fingerprint: None,
            externals: Vec::new(),
        }
    }
    /// An input from outside the store (its fingerprint must be in the params or `fingerprint`),
    /// checked again when the node runs.
    pub fn external(mut self, e: Option<crate::external::External>) -> Self {
        self.externals.extend(e);
        self
    }
    pub fn label(mut self, label: Label) -> Self {
        self.label = label;
        self
    }
    pub fn input(mut self, name: impl Into<String>, node: NodeRef) -> Self {
        self.inputs.push(InputSpec {
            name: name.into(),
            role: None,
            node,
        });
        self
    }
    /// An input in a group (`role`), named `<role>:<index>` in the key; the node reads the group
    /// with [`NodeCtx::inputs_in`] and each input's label, never by parsing names.
    pub fn input_in(mut self, role: &str, index: impl std::fmt::Display, node: NodeRef) -> Self {
        self.inputs.push(InputSpec {
            name: format!("{role}:{index}"),
            role: Some(role.to_string()),
            node,
        });
        self
    }
    pub fn hints(mut self, hints: serde_json::Value) -> Self {
        self.hints = hints;
        self
    }
    /// A model fingerprint (config + weight hashes), hashed into the key.
    pub fn fingerprint(mut self, fp: impl Into<String>) -> Self {
        self.fingerprint = Some(fp.into());
        self
    }
}

/// A planned node: everything needed to run it without the spec (persisted under `nodes/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedNode {
    pub id: String,
    pub key: String,
    pub kind: String,
    #[serde(default)]
    pub label: Label,
    pub version: u32,
    pub params: serde_json::Value,
    #[serde(default)]
    pub hints: serde_json::Value,
    pub inputs: Vec<InputRef>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Inputs from outside the store, checked again before the node runs (not hashed: their
    /// fingerprints are, through the params or `fingerprint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub externals: Vec<crate::external::External>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub id: String,
    pub key: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub label: Label,
}

/// The planned DAG of one spec (all sweep points), nodes in a topological order (a node's inputs
/// come before it). It grows while it runs (see [`Stage::plan_round`]); a node, once planned, never
/// changes its id, key or inputs.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub nodes: Vec<PlannedNode>,
    inputs: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    by_key: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    /// Per sweep point: (export namespace, canonical key JSON) -> node.
    exports: Vec<BTreeMap<(&'static str, String), usize>>,
    /// What stages still wait for (empty when planning is complete).
    pub waiting: Vec<String>,
    /// Whether the final (cross-point) nodes have been planned.
    pub finalised: bool,
    /// The last planning round (0 = only the initial plan).
    pub round: u32,
}

impl Plan {
    /// Indices of the nodes that take node `i` as input.
    pub fn dependents(&self, i: usize) -> Vec<usize> {
        self.dependents[i].clone()
    }

    pub fn inputs_of(&self, i: usize) -> Vec<usize> {
        self.inputs[i].clone()
    }

    /// Finds a node by exact id, else by unique key prefix (for people at the command line).
    pub fn find(&self, query: &str) -> Option<usize> {
        self.by_id.get(query).copied().or_else(|| {
            let m: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].key.starts_with(query))
                .collect();
            (m.len() == 1 && query.len() >= 4).then(|| m[0])
        })
    }

    /// Whether planning is complete (no stage waits for results, the final nodes are planned).
    pub fn complete(&self) -> bool {
        self.waiting.is_empty() && self.finalised
    }
}

/// Adds nodes to a [`Plan`] for one stage at one sweep point; nodes with equal keys are shared.
pub struct PlanBuilder<'p> {
    plan: &'p mut Plan,
    registry: &'p Registry,
    /// Sweep point index (None for the final, cross-point stage hooks).
    point: Option<usize>,
    sweep: Vec<(String, serde_json::Value)>,
    stage: String,
    round: u32,
}

impl PlanBuilder<'_> {
    /// Adds a node (or returns the existing node with the same key).
    pub fn add(&mut self, node: NodeSpec) -> Result<NodeRef, PlanError> {
        let kind = self
            .registry
            .get(&node.kind)
            .ok_or_else(|| PlanError::UnknownKind {
                stage: self.stage.clone(),
                kind: node.kind.clone(),
            })?;
        let inputs: Vec<InputRef> = node
            .inputs
            .iter()
            .map(|i| {
                let n = &self.plan.nodes[i.node.0];
                InputRef {
                    name: i.name.clone(),
                    role: i.role.clone(),
                    id: n.id.clone(),
                    key: n.key.clone(),
                    kind: n.kind.clone(),
                    label: n.label.clone(),
                }
            })
            .collect();
        let input_keys: Vec<(String, String)> = inputs
            .iter()
            .map(|i| (i.name.clone(), i.key.clone()))
            .collect();
        let key = key::cache_key(
            &node.kind,
            kind.version(),
            &node.params,
            &input_keys,
            node.fingerprint.as_deref(),
        );
        if let Some(&i) = self.plan.by_key.get(&key) {
            return Ok(NodeRef(i));
        }
        let mut label = node.label;
        label.sweep = self.sweep.clone();
        label.round = self.round;
        let mut id = node.id;
        // Ids of the initial plan are settled once it is complete (`settle_ids`); a node added
        // later whose id is taken gets its point's label, else its key prefix: no planned id ever
        // changes.
        if (self.round > 0 || self.point.is_none()) && self.plan.by_id.contains_key(&id) {
            let text = label.sweep_text();
            if !text.is_empty() {
                id = format!("{id}{{{text}}}");
            }
            if self.plan.by_id.contains_key(&id) {
                id = format!("{id}#{}", &key[..8]);
            }
            if self.plan.by_id.contains_key(&id) {
                return Err(PlanError::DuplicateId { id });
            }
        } else if self.round > 0 {
            label.sweep.clear();
        }
        let i = self.plan.nodes.len();
        self.plan.nodes.push(PlannedNode {
            id: id.clone(),
            key: key.clone(),
            kind: node.kind,
            label,
            version: kind.version(),
            params: node.params,
            hints: node.hints,
            inputs,
            fingerprint: node.fingerprint,
            externals: node.externals,
        });
        let deps: Vec<usize> = node.inputs.iter().map(|i| i.node.0).collect();
        for &d in &deps {
            self.plan.dependents[d].push(i);
        }
        self.plan.inputs.push(deps);
        self.plan.dependents.push(Vec::new());
        self.plan.by_key.insert(key, i);
        self.plan.by_id.entry(id).or_insert(i);
        Ok(NodeRef(i))
    }

    /// Publishes a node under a typed key for later stages of this sweep point.
    pub fn export<E: Export>(&mut self, key: &E::Key, node: NodeRef) -> Result<(), PlanError> {
        let k = self.export_key::<E>(key)?;
        let point = self.point.ok_or_else(|| PlanError::Stage {
            stage: self.stage.clone(),
            message: "exports belong to a sweep point".into(),
        })?;
        self.plan.exports[point].insert(k, node.0);
        Ok(())
    }

    /// The node a stage exported under `key` at this sweep point.
    pub fn import<E: Export>(&self, key: &E::Key) -> Option<NodeRef> {
        let k = self.export_key::<E>(key).ok()?;
        let point = self.point?;
        self.plan.exports[point].get(&k).map(|&i| NodeRef(i))
    }

    /// Every node exported as `E` at this sweep point, with its key, in key order.
    pub fn imports<E: Export>(&self) -> Vec<(E::Key, NodeRef)> {
        let Some(point) = self.point else {
            return Vec::new();
        };
        let ns = std::any::type_name::<E>();
        self.plan.exports[point]
            .iter()
            .filter(|((n, _), _)| *n == ns)
            .filter_map(|((_, k), &i)| Some((serde_json::from_str(k).ok()?, NodeRef(i))))
            .collect()
    }

    fn export_key<E: Export>(&self, key: &E::Key) -> Result<(&'static str, String), PlanError> {
        let v = serde_json::to_value(key).map_err(|e| PlanError::Stage {
            stage: self.stage.clone(),
            message: format!("export key: {e}"),
        })?;
        Ok((std::any::type_name::<E>(), key::canonical_json(&v)))
    }

    /// Every node of `kind` planned so far (all sweep points), in planning order.
    pub fn nodes_of_kind(&self, kind: &str) -> Vec<(NodeRef, &PlannedNode)> {
        self.plan
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind == kind)
            .map(|(i, n)| (NodeRef(i), n))
            .collect()
    }

    pub fn node(&self, r: NodeRef) -> &PlannedNode {
        &self.plan.nodes[r.0]
    }

    /// The sweep assignment of the point being planned (empty without a sweep).
    pub fn sweep(&self) -> &[(String, serde_json::Value)] {
        &self.sweep
    }
}

/// Ids of the initial plan, settled once it is complete. Nodes whose ids coincide because they are
/// the same slot (same kind and id) at several sweep points get their point's sweep label, as
/// `id{key=value,...}`; a node whose id coincides with a different slot's (an unrelated node) gets
/// `#<key prefix>` and leaves the other's id alone. A node's label keeps its sweep assignment only
/// when its id needed it. No id depends on nodes of other slots.
fn settle_ids(plan: &mut Plan) -> Result<(), PlanError> {
    // Nodes of one kind under one id are one slot at several points; another kind is unrelated.
    let slot = |n: &PlannedNode| n.kind.clone();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        groups.entry(n.id.clone()).or_default().push(i);
    }
    let mut suffix: Vec<Option<String>> = vec![None; plan.nodes.len()];
    for members in groups.values().filter(|m| m.len() > 1) {
        let first = slot(&plan.nodes[members[0]]);
        let same: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| slot(&plan.nodes[i]) == first)
            .collect();
        for &i in members {
            let n = &plan.nodes[i];
            suffix[i] = if !same.contains(&i) {
                Some(format!("#{}", &n.key[..8]))
            } else if same.len() > 1 && !n.label.sweep.is_empty() {
                Some(format!("{{{}}}", n.label.sweep_text()))
            } else {
                None
            };
        }
    }
    for (n, s) in plan.nodes.iter_mut().zip(suffix) {
        match s {
            Some(s) if s.starts_with('{') => n.id.push_str(&s),
            Some(s) => {
                n.id.push_str(&s);
                n.label.sweep.clear();
            }
            None => n.label.sweep.clear(),
        }
    }
    plan.by_id.clear();
    for (i, n) in plan.nodes.iter().enumerate() {
        if plan.by_id.insert(n.id.clone(), i).is_some() {
            return Err(PlanError::DuplicateId { id: n.id.clone() });
        }
    }
    refresh_input_refs(plan, 0);
    Ok(())
}

/// Input refs carry their input node's id and label: refresh them from node `from` on.
fn refresh_input_refs(plan: &mut Plan, from: usize) {
    for i in from..plan.nodes.len() {
        for (k, &d) in plan.inputs[i].clone().iter().enumerate() {
            let (id, label) = (plan.nodes[d].id.clone(), plan.nodes[d].label.clone());
            let input = &mut plan.nodes[i].inputs[k];
            input.id = id;
            input.label = label;
        }
    }
}

fn builder<'p>(
    plan: &'p mut Plan,
    registry: &'p Registry,
    spec: &LoadedSpec,
    point: Option<usize>,
    stage: &dyn Stage,
) -> PlanBuilder<'p> {
    let sweep = point
        .map(|p| spec.points[p].point.clone())
        .unwrap_or_default();
    let round = plan.round;
    PlanBuilder {
        plan,
        registry,
        point,
        sweep,
        stage: stage.name().to_string(),
        round,
    }
}

/// Plans every sweep point with every stage, then as many rounds as the finished `results`
/// allow, then (when no stage waits) the final cross-point nodes.
pub fn build_plan(
    spec: &LoadedSpec,
    registry: &Registry,
    results: &dyn Results,
) -> Result<Plan, PlanError> {
    let mut plan = Plan {
        exports: vec![BTreeMap::new(); spec.points.len()],
        ..Plan::default()
    };
    for p in 0..spec.points.len() {
        for stage in &registry.stages {
            stage.plan(
                &spec.points[p],
                &mut builder(&mut plan, registry, spec, Some(p), &**stage),
            )?;
        }
    }
    settle_ids(&mut plan)?;
    while !extend_plan(&mut plan, spec, registry, results)?.is_empty() {}
    Ok(plan)
}

/// One step of the live plan: asks every stage for the nodes it can plan from `results` (a
/// round), or, when none waits any more, plans the final nodes. Returns the new nodes' indices
/// (none: nothing more can be planned until more results exist, or planning is complete).
pub fn extend_plan(
    plan: &mut Plan,
    spec: &LoadedSpec,
    registry: &Registry,
    results: &dyn Results,
) -> Result<Vec<usize>, PlanError> {
    if plan.complete() {
        return Ok(Vec::new());
    }
    let before = plan.nodes.len();
    plan.round += 1;
    let mut waiting = Vec::new();
    for p in 0..spec.points.len() {
        for stage in &registry.stages {
            let mut b = builder(plan, registry, spec, Some(p), &**stage);
            if let Round::Waiting(what) = stage.plan_round(&spec.points[p], &mut b, results)? {
                let point = &spec.points[p].label;
                waiting.push(if point.is_empty() {
                    format!("{}: {what}", stage.name())
                } else {
                    format!("{} {{{point}}}: {what}", stage.name())
                });
            }
        }
    }
    plan.waiting = waiting;
    if plan.nodes.len() == before {
        plan.round -= 1;
        if plan.waiting.is_empty() && !plan.finalised {
            for stage in &registry.stages {
                stage.plan_final(spec, &mut builder(plan, registry, spec, None, &**stage))?;
            }
            plan.finalised = true;
        }
    }
    refresh_input_refs(plan, before);
    Ok((before..plan.nodes.len()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let spec = crate::spec::load_str("t.toml", "t", text, &[], &[]).unwrap();
        build_plan(&spec, &crate::registry::default_registry(), &NoResults).unwrap()
    }

    fn ids(p: &Plan) -> Vec<&str> {
        p.nodes.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn nodes_equal_across_sweep_points_are_shared_and_others_get_the_point_label() {
        // sleep_ms is an execution hint: same keys at both points, one set of nodes.
        let p = plan("[toy]\nvalues = [1, 2]\n[sweep]\n\"toy.sleep_ms\" = [0, 5]\n");
        assert_eq!(
            ids(&p),
            vec!["toy_square[x=1]", "toy_square[x=2]", "toy_sum"]
        );
        // offset changes the params: one node per point, labelled.
        let p = plan("[toy]\nvalues = [1]\nsum = false\n[sweep]\n\"toy.offset\" = [0, 5]\n");
        assert_eq!(
            ids(&p),
            vec![
                "toy_square[x=1]{toy.offset=0}",
                "toy_square[x=1]{toy.offset=5}"
            ]
        );
        // Only the value that differs is repeated; x=1 with values [1] and [1, 2] is one node.
        let p = plan("[toy]\nvalues = [1]\n[sweep]\n\"toy.values\" = [[1], [1, 2]]\n");
        assert_eq!(
            ids(&p),
            vec![
                "toy_square[x=1]",
                "toy_sum{toy.values=[1]}",
                "toy_square[x=2]",
                "toy_sum{toy.values=[1,2]}"
            ]
        );
        let mut inputs = p.inputs_of(3);
        inputs.sort();
        assert_eq!(inputs, vec![0, 2]);
        let mut deps = p.dependents(0);
        deps.sort();
        assert_eq!(deps, vec![1, 3]);
        assert_eq!(p.find(&p.nodes[2].key[..8]), Some(2));
    }

    /// Plants, in another stage, a node whose id collides with an existing one.
    struct Planted;
    impl Stage for Planted {
        fn name(&self) -> &'static str {
            "planted"
        }
        fn plan(&self, _spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
            plan.add(NodeSpec::new(
                "toy_sum",
                "toy_square",
                serde_json::json!({ "x": 99, "offset": 0 }),
            ))?;
            Ok(())
        }
    }

    #[test]
    fn an_unrelated_node_with_a_colliding_id_renames_and_rewires_nothing_else() {
        let text = "[toy]\nvalues = [1, 2]\n[sweep]\n\"toy.offset\" = [0, 5]\n";
        let spec = crate::spec::load_str("t.toml", "t", text, &[], &[]).unwrap();
        let base = build_plan(&spec, &crate::registry::default_registry(), &NoResults).unwrap();
        let planted = crate::registry::default_registry().stage(Planted);
        let with = build_plan(&spec, &planted, &NoResults).unwrap();
        assert_eq!(with.nodes.len(), base.nodes.len() + 1);
        for n in &base.nodes {
            let m = &with.nodes[with.find(&n.id).unwrap()];
            assert_eq!((&m.key, &m.inputs), (&n.key, &n.inputs), "{}", n.id);
        }
        let p = with
            .nodes
            .iter()
            .find(|n| n.kind == "toy_square" && n.params["x"] == 99);
        let p = p.unwrap();
        assert_eq!(p.id, format!("toy_sum#{}", &p.key[..8]));
        // The sums of the two points are the same slot: they keep their sweep labels.
        assert!(with.find("toy_sum{toy.offset=0}").is_some());
        assert!(with.find("toy_sum{toy.offset=5}").is_some());
    }

    #[test]
    fn stages_without_their_section_plan_nothing() {
        assert!(plan("[experiment]\nseed = 1\n").nodes.is_empty());
    }
}
