//! Per-VM writable disks: each VM gets its own copy of the image's
//! read-only base root filesystem, as cheap as the file system allows
//! (a reflink on btrfs/XFS, otherwise a sparse copy).
use std::path::Path;

use super::fsutil::sibling_tmp;
use super::tools::{self, CP};
use super::ImageError;
use crate::model::Image;

/// Creates `dest` as a writable copy of `image.rootfs_path` (atomically:
/// `dest` appears complete or not at all). Images without a root
/// filesystem (`minimal`) have nothing to copy and are an error.
pub async fn prepare_vm_disk(image: &Image, dest: &Path) -> Result<(), ImageError> {
    let source = image.rootfs_path.as_deref().ok_or_else(|| ImageError::Invalid {
        field: "rootfs_path",
        message: format!("image {} has no root filesystem to copy", image.id),
    })?;
    super::fsutil::check_readable_file("rootfs_path", source)?;
    if dest.exists() {
        return Err(ImageError::Invalid {
            field: "dest",
            message: format!("{} already exists", dest.display()),
        });
    }
    let tmp = sibling_tmp(dest);
    let copied = tools::run(
        CP,
        [
            "--reflink=auto".as_ref(),
            "--sparse=always".as_ref(),
            source.as_os_str(),
            tmp.as_os_str(),
        ],
        None,
    )
    .await
    .map_err(|e| ImageError::command(e, dest))
    .and_then(|_| make_writable(&tmp))
    .and_then(|_| std::fs::rename(&tmp, dest).map_err(|e| ImageError::io("renaming to", dest, e)));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

/// The cached base is read-only (0444); the VM's copy must be writable.
fn make_writable(path: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| ImageError::io("chmod", path, e))
}
