//! An in-memory FAT volume holding a few files in its root directory.
//!
//! Built with the `fatfs` crate on a `Cursor<Vec<u8>>`: no loop devices, no
//! mounting, no external tools, so it runs unprivileged and in tests.

use std::io::{Cursor, Write};

const MIB: usize = 1024 * 1024;
/// Room for FATs, the root directory and per-file cluster rounding on top
/// of the file contents; generous because seeds are tiny anyway.
const OVERHEAD_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FatBuildError(String);

/// The volume size for the given payload: whole MiB, at least 1 MiB. For
/// seeds (at most a few hundred KiB) this is a FAT12 volume.
pub(crate) fn volume_size_for(payload_bytes: usize) -> usize {
    let needed = payload_bytes + payload_bytes / 8 + OVERHEAD_BYTES;
    needed.div_ceil(MIB).max(1) * MIB
}

/// Formats a FAT volume with `label` (up to 11 ASCII characters, stored
/// upper-case in the boot sector and the root directory) and serial number
/// `volume_id`, and writes `files` into its root directory.
pub(crate) fn build_volume(label: &str, volume_id: u32, files: &[(&str, &[u8])]) -> Result<Vec<u8>, FatBuildError> {
    let label = label_bytes(label)?;
    let payload: usize = files.iter().map(|(_, contents)| contents.len()).sum();
    let mut disk = Cursor::new(vec![0u8; volume_size_for(payload)]);
    let options = fatfs::FormatVolumeOptions::new()
        .volume_label(label)
        .volume_id(volume_id);
    fatfs::format_volume(&mut disk, options).map_err(|e| FatBuildError(format!("formatting: {e}")))?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())
            .map_err(|e| FatBuildError(format!("opening the new volume: {e}")))?;
        let root = fs.root_dir();
        for (name, contents) in files {
            let mut file = root
                .create_file(name)
                .map_err(|e| FatBuildError(format!("creating {name}: {e}")))?;
            file.write_all(contents)
                .map_err(|e| FatBuildError(format!("writing {name}: {e}")))?;
            file.flush()
                .map_err(|e| FatBuildError(format!("writing {name}: {e}")))?;
        }
        drop(root);
        // Unmounting clears the dirty flag so fsck and the guest see a clean volume.
        fs.unmount()
            .map_err(|e| FatBuildError(format!("finishing the volume: {e}")))?;
    }
    Ok(disk.into_inner())
}

fn label_bytes(label: &str) -> Result<[u8; 11], FatBuildError> {
    let valid = label.len() <= 11
        && !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(FatBuildError(format!("invalid FAT volume label {label:?}")));
    }
    let mut bytes = [b' '; 11];
    for (slot, b) in bytes.iter_mut().zip(label.bytes()) {
        *slot = b.to_ascii_uppercase();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_mib_with_room_to_spare() {
        assert_eq!(volume_size_for(0), MIB);
        assert_eq!(volume_size_for(64 * 1024 + 4096), MIB);
        assert_eq!(volume_size_for(3 * MIB), 4 * MIB);
    }

    #[test]
    fn labels_are_checked_and_padded() {
        assert_eq!(&label_bytes("cidata").unwrap(), b"CIDATA     ");
        assert!(label_bytes("").is_err());
        assert!(label_bytes("TWELVE_CHARS").is_err());
        assert!(label_bytes("A B").is_err());
    }
}
