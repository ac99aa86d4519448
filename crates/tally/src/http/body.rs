//! Reading request bodies: bounded in size, JSON errors with their line and column.

use super::error::{ApiError, ApiResult};
use crate::app::AppState;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The whole body, at most the configured size (413 beyond it).
pub async fn bytes(app: &AppState, body: Body) -> ApiResult<Bytes> {
    to_bytes(body, app.max_body_bytes).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", format!("the body is larger than {} bytes", app.max_body_bytes))
    })
}

/// The body as JSON (400 naming the line and column where it breaks).
pub fn json_value(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", format!("the body is not valid JSON: {e}"))
            .with(json!({ "line": e.line(), "column": e.column() }))
    })
}
