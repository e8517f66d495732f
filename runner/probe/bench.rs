//! `rfmx probe bench`: RFM timings against the reference implementation on this machine.
//!
//! - `--data DIR --n-train N`: one core RFM fit with fixed hyper-parameters on a prepared data set
//!   (X.npy n×d, y.npy, split.npy = train indices then validation indices), early stopping off,
//!   0/1 targets fitted as a regression and the iterate kept on validation MSE — what
//!   fixtures/bench_rfm.py runs in xRFM. Prints JSON.
//! - `--table`: writes a synthetic binary problem (X ~ N(0, I), y = 1[X u + (X v)² > 1] for random
//!   unit u, v; split as `probe fit` splits it), then alternates, `repeats` times: xRFM through
//!   `$PYTHON fixtures/bench_rfm.py` (default `python3`), the core fit above and the whole
//!   `rfmx probe fit` process, the rfmx ones with the kernel set chosen for this CPU and again
//!   capped at AVX2 (`RFMX_ISA=avx2`). Prints one row per rfmx variant: medians, the ratio of
//!   medians, the median of the pairwise ratios and the validation accuracies.
//! - `--stage`: one layer of the probe stage on a synthetic concept (n rows, d features,
//!   `classes` classes): a one-vs-rest probe per class and the multiclass judge, random search
//!   with `trials` trials of up to `iterations` iterations each, as the stage runs them. Prints the
//!   wall time.

use super::data::{Features, Targets, Task};
use super::error::{ProbeError, Result};
use super::metrics;
use super::rfm::{RfmHyper, RfmOptions, fit_rfm};
use super::splits;
use super::synthetic::gaussian;
use super::{ProbeConfig, ProbeKind};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory with X.npy, y.npy, split.npy (one core fit on it).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training rows (the first n_train entries of split.npy; the rest is validation).
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Print the ratio table against xRFM on a synthetic problem (see the module doc).
    #[arg(long, conflicts_with_all = ["data", "stage"])]
    pub table: bool,
    /// Time one layer of the probe stage on a synthetic concept (or on --data DIR: X.npy n×d
    /// and y.npy with class indices, as fixtures/bench_gpu_probe.py writes them).
    #[arg(long)]
    pub stage: bool,
    /// --stage: fit every probe with the fixed --reg/--bandwidth/--q for exactly --iterations
    /// iterations (no search, no early stop), as the reference script does.
    #[arg(long, default_value_t = false)]
    pub fixed: bool,
    /// Rows of the synthetic problem (--table: 70% train, 15% validation).
    #[arg(long, default_value_t = 4000)]
    pub n: usize,
    /// Features of the synthetic problem.
    #[arg(long, default_value_t = 1024)]
    pub d: usize,
    /// Classes of the synthetic concept (--stage).
    #[arg(long, default_value_t = 12)]
    pub classes: usize,
    /// Random-search trials per probe (--stage).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// The reference script (--table), relative to the working directory.
    #[arg(long, default_value = "fixtures/bench_rfm.py")]
    pub script: PathBuf,
    /// Skip the Python reference (--table).
    #[arg(long, default_value_t = false)]
    pub no_reference: bool,
    /// Device for --stage: cpu, cuda[:N] or metal (as `[model] device`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 1e-3)]
    pub reg: f64,
    #[arg(long, default_value_t = 30.0)]
    pub bandwidth: f64,
    #[arg(long, default_value_t = 1.0)]
    pub q: f64,
    #[arg(long, default_value_t = false)]
    pub centre: bool,
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
}

fn read(path: &Path) -> Result<Tensor> {
    crate::npy::read_npy(path).map_err(|e| ProbeError::Read {
        path: e.path,
        msg: e.msg,
    })
}

fn in_pool<T: Send>(threads: Option<usize>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| ProbeError::Numeric(e.to_string()))?
            .install(f),
        None => f(),
    }
}

