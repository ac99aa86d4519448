//! `POST /v1/events`: a JSON array (or one object) or NDJSON of usage events.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::app::AppState;
use crate::ingest::{self, IngestReport};
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::json;

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    summary = "Ingest usage events",
    request_body(content((Vec<tally_domain::RawEvent> = "application/json"), (String = "application/x-ndjson")), description = "A JSON array of events (or one event object), or NDJSON: one event per line"),
    responses((status = 200, description = "Every event stored (or a duplicate of one already stored)", body = crate::ingest::IngestReport), (status = 207, description = "Some events were refused, the rest stored", body = crate::ingest::IngestReport))
)]
pub async fn post_events(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<IngestReport>)> {
    if !caller.scope.can_ingest() {
        return Err(ApiError::forbidden(format!("a {} key cannot write events; use an ingest or admin key", caller.scope)));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ndjson = match media.as_str() {
        "application/json" => false,
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => true,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("Content-Type {content_type:?} is not supported; send application/json or application/x-ndjson"),
            ));
        }
    };
    let bytes = to_bytes(body, app.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the body is larger than {} bytes; split it into smaller batches", app.max_body_bytes),
        )
    })?;
    let raws = if ndjson {
        ingest::decode_ndjson(&bytes)
    } else {
        ingest::decode_json(&bytes).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", format!("the body is not valid JSON: {e}"))
                .with(json!({ "line": e.line, "column": e.column }))
        })?
    };
    if raws.len() > app.max_batch_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!("{} events in one request; the limit is {}", raws.len(), app.max_batch_events),
        ));
    }
    let report = ingest::ingest(&app, raws).await?;
    // 207: some events were refused; the others were stored and are counted in the body.
    let status = if report.rejected.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    Ok((status, Json(report)))
}
