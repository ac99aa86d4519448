//! axum's `Query` and `Path` extractors with their rejections as problem+json 400s (axum's own
//! answer plain text), so a malformed query string gets the same kind of answer as any other
//! bad parameter.

use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The query string, deserialized.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|axum::extract::Query(value)| Query(value)).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid-parameter",
                format!("the query string does not parse: {}", e.body_text()),
            )
        })
    }
}

/// The path's parameters, deserialized.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|axum::extract::Path(value)| Path(value)).map_err(|e| {
            ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid-path", format!("the path does not parse: {}", e.body_text()))
        })
    }
}
