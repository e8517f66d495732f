//! `directions[<concept>:<class>]`: gathers one class's directions from every layer's probe node
//! (one probe kind) into `directions.safetensors` (`layer.<l>` = [k, hidden] f32, unit rows, raw
//! residual space) and `scores.json` {concept, class, kind, layers: [{layer, val_auc, test_auc}],
//! judge_layer, judge}. Steering reads only this node (+ the judge layer's probe node).

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
            let norms = d.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
            if let Some(bad) = norms.iter().find(|n| (**n - 1.0).abs() > 1e-3) {
                return Err(StageError::Format {
                    path,
                    reason: format!("a direction has norm {bad}, not 1"),
                }
                .into());
            }
            tensors.insert(format!("layer.{l}"), d);
            layers.push(json!({
                "layer": l,
                "val_auc": c["val_auc"],
                "test_auc": c["test_auc"],
                "k": c["k"],
            }));
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
        save_tensors(&ctx.out_dir.join("directions.safetensors"), &tensors)?;
        write_json(
            &ctx.out_dir.join("scores.json"),
            &json!({
                "concept": p.concept,
                "class": p.class,
                "kind": p.kind,
                "layers": layers,
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
