//! Finding a hub repo id in the standard Hugging Face cache, as `huggingface_hub` lays it out:
//! `<cache>/models--<org>--<name>/refs/main` holds the revision, `snapshots/<revision>/` the files.
//! The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`.

use std::path::{Path, PathBuf};

use super::error::ModelError;

/// The model `name = "auto"` uses when its snapshot is cached.
pub const DEFAULT_HUB_ID: &str = "facebook/musicgen-small";

/// The hub cache directory the environment selects.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("HF_HUB_CACHE") {
        return p;
    }
    if let Some(p) = env("HF_HOME") {
        return p.join("hub");
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        return p.join("huggingface").join("hub");
    }
    env("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("huggingface")
        .join("hub")
}

/// `facebook/musicgen-small` -> `models--facebook--musicgen-small`.
pub fn repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// Whether `s` reads as a hub repo id (`org/name`, no path syntax) rather than a directory.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The snapshot directory of `id` in the cache: the revision `refs/main` names, else the only (or
/// newest) snapshot that has a config.json. Errors list where it looked.
pub fn find_snapshot(id: &str) -> Result<PathBuf, ModelError> {
    find_snapshot_in(&cache_dir(), id)
}

pub fn find_snapshot_in(cache: &Path, id: &str) -> Result<PathBuf, ModelError> {
    let repo = cache.join(repo_folder(id));
    let snapshots = repo.join("snapshots");
    let missing = |extra: Vec<PathBuf>| {
        let mut looked = vec![repo.clone()];
        looked.extend(extra);
        ModelError::MissingSnapshot {
            id: id.to_string(),
            looked,
        }
    };
    let refs = repo.join("refs").join("main");
    if refs.is_file() {
        // A revision is one commit hash: a file that is large, not text, or names a path (`..`,
        // `a/b`) is refused rather than followed out of the snapshots folder.
        let rev =
            crate::fsx::read_text_limited(&refs, 4096).map_err(|e| ModelError::io(&refs, e))?;
        let rev = rev.trim();
        if let Some(why) = crate::fsx::component_problem(rev) {
            return Err(ModelError::snapshot(
                &refs,
                format!("names revision {rev:?}, which {why}"),
            ));
        }
        let dir = snapshots.join(rev);
        if dir.join("config.json").is_file() {
            return Ok(dir);
        }
        return Err(missing(vec![dir.join("config.json")]));
    }
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| missing(vec![snapshots.clone()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refs_main_naming_a_path_or_garbage_is_refused() {
        let cache = tempfile::tempdir().unwrap();
        let id = "org/m";
        let repo = cache.path().join(repo_folder(id));
        // A config.json two levels up, where `../..` would lead.
        std::fs::create_dir_all(repo.join("snapshots")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("config.json"), "{}").unwrap();
        for (bad, want) in [
            ("..", "`.` or `..`"),
            ("../..", "starts with a dot"),
            ("x/../..", "separator"),
            ("", "empty"),
        ] {
            std::fs::write(repo.join("refs/main"), bad).unwrap();
            let e = find_snapshot_in(cache.path(), id).unwrap_err().to_string();
            assert!(e.contains("refs/main") && e.contains(want), "{bad:?}: {e}");
        }
        std::fs::write(repo.join("refs/main"), [0xff, 0xfe]).unwrap();
        let e = find_snapshot_in(cache.path(), id).unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }
}
