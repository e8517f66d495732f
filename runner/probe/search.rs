//! Random hyper-parameter search for the RFM, selected on the validation criterion.

use super::data::{Features, Targets, Task};
use super::error::{ProbeError, Result};
use super::rfm::{self, RfmHyper, RfmModel, RfmOptions, RfmTrace};
use candle_core::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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
///
/// On the CPU the trials after the first run concurrently, each on its own share of the
/// current pool's threads (see [`trial_workers`]): a fit on one thread keeps its core busy
/// through the phases that do not scale with threads (M's eigendecomposition, the triangular
/// solves, page faults), so two fits at a time on two cores finish sooner than the same fits one
/// after the other on both (2.24 s against 2.71 s for two fits at n = 2800, d = 1024). The first
/// trial runs alone on every thread and forms the Grams the others share. The hyper-parameters
/// are drawn up front in trial order, and the choice (highest criterion, ties to the earlier
/// trial) does not depend on which trial finishes first.
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
    let hypers: Vec<RfmHyper> = (0..trials.max(1))
        .map(|_| sample(&mut rng, iterations))
        .collect();
    // Every trial starts from M = I on the same rows: their Gram matrices are formed once.
    let shared = super::cpu::Shared::default();
    let fit = |h: &RfmHyper| {
        rfm::fit_rfm_shared(train, y_train, val, y_val, task, n_classes, h, opt, &shared)
    };
    let outcome = Mutex::new(Outcome {
        log: vec![None; hypers.len()],
        best: None,
        last_err: None,
    });
    let record = |i: usize, r: Result<(RfmModel, RfmTrace)>| {
        let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
        o.record(i, hypers[i], r);
    };
    record(0, fit(&hypers[0]));
    let threads = rayon::current_num_threads();
    let workers = if opt.on_tensors() {
        1
    } else {
        let outputs = y_train.outputs(task, n_classes);
        let bytes = trial_bytes(train.n, val.n, train.d, outputs, opt);
        opt.trial_workers
            .unwrap_or_else(|| trial_workers(threads, crate::sysmem::available(), bytes))
            .min(hypers.len() - 1)
            .max(1)
    };
    if workers <= 1 {
        for (i, h) in hypers.iter().enumerate().skip(1) {
            record(i, fit(h));
        }
    } else {
        let next = AtomicUsize::new(1);
        let per = (threads / workers).max(1);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    std::thread::Builder::new()
                        .name(format!("rfm-trials-{w}"))
                        .spawn_scoped(s, || {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(h) = hypers.get(i) else {
                                    return;
                                };
                                // The fit's own pool of `per` threads (thread spawns per
                                // trial, against fits of tens of milliseconds at least).
                                record(i, super::with_threads(Some(per), || fit(h)));
                            }
                        })
                        .map_err(|e| ProbeError::Numeric(format!("trial thread: {e}")))
                })
                .collect::<Result<_>>()?;
            for h in handles {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Ok(())
        })?;
    }
    let o = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
    let log = o.log.into_iter().flatten().collect();
    match o.best {
        Some((_, _, m, t)) => Ok((m, t, log)),
        None => Err(o.last_err.map(|(_, e)| e).expect("at least one trial ran")),
    }
}

/// What the trials produced so far: the log in trial order, the best fit (criterion, trial) and
/// the failure of the latest failed trial.
struct Outcome {
    log: Vec<Option<Trial>>,
    best: Option<(f64, usize, RfmModel, RfmTrace)>,
    last_err: Option<(usize, ProbeError)>,
}

impl Outcome {
    fn record(&mut self, i: usize, hyper: RfmHyper, r: Result<(RfmModel, RfmTrace)>) {
        match r {
            Ok((model, trace)) => {
                // Never NaN: a fit whose every iterate scored NaN is an error.
                let s = trace.val[trace.best_iter];
                self.log[i] = Some(Trial {
                    hyper,
                    val: s,
                    best_iter: trace.best_iter,
                    error: None,
                    ranks: trace.ranks.clone(),
                });
                let better = self
                    .best
                    .as_ref()
                    .is_none_or(|b| s > b.0 || (s == b.0 && i < b.1));
                if better {
                    self.best = Some((s, i, model, trace));
                }
            }
            Err(e) => {
                self.log[i] = Some(Trial {
                    hyper,
                    val: f64::NAN,
                    best_iter: 0,
                    error: Some(e.to_string()),
                    ranks: vec![],
                });
                if self.last_err.as_ref().is_none_or(|(j, _)| i > *j) {
                    self.last_err = Some((i, e));
                }
            }
        }
    }
}

/// How many trials run at once: one per thread of the pool, as many as the memory left allows
/// at `bytes` a trial (half of what is available, so that the rest of the process and the
/// system keep room); at least one.
pub fn trial_workers(threads: usize, available: Option<u64>, bytes: f64) -> usize {
    let by_memory = available.map_or(usize::MAX, |a| (a as f64 * 0.5 / bytes.max(1.0)) as usize);
    threads.min(by_memory).max(1)
}

