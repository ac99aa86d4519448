//! Alerts of every source, threshold rules and budgets, notification channels, deliveries and
//! entitlements. Operators (admin keys) manage everything; an `org:` key manages the rules and
//! channels of its organization and sees its alerts; a `user:` key sees its own alerts and
//! entitlements.

use super::auth::Caller;
use super::churn::{Params, narrowed, only};
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::alerts::rules::{self, RuleError, managed_by, may_manage};
use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_domain::alerts::{AlertRule, Channel, ChannelKind, FieldError, LOG_CHANNEL};
use tally_domain::churn::{AlertType, RiskLevel};
use tally_domain::{Scope, UserId};
use tally_store::{Alert, AlertQuery, Delivery, DeliveryQuery, Listed, StoreError, Write};

impl From<RuleError> for ApiError {
    fn from(error: RuleError) -> Self {
        match error {
            RuleError::Field(e) => field_error(e),
            RuleError::Forbidden(why) => ApiError::forbidden(why),
            RuleError::Store(e) => e.into(),
        }
    }
}

fn field_error(e: FieldError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid-field", e.to_string()).with(json!({ "field": e.field, "reason": e.reason }))
}

async fn json_body(app: &AppState, body: axum::body::Body) -> ApiResult<Value> {
    let bytes = super::body::bytes(app, body).await?;
    super::body::json_value(&bytes)
}

// ---- alerts

/// `GET /v1/alerts?status=&severity=&type=&source=&rule_id=&organization_id=`: newest first.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    summary = "Alerts, newest first",
    params(("status" = Option<String>, Query, description = "open or resolved"), ("severity" = Option<String>, Query, description = "low, medium, high or critical"), ("type" = Option<String>, Query, description = "An alert type, e.g. INACTIVITY or LLM_COST"), ("source" = Option<String>, Query, description = "churn_report, rule or system"), ("rule_id" = Option<String>, Query, description = "Only this rule's"), ("organization_id" = Option<String>, Query, description = "Only this organization (admin keys; an org key is held to its own)"), ("user_id" = Option<String>, Query, description = "Only this user's"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Alerts", body = tally_store::Listed<tally_store::Alert>))
)]
pub async fn alerts(State(app): State<AppState>, caller: Caller, Query(params): Query<Params>) -> ApiResult<Json<Listed<Alert>>> {
    only(&params, &["status", "severity", "type", "source", "rule_id", "organization_id", "user_id", "limit", "offset"])?;
    let (org, own) = narrowed(&caller, &params)?;
    // A user key sees its own alerts only; others may ask for one user's.
    let user = match (own, params.get("user_id")) {
        (Some(own), Some(asked)) if &own != asked => return Err(ApiError::not_found(format!("user {asked:?}"))),
        (Some(own), _) => Some(own),
        (None, asked) => asked.cloned(),
    };
    let status = params.get("status").map(|s| s.to_lowercase());
    if let Some(s) = status.as_deref().filter(|s| !["open", "resolved"].contains(s)) {
        return Err(ApiError::bad_parameter("status", format!("{s:?} is not one of open, resolved")));
    }
    let severity = params
        .get("severity")
        .map(|s| {
            RiskLevel::parse(s)
                .map(|l| l.as_str().to_lowercase())
                .ok_or_else(|| ApiError::bad_parameter("severity", "must be one of low, medium, high, critical"))
        })
        .transpose()?;
    let alert_type = params.get("type").map(|t| alert_type(t)).transpose()?;
    let source = params.get("source").map(|s| s.to_lowercase());
    if let Some(s) = source.as_deref().filter(|s| !["churn_report", "rule", "system"].contains(s)) {
        return Err(ApiError::bad_parameter("source", format!("{s:?} is not one of churn_report, rule, system")));
    }
    let page = super::resources::page(params.get("limit").map(String::as_str), params.get("offset").map(String::as_str))?;
    let query = AlertQuery {
        id: None,
        source,
        rule_id: params.get("rule_id").cloned(),
        status,
        severity,
        alert_type,
        organization_id: org,
        user_id: user,
        page: Some(page),
    };
    Ok(Json(app.store.alerts(&query).await?))
}

/// An alert type: a churn report's (`INACTIVITY`…) or a rule metric's (`LLM_COST`…).
fn alert_type(text: &str) -> ApiResult<String> {
    const METRICS: [&str; 7] = ["usage_sum", "usage_count", "llm_cost", "llm_tokens", "llm_requests", "llm_error_rate", "balance_percent"];
    if let Some(t) = AlertType::parse(text) {
        return Ok(t.as_str().to_owned());
    }
    if METRICS.iter().any(|m| m.eq_ignore_ascii_case(text)) {
        return Ok(text.to_uppercase());
    }
    let known: Vec<String> = AlertType::ALL.iter().map(|t| t.as_str().to_owned()).chain(METRICS.iter().map(|m| m.to_uppercase())).collect();
    Err(ApiError::bad_parameter("type", format!("{text:?} is not one of {}", known.join(", "))))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    action_taken: String,
}

