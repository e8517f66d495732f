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

/// Size limit for the JSON and TOML files rfmx parses whole (configs, tokenizer files, shard
/// indexes, manifests, records, specs): the largest real one (a tokenizer.json) is a few MB.
pub const TEXT_LIMIT: u64 = 64 << 20;
/// Size limit for label and ratings CSVs.
pub const CSV_LIMIT: u64 = 1 << 30;

/// Reads a whole file, refusing one over `limit` bytes before allocating for it (docs/contracts.md,
/// "Files rfmx reads"). The read itself is capped too, so a file that grows, or a device such as
/// /dev/zero that reports length 0, cannot make it allocate more.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let too_big = |n: u64| over_limit(format!("{n} bytes or more"), limit);
    let len = f.metadata()?.len();
    if len > limit {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_limited(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Refuses a file over `limit` bytes that a library will read itself.
pub fn check_size(path: &Path, limit: u64) -> std::io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    if len > limit {
        return Err(over_limit(format!("{len} bytes"), limit));
    }
    Ok(())
}

fn over_limit(size: String, limit: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{size}, over the {limit}-byte limit for this kind of file"),
    )
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn reads_within_the_limit_and_refuses_beyond_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        std::fs::write(&p, "{\"a\": 1}").unwrap();
        assert_eq!(read_text_limited(&p, 8).unwrap(), "{\"a\": 1}");
        let e = read_limited(&p, 7).unwrap_err().to_string();
        assert!(e.contains("8 bytes or more, over the 7-byte limit"), "{e}");
        assert!(check_size(&p, 7).is_err() && check_size(&p, 8).is_ok());
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(
            read_text_limited(&p, 8)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_device_of_endless_bytes_stops_at_the_limit() {
        let e = read_limited(Path::new("/dev/zero"), 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1025 bytes or more"), "{e}");
    }
}

thread_local! {
    /// Set while [`catch_panic`] runs its closure: the panic hook stays silent then.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a third-party reader (symphonia, tokenizers) on untrusted input and turns a panic inside
/// it into its message, without the panic report on stderr: user input never aborts a command
/// or prints a backtrace (docs/contracts.md, "Files rfmx reads"). A last resort, for readers that
/// assert or `expect` on malformed input where rfmx cannot validate everything first.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the reader panicked".into())
    })
}

#[cfg(test)]
mod panic_tests {
    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(super::catch_panic(|| 3), Ok(3));
        let e = super::catch_panic(|| -> u8 { panic!("bad {}", 7) }).unwrap_err();
        assert_eq!(e, "bad 7");
    }
}
