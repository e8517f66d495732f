//! Command-line arguments (clap). Parsing only: the commands live in `crate::commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  rfmx run specs/toy.toml                       run (or resume) every node of a spec
  rfmx run specs/toy.toml --set toy.values=[1,2,3,4] --jobs 4
  rfmx plan specs/toy.toml                      each node: cached / to run, and why
  rfmx plan specs/notes_sweep.toml --estimate   + time and memory per node kind, and the total
  rfmx explain specs/toy.toml 'toy_square[x=3]' one node's params, inputs, key, outputs
  rfmx check specs/*.toml                       validate specs (exit 2 on any problem)
  rfmx run specs/toy.toml --executor slurm --detach   submit to Slurm and return
  rfmx cancel specs/toy.toml                    cancel a spec's queued/running Slurm jobs
  rfmx report specs/toy.toml                    re-render plots + HTML report from cached results
  rfmx status                                   failed nodes, running nodes and Slurm jobs, store size
  rfmx gc --dry-run                             what housekeeping would remove
  rfmx generate --model tiny --prompt \"solo piano\" --out x.wav   4 s of audio from text

Layering: defaults < spec file < RFMX_<SECTION>__<KEY>=value < --set section.key=value.
The cache lives in ./.rfmx (or $RFMX_HOME). Exit codes: 0 ok, 1 some nodes failed, 2 bad spec or usage.";

#[derive(Debug, Parser)]
#[command(
    name = "rfmx",
    version = crate::VERSION,
    about = "One TOML spec in, a reproducible MusicRFM experiment out",
    long_about = "rfmx turns one TOML spec into a reproducible MusicRFM experiment (steering MusicGen with \
                  Recursive Feature Machine concept directions), cached node by node so that changing one \
                  knob recomputes only what it touches.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The spec file (TOML)
    pub spec: PathBuf,
    /// Override a spec value: dotted key = TOML value (repeatable), e.g. --set steer.eta=[0.2,0.4]
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run (or resume) every node of a spec; only missing, failed or changed nodes compute
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        /// Nodes run in parallel (default: executor.jobs, else the available cores)
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Print the plan and stop
        #[arg(long)]
        dry_run: bool,
        /// Where nodes run (default: executor.kind from the spec)
        #[arg(long, value_enum)]
        executor: Option<ExecutorArg>,
        /// With the Slurm executor: submit the jobs and exit without waiting for them
        #[arg(long)]
        detach: bool,
    },
    /// Cancel the queued and running Slurm jobs of a spec (scancel)
    Cancel {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Print the DAG: each node cached or to run, and why
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Also estimate, per node kind, the time and peak memory of the nodes to run on the
        /// spec's device (calibrated once per device, model and dtype; cached in the store)
        #[arg(long)]
        estimate: bool,
    },
    /// Print one node's params, inputs, cache key and outputs
    Explain {
        #[command(flatten)]
        spec: SpecArgs,
        /// Node id (e.g. 'toy_square[x=3]') or a unique cache-key prefix
        node: String,
    },
    /// Validate specs without running them
    Check {
        /// Spec files
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Override a spec value (applied to every spec)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Failed nodes (with their failure records), running nodes (held locks), Slurm jobs and store size
    Status {
        /// Also re-hash every store entry against its manifest (slow on a large store) and list the
        /// corrupt ones
        #[arg(long)]
        verify: bool,
    },
    /// Remove temp dirs of killed runs, stale lock files and store entries no index references
    Gc {
        /// Only print what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Render plots and the HTML report (reports/<experiment>/) from whatever results exist
    Report {
        #[command(flatten)]
        spec: SpecArgs,
        /// Also write every plot as PNG (for papers)
        #[arg(long)]
        png: bool,
    },
    /// SynTheory concept datasets: export clips and labels to inspect what the probes see
    Data(crate::data::cli::DataArgs),
    /// Fit, apply or benchmark concept probes (RFM, linear, MLP) on features from anywhere
    Probe(crate::probe::cli::ProbeArgs),
    /// Listening tests: build a blinded stimulus set + rating page, or `analyze` the results
    Stimuli(crate::stimuli::cli::StimuliArgs),
    /// Text to music: prompt -> MusicGen codes -> 32 kHz float WAV (and the codes as .npy)
    Generate(crate::model::cli::GenerateArgs),
    /// Audio to EnCodec codes (.npy, [codebooks, frames], int64)
    Encode(crate::model::cli::EncodeArgs),
    /// EnCodec codes (.npy) to 32 kHz float WAV
    Decode(crate::model::cli::DecodeArgs),
    /// CLAP text–audio cosines: score WAV clips against texts (the `clap` metric's model)
    Clap(crate::clap_model::cli::ClapArgs),
    /// Time guided generation and teacher-forced extraction of a model on a device (JSON lines;
    /// the measurements behind `plan --estimate`, used by fixtures/bench_gpu.sh)
    Calibrate(crate::estimate::cli::CalibrateArgs),
    /// Low-level node operations (used by Slurm workers)
    #[command(hide = true)]
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorArg {
    Local,
    Slurm,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run one planned node by cache key (its inputs must be in the store)
    Run { key: String },
    /// Run the nodes of one Slurm array task, one after another: the keys listed at index
    /// `$SLURM_ARRAY_TASK_ID` (absent: 0) of an index file (a JSON list of lists of keys)
    RunArray { index: std::path::PathBuf },
}