/// `POST /v1/alerts/{id}/resolve` with `{"action_taken": "…"}`.
#[utoipa::path(
    post,
    path = "/v1/alerts/{id}/resolve",
    tag = "alerts",
    summary = "Resolve an alert by hand",
    params(("id" = String, Path, description = "The alert's id")),
    request_body = Resolution,
    responses((status = 200, description = "The resolved alert", body = tally_store::Alert))
)]
pub async fn resolve(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult<Json<Alert>> {
    let resolution: Resolution = serde_json::from_value(json_body(&app, body).await?)
        .map_err(|e| ApiError::bad_request(format!("the body does not fit: {e}; send {{\"action_taken\": \"…\"}}")))?;
    if resolution.action_taken.trim().is_empty() || resolution.action_taken.len() > 2000 {
        return Err(ApiError::bad_request("`action_taken` must say what was done (1 to 2000 characters)"));
    }
    let not_found = || ApiError::not_found(format!("alert {id:?}"));
    let found = app.store.alerts(&AlertQuery { id: Some(id.clone()), ..Default::default() }).await?;
    let alert = found.results.into_iter().next().ok_or_else(not_found)?;
    let readable = match &alert.organization_id {
        Some(org) => caller.scope.can_read_organization(org),
        None => caller.scope.is_admin(),
    };
    if !readable {
        return Err(not_found());
    }
    if alert.status != "open" {
        return Err(ApiError::new(StatusCode::CONFLICT, "already-resolved", format!("alert {id} was resolved at {:?}", alert.resolved_at)));
    }
    let alert = app.store.resolve_alert(&id, resolution.action_taken.trim(), Timestamp::now()).await?.ok_or_else(not_found)?;
    Ok(Json(alert))
}

// ---- rules

/// A rule as the caller may see it: 404 for another organization's.
async fn readable_rule(app: &AppState, caller: &Caller, id: &str) -> ApiResult<AlertRule> {
    let owner = managed_by(&caller.scope)?;
    match app.store.alert_rule(id).await? {
        Some(rule) if may_manage(&owner, &rule.owner) => Ok(rule),
        _ => Err(ApiError::not_found(format!("alert rule {id:?}"))),
    }
}

/// `POST /v1/alert-rules`: creates a rule (or a budget, with `hard: true`) and evaluates it at
/// once, so a line already crossed alerts now rather than at the next event.
#[utoipa::path(
    post,
    path = "/v1/alert-rules",
    tag = "alerts",
    summary = "Create an alert rule",
    request_body = Object,
    responses((status = 201, description = "The rule", body = Object))
)]
pub async fn create_rule(State(app): State<AppState>, caller: Caller, body: axum::body::Body) -> ApiResult<(StatusCode, Json<AlertRule>)> {
    let owner = managed_by(&caller.scope)?;
    let body = AlertRule::parse_body(&json_body(&app, body).await?).map_err(field_error)?;
    if body.scope == tally_domain::alerts::PartialScope::All && owner.is_some() {
        return Err(field_error(FieldError { field: "scope".into(), reason: "only operators watch every organization".into() }));
    }
    let rule = rules::build(app.store.as_ref(), owner, body, None, None).await?;
    app.store.save_alert_rule(&rule, Write::Create).await?;
    app.alerting.reload().await?;
    app.alerting.evaluate_rule(&rule).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// `GET /v1/alert-rules`: the rules the caller manages (operators: all, the built-in one too).
#[utoipa::path(
    get,
    path = "/v1/alert-rules",
    tag = "alerts",
    summary = "Alert rules",
    responses((status = 200, description = "`{count, results}`", body = Object))
)]
pub async fn list_rules(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let owner = managed_by(&caller.scope)?;
    let rules: Vec<AlertRule> = app.store.alert_rules().await?.into_iter().filter(|r| may_manage(&owner, &r.owner)).collect();
    Ok(Json(json!({ "count": rules.len(), "results": rules })))
}

