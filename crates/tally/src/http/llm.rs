//! LLM request analytics per user and per organization — summary, breakdown by model and
//! provider, months — from the live aggregates of `llm_request` events (the arithmetic is in
//! `tally_domain::llm`). Latency percentiles come from daily latency histograms, the first request
//! from the requests' index.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use super::usage::{RangeQuery, range};
use crate::app::AppState;
use crate::series::{llm_cells_and_latencies, llm_cells_between};
use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_domain::event::all_time;
use tally_domain::llm::prices::ModelPrice;
use tally_domain::llm::{self, By, TopBy};
use tally_domain::{OrganizationId, UserId};

/// `from`/`to` as given, all time when absent.
fn bounds(q: &RangeQuery) -> ApiResult<(Timestamp, Timestamp)> {
    let r = range(q)?;
    let (earliest, latest) = all_time(Timestamp::now());
    Ok((r.from.unwrap_or(earliest), r.to.unwrap_or(latest)))
}

/// A count from 1 to 1000, `default` when absent.
fn count_parameter(name: &str, value: Option<&str>, default: u32) -> ApiResult<u32> {
    super::resources::count(name, value, default, 1000)
}

/// The user's organization and id, if the key may read it (404 otherwise).
async fn readable_user(app: &AppState, caller: &Caller, id: &str) -> ApiResult<(OrganizationId, UserId)> {
    let user = caller.readable_user(app, id).await?;
    Ok((user.organization_id, user.id))
}

/// `GET /v1/users/{id}/llm/summary?from=&to=`.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/llm/summary",
    tag = "llm",
    summary = "A user's LLM requests, tokens, cost and latency",
    params(("id" = String, Path, description = "The user's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent")),
    responses((status = 200, description = "`{user_id, organization_id, from, to, summary}`", body = Object))
)]
pub async fn user_summary(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<Value>> {
    let (from, to) = bounds(&q)?;
    let (org, user) = readable_user(&app, &caller, &id).await?;
    let (cells, latencies) = llm_cells_and_latencies(app.store.as_ref(), &org, Some(&user), from, to).await?;
    Ok(Json(json!({ "user_id": user, "organization_id": org, "from": q.from, "to": q.to, "summary": llm::summary(&cells, &latencies) })))
}

#[derive(Debug, Deserialize)]
pub struct BreakdownQuery {
    #[serde(flatten)]
    pub range: RangeQuery,
    pub by: Option<String>,
}

/// `GET /v1/users/{id}/llm/breakdown?by=model|provider|model,provider`.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/llm/breakdown",
    tag = "llm",
    summary = "A user's LLM use per model and/or provider",
    params(("id" = String, Path, description = "The user's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent"), ("by" = Option<String>, Query, description = "model (default), provider, or model,provider")),
    responses((status = 200, description = "`{user_id, by, results}`", body = Object))
)]
pub async fn user_breakdown(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<BreakdownQuery>,
) -> ApiResult<Json<Value>> {
    let by_text = q.by.as_deref().unwrap_or("model");
    let by = By::parse(by_text)
        .ok_or_else(|| ApiError::bad_parameter("by", format!("{by_text:?} is not one of model, provider, model,provider")))?;
    let (from, to) = bounds(&q.range)?;
    let (org, user) = readable_user(&app, &caller, &id).await?;
    let cells = llm_cells_between(app.store.as_ref(), &org, Some(&user), from, to).await?;
    Ok(Json(json!({ "user_id": user, "by": by_text, "results": llm::breakdown(&cells, by) })))
}

