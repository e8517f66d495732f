//! The RFM iteration on the CPU kernels (`gemm.rs`, `solve.rs`), with the metric kept as an
//! eigendecomposition `M = V diag(λ) Vᵀ` (V: d×r orthonormal columns).
//!
//! Why a factor: every gradient `∇f(z) = M Σ_i α_i w_i (z − x_i)` lies in the range of M, so the
//! AGOP of an iteration — the next M — has its range inside the current one. Once M has rank r,
//! distances, kernels and gradients can all be computed in the r coordinates `z = x V diag(√λ)`
//! (`‖x − x'‖²_M = ‖z − z'‖²`) and the next metric follows from an r×r eigenproblem; the first AGOP
//! (M = I) already has rank ≤ min(d, c·n). Eigenvalues whose tail carries less than `truncate_tol`
//! of the trace are dropped (a relative change of at most that size in any M-distance of
//! isotropic data; by default below f32 rounding of the distances themselves). The directions of
//! the kept M come straight from the factor.
//!
//! Other savings over the reference: the Gram matrix is formed once per iteration as a
//! lower-triangle product; the kernel matrix and the gradient weights come from it in one pass and
//! the weights are reused by the AGOP (K is never re-formed); all c outputs share one
//! factorisation (a multi-column right-hand side) and one product for their gradients; and the
//! Gram of the raw training rows (iteration 0, M = I) is shared by every search trial through
//! [`Shared`].

use super::data::Features;
use super::error::{ProbeError, Result};
use super::gemm::{self, Real, Tri};
use super::kernel::{DIST_EPS, KernelParams};
use super::rfm::{MetricFactor, RfmHyper, RfmOptions, RfmTrace};
use super::solve;
use rayon::prelude::*;
use std::any::Any;
use std::borrow::Cow;
use std::sync::OnceLock;

/// The metric of one iteration.
#[derive(Debug, Clone)]
enum Metric<T> {
    Identity,
    /// V (d×r, row-major) and λ (r, descending).
    Factor {
        v: Vec<T>,
        lam: Vec<f64>,
    },
}

impl<T: Real> Metric<T> {
    fn rank(&self, d: usize) -> usize {
        match self {
            Metric::Identity => d,
            Metric::Factor { lam, .. } => lam.len(),
        }
    }

    /// The coordinates `x V diag(√λ)` (n×r) in which M-distances are Euclidean.
    fn coords<'a>(&self, x: &'a [T], n: usize, d: usize) -> Cow<'a, [T]> {
        match self {
            Metric::Identity => Cow::Borrowed(x),
            Metric::Factor { v, lam } => {
                let r = lam.len();
                let mut z = vec![T::ZERO; n * r];
                gemm::matmul(x, n, d, v, r, &mut z);
                let s: Vec<T> = lam
                    .iter()
                    .map(|&l| T::from_f64(l.max(0.0).sqrt()))
                    .collect();
                z.par_chunks_mut(r.max(1)).for_each(|row| {
                    for (a, &b) in row.iter_mut().zip(&s) {
                        *a = *a * b;
                    }
                });
                Cow::Owned(z)
            }
        }
    }

    fn to_factor(&self, d: usize) -> MetricFactor {
        match self {
            Metric::Identity => MetricFactor {
                d,
                v: (0..d * d)
                    .map(|t| if t / d == t % d { 1.0 } else { 0.0 })
                    .collect(),
                lam: vec![1.0; d],
            },
            Metric::Factor { v, lam } => MetricFactor {
                d,
                v: v.iter().map(|a| a.to_f64()).collect(),
                lam: lam.clone(),
            },
        }
    }
}

/// Work shared by the fits of one search (same training and validation rows, same precision):
/// the Gram matrices of the raw rows, which the first iteration of every trial needs. Formed by
/// the first trial that asks (concurrent trials wait for it), then read by all.
#[derive(Default)]
pub struct Shared {
    gram: OnceLock<Box<dyn Any + Send + Sync>>,
    cross: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Shared {
    /// The slot's value, or (a search in another precision, which no caller makes) a fresh one.
    fn get<T: Real>(
        slot: &OnceLock<Box<dyn Any + Send + Sync>>,
        make: impl Fn() -> Vec<T>,
    ) -> Cow<'_, [T]> {
        match slot
            .get_or_init(|| Box::new(make()))
            .downcast_ref::<Vec<T>>()
        {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(make()),
        }
    }
}

fn row_norms<T: Real>(z: &[T], r: usize) -> Vec<f64> {
    if r == 0 {
        return vec![0.0; z.len()];
    }
    z.par_chunks(r)
        .map(|row| row.iter().map(|&a| a.to_f64() * a.to_f64()).sum())
        .collect()
}

/// The kernel's constants in the compute precision, and its values from squared distances as
/// branch-free loops ([`Real::vexp`], [`Real::vln`]) that [`gemm::vectorised`] compiles at the
/// CPU's vector width: a scalar libm `exp` (and `powf` where q ≠ 1) per entry took a fifth of a
/// d = 1024 fit.
#[derive(Clone, Copy)]
struct KernelFn<T> {
    inv_lq: T,
    wscale: T,
    half_q: T,
    laplace: bool,
    two: T,
    eps: T,
}

