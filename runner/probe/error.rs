//! Errors of the probe area: every bad input becomes a message, never a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("features contain a non-finite value (NaN or inf) at row {row}, column {col}")]
    NonFiniteFeature { row: usize, col: usize },
    #[error("labels contain a non-finite value at row {row}")]
    NonFiniteLabel { row: usize },
    #[error("features have {features} rows but labels have {labels}")]
    RowMismatch { features: usize, labels: usize },
    #[error("feature dimension mismatch: the probe was fitted on d = {expected}, got d = {got}")]
    DimMismatch { expected: usize, got: usize },
    #[error(
        "class {class} has only {count} sample(s); a stratified 70/15/15 split needs at least {need}"
    )]
    TooFewPerClass {
        class: String,
        count: usize,
        need: usize,
    },
    #[error("a classification probe needs at least two classes, got {0}")]
    TooFewClasses(usize),
    #[error("binary task needs labels 0/1 (two classes), got {0} classes")]
    NotBinary(usize),
    #[error("too few samples ({n}) for a 70/15/15 split")]
    TooFewSamples { n: usize },
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("invalid hyper-parameter: {0}")]
    Hyper(String),
    #[error("linear algebra failure: {0}")]
    Numeric(String),
    #[error("cannot read {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("cannot write {path}: {msg}")]
    Write { path: PathBuf, msg: String },
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, ProbeError>;
