//! The repository explains itself: no committed file names a machine path (scripts take their
//! interpreter from `$PYTHON`), and nothing refers to work items by number ("issue 12") instead of
//! saying what the thing is, or to design documents that are not in the repository.

use std::path::{Path, PathBuf};

/// Every git-tracked file (falls back to a walk of the tree when git is absent).
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    match out {
        Ok(o) if o.status.success() => o
            .stdout
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| root.join(String::from_utf8_lossy(s).as_ref()))
            .collect(),
        _ => walkdir::WalkDir::new(root)
            .into_iter()
            .filter_entry(|e| {
                let n = e.file_name().to_string_lossy();
                !matches!(n.as_ref(), "target" | ".git" | "node_modules" | ".rfmx")
            })
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect(),
    }
}

/// (file, line number, line) of every line of a text file matching `bad`.
fn offending(root: &Path, bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut hits = Vec::new();
    for path in tracked_files(root) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // binary fixtures
        };
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if rel == "tests/repo_hygiene.rs" {
            continue; // the patterns themselves
        }
        for (i, line) in text.lines().enumerate() {
            if bad(line) {
                hits.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    hits
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_machine_paths_in_committed_files() {
    // Spelled from parts so that this file does not match itself in other tools' greps.
    let machine: Vec<String> = ["work", "root", "home", "Users"]
        .iter()
        .map(|d| format!("/{d}/"))
        .chain([format!("C:\\{}", "Users")])
        .collect();
    let hits = offending(&root(), |l| machine.iter().any(|m| l.contains(m.as_str())));
    assert!(
        hits.is_empty(),
        "machine paths in committed files (use $PYTHON, relative paths or arguments):\n{}",
        hits.join("\n")
    );
}

#[test]
fn no_work_item_numbers_or_missing_documents() {
    let issue = |l: &str| {
        let l = l.to_ascii_lowercase();
        l.match_indices("issue").any(|(i, _)| {
            let rest = l[i + 5..].trim_start_matches([' ', '#']);
            rest.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    let missing_doc = |l: &str| l.contains("DESIGN.md") || l.contains("CONTRACT.md");
    let hits = offending(&root(), |l| issue(l) || missing_doc(l));
    assert!(
        hits.is_empty(),
        "say what the thing is instead of citing an issue number, and cite docs/design.md or \
         docs/contracts.md:\n{}",
        hits.join("\n")
    );
}
