//! `rfmx clap`: CLAP cosines between audio clips and texts, e.g. to check a generation against its
//! prompt outside a run. Every flag is checked before the model loads; `--json` is written whole
//! (temp + rename) or not at all.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde_json::json;

use super::ClapError;
use super::model::{Clap, ClapSource, cosine};
use crate::audio::wav;
use crate::model::cli::{BAD_INPUT, FAILED};

#[derive(Debug, Clone, clap::Args)]
pub struct ClapArgs {
    /// `auto` (laion/larger_clap_music from the local HF cache), a hub id, or a snapshot directory
    #[arg(long, default_value = "auto", value_name = "auto|PATH|ORG/NAME")]
    pub model: String,
    /// A text to score every clip against (repeat for several)
    #[arg(long = "text", required = true)]
    pub texts: Vec<String>,
    /// Seed for the crops of clips longer than the model's 10 s
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write {model, texts, clips:[{path, cosines:[..]}]} as JSON
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Audio clips (WAV; any rate and channel count: mixed to mono, resampled to 48 kHz)
    #[arg(required = true)]
    pub clips: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
enum CliError {
    #[error("{0}")]
    Clap(#[from] ClapError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Failed(String),
}

fn read_mono(path: &Path) -> Result<(Vec<f32>, u32), CliError> {
    let (x, ch, sr) = wav::read(path).map_err(|e| CliError::Input(e.to_string()))?;
    let ch = usize::from(ch.max(1));
    let mono: Vec<f32> = x
        .chunks(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    if mono.is_empty() {
        return Err(CliError::Input(format!("{}: no samples", path.display())));
    }
    Ok((mono, sr))
}

fn score(a: &ClapArgs) -> Result<(), CliError> {
    if a.texts.iter().any(|t| t.trim().is_empty()) {
        return Err(CliError::Input("--text: empty text".into()));
    }
    if let Some(j) = &a.json
        && j.is_dir()
    {
        return Err(CliError::Input(format!(
            "--json {} is a directory",
            j.display()
        )));
    }
    let audio = a
        .clips
        .iter()
        .map(|p| read_mono(p))
        .collect::<Result<Vec<_>, _>>()?;
    let model = Clap::shared(&ClapSource::parse(&a.model), &Device::Cpu)?;
    eprintln!("model: {}", model.description());
    let t0 = Instant::now();
    let text = model.embed_texts(&a.texts)?;
    let t_text = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut rows = Vec::new();
    for (i, (x, sr)) in audio.iter().enumerate() {
        let e = model.embed_audio(x, *sr, a.seed.wrapping_add(i as u64))?;
        rows.push(text.iter().map(|t| cosine(&e, t)).collect::<Vec<f64>>());
    }
    let t_audio = t1.elapsed().as_secs_f64();
    eprintln!(
        "embedded {} text(s) in {t_text:.3} s and {} clip(s) in {t_audio:.3} s ({:.2} clips/s)",
        a.texts.len(),
        audio.len(),
        audio.len() as f64 / t_audio.max(1e-9)
    );
    let width = a
        .clips
        .iter()
        .map(|p| p.display().to_string().len())
        .max()
        .unwrap_or(4);
    let mut head = format!("{:<width$}", "clip");
    for i in 0..a.texts.len() {
        head.push_str(&format!("  {:>8}", format!("text {}", i + 1)));
    }
    println!("{head}");
    for (p, r) in a.clips.iter().zip(&rows) {
        let mut line = format!("{:<width$}", p.display().to_string());
        for c in r {
            line.push_str(&format!("  {c:>8.4}"));
        }
        println!("{line}");
    }
    for (i, t) in a.texts.iter().enumerate() {
        println!("text {}: {t}", i + 1);
    }
    if let Some(j) = &a.json {
        let v = json!({
            "model": model.description(),
            "fingerprint": model.fingerprint,
            "texts": a.texts,
            "clips": a.clips.iter().zip(&rows).map(|(p, r)| json!({
                "path": p.display().to_string(), "cosines": r
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&v).map_err(|e| CliError::Failed(e.to_string()))?;
        crate::fsx::write_atomic(j, text.as_bytes())
            .map_err(|e| CliError::Failed(format!("writing {}: {e}", j.display())))?;
    }
    Ok(())
}

/// Runs `rfmx clap` and renders any error; returns the exit status.
pub fn run(a: &ClapArgs) -> u8 {
    match score(a) {
        Ok(()) => 0,
        Err(e) => {
            let code = match &e {
                CliError::Failed(_) | CliError::Clap(ClapError::Candle(_)) => FAILED,
                _ => BAD_INPUT,
            };
            eprintln!("{:?}", miette::Report::new(e));
            code
        }
    }
}
