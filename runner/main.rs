use clap::Parser;
use rfmx::cli::{Cli, Command};

fn main() -> miette::Result<()> {
    match Cli::parse().command {
        Command::Data(args) => rfmx::data::cli::run(args),
    }
}
