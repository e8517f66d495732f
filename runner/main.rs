use clap::Parser;
use rfmx::cli::{Cli, Command};

fn main() -> miette::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe(args) => rfmx::probe::cli::run(&args),
    }
}
