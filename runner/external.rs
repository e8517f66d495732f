//! Inputs from outside the store that node keys depend on by content — a model snapshot, a
//! SoundFont, a CLAP snapshot (later: a user's audio folder) — under one scheme: each file's blake3
//! is memoised per process by (path, size, modification time), so it is hashed once per run
//! however many nodes or sweep points use it; a set of files is fingerprinted by their names (never
//! their directory) and hashes; and every planned node keeps its [`External`]s, which are checked
//! again just before the node runs, so that a snapshot swapped after planning (e.g. while Slurm
//! jobs wait) fails the node instead of caching new bytes under the old key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A file that could not be read for fingerprinting.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ExternalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

type Key = (PathBuf, u64, Option<SystemTime>);

fn memo() -> &'static Mutex<HashMap<Key, String>> {
    static MEMO: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// blake3 of a file's content (hex), memoised by path, size and modification time.
pub fn file_hash(path: &Path) -> Result<String, ExternalError> {
    let err = |source| ExternalError {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some(h) = memo().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(h.clone());
    }
    let h = hash_content(path).map_err(err)?;
    memo()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, h.clone());
    Ok(h)
}

/// Bytes hashed between two releases of the mapped pages (a multiple of blake3's 1 KiB chunk).
const WINDOW: usize = 64 << 20;

/// blake3 of a file, memory-mapped and hashed on every core a window at a time (a 2.3 GB
/// checkpoint in a fraction of a second). Each window's pages are released once hashed: mapped
/// file pages count in the resident set, and hashing a checkpoint right after loading it would
/// otherwise add the whole file on top of the weights (4.8 GB peak for musicgen-small's 2.36 GB).
fn hash_content(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    let mut hasher = blake3::Hasher::new();
    if len == 0 {
        // An empty file cannot be mapped.
        return Ok(hasher.finalize().to_hex().to_string());
    }
    // SAFETY: read-only and private to this function; a file truncated meanwhile would fault
    // (SIGBUS), as with blake3's own `update_mmap`.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let mut at = 0;
    while at < len {
        let end = (at + WINDOW).min(len);
        hasher.update_rayon(&map[at..end]);
        // SAFETY: a read-only file mapping; nothing reads the released range again (a read would
        // fault the file's pages back in). `at` is a multiple of WINDOW, so page-aligned.
        #[cfg(unix)]
        unsafe {
            let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, at, end - at);
        }
        at = end;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// blake3 over `tag` and each file's name (never its directory) and content hash, in order.
pub fn of_files(tag: &[u8], files: &[PathBuf]) -> Result<String, ExternalError> {
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

/// An external input of a planned node: what it is, the files it was fingerprinted from, and the
/// fingerprint the node's key holds. Not part of the key itself (paths never are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct External {
    /// For messages: `model snapshot`, `SoundFont`, `CLAP snapshot`.
    pub what: String,
    /// The hash domain of a set of files; empty for a single file hashed alone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    pub files: Vec<PathBuf>,
    pub fingerprint: String,
}

impl External {
    /// A set of files fingerprinted with [`of_files`] under `tag`.
    pub fn files(what: &str, tag: &[u8], files: Vec<PathBuf>) -> Result<External, ExternalError> {
        Ok(External {
            what: what.into(),
            tag: String::from_utf8_lossy(tag).into_owned(),
            fingerprint: of_files(tag, &files)?,
            files,
        })
    }

    /// One file, fingerprinted by its content hash alone.
    pub fn file(what: &str, path: &Path) -> Result<External, ExternalError> {
        Ok(External {
            what: what.into(),
            tag: String::new(),
            fingerprint: file_hash(path)?,
            files: vec![path.to_path_buf()],
        })
    }

    /// The fingerprint of the files as they are now.
    pub fn current(&self) -> Result<String, ExternalError> {
        match (self.tag.is_empty(), self.files.as_slice()) {
            (true, [one]) => file_hash(one),
            _ => of_files(self.tag.as_bytes(), &self.files),
        }
    }

    /// Errs with the reason when the files are unreadable or no longer what was planned.
    pub fn check(&self) -> Result<(), String> {
        let shown = self
            .files
            .first()
            .and_then(|f| f.parent())
            .filter(|_| self.files.len() > 1)
            .or(self.files.first().map(|f| f.as_path()))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match self.current() {
            Ok(fp) if fp == self.fingerprint => Ok(()),
            Ok(fp) => Err(format!(
                "the {} at {shown} changed since this node was planned (fingerprint {} -> {}); \
                 `rfmx run` again plans with what is there now",
                self.what,
                crate::dag::store::short_key(&self.fingerprint),
                crate::dag::store::short_key(&fp)
            )),
            Err(e) => Err(format!(
                "the {} planned at {shown} cannot be read: {e}",
                self.what
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_fails_the_check_and_an_unchanged_one_passes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("config.json");
        let b = dir.path().join("model.safetensors");
        std::fs::write(&a, "{}").unwrap();
        std::fs::write(&b, "weights").unwrap();
        let e = External::files("model snapshot", b"t\0", vec![a.clone(), b.clone()]).unwrap();
        e.check().unwrap();
        let one = External::file("SoundFont", &b).unwrap();
        assert_eq!(
            one.fingerprint,
            blake3::hash(b"weights").to_hex().to_string()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&b, "other weights").unwrap();
        let msg = e.check().unwrap_err();
        assert!(
            msg.contains("model snapshot") && msg.contains("changed since"),
            "{msg}"
        );
        assert!(one.check().unwrap_err().contains("SoundFont"));
        std::fs::remove_file(&a).unwrap();
        assert!(e.check().unwrap_err().contains("cannot be read"));
        // Names, not directories, enter the fingerprint.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("model.safetensors"), "other weights").unwrap();
        assert_eq!(
            of_files(b"x", std::slice::from_ref(&b)).unwrap(),
            of_files(b"x", &[other.path().join("model.safetensors")]).unwrap()
        );
    }
}