impl<T: Real> KernelFn<T> {
    fn new(p: KernelParams) -> Self {
        let inv_lq = T::from_f64(1.0 / p.bandwidth.powf(p.q));
        KernelFn {
            inv_lq,
            wscale: T::from_f64(-p.q) * inv_lq,
            half_q: T::from_f64(p.q / 2.0),
            laplace: p.q == 1.0,
            two: T::from_f64(2.0),
            eps: T::from_f64(DIST_EPS),
        }
    }

    /// `(‖·‖^q, ‖·‖)` from `‖·‖²` (0 at 0); `LAPLACE` is q = 1, a loop of its own.
    #[inline(always)]
    fn dist<const LAPLACE: bool>(&self, d2: T) -> (T, T) {
        let d = d2.sqrt();
        if LAPLACE {
            (d, d)
        } else {
            let v = (self.half_q * d2.vln()).vexp();
            (if d2 > T::ZERO { v } else { T::ZERO }, d)
        }
    }

    /// `row[j] = K(‖·‖²)` for `‖·‖² = ni + nj[j] − 2 row[j]` (a row of a Gram, in place).
    fn values(&self, row: &mut [T], ni: T, nj: &[T]) {
        struct Values<'a, T, const L: bool>(&'a KernelFn<T>, &'a mut [T], T, &'a [T]);
        impl<T: Real, const L: bool> gemm::Vectorised for Values<'_, T, L> {
            type Out = ();
            #[inline(always)]
            fn run(self) {
                let Values(kf, row, ni, nj) = self;
                for (o, &nj) in row.iter_mut().zip(nj) {
                    let d2 = (ni + nj - kf.two * *o).max(T::ZERO);
                    *o = (T::ZERO - kf.dist::<L>(d2).0 * kf.inv_lq).vexp();
                }
            }
        }
        if self.laplace {
            gemm::vectorised(Values::<T, true>(self, row, ni, nj))
        } else {
            gemm::vectorised(Values::<T, false>(self, row, ni, nj))
        }
    }

    /// [`Self::values`] of the Gram row `g` into `k`, and the gradient weights
    /// `w[j] = −(q/L^q) K ‖·‖^(q−2)` (0 below `DIST_EPS`; ‖·‖^(q−2) = ‖·‖^q / ‖·‖²).
    fn values_and_weights(&self, g: &[T], ni: T, nj: &[T], k: &mut [T], w: &mut [T]) {
        #[allow(clippy::type_complexity)]
        struct Both<'a, T, const L: bool>(
            &'a KernelFn<T>,
            &'a [T],
            T,
            &'a [T],
            &'a mut [T],
            &'a mut [T],
        );
        impl<T: Real, const L: bool> gemm::Vectorised for Both<'_, T, L> {
            type Out = ();
            #[inline(always)]
            fn run(self) {
                let Both(kf, g, ni, nj, k, w) = self;
                for (((kj, wj), &gj), &nj) in k.iter_mut().zip(w.iter_mut()).zip(g).zip(nj) {
                    let d2 = (ni + nj - kf.two * gj).max(T::ZERO);
                    let (dq, dist) = kf.dist::<L>(d2);
                    let kv = (T::ZERO - dq * kf.inv_lq).vexp();
                    *kj = kv;
                    let wv = kf.wscale * kv * dq / d2;
                    *wj = if dist >= kf.eps { wv } else { T::ZERO };
                }
            }
        }
        if self.laplace {
            gemm::vectorised(Both::<T, true>(self, g, ni, nj, k, w))
        } else {
            gemm::vectorised(Both::<T, false>(self, g, ni, nj, k, w))
        }
    }
}

/// `(K, W)` from the lower triangle of the Gram `g` of n rows with squared norms `norms`: the
/// kernel's lower triangle with `add` on the diagonal, and the full symmetric gradient weights
/// `W_ij = −(q/L^q) K_ij ‖x_i−x_j‖^(q−2)` (zero on the diagonal and below `DIST_EPS`).
fn kernel_and_weights<T: Real>(
    g: &[T],
    norms: &[f64],
    n: usize,
    p: KernelParams,
    add: f64,
    want_w: bool,
) -> (Vec<T>, Vec<T>) {
    let mut k = vec![T::ZERO; n * n];
    let mut w = if want_w { vec![T::ZERO; n * n] } else { vec![] };
    // In the compute precision, as the reference (f32 exp is the cheap one).
    let nt: Vec<T> = norms.iter().map(|&v| T::from_f64(v)).collect();
    let kf = KernelFn::<T>::new(p);
    let diag = T::from_f64(1.0 + add);
    let fill = |i: usize, krow: &mut [T], wrow: Option<&mut [T]>| {
        let (gi, ni) = (&g[i * n..i * n + i], nt[i]);
        match wrow {
            Some(wrow) => kf.values_and_weights(gi, ni, &nt[..i], &mut krow[..i], &mut wrow[..i]),
            None => {
                krow[..i].copy_from_slice(gi);
                kf.values(&mut krow[..i], ni, &nt[..i])
            }
        }
        krow[i] = diag;
    };
    if want_w {
        k.par_chunks_mut(n)
            .zip(w.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, (kr, wr))| fill(i, kr, Some(wr)));
        mirror_par(&mut w, n);
    } else {
        k.par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, kr)| fill(i, kr, None));
    }
    (k, w)
}

