//! Listening-test stimulus sets (docs/design.md §7): blinded, loudness-matched clips with a rating page
//! (`rfmx stimuli SPEC`), and the analysis of the subjects' results (`rfmx stimuli analyze`).
//!
//! Layout of `reports/<name>/`:
//! - `stimuli/`: what subjects get: `index.html`, `app.js`, `style.css`, `trials.js` and
//!   `audio/<id>.wav`. Nothing in it names a condition: ids are random, every clip has the same
//!   format and byte length, clips are written in id order (so modification times follow ids).
//! - `private/key.json` (+ `key.csv`): id -> condition, target, replicate, source, loudness.
//! - `results/`: where the exported rating files go; `analysis/`: `rfmx stimuli analyze` output.

pub mod analyze;
pub mod build;
pub mod cli;
pub mod csv;
pub mod design;
pub mod loudness;
pub mod sources;
pub mod spec;
pub mod stats;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StimuliError {
    #[error("{path}: {msg}")]
    Spec { path: PathBuf, msg: String },
    /// A spec value located in the file (line, column, hint), such as a name that cannot be a
    /// folder (docs/contracts.md, "Names").
    #[error("{0}")]
    Located(Box<crate::spec::error::SpecDiagnostic>),
    #[error("condition `{condition}`, target `{target}`: {msg}")]
    Source {
        condition: String,
        target: String,
        msg: String,
    },
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error("loudness of {what}: {msg}")]
    Loudness { what: String, msg: String },
    #[error("io {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("results: {0}")]
    Results(String),
    #[error("{0}")]
    Repeats(String),
}

pub type Result<T> = std::result::Result<T, StimuliError>;

impl StimuliError {
    /// For the CLI: a located problem keeps its source, caret and hint.
    pub fn into_report(self) -> miette::Report {
        match self {
            StimuliError::Located(d) => miette::Report::new(*d),
            e => miette::miette!("{e}"),
        }
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StimuliError {
    let path = path.into();
    move |source| StimuliError::Io { path, source }
}
