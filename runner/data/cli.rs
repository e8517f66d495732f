//! `rfmx data export`: the clips a probe sees, as WAV files with a labels.csv.

use super::store::{labels_csv, record, render_selected};
use super::{DataError, DatasetConfig, MODEL_RATE, SAMPLE_RATE};
use crate::audio::wav::write_f32;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Render a concept's clips to WAV (32 kHz mono; --native adds 44.1 kHz stereo) + labels.csv.
    Export {
        /// notes, intervals, scales, chords, progressions, tempos, time_signatures, keys
        concept: String,
        #[arg(long)]
        per_class: Option<usize>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        soundfont: Option<PathBuf>,
        /// Use the built-in synthesizer even if a SoundFont is installed.
        #[arg(long)]
        builtin_synth: bool,
        #[arg(long)]
        native: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only these classes (repeatable).
        #[arg(long = "class")]
        classes: Vec<String>,
    },
}

pub fn run(args: DataArgs) -> miette::Result<()> {
    match args.command {
        DataCommand::Export {
            concept,
            per_class,
            out,
            soundfont,
            builtin_synth,
            native,
            seed,
            classes,
        } => {
            let cfg = DatasetConfig {
                concept,
                per_class,
                classes: (!classes.is_empty()).then_some(classes),
                instruments: None,
                soundfont,
                builtin_synth,
                seed,
                native,
            };
            let n = export(&cfg, &out).map_err(|e| miette::miette!("{e}"))?;
            eprintln!("wrote {n} clips to {}", out.display());
            Ok(())
        }
    }
}

/// Writes `NNNNN.wav` (32 kHz mono) and with `native` `NNNNN_44k.wav` (stereo), plus labels.csv
/// and manifest.json. Returns the number of clips written.
pub fn export(cfg: &DatasetConfig, out: &std::path::Path) -> Result<usize, DataError> {
    let renderer = cfg.renderer()?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar.set_message(format!("export {}", cfg.concept));
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let mut records = Vec::new();
    let mut files = Vec::new();
    let (concept, _, rendered, silent, kept) =
        render_selected(cfg, &renderer, &progress, &mut |e, r| {
            let name = format!(
                "{:05}_{}_{}.wav",
                r.index,
                sanitize(&e.clips[r.index].class),
                sanitize(&e.clips[r.index].instrument)
            );
            write_f32(&out.join(&name), &r.mono_32k, 1, MODEL_RATE)?;
            if cfg.native {
                write_f32(
                    &out.join(name.replace(".wav", "_44k.wav")),
                    &r.stereo,
                    2,
                    SAMPLE_RATE,
                )?;
            }
            records.push(record(e, r.index));
            files.push(name);
            Ok(())
        })?;
    bar.finish();
    let csv = labels_csv(&records, Some(&files));
    let p = out.join("labels.csv");
    crate::fsx::write_atomic(&p, csv.as_bytes())
        .map_err(|source| DataError::Io { path: p, source })?;
    let summary = serde_json::json!({
        "concept": concept, "renderer": renderer.info(), "rendered": rendered,
        "silent_dropped": silent, "kept": records.len(), "per_class": kept, "config": cfg,
    });
    let p = out.join("manifest.json");
    crate::fsx::write_atomic(
        &p,
        &serde_json::to_vec_pretty(&summary).expect("serialisable"),
    )
    .map_err(|source| DataError::Io { path: p, source })?;
    Ok(records.len())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
