//! Symmetric positive-definite solves on the CPU: a blocked right-looking Cholesky whose trailing
//! updates (the O(n³) part) run as in-place multi-threaded GEMMs on the kernel set chosen at run
//! time (`gemm.rs`; one lower-triangle product per panel where the kernels allow it), in f64 or —
//! like the reference's float32 solve — in f32, which halves the dominant cost of a large RFM fit.
//! (faer's Cholesky would pick AVX-512 by itself whenever present; this one follows the same
//! run-time choice and `RFMX_ISA` cap as every other probe product.)

use super::error::{ProbeError, Result};

pub use super::gemm::Real;
use super::gemm::{self, Isa, Tri, View, gemm_with, isa};

const BLOCK: usize = 192;

/// `dst (m×k2, row stride ld) −= lhs (m×kb, row stride ld) · rhsᵀ` where rhs is k2×kb with row
/// stride ld; all three are disjoint regions of one row-major buffer starting at the given
/// offsets. `tri` = Lower (square blocks only) updates just the lower triangle.
///
/// # Safety
/// The three regions must lie inside `a` and must not overlap.
#[allow(clippy::too_many_arguments)]
unsafe fn sub_outer<T: Real>(
    isa: Isa,
    a: *mut T,
    ld: usize,
    dst: usize,
    lhs: usize,
    rhs: usize,
    m: usize,
    k2: usize,
    kb: usize,
    tri: Tri,
) {
    let ld = ld as isize;
    // SAFETY: the caller guarantees bounds and disjointness; the product reads lhs/rhs and
    // read-modify-writes dst only.
    unsafe {
        gemm_with(
            isa,
            m,
            k2,
            kb,
            a.add(dst),
            ld as usize,
            tri,
            true,
            View {
                ptr: a.add(lhs) as *const T,
                rs: ld,
                cs: 1,
            },
            // rhsᵀ: column j of rhsᵀ is row j of rhs
            View {
                ptr: a.add(rhs) as *const T,
                rs: 1,
                cs: ld,
            },
            T::ZERO - T::ONE,
        );
    }
}

/// In-place lower Cholesky factor of the row-major n×n matrix `a` (the strict upper triangle is
/// left unspecified; only the lower one is read). With the AVX-512 kernel set, faer's own
/// parallel factorisation (which runs AVX-512 kernels by itself, and measured faster than the
/// blocked one below); otherwise the blocked one on the chosen kernel set, so that an AVX2 cap
/// holds for the solve too.
pub fn cholesky_in_place<T: Real>(a: &mut [T], n: usize) -> Result<()> {
    if a.len() != n * n {
        return Err(ProbeError::Shape(format!(
            "{} values are not a {n}×{n} matrix",
            a.len()
        )));
    }
    if isa() == Isa::Avx512 {
        // SAFETY: `a` is the whole n×n matrix, borrowed mutably.
        return unsafe { T::llt_par(a.as_mut_ptr(), n, n) }.map_err(|j| {
            ProbeError::Numeric(format!(
                "kernel matrix is not positive definite (pivot {j})"
            ))
        });
    }
    blocked_cholesky(a, n, isa())
}

/// The blocked factorisation on the kernel set `isa` (see `cholesky_in_place`). Right-looking, blocked: diagonal blocks unblocked, the panel by
/// multiplication with the inverse of the diagonal block, the trailing lower triangle by
/// in-place GEMMs on column blocks (half the flops of a full square update, no copies).
/// Fails if a pivot is not positive.
pub fn blocked_cholesky<T: Real>(a: &mut [T], n: usize, isa: Isa) -> Result<()> {
    if a.len() != n * n {
        return Err(ProbeError::Shape(format!(
            "{} values are not a {n}×{n} matrix",
            a.len()
        )));
    }
    let mut k0 = 0;
    while k0 < n {
        let kb = BLOCK.min(n - k0);
        // 1. The diagonal block, by faer's kernel on the strided block in place.
        // SAFETY: the kb×kb block at (k0, k0) lies inside `a`, borrowed mutably here.
        if let Err(p) = unsafe { T::llt_block(a.as_mut_ptr().add(k0 * n + k0), kb, n) } {
            let j = k0 + p;
            return Err(ProbeError::Numeric(format!(
                "kernel matrix is not positive definite (pivot {j})"
            )));
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
            gemm_with(
                isa,
                rest,
                kb,
                kb,
                a.as_mut_ptr().add((k0 + kb) * n + k0),
                n,
                Tri::Full,
                false,
                View::rows(&a21, kb),
                View::rows_t(&inv, kb),
                T::ONE,
            );
        }
        // 3. Trailing update of the lower triangle, by column blocks:
        //    A[r, c] -= L21[r] · L21[c] for rows r ≥ the block's first column.
        let base = k0 + kb;
        if isa != Isa::Portable {
            // One product that writes only the lower triangle of the trailing block.
            // SAFETY: dst = rows/columns base.. (right of and below the panel); lhs and rhs are
            // the panel rows base.., columns k0..k0+kb, disjoint from the destination columns.
            unsafe {
                sub_outer(
                    isa,
                    a.as_mut_ptr(),
                    n,
                    base * n + base,
                    base * n + k0,
                    base * n + k0,
                    rest,
                    rest,
                    kb,
                    Tri::Lower,
                );
            }
            k0 += kb;
            continue;
        }
        // The portable kernels write full blocks: update by column blocks so that only the
        // diagonal blocks spill into the upper triangle.
        let mut c0 = 0;
        while c0 < rest {
            let cb = BLOCK.min(rest - c0);
            let rows = rest - c0;
            // SAFETY: dst = rows base+c0.., columns base+c0..base+c0+cb (right of the panel);
            // lhs = panel rows base+c0.., rhs = panel rows base+c0..base+c0+cb; the panel
            // columns k0..k0+kb are disjoint from the destination columns.
            unsafe {
                sub_outer(
                    isa,
                    a.as_mut_ptr(),
                    n,
                    (base + c0) * n + base + c0,
                    (base + c0) * n + k0,
                    (base + c0) * n + k0,
                    rows,
                    cb,
                    kb,
                    Tri::Full,
                );
            }
            c0 += cb;
        }
        k0 += kb;
    }
    Ok(())
}