/// Copies the lower triangle onto the upper one, in tiles (cache-friendly) and in parallel over
/// tile rows.
fn mirror_par<T: Real>(a: &mut [T], n: usize) {
    const TILE: usize = 64;
    struct Ptr<T>(*mut T);
    // SAFETY: shared across the workers below, which touch disjoint elements.
    unsafe impl<T> Sync for Ptr<T> {}
    let base = Ptr(a.as_mut_ptr());
    let base = &base;
    (0..n.div_ceil(TILE)).into_par_iter().for_each(|bi| {
        let i0 = bi * TILE;
        let i1 = (i0 + TILE).min(n);
        let mut j0 = i0;
        while j0 < n {
            let j1 = (j0 + TILE).min(n);
            for i in i0..i1 {
                for j in j0.max(i + 1)..j1 {
                    // SAFETY: worker bi writes only upper entries (i, j>i) of its rows i0..i1
                    // and reads only lower entries (j, i), j > i: no element is both written and
                    // read, and no two workers write the same element.
                    unsafe { *base.0.add(i * n + j) = *base.0.add(j * n + i) };
                }
            }
            j0 = j1;
        }
    });
}

/// Kernel values of query rows (coordinates `zq`, norms `nq`) against the centres, nq×n.
fn cross_kernel<T: Real>(gq: &mut [T], nq: &[f64], nc: &[f64], n: usize, p: KernelParams) {
    let nc: Vec<T> = nc.iter().map(|&v| T::from_f64(v)).collect();
    let kf = KernelFn::<T>::new(p);
    gq.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        kf.values(row, T::from_f64(nq[i]), &nc);
    });
}

#[allow(clippy::too_many_arguments)]
/// Outputs (nq×c, f64) of the kernel machine with centres `z` (n×r coordinates, norms `nz`) and
/// coefficients `alpha` (n×c) at query coordinates `zq` (nq×r).
fn predict_coords<T: Real>(
    zq: &[T],
    nq_rows: usize,
    z: &[T],
    nz: &[f64],
    n: usize,
    r: usize,
    alpha: &[T],
    c: usize,
    p: KernelParams,
) -> Vec<f64> {
    let nq = row_norms(zq, r);
    let mut kq = vec![T::ZERO; nq_rows * n];
    gemm::matmul_nt(zq, nq_rows, r, z, n, &mut kq);
    cross_kernel(&mut kq, &nq, nz, n, p);
    let mut out = vec![T::ZERO; nq_rows * c];
    gemm::matmul(&kq, nq_rows, n, alpha, c, &mut out);
    out.into_iter().map(|v| v.to_f64()).collect()
}

/// Outputs of a fitted model at `x` (rows in the training coordinates' space), M given as its
/// factor or, when `None`, the identity.
pub fn predict<T: Real>(
    centres: &Features,
    factor: Option<&MetricFactor>,
    alpha: &[f64],
    c: usize,
    p: KernelParams,
    x: &Features,
) -> Vec<f64> {
    let d = centres.d;
    let metric: Metric<T> = match factor {
        Some(f) => Metric::Factor {
            v: f.v.iter().map(|&a| T::from_f64(a)).collect(),
            lam: f.lam.clone(),
        },
        None => Metric::Identity,
    };
    let r = metric.rank(d);
    let xc: Vec<T> = centres
        .data
        .iter()
        .map(|&a| T::from_f64(a as f64))
        .collect();
    let xq: Vec<T> = x.data.iter().map(|&a| T::from_f64(a as f64)).collect();
    let z = metric.coords(&xc, centres.n, d);
    let zq = metric.coords(&xq, x.n, d);
    let nz = row_norms(&z, r);
    let a: Vec<T> = alpha.iter().map(|&v| T::from_f64(v)).collect();
    predict_coords(&zq, x.n, &z, &nz, centres.n, r, &a, c, p)
}

