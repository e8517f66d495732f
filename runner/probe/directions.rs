//! Concept directions: the top eigenvectors of the learned metric M, unit norm, each signed so
//! that projecting the data on it correlates positively with the target.

use super::data::Features;
use super::error::{ProbeError, Result};
use super::gemm::{self, Real};
use super::metrics::pearson;
use super::rfm::MetricFactor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Top-k eigenpairs of M (descending eigenvalue), oriented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directions {
    /// All eigenvalues of M, descending.
    pub eigenvalues: Vec<f64>,
    /// k×d row-major, unit rows.
    pub vectors: Vec<f64>,
    pub k: usize,
    pub d: usize,
    /// Pearson correlation of each direction's projection with the orientation target.
    pub correlations: Vec<f64>,
}

impl Directions {
    pub fn vector(&self, i: usize) -> &[f64] {
        &self.vectors[i * self.d..(i + 1) * self.d]
    }
}

/// Eigenpairs of the symmetric r×r matrix given by its lower triangle (row-major), descending:
/// (values, r×r row-major matrix whose column k is eigenvector k). faer's self-adjoint solver
/// (blocked, multi-threaded; nalgebra's unblocked QR took seconds at d = 1024).
pub fn eigh_lower_desc<T: Real>(s: &[T], r: usize) -> Result<(Vec<f64>, Vec<T>)> {
    if s.iter().any(|v| !v.is_finite()) {
        return Err(ProbeError::Numeric(
            "non-finite entry in a symmetric eigenproblem".into(),
        ));
    }
    T::eigh_lower_desc(s, r)
        .ok_or_else(|| ProbeError::Numeric("symmetric eigensolver did not converge".into()))
}

/// Whether the d×d `m` is exactly the identity (an RFM that kept its first iterate).
pub fn is_identity(m: &[f64], d: usize) -> bool {
    m.len() == d * d
        && m.iter()
            .enumerate()
            .all(|(t, &a)| a == if t / d == t % d { 1.0 } else { 0.0 })
}

/// Eigen-decomposition of the symmetric d×d `m` (f64). Returns (eigenvalues descending,
/// eigenvectors as rows in the same order). The identity (an RFM that kept its first iterate)
/// gives the unit vectors in index order.
pub fn eigh_desc(m: &[f64], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let identity = is_identity(m, d);
    let unit = |i: usize| {
        (0..d)
            .map(|j| f64::from(u8::from(i == j)))
            .collect::<Vec<f64>>()
    };
    if identity {
        return (vec![1.0; d], (0..d).map(unit).collect());
    }
    match eigh_lower_desc(m, d) {
        Ok((vals, u)) => {
            let vecs = (0..d)
                .map(|k| (0..d).map(|i| u[i * d + k]).collect())
                .collect();
            (vals, vecs)
        }
        // Only a non-finite M gets here; its "directions" are then as meaningless as it is.
        Err(_) => (vec![f64::NAN; d], (0..d).map(unit).collect()),
    }
}

/// Top-`k` directions of an RFM metric, from its factor when it has at least k columns (no d×d
/// eigenproblem), else from the dense `m`.
pub fn directions_of(
    m: &[f64],
    factor: Option<&MetricFactor>,
    d: usize,
    k: usize,
    x: &Features,
    target: &[f64],
) -> Directions {
    match factor {
        Some(f) if f.lam.len() >= k.min(d) => {
            let r = f.lam.len();
            let mut vals = f.lam.clone();
            vals.resize(d, 0.0);
            let vecs = (0..k.min(d))
                .map(|c| (0..d).map(|i| f.v[i * r + c]).collect())
                .collect();
            oriented(vals, vecs, d, k, x, target)
        }
        _ => directions(m, d, k, x, target),
    }
}

/// Top-`k` directions of `m`, oriented by Pearson correlation of `x · v` with `target`
/// (the class indicator for classification, the value for regression).
pub fn directions(m: &[f64], d: usize, k: usize, x: &Features, target: &[f64]) -> Directions {
    let (vals, vecs) = eigh_desc(m, d);
    oriented(vals, vecs, d, k, x, target)
}

/// `x · v` for every row of `x` and every vector (n×k, f64): one product over row blocks (f64
/// copies of 256 rows at a time), instead of k scalar passes over all of `x`.
fn projections(x: &Features, vs: &[Vec<f64>]) -> Vec<f64> {
    const ROWS: usize = 256;
    let (k, d) = (vs.len(), x.d);
    let mut vt = vec![0.0f64; d * k];
    for (c, v) in vs.iter().enumerate() {
        for (i, &a) in v.iter().enumerate() {
            vt[i * k + c] = a;
        }
    }
    let mut proj = vec![0.0f64; x.n * k];
    if k == 0 || d == 0 {
        return proj;
    }
    proj.par_chunks_mut(ROWS * k)
        .enumerate()
        .for_each(|(b, out)| {
            let rows = out.len() / k;
            let xb: Vec<f64> = x.data[b * ROWS * d..(b * ROWS + rows) * d]
                .iter()
                .map(|&a| f64::from(a))
                .collect();
            gemm::matmul(&xb, rows, d, &vt, k, out);
        });
    proj
}

fn oriented(
    vals: Vec<f64>,
    vecs: Vec<Vec<f64>>,
    d: usize,
    k: usize,
    x: &Features,
    target: &[f64],
) -> Directions {
    let k = k.min(d).min(vecs.len());
    let units: Vec<Vec<f64>> = vecs
        .into_iter()
        .take(k)
        .map(|v| {
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter().map(|a| a / norm).collect()
        })
        .collect();
    let proj = projections(x, &units);
    let mut vectors = Vec::with_capacity(k * d);
    let mut correlations = Vec::with_capacity(k);
    for (c, mut v) in units.into_iter().enumerate() {
        let p: Vec<f64> = (0..x.n).map(|i| proj[i * k + c]).collect();
        let mut r = pearson(&p, target);
        if r < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
            r = -r;
        }
        vectors.extend(v);
        correlations.push(r);
    }
    Directions {
        eigenvalues: vals,
        vectors,
        k,
        d,
        correlations,
    }
}
