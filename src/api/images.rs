//! Images: `POST /images` registers existing files; `GET /images`,
//! `GET/DELETE /images/{id}`. Building images is the CLI's `hatch image build`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::ApiJson;
use super::AppState;
use crate::image::{register_image, ImageError, ImportDirs, RegisterRequest};
use crate::model::Image;

/// The body of `POST /images` is the image module's own request type.
pub type RegisterImage = RegisterRequest;

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterImage>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    let image = image_from_files(req, &state.config.import_dirs())?;
    let row = image.clone();
    state.store.run(move |store| store.insert_image(&row)).await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Validates a registration (the image module's rules, the same as the
/// CLI's) and describes the files as an `Image`.
pub fn image_from_files(req: RegisterImage, import: &ImportDirs) -> Result<Image, ApiError> {
    register_image(&req, import).map_err(|error| match error {
        ImageError::Invalid { field, message } => ApiError::invalid(field, message),
        other => ApiError::internal(other.to_string()),
    })
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Image>>> {
    Ok(Json(state.store.run(|store| store.list_images()).await?))
}

pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Image>> {
    let key = id.clone();
    state
        .store
        .run(move |store| store.find_image(&key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("image", &id))
}

pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state
        .store
        .run(move |store| {
            let image = store.get_image(&id)?.ok_or_else(|| ApiError::not_found("image", &id))?;
            if store.images_in_use(&image.id)? {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!("image {id} is used by a VM or template"),
                ));
            }
            store.delete_image(&image.id)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}