/// Solves `L Lᵀ X = B` for the row-major n×c right-hand side `b` in place. The outputs are
/// solved as contiguous columns (B transposed), so that both sweeps run as vector dot products and
/// axpys along rows of L ([`gemm::vectorised`]); each row of L is read from memory once and used
/// for every column while it is in cache. A row-major sweep at c = 1 was a chain of dependent
/// scalar multiply-adds: 13 of the 68 ms of a binary probe's solve at n = 2800.
pub fn cholesky_solve<T: Real>(l: &[T], n: usize, b: &mut [T], c: usize) {
    if n == 0 || c == 0 {
        return;
    }
    let mut bt = vec![T::ZERO; n * c];
    for i in 0..n {
        for o in 0..c {
            bt[o * n + i] = b[i * c + o];
        }
    }
    struct Sweeps<'a, T>(&'a [T], usize, &'a mut [T]);
    impl<T: Real> gemm::Vectorised for Sweeps<'_, T> {
        type Out = ();
        #[inline(always)]
        fn run(self) {
            let Sweeps(l, n, bt) = self;
            // L y = b: y_i = (b_i − L[i, ..i] · y[..i]) / L_ii.
            for i in 0..n {
                let (row, lii) = (&l[i * n..i * n + i], l[i * n + i]);
                for col in bt.chunks_mut(n) {
                    let s = dot(row, &col[..i]);
                    col[i] = (col[i] - s) / lii;
                }
            }
            // Lᵀ x = y, by columns of Lᵀ (rows of L): once x_i is known, remove its share from
            // the entries above.
            for i in (0..n).rev() {
                let (row, lii) = (&l[i * n..i * n + i], l[i * n + i]);
                for col in bt.chunks_mut(n) {
                    let xi = col[i] / lii;
                    col[i] = xi;
                    for (v, &lv) in col[..i].iter_mut().zip(row) {
                        *v -= lv * xi;
                    }
                }
            }
        }
    }
    gemm::vectorised(Sweeps(l, n, &mut bt));
    for i in 0..n {
        for o in 0..c {
            b[i * c + o] = bt[o * n + i];
        }
    }
}

/// `a · b` with 16 independent partial sums (so that the loop vectorises; the summation order
/// differs from a sequential sum only by rounding).
#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const W: usize = 16;
    let mut acc = [T::ZERO; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..W {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = T::ZERO;
    for (x, y) in ta.iter().zip(tb) {
        s += *x * *y;
    }
    acc.iter().fold(s, |t, &v| t + v)
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

    /// The blocked factorisation on every kernel set this CPU has equals faer's (the two paths
    /// `cholesky_in_place` chooses between).
    #[test]
    fn blocked_and_faer_factorisations_agree_on_every_kernel_set() {
        let n = 2 * BLOCK + 45;
        let mut k = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] =
                    (-((i as f64 - j as f64).abs()) / 5.0).exp() + if i == j { 0.5 } else { 0.0 };
            }
        }
        let mut want = k.clone();
        // SAFETY: the whole matrix, borrowed mutably.
        unsafe { f64::llt_par(want.as_mut_ptr(), n, n) }.unwrap();
        for set in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if set > crate::probe::gemm::detected() {
                continue;
            }
            let mut got = k.clone();
            blocked_cholesky(&mut got, n, set).unwrap();
            for i in 0..n {
                for j in 0..=i {
                    let (a, b) = (got[i * n + j], want[i * n + j]);
                    assert!((a - b).abs() < 1e-10, "{set:?} ({i},{j}): {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn indefinite_matrix_is_an_error_not_a_panic() {
        let mut a = vec![1.0f64, 2.0, 2.0, 1.0];
        assert!(cholesky_in_place(&mut a, 2).is_err());
        let mut a = vec![1.0f32, 2.0, 2.0, 1.0];
        assert!(cholesky_in_place(&mut a, 2).is_err());
        let mut a = vec![1.0f64, 2.0, 2.0, 1.0];
        assert!(blocked_cholesky(&mut a, 2, Isa::Portable).is_err());
    }
}
