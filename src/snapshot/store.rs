//! Where artefacts live: the [`SnapshotStore`] trait and the local
//! directory store.
//!
//! Keys look like object-store keys (`vm-abc/snap-1/disk.zst`): segments of
//! `[A-Za-z0-9._-]`, none starting with `.`, joined by `/`. `list` and
//! `delete` take a plain string prefix, as S3 does.
//!
//! Orphans (artefacts no snapshot record references) are swept at start-up
//! by one rule for every store, [`is_orphan`]: only keys shaped like
//! Hatch's (`<vm>/snap-…/<artefact>`), and only objects older than a
//! minimum age, so an upload that has not yet been recorded is never taken.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{blocking, SnapshotError};
use crate::sys::atomic_file::{AtomicFile, PARTIAL_SUFFIX};

const MAX_KEY_LEN: usize = 512;

/// An object's bytes as they are read from the store. Reads block: use it
/// on a blocking thread (see [`super::unpack_from`]).
pub type ObjectReader = Box<dyn Read + Send>;

#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Stores the file at `local_path` under `key`, replacing any object
    /// there. The object becomes visible only once complete.
    async fn put(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError>;
    /// Copies the object `key` to `local_path` (written atomically).
    async fn get(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError>;
    /// Opens the object `key` for reading, without a local copy: restore
    /// streams it through the checksum and zstd (a local file is read in
    /// place, an S3 object as it downloads).
    async fn open(&self, key: &str) -> Result<ObjectReader, SnapshotError>;
    /// Deletes every object whose key starts with `prefix` (which must not
    /// be empty); returns how many were deleted.
    async fn delete(&self, prefix: &str) -> Result<usize, SnapshotError>;
    /// Keys starting with `prefix` (empty: all), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, SnapshotError>;
    /// Removes what interrupted writes left behind (call at startup);
    /// returns how many. Stores whose writes leave nothing visible have
    /// nothing to do.
    async fn sweep_partials(&self) -> Result<usize, SnapshotError> {
        Ok(0)
    }
    /// Deletes the objects that no snapshot in `referenced` (`(vm id,
    /// snapshot id)` pairs) owns and that are older than `min_age` (see
    /// [`is_orphan`]); returns how many. An S3 store looks only under its
    /// own prefix, so other hosts' objects in a shared bucket are never
    /// touched.
    async fn sweep_orphans(
        &self,
        referenced: &HashSet<(String, String)>,
        min_age: Duration,
    ) -> Result<usize, SnapshotError>;
    /// Whether snapshots and restores can use the store now (an S3 bucket
    /// is asked; a recent answer that it works is reused).
    async fn ensure_available(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
    /// The store's state for `GET /healthz` (an answer a few seconds old
    /// may be reused, so polling does not flood the bucket).
    async fn health(&self) -> StorageHealth {
        StorageHealth {
            kind: self.kind(),
            ok: true,
            detail: self.describe(),
        }
    }
    /// `local` or `s3`.
    fn kind(&self) -> &'static str;
    /// Where the artefacts live, for logs and `hatch doctor`.
    fn describe(&self) -> String;
}

/// How the snapshot store is doing, as `GET /healthz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorageHealth {
    /// `local` or `s3`.
    pub kind: &'static str,
    pub ok: bool,
    /// Where artefacts go, or why they cannot go there now.
    pub detail: String,
}

/// Whether the object `key` (relative to the store's root or prefix), of
/// age `age`, is an artefact to sweep: shaped like Hatch's own
/// (`<vm>/snap-…/<artefact>`), owned by no snapshot in `referenced`, and
/// older than `min_age`. Anything else is kept.
pub fn is_orphan(key: &str, age: Duration, referenced: &HashSet<(String, String)>, min_age: Duration) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let [vm_id, snapshot_id, _artefact] = parts[..] else {
        return false;
    };
    snapshot_id.starts_with("snap-")
        && age >= min_age
        && !referenced.contains(&(vm_id.to_string(), snapshot_id.to_string()))
}

/// How long ago `modified` was (zero for a time in the future).
pub(super) fn age_of(modified: SystemTime) -> Duration {
    SystemTime::now().duration_since(modified).unwrap_or_default()
}

