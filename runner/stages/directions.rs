//! `directions[<concept>:<class>]`: gathers one class's directions from every layer's probe node
//! (one probe kind) into `directions.safetensors` (`layer.<l>` = [k, hidden] f32, unit rows, raw
//! residual space) and `scores.json` {concept, class, kind, layers: [{layer, val_auc, test_auc}],
//! judge_layer, judge}. Steering reads only this node (+ the judge layer's probe node).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::contract::Output;
use super::judge::judge_layer;
use super::probe::ProbeScores;
use super::{StageError, load_tensors, save_tensors};
use crate::dag::{NodeCtx, NodeError, NodeKind};

#[derive(Deserialize)]
struct Params {
    concept: String,
    class: String,
    kind: String,
    layers: Vec<usize>,
    judge_layer: Value,
}

/// `scores.json` of a directions node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionScores {
    pub concept: String,
    pub class: String,
    pub kind: String,
    /// Per probed layer, the class's one-vs-rest probe scores (layer cropping weighs by `val_auc`).
    pub layers: Vec<DirectionLayer>,
    /// The concept's judge layer (`crate::stages::judge::judge_layer`, or `[probe] judge_layer`).
    pub judge_layer: usize,
    pub judge: Judge,
}

impl Output for DirectionScores {
    const FILE: &'static str = "scores.json";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionLayer {
    pub layer: usize,
    pub val_auc: Option<f64>,
    pub test_auc: Option<f64>,
    /// Directions kept at this layer (rows of `layer.<l>`).
    pub k: usize,
}

/// The multiclass judge's scores at the judge layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judge {
    pub layer: usize,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    /// The judge's probe node (its id, for people).
    #[serde(default)]
    pub probe: String,
}

pub struct DirectionsNode;

impl NodeKind for DirectionsNode {
    fn name(&self) -> &'static str {
        "directions"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: Params = ctx.params_as()?;
        let mut tensors = HashMap::new();
        let mut layers = Vec::new();
        let mut probes = Vec::new();
        for &l in &p.layers {
            let dir = ctx.input(&format!("L{l}"))?.to_path_buf();
            let scores = ProbeScores::read(&dir)?;
            if scores.layer != l {
                return Err(StageError::Format {
                    path: dir.join(ProbeScores::FILE),
                    reason: format!("expected layer {l}, found {}", scores.layer),
                }
                .into());
            }
            let Some(c) = scores.classes.get(&p.class) else {
                return Err(StageError::Input(format!(
                    "the layer-{l} probe of {} has no class `{}` (its classes: {:?})",
                    p.concept, p.class, scores.multiclass.classes
                ))
                .into());
            };
            let path = dir.join(&c.dir).join("directions.safetensors");
            let mut t = load_tensors(&path)?;
            let d = t.remove("directions").ok_or_else(|| StageError::Format {
                path: path.clone(),
                reason: "no tensor `directions`".into(),
            })?;
            let norms = d.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
            if let Some(bad) = norms.iter().find(|n| (**n - 1.0).abs() > 1e-3) {
                return Err(StageError::Format {
                    path,
                    reason: format!("a direction has norm {bad}, not 1"),
                }
                .into());
            }
            tensors.insert(format!("layer.{l}"), d);
            layers.push(DirectionLayer {
                layer: l,
                val_auc: c.val_auc,
                test_auc: c.test_auc,
                k: c.k,
            });
            probes.push(scores);
        }
        let judge = match p.judge_layer.as_u64() {
            Some(l) => probes.iter().find(|s| s.layer as u64 == l).ok_or_else(|| {
                StageError::Input(format!("probe.judge_layer {l} was not probed"))
            })?,
            None => judge_layer(&probes).ok_or_else(|| StageError::Input("no layers".into()))?,
        };
        save_tensors(&ctx.out_dir.join("directions.safetensors"), &tensors)?;
        DirectionScores {
            concept: p.concept,
            class: p.class,
            kind: p.kind,
            layers,
            judge_layer: judge.layer,
            judge: Judge {
                layer: judge.layer,
                val_acc: judge.multiclass.val_acc,
                test_acc: judge.multiclass.test_acc,
                probe: ctx
                    .inputs
                    .iter()
                    .find(|i| i.name == format!("L{}", judge.layer))
                    .map(|i| i.id.clone())
                    .unwrap_or_default(),
            },
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}
