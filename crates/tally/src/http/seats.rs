//! Audit events in, seat counts, license ledgers and invoice previews out, for organizations and
//! self-hosted servers.

use super::auth::Caller;
use super::body;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::app::AppState;
use crate::seats::{self, Licensee, PreviewError};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use tally_domain::OrganizationId;
use tally_domain::seats::audit::{AuditEvent, AuditEventInput};
use tally_domain::seats::ledger::LedgerEntry;
use tally_store::{Listed, Server};

/// Events per `POST /v1/audit-events`.
const MAX_AUDIT_EVENTS: usize = 10_000;

/// `POST /v1/audit-events`: a JSON array of events (or one). Every event is checked first; if any
/// is invalid, none is stored and the answer lists each one's index, field and reason.
#[utoipa::path(
    post,
    path = "/v1/audit-events",
    tag = "seats",
    summary = "Record audit events (users added, roles changed…)",
    request_body = Object,
    responses((status = 200, description = "`{stored, duplicates}`", body = Object))
)]
pub async fn post_audit_events(State(app): State<AppState>, caller: Caller, body: Body) -> ApiResult<Json<Value>> {
    if !caller.scope.can_ingest() {
        return Err(ApiError::forbidden(format!("a {} key cannot write audit events; use an ingest or admin key", caller.scope)));
    }
    let value = body::json_value(&body::bytes(&app, body).await?)?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(ApiError::bad_request("the body must be an audit event or an array of them")),
    };
    if items.len() > MAX_AUDIT_EVENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!("{} audit events in one request; the limit is {MAX_AUDIT_EVENTS}", items.len()),
        ));
    }
    let now = Timestamp::now();
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match serde_json::from_value::<AuditEventInput>(item) {
            Err(e) => errors.push(json!({ "index": index, "field": Value::Null, "reason": e.to_string() })),
            Ok(input) => match input.validate(now) {
                Ok(event) => events.push(event),
                Err(r) => errors.push(json!({ "index": index, "field": r.field, "reason": r.reason })),
            },
        }
    }
    if !errors.is_empty() {
        let detail = format!("{} of the audit events are invalid; none was stored", errors.len());
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid-audit-events", detail).with(json!({ "errors": errors })));
    }
    let stored = app.store.record_audit_events(events, now).await?;
    let new = stored.iter().filter(|s| **s).count();
    Ok(Json(json!({ "stored": new, "duplicates": stored.len() - new })))
}