/// Checks an object key (see the module docs for the rules).
pub fn validate_key(key: &str) -> Result<(), SnapshotError> {
    let invalid = |reason| {
        Err(SnapshotError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return invalid("must be 1 to 512 characters");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("empty path segment (leading, trailing or double '/')");
        }
        if segment.starts_with('.') {
            return invalid("a segment may not start with '.'");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid("only letters, digits, '.', '_', '-' and '/' are allowed");
        }
    }
    Ok(())
}

/// Checks a prefix for `list` (empty allowed).
pub(super) fn validate_prefix(prefix: &str) -> Result<(), SnapshotError> {
    let allowed = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if prefix.len() > MAX_KEY_LEN || !allowed {
        return Err(SnapshotError::InvalidKey {
            key: prefix.to_owned(),
            reason: "not a valid key prefix",
        });
    }
    Ok(())
}

/// Checks a prefix for `delete`: like a list prefix, but never empty.
pub(super) fn validate_delete_prefix(prefix: &str) -> Result<(), SnapshotError> {
    if prefix.is_empty() {
        return Err(SnapshotError::InvalidKey {
            key: String::new(),
            reason: "refusing to delete everything",
        });
    }
    validate_prefix(prefix)
}

/// Artefacts as files in a directory (by default `<data dir>/snapshots`).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    /// The default location under Hatch's data directory.
    pub fn under_data_dir(data_dir: &Path) -> LocalStore {
        LocalStore::new(data_dir.join("snapshots"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_for(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl SnapshotStore for LocalStore {
    async fn put(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError> {
        let target = self.path_for(key)?;
        let source = local_path.to_owned();
        blocking(move || {
            // Open the source first so a bad source leaves no directories behind.
            let input =
                File::open(&source).map_err(|e| SnapshotError::io(format!("opening {}", source.display()), e))?;
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir).map_err(|e| SnapshotError::io(format!("creating {}", dir.display()), e))?;
            }
            copy_atomically(input, &source, &target)
        })
        .await
    }

    async fn get(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError> {
        let source = self.path_for(key)?;
        let (key, target) = (key.to_owned(), local_path.to_owned());
        blocking(move || {
            let input = open_object(&source, key)?;
            copy_atomically(input, &source, &target)
        })
        .await
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, SnapshotError> {
        let source = self.path_for(key)?;
        let key = key.to_owned();
        let input = blocking(move || open_object(&source, key)).await?;
        Ok(Box::new(input))
    }

    async fn delete(&self, prefix: &str) -> Result<usize, SnapshotError> {
        validate_delete_prefix(prefix)?;
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        blocking(move || {
            let doomed: Vec<(String, PathBuf)> = walk(&root)?
                .objects
                .into_iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .collect();
            for (_, path) in &doomed {
                fs::remove_file(path).map_err(|e| SnapshotError::io(format!("removing {}", path.display()), e))?;
                prune_empty_dirs(&root, path);
            }
            Ok(doomed.len())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SnapshotError> {
        validate_prefix(prefix)?;
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        blocking(move || {
            let mut keys: Vec<String> = walk(&root)?
                .objects
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| key.starts_with(&prefix))
                .collect();
            keys.sort();
            Ok(keys)
        })
        .await
    }

    /// Temporary files of writes that never finished (a daemon killed
    /// mid-put).
    async fn sweep_partials(&self) -> Result<usize, SnapshotError> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            for path in walk(&root)?.hidden {
                if path.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                    fs::remove_file(&path).map_err(|e| SnapshotError::io(format!("removing {}", path.display()), e))?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn sweep_orphans(
        &self,
        referenced: &HashSet<(String, String)>,
        min_age: Duration,
    ) -> Result<usize, SnapshotError> {
        let (root, referenced) = (self.root.clone(), referenced.clone());
        blocking(move || {
            let mut removed = 0;
            for (key, path) in walk(&root)?.objects {
                let modified = fs::metadata(&path)
                    .and_then(|meta| meta.modified())
                    .map_err(|e| SnapshotError::io(format!("reading the age of {}", path.display()), e))?;
                if is_orphan(&key, age_of(modified), &referenced, min_age) {
                    tracing::warn!(%key, "removing a snapshot artefact no snapshot record owns");
                    fs::remove_file(&path).map_err(|e| SnapshotError::io(format!("removing {}", path.display()), e))?;
                    prune_empty_dirs(&root, &path);
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

/// The file of the object `key` at `path`, for reading.
fn open_object(path: &Path, key: String) -> Result<File, SnapshotError> {
    match File::open(path) {
        Ok(input) if path.is_file() => Ok(input),
        Ok(_) => Err(SnapshotError::NotFound { key }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SnapshotError::NotFound { key }),
        Err(e) => Err(SnapshotError::io(format!("opening {}", path.display()), e)),
    }
}

fn copy_atomically(mut input: File, source: &Path, target: &Path) -> Result<(), SnapshotError> {
    let context = || format!("copying {} to {}", source.display(), target.display());
    let mut out = AtomicFile::create(target).map_err(|e| SnapshotError::io(context(), e))?;
    io::copy(&mut input, out.file()).map_err(|e| SnapshotError::io(context(), e))?;
    out.commit().map_err(|e| SnapshotError::io(context(), e))
}

/// Everything under the store root: objects by key, and hidden files
/// (temporaries) by path.
#[derive(Default)]
struct Walk {
    objects: Vec<(String, PathBuf)>,
    hidden: Vec<PathBuf>,
}

fn walk(root: &Path) -> Result<Walk, SnapshotError> {
    let mut found = Walk::default();
    if root.is_dir() {
        walk_dir(root, "", &mut found)?;
    }
    Ok(found)
}

fn walk_dir(dir: &Path, key_prefix: &str, found: &mut Walk) -> Result<(), SnapshotError> {
    let read_err = |e| SnapshotError::io(format!("listing {}", dir.display()), e);
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not a name this store writes
        };
        if name.starts_with('.') {
            found.hidden.push(path);
            continue;
        }
        let key = format!("{key_prefix}{name}");
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_dir() {
            walk_dir(&path, &format!("{key}/"), found)?;
        } else if file_type.is_file() {
            found.objects.push((key, path));
        }
    }
    Ok(())
}

/// Removes now-empty directories between `file` and `root` (best effort:
/// a directory that is not empty simply stays).
fn prune_empty_dirs(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(current) = dir {
        if current == root || !current.starts_with(root) || fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_object_style_paths_without_traversal() {
        for good in ["vm-1/snap-2/disk.zst", "a", "A_b-c.d/e"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "../x",
            "a/../b",
            "a/.hidden",
            "sp ace",
            "a\\b",
            "nul\0",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(513)).is_err());
    }

    #[test]
    fn only_old_unreferenced_artefacts_shaped_like_hatchs_are_orphans() {
        let hour = Duration::from_secs(3600);
        let old = hour + Duration::from_secs(1);
        let young = Duration::from_secs(59 * 60);
        let referenced: HashSet<(String, String)> = [("vm-a".to_string(), "snap-1".to_string())].into();
        assert!(is_orphan("vm-a/snap-2/disk.zst", old, &referenced, hour));
        assert!(is_orphan("vm-b/snap-1/state.zst", old, &referenced, hour));
        assert!(
            !is_orphan("vm-b/snap-1/state.zst", young, &referenced, hour),
            "too young"
        );
        assert!(!is_orphan("vm-a/snap-1/disk.zst", old, &referenced, hour), "referenced");
        for foreign in ["vm-a/other/disk.zst", "vm-a/snap-2", "x/vm-a/snap-2/disk.zst", "readme"] {
            assert!(!is_orphan(foreign, old, &referenced, hour), "{foreign}");
        }
    }

    #[tokio::test]
    async fn the_local_sweep_keeps_young_and_referenced_artefacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("snapshots"));
        let source = dir.path().join("source");
        fs::write(&source, b"artefact").unwrap();
        for key in ["vm-a/snap-1/state.zst", "vm-a/snap-2/state.zst", "vm-a/notes/x"] {
            store.put(key, &source).await.unwrap();
        }
        let referenced: HashSet<(String, String)> = [("vm-a".to_string(), "snap-1".to_string())].into();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            store.sweep_orphans(&referenced, hour).await.unwrap(),
            0,
            "all too young"
        );
        assert_eq!(store.sweep_orphans(&referenced, Duration::ZERO).await.unwrap(), 1);
        assert_eq!(
            store.list("").await.unwrap(),
            ["vm-a/notes/x", "vm-a/snap-1/state.zst"],
            "only the unreferenced artefact went"
        );
        assert!(
            !store.root().join("vm-a/snap-2").exists(),
            "its empty directory went too"
        );
    }
}
