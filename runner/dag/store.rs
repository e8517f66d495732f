//! The content-addressed store under `.rfmx/` (or `$RFMX_HOME`).
//!
//! ```text
//! store/<key>/manifest.json    output hashes, params, inputs, timings, rfmx version
//! store/<key>/out/...          the node's outputs
//! store/.tmp-<key>-<pid>-<n>/  a node being computed (renamed to store/<key> when done)
//! nodes/<key>.json             the planned node (kind, version, params, inputs): `rfmx node run KEY`
//! locks/<key>.lock             held (flock) while a process computes the node
//! failures/<key>.json          the last failure of the node (error chain, params, log path)
//! logs/<key>.log               the node's log
//! index/<experiment>.json      node id -> last key and params (to explain why a node reruns)
//! runs/<time>-<pid>-<experiment>.jsonl   the event log of each run
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{InputRef, PlannedNode};
use crate::fsx::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse `{path}`: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    pub blake3: String,
    pub bytes: u64,
    /// Modification time (ns since the epoch) when the file was hashed at commit. With the size it
    /// lets [`Store::check`] trust an entry without re-hashing it; absent in entries written before
    /// it was recorded, which are then hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i128>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub rfmx_version: String,
    pub key: String,
    pub id: String,
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub inputs: Vec<InputRef>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Relative path under `out/` -> hash.
    pub outputs: BTreeMap<String, OutputFile>,
    pub started_unix: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub params: serde_json::Value,
    /// The error and its sources, outermost first.
    pub error_chain: Vec<String>,
    pub log: PathBuf,
    pub failed_unix: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub nodes: BTreeMap<String, PlannedNode>,
}

/// The state of a store entry.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryState {
    Missing,
    Valid(Box<Manifest>),
    /// Present but a file is missing, changed or unreadable.
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// The first 12 characters of a key, for display. Keys read back from manifests, failure records
/// and file names are untrusted: a short or non-ASCII one must not panic a byte slice.
pub fn short_key(key: &str) -> &str {
    key.char_indices().nth(12).map_or(key, |(i, _)| &key[..i])
}

/// Whether `s` is a cache key (64 lowercase hex digits, `dag::key::cache_key`): a key read back
/// from a record is joined to the store's folder only when it is one.
pub fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Modification time of a file's metadata in ns since the epoch (None where the filesystem has none).
fn mtime_ns(meta: &std::fs::Metadata) -> Option<i128> {
    let t = meta.modified().ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    })
}

pub fn hash_file(path: &Path) -> std::io::Result<OutputFile> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    let mut h = blake3::Hasher::new();
    let bytes = std::io::copy(&mut f, &mut h)?;
    Ok(OutputFile {
        blake3: h.finalize().to_hex().to_string(),
        bytes,
        mtime_ns: mtime_ns(&meta),
    })
}

/// Why an output name recorded in a manifest cannot be trusted (it must stay inside `out/`).
fn unsafe_output_name(rel: &str) -> Option<&'static str> {
    let p = Path::new(rel);
    if rel.is_empty() {
        Some("is empty")
    } else if p.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') {
        Some("is absolute")
    } else if p
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        Some("leaves the entry's out/ folder")
    } else {
        None
    }
}

/// Why the output `rel` of `out` is not a regular file reached through real folders: a link
/// would make `verify` read outside the store, a FIFO or device would block or never end.
/// One `lstat` per path component (outputs are mostly one component deep).
fn not_a_plain_output(out: &Path, rel: &str) -> Option<String> {
    let mut path = out.to_path_buf();
    let parts: Vec<&std::ffi::OsStr> = Path::new(rel).iter().collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Some("is a symbolic link".into()),
            Ok(m) if last && !m.is_file() => {
                return Some("is not a regular file (a folder, FIFO or device)".into());
            }
            Ok(_) => {}
            Err(e) => return Some(format!("unreadable: {e}")),
        }
    }
    None
}

/// How thoroughly [`Store::entry_state`] looks at an entry's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Manifest, file count, and each output's size and modification time as recorded at commit
    /// (outputs of entries without recorded times are hashed): what `plan`/`run`/`status` use, so
    /// that they never re-read the store's bytes.
    Stat,
    /// Every output re-hashed with blake3: `status --verify`, `gc`, and a node's inputs before it
    /// runs.
    Hash,
}