/// Solves `(K + λI) α = Y` in place of `k` (lower triangle + λ on the diagonal); on a failed
/// factorisation rebuilds K from the Gram and retries with 1% of the Gershgorin bound added, as
/// the reference does. Returns α (n×c) and whether the retry was needed.
fn solve_alpha<T: Real>(
    mut k: Vec<T>,
    g: &[T],
    norms: &[f64],
    n: usize,
    h: &RfmHyper,
    y: &[f64],
    c: usize,
) -> Result<(Vec<T>, bool)> {
    let rhs = || y.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
    if solve::cholesky_in_place(&mut k, n).is_ok() {
        let mut b = rhs();
        solve::cholesky_solve(&k, n, &mut b, c);
        return Ok((b, false));
    }
    let (mut k, _) = kernel_and_weights(g, norms, n, h.kernel(), h.reg, false);
    // Row sums of |K + λI| from its lower triangle (K is symmetric).
    let mut sums = vec![0.0f64; n];
    for i in 0..n {
        for j in 0..=i {
            let v = k[i * n + j].to_f64().abs();
            sums[i] += v;
            if j != i {
                sums[j] += v;
            }
        }
    }
    let bound = sums.iter().copied().fold(0.0, f64::max);
    for i in 0..n {
        k[i * n + i] = T::from_f64(k[i * n + i].to_f64() + 1e-2 * bound);
    }
    solve::cholesky_in_place(&mut k, n)?;
    let mut b = rhs();
    solve::cholesky_solve(&k, n, &mut b, c);
    Ok((b, true))
}

/// Eigenpairs of the symmetric r×r matrix given by its lower triangle, descending.
fn eig_lower<T: Real>(s: &[T], r: usize) -> Result<(Vec<f64>, Vec<T>)> {
    let (vals, vecs) = super::directions::eigh_lower_desc(s, r)?;
    Ok((vals, vecs))
}

/// The next metric from the pre-gradients `b` (rows = gradients in the current coordinates,
/// already scaled by √λ) and the current basis: `A = V bᵀb Vᵀ / n_points`, normalised by its
/// largest entry and truncated. Returns the new metric and (when asked) M as dense d×d f64.
fn next_metric<T: Real>(
    b: &[T],
    rows: usize,
    r: usize,
    basis: &Metric<T>,
    d: usize,
    n_points: usize,
    tol: f64,
) -> Result<Metric<T>> {
    if rows >= r {
        let mut s = vec![T::ZERO; r * r];
        gemm::gram_t(b, rows, r, &mut s);
        return metric_from_gram(&s, r, basis, d, n_points, tol);
    }
    // Eigenpairs of bᵀb (r×r) through the smaller rows×rows Gram b bᵀ.
    let (sigma, e) = {
        let mut gg = vec![T::ZERO; rows * rows];
        gemm::gram_with(gemm::isa(), b, rows, r, &mut gg, Tri::Lower);
        let (sig, u) = eig_lower(&gg, rows)?;
        let keep = keep_count(&sig, tol);
        // e = bᵀ U σ^(-1/2): r × keep, orthonormal.
        let mut us = vec![T::ZERO; rows * keep];
        for i in 0..rows {
            for k in 0..keep {
                us[i * keep + k] = T::from_f64(u[i * rows + k].to_f64() / sig[k].sqrt());
            }
        }
        let mut e = vec![T::ZERO; r * keep];
        // SAFETY: sizes as allocated; e is a separate buffer.
        unsafe {
            gemm::gemm_with(
                gemm::isa(),
                r,
                keep,
                rows,
                e.as_mut_ptr(),
                keep,
                Tri::Full,
                false,
                gemm::View::rows_t(b, r),
                gemm::View::rows(&us, keep),
                T::ONE,
            );
        }
        (sig[..keep].to_vec(), (e, keep))
    };
    let (e, keep) = e;
    Ok(finish(sigma, e, keep, r, basis, d, n_points))
}

/// The next metric from the r×r Gram `s` of the (√λ-scaled) pre-gradients (lower triangle).
fn metric_from_gram<T: Real>(
    s: &[T],
    r: usize,
    basis: &Metric<T>,
    d: usize,
    n_points: usize,
    tol: f64,
) -> Result<Metric<T>> {
    let (sig, u) = eig_lower(s, r)?;
    let keep = keep_count(&sig, tol);
    let mut e = vec![T::ZERO; r * keep];
    for i in 0..r {
        for k in 0..keep {
            e[i * keep + k] = u[i * r + k];
        }
    }
    Ok(finish(sig[..keep].to_vec(), e, keep, r, basis, d, n_points))
}

/// `V' = V e`, `λ' = σ / n_points` normalised by the largest entry of `V' diag(λ') V'ᵀ`.
fn finish<T: Real>(
    sigma: Vec<f64>,
    e: Vec<T>,
    keep: usize,
    r: usize,
    basis: &Metric<T>,
    d: usize,
    n_points: usize,
) -> Metric<T> {
    // V' = V e (d × keep); for the identity basis V' = e.
    let v = match basis {
        Metric::Identity => e,
        Metric::Factor { v, .. } => {
            let mut out = vec![T::ZERO; d * keep];
            gemm::matmul(v, d, r, &e, keep, &mut out);
            out
        }
    };
    let mut lam: Vec<f64> = sigma.iter().map(|s| s / n_points as f64).collect();
    // The reference divides by the largest entry of A, which for a PSD matrix is its largest
    // diagonal entry Σ_k V_ik² λ_k.
    let mx = v
        .par_chunks(keep.max(1))
        .map(|row| {
            row.iter()
                .zip(&lam)
                .map(|(a, l)| a.to_f64() * a.to_f64() * l)
                .sum::<f64>()
        })
        .reduce(|| 0.0, f64::max);
    lam.iter_mut().for_each(|l| *l /= mx + 1e-30);
    Metric::Factor { v, lam }
}

