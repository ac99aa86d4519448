//! Self-hosted servers: registration and keys (admin), and the pushes a server makes with its own
//! key (`POST /v1/remote/analytics`, `GET /v1/remote/analytics/status`).

use super::auth::Caller;
use super::body;
use super::error::{ApiError, ApiResult};
use super::extract::Path;
use crate::app::AppState;
use crate::seats;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_domain::seats::remote;
use tally_domain::{OrganizationId, Scope};
use tally_store::{PushOutcome, Server};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    hostname: String,
    contact_email: String,
    #[serde(default)]
    organization_id: Option<String>,
}

/// `POST /v1/servers`: the answer holds the server's secret key, shown only this once.
#[utoipa::path(
    post,
    path = "/v1/servers",
    tag = "servers",
    summary = "Register a self-hosted server; its key is shown once (admin)",
    request_body = Registration,
    responses((status = 201, description = "`{server, key}`", body = Object))
)]
pub async fn register(State(app): State<AppState>, caller: Caller, body: Body) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let r: Registration = serde_json::from_value(body::json_value(&body::bytes(&app, body).await?)?)
        .map_err(|e| ApiError::bad_request(format!("the body does not fit: {e}")))?;
    let org =
        r.organization_id.map(OrganizationId::parse).transpose().map_err(|e| ApiError::bad_request(format!("`organization_id`: {e}")))?;
    let (server, key) =
        seats::register_server(app.store.as_ref(), &r.hostname, &r.contact_email, org).await.map_err(|e| match e
            .downcast::<tally_store::StoreError>()
        {
            Ok(store) => ApiError::from(store),
            Err(e) => ApiError::bad_request(e.to_string()),
        })?;
    Ok((StatusCode::CREATED, Json(json!({ "server": server, "api_key": key }))))
}

#[utoipa::path(
    get,
    path = "/v1/servers",
    tag = "servers",
    summary = "Registered servers (admin)",
    responses((status = 200, description = "`{count, results}`", body = Object))
)]
pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let servers = app.store.servers().await?;
    Ok(Json(json!({ "count": servers.len(), "results": servers })))
}

#[utoipa::path(
    get,
    path = "/v1/servers/{id}",
    tag = "servers",
    summary = "One registered server",
    params(("id" = String, Path, description = "The server's id")),
    responses((status = 200, description = "The server", body = tally_store::Server))
)]
pub async fn read(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Server>> {
    let server = app.store.server(&id).await?.filter(|s| caller.scope.can_read_organization(&s.organization_id));
    Ok(Json(server.ok_or_else(|| ApiError::not_found(format!("server {id:?}")))?))
}

/// `POST /v1/servers/{id}/rotate-key`: a new secret, shown once; the old key stops working now.
#[utoipa::path(
    post,
    path = "/v1/servers/{id}/rotate-key",
    tag = "servers",
    summary = "Replace a server's key; the new one is shown once (admin)",
    params(("id" = String, Path, description = "The server's id")),
    responses((status = 200, description = "`{server, key}`", body = Object))
)]
pub async fn rotate_key(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let key = seats::rotate_server_key(app.store.as_ref(), &id).await.map_err(super::error::internal)?;
    let key = key.ok_or_else(|| ApiError::not_found(format!("server {id:?}")))?;
    Ok(Json(json!({ "server_id": id, "api_key": key })))
}

/// The server a `server:<id>` key belongs to.
async fn pushing_server(app: &AppState, caller: &Caller) -> ApiResult<Server> {
    let Scope::Server(id) = &caller.scope else {
        return Err(ApiError::forbidden(format!("a {} key cannot push server data; use the server's own key", caller.scope)));
    };
    app.store.server(id).await?.ok_or_else(|| ApiError::unauthorized(format!("server {id} is not registered")))
}

/// `POST /v1/remote/analytics`: format 1 or 2; the whole push is checked before anything is
/// stored, and stored in one transaction.
#[utoipa::path(
    post,
    path = "/v1/remote/analytics",
    tag = "servers",
    summary = "A self-hosted server pushes its counts (server key)",
    request_body = Object,
    responses((status = 200, description = "What was stored", body = tally_store::PushOutcome))
)]
pub async fn push(State(app): State<AppState>, caller: Caller, body: Body) -> ApiResult<Json<PushOutcome>> {
    let server = pushing_server(&app, &caller).await?;
    let value = body::json_value(&body::bytes(&app, body).await?)?;
    let now = Timestamp::now();
    let push = remote::parse(&value, &server.id, now).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid-push", format!("{e}; nothing of this push was stored"))
            .with(json!({ "table": e.table, "row": e.row, "field": e.field }))
    })?;
    Ok(Json(app.store.record_push(&server, push, now).await?))
}

/// `GET /v1/remote/analytics/status`: what the server has stored, so it knows where to resume.
#[utoipa::path(
    get,
    path = "/v1/remote/analytics/status",
    tag = "servers",
    summary = "What the pushing server last sent (server key)",
    responses((status = 200, description = "Cursor positions", body = Object))
)]
pub async fn status(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let server = pushing_server(&app, &caller).await?;
    Ok(Json(json!({
        "server_id": server.id,
        "last_push_at": server.last_push_at,
        "last_audit_log_id": server.last_audit_log_id,
        "last_realm_count_id": server.last_realm_count_id,
        "last_installation_count_id": server.last_installation_count_id,
    })))
}