/// Peak bytes of one CPU fit at n training rows, nv validation rows, width d and c outputs:
/// the n×n Gram, kernel and weights (and the gradient Gram's W² where that route runs), the
/// validation cross kernels, and the pre-gradients with their product (c·n rows of d).
pub fn trial_bytes(n: usize, nv: usize, d: usize, c: usize, opt: &RfmOptions) -> f64 {
    let (n, nv, d, c) = (n as f64, nv as f64, d as f64, c as f64);
    let words = 4.0 * n * n + 2.0 * nv * n + 3.0 * c * n * d + 2.0 * n * d;
    let size = if opt.dtype == DType::F64 { 8.0 } else { 4.0 };
    words * size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::synthetic;

    fn trace(val: f64) -> RfmTrace {
        RfmTrace {
            ms: vec![],
            val: vec![val],
            best_iter: 0,
            early_stopped: false,
            fallback_reg: false,
            ranks: vec![2],
            seconds: vec![],
        }
    }

    fn model(tag: f64) -> RfmModel {
        RfmModel {
            hyper: sample(&mut ChaCha8Rng::seed_from_u64(0), 1),
            centres: Features::new(1, 2, vec![0.0, 0.0]).unwrap(),
            m: vec![1.0, 0.0, 0.0, 1.0],
            alpha: vec![tag],
            outputs: 1,
            factor: None,
        }
    }

    /// Trials finish in any order when they run concurrently: the best is still the highest
    /// criterion with ties to the earliest trial, the log stays in trial order and the error
    /// returned when all fail is the latest trial's.
    #[test]
    fn the_choice_does_not_depend_on_the_order_trials_finish() {
        let h = sample(&mut ChaCha8Rng::seed_from_u64(1), 1);
        let mut o = Outcome {
            log: vec![None; 5],
            best: None,
            last_err: None,
        };
        o.record(3, h, Ok((model(3.0), trace(0.9))));
        o.record(4, h, Err(ProbeError::Numeric("four".into())));
        o.record(1, h, Ok((model(1.0), trace(0.9))));
        o.record(2, h, Ok((model(2.0), trace(0.5))));
        o.record(0, h, Err(ProbeError::Numeric("zero".into())));
        let (s, i, m, _) = o.best.as_ref().unwrap();
        assert_eq!((*s, *i, m.alpha[0]), (0.9, 1, 1.0));
        assert_eq!(o.last_err.as_ref().unwrap().0, 4);
        let vals: Vec<f64> = o.log.iter().map(|t| t.as_ref().unwrap().val).collect();
        assert!(vals[0].is_nan() && vals[4].is_nan());
        assert_eq!(&vals[1..4], &[0.9, 0.5, 0.9]);
    }

    /// Concurrent trials (two at a time, one thread each) find what the trials one after the
    /// other find: the same hyper-parameters in the same order, the same criteria (to the
    /// rounding that thread counts change) and the same choice.
    #[test]
    fn concurrent_trials_equal_sequential_ones() {
        let (x, cls) = synthetic::concept(240, 12, 3, 5);
        let y: Vec<usize> = cls.iter().map(|&c| usize::from(c == 1)).collect();
        let (tr, va) = (
            x.select(&(0..160).collect::<Vec<_>>()),
            x.select(&(160..240).collect::<Vec<_>>()),
        );
        let (ytr, yva) = (
            Targets::Classes(y[..160].to_vec()),
            Targets::Classes(y[160..].to_vec()),
        );
        let run = |workers: usize| {
            let opt = RfmOptions {
                dtype: DType::F64,
                trial_workers: Some(workers),
                ..Default::default()
            };
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap()
                .install(|| search(&tr, &ytr, &va, &yva, Task::Binary, 2, 7, 3, 11, &opt))
                .unwrap()
        };
        let (m1, t1, log1) = run(1);
        let (m2, t2, log2) = run(2);
        assert_eq!(log1.len(), 7);
        for (a, b) in log1.iter().zip(&log2) {
            assert_eq!(a.hyper, b.hyper);
            assert!((a.val - b.val).abs() <= 1e-9, "{} vs {}", a.val, b.val);
        }
        assert_eq!(m1.hyper, m2.hyper);
        assert_eq!(t1.best_iter, t2.best_iter);
    }

    /// One trial a thread, fewer when half the memory left cannot hold them.
    #[test]
    fn trial_workers_fit_the_threads_and_the_memory() {
        let gb = (1u64 << 30) as f64;
        assert_eq!(trial_workers(4, None, 3.0 * gb), 4);
        assert_eq!(trial_workers(2, Some(1 << 40), 3.0 * gb), 2);
        assert_eq!(trial_workers(16, Some(20 << 30), 3.0 * gb), 3);
        assert_eq!(trial_workers(8, Some(0), 3.0 * gb), 1);
    }
}
