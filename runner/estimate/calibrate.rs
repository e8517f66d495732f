//! The short measurements behind `rfmx plan --estimate` (docs/design.md §9), cached in the store
//! under `calibration/` so that a second estimate reads them instead of measuring again.
//!
//! Each measurement times the code path the node kind runs, at the model's real dimensions and on
//! the chosen device, but on a small amount of work: a few decoder steps, a short clip, RFM fits
//! at small n. `super` scales them to the plan's sizes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::EstimateError;
use crate::model::musicgen::{GenerateConfig, NoHook, Pool};
use crate::model::{ModelSource, Pipeline};
use crate::probe::{ProbeConfig, RfmHyper, Targets, Task};

/// Bumped whenever a measurement changes meaning: older files are measured again.
pub const CALIBRATION_VERSION: u32 = 3;

/// What a calibration file records to say whether it still holds: the format's version and the
/// rfmx build (`rfmx --version`) that measured it. A file from another build is measured again,
/// since an upgrade can change the speed of the very code it timed (the CPU probe fits ran 1.5×
/// faster between two builds of one week); a working tree's uncommitted edits share one
/// `-dirty` stamp, so a developer deletes `calibration/` after changing a timed path.
pub trait Stamped {
    fn version(&self) -> u32;
    fn build(&self) -> &str;
}

/// The sizes a calibration measures at. On the CPU the model's cost is linear in the work, so
/// small shapes suffice, but RFM fits need enough rows for their products to run at the rate of
/// paper-size ones; a GPU is launch-bound at small shapes, so it measures at the shapes the nodes
/// run (16 clips of 4 s per extraction batch) and RFM fits large enough to load it.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Rows of the two binary RFM fits (the 12-class fit uses the larger).
    rfm_rows: [usize; 2],
    /// Clips (one batch) and seconds per clip for EnCodec and the teacher-forced forward.
    clips: usize,
    clip_seconds: f64,
}

fn sizes(device: &Device) -> Sizes {
    if device.is_cpu() {
        Sizes {
            rfm_rows: [512, 2048],
            clips: 2,
            clip_seconds: 1.0,
        }
    } else {
        Sizes {
            rfm_rows: [1024, 4096],
            clips: crate::stages::activations::DEFAULT_BATCH,
            clip_seconds: crate::data::CLIP_SECS,
        }
    }
}
/// Iterations per calibration fit (each is timed on its own).
const RFM_ITERS: usize = 2;
/// Decoder steps timed (after one warm-up generation of the same length).
const STEPS: usize = 12;

/// What one device, model and dtype measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCalibration {
    pub version: u32,
    /// The rfmx build that measured it (files without one are from before builds were recorded).
    #[serde(default)]
    pub build: String,
    /// `cpu` or `cuda:N` / `metal:N`.
    pub device: String,
    /// Threads of the CPU pool the measurements ran on (CPU timings scale with it).
    pub threads: usize,
    /// The model's label (`tiny`, `random-small`, a snapshot directory).
    pub model: String,
    pub fingerprint: String,
    pub dtype: String,
    pub hidden: usize,
    pub layers: usize,
    pub codebooks: usize,
    pub frame_rate: usize,
    pub weight_bytes: usize,
    /// One classifier-free-guided decoder step for one prompt (2 rows), seconds.
    pub step_s: f64,
    /// Teacher-forced forward with pooling, seconds per clip-frame.
    pub extract_frame_s: f64,
    /// EnCodec encode and decode, seconds per audio second.
    pub encode_s: f64,
    pub decode_s: f64,
    /// Every iteration of the calibration's RFM fits (two binary, one 12-class) at the model's
    /// width: its shape, the rank M had and its wall time. The estimate fits its cost model to
    /// these and prices later iterations at the ranks they reached.
    pub rfm_passes: Vec<RfmPass>,
    /// FD and MMD² with their bootstrap CIs between two sets of `eval_samples` rows of `hidden`.
    pub eval_samples: usize,
    pub fd_s: f64,
    pub mmd_s: f64,
    /// The pitch-class judge, seconds per audio second.
    pub pitch_s: f64,
    /// Wall time the calibration took.
    pub seconds: f64,
}

