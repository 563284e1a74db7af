//! Exclusive advisory file locks (flock) so parallel builds, e.g. from
//! parallel test binaries, never write the same cache entry at once.
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::ImageError;

/// Held while alive; the kernel releases it when the file is closed, also
/// if the process dies.
pub struct FileLock {
    _lock: Flock<std::fs::File>,
}

/// The lock file guarding `path`: `path` + `.lock`. Lock files are never
/// deleted (removing one another process holds open would split the lock).
pub fn lock_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    name.into()
}

fn open_lock_file(path: &Path) -> Result<std::fs::File, ImageError> {
    if let Some(parent) = path.parent() {
        super::fsutil::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ImageError::io("opening lock file", path, e))
}

impl FileLock {
    /// The lock if nobody holds it right now.
    pub fn try_acquire(path: &Path) -> Option<FileLock> {
        let file = open_lock_file(path).ok()?;
        Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .ok()
            .map(|lock| FileLock { _lock: lock })
    }

    /// Waits (on a blocking thread) until the lock at `path` is ours.
    pub async fn acquire(path: &Path) -> Result<FileLock, ImageError> {
        let file = open_lock_file(path)?;
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            Flock::lock(file, FlockArg::LockExclusive)
                .map(|lock| FileLock { _lock: lock })
                .map_err(|(_, errno)| ImageError::io("locking", &owned, std::io::Error::from(errno)))
        })
        .await
        .map_err(|e| ImageError::Build(format!("lock task failed: {e}")))?
    }
}
