//! `rfmx probe fit|apply`: fit a probe on an n×d feature file and a label file, print the
//! validation/test metrics as JSON, write M, eigenvalues, directions and the probe.

use super::data::{Features, Targets, Task};
use super::error::{ProbeError, Result};
use super::{Precision, ProbeConfig, ProbeFit, ProbeKind, RfmHyper};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    pub command: ProbeCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Fit a probe (70/15/15 split, selection on validation) and report metrics as JSON.
    Fit(FitArgs),
    /// Apply a saved probe to new features; prints predictions as JSON or writes them as .npy.
    Apply(ApplyArgs),
    /// Time one RFM fit with fixed hyper-parameters (see fixtures/bench_rfm.py).
    Bench(super::bench::BenchArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Rfm,
    Linear,
    Mlp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TaskArg {
    Binary,
    Multiclass,
    Regression,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// n×d float features (.npy or .safetensors with one tensor or one named "features").
    #[arg(long)]
    pub features: PathBuf,
    /// n labels: .npy (1-D) or .csv (first column, or --column; a header is detected).
    #[arg(long)]
    pub labels: PathBuf,
    /// CSV column holding the labels (the file then has a header row).
    #[arg(long)]
    pub column: Option<String>,
    #[arg(long, value_enum, default_value = "rfm")]
    pub kind: KindArg,
    /// Inferred when absent: two classes → binary, more → multiclass, non-integers → regression.
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Output directory for the probe, M.npy, eigenvalues.npy, directions.npy, hyper.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Split / search seed (recorded in the output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    #[arg(long, default_value_t = 15)]
    pub iterations: usize,
    /// Fixed ridge λ (with --bandwidth and --q: skips the random search).
    #[arg(long)]
    pub reg: Option<f64>,
    #[arg(long)]
    pub bandwidth: Option<f64>,
    #[arg(long)]
    pub q: Option<f64>,
    /// Centre gradients in the AGOP (fixed hyper-parameters only).
    #[arg(long, default_value_t = false)]
    pub centre: bool,
    #[arg(long, default_value_t = 12)]
    pub top_k: usize,
    /// Do not standardise features before fitting.
    #[arg(long, default_value_t = false)]
    pub no_standardise: bool,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute the kernel matmuls in f64 (slower; for checks).
    #[arg(long, default_value_t = false)]
    pub f64: bool,
    /// Run every RFM iteration (no early stop when validation worsens; for benchmarks).
    #[arg(long, default_value_t = false)]
    pub no_early_stop: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Directory written by `probe fit --out`.
    #[arg(long)]
    pub probe: PathBuf,
    #[arg(long)]
    pub features: PathBuf,
    /// Write predictions (n×outputs f32) here instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Reads n×d features from .npy or .safetensors.
pub fn read_features(path: &Path) -> Result<Features> {
    let rerr = |msg: String| ProbeError::Read {
        path: path.to_path_buf(),
        msg,
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let t = match ext {
        "npy" => crate::npy::read_npy(path).map_err(|e| rerr(e.msg))?,
        "safetensors" => {
            let mut ts = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| rerr(e.to_string()))?;
            if ts.len() == 1 {
                ts.into_values().next().expect("one tensor")
            } else if let Some(t) = ts.remove("features") {
                t
            } else {
                let mut names: Vec<_> = ts.keys().cloned().collect();
                names.sort();
                return Err(rerr(format!(
                    "{} tensors ({names:?}); name the features tensor \"features\"",
                    names.len()
                )));
            }
        }
        _ => return Err(rerr("features must be .npy or .safetensors".into())),
    };
    if !t.dtype().is_float() {
        return Err(rerr(format!(
            "features must be floating point, got {:?}",
            t.dtype()
        )));
    }
    Features::from_tensor(&t).map_err(|e| rerr(e.to_string()))
}

/// Raw labels: numbers or names.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLabels {
    Numbers(Vec<f64>),
    Names(Vec<String>),
}

pub fn read_labels(path: &Path, column: Option<&str>) -> Result<RawLabels> {
    let rerr = |msg: String| ProbeError::Read {
        path: path.to_path_buf(),
        msg,
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "npy" => {
            let t = crate::npy::read_npy(path).map_err(|e| rerr(e.msg))?;
            let t = if t.rank() == 2 && t.dim(1)? == 1 {
                t.squeeze(1)?
            } else {
                t
            };
            if t.rank() != 1 {
                return Err(rerr(format!(
                    "labels must be 1-D, got shape {:?}",
                    t.dims()
                )));
            }
            Ok(RawLabels::Numbers(t.to_dtype(DType::F64)?.to_vec1()?))
        }
        "csv" | "txt" => {
            let text = crate::fsx::read_text_limited(path, crate::fsx::CSV_LIMIT)
                .map_err(|e| rerr(e.to_string()))?;
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let mut col = 0;
            let mut rows: Vec<String> = vec![];
            if let Some(name) = column {
                let header = lines.next().ok_or_else(|| rerr("empty file".into()))?;
                col = header
                    .split(',')
                    .position(|h| h.trim().trim_matches('"') == name)
                    .ok_or_else(|| rerr(format!("no column {name:?} in header {header:?}")))?;
            }
            for (i, l) in lines.enumerate() {
                let f = l
                    .split(',')
                    .nth(col)
                    .ok_or_else(|| rerr(format!("line {} has no column {col}", i + 1)))?;
                rows.push(f.trim().trim_matches('"').to_string());
            }
            let nums: Vec<Option<f64>> = rows.iter().map(|s| s.parse::<f64>().ok()).collect();
            // A header without --column: the first row alone is not a number.
            if column.is_none()
                && nums.len() > 1
                && nums[0].is_none()
                && nums[1..].iter().all(Option::is_some)
            {
                return Ok(RawLabels::Numbers(
                    nums[1..].iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
                ));
            }
            if nums.iter().all(Option::is_some) {
                Ok(RawLabels::Numbers(
                    nums.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
                ))
            } else {
                Ok(RawLabels::Names(rows))
            }
        }
        _ => Err(rerr("labels must be .npy or .csv".into())),
    }
}

/// Turns raw labels into targets for `task` (inferred when `None`); returns the class names
/// in index order (empty for regression).
pub fn to_targets(raw: &RawLabels, task: Option<Task>) -> Result<(Targets, Task, Vec<String>)> {
    let integral = |v: &[f64]| v.iter().all(|x| x.is_finite() && x.fract() == 0.0);
    let task = match (task, raw) {
        (Some(t), _) => t,
        (None, RawLabels::Names(n)) => {
            let mut u = n.clone();
            u.sort();
            u.dedup();
            if u.len() == 2 {
                Task::Binary
            } else {
                Task::Multiclass
            }
        }
        (None, RawLabels::Numbers(v)) if integral(v) => {
            let mut u: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            u.sort_unstable();
            u.dedup();
            if u.len() == 2 {
                Task::Binary
            } else {
                Task::Multiclass
            }
        }
        (None, RawLabels::Numbers(_)) => Task::Regression,
    };
    if task == Task::Regression {
        return match raw {
            RawLabels::Numbers(v) => Ok((Targets::Values(v.clone()), task, vec![])),
            RawLabels::Names(_) => Err(ProbeError::Shape("regression needs numeric labels".into())),
        };
    }
    let names: Vec<String> = match raw {
        RawLabels::Names(n) => n.clone(),
        RawLabels::Numbers(v) => {
            if let Some(row) = v.iter().position(|x| !x.is_finite()) {
                return Err(ProbeError::NonFiniteLabel { row });
            }
            if !integral(v) {
                return Err(ProbeError::Shape(
                    "class labels must be integers or names".into(),
                ));
            }
            v.iter().map(|x| format!("{}", *x as i64)).collect()
        }
    };
    let mut classes = names.clone();
    // Numeric classes sort numerically, names lexicographically.
    classes.sort_by(|a, b| match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
    classes.dedup();
    let idx = names
        .iter()
        .map(|n| classes.iter().position(|c| c == n).unwrap_or(0))
        .collect();
    Ok((Targets::Classes(idx), task, classes))
}

pub fn config_from(args: &FitArgs, task: Task) -> Result<ProbeConfig> {
    let fixed = match (args.reg, args.bandwidth, args.q) {
        (None, None, None) => None,
        (Some(reg), Some(bandwidth), q) => Some(RfmHyper {
            reg,
            bandwidth,
            q: q.unwrap_or(1.0),
            centre: args.centre,
            iterations: args.iterations,
        }),
        _ => {
            return Err(ProbeError::Hyper(
                "fixed hyper-parameters need at least --reg and --bandwidth".into(),
            ));
        }
    };
    Ok(ProbeConfig {
        kind: match args.kind {
            KindArg::Rfm => ProbeKind::Rfm,
            KindArg::Linear => ProbeKind::Linear,
            KindArg::Mlp => ProbeKind::Mlp,
        },
        task,
        seed: args.seed,
        trials: args.trials,
        iterations: args.iterations,
        fixed,
        top_k: args.top_k,
        standardise: !args.no_standardise,
        threads: args.threads,
        precision: if args.f64 {
            Precision::F64
        } else {
            Precision::F32
        },
        // Finite, so that the recorded config stays valid JSON.
        early_stop_multiplier: if args.no_early_stop {
            f64::MAX
        } else {
            ProbeConfig::default().early_stop_multiplier
        },
        ..ProbeConfig::default()
    })
}

/// Fits and returns the JSON report (also used by tests).
pub fn fit_command(args: &FitArgs) -> Result<serde_json::Value> {
    let x = read_features(&args.features)?;
    let raw = read_labels(&args.labels, args.column.as_deref())?;
    let task = args.task.map(|t| match t {
        TaskArg::Binary => Task::Binary,
        TaskArg::Multiclass => Task::Multiclass,
        TaskArg::Regression => Task::Regression,
    });
    let (y, task, classes) = to_targets(&raw, task)?;
    let cfg = config_from(args, task)?;
    let t0 = std::time::Instant::now();
    let fit = super::fit(&x, &y, &cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    if let Some(out) = &args.out {
        fit.save(out)?;
        fit.export_npy(out)?;
    }
    let hyper = match &fit.model {
        super::Model::Rfm(m) => serde_json::to_value(m.hyper)?,
        super::Model::Linear(m) => serde_json::json!({ "lambda": m.lambda }),
        super::Model::Mlp(m) => serde_json::to_value(m.config)?,
    };
    Ok(serde_json::json!({
        "kind": cfg.kind,
        "task": task,
        "n": x.n,
        "d": x.d,
        "split_seed": fit.split.seed,
        "n_train": fit.split.train.len(),
        "n_val": fit.split.val.len(),
        "n_test": fit.split.test.len(),
        "val": fit.val,
        "test": fit.test,
        "hyper": hyper,
        "best_iter": fit.best_iter,
        "classes": classes,
        "seconds": secs,
        "out": args.out,
    }))
}

pub fn apply_command(args: &ApplyArgs) -> Result<serde_json::Value> {
    let fit = ProbeFit::load(&args.probe)?;
    let x = read_features(&args.features)?;
    let p = fit.predict(&x)?;
    let c = fit.outputs();
    if let Some(out) = &args.out {
        let t = Tensor::from_vec(p, (x.n, c), &Device::Cpu)?.to_dtype(DType::F32)?;
        super::io::write_npy(out, &t)?;
        Ok(serde_json::json!({ "n": x.n, "outputs": c, "out": out }))
    } else {
        let rows: Vec<&[f64]> = p.chunks(c).collect();
        Ok(serde_json::json!({ "n": x.n, "outputs": c, "predictions": rows }))
    }
}

/// CLI entry point: JSON on stdout, errors through miette (non-zero exit).
pub fn run(args: &ProbeArgs) -> miette::Result<()> {
    let v = match &args.command {
        ProbeCommand::Fit(a) => fit_command(a),
        ProbeCommand::Apply(a) => apply_command(a),
        ProbeCommand::Bench(a) => super::bench::run(a),
    }
    .map_err(|e| miette::miette!("{e}"))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&v).map_err(|e| miette::miette!("{e}"))?
    );
    Ok(())
}
