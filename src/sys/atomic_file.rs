//! Files that appear complete or not at all: written under a hidden
//! temporary name in the target's directory, synced, then renamed.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Suffix of the temporary names, so leftovers from a crash can be found.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// A file being written that becomes visible at `target` only on
/// [`AtomicFile::commit`]; dropping it uncommitted removes the temporary.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates `.<name>.<random>.partial` next to `target`.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "target has no file name"))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(PARTIAL_SUFFIX)
            .tempfile_in(parent_dir(target))?;
        Ok(AtomicFile {
            temp,
            target: target.to_owned(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Syncs the data, renames it over the target and syncs the directory,
    /// so after a crash either the old or the new file is there, whole.
    pub fn commit(self) -> io::Result<()> {
        self.temp.as_file().sync_all()?;
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        File::open(parent_dir(&self.target))?.sync_all()
    }

    /// Renames the file over the target without syncing anything: for
    /// files used once and deleted (a restore's scratch), where a crash
    /// loses nothing and a sync would only cost time.
    pub fn commit_unsynced(self) -> io::Result<()> {
        self.temp.persist(&self.target).map(|_| ()).map_err(|e| e.error)
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_committed_files_appear_and_abandoned_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();

        let mut abandoned = AtomicFile::create(&target).unwrap();
        abandoned.file().write_all(b"half").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        drop(abandoned);
        assert_eq!(names(dir.path()), ["out.bin"]);

        let mut file = AtomicFile::create(&target).unwrap();
        file.file().write_all(b"new").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["out.bin"]);
    }
}