#[utoipa::path(
    get,
    path = "/v1/alert-rules/{id}",
    tag = "alerts",
    summary = "One alert rule",
    params(("id" = String, Path, description = "The rule's id")),
    responses((status = 200, description = "The rule", body = Object))
)]
pub async fn read_rule(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<AlertRule>> {
    Ok(Json(readable_rule(&app, &caller, &id).await?))
}

/// `PUT /v1/alert-rules/{id}`: replaces a rule's definition (the built-in rule's too: its line,
/// channels or `enabled`, but not what it watches).
#[utoipa::path(
    put,
    path = "/v1/alert-rules/{id}",
    tag = "alerts",
    summary = "Replace an alert rule",
    params(("id" = String, Path, description = "The rule's id")),
    request_body = Object,
    responses((status = 200, description = "The rule", body = Object))
)]
pub async fn replace_rule(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult<Json<AlertRule>> {
    let existing = readable_rule(&app, &caller, &id).await?;
    let body = AlertRule::parse_body(&json_body(&app, body).await?).map_err(field_error)?;
    if body.id.as_ref().is_some_and(|given| given != &id) {
        return Err(field_error(FieldError { field: "id".into(), reason: format!("does not match the path ({id})") }));
    }
    let mut rule = rules::build(app.store.as_ref(), existing.owner.clone(), body, Some(id), Some(existing.created_at)).await?;
    if existing.builtin {
        if rule.scope != existing.scope || rule.metric != existing.metric || rule.window != existing.window {
            return Err(field_error(FieldError {
                field: "scope".into(),
                reason: "the built-in rule always watches the LLM error rate of all requests; change its threshold, channels or enabled"
                    .into(),
            }));
        }
        rule.builtin = true;
        rule.name = existing.name;
    }
    app.store.save_alert_rule(&rule, Write::Replace).await?;
    app.alerting.reload().await?;
    app.alerting.evaluate_rule(&rule).await?;
    Ok(Json(rule))
}

#[utoipa::path(
    delete,
    path = "/v1/alert-rules/{id}",
    tag = "alerts",
    summary = "Delete an alert rule",
    params(("id" = String, Path, description = "The rule's id")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_rule(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let rule = readable_rule(&app, &caller, &id).await?;
    if rule.builtin {
        return Err(ApiError::new(StatusCode::CONFLICT, "builtin", "the built-in rule cannot be deleted; set `enabled: false` instead"));
    }
    app.store.delete_alert_rule(&id).await?;
    app.alerting.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- channels

fn channel_json(channel: &Channel, secret: Option<&str>) -> Value {
    let mut v = serde_json::to_value(channel).unwrap_or_default();
    if let Some(secret) = secret {
        v["secret"] = json!(secret);
    }
    v
}

/// `POST /v1/notification-channels` with `{"url": "https://…"}` (a webhook; `secret` optional,
/// generated if absent and shown in this answer only) or `{"type": "log"}`.
#[utoipa::path(
    post,
    path = "/v1/notification-channels",
    tag = "alerts",
    summary = "Create a webhook channel; its signing secret is shown once",
    request_body = Object,
    responses((status = 201, description = "The channel with its secret", body = Object))
)]
pub async fn create_channel(State(app): State<AppState>, caller: Caller, body: axum::body::Body) -> ApiResult<(StatusCode, Json<Value>)> {
    let owner = managed_by(&caller.scope)?;
    let body = Channel::parse_body(&json_body(&app, body).await?).map_err(field_error)?;
    let (channel, secret) = rules::create_channel(app.store.as_ref(), owner, body).await.map_err(|e| match e {
        RuleError::Store(StoreError::AlreadyExists(what)) => {
            ApiError::new(StatusCode::CONFLICT, "already-exists", format!("{what} already exists"))
        }
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(channel_json(&channel, secret.as_deref()))))
}

/// `GET /v1/notification-channels`: the built-in `log` channel and the caller's channels.
#[utoipa::path(
    get,
    path = "/v1/notification-channels",
    tag = "alerts",
    summary = "Notification channels",
    responses((status = 200, description = "`{count, results}`", body = Object))
)]
pub async fn list_channels(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let owner = managed_by(&caller.scope)?;
    let mut channels = vec![Channel::log()];
    channels.extend(app.store.channels().await?.into_iter().filter(|c| may_manage(&owner, &c.owner)));
    Ok(Json(json!({ "count": channels.len(), "results": channels })))
}

