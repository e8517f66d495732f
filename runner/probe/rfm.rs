//! The Recursive Feature Machine: kernel ridge regression with a learned Mahalanobis metric M,
//! updated by the normalised AGOP, keeping the iterate best on validation (xRFM's `RFM.fit`
//! with `method='lstsq'`, `return_best_params=True`, `early_stop_rfm=True`).

use super::data::{Features, Targets, Task};
use super::error::{ProbeError, Result};
use super::kernel::KernelParams;
use super::metrics::{self, Scores};
use super::{cpu, device};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

/// One RFM configuration (a point of the random search, or fixed by the user).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfmHyper {
    /// Ridge λ added to the kernel diagonal.
    pub reg: f64,
    pub bandwidth: f64,
    pub q: f64,
    /// Centre the gradients before forming the AGOP.
    pub centre: bool,
    /// Maximum number of AGOP updates (T).
    pub iterations: usize,
}

impl RfmHyper {
    pub fn validate(&self) -> Result<()> {
        let ok = self.reg >= 0.0
            && self.reg.is_finite()
            && self.bandwidth > 0.0
            && self.bandwidth.is_finite()
            && self.q > 0.0
            && self.q <= 2.0;
        if ok {
            Ok(())
        } else {
            Err(ProbeError::Hyper(format!(
                "need reg ≥ 0, bandwidth > 0 and 0 < q ≤ 2, got {self:?}"
            )))
        }
    }

    pub fn kernel(&self) -> KernelParams {
        KernelParams {
            bandwidth: self.bandwidth,
            q: self.q,
        }
    }
}

/// Run-time knobs that do not change the mathematics (beyond rounding and `truncate_tol`).
#[derive(Debug, Clone)]
pub struct RfmOptions {
    /// Compute dtype of the big matmuls and of the kernel solve (F32 default, as the reference;
    /// F64 for reference checks).
    pub dtype: DType,
    /// Early stop when validation is worse than best by this factor (reference: 1.1).
    pub early_stop_multiplier: f64,
    /// Rows of z per AGOP batch on a device (memory bound: batch × n kernel entries per output).
    pub agop_batch: usize,
    /// CPU: drop the trailing eigenvalues of each new M whose sum is at most this fraction of
    /// its trace (see `cpu.rs`); `None` = 1e-6 in f32, 1e-12 in f64 (below the rounding of the
    /// distances either way). 0 keeps every positive eigenvalue.
    pub truncate_tol: Option<f64>,
    /// Record M after every update in the trace (d×d each; for the reference checks).
    pub keep_ms: bool,
    /// Where the fit runs: the CPU kernels, or candle tensor operations on this device.
    pub device: Device,
    /// Run the tensor-operation path even on the CPU (the path a GPU takes; for tests).
    pub tensor_path: bool,
    /// CPU: form the AGOP through the n×n gradient Gram (cheaper for many outputs) or from the
    /// explicit pre-gradients; `None` picks the cheaper by flop count.
    pub gradient_gram: Option<bool>,
    /// CPU search: trials run at once (`None`: one per thread, as memory allows; see
    /// `search::trial_workers`).
    pub trial_workers: Option<usize>,
}

impl Default for RfmOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            early_stop_multiplier: 1.1,
            agop_batch: 4096,
            truncate_tol: None,
            keep_ms: false,
            device: Device::Cpu,
            tensor_path: false,
            gradient_gram: None,
            trial_workers: None,
        }
    }
}

impl RfmOptions {
    pub(crate) fn tol(&self) -> f64 {
        self.truncate_tol.unwrap_or(if self.dtype == DType::F64 {
            1e-12
        } else {
            1e-6
        })
    }

    /// Whether the fit runs as tensor operations on `device` rather than on the CPU kernels.
    pub fn on_tensors(&self) -> bool {
        self.tensor_path || !self.device.is_cpu()
    }
}

