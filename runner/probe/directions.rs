//! Concept directions: the top eigenvectors of the learned metric M, unit norm, each signed so
//! that projecting the data on it correlates positively with the target.

use super::data::Features;
use super::metrics::pearson;
use nalgebra::{DMatrix, SymmetricEigen};
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

/// Eigen-decomposition of the symmetric d×d `m` (f64; nalgebra's symmetric QR). Returns
/// (eigenvalues descending, eigenvectors as rows in the same order).
pub fn eigh_desc(m: &[f64], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mat = DMatrix::from_row_slice(d, d, m);
    let eig = SymmetricEigen::new(mat);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let vals = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let vecs = order
        .iter()
        .map(|&i| eig.eigenvectors.column(i).iter().copied().collect())
        .collect();
    (vals, vecs)
}

/// Top-`k` directions of `m`, oriented by Pearson correlation of `x · v` with `target`
/// (the class indicator for classification, the value for regression).
pub fn directions(m: &[f64], d: usize, k: usize, x: &Features, target: &[f64]) -> Directions {
    let (vals, vecs) = eigh_desc(m, d);
    let k = k.min(d);
    let mut vectors = Vec::with_capacity(k * d);
    let mut correlations = Vec::with_capacity(k);
    for v in vecs.into_iter().take(k) {
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let mut v: Vec<f64> = v.iter().map(|a| a / norm).collect();
        let proj: Vec<f64> = (0..x.n)
            .map(|i| x.row(i).iter().zip(&v).map(|(a, b)| *a as f64 * b).sum())
            .collect();
        let mut r = pearson(&proj, target);
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
