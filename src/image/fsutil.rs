//! File helpers: atomic writes, staging directories that vanish unless
//! committed, and cheap copies (hard links, reflinks, sparse copies).
use std::path::{Path, PathBuf};

use super::ImageError;

/// Writes `bytes` to `path` through a sibling temporary file and a rename,
/// so readers never see a partial file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = sibling_tmp(path);
    let result = std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| ImageError::io("writing", path, e));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp-<random>` next to `path`.
pub fn sibling_tmp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = crate::model::random_id("tmp", 8);
    path.with_file_name(format!(".{name}.{suffix}"))
}

pub fn create_dir_all(path: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(path).map_err(|e| ImageError::io("creating directory", path, e))
}

/// A directory that is removed on drop unless [`StagingDir::commit`]
/// renamed it into place: failed builds leave nothing half-made.
pub struct StagingDir {
    path: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates a fresh hidden staging directory beside `final_path`.
    pub fn beside(final_path: &Path) -> Result<Self, ImageError> {
        let path = sibling_tmp(final_path);
        if let Some(parent) = path.parent() {
            create_dir_all(parent)?;
        }
        std::fs::create_dir(&path).map_err(|e| ImageError::io("creating directory", &path, e))?;
        Ok(StagingDir { path, committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the staging directory to `final_path` (which must not exist).
    pub fn commit(mut self, final_path: &Path) -> Result<(), ImageError> {
        std::fs::rename(&self.path, final_path).map_err(|e| ImageError::io("renaming into", final_path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Puts a copy of `src` at `dest`: a hard link when both are on one file
/// system (cached artefacts are never modified in place), else a copy.
pub fn link_or_copy(src: &Path, dest: &Path) -> Result<(), ImageError> {
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest)
        .map(|_| ())
        .map_err(|e| ImageError::io("copying to", dest, e))
}

/// Apparent size of a file, 0 when absent.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Fails with [`ImageError::Invalid`] unless `path` is a readable regular file.
pub fn check_readable_file(field: &'static str, path: &Path) -> Result<(), ImageError> {
    let invalid = |message: String| ImageError::Invalid { field, message };
    let metadata = std::fs::metadata(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if !metadata.is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| invalid(format!("{} is not readable: {e}", path.display())))
}

/// Removes staging directories (`.name.tmp-*`) in `dir` older than a day:
/// what a build killed mid-way (SIGKILL, power loss) left behind. Younger
/// ones may belong to a build running right now.
pub fn remove_stale_staging(dir: &Path) {
    const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if name.starts_with('.') && name.contains(".tmp-") && stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
