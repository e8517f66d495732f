//! `rfmx generate` (text -> codes -> 32 kHz audio), `rfmx encode` (audio -> codes) and
//! `rfmx decode` (codes -> audio) on the embedded tiny model, a snapshot directory or a hub id in
//! the local Hugging Face cache.
//!
//! Codes files are `.npy`, `[codebooks, frames]` int64 (what `--codes-out` writes and `decode`
//! reads; `[1, codebooks, frames]` and other integer dtypes are read too). Audio is written as
//! 32-bit float mono WAV at the codec rate (32 kHz for MusicGen). Every flag is checked before the
//! model loads and nothing is written unless the whole command succeeds (temp + rename).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use miette::{GraphicalReportHandler, GraphicalTheme};

use super::musicgen::{GenerateConfig, LayerHook, MusicgenError, parse_device, parse_dtype};
use super::{ModelError, ModelSource, Pipeline};
use crate::audio::wav;

/// Exit status for bad flags, unusable inputs or a model that cannot be found/loaded.
pub const BAD_INPUT: u8 = 2;
/// Exit status for a failure while computing or writing.
pub const FAILED: u8 = 1;

/// Longest clip `generate` accepts (a guard against typos that would exhaust memory).
const MAX_SECONDS: f64 = 3600.0;

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// `tiny` (embedded, seeded RANDOM weights, no download), a snapshot directory, a hub id in
    /// the local HF cache (e.g. facebook/musicgen-small), or `auto` (musicgen-small when cached,
    /// else tiny with a warning)
    #[arg(long, default_value = "auto", value_name = "tiny|auto|PATH|ORG/NAME")]
    pub model: String,
    /// auto, cpu, cuda, cuda:N or metal
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (f32 on the CPU, bf16 on GPUs), f32, f16 or bf16
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text prompt
    #[arg(long)]
    pub prompt: String,
    /// Length of the clip in seconds (default 4; --steps overrides it)
    #[arg(long, allow_negative_numbers = true)]
    pub seconds: Option<f64>,
    /// Exact number of decoder steps (with K codebooks: steps + 1 - K frames), overriding --seconds
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<i64>,
    /// The 32 kHz float WAV to write
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the generated codes: .npy, [codebooks, frames], int64
    #[arg(long)]
    pub codes_out: Option<PathBuf>,
    /// Sampling seed
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample among the k most likely codes; 1 = greedy
    #[arg(long, default_value_t = 250, allow_negative_numbers = true)]
    pub top_k: i64,
    /// Softmax temperature (0 = greedy)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Classifier-free guidance scale g: logits = uncond + (cond - uncond)·g; 1 turns CFG off
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub cfg: f64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The audio clip (WAV; any rate and channel count: mixed to mono, resampled to the codec rate)
    pub clip: PathBuf,
    /// Where to write the codes: .npy, [codebooks, frames], int64
    #[arg(long)]
    pub codes_out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Codes: .npy, [codebooks, frames] (or [1, codebooks, frames]), any integer dtype
    pub codes: PathBuf,
    /// The float WAV to write (mono, at the codec rate)
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CliError {
    /// A bad flag value, caught before anything loads or is written.
    #[error("--{flag}: {message}")]
    #[diagnostic(code(rfmx::usage))]
    Usage { flag: &'static str, message: String },
    /// An input file that cannot be used.
    #[error("{}: {message}", path.display())]
    #[diagnostic(code(rfmx::input))]
    Input { path: PathBuf, message: String },
    #[error(transparent)]
    #[diagnostic(code(rfmx::model))]
    Model(ModelError),
    /// A failure while computing or writing.
    #[error("{0}")]
    #[diagnostic(code(rfmx::failed))]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => FAILED,
            CliError::Model(
                ModelError::Candle(_) | ModelError::Musicgen(MusicgenError::Candle(_)),
            ) => FAILED,
            _ => BAD_INPUT,
        }
    }
}

impl From<ModelError> for CliError {
    fn from(e: ModelError) -> Self {
        CliError::Model(e)
    }
}

impl From<MusicgenError> for CliError {
    fn from(e: MusicgenError) -> Self {
        CliError::Model(e.into())
    }
}

impl From<candle_core::Error> for CliError {
    fn from(e: candle_core::Error) -> Self {
        CliError::Failed(format!("candle: {e}"))
    }
}

