//! The one error type at the HTTP edge, rendered as RFC 9457 `application/problem+json`.
//! Every failure a handler can meet is mapped to a status here and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tally_store::{CommitError, StoreError};

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable slug, the last part of the problem `type`.
    pub kind: &'static str,
    pub detail: String,
    /// Extra members (the offending parameter, allowed values…).
    pub extra: Option<Value>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, kind, detail: detail.into(), extra: None, retry_after: None }
    }

    pub fn with(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-request", detail)
    }

    /// A query or path parameter that does not parse: says which one.
    pub fn bad_parameter(parameter: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-parameter", format!("`{parameter}`: {detail}")).with(json!({ "parameter": parameter }))
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", format!("{what} not found"))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        e.retry_after = Some(5);
        e
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            StoreError::AlreadyExists(what) => ApiError::new(StatusCode::CONFLICT, "already-exists", format!("{what} already exists")),
            StoreError::Unavailable(_) => ApiError::unavailable("the database is unavailable; nothing was stored, retry later"),
            StoreError::Unstorable(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unstorable-value",
                format!("a value cannot be stored ({why}); text and JSON may not contain the NUL character (\\u0000)"),
            ),
            StoreError::Full(_) => {
                let mut e =
                    ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage-full", "the database is out of space; nothing was stored");
                e.retry_after = Some(60);
                e
            }
            other => internal(other),
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Overloaded => {
                let mut e = overloaded();
                e.detail = "too many ingest requests are waiting; retry shortly".to_owned();
                e
            }
            CommitError::Closed => ApiError::unavailable("the server is shutting down"),
            CommitError::Store(e) => e.into(),
        }
    }
}

/// Too many requests in flight: the caller should come back shortly.
pub fn overloaded() -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is at capacity; retry shortly");
    e.retry_after = Some(1);
    e
}

/// An unexpected failure: logged with an id the caller can quote, never shown in detail.
pub fn internal(error: impl std::fmt::Display) -> ApiError {
    let id = format!("{:016x}", rand::random::<u64>());
    tracing::error!(error_id = %id, %error, "internal error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("internal error {id}; it has been logged"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:tally:problem:{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