pub fn run(args: &BenchArgs) -> Result<serde_json::Value> {
    if args.table {
        return table(args);
    }
    if args.stage {
        return stage(args);
    }
    let (Some(data), Some(n_train)) = (&args.data, args.n_train) else {
        return Err(ProbeError::Shape(
            "probe bench needs --data DIR --n-train N, --table or --stage".into(),
        ));
    };
    core_fit(args, data, n_train)
}

fn core_fit(args: &BenchArgs, data: &Path, n_train: usize) -> Result<serde_json::Value> {
    let x = Features::from_tensor(&read(&data.join("X.npy"))?)?;
    let y: Vec<f64> = read(&data.join("y.npy"))?.to_dtype(DType::F64)?.to_vec1()?;
    let split: Vec<usize> = read(&data.join("split.npy"))?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .iter()
        .map(|&v| v as usize)
        .collect();
    if n_train >= split.len() {
        return Err(ProbeError::Shape(format!(
            "n_train {n_train} ≥ split length {}",
            split.len()
        )));
    }
    let (tr, va) = split.split_at(n_train);
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
        let r = in_pool(args.threads, || {
            let t0 = std::time::Instant::now();
            let (model, trace) = fit_rfm(&xtr, &ytr, &xva, &yva, Task::Regression, 0, &h, &opt)?;
            let secs = t0.elapsed().as_secs_f64();
            let pred = model.predict(&xva)?;
            let yv = yva.as_f64();
            let pos: Vec<bool> = yv.iter().map(|&v| v > 0.5).collect();
            let hits = pred
                .iter()
                .zip(&pos)
                .filter(|(p, t)| (**p >= 0.5) == **t)
                .count();
            Ok(serde_json::json!({
                "seconds": secs,
                "val_acc": hits as f64 / pos.len() as f64,
                "val_mse": metrics::mse(&pred, &yv),
                "val_auc": metrics::auc(&pred, &pos),
                "best_iter": trace.best_iter,
                "ranks": trace.ranks,
            }))
        })?;
        times.push(r["seconds"].as_f64().unwrap_or(f64::NAN));
        out = r;
    }
    let isa = super::gemm::choice();
    out["times"] = serde_json::json!(times);
    out["n_train"] = serde_json::json!(xtr.n);
    out["n_val"] = serde_json::json!(xva.n);
    out["d"] = serde_json::json!(x.d);
    out["iterations"] = serde_json::json!(args.iterations);
    out["isa"] = serde_json::json!(isa.isa.name());
    out["isa_reason"] = serde_json::json!(isa.reason);
    Ok(out)
}

fn unit(mut v: Vec<f64>) -> Vec<f64> {
    let s = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    v.iter_mut().for_each(|a| *a /= s);
    v
}

fn save(path: &Path, t: Tensor) -> Result<()> {
    super::io::write_npy(path, &t)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.into())
}

/// Runs a command, returning its stdout and wall time; a failure is an error naming it.
fn timed(cmd: &mut Command) -> Result<(String, f64)> {
    let t0 = std::time::Instant::now();
    let out = cmd
        .output()
        .map_err(|e| ProbeError::Numeric(format!("{cmd:?}: {e}")))?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(ProbeError::Numeric(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), secs))
}

fn last_json(s: &str) -> Result<serde_json::Value> {
    // The reference prints JSON lines; rfmx prints one pretty JSON document.
    serde_json::from_str(s.trim())
        .or_else(|_| {
            s.lines()
                .rev()
                .find(|l| l.trim_start().starts_with('{'))
                .map(serde_json::from_str)
                .unwrap_or_else(|| serde_json::from_str("null"))
        })
        .map_err(|e| ProbeError::Numeric(format!("unreadable benchmark output ({e}): {s}")))
}

