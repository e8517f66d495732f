//! Errors of the model pipeline (loading, resolution, conditioning).

use std::path::PathBuf;

use super::encodec::EncodecError;
use super::musicgen::MusicgenError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Musicgen(#[from] MusicgenError),
    #[error(transparent)]
    Encodec(#[from] EncodecError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer {origin}: {message}")]
    Tokenizer { origin: String, message: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A snapshot that exists but cannot be used (bad config, missing or broken weight files).
    #[error("{path}: {message}")]
    Snapshot { path: PathBuf, message: String },
    #[error("{}", missing_message(.id, .looked))]
    MissingSnapshot { id: String, looked: Vec<PathBuf> },
    #[error("{0}")]
    Input(String),
}

impl ModelError {
    pub fn from_external(e: crate::external::ExternalError) -> Self {
        Self::io(e.path, e.source)
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn snapshot(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Snapshot {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The command that downloads a hub snapshot into the standard cache (on a machine with internet).
pub fn download_command(id: &str) -> String {
    format!("huggingface-cli download {id}")
}

fn missing_message(id: &str, looked: &[PathBuf]) -> String {
    let mut s = format!("model `{id}` is not in the local Hugging Face cache; looked in:");
    for p in looked {
        s.push_str(&format!("\n  {}", p.display()));
    }
    s.push_str(&format!(
        "\ndownload it on a machine with internet (it goes to $HF_HOME/hub, default \
         ~/.cache/huggingface/hub):\n  {}\nor point `[model] path` / `--model` at a snapshot directory; \
         `tiny` is the embedded model with random weights",
        download_command(id)
    ));
    s
}
