//! `probe[<concept>,L<l>,<kind>]`: at one layer, one binary one-vs-rest probe per class (balanced
//! negatives) and the multiclass judge, all of one kind (rfm | linear | mlp), on the same
//! seeded 70/15/15 splits the probe library draws.
//!
//! Outputs: `scores.json`, per class `class/<dir>/` (ProbeFit::save) with
//! `directions.safetensors` (`directions` = [k, hidden] f32, unit rows, in RAW residual space),
//! and `multiclass/` (ProbeFit::save); for tempos (numeric classes) also `regression/`, a
//! regression probe on the BPM (scores.json `regression`: val/test R² and MSE). Directions: RFM — the top-k eigenvectors of M; linear —
//! the weight vector (k = 1); MLP — the top-k eigenvectors of the network's AGOP (the average
//! outer product of its input gradients on the training rows). The probes standardise features,
//! so a direction v found in standardised coordinates is mapped to the raw residual stream as
//! normalise(σ ⊙ v) (a raw step σ ⊙ v moves the standardised features along v), after orienting
//! v so that the standardised training rows' projection on it correlates positively with the class
//! indicator (so adding the raw direction pushes the probe towards the class).

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::activations::ActivationsIndex;
use super::contract::{Output, finite};
use super::{StageError, class_dir, load_tensors, save_tensors};
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

/// `scores.json` of a probe node: one layer's probes of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeScores {
    pub concept: String,
    pub layer: usize,
    pub kind: ProbeKind,
    pub split_seed: u64,
    pub hidden: usize,
    /// The one-vs-rest probe of each class, in the concept's class order.
    pub classes: IndexMap<String, ClassScores>,
    /// The multiclass probe: the concept's judge.
    pub multiclass: MulticlassScores,
    /// Tempos (numeric classes): a regression probe on the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionScores>,
}

impl Output for ProbeScores {
    const FILE: &'static str = "scores.json";
}

/// A binary one-vs-rest probe (balanced negatives) of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub val_auc: Option<f64>,
    pub test_auc: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    /// Rows of the one-vs-rest subset.
    pub n: usize,
    pub hyper: Hyper,
    /// Its `ProbeFit` and `directions.safetensors`, relative to the node's output dir.
    pub dir: String,
    /// Directions kept.
    pub k: usize,
    /// Pearson correlation of each direction's projection with the class indicator (training rows).
    pub direction_correlations: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticlassScores {
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    pub val_auc: Option<f64>,
    pub test_auc: Option<f64>,
    /// Test-split counts, rows = true class, columns = predicted, in `classes` order.
    pub confusion: Vec<Vec<usize>>,
    pub classes: Vec<String>,
    pub hyper: Hyper,
    pub dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionScores {
    pub val_r2: Option<f64>,
    pub test_r2: Option<f64>,
    pub val_mse: Option<f64>,
    pub test_mse: Option<f64>,
    pub hyper: Hyper,
    pub dir: String,
}

/// The hyper-parameters a fit selected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Hyper {
    Rfm {
        rfm: crate::probe::RfmHyper,
        best_iter: Option<usize>,
    },
    Linear {
        lambda: f64,
    },
    Mlp {
        mlp: crate::probe::mlp::MlpConfig,
    },
}

