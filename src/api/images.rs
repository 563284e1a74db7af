//! Images: `POST /images` registers existing files; `GET /images`,
//! `GET/DELETE /images/{id}`. Building images is the CLI's `hatch image build`.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::ApiJson;
use super::AppState;
use crate::image::{register_image, ImageError, RegisterRequest};
use crate::model::Image;

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

/// Validates a registration (the image module's rules, the same as the
/// CLI's) and describes the files as an `Image`.
pub fn image_from_files(req: RegisterImage) -> Result<Image, ApiError> {
    let request = RegisterRequest {
        name: req.name,
        kernel_path: req.kernel_path,
        initrd_path: req.initrd_path,
        rootfs_path: req.rootfs_path,
        login_user: req.login_user,
        boot_args: req.boot_args,
    };
    register_image(&request).map_err(|error| match error {
        ImageError::Invalid { field, message } => ApiError::invalid(field, message),
        other => ApiError::internal(other.to_string()),
    })
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