/// One iteration of a calibration RFM fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmPass {
    /// Training and validation rows.
    pub rows: usize,
    pub val_rows: usize,
    /// Outputs (1 for a binary probe, the classes for the multiclass judge).
    pub outputs: usize,
    /// Rank of M in this iteration (d while M = I).
    pub rank: usize,
    /// Whether the iteration ended with an AGOP update (all but the final refit).
    pub agop: bool,
    pub seconds: f64,
}

/// Rendering throughput of one renderer (the dataset node's cost does not depend on the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderCalibration {
    pub version: u32,
    /// The rfmx build that measured it (files without one are from before builds were recorded).
    #[serde(default)]
    pub build: String,
    pub renderer: String,
    pub threads: usize,
    pub clips: usize,
    /// Wall seconds per clip at the measured parallelism.
    pub clip_s: f64,
}

/// Which model to calibrate, as a probe or model node of the plan names it.
#[derive(Debug, Clone)]
pub struct ModelTarget {
    pub source: ModelSource,
    pub device: String,
    pub dtype: String,
    pub fingerprint: String,
    /// FD/MMD are timed at this many samples per set (the plan's generations per point).
    pub eval_samples: usize,
}

/// `cpu` / `cuda:0` / `metal:0`.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The cache file of one (device, threads, model, dtype): keyed by the model's fingerprint, never
/// by its path.
pub fn model_file(
    dir: &Path,
    device: &str,
    threads: usize,
    fingerprint: &str,
    dtype: &str,
) -> PathBuf {
    let fp = &fingerprint[..12.min(fingerprint.len())];
    let dev = device.replace(':', "");
    dir.join(format!("{dev}-t{threads}-{fp}-{dtype}.json"))
}