/// Whether the AGOP is cheaper through the n×n route of [`gradient_gram`] than through the
/// c·n explicit pre-gradients (flop counts of the two).
fn gram_route(n: usize, r: usize, c: usize) -> bool {
    let (direct, gram) = agop_flops(n, r, c);
    gram < direct
}

/// Flops of the AGOP's two routes: (explicit pre-gradients, [`gradient_gram`]).
fn agop_flops(n: usize, r: usize, c: usize) -> (f64, f64) {
    let (n, r, c) = (n as f64, r as f64, c as f64);
    let direct = 2.0 * n * n * c * (r + 1.0) + c * n * r * r;
    let gram = n * n * n + 2.0 * n * n * (r + c) + n * r * r + n * n * c;
    (direct, gram)
}

/// The shape of one iteration of [`fit`], as the estimate prices it (docs/design.md §9).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationShape {
    /// Training rows, validation rows, width, M's rank and outputs.
    pub n: usize,
    pub nv: usize,
    pub d: usize,
    pub r: usize,
    pub c: usize,
    /// Whether the Gram and cross Gram are formed here (iteration 0's are shared by a search's
    /// trials).
    pub gram: bool,
    /// Whether the iteration ends with an AGOP update (all but the final refit).
    pub agop: bool,
}

impl IterationShape {
    /// Product flops: coordinates (r < d), the Gram and cross Gram (when `gram`), the Cholesky
    /// solve, validation outputs and, when `agop`, the AGOP by the route [`fit`] takes.
    pub fn flops(&self) -> f64 {
        let IterationShape {
            n,
            nv,
            d,
            r,
            c,
            gram,
            agop,
        } = *self;
        let (nf, nvf, df, rf, cf) = (n as f64, nv as f64, d as f64, r as f64, c as f64);
        let coords = if r < d {
            2.0 * (nf + nvf) * df * rf
        } else {
            0.0
        };
        let grams = if gram {
            nf * nf * rf + 2.0 * nvf * nf * rf
        } else {
            0.0
        };
        let solve = nf * nf * nf / 3.0 + 2.0 * nf * nf * cf + 2.0 * nvf * nf * cf;
        let gradient = if agop {
            let (direct, via_gram) = agop_flops(n, r, c);
            // Rotating the new eigenvectors into the basis (none while M = I).
            let rotate = if r < d { 2.0 * df * rf * rf } else { 0.0 };
            direct.min(via_gram) + rotate
        } else {
            0.0
        };
        coords + grams + solve + gradient
    }

    /// M's r×r eigendecomposition (not a product; priced apart): r³ when the iteration updates M.
    pub fn eig(&self) -> f64 {
        if self.agop {
            (self.r as f64).powi(3)
        } else {
            0.0
        }
    }
}

/// `Σ_l H_lᵀ H_l` (r×r, lower) for the pre-gradients `H_l = diag(W α_l) Z − W diag(α_l) Z` of all
/// c outputs without forming them: with `E_l = diag(s_l) − W diag(α_l)`, `S = W A`, it is
/// `Zᵀ F Z` where `F = Σ_l E_lᵀE_l = diag(Σ_l s_l²) − W∘(S Aᵀ) − (W∘(S Aᵀ))ᵀ + W²∘(A Aᵀ)` — one
/// n³ product (W², symmetric) and two n²r ones, whatever c. With `centre`, the Gram of the
/// gradients minus their common mean (`h̄ = Zᵀ u / (c n)`, `u_j = Σ_l s_jl − (W 1)_j α_jl`).
#[allow(clippy::too_many_arguments)]
fn gradient_gram<T: Real>(
    w: &[T],
    alpha: &[T],
    z: &[T],
    n: usize,
    r: usize,
    c: usize,
    centre: bool,
) -> Vec<T> {
    // S = W A (n×c) and the row sums W 1, in one product.
    let mut a1 = vec![T::ONE; n * (c + 1)];
    a1.par_chunks_mut(c + 1).enumerate().for_each(|(i, row)| {
        row[..c].copy_from_slice(&alpha[i * c..(i + 1) * c]);
    });
    let mut sa = vec![T::ZERO; n * (c + 1)];
    gemm::matmul(w, n, n, &a1, c + 1, &mut sa);
    let mut f = vec![T::ZERO; n * n];
    gemm::gram_with(gemm::isa(), w, n, n, &mut f, Tri::Lower); // W Wᵀ = W²
    f.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let (ai, si) = (
            &alpha[i * c..(i + 1) * c],
            &sa[i * (c + 1)..i * (c + 1) + c],
        );
        for j in 0..=i {
            let (aj, sj) = (
                &alpha[j * c..(j + 1) * c],
                &sa[j * (c + 1)..j * (c + 1) + c],
            );
            let (mut aa, mut sa_ij) = (0.0f64, 0.0f64);
            for l in 0..c {
                aa += ai[l].to_f64() * aj[l].to_f64();
                sa_ij += si[l].to_f64() * aj[l].to_f64() + sj[l].to_f64() * ai[l].to_f64();
            }
            let mut v = row[j].to_f64() * aa - w[i * n + j].to_f64() * sa_ij;
            if i == j {
                v += si.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>();
            }
            row[j] = T::from_f64(v);
        }
    });
    mirror_par(&mut f, n);
    let mut fz = vec![T::ZERO; n * r];
    gemm::matmul(&f, n, n, z, r, &mut fz);
    drop(f);
    let mut g = vec![T::ZERO; r * r];
    // SAFETY: sizes as allocated; g is a separate buffer.
    unsafe {
        gemm::gemm_with(
            gemm::isa(),
            r,
            r,
            n,
            g.as_mut_ptr(),
            r,
            Tri::Lower,
            false,
            gemm::View::rows_t(z, r),
            gemm::View::rows(&fz, r),
            T::ONE,
        );
    }
    if centre {
        let rows = (c * n) as f64;
        let u: Vec<f64> = (0..n)
            .map(|j| {
                let wsum = sa[j * (c + 1) + c].to_f64();
                (0..c)
                    .map(|l| sa[j * (c + 1) + l].to_f64() - wsum * alpha[j * c + l].to_f64())
                    .sum()
            })
            .collect();
        let mut hbar = vec![0.0f64; r];
        for (j, uj) in u.iter().enumerate() {
            for (h, zz) in hbar.iter_mut().zip(&z[j * r..(j + 1) * r]) {
                *h += uj * zz.to_f64();
            }
        }
        hbar.iter_mut().for_each(|h| *h /= rows);
        for i in 0..r {
            for j in 0..=i {
                g[i * r + j] = T::from_f64(g[i * r + j].to_f64() - rows * hbar[i] * hbar[j]);
            }
        }
    }
    g
}