fn usage(flag: &'static str, message: impl Into<String>) -> CliError {
    CliError::Usage {
        flag,
        message: message.into(),
    }
}

fn input(path: &Path, message: impl Into<String>) -> CliError {
    CliError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Prints the error (unwrapped, so that paths and commands stay on one line) and returns the
/// exit status.
pub fn exit(result: Result<(), CliError>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
                .with_links(false)
                .with_wrap_lines(false);
            let mut out = String::new();
            if handler.render_report(&mut out, &e).is_err() {
                out = format!("Error: {e}");
            }
            eprintln!("{}", out.trim_end());
            e.exit_code()
        }
    }
}

/// Generation settings checked the way the CLI checks them.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: String,
    /// `Some` = exact decoder steps; `None` = from `seconds`.
    pub steps: Option<usize>,
    pub seconds: f64,
    pub top_k: usize,
    pub temperature: f64,
    pub guidance_scale: f64,
    pub seed: u64,
}

impl GenerateArgs {
    /// Checks every flag (no model needed).
    pub fn request(&self) -> Result<GenerateRequest, CliError> {
        if self.out.is_none() && self.codes_out.is_none() {
            return Err(usage(
                "out",
                "nothing to write: give --out x.wav and/or --codes-out codes.npy",
            ));
        }
        for (flag, p) in [("out", &self.out), ("codes-out", &self.codes_out)] {
            if let Some(p) = p
                && p.is_dir()
            {
                return Err(usage(
                    flag,
                    format!("{} is a directory; give a file name", p.display()),
                ));
            }
        }
        if let (Some(a), Some(b)) = (&self.out, &self.codes_out)
            && a == b
        {
            return Err(usage("codes-out", "must differ from --out"));
        }
        let seconds = self.seconds.unwrap_or(4.0);
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(usage(
                "seconds",
                format!("must be a positive number of seconds, got {seconds}"),
            ));
        }
        if seconds > MAX_SECONDS {
            return Err(usage(
                "seconds",
                format!("{seconds} s is more than the {MAX_SECONDS} s this command accepts"),
            ));
        }
        let steps = match self.steps {
            None => None,
            Some(s) if s < 1 => {
                return Err(usage(
                    "steps",
                    format!("must be a positive number of decoder steps, got {s}"),
                ));
            }
            Some(s) => {
                let max = (MAX_SECONDS * 50.0) as i64 * 2;
                if s > max {
                    return Err(usage(
                        "steps",
                        format!("{s} steps is more than the {max} this command accepts"),
                    ));
                }
                Some(s as usize)
            }
        };
        if self.top_k < 1 {
            return Err(usage(
                "top-k",
                format!("must be at least 1 (1 = greedy), got {}", self.top_k),
            ));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(usage(
                "temperature",
                format!(
                    "must be a finite number >= 0 (0 = greedy), got {}",
                    self.temperature
                ),
            ));
        }
        if !self.cfg.is_finite() {
            return Err(usage(
                "cfg",
                format!(
                    "must be a finite guidance scale (1 = no guidance), got {}",
                    self.cfg
                ),
            ));
        }
        Ok(GenerateRequest {
            prompt: self.prompt.clone(),
            steps,
            seconds,
            top_k: self.top_k as usize,
            temperature: self.temperature,
            guidance_scale: self.cfg,
            seed: self.seed,
        })
    }
}

impl GenerateRequest {
    /// The decoder settings for `p` (steps from seconds unless given exactly).
    pub fn config(&self, p: &Pipeline) -> Result<GenerateConfig, CliError> {
        let k = p.decoder.num_codebooks();
        let steps = match self.steps {
            Some(s) if s < k => {
                return Err(usage(
                    "steps",
                    format!(
                        "{s} steps give no audio with {k} codebooks (the delay pattern needs at \
                         least {k}: steps + 1 - {k} frames)"
                    ),
                ));
            }
            Some(s) => s,
            None => p.steps_for_seconds(self.seconds)?,
        };
        Ok(GenerateConfig {
            steps,
            guidance_scale: self.guidance_scale,
            top_k: self.top_k,
            temperature: self.temperature,
            seed: self.seed,
        })
    }
}

/// A generated clip: codes `[K, frames]` (u32) and mono samples at the codec rate.
pub struct Clip {
    pub codes: Tensor,
    pub audio: Vec<f32>,
}

