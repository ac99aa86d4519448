//! `POST /v1/otlp/v1/traces`: OTLP/HTTP trace exports (protobuf or JSON, optionally gzipped);
//! GenAI spans become LLM request events (the mapping is in `crate::compat::otlp`). Valid spans
//! are stored even when others are refused, as OTLP's partial success allows; the answer says how
//! many were refused and why, and how many were ignored.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::app::AppState;
use crate::compat::otlp;
use crate::ingest;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use std::io::Read;
use tally_domain::Scope;

#[utoipa::path(
    post,
    path = "/v1/otlp/v1/traces",
    tag = "events",
    summary = "OTLP/HTTP trace export: GenAI spans become LLM request events",
    request_body(content((Vec<u8> = "application/x-protobuf"), (Object = "application/json")), description = "An ExportTraceServiceRequest; gzip allowed"),
    responses((status = 200, description = "Export accepted (partial success says how many spans were refused)", body = Object))
)]
pub async fn traces(State(app): State<AppState>, caller: Caller, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let default_organization = match &caller.scope {
        Scope::Admin | Scope::Ingest => None,
        Scope::Organization(own) => Some(own.as_str().to_owned()),
        scope => return Err(ApiError::forbidden(format!("a {scope} key cannot write events"))),
    };
    let header_text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let media = header_text(header::CONTENT_TYPE).split(';').next().unwrap_or("").trim().to_owned();
    let protobuf = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => true,
        "application/json" => false,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("Content-Type {media:?} is not supported; send application/x-protobuf or application/json"),
            ));
        }
    };
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", format!("the export is larger than {} bytes", app.max_body_bytes))
    };
    let mut bytes = to_bytes(body, app.max_body_bytes).await.map_err(|_| too_large())?.to_vec();
    match header_text(header::CONTENT_ENCODING).as_str() {
        "" | "identity" => {}
        "gzip" => {
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .take(app.max_body_bytes as u64 + 1)
                .read_to_end(&mut decoded)
                .map_err(|e| ApiError::bad_request(format!("the gzip body does not decompress: {e}")))?;
            if decoded.len() > app.max_body_bytes {
                return Err(too_large());
            }
            bytes = decoded;
        }
        other => return Err(ApiError::bad_request(format!("Content-Encoding {other:?} is not supported; send gzip or none"))),
    }
    let request = if protobuf {
        ExportTraceServiceRequest::decode(bytes.as_slice())
            .map_err(|e| ApiError::bad_request(format!("not an OTLP trace export (protobuf): {e}")))?
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("not an OTLP trace export (JSON): {e}")))?
    };

    let mapped = otlp::map(&request, default_organization.as_deref());
    let mut problems = mapped.rejected;
    let (valid, rejected) = ingest::validated(&app, mapped.events.into_iter().map(Ok).collect()).await?;
    problems.extend(rejected.iter().map(|r| format!("span #{}: {}", r.index, r.reason)));
    let report = ingest::commit(&app, valid, Vec::new()).await?;
    let mut message =
        format!("{} accepted, {} duplicates, {} ignored (no GenAI attributes)", report.accepted, report.duplicates, mapped.ignored);
    if !problems.is_empty() {
        message.push_str(&format!(", {} rejected: {}", problems.len(), problems.join("; ")));
    }
    let answer = ExportTraceServiceResponse {
        partial_success: (!problems.is_empty() || mapped.ignored > 0)
            .then_some(ExportTracePartialSuccess { rejected_spans: problems.len() as i64, error_message: message }),
    };
    Ok(if protobuf {
        ([(header::CONTENT_TYPE, "application/x-protobuf")], answer.encode_to_vec()).into_response()
    } else {
        axum::Json(answer).into_response()
    })
}
