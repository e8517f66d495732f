//! Command-line interface of `rfmx`.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rfmx",
    version,
    about = "One TOML spec in, a reproducible MusicRFM experiment out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fit, apply or benchmark concept probes (RFM, linear, MLP).
    Probe(crate::probe::cli::ProbeArgs),
}