/// How many leading eigenvalues (descending) to keep: drop non-positive ones and the tail whose
/// sum is at most `tol` of the total.
fn keep_count(sig: &[f64], tol: f64) -> usize {
    let top = sig.first().copied().unwrap_or(0.0);
    // Eigenvalues below the eigensolver's own rounding of the largest are zero.
    let floor = top * 1e-12;
    let pos: Vec<f64> = sig.iter().copied().take_while(|&s| s > floor).collect();
    let total: f64 = pos.iter().sum();
    let mut keep = pos.len();
    let mut tail = 0.0;
    while keep > 1 && tail + pos[keep - 1] <= tol * total {
        tail += pos[keep - 1];
        keep -= 1;
    }
    keep.max(1).min(sig.len())
}

/// Dense `V diag(λ) Vᵀ` (d×d f64).
pub fn dense(f: &MetricFactor) -> Vec<f64> {
    let d = f.d;
    let r = f.lam.len();
    let vs: Vec<f64> = (0..d * r).map(|t| f.v[t] * f.lam[t % r]).collect();
    let mut m = vec![0.0; d * d];
    // The lower triangle only (half the flops), mirrored: exactly symmetric, as the eigensolver
    // expects.
    // SAFETY: vs and f.v are d×r, m is d×d; m is a separate buffer.
    unsafe {
        gemm::gemm_with(
            gemm::isa(),
            d,
            d,
            r,
            m.as_mut_ptr(),
            d,
            Tri::Lower,
            false,
            gemm::View::rows(&vs, r),
            gemm::View::rows_t(&f.v, r),
            1.0,
        );
    }
    for i in 0..d {
        for j in 0..i {
            m[j * d + i] = m[i * d + j];
        }
    }
    m
}

/// What a fit returns: α (n×c) and the metric of the kept iteration, and the trace.
pub struct CpuFit {
    pub alpha: Vec<f64>,
    pub factor: Option<MetricFactor>,
    pub trace: RfmTrace,
}

