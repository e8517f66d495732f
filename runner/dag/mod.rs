//! The DAG: node kinds, planning, cache keys and the content-addressed store.
//!
//! # Extension points (how a stage plugs in without touching the engine)
//! 1. Implement [`NodeKind`] for each kind of node the stage computes: a name, a version constant
//!    (bump it when the output of the same params changes) and `run`, a pure function of
//!    (params, input outputs) that writes files into `ctx.out_dir`.
//! 2. Implement [`Stage`]: `plan` reads one [`ResolvedSpec`] (one sweep point) and adds nodes with
//!    [`PlanBuilder::add`]; inputs are [`NodeRef`]s returned by earlier `add`s (possibly by
//!    earlier stages: find them with [`PlanBuilder::find`]).
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

use petgraph::graph::{DiGraph, NodeIndex};
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
}

/// A stage's planning hook: adds the nodes one sweep point needs.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn plan(&self, spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError>;
    /// Called once after every sweep point was planned, for nodes that gather across points
    /// (a report, a cross-point summary): find earlier nodes with [`PlanBuilder::nodes_of_kind`].
    fn plan_final(&self, _spec: &LoadedSpec, _plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        Ok(())
    }
    /// A text table printed after `rfmx run` (e.g. a Table-1-style probe summary), built from the
    /// finished nodes' outputs; `None` when the stage has nothing to say for this plan.
    fn summary(&self, _plan: &Plan, _store: &store::Store) -> Option<String> {
        None
    }
}

/// One input of a running node: the output directory of a finished node.
#[derive(Debug, Clone)]
pub struct NodeInput {
    pub name: String,
    pub id: String,
    pub key: String,
    pub dir: PathBuf,
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

/// A node as a stage describes it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub hints: serde_json::Value,
    pub inputs: Vec<(String, NodeRef)>,
    pub fingerprint: Option<String>,
}

impl NodeSpec {
    /// `id` should be readable and stable, e.g. `toy_square[x=3]`.
    pub fn new(id: impl Into<String>, kind: &str, params: serde_json::Value) -> Self {
        NodeSpec {
            id: id.into(),
            kind: kind.into(),
            params,
            hints: serde_json::Value::Null,
            inputs: Vec::new(),
            fingerprint: None,
        }
    }
    pub fn input(mut self, name: impl Into<String>, node: NodeRef) -> Self {
        self.inputs.push((name.into(), node));
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
    pub version: u32,
    pub params: serde_json::Value,
    #[serde(default)]
    pub hints: serde_json::Value,
    pub inputs: Vec<InputRef>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    pub name: String,
    pub id: String,
    pub key: String,
}

/// Collects nodes from every stage and every sweep point; nodes with equal keys are shared.
pub struct PlanBuilder<'r> {
    registry: &'r Registry,
    nodes: Vec<PlannedNode>,
    deps: Vec<Vec<usize>>,
    by_key: HashMap<String, usize>,
    /// Sweep label of the point that first added each node.
    labels: Vec<String>,
    label: String,
    stage: String,
}

impl<'r> PlanBuilder<'r> {
    fn new(registry: &'r Registry) -> Self {
        PlanBuilder {
            registry,
            nodes: Vec::new(),
            deps: Vec::new(),
            by_key: HashMap::new(),
            labels: Vec::new(),
            label: String::new(),
            stage: String::new(),
        }
    }

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
            .map(|(name, r)| InputRef {
                name: name.clone(),
                id: self.nodes[r.0].id.clone(),
                key: self.nodes[r.0].key.clone(),
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
        if let Some(&i) = self.by_key.get(&key) {
            return Ok(NodeRef(i));
        }
        let i = self.nodes.len();
        self.nodes.push(PlannedNode {
            id: node.id,
            key: key.clone(),
            kind: node.kind,
            version: kind.version(),
            params: node.params,
            hints: node.hints,
            inputs,
            fingerprint: node.fingerprint,
        });
        self.deps
            .push(node.inputs.iter().map(|(_, r)| r.0).collect());
        self.labels.push(self.label.clone());
        self.by_key.insert(key, i);
        Ok(NodeRef(i))
    }

    /// Every node of `kind` added so far (all sweep points), in insertion order.
    pub fn nodes_of_kind(&self, kind: &str) -> Vec<(NodeRef, &PlannedNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind == kind)
            .map(|(i, n)| (NodeRef(i), n))
            .collect()
    }