fn table(args: &BenchArgs) -> Result<serde_json::Value> {
    let (n, d) = (args.n, args.d);
    let threads = args.threads.unwrap_or(2);
    let dir = tempfile_dir()?;
    // The problem of fixtures/bench_rfm.py's docstring, drawn here so both sides read one file.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = gaussian(&mut rng, n * d)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let (u, v) = (unit(gaussian(&mut rng, d)), unit(gaussian(&mut rng, d)));
    let labels: Vec<usize> = (0..n)
        .map(|i| {
            let row = &x[i * d..(i + 1) * d];
            let a: f64 = row.iter().zip(&u).map(|(x, u)| *x as f64 * u).sum();
            let b: f64 = row.iter().zip(&v).map(|(x, v)| *x as f64 * v).sum();
            usize::from(a + b * b > 1.0)
        })
        .collect();
    // The split `probe fit` draws for these labels (seed 0), so all fits see the same rows.
    let split = splits::split(&Targets::Classes(labels.clone()), 0)?;
    let order: Vec<i64> = split
        .train
        .iter()
        .chain(&split.val)
        .map(|&i| i as i64)
        .collect();
    let n_train = split.train.len();
    save(
        &dir.join("X.npy"),
        Tensor::from_vec(x, (n, d), &Device::Cpu)?,
    )?;
    let yf: Vec<f32> = labels.iter().map(|&c| c as f32).collect();
    save(&dir.join("y.npy"), Tensor::from_vec(yf, n, &Device::Cpu)?)?;
    let len = order.len();
    save(
        &dir.join("split.npy"),
        Tensor::from_vec(order, len, &Device::Cpu)?,
    )?;

    let exe = std::env::current_exe().map_err(|e| ProbeError::Numeric(e.to_string()))?;
    let dirs = dir.to_string_lossy().into_owned();
    let hyper = |c: &mut Command| {
        c.args(["--reg", &args.reg.to_string()])
            .args(["--bandwidth", &args.bandwidth.to_string()])
            .args(["--q", &args.q.to_string()])
            .args(["--iterations", &args.iterations.to_string()])
            .args(["--threads", &threads.to_string()]);
        if args.centre {
            c.arg("--centre");
        }
    };
    let core = |isa: Option<&str>| -> Result<(f64, f64)> {
        let mut c = Command::new(&exe);
        c.args(["probe", "bench", "--data", &dirs])
            .args(["--n-train", &n_train.to_string()]);
        hyper(&mut c);
        if let Some(i) = isa {
            c.env("RFMX_ISA", i);
        }
        let (out, _) = timed(&mut c)?;
        let v = last_json(&out)?;
        Ok((
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["val_acc"].as_f64().unwrap_or(f64::NAN),
        ))
    };
    let whole = |isa: Option<&str>| -> Result<(f64, f64)> {
        let mut c = Command::new(&exe);
        c.args(["probe", "fit", "--features"])
            .arg(dir.join("X.npy"))
            .arg("--labels")
            .arg(dir.join("y.npy"))
            .args(["--task", "binary", "--no-early-stop"])
            .arg("--out")
            .arg(dir.join("probe"));
        hyper(&mut c);
        if let Some(i) = isa {
            c.env("RFMX_ISA", i);
        }
        let (out, secs) = timed(&mut c)?;
        let v = last_json(&out)?;
        Ok((secs, v["val"]["accuracy"].as_f64().unwrap_or(f64::NAN)))
    };
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // A binary `probe fit` keeps the iterate best on validation AUC, the core fit on MSE: the
    // reference run paired with each is tuned the same way.
    let reference = |tuning: &str| -> Result<(f64, f64)> {
        let mut c = Command::new(&python);
        c.arg(&args.script)
            .args(["--tuning", tuning])
            .args(["--data", &dirs])
            .args(["--n-train", &n_train.to_string()])
            .args(["--iters", &args.iterations.to_string()])
            .args(["--reg", &args.reg.to_string()])
            .args(["--bandwidth", &args.bandwidth.to_string()])
            .args(["--q", &args.q.to_string()])
            .args(["--threads", &threads.to_string()]);
        if args.centre {
            c.arg("--centre");
        }
        let (out, _) = timed(&mut c)?;
        let v = last_json(&out)?;
        Ok((
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["val_acc"].as_f64().unwrap_or(f64::NAN),
        ))
    };
    let variants: [(&str, Option<&str>, bool); 4] = [
        ("core fit (probe bench)", None, false),
        ("rfmx probe fit (whole process)", None, true),
        ("core fit, RFMX_ISA=avx2", Some("avx2"), false),
        ("rfmx probe fit, RFMX_ISA=avx2", Some("avx2"), true),
    ];
    let mut refs: Vec<(f64, f64)> = vec![];
    let mut ours: Vec<Vec<(f64, f64)>> = vec![vec![]; variants.len()];
    for _ in 0..args.repeats.max(1) {
        for (k, (_, isa, proc_)) in variants.iter().enumerate() {
            if !args.no_reference {
                refs.push(reference(if *proc_ { "auc" } else { "mse" })?);
            }
            ours[k].push(if *proc_ { whole(*isa)? } else { core(*isa)? });
        }
    }
    let mut rows = vec![];
    for (k, (name, _, _)) in variants.iter().enumerate() {
        let times: Vec<f64> = ours[k].iter().map(|r| r.0).collect();
        // The reference runs just before each rfmx run: pair them in that order.
        let mine: Vec<(f64, f64)> = (0..times.len())
            .filter_map(|i| refs.get(i * variants.len() + k).copied())
            .collect();
        let ref_times: Vec<f64> = mine.iter().map(|r| r.0).collect();
        let pairs: Vec<f64> = ref_times.iter().zip(&times).map(|(r, t)| r / t).collect();
        rows.push(serde_json::json!({
            "work": name,
            "rfmx_median_s": median(&times),
            "rfmx_val_acc": ours[k].last().map(|r| r.1),
            "xrfm_median_s": median(&ref_times),
            "xrfm_val_acc": mine.last().map(|r| r.1),
            "ratio_of_medians": median(&ref_times) / median(&times),
            "median_pair_ratio": median(&pairs),
            "runs": times.len(),
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for r in &rows {
        eprintln!(
            "| {} | xRFM {:.2} s | rfmx {:.2} s | {:.2}× (pairs {:.2}×) | acc {:.4} vs {:.4} |",
            r["work"].as_str().unwrap_or(""),
            r["xrfm_median_s"].as_f64().unwrap_or(f64::NAN),
            r["rfmx_median_s"].as_f64().unwrap_or(f64::NAN),
            r["ratio_of_medians"].as_f64().unwrap_or(f64::NAN),
            r["median_pair_ratio"].as_f64().unwrap_or(f64::NAN),
            r["rfmx_val_acc"].as_f64().unwrap_or(f64::NAN),
            r["xrfm_val_acc"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(serde_json::json!({
        "cpu": cpu_model(),
        "isa": super::gemm::choice().isa.name(),
        "isa_reason": super::gemm::choice().reason,
        "n": n, "d": d, "n_train": n_train, "n_val": split.val.len(), "threads": threads,
        "iterations": args.iterations, "reg": args.reg, "bandwidth": args.bandwidth, "q": args.q,
        "reference": if args.no_reference { "skipped".to_string() } else { format!("{python} {}", args.script.display()) },
        "rows": rows,
    }))
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rfmx-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| ProbeError::Numeric(e.to_string()))?;
    Ok(dir)
}

/// What a searched fit cost: iterations run over all trials, how many at full rank d, the mean
/// rank of M in the others (the estimate's probe model is checked against these) and the trials
/// that failed (skipped by the search; their partial work is not counted).
fn work(fit: &super::ProbeFit, d: usize) -> serde_json::Value {
    let ranks: Vec<usize> = fit
        .trials
        .iter()
        .flat_map(|t| t.ranks.iter().copied())
        .collect();
    let low: Vec<usize> = ranks.iter().copied().filter(|&r| r < d).collect();
    serde_json::json!({
        "iterations": ranks.len(),
        "full_rank": ranks.len() - low.len(),
        "mean_truncated_rank": (!low.is_empty()).then(|| low.iter().sum::<usize>() as f64 / low.len() as f64),
        "failed": fit.trials.iter().filter(|t| t.error.is_some()).count(),
        "first_error": fit.trials.iter().find_map(|t| t.error.clone()),
    })
}

fn stage(args: &BenchArgs) -> Result<serde_json::Value> {
    let device = crate::model::musicgen::parse_device(&args.device)
        .map_err(|e| ProbeError::Numeric(e.to_string()))?;
    let (x, cls) = match &args.data {
        Some(dir) => {
            let x = Features::from_tensor(&read(&dir.join("X.npy"))?)?;
            let y: Vec<f64> = read(&dir.join("y.npy"))?.to_dtype(DType::F64)?.to_vec1()?;
            (x, y.iter().map(|&v| v as usize).collect::<Vec<usize>>())
        }
        None => super::synthetic::concept(args.n, args.d, args.classes, 7),
    };
    let classes = cls.iter().copied().max().map_or(0, |m| m + 1);
    let fixed = args.fixed.then_some(RfmHyper {
        reg: args.reg,
        bandwidth: args.bandwidth,
        q: args.q,
        centre: args.centre,
        iterations: args.iterations,
    });
    let base = ProbeConfig {
        kind: ProbeKind::Rfm,
        trials: args.trials,
        iterations: args.iterations,
        threads: args.threads,
        fixed,
        early_stop_multiplier: if args.fixed {
            f64::MAX
        } else {
            ProbeConfig::default().early_stop_multiplier
        },
        ..ProbeConfig::default()
    };
    let t0 = std::time::Instant::now();
    let mut probes = vec![];
    for c in 0..classes {
        let t = std::time::Instant::now();
        let (rows, labels) = splits::one_vs_rest(&cls, c, base.seed);
        let cfg = ProbeConfig {
            task: Task::Binary,
            ..base.clone()
        };
        let fit = super::fit_on(&x.select(&rows), &Targets::Classes(labels), &cfg, &device)?;
        probes.push(serde_json::json!({
            "probe": format!("class {c}"), "rows": rows.len(), "seconds": t.elapsed().as_secs_f64(),
            "val_auc": fit.val.auc, "best_iter": fit.best_iter, "work": work(&fit, x.d),
        }));
        eprintln!(
            "{}",
            probes.last().map(|p| p.to_string()).unwrap_or_default()
        );
    }
    let t = std::time::Instant::now();
    let cfg = ProbeConfig {
        task: Task::Multiclass,
        ..base
    };
    let n_rows = x.n;
    let fit = super::fit_on(&x, &Targets::Classes(cls), &cfg, &device)?;
    probes.push(serde_json::json!({
        "probe": "multiclass", "rows": n_rows, "seconds": t.elapsed().as_secs_f64(),
        "val_acc": fit.val.accuracy, "best_iter": fit.best_iter, "work": work(&fit, x.d),
    }));
    eprintln!(
        "{}",
        probes.last().map(|p| p.to_string()).unwrap_or_default()
    );
    Ok(serde_json::json!({
        "cpu": cpu_model(),
        "device": args.device,
        "isa": super::gemm::choice().isa.name(),
        "threads": args.threads.unwrap_or_else(rayon::current_num_threads),
        "n": x.n, "d": x.d, "classes": classes,
        "trials": if args.fixed { 1 } else { args.trials },
        "iterations": args.iterations,
        "seconds": t0.elapsed().as_secs_f64(),
        "probes": probes,
    }))
}
