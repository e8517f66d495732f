//! SynTheory concept datasets: enumeration (exact construction and counts), rendering through a
//! SoundFont or the built-in synth, 32 kHz mono conversion, stratified subsampling, silent-clip
//! dropping and compact storage.
//!
//! One call builds a dataset directory: `data::build(&cfg, dir, &progress)`; `Dataset::open(dir)`
//! reads it back.

pub mod cli;
pub mod concepts;
pub mod folder;
pub mod instruments;
pub mod midi;
pub mod render;
pub mod select;
pub mod store;
pub mod synth;
pub mod theory;

pub use concepts::{CLIP_SECS, Clip, Concept, Enumeration, SAMPLE_RATE, UserConcept, enumerate};
pub use render::{DEFAULT_SOUNDFONT, Renderer, RendererInfo};
pub use store::{ClipRecord, Dataset, Manifest, build};

use std::path::PathBuf;

/// The sample rate the model consumes.
pub const MODEL_RATE: u32 = 32_000;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "data.concept: unknown concept '{0}' (expected one of notes, intervals, scales, chords, progressions, tempos, time_signatures, keys)"
    )]
    UnknownConcept(String),
    #[error("data.classes: unknown class '{class}' for concept {concept} (classes: {known})")]
    UnknownClass {
        concept: Concept,
        class: String,
        known: String,
    },
    #[error(
        "data.per_class: {per_class} exceeds the {available} clips of class '{class}' in {concept}"
    )]
    PerClassTooLarge {
        concept: Concept,
        class: String,
        per_class: usize,
        available: usize,
    },
    #[error("data.per_class: must be at least 1")]
    PerClassZero,
    #[error(
        "data.instruments: GM program {program} is not used by concept {concept} (its programs: {known})"
    )]
    UnknownInstrument {
        concept: Concept,
        program: u8,
        known: String,
    },
    #[error("data.soundfont: cannot use '{path}': {reason} (install the Debian package timgm6mb-soundfont for the default {default})", default = DEFAULT_SOUNDFONT)]
    SoundFont { path: PathBuf, reason: String },
    #[error(
        "data.per_class: only {kept} non-silent clips of class '{class}' exist, {wanted} requested"
    )]
    TooManySilent {
        class: String,
        kept: usize,
        wanted: usize,
    },
    #[error("rendering failed: {0}")]
    Render(String),
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// A folder dataset's labels CSV or files are not usable; every problem names its file and
    /// CSV line (`data::folder`).
    #[error("the folder dataset of {} is not usable:\n  {}", csv.display(), problems.join("\n  "))]
    Folder { csv: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Decode(#[from] crate::audio::decode::DecodeError),
}

/// What to build; field names are the spec keys under `[data]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub concept: String,
    /// Clips per class, stratified over instruments; None = the full set.
    #[serde(default)]
    pub per_class: Option<usize>,
    /// Restrict to these classes; None = all.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Restrict to these GM programs (`data.instruments`); None = every program of the concept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruments: Option<Vec<u8>>,
    /// SoundFont path; None = the default if installed, else the built-in synth.
    #[serde(default)]
    pub soundfont: Option<PathBuf>,
    /// Force the built-in synth even when a SoundFont is installed.
    #[serde(default)]
    pub builtin_synth: bool,
    #[serde(default)]
    pub seed: u64,
    /// Also keep the 44.1 kHz stereo render.
    #[serde(default = "yes")]
    pub native: bool,
}

fn yes() -> bool {
    true
}

impl DatasetConfig {
    pub fn new(concept: &str) -> DatasetConfig {
        DatasetConfig {
            concept: concept.into(),
            per_class: None,
            classes: None,
            instruments: None,
            soundfont: None,
            builtin_synth: false,
            seed: 0,
            native: true,
        }
    }

    pub fn renderer(&self) -> Result<Renderer, DataError> {
        if self.builtin_synth && self.soundfont.is_none() {
            Ok(Renderer::Builtin)
        } else {
            Renderer::resolve(self.soundfont.as_deref())
        }
    }
}

/// Progress callback: (clips done, clips planned).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);
