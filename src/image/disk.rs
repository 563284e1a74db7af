//! Per-VM writable disks: each VM gets its own copy of the image's
//! read-only base root filesystem, as cheap as the file system allows
//! (a reflink where `FICLONE` works, otherwise a copy of the data extents
//! only; see [`crate::sys::clone_file`]).
use std::path::Path;

use super::fsutil::sibling_tmp;
use super::ImageError;
use crate::model::Image;
use crate::sys::clone_file::{clone_file, CloneMethod};

/// Creates `dest` as a writable copy of `image.rootfs_path` (atomically:
/// `dest` appears complete or not at all). Images without a root
/// filesystem (`minimal`) have nothing to copy and are an error.
pub async fn prepare_vm_disk(image: &Image, dest: &Path) -> Result<CloneMethod, ImageError> {
    let source = image.rootfs_path.clone().ok_or_else(|| ImageError::Invalid {
        field: "rootfs_path",
        message: format!("image {} has no root filesystem to copy", image.id),
    })?;
    super::fsutil::check_readable_file("rootfs_path", &source)?;
    if dest.exists() {
        return Err(ImageError::Invalid {
            field: "dest",
            message: format!("{} already exists", dest.display()),
        });
    }
    let target = dest.to_owned();
    tokio::task::spawn_blocking(move || {
        let dest = target;
        let tmp = sibling_tmp(&dest);
        let method =
            clone_file(&source, &tmp).map_err(|e| ImageError::io("copying the root filesystem to", &tmp, e))?;
        let placed = make_writable(&tmp)
            .and_then(|_| std::fs::rename(&tmp, &dest).map_err(|e| ImageError::io("renaming to", &dest, e)));
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed.map(|_| method)
    })
    .await
    .map_err(|e| ImageError::io("copying the root filesystem to", dest, std::io::Error::other(e)))?
}

/// The cached base is read-only (0444); the VM's copy must be writable.
fn make_writable(path: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| ImageError::io("chmod", path, e))
}
