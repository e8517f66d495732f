//! `directions[<concept>:<class>]`: gathers one class's directions from every layer's probe node
//! (one probe kind) into `directions.safetensors` (`layer.<l>` = [k, hidden] f32, unit rows, raw
//! residual space) and `scores.json` {concept, class, kind, layers: [{layer, val_auc, test_auc, k,
//! degenerate?}], degenerate_layers, judge_layer, judge}. Steering reads only this node (+ the judge
//! layer's probe node).
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

use serde::Deserialize;
use serde_json::{Value, json};

use super::{StageError, load_tensors, read_json, save_tensors, write_json};
use crate::dag::{NodeCtx, NodeError, NodeKind};

#[derive(Deserialize)]
struct Params {
    concept: String,
    class: String,
    kind: String,
    layers: Vec<usize>,
    judge_layer: Value,
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
        // (layer, multiclass val acc, multiclass val auc, test acc)
        let mut judges: Vec<(usize, f64, f64, f64)> = Vec::new();
        let mut degenerate_layers = Vec::new();
        for &l in &p.layers {
            let dir = ctx.input(&format!("L{l}"))?.to_path_buf();
            let scores: Value = read_json(&dir.join("scores.json"))?;
            if scores["layer"].as_u64() != Some(l as u64) {
                return Err(StageError::Format {
                    path: dir.join("scores.json"),
                    reason: format!("expected layer {l}, found {}", scores["layer"]),
                }
                .into());
            }
            let c = &scores["classes"][&p.class];
            let Some(sub) = c["dir"].as_str() else {
                return Err(StageError::Input(format!(
                    "the layer-{l} probe of {} has no class `{}` (its classes: {})",
                    p.concept, p.class, scores["multiclass"]["classes"]
                ))
                .into());
            };
            let path = dir.join(sub).join("directions.safetensors");
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
            } else if !c["val_auc"].as_f64().is_some_and(f64::is_finite) {
                Some("no finite validation AUC (the probe has no signal to rank)".to_string())
            } else {
                None
            };
            let mut entry = json!({
                "layer": l,
                "val_auc": c["val_auc"],
                "test_auc": c["test_auc"],
                "k": if degenerate.is_some() { 0 } else { usable },
            });
            match &degenerate {
                Some(why) => {
                    ctx.log(&format!(
                        "warning: layer {l} of {}:{} is degenerate ({why}); it gets weight 0",
                        p.concept, p.class
                    ));
                    entry["degenerate"] = json!(why);
                    degenerate_layers.push(l);
                }
                None => {
                    tensors.insert(format!("layer.{l}"), d.narrow(0, 0, usable)?);
                }
            }
            layers.push(entry);
            let m = &scores["multiclass"];
            judges.push((
                l,
                m["val_acc"].as_f64().unwrap_or(f64::NEG_INFINITY),
                m["val_auc"].as_f64().unwrap_or(f64::NEG_INFINITY),
                m["test_acc"].as_f64().unwrap_or(f64::NAN),
            ));
        }
        let judge = match p.judge_layer.as_u64() {
            Some(l) => judges
                .iter()
                .find(|j| j.0 as u64 == l)
                .copied()
                .ok_or_else(|| {
                    StageError::Input(format!("probe.judge_layer {l} was not probed"))
                })?,
            // Best validation accuracy; ties: better validation AUC, then the lower layer.
            None => judges
                .iter()
                .copied()
                .max_by(|a, b| {
                    a.1.total_cmp(&b.1)
                        .then(a.2.total_cmp(&b.2))
                        .then(b.0.cmp(&a.0))
                })
                .ok_or_else(|| StageError::Input("no layers".into()))?,
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
        write_json(
            &ctx.out_dir.join("scores.json"),
            &json!({
                "concept": p.concept,
                "class": p.class,
                "kind": p.kind,
                "layers": layers,
                "degenerate_layers": degenerate_layers,
                "judge_layer": judge.0,
                "judge": {
                    "layer": judge.0,
                    "val_acc": judge.1,
                    "test_acc": judge.3,
                    "probe": format!("probe[{},L{},{}]", p.concept, judge.0, p.kind),
                },
            }),
        )?;
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
