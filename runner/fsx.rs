//! File-system helpers shared by every stage: nothing is ever half-written.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary sibling file and a rename, so that a reader
/// (or a crash) never sees a partially written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A unique temporary name next to `path` (same file system, so `rename` is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

/// Why `name` cannot be one path component of a folder rfmx writes (docs/contracts.md, "Names"),
/// or `None` when it can: not empty, not `.`/`..`, no leading dot (hidden, and the start of
/// `..`), no separators or NUL, no trailing dot or space, at most 255 bytes, and not a name
/// Windows reserves (`CON`, `NUL`, `COM1`, ... with or without an extension), so that the
/// published folder is the same folder on every platform.
pub fn component_problem(name: &str) -> Option<&'static str> {
    const RESERVED: [&str; 22] = [
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    ];
    if name.is_empty() {
        return Some("is empty");
    }
    if name == "." || name == ".." {
        return Some("is `.` or `..`, which names a parent folder, not a new one");
    }
    if name.starts_with('.') {
        return Some("starts with a dot (a hidden or parent-relative name)");
    }
    if name.contains(['/', '\\', '\0']) {
        return Some("contains a path separator or NUL");
    }
    if name.ends_with(['.', ' ']) {
        return Some("ends with a dot or a space (dropped on Windows)");
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes");
    }
    let stem = name.split('.').next().unwrap_or(name);
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return Some("is a reserved device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9)");
    }
    None
}

#[cfg(test)]
mod component_tests {
    use super::component_problem;

    #[test]
    fn names_that_escape_or_vanish_are_refused() {
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "a\0", "x.", "x ", "con", "NUL", "Com1.txt",
            "lpt9",
        ] {
            assert!(component_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(component_problem(&"a".repeat(256)).is_some());
        for good in [
            "chords", "exp-1", "a.b", "con_test", "console", "COM10", "x_y.z",
        ] {
            assert_eq!(component_problem(good), None, "{good:?} refused");
        }
    }
}
