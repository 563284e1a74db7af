//! CPU time each proxy spends, read from /proc: on a machine shared with
//! other work, CPU per request moves far less between runs than req/s does
//! (which also depends on how much of the 2 cores the proxy got).

use std::path::{Path, PathBuf};

/// Where to read one proxy's CPU time from (its threads' `schedstat`).
pub struct CpuClock {
    threads: Vec<PathBuf>,
}

impl CpuClock {
    /// The threads of this process named `name` (the proxy's runtime thread).
    pub fn own_threads(name: &str) -> Option<CpuClock> {
        let threads: Vec<PathBuf> = std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .map(|task| task.path())
            .filter(|task| read_trimmed(&task.join("comm")).as_deref() == Some(name))
            .collect();
        (!threads.is_empty()).then_some(CpuClock { threads })
    }

    /// The children of process `parent` (nginx's workers under its master).
    pub fn children_of(parent: u32) -> Option<CpuClock> {
        let threads: Vec<PathBuf> = std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .filter(|process| parent_pid(process) == Some(parent))
            .collect();
        (!threads.is_empty()).then_some(CpuClock { threads })
    }

    /// CPU time used so far, in nanoseconds.
    pub fn nanos(&self) -> u64 {
        self.threads
            .iter()
            .filter_map(|thread| read_trimmed(&thread.join("schedstat")))
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}

/// The fourth field of `/proc/<pid>/stat`, after the command in parentheses.
fn parent_pid(process: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(process.join("stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