    /// A node added earlier (by any stage) in this sweep point or a shared one, by id.
    pub fn find(&self, id: &str) -> Option<NodeRef> {
        self.nodes.iter().rposition(|n| n.id == id).map(NodeRef)
    }

    pub fn node(&self, r: NodeRef) -> &PlannedNode {
        &self.nodes[r.0]
    }

    /// The label of the sweep point being planned (`key=value,...`; empty without a sweep).
    pub fn sweep_label(&self) -> &str {
        &self.label
    }

    fn finish(mut self) -> Result<Plan, PlanError> {
        // Ids shared by nodes with different keys (they differ across sweep points) get the
        // label of the point that created them.
        let mut count: HashMap<&str, usize> = HashMap::new();
        for n in &self.nodes {
            *count.entry(n.id.as_str()).or_default() += 1;
        }
        let clash: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| count[n.id.as_str()] > 1)
            .collect();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if clash[i] && !self.labels[i].is_empty() {
                n.id = format!("{}{{{}}}", n.id, self.labels[i]);
            }
        }
        let mut seen = HashMap::new();
        for n in &self.nodes {
            if seen.insert(n.id.clone(), ()).is_some() {
                return Err(PlanError::DuplicateId { id: n.id.clone() });
            }
        }
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            for (input, &d) in n.inputs.iter_mut().zip(&self.deps[i]) {
                input.id = ids[d].clone();
            }
        }
        let mut graph = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..self.nodes.len()).map(|i| graph.add_node(i)).collect();
        for (i, deps) in self.deps.iter().enumerate() {
            for &d in deps {
                graph.add_edge(idx[d], idx[i], ());
            }
        }
        Ok(Plan {
            nodes: self.nodes,
            graph,
        })
    }
}

/// The planned DAG of one spec (all sweep points), nodes in a topological order.
#[derive(Debug)]
pub struct Plan {
    pub nodes: Vec<PlannedNode>,
    /// Edges input -> dependent; node weights are indices into `nodes`.
    pub graph: DiGraph<usize, ()>,
}

impl Plan {
    /// Indices of the nodes that take node `i` as input.
    pub fn dependents(&self, i: usize) -> Vec<usize> {
        self.graph
            .neighbors_directed(NodeIndex::new(i), petgraph::Direction::Outgoing)
            .map(|n| self.graph[n])
            .collect()
    }

    pub fn inputs_of(&self, i: usize) -> Vec<usize> {
        self.graph
            .neighbors_directed(NodeIndex::new(i), petgraph::Direction::Incoming)
            .map(|n| self.graph[n])
            .collect()
    }

    /// Finds a node by exact id, else by unique key prefix.
    pub fn find(&self, query: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == query).or_else(|| {
            let m: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].key.starts_with(query))
                .collect();
            (m.len() == 1 && query.len() >= 4).then(|| m[0])
        })
    }
}

/// Runs every registered stage on every sweep point.
pub fn build_plan(spec: &LoadedSpec, registry: &Registry) -> Result<Plan, PlanError> {
    let mut b = PlanBuilder::new(registry);
    for point in &spec.points {
        b.label = point.label.clone();
        for stage in &registry.stages {
            b.stage = stage.name().to_string();
            stage.plan(point, &mut b)?;
        }
    }
    b.label = String::new();
    for stage in &registry.stages {
        b.stage = stage.name().to_string();
        stage.plan_final(spec, &mut b)?;
    }
    let plan = b.finish()?;
    debug_assert!(petgraph::algo::toposort(&plan.graph, None).is_ok());
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let spec = crate::spec::load_str("t.toml", "t", text, &[], &[]).unwrap();
        build_plan(&spec, &crate::registry::default_registry()).unwrap()
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

    #[test]
    fn stages_without_their_section_plan_nothing() {
        assert!(plan("[experiment]\nseed = 1\n").nodes.is_empty());
    }
}
