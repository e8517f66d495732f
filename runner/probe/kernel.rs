//! The Mahalanobis Laplace-type kernel `k_M(x,z) = exp(-‖x−z‖_M^q / L^q)`, its closed-form
//! gradients and the AGOP, all as a few dense matmuls (no n×n×d tensor is ever formed).
//!
//! These tensor forms run on any candle device (`device.rs`); the CPU fits use the same formulas
//! on their own kernels (`cpu.rs`). Precision: the matmuls run in the tensor dtype (f32 by
//! default, f64 in the parity tests); the AGOP is accumulated over point batches in f64.

use super::error::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Distances below this are treated as "the same point": their gradient weight is masked, as in
/// the reference (xRFM `LaplaceKernel.eps`).
pub const DIST_EPS: f64 = 1e-10;

/// Kernel shape: bandwidth `L` and exponent `q` (q = 1 is the Laplace kernel).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KernelParams {
    pub bandwidth: f64,
    pub q: f64,
}

/// The metric M (d×d, symmetric) in the compute dtype. The identity — the first RFM
/// iteration — is recognised so that its products are skipped rather than computed.
#[derive(Debug, Clone)]
pub struct Metric {
    m: Tensor,
    identity: bool,
}

impl Metric {
    pub fn new(m: Tensor) -> Result<Self> {
        let d = m.dim(0)?;
        let v = m.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let identity = v
            .iter()
            .enumerate()
            .all(|(t, &a)| a == if t / d == t % d { 1.0 } else { 0.0 });
        Ok(Self { m, identity })
    }

    pub fn tensor(&self) -> &Tensor {
        &self.m
    }

    /// `t M` (rows of t mapped by the symmetric M).
    pub fn apply(&self, t: &Tensor) -> Result<Tensor> {
        Ok(if self.identity {
            t.clone()
        } else {
            t.matmul(&self.m)?
        })
    }
}

/// Squared M-distances `‖z_j − x_i‖²_M` (nz × n) via `zᵀMz + xᵀMx − 2 zᵀMx`, clamped at 0.
/// `xm = x M` may be passed precomputed (it is reused across calls within one iteration).
pub fn sq_dists(z: &Tensor, x: &Tensor, xm: &Tensor, m: &Metric) -> Result<Tensor> {
    let zm = m.apply(z)?;
    let zn = (&zm * z)?.sum_keepdim(1)?; // nz×1
    let xn = (xm * x)?.sum(1)?.unsqueeze(0)?; // 1×n
    let cross = zm.matmul(&x.t()?)?;
    Ok(cross
        .affine(-2.0, 0.0)?
        .broadcast_add(&zn)?
        .broadcast_add(&xn)?
        .relu()?)
}

/// Squared distances of a set to itself; the diagonal is exactly zero (the expansion above
/// leaves rounding residue there, which would shrink k(x,x) below 1).
pub fn sq_dists_self(x: &Tensor, xm: &Tensor, m: &Metric) -> Result<Tensor> {
    let d2 = sq_dists(x, x, xm, m)?;
    let n = x.dim(0)?;
    let off = (Tensor::ones((n, n), d2.dtype(), d2.device())?
        - Tensor::eye(n, d2.dtype(), d2.device())?)?;
    Ok((d2 * off)?)
}

/// `exp(-‖·‖^q / L^q)` applied to squared distances.
pub fn kernel_from_sq(d2: &Tensor, p: KernelParams) -> Result<Tensor> {
    let dq = d2.powf(p.q / 2.0)?;
    Ok(dq.affine(-1.0 / p.bandwidth.powf(p.q), 0.0)?.exp()?)
}

/// Gradient weights `w = −(q/L^q) k ‖z−x‖^(q−2)`, zero where the distance is below `DIST_EPS`.
pub fn grad_weights(d2: &Tensor, k: &Tensor, p: KernelParams) -> Result<Tensor> {
    let dist = d2.sqrt()?;
    let mask = dist.ge(DIST_EPS)?.to_dtype(d2.dtype())?;
    let pw = dist.clamp(DIST_EPS, f64::INFINITY)?.powf(p.q - 2.0)?;
    let w = (k * pw)?.affine(-p.q / p.bandwidth.powf(p.q), 0.0)?;
    Ok((w * mask)?)
}

/// Gradients (before the final multiplication by M) of every output at every point of `z`:
/// row block l of the result is `H_l = diag(P_l 1) Z − P_l X` with `P_l = W ∘ α_lᵀ`, so that
/// `∇f_l(z_j) = M H_l[j]ᵀ`. Shape (c·nz) × d.
pub fn pre_gradients(z: &Tensor, x: &Tensor, w: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let c = alpha.dim(1)?;
    let mut blocks = Vec::with_capacity(c);
    for l in 0..c {
        let a = alpha.narrow(1, l, 1)?.t()?; // 1×n
        let p = w.broadcast_mul(&a)?; // nz×n
        let s = p.sum_keepdim(1)?; // nz×1
        blocks.push((z.broadcast_mul(&s)? - p.matmul(x)?)?);
    }
    Ok(Tensor::cat(&blocks, 0)?)
}

