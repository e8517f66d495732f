//! How much memory this process may still take: the kernel's `MemAvailable`, capped by the
//! limit of the cgroup the process runs in (a Slurm job's `--mem`, a container's limit), which
//! `MemAvailable` does not see.

use std::path::Path;

/// Bytes this process may still allocate without pressure, if the system says (Linux).
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let host = meminfo_available(&meminfo)?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_headroom(Path::new("/sys/fs/cgroup"), &c));
    Some(cgroup.map_or(host, |c| c.min(host)))
}

/// `MemAvailable` from /proc/meminfo's text, in bytes.
fn meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Limit minus usage of the process's cgroup (v2: `memory.max`/`memory.current`; v1:
/// `memory.limit_in_bytes`/`memory.usage_in_bytes`), given /proc/self/cgroup's text; `None`
/// when unlimited or unreadable.
fn cgroup_headroom(root: &Path, cgroups: &str) -> Option<u64> {
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let (dir, limit, usage) = if controllers.is_empty() {
            (root.join(rel), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory").join(rel),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let read = |f: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        // "max" (v2) does not parse: unlimited. v1 writes a huge number for unlimited.
        if let (Some(l), Some(u)) = (read(limit), read(usage))
            && l < (1 << 60)
        {
            return Some(l.saturating_sub(u));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(meminfo_available(text), Some(23_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn cgroup_limits_cap_the_headroom() {
        let root = tempfile::tempdir().unwrap();
        let job = root.path().join("slurm/job_7");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("memory.max"), "17179869184\n").unwrap();
        std::fs::write(job.join("memory.current"), "1073741824\n").unwrap();
        assert_eq!(
            cgroup_headroom(root.path(), "0::/slurm/job_7\n"),
            Some(15 << 30)
        );
        // Unlimited (v2 "max"), and a v1 hierarchy with a limit.
        std::fs::write(job.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_headroom(root.path(), "0::/slurm/job_7\n"), None);
        let v1 = root.path().join("memory/job");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "2147483648").unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "1073741824").unwrap();
        let text = "3:cpu,cpuacct:/job\n5:memory:/job\n";
        assert_eq!(cgroup_headroom(root.path(), text), Some(1 << 30));
    }
}