/// The metric as an eigendecomposition `M = V diag(λ) Vᵀ`, d×r (kept by CPU fits).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFactor {
    pub d: usize,
    /// d×r row-major, orthonormal columns.
    pub v: Vec<f64>,
    /// r eigenvalues, descending.
    pub lam: Vec<f64>,
}

/// A fitted kernel machine: `f(z) = Σ_i α_i k_M(x_i, z)`.
#[derive(Debug, Clone)]
pub struct RfmModel {
    pub hyper: RfmHyper,
    /// Training rows (the kernel centres).
    pub centres: Features,
    /// d×d row-major.
    pub m: Vec<f64>,
    /// n×c row-major.
    pub alpha: Vec<f64>,
    pub outputs: usize,
    /// M as a (possibly truncated) eigendecomposition, when the fit produced one: predictions
    /// then run in its r coordinates and the directions need no d×d eigenproblem.
    pub factor: Option<MetricFactor>,
}

/// What the iterations produced, for diagnostics and the reference checks.
#[derive(Debug, Clone)]
pub struct RfmTrace {
    /// M after each AGOP update (index t = M used in iteration t+1).
    pub ms: Vec<Vec<f64>>,
    /// Validation score (selection criterion, larger is better) of each iteration.
    pub val: Vec<f64>,
    /// Iteration whose (α, M) was kept.
    pub best_iter: usize,
    pub early_stopped: bool,
    /// The solve needed the reference's fallback regularisation at some iteration.
    pub fallback_reg: bool,
    /// Rank of the metric each iteration worked in (d while M = I).
    pub ranks: Vec<usize>,
    /// Wall seconds of each iteration (the estimate's calibration prices iterations by rank).
    pub seconds: Vec<f64>,
}

impl RfmModel {
    pub fn d(&self) -> usize {
        self.centres.d
    }

    /// Row-major n×c outputs for the rows of `z`, computed in `dtype`.
    pub fn predict_with(&self, z: &Features, dtype: DType) -> Result<Vec<f64>> {
        if z.d != self.d() {
            return Err(ProbeError::DimMismatch {
                expected: self.d(),
                got: z.d,
            });
        }
        // The CPU kernels take M as its factor, or as nothing at all when M = I (no d×d
        // product); any other dense M goes through the tensor path.
        let f = self.factor.as_ref();
        if f.is_some() || super::directions::is_identity(&self.m, self.d()) {
            let (c, p) = (self.outputs, self.hyper.kernel());
            return Ok(match dtype {
                DType::F64 => cpu::predict::<f64>(&self.centres, f, &self.alpha, c, p, z),
                _ => cpu::predict::<f32>(&self.centres, f, &self.alpha, c, p, z),
            });
        }
        device::predict(self, z, dtype, &Device::Cpu)
    }

    pub fn predict(&self, z: &Features) -> Result<Vec<f64>> {
        self.predict_with(z, DType::F32)
    }
}

/// Fits one RFM with fixed hyper-parameters on (train, val): iterate, keep the best iterate.
#[allow(clippy::too_many_arguments)]
pub fn fit_rfm(
    train: &Features,
    y_train: &Targets,
    val: &Features,
    y_val: &Targets,
    task: Task,
    n_classes: usize,
    h: &RfmHyper,
    opt: &RfmOptions,
) -> Result<(RfmModel, RfmTrace)> {
    fit_rfm_shared(
        train,
        y_train,
        val,
        y_val,
        task,
        n_classes,
        h,
        opt,
        &cpu::Shared::default(),
    )
}

