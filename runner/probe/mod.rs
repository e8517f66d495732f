//! Probes on pooled activations: the Recursive Feature Machine (kernel, gradients, AGOP,
//! search), linear and MLP baselines, metrics, concept directions and their storage.
//!
//! One call fits a probe with a recorded split and returns everything a stage needs:
//! `probe::fit(&features, &targets, &ProbeConfig::default())?.save(dir)?`.
pub mod bench;
pub mod cli;
pub mod cpu;
pub mod data;
pub mod device;
pub mod directions;
pub mod error;
pub mod gemm;
pub mod io;
pub mod kernel;
pub mod linear;
pub mod metrics;
pub mod mlp;
pub mod rfm;
pub mod search;
pub mod solve;
pub mod splits;
pub mod synthetic;

pub use data::{Features, Targets, Task};
pub use directions::Directions;
pub use error::{ProbeError, Result};
pub use metrics::Scores;
pub use rfm::{RfmHyper, RfmModel};
pub use splits::Split;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

/// Which probe to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Rfm,
    Linear,
    Mlp,
}

/// Compute precision of the kernel matmuls (the solve and the AGOP sums are always f64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F64,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
}

/// Everything that decides a fit. Serialisable so a stage can hash it into its cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeConfig {
    pub kind: ProbeKind,
    pub task: Task,
    /// Seed of the split, the search and the MLP (recorded in the fit).
    pub seed: u64,
    /// Random-search trials (RFM); ignored when `fixed` is set.
    pub trials: usize,
    /// RFM iterations T (maximum; early stopping may end sooner).
    pub iterations: usize,
    /// Fixed RFM hyper-parameters: skip the search.
    pub fixed: Option<RfmHyper>,
    /// Directions to keep (top eigenvectors of M).
    pub top_k: usize,
    /// Multiclass probes orient directions by this class's indicator.
    pub orient_class: usize,
    /// Standardise features with the training mean/std before fitting (stored in the fit and
    /// applied by `predict`; directions then live in standardised coordinates).
    pub standardise: bool,
    /// Threads for this fit (a private rayon pool); `None` uses the global pool. Set it when
    /// several fits run in parallel so that together they do not oversubscribe the cores.
    pub threads: Option<usize>,
    pub precision: Precision,
    pub early_stop_multiplier: f64,
    pub mlp: mlp::MlpConfig,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            kind: ProbeKind::Rfm,
            task: Task::Binary,
            seed: 0,
            trials: 20,
            iterations: 15,
            fixed: None,
            top_k: 12,
            orient_class: 0,
            standardise: true,
            threads: None,
            precision: Precision::F32,
            early_stop_multiplier: 1.1,
            mlp: mlp::MlpConfig::default(),
        }
    }
}

/// Per-feature affine map fitted on the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardiser {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardiser {
    pub fn fit(x: &Features) -> Self {
        let (n, d) = (x.n as f64, x.d);
        let mut mean = vec![0.0f64; d];
        let mut sq = vec![0.0f64; d];
        for i in 0..x.n {
            for (j, v) in x.row(i).iter().enumerate() {
                mean[j] += *v as f64;
                sq[j] += (*v as f64) * (*v as f64);
            }
        }
        let mean: Vec<f64> = mean.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let v = (s / n - m * m).max(0.0).sqrt();
                // Constant features stay constant (0) instead of dividing by zero.
                if v > 1e-12 { v as f32 } else { 1.0 }
            })
            .collect();
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    pub fn apply(&self, x: &Features) -> Features {
        let d = x.d;
        let data = x
            .data
            .iter()
            .enumerate()
            .map(|(t, v)| (v - self.mean[t % d]) / self.std[t % d])
            .collect();
        Features { n: x.n, d, data }
    }
}

/// The fitted predictor.
#[derive(Debug, Clone)]
pub enum Model {
    Rfm(RfmModel),
    Linear(linear::LinearModel),
    Mlp(mlp::MlpModel),
}

