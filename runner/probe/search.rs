//! Random hyper-parameter search for the RFM, selected on the validation criterion.

use super::data::{Features, Targets, Task};
use super::error::Result;
use super::rfm::{self, RfmHyper, RfmModel, RfmOptions, RfmTrace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One evaluated configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub hyper: RfmHyper,
    /// Best validation criterion reached (AUC, or −MSE for regression).
    pub val: f64,
    pub best_iter: usize,
    /// Set when the fit failed; the trial is then skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rank of M at each iteration run (the first is d): what the fit cost, for benchmarks and
    /// the estimate's check. Not part of the stored log (a loaded log has none).
    #[serde(skip)]
    pub ranks: Vec<usize>,
}

/// λ ~ logU(1e-5, 10), L ~ logU(1, 100), centring ∈ {T, F}, q ~ U(0.7, 1.4).
pub fn sample(rng: &mut impl Rng, iterations: usize) -> RfmHyper {
    let log_u = |rng: &mut dyn rand::RngCore, lo: f64, hi: f64| -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * rng.random::<f64>()).exp()
    };
    RfmHyper {
        reg: log_u(rng, 1e-5, 10.0),
        bandwidth: log_u(rng, 1.0, 100.0),
        centre: rng.random_bool(0.5),
        q: 0.7 + 0.7 * rng.random::<f64>(),
        iterations,
    }
}

/// Fits `trials` sampled configurations and returns the best (ties keep the earlier trial).
/// A configuration whose fit fails numerically is recorded and skipped; if all fail the last
/// error is returned.
#[allow(clippy::too_many_arguments)]
pub fn search(
    train: &Features,
    y_train: &Targets,
    val: &Features,
    y_val: &Targets,
    task: Task,
    n_classes: usize,
    trials: usize,
    iterations: usize,
    seed: u64,
    opt: &RfmOptions,
) -> Result<(RfmModel, RfmTrace, Vec<Trial>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EA2C4);
    let mut best: Option<(f64, RfmModel, RfmTrace)> = None;
    let mut log = Vec::with_capacity(trials);
    let mut last_err = None;
    // Every trial starts from M = I on the same rows: their Gram matrices are formed once.
    let mut shared = super::cpu::Shared::default();
    for _ in 0..trials.max(1) {
        let h = sample(&mut rng, iterations);
        match rfm::fit_rfm_shared(
            train,
            y_train,
            val,
            y_val,
            task,
            n_classes,
            &h,
            opt,
            &mut shared,
        ) {
            Ok((model, trace)) => {
                let s = trace.val[trace.best_iter];
                log.push(Trial {
                    hyper: h,
                    val: s,
                    best_iter: trace.best_iter,
                    error: None,
                    ranks: trace.ranks.clone(),
                });
                if best.as_ref().is_none_or(|b| s > b.0) {
                    best = Some((s, model, trace));
                }
            }
            Err(e) => {
                log.push(Trial {
                    hyper: h,
                    val: f64::NAN,
                    best_iter: 0,
                    error: Some(e.to_string()),
                    ranks: vec![],
                });
                last_err = Some(e);
            }
        }
    }
    match best {
        Some((_, m, t)) => Ok((m, t, log)),
        None => Err(last_err.expect("at least one trial ran")),
    }
}
