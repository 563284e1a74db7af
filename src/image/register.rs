//! Registering kernel/initrd/rootfs files the user already has.
use std::io::Read;
use std::path::{Path, PathBuf};

use super::bootargs::validate_boot_args;
use super::fsutil::{check_readable_file, file_len};
use super::kernel::{detect_kernel_format, initrd_start_of, is_newc_cpio, read_head, InitrdStart};
use super::{ImageError, ImportDirs};
use crate::model::{Image, ImageProfile, KernelFormat};

/// Files to register as an image. Paths must be absolute: they are used
/// later by the daemon, whose working directory is not the caller's.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    pub rootfs_path: Option<PathBuf>,
    /// Defaults to `root`.
    pub login_user: Option<String>,
    pub boot_args: Option<String>,
}

/// Image names: 1-64 characters, letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit.
pub fn validate_image_name(name: &str) -> Result<(), ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::Invalid {
            field: "name",
            message: format!("{name:?}: use 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit"),
        })
    }
}

fn validate_login_user(user: &str) -> Result<(), ImageError> {
    let ok = user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::Invalid {
            field: "login_user",
            message: format!("{user:?} is not a valid user name"),
        })
    }
}

fn check_absolute(field: &'static str, path: &Path) -> Result<(), ImageError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ImageError::Invalid {
            field,
            message: format!("{} must be an absolute path", path.display()),
        })
    }
}

/// Checks that `path` is an initrd the kernel can unpack: a newc cpio
/// archive, or one compressed with gzip or zstd (checked to hold cpio), or
/// with xz, lz4, bzip2 or lzma (recognised by magic only).
pub fn validate_initrd(field: &'static str, path: &Path) -> Result<(), ImageError> {
    check_readable_file(field, path)?;
    let read_error = |e| ImageError::io("reading initrd", path, e);
    let head = read_head(path, 512).map_err(read_error)?;
    let open = || std::fs::File::open(path).map_err(read_error);
    // The first bytes of a compressed initrd, once decompressed.
    let mut inner = [0u8; 6];
    let verdict = match initrd_start_of(&head) {
        Some(InitrdStart::Cpio | InitrdStart::OtherCompression) => true,
        Some(InitrdStart::Gzip) => {
            flate2::read::GzDecoder::new(open()?).read_exact(&mut inner).is_ok() && is_newc_cpio(&inner)
        }
        Some(InitrdStart::Zstd) => {
            zstd::stream::read::Decoder::new(open()?)
                .and_then(|mut d| d.read_exact(&mut inner))
                .is_ok()
                && is_newc_cpio(&inner)
        }
        None => false,
    };
    if verdict {
        Ok(())
    } else {
        Err(ImageError::Invalid {
            field,
            message: format!(
                "{} is not a cpio archive (plain or compressed with gzip, zstd, xz, lz4, bzip2 or lzma)",
                path.display()
            ),
        })
    }
}

/// Validates the files and builds the [`Image`] to store; nothing is
/// copied: the image refers to the files where they are.
pub fn register_image(req: &RegisterRequest, import: &ImportDirs) -> Result<Image, ImageError> {
    validate_image_name(&req.name)?;
    check_absolute("kernel_path", &req.kernel_path)?;
    // Every file is taken where it really is, and only from the import
    // directories (the paths stored are the resolved ones).
    let req = &RegisterRequest {
        kernel_path: import.check("kernel_path", &req.kernel_path)?,
        initrd_path: match &req.initrd_path {
            Some(path) => {
                check_absolute("initrd_path", path)?;
                Some(import.check("initrd_path", path)?)
            }
            None => None,
        },
        rootfs_path: match &req.rootfs_path {
            Some(path) => {
                check_absolute("rootfs_path", path)?;
                Some(import.check("rootfs_path", path)?)
            }
            None => None,
        },
        ..req.clone()
    };
    check_readable_file("kernel_path", &req.kernel_path)?;
    let format = detect_kernel_format(&req.kernel_path).map_err(|e| match e {
        ImageError::Kernel { message, .. } => ImageError::Invalid {
            field: "kernel_path",
            message,
        },
        other => other,
    })?;
    if let Some(initrd) = &req.initrd_path {
        check_absolute("initrd_path", initrd)?;
        validate_initrd("initrd_path", initrd)?;
    }
    if let Some(rootfs) = &req.rootfs_path {
        check_absolute("rootfs_path", rootfs)?;
        check_readable_file("rootfs_path", rootfs)?;
    }
    let login_user = req.login_user.clone().unwrap_or_else(|| "root".to_string());
    validate_login_user(&login_user)?;
    let boot_args = req.boot_args.clone().unwrap_or_default();
    validate_boot_args(&boot_args)?;

    let (kernel_path, bzimage_path) = match format {
        KernelFormat::Elf => (Some(req.kernel_path.clone()), None),
        KernelFormat::Bzimage => (None, Some(req.kernel_path.clone())),
    };
    let size_bytes = [
        Some(&req.kernel_path),
        req.initrd_path.as_ref(),
        req.rootfs_path.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| file_len(p))
    .sum();
    Ok(Image {
        id: super::new_image_id(),
        name: req.name.clone(),
        profile: ImageProfile::Registered,
        kernel_path,
        bzimage_path,
        initrd_path: req.initrd_path.clone(),
        rootfs_path: req.rootfs_path.clone(),
        login_user,
        boot_args,
        size_bytes,
        created_at: crate::model::now(),
    })
}