/// A fitted probe: model, scores on the recorded split, and (RFM) the metric M's directions.
#[derive(Debug, Clone)]
pub struct ProbeFit {
    pub config: ProbeConfig,
    pub n_classes: usize,
    pub d: usize,
    pub split: Split,
    pub standardiser: Option<Standardiser>,
    pub model: Model,
    pub val: Scores,
    pub test: Scores,
    /// The RFM search log (empty for fixed hyper-parameters and baselines).
    pub trials: Vec<search::Trial>,
    /// Iteration kept by the RFM.
    pub best_iter: Option<usize>,
    /// Top-k eigenvectors of M (RFM only).
    pub directions: Option<Directions>,
    /// The kept RFM fit's iterations (ranks, seconds; not stored): the estimate's calibration
    /// reads them.
    pub trace: Option<rfm::RfmTrace>,
}

impl ProbeFit {
    /// Number of output columns of `predict`.
    pub fn outputs(&self) -> usize {
        match &self.model {
            Model::Rfm(m) => m.outputs,
            Model::Linear(m) => m.outputs,
            Model::Mlp(m) => m.outputs(),
        }
    }

    /// Row-major n×outputs scores for raw (unstandardised) rows: the 0/1 score (binary), class
    /// scores (multiclass) or the value (regression).
    pub fn predict(&self, x: &Features) -> Result<Vec<f64>> {
        if x.d != self.d {
            return Err(ProbeError::DimMismatch {
                expected: self.d,
                got: x.d,
            });
        }
        x.check_finite()?;
        let xs;
        let x = match &self.standardiser {
            Some(s) => {
                xs = s.apply(x);
                &xs
            }
            None => x,
        };
        let dtype = self.config.precision.dtype();
        with_threads(self.config.threads, || match &self.model {
            Model::Rfm(m) => m.predict_with(x, dtype),
            Model::Linear(m) => Ok(m.predict(x)),
            Model::Mlp(m) => m.predict(x),
        })
    }

    /// Predicted class per row (multiclass argmax; binary threshold 0.5).
    pub fn predict_classes(&self, x: &Features) -> Result<Vec<usize>> {
        let p = self.predict(x)?;
        let c = self.outputs();
        Ok(p.chunks(c)
            .map(|r| {
                if c == 1 {
                    usize::from(r[0] >= 0.5)
                } else {
                    (0..c).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0)
                }
            })
            .collect())
    }

    /// The selection criterion on validation (AUC, or −MSE), used for layer weighting.
    pub fn val_score(&self) -> f64 {
        self.val.selection(self.config.task)
    }
}

fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    match threads {
        Some(t) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t.max(1))
                .build()
                .map_err(|e| ProbeError::Numeric(format!("thread pool: {e}")))?;
            pool.install(f)
        }
        None => f(),
    }
}

/// Fits a probe: checks the inputs, splits 70/15/15 (stratified, `config.seed`), standardises
/// on train, fits the chosen model (RFM: random search or fixed hyper-parameters), scores
/// validation and test, and extracts the directions of M.
pub fn fit(features: &Features, targets: &Targets, config: &ProbeConfig) -> Result<ProbeFit> {
    fit_on(features, targets, config, &Device::Cpu)
}

/// `fit` with the model fitted on `device` (an execution choice: the result is the same fit up
/// to rounding, so it is not part of `config`). RFM, linear and MLP fits all run there; splits,
/// scores and directions stay on the host.
pub fn fit_on(
    features: &Features,
    targets: &Targets,
    config: &ProbeConfig,
    device: &Device,
) -> Result<ProbeFit> {
    with_threads(config.threads, || {
        fit_inner(features, targets, config, device)
    })
}

