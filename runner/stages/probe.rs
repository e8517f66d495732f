//! `probe[<concept>,L<l>,<kind>]`: at one layer, one binary one-vs-rest probe per class (balanced
//! negatives) and the multiclass judge, all of one kind (rfm | linear | mlp), on the same
//! seeded 70/15/15 splits the probe library draws.
//!
//! Outputs: `scores.json`, per class `class/<dir>/` (ProbeFit::save) with
//! `directions.safetensors` (`directions` = [k, hidden] f32, unit rows, in RAW residual space),
//! and `multiclass/` (ProbeFit::save). Directions: RFM — the top-k eigenvectors of M; linear —
//! the weight vector (k = 1); MLP — the top-k eigenvectors of the network's AGOP (the average
//! outer product of its input gradients on the training rows). The probes standardise features,
//! so a direction v found in standardised coordinates is mapped to the raw residual stream as
//! normalise(σ ⊙ v) (a raw step σ ⊙ v moves the standardised features along v), then oriented
//! so that the raw projection correlates positively with the class indicator on training rows.

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{StageError, class_dir, load_tensors, read_json, save_tensors, write_json};
use crate::dag::{NodeCtx, NodeError, NodeKind};
use crate::probe::directions::eigh_desc;
use crate::probe::metrics::pearson;
use crate::probe::splits::one_vs_rest;
use crate::probe::{Features, Model, ProbeConfig, ProbeFit, ProbeKind, Targets, Task};

#[derive(Deserialize)]
struct Params {
    concept: String,
    layer: usize,
    kind: ProbeKind,
    iterations: usize,
    trials: usize,
    directions_k: usize,
    seed: u64,
}

/// The activations node's `index.json` (the fields a probe needs).
#[derive(Deserialize)]
pub struct Index {
    pub n: usize,
    pub hidden: usize,
    pub layers: Vec<usize>,
    pub classes: Vec<String>,
    pub labels: Vec<String>,
}

/// Reads one layer's pooled features and the class index of every row.
pub fn load_layer(
    dir: &std::path::Path,
    layer: usize,
) -> super::Result<(Index, Features, Vec<usize>)> {
    let index: Index = read_json(&dir.join("index.json"))?;
    let path = dir.join("features.safetensors");
    let mut tensors = load_tensors(&path)?;
    let t = tensors
        .remove(&format!("layer.{layer}"))
        .ok_or_else(|| StageError::Format {
            path: path.clone(),
            reason: format!("no tensor layer.{layer} (layers {:?})", index.layers),
        })?;
    let x = Features::from_tensor(&t)?;
    if x.n != index.n || x.d != index.hidden || index.labels.len() != x.n {
        return Err(StageError::Format {
            path,
            reason: format!(
                "layer.{layer} is {}×{} but index.json says {}×{} with {} labels",
                x.n,
                x.d,
                index.n,
                index.hidden,
                index.labels.len()
            ),
        });
    }
    let classes = index
        .labels
        .iter()
        .map(|l| {
            index.classes.iter().position(|c| c == l).ok_or_else(|| {
                StageError::Input(format!("label `{l}` is not in index.json classes"))
            })
        })
        .collect::<super::Result<Vec<usize>>>()?;
    Ok((index, x, classes))
}

/// Maps standardised-space directions (rows of `vs`) to unit raw-space rows oriented by
/// Pearson correlation of the raw projection with `target` over the rows of `x`.
pub fn to_raw_directions(
    vs: &[Vec<f64>],
    std: Option<&[f32]>,
    x: &Features,
    target: &[f64],
) -> (Vec<f32>, Vec<f64>) {
    let mut out = Vec::with_capacity(vs.len() * x.d);
    let mut corr = Vec::with_capacity(vs.len());
    for v in vs {
        let mut u: Vec<f64> = match std {
            Some(s) => v.iter().zip(s).map(|(a, b)| a * *b as f64).collect(),
            None => v.clone(),
        };
        let norm = u.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 0.0 {
            u.iter_mut().for_each(|a| *a /= norm);
        }
        let proj: Vec<f64> = (0..x.n)
            .map(|i| x.row(i).iter().zip(&u).map(|(a, b)| *a as f64 * b).sum())
            .collect();
        let mut r = pearson(&proj, target);
        if r < 0.0 {
            u.iter_mut().for_each(|a| *a = -*a);
            r = -r;
        }
        out.extend(u.iter().map(|&a| a as f32));
        corr.push(r);
    }
    (out, corr)
}

