//! The Recursive Feature Machine: kernel ridge regression with a learned Mahalanobis metric M,
//! updated by the normalised AGOP, keeping the iterate best on validation (xRFM's `RFM.fit`
//! with `method='lstsq'`, `return_best_params=True`, `early_stop_rfm=True`).

use super::data::{Features, Targets, Task};
use super::error::{ProbeError, Result};
use super::kernel::{self, KernelParams};
use super::metrics::{self, Scores};
use super::solve;
use candle_core::{DType, Device, Tensor};
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

/// Run-time knobs that do not change the mathematics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmOptions {
    /// Compute dtype of the big matmuls and of the kernel solve (F32 default, as the reference;
    /// F64 for reference checks).
    pub dtype: DType,
    /// Early stop when validation is worse than best by this factor (reference: 1.1).
    pub early_stop_multiplier: f64,
    /// Rows of z per AGOP batch (memory bound: batch × n kernel entries per output).
    pub agop_batch: usize,
}

impl Default for RfmOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            early_stop_multiplier: 1.1,
            agop_batch: 4096,
        }
    }
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
}

fn to_tensor(v: &[f64], shape: (usize, usize), dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

struct Fitted {
    alpha: Vec<f64>,
    fallback: bool,
    /// Train–train gradient weights, reused by the AGOP of the same iteration.
    w: Tensor,
}

/// α = (K + λI)⁻¹ Y for the current M.
fn fit_alpha(x: &Tensor, xm: &Tensor, y: &[f64], c: usize, h: &RfmHyper) -> Result<Fitted> {
    let n = x.dim(0)?;
    let t0 = std::time::Instant::now();
    let (kv, w) = kernel::self_kernel_and_weights(x, xm, h.kernel())?;
    if std::env::var_os("RFMX_PROFILE").is_some() {
        eprintln!("  kernel matrix: {:.3}s", t0.elapsed().as_secs_f64());
    }
    let (alpha, fallback) = if x.dtype() == DType::F64 {
        solve::solve_regularised::<f64>(&kv, n, h.reg, y, c)?
    } else {
        solve::solve_regularised::<f32>(&kv, n, h.reg, y, c)?
    };
    Ok(Fitted { alpha, fallback, w })
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
        let d = self.d();
        let x = self.centres.to_tensor(dtype)?;
        let m = kernel::Metric::new(to_tensor(&self.m, (d, d), dtype)?)?;
        let a = to_tensor(&self.alpha, (self.centres.n, self.outputs), dtype)?;
        let xm = m.apply(&x)?;
        let zt = z.to_tensor(dtype)?;
        let p = kernel::predict(&zt, &x, &xm, &m, &a, self.hyper.kernel())?;
        Ok(p.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
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
    h.validate()?;
    if val.d != train.d {
        return Err(ProbeError::DimMismatch {
            expected: train.d,
            got: val.d,
        });
    }
    let (n, d) = (train.n, train.d);
    let (c, y) = y_train.matrix(task, n_classes);
    let x = train.to_tensor(opt.dtype)?;
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    let mut trace = RfmTrace {
        ms: vec![],
        val: vec![],
        best_iter: 0,
        early_stopped: false,
        fallback_reg: false,
    };
    let mut best: Option<(f64, Vec<f64>, Vec<f64>)> = None; // (score, alpha, M)

    let val_t = val.to_tensor(opt.dtype)?;
    let eval = |xm: &Tensor, m: &kernel::Metric, alpha: &Tensor| -> Result<f64> {
        let p = kernel::predict(&val_t, &x, xm, m, alpha, h.kernel())?;
        let pred = p.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        Ok(metrics::score(task, &pred, c, y_val).selection(task))
    };
    // The reference compares raw metrics: "worse by ×1.1" means mse > best·1.1 or
    // auc < best/1.1; `selection` negates MSE, so undo that here.
    let worse = |s: f64, b: f64| -> bool {
        match task {
            Task::Regression => -s > -b * opt.early_stop_multiplier,
            _ => s < b / opt.early_stop_multiplier,
        }
    };

    // RFMX_PROFILE=1 prints per-phase wall times to stderr (for the benchmark).
    let profile = std::env::var_os("RFMX_PROFILE").is_some();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: &str, it: usize| {
        if profile {
            eprintln!("rfm it {it} {what}: {:.3}s", clock.elapsed().as_secs_f64());
            clock = std::time::Instant::now();
        }
    };
    for it in 0..=h.iterations {
        let mt = kernel::Metric::new(to_tensor(&m, (d, d), opt.dtype)?)?;
        let xm = mt.apply(&x)?;
        lap("x·M", it);
        let fitted = fit_alpha(&x, &xm, &y, c, h)?;
        lap("kernel + solve", it);
        trace.fallback_reg |= fitted.fallback;
        let at = to_tensor(&fitted.alpha, (n, c), opt.dtype)?;
        let s = eval(&xm, &mt, &at)?;
        lap("validation", it);
        trace.val.push(s);
        // Strict improvement, as the reference (`current > best`); NaN never improves.
        if best.as_ref().is_none_or(|b| s > b.0) && !s.is_nan() {
            best = Some((s, fitted.alpha.clone(), m.clone()));
            trace.best_iter = it;
        }
        if it == h.iterations {
            break; // the reference's final refit after the last update
        }
        if best.as_ref().is_some_and(|b| worse(s, b.0)) {
            trace.early_stopped = true;
            break;
        }
        let mut a = kernel::agop(
            &x,
            &xm,
            &mt,
            &at,
            h.kernel(),
            h.centre,
            opt.agop_batch,
            Some(&fitted.w),
        )?;
        kernel::normalise(&mut a);
        lap("agop", it);
        m = a;
        trace.ms.push(m.clone());
    }
    let (_, alpha, m) = best
        .ok_or_else(|| ProbeError::Numeric("validation score was NaN at every iteration".into()))?;
    Ok((
        RfmModel {
            hyper: *h,
            centres: train.clone(),
            m,
            alpha,
            outputs: c,
        },
        trace,
    ))
}

/// Validation/test scores of a fitted model.
pub fn scores(model: &RfmModel, x: &Features, y: &Targets, task: Task) -> Result<Scores> {
    let pred = model.predict(x)?;
    Ok(metrics::score(task, &pred, model.outputs, y))
}
