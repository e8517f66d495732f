//! The RFM iteration as candle tensor operations on any `Device` (a GPU in practice; tests run
//! the same code on the CPU device). Dense M, the formulas of `kernel.rs`; the solve is a blocked
//! Cholesky built from tensor products ([`cholesky`]), since candle has no factorisation.
//!
//! Split of the work: every O(n³) or O(n²d) product runs on the device; the host only factors
//! and inverts the small diagonal blocks of the Cholesky (b×b, b = [`BLOCK`], in f64) and moves
//! them back — n/b round trips of b² values, so the device does all but O(n b²) of the flops.

use super::data::Features;
use super::error::{ProbeError, Result};
use super::kernel::{self, Metric};
use super::rfm::{RfmHyper, RfmModel, RfmOptions, RfmTrace};
use super::solve;
use candle_core::{DType, Device, Tensor};

/// Diagonal block size of the device Cholesky.
pub const BLOCK: usize = 256;

fn upload(v: &[f64], shape: (usize, usize), dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)?)
}

fn features(x: &Features, dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(x.to_tensor(dtype)?.to_device(dev)?)
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// One diagonal step of the factorisation: the inverse of L11 and the panel L21 below it.
struct Panel {
    inv: Tensor,
    below: Option<Tensor>,
}

/// Lower-triangular inverse of the n×n lower-triangular `l` (row-major, f64).
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for c in 0..n {
        inv[c * n + c] = 1.0 / l[c * n + c];
        for r in c + 1..n {
            let mut v = 0.0;
            for p in c..r {
                v -= l[r * n + p] * inv[p * n + c];
            }
            inv[r * n + c] = v / l[r * n + r];
        }
    }
    inv
}

/// The Cholesky factor of the symmetric positive-definite `a` (n×n, on its device) as panels.
fn factor(a: &Tensor) -> Result<Vec<Panel>> {
    let n = a.dim(0)?;
    let (dtype, dev) = (a.dtype(), a.device().clone());
    let mut trail = a.clone();
    let mut panels = Vec::with_capacity(n.div_ceil(BLOCK));
    let mut k0 = 0;
    while k0 < n {
        let kb = BLOCK.min(n - k0);
        let rest = n - k0 - kb;
        let mut l11 = host(&trail.narrow(0, 0, kb)?.narrow(1, 0, kb)?)?;
        solve::cholesky_in_place(&mut l11, kb).map_err(|e| match e {
            ProbeError::Numeric(m) => ProbeError::Numeric(format!("{m} (block at row {k0})")),
            e => e,
        })?;
        let inv = upload(&lower_inverse(&l11, kb), (kb, kb), dtype, &dev)?;
        let below = if rest > 0 {
            let a21 = trail.narrow(0, kb, rest)?.narrow(1, 0, kb)?;
            let l21 = a21.matmul(&inv.t()?)?;
            trail = (trail.narrow(0, kb, rest)?.narrow(1, kb, rest)? - l21.matmul(&l21.t()?)?)?;
            Some(l21)
        } else {
            None
        };
        panels.push(Panel { inv, below });
        k0 += kb;
    }
    Ok(panels)
}

/// `L Lᵀ X = B` by blocked forward and backward substitution (products only).
fn substitute(panels: &[Panel], b: &Tensor) -> Result<Tensor> {
    let mut ys = Vec::with_capacity(panels.len());
    let mut rest = b.clone();
    for p in panels {
        let kb = p.inv.dim(0)?;
        let y = p.inv.matmul(&rest.narrow(0, 0, kb)?)?;
        if let Some(l21) = &p.below {
            let tail = rest.dim(0)? - kb;
            rest = (rest.narrow(0, kb, tail)? - l21.matmul(&y)?)?;
        }
        ys.push(y);
    }
    let mut x: Option<Tensor> = None;
    for (p, y) in panels.iter().zip(ys).rev() {
        let rhs = match (&p.below, &x) {
            (Some(l21), Some(xb)) => (y - l21.t()?.matmul(xb)?)?,
            _ => y,
        };
        let xk = p.inv.t()?.matmul(&rhs)?;
        x = Some(match x {
            Some(xb) => Tensor::cat(&[&xk, &xb], 0)?,
            None => xk,
        });
    }
    x.ok_or_else(|| ProbeError::Shape("empty system".into()))
}

/// `(K + λI)⁻¹ Y` on K's device; if the factorisation fails, retries once with 1% of the
/// Gershgorin bound added to the diagonal, as the reference does. Returns (α, retried).
pub fn cholesky(k: &Tensor, reg: f64, y: &Tensor) -> Result<(Tensor, bool)> {
    let n = k.dim(0)?;
    let eye = Tensor::eye(n, k.dtype(), k.device())?;
    let a = (k + eye.affine(reg, 0.0)?)?;
    match factor(&a) {
        Ok(p) => Ok((substitute(&p, y)?, false)),
        Err(ProbeError::Numeric(_)) => {
            let bound = a
                .abs()?
                .sum(1)?
                .max(0)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let a = (a + eye.affine(1e-2 * bound, 0.0)?)?;
            Ok((substitute(&factor(&a)?, y)?, true))
        }
        Err(e) => Err(e),
    }
}