impl Store {
    /// `$RFMX_HOME`, else `.rfmx` in the working directory.
    pub fn from_env() -> Store {
        let root = std::env::var_os("RFMX_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".rfmx"));
        Store { root }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.store_dir().join(key)
    }
    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("out")
    }
    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }
    pub fn failure_path(&self, key: &str) -> PathBuf {
        self.root.join("failures").join(format!("{key}.json"))
    }
    pub fn log_path(&self, key: &str) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }
    pub fn node_path(&self, key: &str) -> PathBuf {
        self.root.join("nodes").join(format!("{key}.json"))
    }
    pub fn index_path(&self, experiment: &str) -> PathBuf {
        self.root.join("index").join(format!("{experiment}.json"))
    }
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// A fresh temp dir for computing `key` (inside the store, so the final rename is atomic).
    pub fn temp_dir(&self, key: &str) -> Result<PathBuf, StoreError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .store_dir()
            .join(format!(".tmp-{key}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("out")).map_err(io("cannot create temp dir", &dir))?;
        Ok(dir)
    }

    /// An entry's state from its manifest and the outputs' sizes and modification times (no hashing).
    pub fn check(&self, key: &str) -> EntryState {
        self.entry_state(key, Depth::Stat)
    }

    /// An entry's state with every output re-hashed against its manifest.
    pub fn verify(&self, key: &str) -> EntryState {
        self.entry_state(key, Depth::Hash)
    }

    pub fn entry_state(&self, key: &str, depth: Depth) -> EntryState {
        let mpath = self.entry_dir(key).join("manifest.json");
        let text = match crate::fsx::read_limited(&mpath, crate::fsx::TEXT_LIMIT) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if self.entry_dir(key).exists() {
                    EntryState::Corrupt("manifest.json is missing".into())
                } else {
                    EntryState::Missing
                };
            }
            Err(e) => return EntryState::Corrupt(format!("cannot read manifest.json: {e}")),
        };
        let manifest: Manifest = match serde_json::from_slice(&text) {
            Ok(m) => m,
            Err(e) => return EntryState::Corrupt(format!("manifest.json does not parse: {e}")),
        };
        if manifest.key != key {
            return EntryState::Corrupt(format!(
                "manifest.json belongs to key {}",
                short_key(&manifest.key)
            ));
        }
        let out = self.out_dir(key);
        for (rel, expected) in &manifest.outputs {
            if let Some(why) = unsafe_output_name(rel) {
                return EntryState::Corrupt(format!("output name `{rel}` {why}"));
            }
            if let Some(why) = not_a_plain_output(&out, rel) {
                return EntryState::Corrupt(format!("output `{rel}` {why}"));
            }
            let path = out.join(rel);
            let fast = depth == Depth::Stat && expected.mtime_ns.is_some();
            let state = if fast {
                match std::fs::metadata(&path) {
                    Ok(m) if m.len() == expected.bytes && mtime_ns(&m) == expected.mtime_ns => {
                        Ok(())
                    }
                    Ok(m) if m.len() != expected.bytes => Err(format!(
                        "output `{rel}` has {} bytes, its manifest says {}",
                        m.len(),
                        expected.bytes
                    )),
                    Ok(_) => Err(format!(
                        "output `{rel}` was modified after it was committed"
                    )),
                    Err(e) => Err(format!("output `{rel}` unreadable: {e}")),
                }
            } else {
                match hash_file(&path) {
                    Ok(actual)
                        if actual.blake3 == expected.blake3 && actual.bytes == expected.bytes =>
                    {
                        Ok(())
                    }
                    Ok(_) => Err(format!("output `{rel}` does not match its manifest hash")),
                    Err(e) => Err(format!("output `{rel}` unreadable: {e}")),
                }
            };
            if let Err(why) = state {
                return EntryState::Corrupt(why);
            }
        }
        let files = walkdir::WalkDir::new(&out)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count();
        if files != manifest.outputs.len() {
            return EntryState::Corrupt(format!(
                "{files} files in out/, manifest lists {}",
                manifest.outputs.len()
            ));
        }
        EntryState::Valid(Box::new(manifest))
    }

    /// Moves a corrupt entry out of the way (`store/.corrupt-<key>-<pid>`, removed by `gc`) so that
    /// the next plan sees it missing and recomputes it.
    pub fn quarantine(&self, key: &str) -> Result<PathBuf, StoreError> {
        let entry = self.entry_dir(key);
        let to = self
            .store_dir()
            .join(format!(".corrupt-{key}-{}", std::process::id()));
        std::fs::rename(&entry, &to).map_err(io("cannot move aside", &entry))?;
        Ok(to)
    }

    /// Hashes the outputs in `tmp/out`, writes the manifest and renames `tmp` to the entry
    /// (replacing a corrupt entry if there is one). Call with the node's lock held.
    pub fn commit(
        &self,
        node: &PlannedNode,
        tmp: &Path,
        started_unix: f64,
        seconds: f64,
    ) -> Result<Manifest, StoreError> {
        let out = tmp.join("out");
        let mut outputs = BTreeMap::new();
        for e in walkdir::WalkDir::new(&out).sort_by_file_name() {
            let e = e.map_err(|e| StoreError::Io {
                what: "cannot list outputs",
                path: out.clone(),
                source: e.into(),
            })?;
            if e.file_type().is_file() {
                let rel = e
                    .path()
                    .strip_prefix(&out)
                    .unwrap_or(e.path())
                    .to_string_lossy()
                    .replace('\\', "/");
                outputs.insert(
                    rel,
                    hash_file(e.path()).map_err(io("cannot hash output", e.path()))?,
                );
            }
        }
        let manifest = Manifest {
            rfmx_version: env!("CARGO_PKG_VERSION").into(),
            key: node.key.clone(),
            id: node.id.clone(),
            kind: node.kind.clone(),
            version: node.version,
            params: node.params.clone(),
            inputs: node.inputs.clone(),
            fingerprint: node.fingerprint.clone(),
            outputs,
            started_unix,
            seconds,
        };
        let mpath = tmp.join("manifest.json");
        let json = serde_json::to_vec_pretty(&manifest).map_err(|source| StoreError::Json {
            path: mpath.clone(),
            source,
        })?;
        write_atomic(&mpath, &json).map_err(io("cannot write manifest", &mpath))?;
        let entry = self.entry_dir(&node.key);
        if entry.exists() {
            let trash =
                self.store_dir()
                    .join(format!(".trash-{}-{}", node.key, std::process::id()));
            std::fs::rename(&entry, &trash).map_err(io("cannot move aside", &entry))?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        std::fs::rename(tmp, &entry).map_err(io("cannot rename into store", &entry))?;
        Ok(manifest)
    }

    pub fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
            path: path.into(),
            source,
        })?;
        write_atomic(path, &json).map_err(io("cannot write", path))
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StoreError> {
        match crate::fsx::read_limited(path, crate::fsx::TEXT_LIMIT) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StoreError::Json {
                    path: path.into(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                what: "cannot read",
                path: path.into(),
                source: e,
            }),
        }
    }

    pub fn failure(&self, key: &str) -> Option<FailureRecord> {
        self.read_json(&self.failure_path(key)).ok().flatten()
    }

    pub fn index(&self, experiment: &str) -> Index {
        self.read_json(&self.index_path(experiment))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Opens (creating) the node's lock file and takes an exclusive lock, blocking.
    pub fn lock(&self, key: &str) -> Result<File, StoreError> {
        let path = self.lock_path(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open lock", &path))?;
        f.lock().map_err(io("cannot lock", &path))?;
        Ok(f)
    }

    /// Whether another process holds the lock of `key` right now.
    pub fn is_locked(&self, key: &str) -> bool {
        let Ok(f) = File::options().write(true).open(self.lock_path(key)) else {
            return false;
        };
        match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                false
            }
            Err(_) => true,
        }
    }

    /// Total bytes under the store.
    pub fn size(&self) -> u64 {
        walkdir::WalkDir::new(self.store_dir())
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}
