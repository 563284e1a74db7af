//! `GET /metrics`: the daemon's Prometheus metrics in the text format
//! (0.0.4). Admin keys only — the series name every VM of every key —
//! unless `HATCH_METRICS_PUBLIC=true` opens it to scrapers without a key.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::error::ApiResult;
use super::json::ApiQuery;
use super::AppState;

/// No filters: every series is in every scrape (Prometheus selects with
/// PromQL). An unknown parameter is 400 naming it, not silently ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {}

pub async fn serve(State(state): State<AppState>, ApiQuery(_query): ApiQuery<MetricsQuery>) -> ApiResult<Response> {
    let sample = state.orch.metrics_sample().await?;
    let body = state.orch.metrics().render(&sample);
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}
