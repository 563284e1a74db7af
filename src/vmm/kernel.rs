//! Refusing a wrong boot file with a clear message before any VMM process
//! starts. What a file is gets decided by the image module's recognition
//! rules (`image::inspect_kernel_file`, `image::initrd_start_of`), the same
//! ones image registration uses; this module gives them the VMM's errors.

use std::fs::File;
use std::path::Path;

use crate::image::{initrd_start_of, inspect_kernel_file, read_head};

pub use crate::image::KernelInfo;

#[derive(Debug, thiserror::Error)]
pub enum KernelFileError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither an x86_64 ELF vmlinux nor a bzImage")]
    UnknownFormat { path: String },
    #[error("{path} is not an initrd (expected a cpio archive, optionally gzip/zstd/xz/lz4/bzip2/lzma compressed)")]
    NotAnInitrd { path: String },
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> KernelFileError + '_ {
    move |source| KernelFileError::Unreadable {
        path: path.display().to_string(),
        source,
    }
}

/// Detects whether `path` is an x86_64 ELF vmlinux (and whether it has the
/// PVH note) or a bzImage.
pub fn inspect_kernel(path: &Path) -> Result<KernelInfo, KernelFileError> {
    let file = File::open(path).map_err(unreadable(path))?;
    inspect_kernel_file(&file)
        .map_err(unreadable(path))?
        .ok_or_else(|| KernelFileError::UnknownFormat {
            path: path.display().to_string(),
        })
}

/// Checks that `path` starts like an initrd: a newc cpio archive or one of
/// the compressions Linux can unpack.
pub fn check_initrd(path: &Path) -> Result<(), KernelFileError> {
    let head = read_head(path, 6).map_err(unreadable(path))?;
    match initrd_start_of(&head) {
        Some(_) => Ok(()),
        None => Err(KernelFileError::NotAnInitrd {
            path: path.display().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    #[test]
    fn garbage_and_missing_files_are_refused() {
        let f = file_with(b"#!/bin/sh\necho not a kernel\n");
        assert!(matches!(
            inspect_kernel(f.path()),
            Err(KernelFileError::UnknownFormat { .. })
        ));
        assert!(matches!(
            inspect_kernel(Path::new("/nonexistent/vmlinux")),
            Err(KernelFileError::Unreadable { .. })
        ));
    }

    #[test]
    fn initrd_magic_is_checked() {
        assert!(check_initrd(file_with(b"070701000000").path()).is_ok());
        assert!(check_initrd(file_with(&[0x1f, 0x8b, 8, 0]).path()).is_ok());
        assert!(matches!(
            check_initrd(file_with(b"hello world").path()),
            Err(KernelFileError::NotAnInitrd { .. })
        ));
        assert!(matches!(
            check_initrd(Path::new("/nonexistent/initrd")),
            Err(KernelFileError::Unreadable { .. })
        ));
    }
}
