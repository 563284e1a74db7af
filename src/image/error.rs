//! The image subsystem's error type: every failure names what went wrong
//! precisely enough for a user to act on it.
use std::path::PathBuf;

use crate::sys::cmd::CmdError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A user-supplied value (name, path, boot args...) was rejected.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },

    /// A host program the build needs is not installed.
    #[error("`{tool}` is not installed; install the Debian package `{package}`")]
    MissingTool { tool: &'static str, package: &'static str },

    /// The Debian mirror could not be used (unreachable, no sources, or a
    /// package missing from it).
    #[error("Debian mirror problem: {0}")]
    Mirror(String),

    /// The file system ran out of space while writing `path`.
    #[error("no space left on device while writing {}", .0.display())]
    DiskFull(PathBuf),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A host program ran but failed.
    #[error("{0}")]
    Command(#[from] CmdError),

    /// A kernel file could not be understood (not ELF/bzImage, or an
    /// unsupported payload compression).
    #[error("kernel {}: {message}", path.display())]
    Kernel { path: PathBuf, message: String },

    /// Something in the build's own inputs is inconsistent (for example a
    /// shared library dropbear needs is in none of the unpacked packages).
    #[error("image build failed: {0}")]
    Build(String),
}

impl ImageError {
    /// Wraps an I/O error with what was being done; ENOSPC becomes
    /// [`ImageError::DiskFull`] so the user sees the real cause.
    pub fn io(context: impl Into<String>, path: &std::path::Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            return ImageError::DiskFull(path.to_path_buf());
        }
        ImageError::Io {
            context: format!("{} {}", context.into(), path.display()),
            source,
        }
    }

    /// Maps a failed host command, recognising "No space left on device"
    /// in its stderr as [`ImageError::DiskFull`] at `path`.
    pub fn command(error: CmdError, path: &std::path::Path) -> Self {
        match &error {
            CmdError::Failed { stderr, .. } if stderr.contains("No space left on device") => {
                ImageError::DiskFull(path.to_path_buf())
            }
            _ => ImageError::Command(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn enospc_becomes_disk_full_naming_the_path() {
        let error = ImageError::io(
            "writing",
            Path::new("/x/y"),
            std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        assert!(matches!(&error, ImageError::DiskFull(p) if p == Path::new("/x/y")));
        assert_eq!(error.to_string(), "no space left on device while writing /x/y");
        let failed = CmdError::Failed {
            command: "mkfs.ext4 ...".into(),
            status: "exit status: 1".into(),
            stderr: "mkfs.ext4: No space left on device while writing out and closing file system".into(),
        };
        assert!(matches!(
            ImageError::command(failed, Path::new("/img")),
            ImageError::DiskFull(_)
        ));
        let other = ImageError::io(
            "reading",
            Path::new("/z"),
            std::io::Error::from_raw_os_error(nix::libc::EACCES),
        );
        assert!(matches!(other, ImageError::Io { .. }));
    }
}
