//! The node output contract: each node kind's output files are serde types declared beside the
//! kind (`ProbeScores` in `probe`, `Metrics` in `evaluation`, ...), written and read only through
//! [`Output`], so that a producer and every consumer (stages, evaluation, report, CLI) agree by
//! construction. docs/contracts.md lists every kind's params and files.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A node output file that could not be read or written as its contract says.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ContractError {
    pub path: PathBuf,
    pub reason: String,
}

/// A JSON output file of a node kind: its file name and its one reader and writer.
pub trait Output: Serialize + DeserializeOwned {
    /// The file's name in the node's output dir.
    const FILE: &'static str;

    /// Reads `dir/FILE`.
    fn read(dir: &Path) -> Result<Self, ContractError> {
        read_json(&dir.join(Self::FILE))
    }

    /// Writes `dir/FILE` (pretty JSON, through a temp file and a rename).
    fn write(&self, dir: &Path) -> Result<(), ContractError> {
        write_json(&dir.join(Self::FILE), self)
    }
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ContractError> {
    let err = |reason: String| ContractError {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| err(format!("does not match its format: {e}")))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ContractError> {
    let err = |reason: String| ContractError {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    crate::fsx::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

/// A score that may be undefined (JSON `null`, e.g. an AUC with one class in the split): finite
/// values only.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}