/// `GET /v1/users/{id}/llm/monthly`: per calendar month (UTC), with model and provider rows.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/llm/monthly",
    tag = "llm",
    summary = "A user's LLM use per calendar month (UTC)",
    params(("id" = String, Path, description = "The user's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent")),
    responses((status = 200, description = "`{user_id, results}`", body = Object))
)]
pub async fn user_monthly(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<Value>> {
    let (from, to) = bounds(&q)?;
    let (org, user) = readable_user(&app, &caller, &id).await?;
    let cells = llm_cells_between(app.store.as_ref(), &org, Some(&user), from, to).await?;
    Ok(Json(json!({ "user_id": user, "results": llm::monthly(&cells) })))
}

#[derive(Debug, Deserialize)]
pub struct OrganizationQuery {
    #[serde(flatten)]
    pub range: RangeQuery,
    pub top: Option<String>,
    pub top_by: Option<String>,
}

/// `GET /v1/organizations/{id}/llm/summary?top=10&top_by=cost|tokens|requests`.
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/llm/summary",
    tag = "llm",
    summary = "An organization's LLM use with its top users",
    params(("id" = String, Path, description = "The organization's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent"), ("top" = Option<u32>, Query, description = "How many top users, 1 to 1000 (default 10)"), ("top_by" = Option<String>, Query, description = "cost (default), tokens or requests")),
    responses((status = 200, description = "`{organization_id, from, to, summary, top_users, top_by}`", body = Object))
)]
pub async fn organization_summary(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<OrganizationQuery>,
) -> ApiResult<Json<Value>> {
    let top = count_parameter("top", q.top.as_deref(), 10)? as usize;
    let top_by_text = q.top_by.as_deref().unwrap_or("cost");
    let top_by = TopBy::parse(top_by_text)
        .ok_or_else(|| ApiError::bad_parameter("top_by", format!("{top_by_text:?} is not one of cost, tokens, requests")))?;
    let (from, to) = bounds(&q.range)?;
    let org = caller.readable_organization(&app, &id).await?;
    let (cells, latencies) = llm_cells_and_latencies(app.store.as_ref(), &org, None, from, to).await?;
    Ok(Json(json!({
        "organization_id": org,
        "from": q.range.from,
        "to": q.range.to,
        "summary": llm::summary(&cells, &latencies),
        "top_users": llm::top_users(&cells, top_by, top),
        "top_by": top_by_text,
    })))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    #[serde(flatten)]
    pub range: RangeQuery,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// `GET /v1/users/{id}/llm/requests`: newest first, filtered by `model`, `provider`, `status`,
/// `from`, `to`; `limit` (1–1000, default 100) and the `next_cursor` of the previous page, which
/// seeks straight to its place however deep it is.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/llm/requests",
    tag = "llm",
    summary = "A user's LLM requests, newest first, cursor-paged",
    params(("id" = String, Path, description = "The user's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent"), ("model" = Option<String>, Query, description = "Only this model"), ("provider" = Option<String>, Query, description = "Only this provider"), ("status" = Option<String>, Query, description = "success or error"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "`{user_id, results, next_cursor}`", body = Object))
)]
pub async fn user_requests(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    let limit = count_parameter("limit", q.limit.as_deref(), 100)?;
    if let Some(s) = q.status.as_deref().filter(|s| !matches!(*s, "success" | "error")) {
        return Err(ApiError::bad_parameter("status", format!("{s:?} is not one of success, error")));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| llm::decode_cursor(c).ok_or_else(|| ApiError::bad_parameter("cursor", "not a cursor this API gave out")))
        .transpose()?;
    let (from, to) = bounds(&q.range)?;
    let (org, user) = readable_user(&app, &caller, &id).await?;
    let query = tally_store::LlmRequestQuery { from, to, model: q.model, provider: q.provider, status: q.status, cursor, limit };
    let events = app.store.llm_requests(&org, &user, &query).await?;
    let next_cursor =
        (events.len() == limit as usize).then(|| events.last().map(|e| llm::encode_cursor(e.timestamp, e.id.as_str()))).flatten();
    let results: Vec<Value> = events.iter().map(request).collect();
    Ok(Json(json!({ "user_id": user, "results": results, "next_cursor": next_cursor })))
}

/// One LLM request as the history and the activity feed show it.
fn request(e: &tally_domain::UsageEvent) -> Value {
    let l = e.llm.as_ref();
    let (input, output) = (l.map_or(0, |l| l.input_tokens), l.map_or(0, |l| l.output_tokens));
    json!({
        "id": e.id,
        "timestamp": e.timestamp,
        "team_id": e.team_id,
        "model": l.and_then(|l| l.model.clone()),
        "provider": l.and_then(|l| l.provider.clone()),
        "status": l.and_then(|l| l.status),
        "input_tokens": input,
        "output_tokens": output,
        "total_tokens": input + output,
        "cost": l.and_then(|l| l.cost),
        "latency_ms": l.and_then(|l| l.latency_ms),
    })
}

#[derive(Debug, Deserialize)]
pub struct ActivityQuery {
    pub limit: Option<String>,
}