/// Reads a cached calibration, or measures and caches it. Returns it and whether it was measured
/// now. A file that does not parse, has an older version or was measured by another build is
/// measured again (and replaced).
pub fn cached<T: Serialize + for<'de> Deserialize<'de> + Stamped>(
    path: &Path,
    measure: impl FnOnce() -> Result<T, EstimateError>,
) -> Result<(T, bool), EstimateError> {
    if let Ok(bytes) = std::fs::read(path)
        && let Ok(v) = serde_json::from_slice::<T>(&bytes)
        && v.version() == CALIBRATION_VERSION
        && v.build() == crate::VERSION
    {
        return Ok((v, false));
    }
    let v = measure()?;
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| EstimateError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    crate::fsx::write_atomic(path, &bytes).map_err(|e| EstimateError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok((v, true))
}

fn sync(device: &Device) -> Result<(), EstimateError> {
    device.synchronize().map_err(EstimateError::measure)
}

/// Times `f` after one untimed call (kernels compiled, caches warm); returns the timed seconds.
fn timed<T>(
    device: &Device,
    mut f: impl FnMut() -> Result<T, EstimateError>,
) -> Result<f64, EstimateError> {
    f()?;
    sync(device)?;
    let t = Instant::now();
    f()?;
    sync(device)?;
    Ok(t.elapsed().as_secs_f64())
}

pub fn measure_model(target: &ModelTarget) -> Result<ModelCalibration, EstimateError> {
    let t0 = Instant::now();
    let device =
        crate::model::musicgen::parse_device(&target.device).map_err(EstimateError::measure)?;
    let dtype = crate::model::musicgen::parse_dtype(&target.dtype, &device)
        .map_err(EstimateError::measure)?;
    let pipe = Pipeline::shared(&target.source, &device, dtype).map_err(EstimateError::measure)?;
    let dec = &pipe.decoder;
    let (hidden, layers, k) = (dec.hidden_size(), dec.num_layers(), dec.num_codebooks());
    let frame_rate = pipe.frame_rate();

    let cond = pipe
        .condition(&["calibration".to_string()])
        .map_err(EstimateError::measure)?;
    let gen_cfg = GenerateConfig {
        steps: STEPS.max(k),
        ..GenerateConfig::default()
    };
    let step_s = timed(&device, || {
        dec.generate(&cond, &gen_cfg, &mut NoHook)
            .map_err(EstimateError::measure)
    })? / gen_cfg.steps as f64;

    // Noise is as costly to encode as music: EnCodec's work depends only on the length.
    let size = sizes(&device);
    let (clips, seconds) = (size.clips, size.clip_seconds);
    let samples = (seconds * pipe.sample_rate() as f64) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let audio: Vec<f32> = (0..clips * samples)
        .map(|_| rng.random_range(-0.5f32..0.5))
        .collect();
    let audio =
        Tensor::from_vec(audio, (clips, 1, samples), &device).map_err(EstimateError::measure)?;
    let mut codes = None;
    let encode_s = timed(&device, || {
        codes = Some(pipe.encode_audio(&audio).map_err(EstimateError::measure)?);
        Ok(())
    })? / (clips as f64 * seconds);
    let codes = codes.ok_or_else(|| EstimateError::Measure("no codes encoded".into()))?;
    let frames = codes.dim(2).map_err(EstimateError::measure)?;
    let decode_s = timed(&device, || {
        pipe.decode_codes(&codes).map_err(EstimateError::measure)
    })? / (clips as f64 * seconds);
    let extract_frame_s = timed(&device, || {
        let pooled = dec
            .extract_pooled(&codes, &[Pool::Mean])
            .map_err(EstimateError::measure)?;
        // The node copies every layer's pooled rows to the host: part of its cost.
        pooled[0]
            .to_device(&Device::Cpu)
            .map_err(EstimateError::measure)
    })? / (clips * frames) as f64;

    let mut rfm_passes = Vec::new();
    for &n in &size.rfm_rows {
        rfm_passes.extend(rfm_fit_passes(n, hidden, 2, &device)?);
    }
    rfm_passes.extend(rfm_fit_passes(
        size.rfm_rows[1],
        hidden,
        MULTICLASS,
        &device,
    )?);
    let (fd_s, mmd_s, pitch_s) = eval_costs(target.eval_samples.max(2), hidden)?;

    Ok(ModelCalibration {
        version: CALIBRATION_VERSION,
        build: crate::VERSION.to_string(),
        device: device_label(&device),
        threads: rayon::current_num_threads(),
        model: pipe.source.label(),
        fingerprint: pipe.fingerprint.clone(),
        dtype: format!("{dtype:?}").to_lowercase(),
        hidden,
        layers,
        codebooks: k,
        frame_rate,
        weight_bytes: pipe.weight_bytes,
        step_s,
        extract_frame_s,
        encode_s,
        decode_s,
        rfm_passes,
        eval_samples: target.eval_samples.max(2),
        fd_s,
        mmd_s,
        pitch_s,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Classes of the multiclass calibration fit (the notes concept's).
const MULTICLASS: usize = 12;

/// The iterations of an RFM fit with `classes` classes (2: binary) on `n` rows of width `d` of a
/// synthetic concept (the stage benchmark's: a few dozen latent directions plus noise, so that M
/// truncates as it does on structured data), fixed hyper-parameters, no early stop, through the
/// probe stage's own entry point.
fn rfm_fit_passes(
    n: usize,
    d: usize,
    classes: usize,
    device: &Device,
) -> Result<Vec<RfmPass>, EstimateError> {
    let (x, cls) = crate::probe::synthetic::concept(n, d, classes, n as u64);
    let y = Targets::Classes(cls);
    let cfg = ProbeConfig {
        task: if classes == 2 {
            Task::Binary
        } else {
            Task::Multiclass
        },
        iterations: RFM_ITERS,
        fixed: Some(RfmHyper {
            reg: 1e-3,
            bandwidth: 10.0,
            q: 1.0,
            centre: false,
            iterations: RFM_ITERS,
        }),
        early_stop_multiplier: f64::MAX,
        ..ProbeConfig::default()
    };
    // Fits this small are dominated by setup; one untimed fit warms the kernels and the GEMM
    // choice.
    let fit = || crate::probe::fit_on(&x, &y, &cfg, device).map_err(EstimateError::measure);
    fit()?;
    sync(device)?;
    let f = fit()?;
    sync(device)?;
    let trace = f
        .trace
        .as_ref()
        .ok_or_else(|| EstimateError::Measure("the RFM fit kept no trace".into()))?;
    let last = trace.seconds.len().saturating_sub(1);
    Ok(trace
        .ranks
        .iter()
        .zip(&trace.seconds)
        .enumerate()
        .map(|(i, (&rank, &seconds))| RfmPass {
            rows: f.split.train.len(),
            val_rows: f.split.val.len(),
            outputs: f.outputs(),
            rank,
            agop: i < last,
            seconds,
        })
        .collect())
}

/// FD and MMD² with bootstrap CIs, as an evaluation node computes them, and the pitch judge.
fn eval_costs(samples: usize, d: usize) -> Result<(f64, f64, f64), EstimateError> {
    use crate::eval::stats;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut rows = |m: usize| -> Vec<Vec<f64>> {
        (0..m)
            .map(|_| (0..d).map(|_| StandardNormal.sample(&mut rng)).collect())
            .collect()
    };
    let (x, y) = (rows(samples), rows(samples));
    let boot = |f: fn(&stats::Rows, &stats::Rows) -> Result<f64, stats::StatsError>| {
        let t = Instant::now();
        // A failing statistic is reported by the node as unavailable; only the time counts here.
        let _ =
            stats::bootstrap_two_sample(&x, &y, f, crate::stages::evaluation::BOOT_TWO_SAMPLE, 0);
        t.elapsed().as_secs_f64()
    };
    let (fd_s, mmd_s) = (boot(stats::frechet), boot(stats::mmd2));
    let sr = crate::model::SAMPLE_RATE;
    let audio: Vec<f32> = (0..sr as usize)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / sr as f32).sin())
        .collect();
    let t = Instant::now();
    let _ = crate::eval::judges::dominant_pitch_class(&audio, sr);
    Ok((fd_s, mmd_s, t.elapsed().as_secs_f64()))
}

/// Times the dataset node's renderer on a few clips of the concept (one per rayon thread, at
/// least one per class) into a temp dir that is removed afterwards.
pub fn measure_render(
    cfg: &crate::data::DatasetConfig,
    scratch: &Path,
) -> Result<RenderCalibration, EstimateError> {
    let concept = crate::data::Concept::parse(&cfg.concept)
        .ok_or_else(|| EstimateError::Measure(format!("unknown concept {}", cfg.concept)))?;
    let classes = concept.classes().len().max(1);
    let threads = rayon::current_num_threads();
    let mut small = cfg.clone();
    small.per_class = Some(threads.div_ceil(classes).max(1));
    small.native = false;
    let dir = crate::fsx::temp_sibling(&scratch.join("render"));
    let t = Instant::now();
    let built = crate::data::build(&small, &dir, &|_, _| {});
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let ds = built.map_err(EstimateError::measure)?;
    let clips = ds.manifest.rendered.max(1);
    Ok(RenderCalibration {
        version: CALIBRATION_VERSION,
        build: crate::VERSION.to_string(),
        renderer: render_tag(cfg),
        threads,
        clips,
        clip_s: secs / clips as f64,
    })
}

/// `builtin` or the SoundFont's file name (its content is what the dataset key holds; the
/// throughput only depends on which renderer runs).
pub fn render_tag(cfg: &crate::data::DatasetConfig) -> String {
    match &cfg.soundfont {
        Some(p) if !cfg.builtin_synth => p
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            })
            .unwrap_or_else(|| "soundfont".into()),
        _ => "builtin".into(),
    }
}

impl Stamped for ModelCalibration {
    fn version(&self) -> u32 {
        self.version
    }
    fn build(&self) -> &str {
        &self.build
    }
}

impl Stamped for RenderCalibration {
    fn version(&self) -> u32 {
        self.version
    }
    fn build(&self) -> &str {
        &self.build
    }
}
