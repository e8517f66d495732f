//! Model fingerprints for cache keys: blake3 over the config and the weight/tokenizer file contents
//! (file names relative to the snapshot, never its absolute path). Hashing a 2 GB checkpoint takes
//! a noticeable fraction of a second even mapped and hashed in parallel, so each file's hash is memoised per process by (path, size, mtime).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use super::error::ModelError;

type Key = (PathBuf, u64, Option<SystemTime>);

fn memo() -> &'static Mutex<HashMap<Key, String>> {
    static MEMO: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// blake3 of a file's content (hex), memoised by path, size and modification time.
pub fn file_hash(path: &Path) -> Result<String, ModelError> {
    let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some(h) = memo().lock().expect("fingerprint memo").get(&key) {
        return Ok(h.clone());
    }
    // Memory-mapped and hashed on every core: a 2.3 GB checkpoint in a fraction of a second.
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap_rayon(path)
        .map_err(|e| ModelError::io(path, e))?;
    let h = hasher.finalize().to_hex().to_string();
    memo()
        .lock()
        .expect("fingerprint memo")
        .insert(key, h.clone());
    Ok(h)
}

/// Fingerprint of a snapshot directory: its config.json, weight files and tokenizer.json.
pub fn snapshot(dir: &Path, weights: &[PathBuf]) -> Result<String, ModelError> {
    let mut files: Vec<PathBuf> = vec![dir.join("config.json")];
    files.extend(weights.iter().cloned());
    let tokenizer = dir.join("tokenizer.json");
    if tokenizer.is_file() {
        files.push(tokenizer);
    }
    of_files(b"rfmx model fingerprint v1\0", &files)
}

/// blake3 over `tag` and each file's name (never its directory) and content hash, in order.
pub fn of_files(tag: &[u8], files: &[PathBuf]) -> Result<String, ModelError> {
    let mut h = blake3::Hasher::new();
    h.update(tag);
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(file_hash(f)?.as_bytes());
        h.update(b"\0");
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Fingerprint of the embedded model: everything that determines its weights and tokenizer.
pub fn embedded(description: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"rfmx embedded model v1\0");
    h.update(description.as_bytes());
    h.finalize().to_hex().to_string()
}
