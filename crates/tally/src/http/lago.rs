//! `/compat/lago/api/v1/events` and `/events/batch`: Lago's event ingestion for its SDKs, with
//! errors in Lago's shape (`{"status", "error", "code", "error_details"}`). The mapping itself is
//! in `crate::compat::lago`.

use super::auth::Caller;
use super::error::ApiError;
use crate::app::AppState;
use crate::compat::lago::{BatchBody, Details, LagoEvent, MAX_BATCH, SingleBody};
use crate::ingest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tally_domain::RawEvent;

pub struct LagoError {
    status: StatusCode,
    code: String,
    details: Option<Details>,
}

impl LagoError {
    fn new(status: StatusCode, code: impl Into<String>) -> Self {
        LagoError { status, code: code.into(), details: None }
    }

    fn invalid(details: Details) -> Self {
        LagoError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "validation_errors".into(), details: Some(details) }
    }
}

impl IntoResponse for LagoError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "status": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "code": self.code,
        });
        if let Some(details) = self.details {
            body["error_details"] = Value::Object(details);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

/// Tally's own errors (auth, storage) in Lago's shape.
impl From<ApiError> for LagoError {
    fn from(e: ApiError) -> Self {
        LagoError::new(e.status, e.kind)
    }
}

fn authorized(caller: Result<Caller, ApiError>) -> Result<Caller, LagoError> {
    let caller = caller?;
    if !caller.scope.can_ingest() {
        return Err(LagoError::new(StatusCode::FORBIDDEN, "forbidden"));
    }
    Ok(caller)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, LagoError> {
    serde_json::from_slice(body).map_err(|e| {
        let mut details = Map::new();
        details.insert("body".into(), json!([e.to_string()]));
        LagoError { status: StatusCode::BAD_REQUEST, code: "bad_request".into(), details: Some(details) }
    })
}

#[utoipa::path(
    post,
    path = "/compat/lago/api/v1/events",
    tag = "compat-lago",
    summary = "Lago: one usage event",
    request_body = Object,
    responses((status = 200, description = "`{event}`", body = Object))
)]
pub async fn create(State(app): State<AppState>, caller: Result<Caller, ApiError>, body: Bytes) -> Result<Json<Value>, LagoError> {
    authorized(caller)?;
    let SingleBody { event } = parse(&body)?;
    let mut answers = store(&app, vec![event]).await.map_err(|e| e.flatten())?;
    Ok(Json(json!({ "event": answers.remove(0) })))
}

#[utoipa::path(
    post,
    path = "/compat/lago/api/v1/events/batch",
    tag = "compat-lago",
    summary = "Lago: up to 100 usage events",
    request_body = Object,
    responses((status = 200, description = "`{events}`", body = Object))
)]
pub async fn batch(State(app): State<AppState>, caller: Result<Caller, ApiError>, body: Bytes) -> Result<Json<Value>, LagoError> {
    authorized(caller)?;
    let BatchBody { events } = parse(&body)?;
    if events.is_empty() || events.len() > MAX_BATCH {
        let code = if events.is_empty() { "no_events" } else { "too_many_events" };
        return Err(LagoError::invalid(Map::from_iter([("events".to_owned(), json!([code]))])));
    }
    let answers = store(&app, events).await.map_err(BatchError::keyed)?;
    Ok(Json(json!({ "events": answers })))
}

/// A failure, and which event of the request caused it.
struct BatchError {
    index: usize,
    error: LagoError,
}

impl BatchError {
    /// For a single event: the error as is.
    fn flatten(self) -> LagoError {
        self.error
    }

    /// For a batch: validation details keyed by the event's index, as Lago does.
    fn keyed(self) -> LagoError {
        match self.error.details {
            Some(details) if self.error.status == StatusCode::UNPROCESSABLE_ENTITY => {
                LagoError::invalid(Map::from_iter([(self.index.to_string(), Value::Object(details))]))
            }
            _ => self.error,
        }
    }
}

/// Checks every event, then stores all of them or none: a batch Lago's clients see refused is
/// refused entirely, so resending it after a fix counts each event once.
async fn store(app: &AppState, events: Vec<LagoEvent>) -> Result<Vec<Value>, BatchError> {
    let now = jiff::Timestamp::now();
    let at = |index: usize| move |error: LagoError| BatchError { index, error };
    let mut organizations: HashMap<String, String> = HashMap::new();
    let mut raws: Vec<RawEvent> = Vec::with_capacity(events.len());
    let mut answers = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let Some(subscription) = event.external_subscription_id.as_deref() else {
            return Err(at(i)(LagoError::invalid(Map::from_iter([(
                "external_subscription_id".to_owned(),
                json!(["value_is_mandatory"]),
            )]))));
        };
        let org = match organizations.get(subscription) {
            Some(org) => org.clone(),
            None => {
                let found = app.store.subscription(subscription).await.map_err(|e| at(i)(ApiError::from(e).into()))?;
                let org = found
                    .ok_or_else(|| at(i)(LagoError::new(StatusCode::NOT_FOUND, "subscription_not_found")))?
                    .organization_id
                    .as_str()
                    .to_owned();
                organizations.insert(subscription.to_owned(), org.clone());
                org
            }
        };
        let raw = event.to_raw(subscription, &org, now).map_err(|d| at(i)(LagoError::invalid(d)))?;
        answers.push(event.answer(&org, &raw, now));
        raws.push(raw);
    }
    let (valid, rejected) =
        ingest::validated(app, raws.into_iter().map(Ok).collect()).await.map_err(|e| at(0)(ApiError::from(e).into()))?;
    if let Some(r) = rejected.first() {
        return Err(at(r.index)(LagoError::invalid(Map::from_iter([(r.code.to_owned(), json!([r.reason]))]))));
    }
    ingest::commit(app, valid, Vec::new()).await.map_err(|e| at(0)(ApiError::from(e).into()))?;
    Ok(answers)
}