fn fit_inner(
    features: &Features,
    targets: &Targets,
    config: &ProbeConfig,
    device: &Device,
) -> Result<ProbeFit> {
    let task = config.task;
    data::check_inputs(features, targets, task)?;
    if let Some(h) = &config.fixed {
        h.validate()?;
    }
    let n_classes = targets.n_classes();
    let split = splits::split(targets, config.seed)?;
    let raw_train = features.select(&split.train);
    let standardiser = config.standardise.then(|| Standardiser::fit(&raw_train));
    let prep = |idx: &[usize]| -> Features {
        let x = features.select(idx);
        match &standardiser {
            Some(s) => s.apply(&x),
            None => x,
        }
    };
    let (xtr, xva) = (prep(&split.train), prep(&split.val));
    let (ytr, yva, yte) = (
        targets.select(&split.train),
        targets.select(&split.val),
        targets.select(&split.test),
    );
    let opt = rfm::RfmOptions {
        dtype: config.precision.dtype(),
        early_stop_multiplier: config.early_stop_multiplier,
        device: device.clone(),
        ..Default::default()
    };
    let mut trials = vec![];
    let mut best_iter = None;
    let mut rfm_trace = None;
    let model = match config.kind {
        ProbeKind::Rfm => {
            let (m, trace) = match &config.fixed {
                Some(h) => rfm::fit_rfm(&xtr, &ytr, &xva, &yva, task, n_classes, h, &opt)?,
                None => {
                    let (m, t, log) = search::search(
                        &xtr,
                        &ytr,
                        &xva,
                        &yva,
                        task,
                        n_classes,
                        config.trials,
                        config.iterations,
                        config.seed,
                        &opt,
                    )?;
                    trials = log;
                    (m, t)
                }
            };
            best_iter = Some(trace.best_iter);
            rfm_trace = Some(trace);
            Model::Rfm(m)
        }
        ProbeKind::Linear => Model::Linear(linear::fit_on(
            &xtr, &ytr, &xva, &yva, task, n_classes, device,
        )?),
        ProbeKind::Mlp => Model::Mlp(mlp::fit(
            &xtr,
            &ytr,
            &xva,
            &yva,
            task,
            n_classes,
            &config.mlp,
            config.seed,
            device,
        )?),
    };
    let mut fit = ProbeFit {
        config: config.clone(),
        n_classes,
        d: features.d,
        split,
        standardiser: None,
        model,
        val: Scores::default(),
        test: Scores::default(),
        trials,
        best_iter,
        directions: None,
        trace: rfm_trace,
    };
    // Score on already-standardised rows.
    let outs = fit.outputs();
    let dtype = config.precision.dtype();
    let predict = |x: &Features| -> Result<Vec<f64>> {
        Ok(match &fit.model {
            Model::Rfm(m) => m.predict_with(x, dtype)?,
            Model::Linear(m) => m.predict(x),
            Model::Mlp(m) => m.predict(x)?,
        })
    };
    // Validation and test rows in one prediction: an RFM's centres are projected into M's
    // coordinates once (n·d·r flops, as much as the queries' own cross kernel), not per split.
    let both: Vec<usize> = fit
        .split
        .val
        .iter()
        .chain(&fit.split.test)
        .copied()
        .collect();
    let p = predict(&prep(&both))?;
    let (pv, pt) = p.split_at(fit.split.val.len() * outs);
    fit.val = metrics::score(task, pv, outs, &yva);
    fit.test = metrics::score(task, pt, outs, &yte);
    if let Model::Rfm(m) = &fit.model {
        let target: Vec<f64> = match (&ytr, task) {
            (Targets::Classes(c), Task::Multiclass) => c
                .iter()
                .map(|&k| f64::from(u8::from(k == config.orient_class)))
                .collect(),
            (y, _) => y.as_f64(),
        };
        fit.directions = Some(directions::directions_of(
            &m.m,
            m.factor.as_ref(),
            m.d(),
            config.top_k,
            &xtr,
            &target,
        ));
    }
    fit.standardiser = standardiser;
    Ok(fit)
}