/// `GET /v1/llm/activity?limit=`: the latest LLM requests across users, each with its user's
/// details; an admin key sees every organization, an `org:` key its own.
#[utoipa::path(
    get,
    path = "/v1/llm/activity",
    tag = "llm",
    summary = "The latest LLM requests across users, with user details",
    params(("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 50)")),
    responses((status = 200, description = "`{results}`", body = Object))
)]
pub async fn activity(State(app): State<AppState>, caller: Caller, Query(q): Query<ActivityQuery>) -> ApiResult<Json<Value>> {
    let limit = count_parameter("limit", q.limit.as_deref(), 50)?;
    let org = match &caller.scope {
        tally_domain::Scope::Admin => None,
        tally_domain::Scope::Organization(own) => Some(own.clone()),
        scope => return Err(ApiError::forbidden(format!("a {scope} key cannot read activity across users"))),
    };
    let events = app.store.llm_activity(org.as_ref(), limit).await?;
    let mut keys: Vec<(OrganizationId, UserId)> = events.iter().map(|e| (e.organization_id.clone(), e.user_id.clone())).collect();
    keys.sort();
    keys.dedup();
    let users: std::collections::HashMap<(OrganizationId, UserId), tally_store::ReportRow> = app
        .store
        .report_rows(&keys, Timestamp::now())
        .await?
        .into_iter()
        .map(|r| ((r.user.organization_id.clone(), r.user.id.clone()), r))
        .collect();
    let results: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut item = request(e);
            let row = users.get(&(e.organization_id.clone(), e.user_id.clone()));
            item["user"] = json!({
                "id": e.user_id,
                "username": row.map(|r| r.user.username.clone()),
                "email": row.map(|r| r.user.email.clone()),
                "full_name": row.map(|r| format!("{} {}", r.user.first_name, r.user.last_name).trim().to_owned()),
            });
            item["organization"] = json!({ "id": e.organization_id, "name": row.map(|r| r.organization_name.clone()) });
            item
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// `GET /v1/llm/prices`: the price table and its version.
#[utoipa::path(
    get,
    path = "/v1/llm/prices",
    tag = "llm",
    summary = "The LLM price table and its version",
    responses((status = 200, description = "`{version, count, results}`", body = Object))
)]
pub async fn prices(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_reader()?;
    let table = app.store.llm_prices().await?;
    Ok(Json(json!({ "version": table.version, "count": table.prices.len(), "results": table.prices })))
}

/// `PUT /v1/llm/prices/{model}` (admin): creates or replaces a model's price (or `*` pattern);
/// new events are priced with it, stored costs stay as they were.
#[utoipa::path(
    put,
    path = "/v1/llm/prices/{model}",
    tag = "llm",
    summary = "Create or replace a model's price (admin)",
    params(("model" = String, Path, description = "Model name, or a pattern with *")),
    request_body = tally_domain::llm::prices::ModelPrice,
    responses((status = 200, description = "`{version, price}`", body = Object))
)]
pub async fn put_price(
    State(app): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let price: ModelPrice = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid price: {e}")))?;
    if price.model != model {
        return Err(ApiError::bad_request(format!("the body's model {:?} does not match the path's {model:?}", price.model)));
    }
    price.check().map_err(|e| ApiError::bad_request(format!("invalid price: {e}")))?;
    let version = app.store.save_llm_price(&price).await?;
    app.prices.reload(app.store.as_ref()).await?;
    Ok(Json(json!({ "version": version, "price": price })))
}

/// `DELETE /v1/llm/prices/{model}` (admin).
#[utoipa::path(
    delete,
    path = "/v1/llm/prices/{model}",
    tag = "llm",
    summary = "Delete a model's price (admin)",
    params(("model" = String, Path, description = "Model name or pattern")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_price(State(app): State<AppState>, caller: Caller, Path(model): Path<String>) -> ApiResult<axum::http::StatusCode> {
    caller.require_admin()?;
    app.store.delete_llm_price(&model).await?.ok_or_else(|| ApiError::not_found(format!("price of {model:?}")))?;
    app.prices.reload(app.store.as_ref()).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `GET /v1/llm/unpriced-models`: models of requests stored without a cost, so a missing price
/// shows instead of passing as $0; an admin key sees all organizations, an `org:` key its own.
#[utoipa::path(
    get,
    path = "/v1/llm/unpriced-models",
    tag = "llm",
    summary = "Models of requests stored without a cost",
    responses((status = 200, description = "`{count, results}`", body = Object))
)]
pub async fn unpriced_models(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let org = match &caller.scope {
        tally_domain::Scope::Admin => None,
        tally_domain::Scope::Organization(own) => Some(own.clone()),
        scope => return Err(ApiError::forbidden(format!("a {scope} key cannot read unpriced models"))),
    };
    let models = app.store.unpriced_models(org.as_ref()).await?;
    Ok(Json(json!({ "count": models.len(), "results": models })))
}
