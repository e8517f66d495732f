//! Model fingerprints for cache keys: blake3 over the config and the weight/tokenizer file contents
//! (file names relative to the snapshot, never its absolute path), by the one scheme for external
//! inputs (`crate::external`: each file hashed once per process).

use std::path::{Path, PathBuf};

use super::error::ModelError;
use crate::external::{External, ExternalError};

/// The hash domain of MusicGen snapshots.
pub const SNAPSHOT_TAG: &[u8] = b"rfmx model fingerprint v1\0";

fn model_err(e: ExternalError) -> ModelError {
    ModelError::from_external(e)
}

/// The files a snapshot's fingerprint covers: its config.json, weight files and tokenizer.json.
pub fn snapshot_files(dir: &Path, weights: &[PathBuf]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = vec![dir.join("config.json")];
    files.extend(weights.iter().cloned());
    let tokenizer = dir.join("tokenizer.json");
    if tokenizer.is_file() {
        files.push(tokenizer);
    }
    files
}

/// The snapshot as an external input of the nodes that load it.
pub fn snapshot_external(dir: &Path, weights: &[PathBuf]) -> Result<External, ModelError> {
    External::files("model snapshot", SNAPSHOT_TAG, snapshot_files(dir, weights)).map_err(model_err)
}

/// Fingerprint of a snapshot directory: its config.json, weight files and tokenizer.json.
pub fn snapshot(dir: &Path, weights: &[PathBuf]) -> Result<String, ModelError> {
    of_files(SNAPSHOT_TAG, &snapshot_files(dir, weights))
}

/// blake3 over `tag` and each file's name (never its directory) and content hash, in order.
pub fn of_files(tag: &[u8], files: &[PathBuf]) -> Result<String, ModelError> {
    crate::external::of_files(tag, files).map_err(model_err)
}

/// Fingerprint of the embedded model: everything that determines its weights and tokenizer.
pub fn embedded(description: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"rfmx embedded model v1\0");
    h.update(description.as_bytes());
    h.finalize().to_hex().to_string()
}