/// Text -> codes -> audio for one prompt. `hook` sees every block output (progress, steering).
pub fn generate_clip(
    p: &Pipeline,
    prompt: &str,
    cfg: &GenerateConfig,
    hook: &mut dyn LayerHook,
) -> Result<Clip, ModelError> {
    let cond = p.condition(&[prompt.to_string()])?;
    let g = p.decoder.generate(&cond, cfg, hook)?;
    let audio = p.decode_codes(&g.codes)?;
    Ok(Clip {
        codes: g.codes.squeeze(0)?,
        audio: audio.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
    })
}

/// Ticks a progress bar once per decoder step (at the last layer).
struct StepProgress {
    bar: indicatif::ProgressBar,
    last_layer: usize,
}

impl LayerHook for StepProgress {
    fn on_block_output(
        &mut self,
        layer: usize,
        step: usize,
        _: &Tensor,
    ) -> super::musicgen::Result<Option<Tensor>> {
        if layer == self.last_layer {
            self.bar.set_position(step as u64 + 1);
        }
        Ok(None)
    }
}

fn progress_bar(len: u64, message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} steps {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// Writes codes `[K, F]` (any integer dtype) as an int64 `.npy`, atomically.
pub fn write_codes_npy(path: &Path, codes: &Tensor) -> Result<(), CliError> {
    let (k, f) = codes
        .dims2()
        .map_err(|_| CliError::Failed(format!("codes must be [K, F], got {:?}", codes.dims())))?;
    let values = codes
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let mut header =
        format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({k}, {f}), }}").into_bytes();
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.resize(total - 10 - 1, b' ');
    header.push(b'\n');
    let mut bytes = Vec::with_capacity(total + values.len() * 8);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::fsx::write_atomic(path, &bytes)
        .map_err(|e| CliError::Failed(format!("writing {}: {e}", path.display())))
}

/// Reads codes for `p`: `[K, F]` or `[1, K, F]` of any integer dtype, every value a code of the
/// model's codebooks. Returns `[1, K, F]` u32.
pub fn read_codes_npy(path: &Path, p: &Pipeline) -> Result<Tensor, CliError> {
    if !path.is_file() {
        return Err(input(path, "no such codes file"));
    }
    let t = crate::npy::read_npy(path)
        .map_err(|e| input(path, format!("not a readable .npy: {}", e.msg)))?;
    let t = match t.dims() {
        [_, _] => t.unsqueeze(0)?,
        [1, _, _] => t,
        d => {
            return Err(input(
                path,
                format!("codes must be [codebooks, frames] (or [1, codebooks, frames]), got {d:?}"),
            ));
        }
    };
    if !matches!(
        t.dtype(),
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64
    ) {
        return Err(input(
            path,
            format!("codes must be integers, got {:?}", t.dtype()),
        ));
    }
    let (_, k, f) = t.dims3()?;
    let want_k = p.codec.num_codebooks();
    let size = p.codec.config().codebook_size as i64;
    if k != want_k {
        return Err(input(
            path,
            format!("{k} codebooks, but the model has {want_k} (shape must be [{want_k}, frames])"),
        ));
    }
    if f == 0 {
        return Err(input(path, "no frames"));
    }
    let values = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !(0..size).contains(*v))
    {
        return Err(input(
            path,
            format!(
                "code {v} at [{}, {}] is outside the codebook (0..{size})",
                i / f,
                i % f
            ),
        ));
    }
    let codes: Vec<u32> = values.into_iter().map(|v| v as u32).collect();
    Ok(Tensor::from_vec(codes, (1, k, f), &Device::Cpu)?)
}

/// Loads the model the flags name and says which one runs (stderr).
fn load(args: &ModelArgs) -> Result<Pipeline, CliError> {
    let device = parse_device(&args.device).map_err(|e| usage("device", e.to_string()))?;
    let dtype = parse_dtype(&args.dtype, &device).map_err(|e| usage("dtype", e.to_string()))?;
    let source = ModelSource::parse(&args.model);
    let t = Instant::now();
    let p = Pipeline::load(&source, &device, dtype)?;
    eprintln!(
        "model: {} [fingerprint {}] loaded in {:.1}s",
        p.description,
        &p.fingerprint[..16.min(p.fingerprint.len())],
        t.elapsed().as_secs_f64()
    );
    Ok(p)
}

fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<(), CliError> {
    wav::write_f32(path, samples, 1, rate).map_err(|e| CliError::Failed(e.to_string()))
}

