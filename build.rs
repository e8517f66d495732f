//! Records the git commit the binary was built from, so `rfmx --version` (and every report's
//! provenance) can name it. A build outside a git checkout (a crate tarball) says "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).map(|c| {
        // Dirty: tracked files differ from the commit (untracked files do not count).
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
        if dirty { format!("{c}-dirty") } else { c }
    });
    println!(
        "cargo:rustc-env=RFMX_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    // Re-run when HEAD moves or the index changes (commit, checkout, add); `--git-path` resolves
    // each file in a linked worktree too. Only files that exist: a missing one reruns every build.
    let mut watch = vec![
        "HEAD".to_string(),
        "index".to_string(),
        "packed-refs".to_string(),
    ];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for f in watch {
        if let Some(path) = git(&["rev-parse", "--git-path", &f])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
