//! The temp working directory that the binary-driving tests share: its own `RFMX_HOME`, and the
//! caller's other `RFMX_*` settings removed so that a developer's environment cannot leak in.
//! Each test file adds its own helpers in its own `impl common::Work` block; `clap_fixtures` reads
//! the CLAP reference fixtures.
#![allow(dead_code)] // each test crate uses a different subset

pub mod clap_fixtures;
pub mod directions;
pub mod numeric;
pub mod t5_fixtures;
pub mod torch_bin;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.path().join(".rfmx")
    }

    /// Writes a spec file into the working dir.
    pub fn spec(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rfmx"));
        c.args(args)
            .current_dir(self.path())
            .env("RFMX_HOME", self.home());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("RFMX_") && k != "RFMX_HOME") {
            c.env_remove(k);
        }
        c
    }

    pub fn rfmx(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Starts `rfmx args` and SIGKILLs it once `ready()` holds, polling every 5 ms; fails when
    /// the run ends first or `ready()` does not hold within `limit`.
    pub fn kill_when(&self, args: &[&str], limit: std::time::Duration, ready: impl Fn() -> bool) {
        let mut child = self
            .cmd(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !ready() {
            assert!(
                t0.elapsed() < limit,
                "the run made no progress in {limit:?}"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run finished before it could be killed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

/// How many distinct contents (blake3) the files have: equal to `files.len()` when no two are the
/// same bytes.
pub fn distinct_contents(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            blake3::hash(&std::fs::read(f).unwrap())
                .to_hex()
                .to_string()
        })
        .collect::<std::collections::BTreeSet<String>>()
        .len()
}