/// `rfmx generate`.
pub fn generate(args: &GenerateArgs) -> Result<(), CliError> {
    let req = args.request()?;
    let p = load(&args.model)?;
    let cfg = req.config(&p)?;
    if req.steps.is_some() && args.seconds.is_some() {
        eprintln!(
            "note: --steps {} overrides --seconds {}",
            cfg.steps, req.seconds
        );
    }
    let k = p.decoder.num_codebooks();
    let frames = cfg.steps + 1 - k;
    let mut progress = StepProgress {
        bar: progress_bar(cfg.steps as u64, "generate"),
        last_layer: p.decoder.num_layers().saturating_sub(1),
    };
    let t = Instant::now();
    let clip = generate_clip(&p, &req.prompt, &cfg, &mut progress);
    progress.bar.finish_and_clear();
    let clip = clip?;
    let rate = p.sample_rate();
    eprintln!(
        "generated {frames} frames ({:.2} s) in {} steps ({:.1}s): top-k {}, temperature {}, cfg {}, \
         seed {}",
        clip.audio.len() as f64 / rate as f64,
        cfg.steps,
        t.elapsed().as_secs_f64(),
        cfg.top_k,
        cfg.temperature,
        cfg.guidance_scale,
        cfg.seed
    );
    if let Some(path) = &args.codes_out {
        write_codes_npy(path, &clip.codes)?;
        println!("wrote {} [{k}, {frames}] int64", path.display());
    }
    if let Some(path) = &args.out {
        write_wav(path, &clip.audio, rate)?;
        println!(
            "wrote {} ({} samples, {} Hz mono f32)",
            path.display(),
            clip.audio.len(),
            rate
        );
    }
    Ok(())
}

/// `rfmx encode`.
pub fn encode(args: &EncodeArgs) -> Result<(), CliError> {
    if args.codes_out.is_dir() {
        return Err(usage(
            "codes-out",
            format!(
                "{} is a directory; give a file name",
                args.codes_out.display()
            ),
        ));
    }
    if !args.clip.is_file() {
        return Err(input(&args.clip, "no such audio file"));
    }
    let (samples, channels, rate) =
        wav::read(&args.clip).map_err(|e| input(&args.clip, e.to_string()))?;
    let channels = channels.max(1) as usize;
    let mono: Vec<f32> = samples
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / channels as f32)
        .collect();
    if mono.is_empty() {
        return Err(input(&args.clip, "no samples"));
    }
    let p = load(&args.model)?;
    let want = p.sample_rate();
    let mono = if rate != want {
        eprintln!("resampling {rate} Hz -> {want} Hz");
        crate::audio::resample::resample(&mono, rate, want)
            .map_err(|e| CliError::Failed(e.to_string()))?
    } else {
        mono
    };
    let n = mono.len();
    let audio = Tensor::from_vec(mono, (1, 1, n), &Device::Cpu)?;
    let t = Instant::now();
    let codes = p.encode_audio(&audio)?.squeeze(0)?;
    let (k, f) = codes.dims2()?;
    eprintln!(
        "encoded {:.2} s into {f} frames ({:.1}s)",
        n as f64 / want as f64,
        t.elapsed().as_secs_f64()
    );
    write_codes_npy(&args.codes_out, &codes)?;
    println!("wrote {} [{k}, {f}] int64", args.codes_out.display());
    Ok(())
}

/// `rfmx decode`.
pub fn decode(args: &DecodeArgs) -> Result<(), CliError> {
    if args.out.is_dir() {
        return Err(usage(
            "out",
            format!("{} is a directory; give a file name", args.out.display()),
        ));
    }
    if !args.codes.is_file() {
        return Err(input(&args.codes, "no such codes file"));
    }
    let p = load(&args.model)?;
    let codes = read_codes_npy(&args.codes, &p)?;
    let t = Instant::now();
    let audio: Vec<f32> = p
        .decode_codes(&codes)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1()?;
    let rate = p.sample_rate();
    eprintln!(
        "decoded {} frames into {:.2} s ({:.1}s)",
        codes.dim(2)?,
        audio.len() as f64 / rate as f64,
        t.elapsed().as_secs_f64()
    );
    write_wav(&args.out, &audio, rate)?;
    println!(
        "wrote {} ({} samples, {} Hz mono f32)",
        args.out.display(),
        audio.len(),
        rate
    );
    Ok(())
}