async fn readable_channel(app: &AppState, caller: &Caller, id: &str) -> ApiResult<Channel> {
    let owner = managed_by(&caller.scope)?;
    if id == LOG_CHANNEL {
        return Ok(Channel::log());
    }
    match app.store.channel(id).await? {
        Some((channel, _)) if may_manage(&owner, &channel.owner) => Ok(channel),
        _ => Err(ApiError::not_found(format!("channel {id:?}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/notification-channels/{id}",
    tag = "alerts",
    summary = "One notification channel",
    params(("id" = String, Path, description = "The channel's id")),
    responses((status = 200, description = "The channel", body = Object))
)]
pub async fn read_channel(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(channel_json(&readable_channel(&app, &caller, &id).await?, None)))
}

/// Deletes a channel no rule uses (409 naming the rules otherwise).
#[utoipa::path(
    delete,
    path = "/v1/notification-channels/{id}",
    tag = "alerts",
    summary = "Delete a notification channel",
    params(("id" = String, Path, description = "The channel's id")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_channel(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let channel = readable_channel(&app, &caller, &id).await?;
    if channel.kind == ChannelKind::Log {
        return Err(ApiError::new(StatusCode::CONFLICT, "builtin", "the built-in log channel cannot be deleted"));
    }
    let users: Vec<String> = app.store.alert_rules().await?.into_iter().filter(|r| r.channels.contains(&id)).map(|r| r.id).collect();
    if !users.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "in-use", format!("channel {id} is used by rules {}", users.join(", "))));
    }
    app.store.delete_channel(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- deliveries and entitlements

/// `GET /v1/notifications/deliveries?status=&channel_id=&alert_id=`: newest first, each with
/// its attempts.
#[utoipa::path(
    get,
    path = "/v1/notifications/deliveries",
    tag = "alerts",
    summary = "Webhook deliveries with their attempts, newest first",
    params(("status" = Option<String>, Query, description = "pending, delivered or failed"), ("channel_id" = Option<String>, Query, description = "Only this channel's"), ("alert_id" = Option<String>, Query, description = "Only this alert's"), ("organization_id" = Option<String>, Query, description = "Only this organization (admin keys; an org key is held to its own)"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Deliveries", body = tally_store::Listed<tally_store::Delivery>))
)]
pub async fn deliveries(State(app): State<AppState>, caller: Caller, Query(params): Query<Params>) -> ApiResult<Json<Listed<Delivery>>> {
    only(&params, &["status", "channel_id", "alert_id", "organization_id", "limit", "offset"])?;
    let organization_id = match managed_by(&caller.scope)? {
        Some(own) => Some(own),
        None => params
            .get("organization_id")
            .map(|o| tally_domain::OrganizationId::parse(o.clone()).map_err(|e| ApiError::bad_parameter("organization_id", e)))
            .transpose()?,
    };
    let status = params.get("status").map(|s| s.to_lowercase());
    if let Some(s) = status.as_deref().filter(|s| !["pending", "delivered", "failed"].contains(s)) {
        return Err(ApiError::bad_parameter("status", format!("{s:?} is not one of pending, delivered, failed")));
    }
    let page = super::resources::page(params.get("limit").map(String::as_str), params.get("offset").map(String::as_str))?;
    let query = DeliveryQuery {
        organization_id,
        status,
        channel_id: params.get("channel_id").cloned(),
        alert_id: params.get("alert_id").cloned(),
        page: Some(page),
    };
    Ok(Json(app.store.deliveries(&query).await?))
}

/// `GET /v1/users/{id}/entitlements?usage_type=`: whether the user may use more, from the hard
/// rules (budgets) that apply to them, with what is left of each.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/entitlements",
    tag = "alerts",
    summary = "Whether a user may use more, per limited usage type",
    params(("id" = String, Path, description = "The user's id"), ("usage_type" = Option<String>, Query, description = "Only this usage type")),
    responses((status = 200, description = "Entitlements", body = Object))
)]
pub async fn entitlements(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<rules::Entitlements>> {
    only(&params, &["usage_type"])?;
    if !matches!(caller.scope, Scope::Admin | Scope::Organization(_) | Scope::User(_)) {
        return Err(ApiError::forbidden(format!("a {} key cannot read entitlements", caller.scope)));
    }
    let user = caller.readable_user(&app, &id).await?;
    let usage_type = params.get("usage_type").map(String::as_str);
    let user_id: UserId = user.id;
    Ok(Json(rules::entitlements(&app.alerting, &user.organization_id, &user_id, usage_type).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::alerts::Metric;

    #[test]
    fn every_metric_is_an_alert_type() {
        for metric in [Metric::LlmCost, Metric::LlmErrorRate, Metric::UsageSum { usage_type: "x".into() }] {
            assert_eq!(alert_type(metric.name()).unwrap(), metric.alert_type());
        }
        assert_eq!(alert_type("inactivity").unwrap(), "INACTIVITY");
        assert!(alert_type("bogus").is_err());
    }
}