/// `fit_rfm` reusing the work in `shared` (the search's fits all see the same rows).
#[allow(clippy::too_many_arguments)]
pub fn fit_rfm_shared(
    train: &Features,
    y_train: &Targets,
    val: &Features,
    y_val: &Targets,
    task: Task,
    n_classes: usize,
    h: &RfmHyper,
    opt: &RfmOptions,
    shared: &cpu::Shared,
) -> Result<(RfmModel, RfmTrace)> {
    h.validate()?;
    if val.d != train.d {
        return Err(ProbeError::DimMismatch {
            expected: train.d,
            got: val.d,
        });
    }
    let (c, y) = y_train.matrix(task, n_classes);
    let score = |pred: &[f64]| metrics::score(task, pred, c, y_val).selection(task);
    // The reference compares raw metrics: "worse by ×1.1" means mse > best·1.1 or
    // auc < best/1.1; `selection` negates MSE, so undo that here.
    let worse = |s: f64, b: f64| -> bool {
        match task {
            Task::Regression => -s > -b * opt.early_stop_multiplier,
            _ => s < b / opt.early_stop_multiplier,
        }
    };
    let (alpha, m, factor, trace) = if opt.on_tensors() {
        let (alpha, m, trace) = device::fit(train, &y, c, val, &score, &worse, h, opt)?;
        (alpha, m, None, trace)
    } else {
        let f = match opt.dtype {
            DType::F64 => cpu::fit::<f64>(train, &y, c, val, &score, &worse, h, opt, shared)?,
            _ => cpu::fit::<f32>(train, &y, c, val, &score, &worse, h, opt, shared)?,
        };
        let d = train.d;
        let m = match &f.factor {
            Some(factor) => cpu::dense(factor),
            None => (0..d * d)
                .map(|t| if t / d == t % d { 1.0 } else { 0.0 })
                .collect(),
        };
        (f.alpha, m, f.factor, f.trace)
    };
    Ok((
        RfmModel {
            hyper: *h,
            centres: train.clone(),
            m,
            alpha,
            outputs: c,
            factor,
        },
        trace,
    ))
}

/// Validation/test scores of a fitted model.
pub fn scores(model: &RfmModel, x: &Features, y: &Targets, task: Task) -> Result<Scores> {
    let pred = model.predict(x)?;
    Ok(metrics::score(task, &pred, model.outputs, y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, d: usize, salt: usize) -> Features {
        let data = (0..n * d)
            .map(|t| (((t * 37 + salt * 11) % 29) as f32) * 0.125 - 1.75)
            .collect();
        Features::new(n, d, data).unwrap()
    }

    /// M = I with no factor (a fit that kept its first iterate) predicts through the CPU kernels
    /// without M; a rotated, scaled factor through its coordinates: both as the tensor path
    /// computes the same dense M.
    #[test]
    fn cpu_predictions_match_the_tensor_path() {
        let (n, d, c) = (23, 5, 2);
        let alpha: Vec<f64> = (0..n * c).map(|t| ((t * 7) % 5) as f64 - 2.0).collect();
        let hyper = RfmHyper {
            reg: 1e-3,
            bandwidth: 4.0,
            q: 1.0,
            centre: false,
            iterations: 1,
        };
        let identity: Vec<f64> = (0..d * d)
            .map(|t| f64::from(u8::from(t / d == t % d)))
            .collect();
        // An orthonormal basis of a plane in the first two coordinates, rotated by θ.
        let (s, k) = (0.6f64, 0.8f64);
        let mut v = vec![0.0; d * 2];
        (v[0], v[1], v[2], v[3]) = (k, -s, s, k);
        let factor = MetricFactor {
            d,
            v,
            lam: vec![1.0, 0.25],
        };
        let z = features(7, d, 3);
        for (m, factor) in [(identity, None), (cpu::dense(&factor), Some(factor))] {
            let model = RfmModel {
                hyper,
                centres: features(n, d, 0),
                m,
                alpha: alpha.clone(),
                outputs: c,
                factor,
            };
            let got = model.predict_with(&z, DType::F64).unwrap();
            let want = device::predict(&model, &z, DType::F64, &Device::Cpu).unwrap();
            assert_eq!(got.len(), 7 * c);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
