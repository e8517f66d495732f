//! Symmetric positive-definite solves in f64: a blocked right-looking Cholesky whose trailing
//! updates (the O(n³) part) run as f64 matmuls on the tensor backend (multi-threaded gemm).

use super::error::{ProbeError, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

const BLOCK: usize = 128;

/// In-place lower Cholesky factor of the row-major n×n matrix `a` (upper triangle is garbage
/// afterwards). Fails if a pivot is not positive.
pub fn cholesky_in_place(a: &mut [f64], n: usize) -> Result<()> {
    let mut k0 = 0;
    while k0 < n {
        let kb = BLOCK.min(n - k0);
        // 1. Unblocked factorisation of the diagonal block.
        for j in k0..k0 + kb {
            let mut diag = a[j * n + j];
            for p in k0..j {
                diag -= a[j * n + p] * a[j * n + p];
            }
            if diag.is_nan() || diag <= 0.0 || !diag.is_finite() {
                return Err(ProbeError::Numeric(format!(
                    "kernel matrix is not positive definite (pivot {j} = {diag:e})"
                )));
            }
            let ljj = diag.sqrt();
            a[j * n + j] = ljj;
            for i in j + 1..k0 + kb {
                let mut v = a[i * n + j];
                for p in k0..j {
                    v -= a[i * n + p] * a[j * n + p];
                }
                a[i * n + j] = v / ljj;
            }
        }
        let rest = n - k0 - kb;
        if rest == 0 {
            break;
        }
        // 2. Panel: L21 = A21 L11⁻ᵀ, row by row (independent rows, in parallel).
        let l11: Vec<f64> = (0..kb * kb)
            .map(|t| a[(k0 + t / kb) * n + k0 + t % kb])
            .collect();
        let (_, tail) = a.split_at_mut((k0 + kb) * n);
        tail.par_chunks_mut(n).for_each(|row| {
            for j in 0..kb {
                let mut v = row[k0 + j];
                for p in 0..j {
                    v -= row[k0 + p] * l11[j * kb + p];
                }
                row[k0 + j] = v / l11[j * kb + j];
            }
        });
        // 3. Trailing update A22 -= L21 L21ᵀ.
        let l21: Vec<f64> = tail
            .chunks(n)
            .flat_map(|row| row[k0..k0 + kb].iter().copied())
            .collect();
        let l21 = Tensor::from_vec(l21, (rest, kb), &Device::Cpu)?;
        let upd = l21.matmul(&l21.t()?)?.flatten_all()?.to_vec1::<f64>()?;
        tail.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            let u = &upd[i * rest..(i + 1) * rest];
            // Only the lower part (columns ≤ row) is ever read again.
            for (dst, v) in row[k0 + kb..k0 + kb + i + 1].iter_mut().zip(u) {
                *dst -= v;
            }
        });
        k0 += kb;
    }
    Ok(())
}

/// Solves `L Lᵀ X = B` for the row-major n×c right-hand side `b` in place.
pub fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64], c: usize) {
    for col in 0..c {
        for i in 0..n {
            let mut v = b[i * c + col];
            let row = &l[i * n..i * n + i];
            for (p, lv) in row.iter().enumerate() {
                v -= lv * b[p * c + col];
            }
            b[i * c + col] = v / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut v = b[i * c + col];
            for p in i + 1..n {
                v -= l[p * n + i] * b[p * c + col];
            }
            b[i * c + col] = v / l[i * n + i];
        }
    }
}

/// `(K + λI)⁻¹ Y` by Cholesky. If the factorisation fails (rounding made K + λI indefinite),
/// retries once with 1% of the Gershgorin bound added to the diagonal, as the reference does;
/// the returned flag says whether that happened.
pub fn solve_regularised(
    k: &[f64],
    n: usize,
    reg: f64,
    y: &[f64],
    c: usize,
) -> Result<(Vec<f64>, bool)> {
    let mut a = k.to_vec();
    for i in 0..n {
        a[i * n + i] += reg;
    }
    let mut b = y.to_vec();
    match cholesky_in_place(&mut a, n) {
        Ok(()) => {
            cholesky_solve(&a, n, &mut b, c);
            Ok((b, false))
        }
        Err(_) => {
            let bound = (0..n)
                .map(|i| k[i * n..(i + 1) * n].iter().map(|v| v.abs()).sum::<f64>())
                .fold(0.0, f64::max);
            let mut a = k.to_vec();
            for i in 0..n {
                a[i * n + i] += reg + 1e-2 * bound;
            }
            cholesky_in_place(&mut a, n)?;
            cholesky_solve(&a, n, &mut b, c);
            Ok((b, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_cholesky_solves_spd_system() {
        // n > BLOCK so the panel and trailing-update paths run.
        let n = 300;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = (-((i as f64 - j as f64).abs()) / 7.0).exp();
            }
        }
        let x_true: Vec<f64> = (0..n * 2).map(|t| ((t * 37 % 11) as f64) - 5.0).collect();
        let mut y = vec![0.0; n * 2];
        for i in 0..n {
            for c in 0..2 {
                y[i * 2 + c] = (0..n)
                    .map(|j| (k[i * n + j] + if i == j { 0.1 } else { 0.0 }) * x_true[j * 2 + c])
                    .sum();
            }
        }
        let (x, retried) = solve_regularised(&k, n, 0.1, &y, 2).unwrap();
        assert!(!retried);
        for (a, b) in x.iter().zip(&x_true) {
            assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        }
    }

    #[test]
    fn indefinite_matrix_is_an_error_not_a_panic() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_in_place(&mut a, 2).is_err());
    }
}
