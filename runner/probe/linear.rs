//! Linear baseline: ridge regression on the targets (a ridge classifier on 0/1 or one-hot
//! targets for classification), λ chosen on the validation split from a fixed grid.

use super::data::{Features, Targets, Task};
use super::error::Result;
use super::metrics;
use super::solve;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// λ grid, relative to the mean diagonal of XᵀX (so it is scale-free).
pub const LAMBDA_GRID: [f64; 9] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// d×c row-major.
    pub w: Vec<f64>,
    /// c.
    pub b: Vec<f64>,
    pub d: usize,
    pub outputs: usize,
    pub lambda: f64,
}

impl LinearModel {
    pub fn predict(&self, x: &Features) -> Vec<f64> {
        let c = self.outputs;
        let mut out = vec![0.0; x.n * c];
        for i in 0..x.n {
            let row = x.row(i);
            for k in 0..c {
                out[i * c + k] = self.b[k]
                    + row
                        .iter()
                        .enumerate()
                        .map(|(j, v)| *v as f64 * self.w[j * c + k])
                        .sum::<f64>();
            }
        }
        out
    }
}

/// Fits ridge for every λ of the grid and keeps the best on validation.
pub fn fit(
    train: &Features,
    y_train: &Targets,
    val: &Features,
    y_val: &Targets,
    task: Task,
    n_classes: usize,
) -> Result<LinearModel> {
    fit_on(train, y_train, val, y_val, task, n_classes, &Device::Cpu)
}

/// `fit` with XᵀX, Xᵀy and the solves on `dev` (f64; the blocked device Cholesky off the CPU).
pub fn fit_on(
    train: &Features,
    y_train: &Targets,
    val: &Features,
    y_val: &Targets,
    task: Task,
    n_classes: usize,
    dev: &Device,
) -> Result<LinearModel> {
    let (n, d) = (train.n, train.d);
    let (c, y) = y_train.matrix(task, n_classes);
    // Centre X and Y so the bias is not penalised.
    let mut xm = vec![0.0f64; d];
    for i in 0..n {
        for (a, v) in xm.iter_mut().zip(train.row(i)) {
            *a += *v as f64 / n as f64;
        }
    }
    let mut ym = vec![0.0f64; c];
    for i in 0..n {
        for k in 0..c {
            ym[k] += y[i * c + k] / n as f64;
        }
    }
    let xc: Vec<f64> = (0..n * d)
        .map(|t| train.data[t] as f64 - xm[t % d])
        .collect();
    let yc: Vec<f64> = (0..n * c).map(|t| y[t] - ym[t % c]).collect();
    let xt = Tensor::from_vec(xc, (n, d), dev)?;
    let yt = Tensor::from_vec(yc, (n, c), dev)?;
    let gram_t = xt.t()?.matmul(&xt)?;
    let xty_t = xt.t()?.matmul(&yt)?;
    let gram = gram_t.flatten_all()?.to_vec1::<f64>()?;
    let xty = xty_t.flatten_all()?.to_vec1::<f64>()?;
    let scale = (0..d).map(|i| gram[i * d + i]).sum::<f64>() / d as f64;
    let mut best: Option<(f64, LinearModel)> = None;
    for rel in LAMBDA_GRID {
        let lambda = rel * scale.max(1e-12);
        let w = if dev.is_cpu() {
            solve::solve_regularised::<f64>(&gram, d, lambda, &xty, c)?.0
        } else {
            let (w, _) = super::device::cholesky(&gram_t, lambda, &xty_t)?;
            w.flatten_all()?.to_vec1::<f64>()?
        };
        let b: Vec<f64> = (0..c)
            .map(|k| ym[k] - (0..d).map(|j| xm[j] * w[j * c + k]).sum::<f64>())
            .collect();
        let model = LinearModel {
            w,
            b,
            d,
            outputs: c,
            lambda,
        };
        let s = metrics::score(task, &model.predict(val), c, y_val).selection(task);
        if best.as_ref().is_none_or(|bm| s > bm.0) {
            best = Some((s, model));
        }
    }
    Ok(best.map(|b| b.1).expect("grid is not empty"))
}
