//! `rfmx probe bench`: times one RFM fit with fixed hyper-parameters on a prepared data set
//! (X.npy n×d, y.npy, split.npy = train indices then validation indices, as written by
//! fixtures/bench_rfm.py), so that the reference (xRFM) and this crate are timed on the same
//! data, hyper-parameters, iterations and thread count, back to back.

use super::data::{Features, Targets, Task};
use super::error::{ProbeError, Result};
use super::metrics;
use super::rfm::{RfmHyper, RfmOptions, fit_rfm};
use candle_core::{DType, Tensor};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory with X.npy, y.npy, split.npy (see fixtures/bench_rfm.py).
    #[arg(long)]
    pub data: PathBuf,
    /// Training rows (the first n_train entries of split.npy; the rest is validation).
    #[arg(long)]
    pub n_train: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub reg: f64,
    #[arg(long, default_value_t = 10.0)]
    pub bandwidth: f64,
    #[arg(long, default_value_t = 1.0)]
    pub q: f64,
    #[arg(long, default_value_t = false)]
    pub centre: bool,
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
}

fn read(path: &Path) -> Result<Tensor> {
    Tensor::read_npy(path).map_err(|e| ProbeError::Read {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

pub fn run(args: &BenchArgs) -> Result<serde_json::Value> {
    let x = Features::from_tensor(&read(&args.data.join("X.npy"))?)?;
    let y: Vec<f64> = read(&args.data.join("y.npy"))?
        .to_dtype(DType::F64)?
        .to_vec1()?;
    let split: Vec<usize> = read(&args.data.join("split.npy"))?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .iter()
        .map(|&v| v as usize)
        .collect();
    if args.n_train >= split.len() {
        return Err(ProbeError::Shape(format!(
            "n_train {} ≥ split length {}",
            args.n_train,
            split.len()
        )));
    }
    let (tr, va) = split.split_at(args.n_train);
    let t = Targets::Values(y);
    let h = RfmHyper {
        reg: args.reg,
        bandwidth: args.bandwidth,
        q: args.q,
        centre: args.centre,
        iterations: args.iterations,
    };
    // Early stopping off so both implementations do the same number of iterations.
    let opt = RfmOptions {
        early_stop_multiplier: f64::INFINITY,
        ..Default::default()
    };
    let (xtr, ytr, xva, yva) = (x.select(tr), t.select(tr), x.select(va), t.select(va));
    let mut times = vec![];
    let mut out = serde_json::Value::Null;
    for _ in 0..args.repeats.max(1) {
        let work = || -> Result<serde_json::Value> {
            let t0 = std::time::Instant::now();
            let (model, trace) = fit_rfm(&xtr, &ytr, &xva, &yva, Task::Regression, 0, &h, &opt)?;
            let secs = t0.elapsed().as_secs_f64();
            let pred = model.predict(&xva)?;
            let yv = yva.as_f64();
            let pos: Vec<bool> = yv.iter().map(|&v| v > 0.5).collect();
            Ok(serde_json::json!({
                "seconds": secs,
                "val_mse": metrics::mse(&pred, &yv),
                "val_auc": metrics::auc(&pred, &pos),
                "best_iter": trace.best_iter,
            }))
        };
        let r = match args.threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| ProbeError::Numeric(e.to_string()))?
                .install(work)?,
            None => work()?,
        };
        times.push(r["seconds"].as_f64().unwrap_or(f64::NAN));
        out = r;
    }
    out["times"] = serde_json::json!(times);
    out["n_train"] = serde_json::json!(xtr.n);
    out["n_val"] = serde_json::json!(xva.n);
    out["d"] = serde_json::json!(x.d);
    out["iterations"] = serde_json::json!(args.iterations);
    Ok(out)
}
