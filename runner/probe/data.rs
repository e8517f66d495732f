//! In-memory probe inputs: a row-major feature matrix and the targets, with the checks every fit
//! relies on (finite values, matching row counts).

use super::error::{ProbeError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// n×d features, row-major f32 (the activations stage writes f32).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub n: usize,
    pub d: usize,
    pub data: Vec<f32>,
}

impl Features {
    pub fn new(n: usize, d: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n * d {
            return Err(ProbeError::Shape(format!(
                "{} values cannot form a {n}×{d} matrix",
                data.len()
            )));
        }
        if n == 0 || d == 0 {
            return Err(ProbeError::Shape(format!("empty feature matrix {n}×{d}")));
        }
        Ok(Self { n, d, data })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// First non-finite entry, reported by position so the user can find it.
    pub fn check_finite(&self) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            Some(p) => Err(ProbeError::NonFiniteFeature {
                row: p / self.d,
                col: p % self.d,
            }),
            None => Ok(()),
        }
    }

    pub fn select(&self, idx: &[usize]) -> Features {
        let mut data = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Features {
            n: idx.len(),
            d: self.d,
            data,
        }
    }

    pub fn to_tensor(&self, dtype: DType) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data, (self.n, self.d), &Device::Cpu)?.to_dtype(dtype)?)
    }

    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (n, d) = t.dims2().map_err(|_| {
            ProbeError::Shape(format!(
                "features must be a 2-D n×d array, got shape {:?}",
                t.dims()
            ))
        })?;
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Features::new(n, d, data)
    }
}

/// What the probe predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Labels 0/1; one output column, scored by AUC.
    Binary,
    /// Labels 0..c-1; one-hot outputs, scored by macro one-vs-rest AUC.
    Multiclass,
    /// Real targets; scored by MSE (selection) and R².
    Regression,
}

/// Targets aligned with the feature rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    Classes(Vec<usize>),
    Values(Vec<f64>),
}

impl Targets {
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(idx.iter().map(|&i| c[i]).collect()),
            Targets::Values(v) => Targets::Values(idx.iter().map(|&i| v[i]).collect()),
        }
    }

    /// Number of classes (max label + 1) for classification targets.
    pub fn n_classes(&self) -> usize {
        match self {
            Targets::Classes(c) => c.iter().copied().max().map_or(0, |m| m + 1),
            Targets::Values(_) => 0,
        }
    }

    /// The regression matrix the kernel machine fits: 0/1 column (binary), one-hot (multiclass)
    /// or the raw values (regression); row-major n×c.
    /// Columns of [`Targets::matrix`]: one per class for a multiclass task, else one.
    pub fn outputs(&self, task: Task, n_classes: usize) -> usize {
        match (self, task) {
            (Targets::Classes(_), Task::Multiclass | Task::Regression) => n_classes,
            _ => 1,
        }
    }

    pub fn matrix(&self, task: Task, n_classes: usize) -> (usize, Vec<f64>) {
        match (self, task) {
            (Targets::Classes(c), Task::Binary) => (1, c.iter().map(|&k| k as f64).collect()),
            (Targets::Classes(c), _) => {
                let mut y = vec![0.0; c.len() * n_classes];
                for (i, &k) in c.iter().enumerate() {
                    y[i * n_classes + k] = 1.0;
                }
                (n_classes, y)
            }
            (Targets::Values(v), _) => (1, v.clone()),
        }
    }

    /// The scalar used to orient directions and for Pearson correlations.
    pub fn as_f64(&self) -> Vec<f64> {
        match self {
            Targets::Classes(c) => c.iter().map(|&k| k as f64).collect(),
            Targets::Values(v) => v.clone(),
        }
    }
}

/// Validates that features and targets can be fitted together.
pub fn check_inputs(x: &Features, y: &Targets, task: Task) -> Result<()> {
    x.check_finite()?;
    if x.n != y.len() {
        return Err(ProbeError::RowMismatch {
            features: x.n,
            labels: y.len(),
        });
    }
    match (task, y) {
        (Task::Regression, Targets::Values(v)) => {
            if let Some(row) = v.iter().position(|v| !v.is_finite()) {
                return Err(ProbeError::NonFiniteLabel { row });
            }
        }
        (Task::Regression, Targets::Classes(_)) => {}
        (_, Targets::Values(_)) => {
            return Err(ProbeError::Shape(
                "classification needs integer class labels".into(),
            ));
        }
        (Task::Binary, Targets::Classes(_)) if y.n_classes() != 2 => {
            return Err(ProbeError::NotBinary(y.n_classes()));
        }
        (_, Targets::Classes(_)) if y.n_classes() < 2 => {
            return Err(ProbeError::TooFewClasses(y.n_classes()));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_count_the_target_matrix_columns() {
        let targets = [
            Targets::Classes(vec![0, 2, 1]),
            Targets::Values(vec![0.5, -1.0, 2.0]),
        ];
        for y in &targets {
            for task in [Task::Binary, Task::Multiclass, Task::Regression] {
                let (c, m) = y.matrix(task, 3);
                assert_eq!(y.outputs(task, 3), c, "{y:?} {task:?}");
                assert_eq!(m.len(), 3 * c);
            }
        }
    }
}
