//! Where image files may come from. A registered image's kernel, initrd and
//! rootfs are read by the VMM and so, through the guest, by whoever runs the
//! VM: they must be regular files (after following symlinks) under one of
//! the import directories (`HATCH_IMAGE_IMPORT_DIRS`), and never Hatch's own
//! state (its database, keys, VM disks, snapshots, DHCP files), even when an
//! import directory contains the data directory. The check runs when an
//! image is registered and again before every launch, since a file can be
//! swapped for a symlink meanwhile.

use std::path::{Path, PathBuf};

use super::ImageError;

/// Files in the data directory no image may use.
const PRIVATE_IN_DATA_DIR: &[&str] = &[
    "hatch.db",
    "hatch.db-wal",
    "hatch.db-shm",
    "admin.key",
    "host-id",
    "vms",
    "snapshots",
    "dhcp",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportDirs {
    allowed: Vec<PathBuf>,
    private: Vec<PathBuf>,
}

/// Follows symlinks where the path exists (so a comparison sees where a
/// file really is); a missing path stays as given.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl ImportDirs {
    /// `allowed` are absolute directories; `data_dir` is Hatch's own, whose
    /// `images` directory (where `hatch image build` puts images) is always
    /// allowed.
    pub fn new(allowed: &[PathBuf], data_dir: &Path) -> Self {
        let built = data_dir.join("images");
        let mut dirs: Vec<PathBuf> = allowed.iter().chain([&built]).map(|dir| resolved(dir)).collect();
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|dir| seen.insert(dir.clone()));
        ImportDirs {
            allowed: dirs,
            private: PRIVATE_IN_DATA_DIR
                .iter()
                .map(|name| resolved(&data_dir.join(name)))
                .collect(),
        }
    }

    /// The default: `<data dir>/images` (built images) and `<data dir>/import`.
    pub fn default_dirs(data_dir: &Path) -> Vec<PathBuf> {
        vec![data_dir.join("images"), data_dir.join("import")]
    }

    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// The file `path` really is, when it may be used as `field`.
    pub fn check(&self, field: &'static str, path: &Path) -> Result<PathBuf, ImageError> {
        let refuse = |why: String| ImageError::Invalid {
            field,
            message: format!("{}: {why}", path.display()),
        };
        let real = std::fs::canonicalize(path).map_err(|e| refuse(format!("cannot be resolved: {e}")))?;
        let meta = std::fs::metadata(&real).map_err(|e| refuse(e.to_string()))?;
        if !meta.is_file() {
            return Err(refuse("is not a regular file".into()));
        }
        if self.private.iter().any(|private| real.starts_with(private)) {
            return Err(refuse(format!(
                "{} is Hatch's own state, not an image file",
                real.display()
            )));
        }
        if !self.allowed.iter().any(|dir| real.starts_with(dir)) {
            let dirs: Vec<String> = self.allowed.iter().map(|d| d.display().to_string()).collect();
            return Err(refuse(format!(
                "resolves to {}, outside the import directories ({}; HATCH_IMAGE_IMPORT_DIRS)",
                real.display(),
                dirs.join(", ")
            )));
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_import_dirs_and_outside_hatchs_state_pass() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let import = root.path().join("import");
        for dir in [&data.join("vms/vm-a"), &import] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(import.join("vmlinux"), b"k").unwrap();
        std::fs::write(data.join("hatch.db"), b"db").unwrap();
        std::fs::write(data.join("vms/vm-a/disk.img"), b"disk").unwrap();
        std::fs::write(root.path().join("elsewhere"), b"x").unwrap();
        std::os::unix::fs::symlink(data.join("hatch.db"), import.join("db-link")).unwrap();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), import.join("escape")).unwrap();
        // The data directory itself as an import dir still hides the state.
        let dirs = ImportDirs::new(&[import.clone(), data.clone()], &data);

        assert!(dirs.check("kernel_path", &import.join("vmlinux")).is_ok());
        for (path, why) in [
            (import.join("db-link"), "Hatch's own state"),
            (data.join("hatch.db"), "Hatch's own state"),
            (data.join("vms/vm-a/disk.img"), "Hatch's own state"),
            (import.join("escape"), "outside the import directories"),
            (root.path().join("elsewhere"), "outside the import directories"),
            (import.clone(), "not a regular file"),
            (PathBuf::from("/dev/null"), "not a regular file"),
            (import.join("missing"), "cannot be resolved"),
        ] {
            let error = dirs.check("rootfs_path", &path).unwrap_err().to_string();
            assert!(error.contains(why), "{}: {error}", path.display());
            assert!(error.starts_with("rootfs_path"), "{error}");
        }
    }
}