impl ProbeScores {
    /// Mean one-vs-rest AUC over the classes that have one (validation or test).
    pub fn mean_class_auc(&self, test: bool) -> Option<f64> {
        let v: Vec<f64> = self
            .classes
            .values()
            .filter_map(|c| if test { c.test_auc } else { c.val_auc })
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// Reads one layer's pooled features and the class index of every row.
pub fn load_layer(
    dir: &std::path::Path,
    layer: usize,
) -> super::Result<(ActivationsIndex, Features, Vec<usize>)> {
    let index = ActivationsIndex::read(dir)?;
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

/// Every row's label as a number, when every class name is one (tempos: BPM).
fn numeric_labels(index: &ActivationsIndex) -> Option<Vec<f64>> {
    index
        .labels
        .iter()
        .map(|l| l.parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect()
}

/// Orients standardised-space directions (rows of `vs`) so that the projection of the
/// standardised training rows `z` correlates positively with `target` (Pearson), then maps each
/// to a unit raw-space row normalise(σ ⊙ v): adding it to the raw residual stream moves the
/// standardised features the probe sees along +v. Returns (k×d rows, correlations).
pub fn to_raw_directions(
    vs: &[Vec<f64>],
    std: Option<&[f32]>,
    z: &Features,
    target: &[f64],
) -> (Vec<f32>, Vec<f64>) {
    let mut out = Vec::with_capacity(vs.len() * z.d);
    let mut corr = Vec::with_capacity(vs.len());
    for v in vs {
        let proj: Vec<f64> = (0..z.n)
            .map(|i| z.row(i).iter().zip(v).map(|(a, b)| *a as f64 * b).sum())
            .collect();
        let r = pearson(&proj, target);
        let sign = if r < 0.0 { -1.0 } else { 1.0 };
        let mut u: Vec<f64> = match std {
            Some(s) => v.iter().zip(s).map(|(a, b)| sign * a * *b as f64).collect(),
            None => v.iter().map(|a| sign * a).collect(),
        };
        let norm = u.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 0.0 {
            u.iter_mut().for_each(|a| *a /= norm);
        }
        out.extend(u.iter().map(|&a| a as f32));
        corr.push(r.abs());
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
            let agop = mlp_agop(m, xtr_std);
            let (_, vecs) = eigh_desc(&agop, d);
            vecs.into_iter().take(k.min(d)).collect()
        }
    }
}

/// AGOP of logit(class 1) − logit(class 0) of a binary one-hidden-layer ReLU network over the rows
/// of `x`: with g(x) = W1ᵀ (1[W1 x + b1 > 0] ⊙ Δw2), Σᵢ g(xᵢ) g(xᵢ)ᵀ = GᵀG where G = A W1 and
/// A = 1[X W1ᵀ + b1 > 0] ⊙ Δw2 (n×h). Three GEMMs in f64 instead of n rank-one updates: at
/// d = 2048 and n = 7000 the per-row loop was minutes per class (docs/design.md §3).
fn mlp_agop(m: &crate::probe::mlp::MlpModel, x: &Features) -> Vec<f64> {
    use crate::probe::gemm::{gram_t, matmul, matmul_nt, mirror_lower};
    let (n, d, h) = (x.n, m.d, m.config.hidden);
    let last = m.logits - 1;
    let dw: Vec<f64> = (0..h)
        .map(|j| m.w2[last * h + j] as f64 - if last > 0 { m.w2[j] as f64 } else { 0.0 })
        .collect();
    let xs: Vec<f64> = (0..n)
        .flat_map(|i| x.row(i).iter().map(|&v| v as f64))
        .collect();
    let w1: Vec<f64> = m.w1.iter().map(|&v| v as f64).collect();
    let mut a = vec![0.0f64; n * h];
    matmul_nt(&xs, n, d, &w1, h, &mut a);
    for row in a.chunks_exact_mut(h) {
        for ((v, b), dwj) in row.iter_mut().zip(&m.b1).zip(&dw) {
            *v = if *v + *b as f64 > 0.0 { *dwj } else { 0.0 };
        }
    }
    let mut g = vec![0.0f64; n * d];
    matmul(&a, n, h, &w1, d, &mut g);
    let mut agop = vec![0.0f64; d * d];
    gram_t(&g, n, d, &mut agop);
    mirror_lower(&mut agop, d);
    agop
}

fn hyper(fit: &ProbeFit) -> Hyper {
    match &fit.model {
        Model::Rfm(m) => Hyper::Rfm {
            rfm: m.hyper,
            best_iter: fit.best_iter,
        },
        Model::Linear(m) => Hyper::Linear { lambda: m.lambda },
        Model::Mlp(m) => Hyper::Mlp { mlp: m.config },
    }
}

fn opt(v: Option<f64>) -> Option<f64> {
    v.and_then(finite)
}

pub struct ProbeNode;

impl NodeKind for ProbeNode {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> u32 {
        // 2: the RFM kernel solve runs in f32 (the fit's dtype), as the reference does.
        // 3: run-time dispatched GEMM kernels and the metric kept as a truncated eigendecomposition
        //    change fits in their last digits.
        3
    }
    /// The fits' matmuls span the machine's cores, or run on the `[model] device` GPU.
    fn resources(&self, node: &crate::dag::PlannedNode) -> crate::dag::Resources {
        crate::dag::Resources::heavy(node.hints["device"].as_str())
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
        // `[model] device` arrives as an execution hint (not part of the key): the fits run there,
        // the CPU when absent.
        let device = match ctx.hints.get("device").and_then(|v| v.as_str()) {
            Some(spec) => crate::model::musicgen::parse_device(spec)
                .map_err(|e| StageError::Input(format!("probe device `{spec}`: {e}")))?,
            None => candle_core::Device::Cpu,
        };
        let total = index.classes.len() as u64 + 1;
        let mut class_scores = IndexMap::new();
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
            let fit = crate::probe::fit_on(&xs, &y, &cfg, &device)
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
                &xtr_std,
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
                ClassScores {
                    val_auc: opt(fit.val.auc),
                    test_auc: opt(fit.test.auc),
                    val_acc: opt(fit.val.accuracy),
                    test_acc: opt(fit.test.accuracy),
                    n: rows.len(),
                    hyper: hyper(&fit),
                    dir: format!("class/{dir}"),
                    k,
                    direction_correlations: corr,
                },
            );
            ctx.log(&format!(
                "{class}: val AUC {:?}, test AUC {:?}, {k} direction(s)",
                fit.val.auc, fit.test.auc
            ));
        }
        ctx.progress(total - 1, total, "multiclass judge");
        let cfg = ProbeConfig {
            task: Task::Multiclass,
            ..base.clone()
        };
        let fit = crate::probe::fit_on(&x, &Targets::Classes(cls.clone()), &cfg, &device)
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
        // Tempo classes are numbers (BPM): also a regression probe on the value.
        let regression = match numeric_labels(&index) {
            Some(values) if p.concept == "tempos" => {
                let cfg = ProbeConfig {
                    task: Task::Regression,
                    ..base
                };
                let fit = crate::probe::fit_on(&x, &Targets::Values(values), &cfg, &device)
                    .map_err(|e| format!("{} regression at layer {}: {e}", p.concept, p.layer))?;
                fit.save(&ctx.out_dir.join("regression"))?;
                Some(RegressionScores {
                    val_r2: opt(fit.val.r2),
                    test_r2: opt(fit.test.r2),
                    val_mse: opt(fit.val.mse),
                    test_mse: opt(fit.test.mse),
                    hyper: hyper(&fit),
                    dir: "regression".into(),
                })
            }
            _ => None,
        };
        let scores = ProbeScores {
            concept: p.concept.clone(),
            layer: p.layer,
            kind: p.kind,
            split_seed: p.seed,
            hidden: x.d,
            classes: class_scores,
            multiclass: MulticlassScores {
                val_acc: opt(fit.val.accuracy),
                test_acc: opt(fit.test.accuracy),
                val_auc: opt(fit.val.auc),
                test_auc: opt(fit.test.auc),
                confusion,
                classes: index.classes.clone(),
                hyper: hyper(&fit),
                dir: "multiclass".into(),
            },
            regression,
        };
        scores.write(ctx.out_dir)?;
        ctx.progress(total, total, "done");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-row definition the GEMM form of `mlp_agop` must equal: Σᵢ g(xᵢ) g(xᵢ)ᵀ with
    /// g(x) = W1ᵀ (1[W1 x + b1 > 0] ⊙ Δw2).
    #[test]
    fn mlp_agop_equals_the_sum_of_per_row_gradient_outer_products() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (n, d, h) = (37, 19, 23);
        let mut r =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random::<f32>() - 0.5).collect() };
        let x = Features::new(n, d, r(n * d)).unwrap();
        let m = crate::probe::mlp::MlpModel {
            config: crate::probe::mlp::MlpConfig {
                hidden: h,
                ..Default::default()
            },
            d,
            logits: 2,
            task: Task::Binary,
            w1: r(h * d),
            b1: r(h),
            w2: r(2 * h),
            b2: r(2),
        };
        let fast = mlp_agop(&m, &x);
        let dw: Vec<f64> = (0..h)
            .map(|j| m.w2[h + j] as f64 - m.w2[j] as f64)
            .collect();
        let mut slow = vec![0.0f64; d * d];
        for i in 0..n {
            let mut g = vec![0.0f64; d];
            for (j, dwj) in dw.iter().enumerate() {
                let w = &m.w1[j * d..(j + 1) * d];
                let pre: f64 = m.b1[j] as f64
                    + w.iter()
                        .zip(x.row(i))
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>();
                if pre > 0.0 {
                    g.iter_mut()
                        .zip(w)
                        .for_each(|(gk, wk)| *gk += *wk as f64 * dwj);
                }
            }
            for a in 0..d {
                for b in 0..d {
                    slow[a * d + b] += g[a] * g[b];
                }
            }
        }
        let scale = slow.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        assert!(scale > 0.0);
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() <= 1e-12 * scale, "{f} vs {s}");
        }
    }

    /// n rows of d features; the class is the sign of feature 0, whose raw scale is `scale`.
    fn problem(n: usize, d: usize, scale: f32) -> (Features, Vec<usize>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut data = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let pos = i % 2 == 0;
            for j in 0..d {
                let noise: f32 = rng.random::<f32>() - 0.5;
                let v = if j == 0 {
                    scale * (if pos { 1.0 } else { -1.0 } + 0.3 * noise)
                } else {
                    10.0 * noise
                };
                data.push(v);
            }
            y.push(usize::from(pos));
        }
        (Features::new(n, d, data).unwrap(), y)
    }

    #[test]
    fn raw_directions_undo_the_standardisation_and_are_oriented() {
        // Standardised rows; the target is high where z0 is.
        let x = Features::new(4, 2, vec![1.0, 0.0, -1.0, 0.0, 2.0, 1.0, -2.0, -1.0]).unwrap();
        let target = [1.0, 0.0, 1.0, 0.0];
        // v = (1, 1) with σ = (3, 1) -> raw (3, 1)/√10; v = (-1, 0) points against the target
        // and is flipped to (1, 0).
        let (u, r) = to_raw_directions(
            &[vec![1.0, 1.0], vec![-1.0, 0.0]],
            Some(&[3.0, 1.0]),
            &x,
            &target,
        );
        let s = 10f32.sqrt();
        for (a, b) in u[..2].iter().zip([3.0 / s, 1.0 / s]) {
            assert!((a - b).abs() < 1e-6, "{u:?}");
        }
        assert_eq!(&u[2..], &[1.0, 0.0]);
        assert!(r.iter().all(|&c| c > 0.0), "{r:?}");
    }

    /// On the CPU a probe node's fits span every core through the global rayon pool, so the node
    /// must claim every core (the local executor then runs it alone: nodes × threads ≤ cores).
    #[test]
    fn probe_nodes_claim_every_core_on_the_cpu() {
        use crate::dag::{Cpus, NodeKind, PlannedNode};
        let node = |device: &str| -> PlannedNode {
            serde_json::from_value(serde_json::json!({
                "id": "probe[notes,L0,rfm]", "key": "k", "kind": "probe", "version": 3,
                "params": {}, "hints": {"device": device}, "inputs": [],
            }))
            .unwrap()
        };
        let cpu = ProbeNode.resources(&node("cpu"));
        assert_eq!((cpu.cpus, cpu.gpu), (Cpus::All, false));
        // A GPU node holds the GPU and one core; one GPU node runs at a time.
        let gpu = ProbeNode.resources(&node("cuda:0"));
        assert_eq!((gpu.cpus, gpu.gpu), (Cpus::One, true));
    }

    #[test]
    fn linear_and_mlp_directions_find_the_informative_feature() {
        let (x, y) = problem(120, 6, 0.05);
        for kind in [ProbeKind::Linear, ProbeKind::Mlp] {
            let cfg = ProbeConfig {
                kind,
                task: Task::Binary,
                mlp: crate::probe::mlp::MlpConfig {
                    hidden: 32,
                    max_steps: 300,
                    ..Default::default()
                },
                ..ProbeConfig::default()
            };
            let fit = crate::probe::fit(&x, &Targets::Classes(y.clone()), &cfg).unwrap();
            let xtr = x.select(&fit.split.train);
            let xs = fit.standardiser.as_ref().unwrap().apply(&xtr);
            let dirs = standardised_directions(&fit, &xs, 3);
            assert_eq!(dirs.len(), if kind == ProbeKind::Linear { 1 } else { 3 });
            let target: Vec<f64> = fit.split.train.iter().map(|&i| y[i] as f64).collect();
            let (u, _) = to_raw_directions(
                &dirs,
                Some(&fit.standardiser.as_ref().unwrap().std),
                &xs,
                &target,
            );
            // Feature 0 carries the class (positive class: x0 > 0); the standardised top
            // direction is along it, and the raw direction (σ ⊙ v) still points to the class.
            assert!(
                u[0] > 0.0,
                "{kind:?}: oriented towards the positive class: {u:?}"
            );
            let norm = dirs[0].iter().map(|a| a * a).sum::<f64>().sqrt();
            let std_top: f64 = dirs[0][0].abs() / norm;
            assert!(
                std_top > 0.8,
                "{kind:?}: standardised top direction {:?}",
                dirs[0]
            );
        }
    }

    #[test]
    fn probe_node_on_tempo_features_fits_binary_multiclass_and_regression() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let act = dir.path().join("act");
        std::fs::create_dir_all(&act).unwrap();
        // 4 tempo classes, 12 clips each; feature 0 encodes the BPM, the rest is noise.
        let bpms = ["60", "90", "120", "150"];
        let (n, d) = (48, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let b: f32 = bpms[i % 4].parse().unwrap();
            data.push(b / 30.0 + 0.05 * (rng.random::<f32>() - 0.5));
            for _ in 1..d {
                data.push(rng.random::<f32>() - 0.5);
            }
            labels.push(bpms[i % 4]);
        }
        let mut ts = HashMap::new();
        ts.insert(
            "layer.2".to_string(),
            Tensor::from_vec(data, (n, d), &candle_core::Device::Cpu).unwrap(),
        );
        save_tensors(&act.join("features.safetensors"), &ts).unwrap();
        ActivationsIndex {
            concept: "tempos".into(),
            n,
            hidden: d,
            layers: vec![2],
            pooling: "mean".into(),
            classes: bpms.iter().map(|b| b.to_string()).collect(),
            labels: labels.iter().map(|b| b.to_string()).collect(),
            programs: vec![0; n],
            model: "test".into(),
            model_fingerprint: "test".into(),
            renderer: crate::data::RendererInfo::Builtin { version: 1 },
        }
        .write(&act)
        .unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let params = serde_json::json!({"concept": "tempos", "layer": 2, "kind": "linear",
            "iterations": 2, "trials": 1, "directions_k": 4, "seed": 0});
        let inputs = [crate::dag::NodeInput {
            name: "activations".into(),
            role: None,
            id: "a".into(),
            key: "k".into(),
            kind: "activations".into(),
            label: crate::dag::Label::default(),
            dir: act.clone(),
        }];
        let log_path = dir.path().join("log");
        let mut log = std::fs::File::create(&log_path).unwrap();
        let progress = |_: u64, _: u64, _: &str| {};
        let mut ctx = NodeCtx {
            id: "probe[tempos,L2,linear]",
            key: "k",
            params: &params,
            hints: &serde_json::Value::Null,
            inputs: &inputs,
            out_dir: &out,
            log_path: &log_path,
            log: &mut log,
            progress: &progress,
        };
        ProbeNode.run(&mut ctx).unwrap();
        let s = ProbeScores::read(&out).unwrap();
        let r2 = s.regression.as_ref().unwrap().test_r2.unwrap();
        assert!(r2 > 0.9, "{s:?}");
        assert!(out.join("regression/probe.json").is_file());
        assert_eq!(s.multiclass.confusion.len(), 4);
        for b in bpms {
            let c = &s.classes[b];
            assert_eq!(c.k, 1, "linear probes have one direction: {c:?}");
            let t = load_tensors(&out.join(&c.dir).join("directions.safetensors")).unwrap();
            assert_eq!(t["directions"].dims(), &[1, d]);
        }
        // The fastest class's direction points up the BPM feature, the slowest's down.
        let first = |b: &str| {
            let t = load_tensors(&out.join(format!("class/{b}/directions.safetensors"))).unwrap();
            t["directions"].to_vec2::<f32>().unwrap()[0][0]
        };
        assert!(
            first("150") > 0.5 && first("60") < -0.5,
            "{} {}",
            first("150"),
            first("60")
        );
        // Transfer onto the same features (docs/design.md §5): the judge's accuracy and the
        // regression probe's R² are those of a probe scored on its own training distribution.
        let xfer = dir.path().join("xfer");
        std::fs::create_dir_all(&xfer).unwrap();
        let inputs = [
            crate::dag::NodeInput {
                name: "L2".into(),
                kind: "probe".into(),
                dir: out.clone(),
                ..inputs[0].clone()
            },
            inputs[0].clone(),
        ];
        let params = serde_json::json!({"concept": "tempos", "layers": [2], "seed": 0});
        let hints = serde_json::json!({"train": "a", "test": "b"});
        let mut ctx = NodeCtx {
            id: "transfer[tempos]",
            key: "k",
            params: &params,
            hints: &hints,
            inputs: &inputs,
            out_dir: &xfer,
            log_path: &log_path,
            log: &mut log,
            progress: &progress,
        };
        super::super::transfer::TransferNode.run(&mut ctx).unwrap();
        let t = super::super::transfer::TransferScores::read(&xfer).unwrap();
        let layer = &t.layers[0];
        assert_eq!((t.n, t.unseen, layer.n), (48, 0, 48));
        // Chance is 0.25; this linear judge scores 0.625 on its own test split.
        let acc = layer.accuracy.unwrap();
        assert!(acc > 0.5, "{layer:?}");
        assert!(layer.ci_low.unwrap() <= acc && acc <= layer.ci_high.unwrap());
        let r2 = layer.r2.as_ref().unwrap();
        assert!(r2.r2.unwrap() > 0.9, "{r2:?}");
        assert!(r2.ci_low.unwrap() <= r2.r2.unwrap() && r2.r2.unwrap() <= r2.ci_high.unwrap());
        assert_eq!(t.best_layer, Some(2));
    }
}
