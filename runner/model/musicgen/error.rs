//! Errors of the MusicGen port.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MusicgenError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing MusicGen config {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("invalid MusicGen config: {0}")]
    InvalidConfig(String),
    #[error("invalid device {spec:?}: {reason}")]
    Device { spec: String, reason: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, MusicgenError>;