/// One RFM fit with fixed hyper-parameters (see `rfm::fit_rfm` for the semantics).
#[allow(clippy::too_many_arguments)]
pub fn fit<T: Real>(
    train: &Features,
    y: &[f64],
    c: usize,
    val: &Features,
    score: &dyn Fn(&[f64]) -> f64,
    worse: &dyn Fn(f64, f64) -> bool,
    h: &RfmHyper,
    opt: &RfmOptions,
    shared: &Shared,
) -> Result<CpuFit> {
    let (n, d, nv) = (train.n, train.d, val.n);
    let x: Vec<T> = train.data.iter().map(|&a| T::from_f64(a as f64)).collect();
    let xv: Vec<T> = val.data.iter().map(|&a| T::from_f64(a as f64)).collect();
    let p = h.kernel();
    let mut metric: Metric<T> = Metric::Identity;
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
    let mut best: Option<(f64, Vec<f64>, Metric<T>)> = None;
    let profile = std::env::var_os("RFMX_PROFILE").is_some();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: &str, it: usize| {
        if profile {
            eprintln!("rfm it {it} {what}: {:.3}s", clock.elapsed().as_secs_f64());
            clock = std::time::Instant::now();
        }
    };
    for it in 0..=h.iterations {
        if it > 0 {
            trace.seconds.push(started.elapsed().as_secs_f64());
            started = std::time::Instant::now();
        }
        let r = metric.rank(d);
        trace.ranks.push(r);
        let z = metric.coords(&x, n, d);
        let zv = metric.coords(&xv, nv, d);
        let nz = row_norms(&z, r);
        let nzv = row_norms(&zv, r);
        // Iteration 0's Grams are borrowed from `shared`, not copied (n² values: 31 MB at
        // n = 2800, into a fresh allocation every trial); later ones are owned.
        let (g, gv): (Cow<[T]>, Cow<[T]>) = if matches!(metric, Metric::Identity) {
            let g = Shared::get(&shared.gram, || {
                let mut g = vec![T::ZERO; n * n];
                gemm::gram_with(gemm::isa(), &z, n, r, &mut g, Tri::Lower);
                g
            });
            let gv = Shared::get(&shared.cross, || {
                let mut gv = vec![T::ZERO; nv * n];
                gemm::matmul_nt(&zv, nv, r, &z, n, &mut gv);
                gv
            });
            (g, gv)
        } else {
            let mut g = vec![T::ZERO; n * n];
            gemm::gram_with(gemm::isa(), &z, n, r, &mut g, Tri::Lower);
            let mut gv = vec![T::ZERO; nv * n];
            gemm::matmul_nt(&zv, nv, r, &z, n, &mut gv);
            (Cow::Owned(g), Cow::Owned(gv))
        };
        lap("gram", it);
        let last = it == h.iterations;
        let (k, w) = kernel_and_weights(&g, &nz, n, p, h.reg, !last);
        lap("kernel", it);
        let (alpha, fallback) = solve_alpha(k, &g, &nz, n, h, y, c)?;
        trace.fallback_reg |= fallback;
        lap("solve", it);
        // Validation outputs from the cross Gram.
        let mut kv = gv.to_vec();
        cross_kernel(&mut kv, &nzv, &nz, n, p);
        let mut pred = vec![T::ZERO; nv * c];
        gemm::matmul(&kv, nv, n, &alpha, c, &mut pred);
        let pred: Vec<f64> = pred.into_iter().map(|v| v.to_f64()).collect();
        let s = score(&pred);
        trace.val.push(s);
        lap("validation", it);
        // Strict improvement, as the reference (`current > best`); NaN never improves.
        if best.as_ref().is_none_or(|b| s > b.0) && !s.is_nan() {
            best = Some((
                s,
                alpha.iter().map(|a| a.to_f64()).collect(),
                metric.clone(),
            ));
            trace.best_iter = it;
        }
        if last {
            break; // the reference's final refit after the last update
        }
        if best.as_ref().is_some_and(|b| worse(s, b.0)) {
            trace.early_stopped = true;
            break;
        }
        let use_gram = opt.gradient_gram.unwrap_or_else(|| gram_route(n, r, c));
        if use_gram {
            let mut g = gradient_gram(&w, &alpha, &z, n, r, c, h.centre);
            drop(w);
            if let Metric::Factor { lam, .. } = &metric {
                let s: Vec<f64> = lam.iter().map(|&l| l.max(0.0).sqrt()).collect();
                for i in 0..r {
                    for j in 0..=i {
                        g[i * r + j] = T::from_f64(g[i * r + j].to_f64() * s[i] * s[j]);
                    }
                }
            }
            drop(z);
            drop(zv);
            lap("gradient gram", it);
            metric = metric_from_gram(&g, r, &metric, d, n, opt.tol())?;
        } else {
            // Pre-gradients of every output at every training row, in the current coordinates:
            // h_l(x_j) = (W α_l)_j z_j − (W (α_l ∘ z))_j, all outputs in one product.
            let cr = c * r;
            let mut q = vec![T::ZERO; n * (cr + c)];
            q.par_chunks_mut(cr + c).enumerate().for_each(|(i, row)| {
                let zi = &z[i * r..(i + 1) * r];
                for l in 0..c {
                    let a = alpha[i * c + l];
                    for (o, &zz) in row[l * r..(l + 1) * r].iter_mut().zip(zi) {
                        *o = a * zz;
                    }
                    row[cr + l] = a;
                }
            });
            let mut wq = vec![T::ZERO; n * (cr + c)];
            gemm::matmul(&w, n, n, &q, cr + c, &mut wq);
            drop(w);
            drop(q);
            let rows = c * n;
            let mut b = vec![T::ZERO; rows * r];
            b.par_chunks_mut(r.max(1)).enumerate().for_each(|(t, row)| {
                let (l, j) = (t / n, t % n);
                let s = wq[j * (cr + c) + cr + l];
                let zj = &z[j * r..(j + 1) * r];
                let pj = &wq[j * (cr + c) + l * r..j * (cr + c) + (l + 1) * r];
                for ((o, &zz), &pp) in row.iter_mut().zip(zj).zip(pj) {
                    *o = s * zz - pp;
                }
            });
            drop(wq);
            if h.centre {
                // One mean over all outputs and points (the reference's center_grads).
                let mut mean = vec![0.0f64; r];
                for row in b.chunks(r.max(1)) {
                    for (m, v) in mean.iter_mut().zip(row) {
                        *m += v.to_f64();
                    }
                }
                let mean: Vec<T> = mean.iter().map(|m| T::from_f64(m / rows as f64)).collect();
                b.par_chunks_mut(r.max(1)).for_each(|row| {
                    for (o, &m) in row.iter_mut().zip(&mean) {
                        *o -= m;
                    }
                });
            }
            // Gradients are L b with L = V diag(√λ): scale b's columns by √λ so that the basis is V.
            if let Metric::Factor { lam, .. } = &metric {
                let s: Vec<T> = lam
                    .iter()
                    .map(|&l| T::from_f64(l.max(0.0).sqrt()))
                    .collect();
                b.par_chunks_mut(r.max(1)).for_each(|row| {
                    for (o, &sv) in row.iter_mut().zip(&s) {
                        *o = *o * sv;
                    }
                });
            }
            drop(z);
            drop(zv);
            lap("gradients", it);
            metric = next_metric(&b, rows, r, &metric, d, n, opt.tol())?;
        }
        if opt.keep_ms {
            trace.ms.push(dense(&metric.to_factor(d)));
        }
        lap("agop + eigh", it);
    }
    trace.seconds.push(started.elapsed().as_secs_f64());
    let (_, alpha, m) = best
        .ok_or_else(|| ProbeError::Numeric("validation score was NaN at every iteration".into()))?;
    let factor = match m {
        Metric::Identity => None,
        f => Some(f.to_factor(d)),
    };
    Ok(CpuFit {
        alpha,
        factor,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a quarter grid (their Gram is exact in f32), with a duplicate (distance 0).
    fn points(n: usize, r: usize) -> Vec<f64> {
        let mut z: Vec<f64> = (0..n * r)
            .map(|t| ((t * 37 + 11) % 23) as f64 * 0.25 - 2.5)
            .collect();
        let (a, b) = z.split_at_mut(r);
        b[..r].copy_from_slice(a);
        z
    }

    fn check<T: Real>(q: f64, tol: f64) {
        let (n, r) = (67, 5); // rows longer than one vector and a tail
        let z = points(n, r);
        let zt: Vec<T> = z.iter().map(|&v| T::from_f64(v)).collect();
        let mut g = vec![T::ZERO; n * n];
        gemm::gram_with(gemm::isa(), &zt, n, r, &mut g, Tri::Lower);
        let norms = row_norms(&zt, r);
        let p = KernelParams { bandwidth: 3.0, q };
        let (k, w) = kernel_and_weights(&g, &norms, n, p, 0.5, true);
        let (k_only, _) = kernel_and_weights(&g, &norms, n, p, 0.5, false);
        let mut kq = g.clone();
        for i in 0..n {
            for j in i..n {
                kq[i * n + j] = kq[j * n + i];
            }
        }
        cross_kernel(&mut kq, &norms, &norms, n, p);
        for i in 0..n {
            for j in 0..n {
                let d2: f64 = (0..r).map(|t| (z[i * r + t] - z[j * r + t]).powi(2)).sum();
                let kv = (-d2.powf(q / 2.0) / 3f64.powf(q)).exp();
                let wv = if d2.sqrt() >= DIST_EPS {
                    -q / 3f64.powf(q) * kv * d2.powf((q - 2.0) / 2.0)
                } else {
                    0.0
                };
                let close = |got: T, want: f64| (got.to_f64() - want).abs() <= tol * want.abs();
                assert!(
                    close(w[i * n + j], wv),
                    "q {q} W({i},{j}) {:e} vs {wv:e}",
                    w[i * n + j]
                );
                assert!(close(kq[i * n + j], kv), "q {q} cross K({i},{j})");
                if j < i {
                    assert!(
                        close(k[i * n + j], kv),
                        "q {q} K({i},{j}) {:e} vs {kv:e}",
                        k[i * n + j]
                    );
                    assert_eq!(k_only[i * n + j].to_f64(), k[i * n + j].to_f64());
                } else if j == i {
                    assert_eq!(k[i * n + i].to_f64(), 1.5);
                }
            }
        }
        // The duplicate pair: kernel 1, weight masked.
        assert!(close_one(k[n].to_f64()) && w[n].to_f64() == 0.0);
    }

    fn close_one(v: f64) -> bool {
        (v - 1.0).abs() < 1e-6
    }

    /// The vectorised kernel loops (exp and, for q ≠ 1, ln at the CPU's vector width) against the
    /// formulas in f64, with the duplicate row's weight masked.
    #[test]
    fn kernel_and_weights_match_the_formulas() {
        for q in [1.0, 0.7, 1.3] {
            check::<f32>(q, 4e-6);
            check::<f64>(q, 1e-12);
        }
    }
}