#[derive(Debug, Deserialize)]
pub struct AuditListQuery {
    organization_id: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// `GET /v1/audit-events?organization_id=`: newest first.
#[utoipa::path(
    get,
    path = "/v1/audit-events",
    tag = "seats",
    summary = "An organization's audit events, newest first",
    params(("organization_id" = String, Query, description = "The organization"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Audit events", body = tally_store::Listed<tally_domain::seats::audit::AuditEvent>))
)]
pub async fn list_audit_events(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditListQuery>,
) -> ApiResult<Json<Listed<AuditEvent>>> {
    let asked = q.organization_id.ok_or_else(|| ApiError::bad_parameter("organization_id", "is required"))?;
    let org = caller.readable_organization(&app, &asked).await?;
    let page = super::resources::page(q.limit.as_deref(), q.offset.as_deref())?;
    Ok(Json(app.store.audit_events(&org, page).await?))
}

#[derive(Debug, Deserialize)]
pub struct AtQuery {
    at: Option<String>,
}

fn at(q: &AtQuery) -> ApiResult<Timestamp> {
    match &q.at {
        None => Ok(Timestamp::now()),
        Some(text) => text.parse().map_err(|_| ApiError::bad_parameter("at", format!("{text:?} is not an RFC 3339 date-time"))),
    }
}

/// 409 when the figures depend on a server whose data is missing at `at`.
fn require_fresh(server: Option<&Server>, at: Timestamp) -> ApiResult<()> {
    match server.and_then(|s| seats::missing_data(s, at)) {
        Some(detail) => Err(ApiError::new(StatusCode::CONFLICT, "missing-data", detail)),
        None => Ok(()),
    }
}

/// The server behind an organization: its own, or the one it is a realm of.
async fn server_behind(app: &AppState, org: &OrganizationId) -> ApiResult<Option<Server>> {
    if let Some(server) = seats::server_of(app.store.as_ref(), org).await? {
        return Ok(Some(server));
    }
    Ok(seats::realm_server_of(app.store.as_ref(), org).await?)
}

/// The server with this id, if the key may read it (admin, or its organization's key).
async fn readable_server(app: &AppState, caller: &Caller, id: &str) -> ApiResult<Server> {
    let server = app.store.server(id).await?.filter(|s| caller.scope.can_read_organization(&s.organization_id));
    server.ok_or_else(|| ApiError::not_found(format!("server {id:?}")))
}

async fn seats_json(app: &AppState, licensee: &Licensee, server: Option<Server>, at: Timestamp) -> ApiResult<Json<Value>> {
    require_fresh(server.as_ref(), at)?;
    let count = seats::seats_at(app.store.as_ref(), licensee, at).await?;
    Ok(Json(serde_json::to_value(count).map_err(super::error::internal)?))
}

/// `GET /v1/organizations/{id}/seats?at=`
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/seats",
    tag = "seats",
    summary = "An organization's seat counts",
    params(("id" = String, Path, description = "The organization's id"), ("at" = Option<String>, Query, description = "Instant (RFC 3339 date-time; default now)")),
    responses((status = 200, description = "Seat counts", body = Object), (status = 409, description = "The data to answer is missing: no live subscription with a plan, or a server that never pushed", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn organization_seats(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<Value>> {
    let org = caller.readable_organization(&app, &id).await?;
    let at = at(&q)?;
    let licensee = seats::licensee(app.store.as_ref(), &org).await?;
    let server = server_behind(&app, &org).await?;
    seats_json(&app, &licensee, server, at).await
}

/// `GET /v1/servers/{id}/seats?at=`: the sum over the server's realms active at that moment.
#[utoipa::path(
    get,
    path = "/v1/servers/{id}/seats",
    tag = "seats",
    summary = "A self-hosted server's seat counts",
    params(("id" = String, Path, description = "The server's id"), ("at" = Option<String>, Query, description = "Instant (RFC 3339 date-time; default now)")),
    responses((status = 200, description = "Seat counts", body = Object), (status = 409, description = "The data to answer is missing: no live subscription with a plan, or a server that never pushed", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn server_seats(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<Value>> {
    let server = readable_server(&app, &caller, &id).await?;
    let at = at(&q)?;
    let licensee = seats::licensee(app.store.as_ref(), &server.organization_id).await?;
    seats_json(&app, &licensee, Some(server), at).await
}

async fn ledger_page(app: &AppState, org: &OrganizationId, q: &HashMap<String, String>) -> ApiResult<Json<Listed<LedgerEntry>>> {
    let page = super::resources::page(q.get("limit").map(String::as_str), q.get("offset").map(String::as_str))?;
    Ok(Json(app.store.ledger(org, page).await?))
}

/// `GET /v1/organizations/{id}/license-ledger`: newest first, paged.
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/license-ledger",
    tag = "seats",
    summary = "An organization's license ledger",
    params(("id" = String, Path, description = "The organization's id"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Ledger rows", body = tally_store::Listed<tally_domain::seats::ledger::LedgerEntry>))
)]
pub async fn organization_ledger(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Listed<LedgerEntry>>> {
    let org = caller.readable_organization(&app, &id).await?;
    ledger_page(&app, &org, &q).await
}

/// `GET /v1/servers/{id}/license-ledger`
#[utoipa::path(
    get,
    path = "/v1/servers/{id}/license-ledger",
    tag = "seats",
    summary = "A self-hosted server's license ledger",
    params(("id" = String, Path, description = "The server's id"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Ledger rows", body = tally_store::Listed<tally_domain::seats::ledger::LedgerEntry>))
)]
pub async fn server_ledger(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Listed<LedgerEntry>>> {
    let server = readable_server(&app, &caller, &id).await?;
    ledger_page(&app, &server.organization_id, &q).await
}

async fn preview(app: &AppState, org: &OrganizationId, server: Option<Server>) -> ApiResult<Json<Value>> {
    let now = Timestamp::now();
    require_fresh(server.as_ref(), now)?;
    let licensee = seats::licensee(app.store.as_ref(), org).await?;
    match seats::invoice_preview(app.store.as_ref(), &licensee, now).await {
        Ok(invoice) => Ok(Json(serde_json::to_value(invoice).map_err(super::error::internal)?)),
        Err(PreviewError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, "no-invoice", e.to_string())),
    }
}

/// `GET /v1/organizations/{id}/invoice-preview`
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/invoice-preview",
    tag = "seats",
    summary = "An organization's seat invoice preview",
    params(("id" = String, Path, description = "The organization's id")),
    responses((status = 200, description = "Invoice preview", body = Object), (status = 409, description = "The data to answer is missing: no live subscription with a plan, or a server that never pushed", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn organization_invoice(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let org = caller.readable_organization(&app, &id).await?;
    let server = server_behind(&app, &org).await?;
    preview(&app, &org, server).await
}

/// `GET /v1/servers/{id}/invoice-preview`
#[utoipa::path(
    get,
    path = "/v1/servers/{id}/invoice-preview",
    tag = "seats",
    summary = "A self-hosted server's seat invoice preview",
    params(("id" = String, Path, description = "The server's id")),
    responses((status = 200, description = "Invoice preview", body = Object), (status = 409, description = "The data to answer is missing: no live subscription with a plan, or a server that never pushed", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn server_invoice(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let server = readable_server(&app, &caller, &id).await?;
    let org = server.organization_id.clone();
    preview(&app, &org, Some(server)).await
}

/// `POST /v1/jobs/ledger/run`: runs the ledger job now and answers with the finished run.
#[utoipa::path(
    post,
    path = "/v1/jobs/ledger/run",
    tag = "seats",
    summary = "Run the license-ledger job now (admin)",
    responses((status = 200, description = "The job run", body = tally_store::JobRun))
)]
pub async fn run_ledger(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<tally_store::JobRun>> {
    caller.require_admin()?;
    Ok(Json(seats::run_ledger(app.store.as_ref(), seats::LedgerOptions::default(), |_| {}).await?))
}
