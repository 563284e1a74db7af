//! Images: `POST /images` registers existing files; `GET /images`,
//! `GET/DELETE /images/{id}`. Building images is the CLI's `hatch image build`.

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::ApiJson;
use super::{validate, AppState};
use crate::model::{now, random_id, Image, ImageProfile, KernelFormat};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterImage {
    pub name: String,
    /// ELF vmlinux or bzImage; the format is detected.
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    pub rootfs_path: Option<PathBuf>,
    /// Defaults to `root`.
    pub login_user: Option<String>,
    pub boot_args: Option<String>,
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterImage>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    let image = image_from_files(req)?;
    state.store.insert_image(&image)?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Validates a registration and describes the files as an `Image`.
pub fn image_from_files(req: RegisterImage) -> Result<Image, ApiError> {
    validate::name(&req.name)?;
    let login_user = req.login_user.unwrap_or_else(|| "root".into());
    if !is_unix_user_name(&login_user) {
        return Err(ApiError::invalid(
            "login_user",
            format!("{login_user:?} is not a valid user name"),
        ));
    }
    let boot_args = req.boot_args.unwrap_or_default();
    if boot_args.len() > 1024 || !boot_args.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(ApiError::invalid(
            "boot_args",
            "boot_args must be at most 1024 printable ASCII characters",
        ));
    }
    let mut size_bytes = check_file("kernel_path", &req.kernel_path)?;
    let (kernel_path, bzimage_path) = match kernel_format(&req.kernel_path)? {
        KernelFormat::Elf => (Some(req.kernel_path), None),
        KernelFormat::Bzimage => (None, Some(req.kernel_path)),
    };
    for (field, path) in [("initrd_path", &req.initrd_path), ("rootfs_path", &req.rootfs_path)] {
        if let Some(path) = path {
            size_bytes += check_file(field, path)?;
        }
    }
    Ok(Image {
        id: random_id("img", 10),
        name: req.name,
        profile: ImageProfile::Registered,
        kernel_path,
        bzimage_path,
        initrd_path: req.initrd_path,
        rootfs_path: req.rootfs_path,
        login_user,
        boot_args,
        size_bytes,
        created_at: now(),
    })
}

fn is_unix_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// An absolute path to a readable regular file; returns its size.
fn check_file(field: &'static str, path: &FsPath) -> Result<u64, ApiError> {
    if !path.is_absolute() {
        return Err(ApiError::invalid(field, format!("{field} must be an absolute path")));
    }
    let meta = std::fs::metadata(path).map_err(|e| ApiError::invalid(field, format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ApiError::invalid(
            field,
            format!("{} is not a regular file", path.display()),
        ));
    }
    std::fs::File::open(path)
        .map_err(|e| ApiError::invalid(field, format!("{} is not readable: {e}", path.display())))?;
    Ok(meta.len())
}

/// ELF starts with `\x7fELF`; a bzImage carries `HdrS` at offset 0x202.
fn kernel_format(path: &FsPath) -> Result<KernelFormat, ApiError> {
    let mut head = [0u8; 0x206];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| ApiError::invalid("kernel_path", format!("{}: {e}", path.display())))?;
    if read >= 4 && &head[..4] == b"\x7fELF" {
        Ok(KernelFormat::Elf)
    } else if read >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        Ok(KernelFormat::Bzimage)
    } else {
        Err(ApiError::invalid(
            "kernel_path",
            format!("{} is neither an ELF vmlinux nor a bzImage", path.display()),
        ))
    }
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Image>>> {
    Ok(Json(state.store.list_images()?))
}

pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Image>> {
    state
        .store
        .find_image(&id)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("image", &id))
}

pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let image = state
        .store
        .get_image(&id)?
        .ok_or_else(|| ApiError::not_found("image", &id))?;
    if state.store.images_in_use(&image.id)? {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("image {id} is used by a VM or template"),
        ));
    }
    state.store.delete_image(&image.id)?;
    Ok(StatusCode::NO_CONTENT)
}
