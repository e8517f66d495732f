//! Command-line interface.

#[derive(Debug, clap::Parser)]
#[command(
    name = "rfmx",
    version,
    about = "One TOML spec in, a reproducible MusicRFM experiment out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// SynTheory concept datasets.
    Data(crate::data::cli::DataArgs),
}
