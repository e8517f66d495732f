//! `directions[<concept>:<class>]`: gathers one class's directions from every layer's probe node
//! (one probe kind) into `directions.safetensors` (`layer.<l>` = [k, hidden] f32, unit rows, raw
//! residual space) and `scores.json` ([`DirectionScores`]). Steering reads only this node (+ the
//! judge layer's probe node).
//!
//! What a direction is, per probe kind (computed by the probe node): RFM -- the top eigenvectors of
//! the learned metric M; linear -- the weight vector of the one-vs-rest logistic probe, normalised
//! (one direction); MLP -- the top eigenvectors of the network's input-gradient outer product.
//! All are mapped to the raw residual stream, normalised to unit length and signed towards the
//! class.
//!
//! A degenerate layer is a warning, not a failure: when a layer's leading direction is zero or not
//! finite (a probe that found no signal, e.g. a linear probe regularised to w = 0) or its probe has
//! no finite validation score, the layer gets no `layer.<l>` tensor, its `layers` entry says
//! `degenerate: <why>` and it is listed in `degenerate_layers` -- so layer cropping gives it weight
//! 0 and the class's other layers steer as usual. Only when every layer is degenerate does the
//! node fail, saying so. Rows after a degenerate row are dropped (directions are ranked, so the
//! usable ones are a prefix).

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
    /// Layers whose direction is degenerate (no `layer.<l>` tensor; weight 0 in layer cropping).
    #[serde(default)]
    pub degenerate_layers: Vec<usize>,
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
    /// Directions kept at this layer (rows of `layer.<l>`; 0 when degenerate).
    pub k: usize,
    /// Why this layer has no direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degenerate: Option<String>,
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
        let mut degenerate_layers = Vec::new();
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
            let rows = d.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
            let usable = usable_rows(&rows).map_err(|reason| StageError::Format {
                path: path.clone(),
                reason,
            })?;
            let degenerate = if usable == 0 {
                Some("zero or non-finite direction (the probe found no signal)".to_string())
            } else if !c.val_auc.is_some_and(f64::is_finite) {
                Some("no finite validation AUC (the probe has no signal to rank)".to_string())
            } else {
                None
            };
            match &degenerate {
                Some(why) => {
                    ctx.log(&format!(
                        "warning: layer {l} of {}:{} is degenerate ({why}); it gets weight 0",
                        p.concept, p.class
                    ));
                    degenerate_layers.push(l);
                }
                None => {
                    tensors.insert(format!("layer.{l}"), d.narrow(0, 0, usable)?);
                }
            }
            layers.push(DirectionLayer {
                layer: l,
                val_auc: c.val_auc,
                test_auc: c.test_auc,
                k: if degenerate.is_some() { 0 } else { usable },
                degenerate,
            });
            probes.push(scores);
        }
        let judge = match p.judge_layer.as_u64() {
            Some(l) => probes.iter().find(|s| s.layer as u64 == l).ok_or_else(|| {
                StageError::Input(format!("probe.judge_layer {l} was not probed"))
            })?,
            None => judge_layer(&probes).ok_or_else(|| StageError::Input("no layers".into()))?,
        };
        if tensors.is_empty() {
            return Err(StageError::Input(format!(
                "every layer's direction for {}:{} is degenerate (zero or non-finite, or no \
                 validation score) at layers {degenerate_layers:?}: there is nothing to steer with",
                p.concept, p.class
            ))
            .into());
        }
        save_tensors(&ctx.out_dir.join("directions.safetensors"), &tensors)?;
        DirectionScores {
            concept: p.concept,
            class: p.class,
            kind: p.kind,
            layers,
            degenerate_layers,
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

/// Norms below this count as zero (a unit direction that lost all its mass).
const ZERO_NORM: f32 = 1e-6;

/// How many leading rows are usable directions: finite and of non-zero norm. A usable row whose
/// norm is not 1 is a producer bug, reported as an error rather than rescaled.
fn usable_rows(rows: &[Vec<f32>]) -> Result<usize, String> {
    let mut n = 0;
    for r in rows {
        if r.iter().any(|v| !v.is_finite()) {
            break;
        }
        let norm = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32;
        if norm < ZERO_NORM {
            break;
        }
        if (norm - 1.0).abs() > 1e-3 {
            return Err(format!("a direction has norm {norm}, not 1"));
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_rows_stop_at_the_first_zero_or_non_finite_row() {
        let unit = vec![0.6f32, 0.8];
        assert_eq!(usable_rows(&[unit.clone(), unit.clone()]), Ok(2));
        assert_eq!(
            usable_rows(&[unit.clone(), vec![0.0, 0.0], unit.clone()]),
            Ok(1)
        );
        assert_eq!(usable_rows(&[vec![0.0, 0.0]]), Ok(0));
        assert_eq!(usable_rows(&[vec![f32::NAN, 1.0]]), Ok(0));
        assert!(
            usable_rows(&[vec![0.5, 0.0]])
                .unwrap_err()
                .contains("norm 0.5")
        );
    }
}
