use clap::Parser;

fn main() -> std::process::ExitCode {
    rfmx::commands::main(rfmx::cli::Cli::parse())
}
