//! The build cache: finished artefact sets stored under
//! `<cache_dir>/images/<profile>-<key>/`, where the key hashes every input
//! (profile, resolved package versions, /init scripts, mirror, recipe
//! version). An entry appears by an atomic rename, so its existence means
//! it is complete; a flock serialises builders of the same key.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::fsutil::{link_or_copy, StagingDir};
use super::lock::{lock_path, FileLock};
use super::{ImageError, ProgressEvent, ProgressFn};

/// Collects the inputs of a build into a stable digest.
#[derive(Debug, Default, Clone)]
pub struct CacheKey {
    text: String,
}

impl CacheKey {
    pub fn add(&mut self, name: &str, value: &str) -> &mut Self {
        // Length-prefixed so that no two different input lists collide.
        self.text
            .push_str(&format!("{}:{name}={}:{value}\n", name.len(), value.len()));
        self
    }

    pub fn digest(&self) -> String {
        hex::encode(&Sha256::digest(self.text.as_bytes())[..12])
    }
}

/// The directory of the cache entry for `key`, building it with `build`
/// (which fills the given empty directory) when absent. The returned lock
/// keeps the entry from being pruned while images are made from it.
pub async fn get_or_build<F, Fut>(
    cache_dir: &Path,
    profile: &str,
    key: &CacheKey,
    progress: ProgressFn<'_>,
    build: F,
) -> Result<(PathBuf, FileLock), ImageError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), ImageError>>,
{
    let entry = cache_dir.join("images").join(format!("{profile}-{}", key.digest()));
    let lock = FileLock::acquire(&lock_path(&entry)).await?;
    if entry.is_dir() {
        mark_used(&entry);
        progress(ProgressEvent::CacheHit { key: key.digest() });
        return Ok((entry, lock));
    }
    let staging = StagingDir::beside(&entry)?;
    build(staging.path().to_path_buf()).await?;
    make_read_only(staging.path())?;
    staging.commit(&entry)?;
    Ok((entry, lock))
}

/// Entries (artefact sets, downloaded .debs) unused for this long are
/// removed; images made from an entry keep their hard-linked files.
pub const UNUSED_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Records a use of a cache entry (its mtime) for [`prune_unused`].
pub fn mark_used(entry: &Path) {
    if let Ok(dir) = std::fs::File::open(entry) {
        let _ = dir.set_modified(SystemTime::now());
    }
}

/// Removes the entries in `dir` not used for `lifetime`, skipping any that
/// another build holds locked. Best effort: errors only leave garbage.
pub fn prune_unused(dir: &Path, lifetime: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let unused = entry
            .metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > lifetime);
        if name.starts_with('.') || !unused {
            continue;
        }
        if let Some(_lock) = FileLock::try_acquire(&lock_path(&path)) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Cached artefacts are shared by hard links with every image made from
/// them: nobody may write to them in place.
fn make_read_only(dir: &Path) -> Result<(), ImageError> {
    for entry in std::fs::read_dir(dir)
        .map_err(|e| ImageError::io("listing", dir, e))?
        .flatten()
    {
        let path = entry.path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| ImageError::io("chmod", &path, e))?;
        }
    }
    Ok(())
}

/// Creates `images_dir/<id>/` holding `files` from the cache entry (hard
/// links where possible), all or nothing.
pub fn install_from_cache(entry: &Path, images_dir: &Path, id: &str, files: &[&str]) -> Result<PathBuf, ImageError> {
    let final_dir = images_dir.join(id);
    let staging = StagingDir::beside(&final_dir)?;
    for file in files {
        link_or_copy(&entry.join(file), &staging.path().join(file))?;
    }
    staging.commit(&final_dir)?;
    Ok(final_dir)
}