/// One RFM fit on `opt.device` (see `rfm::fit_rfm`); returns α (n×c), the kept M (d×d) and the
/// trace.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    train: &Features,
    y: &[f64],
    c: usize,
    val: &Features,
    score: &dyn Fn(&[f64]) -> f64,
    worse: &dyn Fn(f64, f64) -> bool,
    h: &RfmHyper,
    opt: &RfmOptions,
) -> Result<(Vec<f64>, Vec<f64>, RfmTrace)> {
    let (dev, dtype) = (&opt.device, opt.dtype);
    let (n, d) = (train.n, train.d);
    let x = features(train, dtype, dev)?;
    let xv = features(val, dtype, dev)?;
    let yt = upload(y, (n, c), dtype, dev)?;
    let p = h.kernel();
    let mut m: Vec<f64> = (0..d * d)
        .map(|t| if t / d == t % d { 1.0 } else { 0.0 })
        .collect();
    let mut trace = RfmTrace {
        ms: vec![],
        val: vec![],
        best_iter: 0,
        early_stopped: false,
        fallback_reg: false,
        ranks: vec![],
        seconds: vec![],
    };
    let mut started = std::time::Instant::now();
    let mut best: Option<(f64, Vec<f64>, Vec<f64>)> = None;
    for it in 0..=h.iterations {
        if it > 0 {
            trace.seconds.push(started.elapsed().as_secs_f64());
            started = std::time::Instant::now();
        }
        trace.ranks.push(d);
        let mt = Metric::new(upload(&m, (d, d), dtype, dev)?)?;
        let xm = mt.apply(&x)?;
        let d2 = kernel::sq_dists_self(&x, &xm, &mt)?;
        let k = kernel::kernel_from_sq(&d2, p)?;
        let (alpha, fallback) = cholesky(&k, h.reg, &yt)?;
        trace.fallback_reg |= fallback;
        let pred = host(&kernel::predict(&xv, &x, &xm, &mt, &alpha, p)?)?;
        let s = score(&pred);
        trace.val.push(s);
        if best.as_ref().is_none_or(|b| s > b.0) && !s.is_nan() {
            best = Some((s, host(&alpha)?, m.clone()));
            trace.best_iter = it;
        }
        if it == h.iterations {
            break;
        }
        if best.as_ref().is_some_and(|b| worse(s, b.0)) {
            trace.early_stopped = true;
            break;
        }
        // The gradient weights come from the same squared distances as K (no second pass).
        let w = kernel::grad_weights(&d2, &k, p)?;
        let mut a = kernel::agop(&x, &xm, &mt, &alpha, p, h.centre, opt.agop_batch, Some(&w))?;
        kernel::normalise(&mut a);
        m = a;
        if opt.keep_ms {
            trace.ms.push(m.clone());
        }
    }
    trace.seconds.push(started.elapsed().as_secs_f64());
    let (_, alpha, m) = best
        .ok_or_else(|| ProbeError::Numeric("validation score was NaN at every iteration".into()))?;
    Ok((alpha, m, trace))
}

/// Outputs of a dense-M model at the rows of `z`, computed on `dev` in `dtype`.
pub fn predict(model: &RfmModel, z: &Features, dtype: DType, dev: &Device) -> Result<Vec<f64>> {
    let d = model.d();
    let x = features(&model.centres, dtype, dev)?;
    let m = Metric::new(upload(&model.m, (d, d), dtype, dev)?)?;
    let a = upload(&model.alpha, (model.centres.n, model.outputs), dtype, dev)?;
    let xm = m.apply(&x)?;
    let p = kernel::predict(
        &features(z, dtype, dev)?,
        &x,
        &xm,
        &m,
        &a,
        model.hyper.kernel(),
    )?;
    host(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device factorisation (several blocks, a ragged last one) solves an SPD system and
    /// takes the fallback on an indefinite one, like the CPU solve.
    #[test]
    fn blocked_tensor_cholesky_matches_the_cpu_solve() {
        let n = 2 * BLOCK + 37;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = (-((i as f64 - j as f64).abs()) / 9.0).exp();
            }
        }
        let y: Vec<f64> = (0..n * 3).map(|t| ((t * 37 % 11) as f64) - 5.0).collect();
        let (want, _) = solve::solve_regularised::<f64>(&k, n, 0.05, &y, 3).unwrap();
        let kt = upload(&k, (n, n), DType::F64, &Device::Cpu).unwrap();
        let yt = upload(&y, (n, 3), DType::F64, &Device::Cpu).unwrap();
        let (got, retried) = cholesky(&kt, 0.05, &yt).unwrap();
        assert!(!retried);
        for (a, b) in host(&got).unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        // Indefinite: both retry with the same Gershgorin shift.
        let bad = vec![1.0, 1.001, 1.001, 1.0];
        let (want, r1) = solve::solve_regularised::<f64>(&bad, 2, 0.0, &[1.0, 0.0], 1).unwrap();
        let bt = upload(&bad, (2, 2), DType::F64, &Device::Cpu).unwrap();
        let ot = upload(&[1.0, 0.0], (2, 1), DType::F64, &Device::Cpu).unwrap();
        let (got, r2) = cholesky(&bt, 0.0, &ot).unwrap();
        assert!(r1 && r2);
        for (a, b) in host(&got).unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}
