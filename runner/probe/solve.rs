//! Symmetric positive-definite solves in f64: a blocked right-looking Cholesky whose trailing
//! updates (the O(n³) part) run as in-place multi-threaded f64 GEMMs (the `gemm` crate that
//! candle's CPU matmul uses).

use super::error::{ProbeError, Result};

const BLOCK: usize = 192;

/// `dst (m×k2, row stride ld) −= lhs (m×kb, row stride ld) · rhsᵀ` where rhs is k2×kb with row
/// stride ld; all three are disjoint regions of one row-major buffer starting at the given
/// offsets.
///
/// # Safety
/// The three regions must lie inside `a` and must not overlap.
#[allow(clippy::too_many_arguments)]
unsafe fn sub_outer(
    a: *mut f64,
    ld: usize,
    dst: usize,
    lhs: usize,
    rhs: usize,
    m: usize,
    k2: usize,
    kb: usize,
) {
    let ld = ld as isize;
    // SAFETY: the caller guarantees bounds and disjointness; gemm reads lhs/rhs and
    // read-modify-writes dst only.
    unsafe {
        gemm::gemm(
            m,
            k2,
            kb,
            a.add(dst),
            1,
            ld,
            true,
            a.add(lhs) as *const f64,
            1,
            ld,
            a.add(rhs) as *const f64,
            ld, // rhsᵀ: column j of rhsᵀ is row j of rhs
            1,
            1.0,
            -1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// In-place lower Cholesky factor of the row-major n×n matrix `a` (the strict upper triangle is
/// left unspecified). Right-looking, blocked: diagonal blocks unblocked, the panel by
/// multiplication with the inverse of the diagonal block, the trailing lower triangle by
/// in-place GEMMs on column blocks (half the flops of a full square update, no copies).
/// Fails if a pivot is not positive.
pub fn cholesky_in_place(a: &mut [f64], n: usize) -> Result<()> {
    if a.len() != n * n {
        return Err(ProbeError::Shape(format!(
            "{} values are not a {n}×{n} matrix",
            a.len()
        )));
    }
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
        // 2. Panel: L21 = A21 L11⁻ᵀ. Invert the small triangular L11, then one GEMM.
        let mut inv = vec![0.0f64; kb * kb]; // L11⁻¹, lower
        for c in 0..kb {
            inv[c * kb + c] = 1.0 / a[(k0 + c) * n + k0 + c];
            for r in c + 1..kb {
                let mut v = 0.0;
                for p in c..r {
                    v -= a[(k0 + r) * n + k0 + p] * inv[p * kb + c];
                }
                inv[r * kb + c] = v / a[(k0 + r) * n + k0 + r];
            }
        }
        let a21: Vec<f64> = (0..rest)
            .flat_map(|r| {
                a[(k0 + kb + r) * n + k0..(k0 + kb + r) * n + k0 + kb]
                    .iter()
                    .copied()
            })
            .collect();
        // SAFETY: dst is the panel region of `a` (rows k0+kb.., columns k0..k0+kb); the inputs
        // are the separate buffers a21 (rest×kb) and inv (kb×kb), used as inv ᵀ.
        unsafe {
            gemm::gemm(
                rest,
                kb,
                kb,
                a.as_mut_ptr().add((k0 + kb) * n + k0),
                1,
                n as isize,
                false,
                a21.as_ptr(),
                1,
                kb as isize,
                inv.as_ptr(),
                kb as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        // 3. Trailing update of the lower triangle, by column blocks:
        //    A[r, c] -= L21[r] · L21[c] for rows r ≥ the block's first column.
        let base = k0 + kb;
        let mut c0 = 0;
        while c0 < rest {
            let cb = BLOCK.min(rest - c0);
            let rows = rest - c0;
            // SAFETY: dst = rows base+c0.., columns base+c0..base+c0+cb (right of the panel);
            // lhs = panel rows base+c0.., rhs = panel rows base+c0..base+c0+cb; the panel
            // columns k0..k0+kb are disjoint from the destination columns.
            unsafe {
                sub_outer(
                    a.as_mut_ptr(),
                    n,
                    (base + c0) * n + base + c0,
                    (base + c0) * n + k0,
                    (base + c0) * n + k0,
                    rows,
                    cb,
                    kb,
                );
            }
            c0 += cb;
        }
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
        // n > 2·BLOCK so the panel and several trailing column blocks run.
        let n = 500;
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
