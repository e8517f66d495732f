//! Symmetric positive-definite solves: a blocked right-looking Cholesky whose trailing updates (the
//! O(n³) part) run as in-place multi-threaded GEMMs (the `gemm` crate that candle's CPU matmul
//! uses), in f64 or — like the reference's float32 `torch.linalg.cholesky` — in f32, which halves
//! the dominant cost of a large RFM fit.

use super::error::{ProbeError, Result};

/// The two precisions the factorisation runs in.
pub trait Real:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::SubAssign
    + std::fmt::LowerExp
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn sqrt(self) -> Self;
    fn is_finite(self) -> bool;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
real!(f32);
real!(f64);

const BLOCK: usize = 192;

/// `dst (m×k2, row stride ld) −= lhs (m×kb, row stride ld) · rhsᵀ` where rhs is k2×kb with row
/// stride ld; all three are disjoint regions of one row-major buffer starting at the given
/// offsets.
///
/// # Safety
/// The three regions must lie inside `a` and must not overlap.
#[allow(clippy::too_many_arguments)]
unsafe fn sub_outer<T: Real>(
    a: *mut T,
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
            a.add(lhs) as *const T,
            1,
            ld,
            a.add(rhs) as *const T,
            ld, // rhsᵀ: column j of rhsᵀ is row j of rhs
            1,
            T::ONE,
            T::ZERO - T::ONE,
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
pub fn cholesky_in_place<T: Real>(a: &mut [T], n: usize) -> Result<()> {
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
            if !diag.is_finite() || diag <= T::ZERO {
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
        let mut inv = vec![T::ZERO; kb * kb]; // L11⁻¹, lower
        for c in 0..kb {
            inv[c * kb + c] = T::ONE / a[(k0 + c) * n + k0 + c];
            for r in c + 1..kb {
                let mut v = T::ZERO;
                for p in c..r {
                    v -= a[(k0 + r) * n + k0 + p] * inv[p * kb + c];
                }
                inv[r * kb + c] = v / a[(k0 + r) * n + k0 + r];
            }
        }
        let a21: Vec<T> = (0..rest)
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
                T::ZERO,
                T::ONE,
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
pub fn cholesky_solve<T: Real>(l: &[T], n: usize, b: &mut [T], c: usize) {
    for col in 0..c {
        for i in 0..n {
            let mut v = b[i * c + col];
            let row = &l[i * n..i * n + i];
            for (p, &lv) in row.iter().enumerate() {
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

/// `(K + λI)⁻¹ Y` by Cholesky in precision `T` (`K`, `Y` and the result are f64). If the
/// factorisation fails (rounding made K + λI indefinite), retries once with 1% of the Gershgorin
/// bound added to the diagonal, as the reference does; the returned flag says whether that happened.
pub fn solve_regularised<T: Real>(
    k: &[f64],
    n: usize,
    reg: f64,
    y: &[f64],
    c: usize,
) -> Result<(Vec<f64>, bool)> {
    let shifted = |add: f64| -> Vec<T> {
        let mut a: Vec<T> = k.iter().map(|&v| T::from_f64(v)).collect();
        for i in 0..n {
            a[i * n + i] = T::from_f64(k[i * n + i] + add);
        }
        a
    };
    let solve = |mut a: Vec<T>| -> Result<Vec<f64>> {
        cholesky_in_place(&mut a, n)?;
        let mut b: Vec<T> = y.iter().map(|&v| T::from_f64(v)).collect();
        cholesky_solve(&a, n, &mut b, c);
        Ok(b.into_iter().map(T::to_f64).collect())
    };
    match solve(shifted(reg)) {
        Ok(x) => Ok((x, false)),
        Err(_) => {
            let bound = (0..n)
                .map(|i| k[i * n..(i + 1) * n].iter().map(|v| v.abs()).sum::<f64>())
                .fold(0.0, f64::max);
            Ok((solve(shifted(reg + 1e-2 * bound))?, true))
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
        let (x, retried) = solve_regularised::<f64>(&k, n, 0.1, &y, 2).unwrap();
        assert!(!retried);
        for (a, b) in x.iter().zip(&x_true) {
            assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        }
        // f32: the same system to single-precision accuracy (condition number here ≈ 1e2).
        let (x, retried) = solve_regularised::<f32>(&k, n, 0.1, &y, 2).unwrap();
        assert!(!retried);
        for (a, b) in x.iter().zip(&x_true) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn indefinite_matrix_is_an_error_not_a_panic() {
        let mut a = vec![1.0f64, 2.0, 2.0, 1.0];
        assert!(cholesky_in_place(&mut a, 2).is_err());
        let mut a = vec![1.0f32, 2.0, 2.0, 1.0];
        assert!(cholesky_in_place(&mut a, 2).is_err());
    }
}