/// Directions of a binary fit in standardised coordinates (see the module doc), k rows at most.
fn standardised_directions(fit: &ProbeFit, xtr_std: &Features, k: usize) -> Vec<Vec<f64>> {
    let d = fit.d;
    match &fit.model {
        Model::Rfm(_) => fit
            .directions
            .as_ref()
            .map(|dirs| (0..dirs.k).map(|i| dirs.vector(i).to_vec()).collect())
            .unwrap_or_default(),
        Model::Linear(m) => {
            // d×c with c = 1 for a binary probe.
            vec![(0..d).map(|j| m.w[j * m.outputs]).collect()]
        }
        Model::Mlp(m) => {
            // AGOP of logit(class 1) − logit(class 0): g(x) = W1ᵀ (1[W1 x + b1 > 0] ⊙ (w2₁ − w2₀)).
            let h = m.config.hidden;
            let last = m.logits - 1;
            let dw: Vec<f64> = (0..h)
                .map(|j| m.w2[last * h + j] as f64 - if last > 0 { m.w2[j] as f64 } else { 0.0 })
                .collect();
            let mut agop = vec![0.0f64; d * d];
            for i in 0..xtr_std.n {
                let x = xtr_std.row(i);
                let mut g = vec![0.0f64; d];
                for (j, dwj) in dw.iter().enumerate() {
                    let w = &m.w1[j * d..(j + 1) * d];
                    let pre: f64 = m.b1[j] as f64
                        + w.iter()
                            .zip(x)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>();
                    if pre > 0.0 {
                        for (gk, wk) in g.iter_mut().zip(w) {
                            *gk += *wk as f64 * dwj;
                        }
                    }
                }
                for (a, &ga) in g.iter().enumerate() {
                    if ga == 0.0 {
                        continue;
                    }
                    let row = &mut agop[a * d..(a + 1) * d];
                    for (r, &gb) in row.iter_mut().zip(&g) {
                        *r += ga * gb;
                    }
                }
            }
            let (_, vecs) = eigh_desc(&agop, d);
            vecs.into_iter().take(k.min(d)).collect()
        }
    }
}

fn hyper(fit: &ProbeFit) -> Value {
    match &fit.model {
        Model::Rfm(m) => json!({ "rfm": m.hyper, "best_iter": fit.best_iter }),
        Model::Linear(m) => json!({ "lambda": m.lambda }),
        Model::Mlp(m) => json!({ "mlp": m.config }),
    }
}

pub struct ProbeNode;

