//! `transfer[<concept>,<test set>]`: the concept's multiclass probes, fitted per layer on the
//! spec's `[data]` (e.g. SynTheory), applied to the activations of another dataset named in
//! `[probe] evaluate_on` (e.g. the user's labelled folder): per layer the accuracy on the test
//! set with a percentile-bootstrap 95 % CI (docs/design.md §5, docs/contracts.md).
//!
//! Inputs: `L<l>` = the probe node of each layer (its `multiclass/` fit and class list) and
//! `activations` = the test set's activations. Test rows whose class the probes never saw are
//! counted as `unseen` and left out of the accuracy (a probe cannot name them).

use serde::{Deserialize, Serialize};

use super::activations::ActivationsIndex;
use super::contract::Output;
use super::probe::ProbeScores;
use super::{StageError, load_tensors};
use crate::dag::{NodeCtx, NodeError, NodeKind};
use crate::probe::{Features, ProbeFit};

/// Bootstrap resamples of the per-layer accuracy CI.
const BOOTSTRAP_REPS: usize = 2000;

#[derive(Deserialize)]
struct Params {
    concept: String,
    layers: Vec<usize>,
    seed: u64,
}

/// `transfer.json`: a train set → test set block of the probe table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferScores {
    pub concept: String,
    /// What the probes were fitted on (e.g. `SynTheory`).
    pub train: String,
    /// What they are evaluated on (e.g. `folder fixtures/music`).
    pub test: String,
    /// Test rows (clips) in total.
    pub n: usize,
    /// Test rows whose class is not among the probes' classes (left out of the accuracy).
    pub unseen: usize,
    /// Classes of the test set, in the concept's order.
    pub test_classes: Vec<String>,
    pub layers: Vec<TransferLayer>,
    /// The layer with the best test accuracy (ties: the lower layer), if any was scored.
    pub best_layer: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferLayer {
    pub layer: usize,
    /// Accuracy on the test set's seen rows with its bootstrap 95 % CI (null when none).
    pub accuracy: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Rows scored.
    pub n: usize,
    /// The same probes' accuracy on their own test split, for comparison.
    pub in_domain_test_accuracy: Option<f64>,
    /// Tempos: the regression probe's R² on the test set's BPM with its bootstrap 95 % CI, and
    /// its in-domain test R² (absent for other concepts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<RegressionTransfer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionTransfer {
    pub r2: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub n: usize,
    pub in_domain_test_r2: Option<f64>,
}

/// R² of `pred` against `y` with a percentile-bootstrap 95 % CI over rows (resamples whose R² is
/// undefined, e.g. all one BPM, are skipped).
fn r2_with_ci(pred: &[f64], y: &[f64], seed: u64) -> (f64, f64, f64) {
    use rand::{Rng, SeedableRng};
    let r2 = crate::probe::metrics::r2;
    let value = r2(pred, y);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut stats: Vec<f64> = (0..BOOTSTRAP_REPS)
        .map(|_| {
            let idx: Vec<usize> = (0..y.len()).map(|_| rng.random_range(0..y.len())).collect();
            let p: Vec<f64> = idx.iter().map(|&i| pred[i]).collect();
            let t: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
            r2(&p, &t)
        })
        .filter(|v| v.is_finite())
        .collect();
    if stats.is_empty() || !value.is_finite() {
        return (value, f64::NAN, f64::NAN);
    }
    stats.sort_by(f64::total_cmp);
    let q = |f: f64| stats[((stats.len() - 1) as f64 * f).round() as usize];
    (value, q(0.025), q(0.975))
}

impl Output for TransferScores {
    const FILE: &'static str = "transfer.json";
}

pub struct TransferNode;

impl NodeKind for TransferNode {
    fn name(&self) -> &'static str {
        "transfer"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: Params = ctx.params_as()?;
        // Descriptions only (they name paths, so they are hints, not params).
        let hint = |k: &str| {
            ctx.hints
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let (train, test) = (hint("train"), hint("test"));
        let act = ctx.input("activations")?;
        let index = ActivationsIndex::read(act)?;
        let tensors = load_tensors(&act.join("features.safetensors"))?;
        let mut layers = Vec::new();
        let mut unseen = 0;
        for &l in &p.layers {
            let probe = ctx.input(&format!("L{l}"))?;
            let scores = ProbeScores::read(probe)?;
            let classes = &scores.multiclass.classes;
            let fit = ProbeFit::load(&probe.join("multiclass"))?;
            let t = tensors.get(&format!("layer.{l}")).ok_or_else(|| {
                StageError::Input(format!("the test activations have no layer {l}"))
            })?;
            let x = Features::from_tensor(t)?;
            if x.d != fit.d {
                return Err(StageError::Input(format!(
                    "layer {l}: the test features have {} dimensions, the probe {}; were both extracted with one model?",
                    x.d, fit.d
                ))
                .into());
            }
            let truth: Vec<Option<usize>> = index
                .labels
                .iter()
                .map(|c| classes.iter().position(|k| k == c))
                .collect();
            unseen = truth.iter().filter(|t| t.is_none()).count();
            let pred = fit.predict_classes(&x)?;
            let hits: Vec<f64> = truth
                .iter()
                .zip(&pred)
                .filter_map(|(t, p)| t.map(|t| f64::from(u8::from(t == *p))))
                .collect();
            let e = crate::eval::stats::bootstrap_mean(&hits, BOOTSTRAP_REPS, p.seed ^ l as u64);
            let f = |v: f64| v.is_finite().then_some(v);
            // Tempo labels are numbers: the regression probe is scored on every row, seen BPM
            // or not (a regression can name an unseen tempo).
            let values: Option<Vec<f64>> = index
                .labels
                .iter()
                .map(|c| c.parse::<f64>().ok().filter(|v| v.is_finite()))
                .collect();
            let r2 = match (&scores.regression, values) {
                (Some(reg), Some(y)) if !y.is_empty() => {
                    let fit = ProbeFit::load(&probe.join(&reg.dir))?;
                    let pred = fit.predict(&x)?;
                    let (v, lo, hi) = r2_with_ci(&pred, &y, p.seed ^ l as u64);
                    Some(RegressionTransfer {
                        r2: f(v),
                        ci_low: f(lo),
                        ci_high: f(hi),
                        n: y.len(),
                        in_domain_test_r2: reg.test_r2,
                    })
                }
                _ => None,
            };
            layers.push(TransferLayer {
                layer: l,
                accuracy: f(e.value),
                ci_low: f(e.ci_low),
                ci_high: f(e.ci_high),
                n: hits.len(),
                in_domain_test_accuracy: scores.multiclass.test_acc,
                r2,
            });
        }
        let best_layer = layers
            .iter()
            .filter_map(|r| r.accuracy.map(|a| (a, r.layer)))
            .fold(None, |best: Option<(f64, usize)>, (a, l)| match best {
                Some((b, _)) if b >= a => best,
                _ => Some((a, l)),
            })
            .map(|(_, l)| l);
        ctx.log(&format!(
            "{} -> {}: {} rows ({unseen} of unseen classes), best layer {best_layer:?}",
            train, test, index.n
        ));
        TransferScores {
            concept: p.concept,
            train,
            test,
            n: index.n,
            unseen,
            test_classes: index.classes.clone(),
            layers,
            best_layer,
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}
