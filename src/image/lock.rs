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

impl FileLock {
    /// Waits (on a blocking thread) until the lock at `path` is ours.
    pub async fn acquire(path: &Path) -> Result<FileLock, ImageError> {
        if let Some(parent) = path.parent() {
            super::fsutil::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| ImageError::io("opening lock file", path, e))?;
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            Flock::lock(file, FlockArg::LockExclusive)
                .map(|lock| FileLock { _lock: lock })
                .map_err(|(_, errno)| {
                    ImageError::io("locking", &owned, std::io::Error::from(errno))
                })
        })
        .await
        .map_err(|e| ImageError::Build(format!("lock task failed: {e}")))?
    }
}