impl NodeKind for ProbeNode {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: Params = ctx.params_as()?;
        let (index, x, cls) = load_layer(ctx.input("activations")?, p.layer)?;
        if index.classes.len() < 2 {
            return Err(StageError::Input(format!(
                "{}: a probe needs at least two classes, the dataset has {:?}",
                p.concept, index.classes
            ))
            .into());
        }
        let base = ProbeConfig {
            kind: p.kind,
            seed: p.seed,
            trials: p.trials,
            iterations: p.iterations,
            top_k: p.directions_k,
            ..ProbeConfig::default()
        };
        let total = index.classes.len() as u64 + 1;
        let mut class_scores = serde_json::Map::new();
        let mut dirs_seen = BTreeMap::new();
        for (c, class) in index.classes.iter().enumerate() {
            ctx.progress(c as u64, total, &format!("class {class}"));
            let (rows, labels) = one_vs_rest(&cls, c, p.seed);
            let xs = x.select(&rows);
            let y = Targets::Classes(labels.clone());
            let cfg = ProbeConfig {
                task: Task::Binary,
                ..base.clone()
            };
            let fit = crate::probe::fit(&xs, &y, &cfg)
                .map_err(|e| format!("{} class {class} at layer {}: {e}", p.concept, p.layer))?;
            let dir = class_dir(class);
            if let Some(other) = dirs_seen.insert(dir.clone(), class.clone()) {
                return Err(StageError::Input(format!(
                    "classes `{other}` and `{class}` map to the same directory `{dir}`"
                ))
                .into());
            }
            let out = ctx.out_dir.join("class").join(&dir);
            fit.save(&out)?;
            // Directions from the training rows of this one-vs-rest subset.
            let xtr = xs.select(&fit.split.train);
            let xtr_std = match &fit.standardiser {
                Some(s) => s.apply(&xtr),
                None => xtr.clone(),
            };
            let target: Vec<f64> = fit.split.train.iter().map(|&i| labels[i] as f64).collect();
            let std_dirs = standardised_directions(&fit, &xtr_std, p.directions_k);
            if std_dirs.is_empty() {
                return Err(StageError::Input(format!(
                    "{} class {class}: the {:?} probe produced no directions",
                    p.concept, p.kind
                ))
                .into());
            }
            let (raw, corr) = to_raw_directions(
                &std_dirs,
                fit.standardiser.as_ref().map(|s| s.std.as_slice()),
                &xtr,
                &target,
            );
            let k = std_dirs.len();
            let mut ts = HashMap::new();
            ts.insert(
                "directions".to_string(),
                Tensor::from_vec(raw, (k, x.d), &candle_core::Device::Cpu)?,
            );
            save_tensors(&out.join("directions.safetensors"), &ts)?;
            class_scores.insert(
                class.clone(),
                json!({
                    "val_auc": fit.val.auc,
                    "test_auc": fit.test.auc,
                    "val_acc": fit.val.accuracy,
                    "test_acc": fit.test.accuracy,
                    "n": rows.len(),
                    "hyper": hyper(&fit),
                    "dir": format!("class/{dir}"),
                    "k": k,
                    "direction_correlations": corr,
                }),
            );
            ctx.log(&format!(
                "{class}: val AUC {:?}, test AUC {:?}, {k} direction(s)",
                fit.val.auc, fit.test.auc
            ));
        }
        ctx.progress(total - 1, total, "multiclass judge");
        let cfg = ProbeConfig {
            task: Task::Multiclass,
            ..base
        };
        let fit = crate::probe::fit(&x, &Targets::Classes(cls.clone()), &cfg)
            .map_err(|e| format!("{} multiclass at layer {}: {e}", p.concept, p.layer))?;
        fit.save(&ctx.out_dir.join("multiclass"))?;
        let k = index.classes.len();
        let pred = fit.predict_classes(&x.select(&fit.split.test))?;
        let mut confusion = vec![vec![0usize; k]; k];
        for (&i, &pr) in fit.split.test.iter().zip(&pred) {
            if pr < k {
                confusion[cls[i]][pr] += 1;
            }
        }
        write_json(
            &ctx.out_dir.join("scores.json"),
            &json!({
                "concept": p.concept,
                "layer": p.layer,
                "kind": p.kind,
                "split_seed": p.seed,
                "hidden": x.d,
                "classes": class_scores,
                "multiclass": {
                    "val_acc": fit.val.accuracy,
                    "test_acc": fit.test.accuracy,
                    "val_auc": fit.val.auc,
                    "test_auc": fit.test.auc,
                    "confusion": confusion,
                    "classes": index.classes,
                    "hyper": hyper(&fit),
                    "dir": "multiclass",
                },
            }),
        )?;
        ctx.progress(total, total, "done");
        Ok(())
    }
}
