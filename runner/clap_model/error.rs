//! Errors of the CLAP port: snapshot resolution and loading, tokenization, shapes. Unreadable files
//! and unusable snapshots are the MusicGen loader's errors ([`ModelError`]); a missing snapshot
//! has its own message (the `clap` metric shows it).

use std::path::PathBuf;

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum ClapError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// An unreadable file or a snapshot that exists but cannot be used (bad config, missing or
    /// broken files).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No snapshot where one was looked for; the message names the places and the download command.
    #[error("{}", missing_message(.id, .looked))]
    MissingSnapshot { id: String, looked: Vec<PathBuf> },
    #[error("tokenizer {origin}: {message}")]
    Tokenizer { origin: String, message: String },
    /// Audio or text the model cannot take (empty clip, non-finite samples, bad rate).
    #[error("{0}")]
    Input(String),
}

impl ClapError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::io(path, source).into()
    }
    pub(crate) fn snapshot(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::snapshot(path, message).into()
    }
}

fn missing_message(id: &str, looked: &[PathBuf]) -> String {
    let first = looked
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| id.to_string());
    let mut s = format!("no CLAP snapshot at {first}");
    for p in looked.iter().skip(1) {
        s.push_str(&format!(" (nor {})", p.display()));
    }
    s.push_str(&format!(
        "; download `{id}` on a machine with internet (it goes to $HF_HOME/hub, default \
         ~/.cache/huggingface/hub): {}",
        crate::model::download_command(id)
    ));
    s
}