/// Function gradients `∇f_l(z_j)`, shape c × nz × d (used by tests and the finite-difference check).
pub fn gradients(
    z: &Tensor,
    x: &Tensor,
    m: &Metric,
    alpha: &Tensor,
    p: KernelParams,
) -> Result<Tensor> {
    let xm = m.apply(x)?;
    let d2 = sq_dists(z, x, &xm, m)?;
    let k = kernel_from_sq(&d2, p)?;
    let w = grad_weights(&d2, &k, p)?;
    let h = pre_gradients(z, x, &w, alpha)?;
    let g = m.apply(&h)?; // M symmetric: (M hᵀ)ᵀ = h M
    Ok(g.reshape((alpha.dim(1)?, z.dim(0)?, x.dim(1)?))?)
}

/// AGOP `A = (1/N) Σ_z Σ_l ∇f_l(z)∇f_l(z)ᵀ` with gradients taken at the training points
/// themselves (as xRFM's `fit_M(X_train)`), optionally centring all gradient rows by their
/// common mean first (xRFM `center_grads`: one mean over outputs and points). Points are
/// processed in batches of `batch` rows; sums are accumulated in f64. Returns d×d f64 values.
/// `w_self` may carry the n×n gradient weights of `x` against itself, already computed with the
/// kernel matrix; otherwise they are recomputed per batch.
#[allow(clippy::too_many_arguments)]
pub fn agop(
    x: &Tensor,
    xm: &Tensor,
    m: &Metric,
    alpha: &Tensor,
    p: KernelParams,
    centre: bool,
    batch: usize,
    w_self: Option<&Tensor>,
) -> Result<Vec<f64>> {
    let (n, d) = x.dims2()?;
    let rows_total = n * alpha.dim(1)?;
    // Either accumulate S = Σ hhᵀ and form M S M once (d² per row + 2d³), or map each batch
    // G = H M and accumulate GᵀG (2d² per row): pick the cheaper; with M = I both are S.
    let map_rows = !m.identity && rows_total < 2 * d;
    let mut s = vec![0.0f64; d * d];
    let mut row_sum = vec![0.0f64; d];
    let mut rows = 0usize;
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let z = x.narrow(0, start, len)?;
        let w = match w_self {
            Some(full) => full.narrow(0, start, len)?,
            None => {
                // z are training rows: their distance to themselves is exactly zero (masked).
                let mut keep = vec![1.0f32; len * n];
                for j in 0..len {
                    keep[j * n + start + j] = 0.0;
                }
                let keep = Tensor::from_vec(keep, (len, n), x.device())?.to_dtype(x.dtype())?;
                let d2 = (sq_dists(&z, x, xm, m)? * keep)?;
                let k = kernel_from_sq(&d2, p)?;
                grad_weights(&d2, &k, p)?
            }
        };
        let h = pre_gradients(&z, x, &w, alpha)?;
        let h = if map_rows { m.apply(&h)? } else { h };
        let sb = h
            .t()?
            .matmul(&h)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        for (a, b) in s.iter_mut().zip(sb) {
            *a += b;
        }
        let hs = h.sum(0)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        for (a, b) in row_sum.iter_mut().zip(hs) {
            *a += b;
        }
        rows += h.dim(0)?;
        start += len;
    }
    if centre {
        // Σ (h−μ)(h−μ)ᵀ = Σ hhᵀ − N μμᵀ
        let nf = rows as f64;
        for i in 0..d {
            for j in 0..d {
                s[i * d + j] -= row_sum[i] * row_sum[j] / nf;
            }
        }
    }
    // A = M S M / n (M symmetric), in f64 on the tensor backend (rows already mapped: S / n).
    let st = Tensor::from_vec(s, (d, d), x.device())?;
    let a = if map_rows || m.identity {
        st.affine(1.0 / n as f64, 0.0)?
    } else {
        let m64 = m.m.to_dtype(DType::F64)?;
        m64.matmul(&st)?.matmul(&m64)?.affine(1.0 / n as f64, 0.0)?
    };
    // Symmetrise away rounding so the eigensolver sees an exactly symmetric matrix.
    let a = ((&a + a.t()?)? * 0.5)?;
    Ok(a.flatten_all()?.to_vec1::<f64>()?)
}

/// `A / max|A|` (the reference divides by `A.max()`; for a PSD AGOP the largest entry is the
/// largest absolute entry, a diagonal one).
pub fn normalise(a: &mut [f64]) {
    let mx = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mx = mx + 1e-30;
    for v in a.iter_mut() {
        *v /= mx;
    }
}

/// Row-wise `K(z, x) α`: predictions for the rows of `z`.
pub fn predict(
    z: &Tensor,
    x: &Tensor,
    xm: &Tensor,
    m: &Metric,
    alpha: &Tensor,
    p: KernelParams,
) -> Result<Tensor> {
    let d2 = sq_dists(z, x, xm, m)?;
    let k = kernel_from_sq(&d2, p)?;
    Ok(k.matmul(alpha)?)
}
