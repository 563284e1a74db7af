//! Byte progress for downloads other programs make (`apt-get download`,
//! mmdebstrap): the size of the directory they download into, measured a
//! few times a second while they run and once when they end, reported as
//! [`ProgressEvent::Bytes`].
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ProgressEvent, ProgressFn};

/// How often the directory is measured.
const INTERVAL: Duration = Duration::from_millis(250);

/// Runs `work` and, while it runs and when it ends, reports the bytes
/// under `dir` (never more than `total`, never less than reported before:
/// mmdebstrap removes the packages it has installed).
pub async fn watch_dir<T>(dir: &Path, total: u64, progress: ProgressFn<'_>, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut done = 0;
    let report = async |done: &mut u64| {
        let dir = dir.to_path_buf();
        let now = tokio::task::spawn_blocking(move || tree_bytes(&dir)).await.unwrap_or(0);
        *done = now.clamp(*done, total.max(*done));
        progress(ProgressEvent::Bytes { done: *done, total });
    };
    loop {
        tokio::select! {
            output = &mut work => {
                report(&mut done).await;
                return output;
            }
            _ = ticks.tick() => report(&mut done).await,
        }
    }
}

/// The sizes of the regular files under `dir`, recursively (0 if absent).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) if meta.is_file() => total += meta.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn reports_what_arrives_while_the_work_runs() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Mutex::new(Vec::new());
        let record = |event: ProgressEvent| seen.lock().unwrap().push(event);
        let count = || seen.lock().unwrap().len();
        let sixty = ProgressEvent::Bytes { done: 60, total: 100 };
        let path = dir.path().to_path_buf();
        let output = watch_dir(dir.path(), 100, &record, async {
            std::fs::create_dir(path.join("sub")).unwrap();
            std::fs::write(path.join("sub/a.deb"), [0u8; 60]).unwrap();
            while !seen.lock().unwrap().contains(&sixty) {
                tokio::time::sleep(INTERVAL / 5).await;
            }
            std::fs::remove_file(path.join("sub/a.deb")).unwrap();
            let after_removal = count();
            while count() < after_removal + 2 {
                tokio::time::sleep(INTERVAL / 5).await;
            }
            "done"
        })
        .await;
        assert_eq!(output, "done");
        let seen = seen.into_inner().unwrap();
        // Removed files do not move the bar back.
        assert_eq!(seen.last(), Some(&sixty), "{seen:?}");
        assert!(seen.iter().all(ProgressEvent::is_tick));
    }
}
