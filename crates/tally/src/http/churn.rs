//! The churn report, its alerts and report runs. An `org:` key sees its organization, a `user:`
//! key its own rows, an admin key everything.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use jiff::ToSpan;
use jiff::civil::Date;
use serde_json::{Value, json};
use std::collections::HashMap;
use tally_domain::churn::RiskLevel;
use tally_domain::{OrganizationId, Scope};
use tally_store::{ChurnOrdering, ChurnQuery, ChurnRow, Listed, ReportRun};

pub(super) type Params = HashMap<String, String>;

pub(super) fn only(params: &Params, known: &[&str]) -> ApiResult<()> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_parameter(k, format!("unknown parameter; known: {}", known.join(", ")))),
        None => Ok(()),
    }
}

fn date(params: &Params, name: &str) -> ApiResult<Option<Date>> {
    params
        .get(name)
        .map(|v| v.parse::<Date>().map_err(|_| ApiError::bad_parameter(name, format!("{v:?} is not a date (YYYY-MM-DD)"))))
        .transpose()
}

/// The organization and user a caller's rows are narrowed to, from its scope and the asked
/// `organization_id`.
pub(super) fn narrowed(caller: &Caller, params: &Params) -> ApiResult<(Option<OrganizationId>, Option<String>)> {
    let asked = params
        .get("organization_id")
        .map(|o| OrganizationId::parse(o.clone()).map_err(|e| ApiError::bad_parameter("organization_id", e)))
        .transpose()?;
    match &caller.scope {
        Scope::Admin => Ok((asked, None)),
        Scope::Organization(own) => match asked {
            Some(a) if &a != own => Err(ApiError::not_found(format!("organization {a:?}"))),
            _ => Ok((Some(own.clone()), None)),
        },
        Scope::User(own) => Ok((asked, Some(own.to_string()))),
        other => Err(ApiError::forbidden(format!("a {other} key cannot read reports"))),
    }
}

/// `GET /v1/reports/churn`: one day's rows (default the latest day with rows).
#[utoipa::path(
    get,
    path = "/v1/reports/churn",
    tag = "churn",
    summary = "The churn-risk report of a date (default: the latest)",
    params(("date" = Option<String>, Query, description = "Report date, YYYY-MM-DD"), ("organization_id" = Option<String>, Query, description = "Only this organization (admin keys; an org key is held to its own)"), ("risk_level" = Option<String>, Query, description = "low, medium, high or critical"), ("min_score" = Option<f64>, Query, description = "Lowest score, 0 to 100"), ("ordering" = Option<String>, Query, description = "-score (default), score, user_id or -date"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "`{date, count, results}`", body = Object))
)]
pub async fn churn(State(app): State<AppState>, caller: Caller, Query(params): Query<Params>) -> ApiResult<Json<Value>> {
    only(&params, &["date", "organization_id", "risk_level", "min_score", "ordering", "limit", "offset"])?;
    let (org, user) = narrowed(&caller, &params)?;
    let risk_level = params
        .get("risk_level")
        .map(|l| {
            RiskLevel::parse(l)
                .map(|l| l.as_str().to_owned())
                .ok_or_else(|| ApiError::bad_parameter("risk_level", format!("{l:?} is not one of LOW, MEDIUM, HIGH, CRITICAL")))
        })
        .transpose()?;
    let min_score = params
        .get("min_score")
        .map(|s| {
            s.parse::<f64>()
                .ok()
                .filter(|s| (0.0..=100.0).contains(s))
                .ok_or_else(|| ApiError::bad_parameter("min_score", "must be a number from 0 to 100"))
        })
        .transpose()?;
    let ordering = match params.get("ordering").map(String::as_str).unwrap_or("-score") {
        "-score" => ChurnOrdering::ScoreDesc,
        "score" => ChurnOrdering::ScoreAsc,
        "user_id" => ChurnOrdering::User,
        other => return Err(ApiError::bad_parameter("ordering", format!("{other:?} is not one of -score, score, user_id"))),
    };
    let page = super::resources::page(params.get("limit").map(String::as_str), params.get("offset").map(String::as_str))?;
    let day = match date(&params, "date")? {
        Some(d) => Some(d),
        None => app.store.latest_churn_date(org.as_ref()).await?,
    };
    let Some(day) = day else { return Ok(Json(json!({ "date": null, "count": 0, "results": [] }))) };
    let query = ChurnQuery { date: Some(day), organization_id: org, user_id: user, risk_level, min_score, ordering, page };
    let listed = app.store.churn_scores(&query).await?;
    Ok(Json(json!({ "date": day, "count": listed.count, "results": listed.results })))
}

/// `GET /v1/users/{id}/churn`: the user's score history, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/churn",
    tag = "churn",
    summary = "A user's churn-score history",
    params(("id" = String, Path, description = "The user's id"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Scores, newest first", body = tally_store::Listed<tally_store::ChurnRow>))
)]
pub async fn user_churn(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Listed<ChurnRow>>> {
    only(&params, &["limit", "offset"])?;
    let user = caller.readable_user(&app, &id).await?;
    let page = super::resources::page(params.get("limit").map(String::as_str), params.get("offset").map(String::as_str))?;
    let query = ChurnQuery {
        date: None,
        organization_id: Some(user.organization_id),
        user_id: Some(user.id.to_string()),
        risk_level: None,
        min_score: None,
        ordering: ChurnOrdering::DateDesc,
        page,
    };
    Ok(Json(app.store.churn_scores(&query).await?))
}

/// `GET /v1/reports/churn/risers?days=7&min_increase=20`: users whose score rose that much.
#[utoipa::path(
    get,
    path = "/v1/reports/churn/risers",
    tag = "churn",
    summary = "Users whose score rose by at least `min_increase` over `days`",
    params(("days" = Option<u32>, Query, description = "1 to 366 (default 7)"), ("min_increase" = Option<f64>, Query, description = "Points (default 20)"), ("date" = Option<String>, Query, description = "Report date, YYYY-MM-DD"), ("organization_id" = Option<String>, Query, description = "Only this organization (admin keys; an org key is held to its own)"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)")),
    responses((status = 200, description = "`{date, since, count, results}`", body = Object))
)]
pub async fn risers(State(app): State<AppState>, caller: Caller, Query(params): Query<Params>) -> ApiResult<Json<Value>> {
    only(&params, &["days", "min_increase", "date", "organization_id", "limit"])?;
    let (org, user) = narrowed(&caller, &params)?;
    let days = super::resources::count("days", params.get("days").map(String::as_str), 7, 366)?;
    let min_increase = params
        .get("min_increase")
        .map(|s| {
            s.parse::<f64>()
                .ok()
                .filter(|s| (0.0..=100.0).contains(s))
                .ok_or_else(|| ApiError::bad_parameter("min_increase", "must be a number from 0 to 100"))
        })
        .transpose()?
        .unwrap_or(20.0);
    let limit = super::resources::count("limit", params.get("limit").map(String::as_str), 100, 1000)?;
    let day = match date(&params, "date")? {
        Some(d) => Some(d),
        None => app.store.latest_churn_date(org.as_ref()).await?,
    };
    let Some(day) = day else { return Ok(Json(json!({ "date": null, "results": [] }))) };
    let since = day.checked_sub(i64::from(days).days()).map_err(|e| ApiError::bad_parameter("days", e))?;
    let rows = app.store.churn_risers(day, since, min_increase, org.as_ref(), limit).await?;
    let results: Vec<Value> = rows
        .into_iter()
        .filter(|(row, _)| user.as_ref().is_none_or(|u| &row.user_id == u))
        .map(|(row, previous)| {
            let increase = ((row.score - previous) * 100.0).round() / 100.0;
            let mut v = serde_json::to_value(row).unwrap_or_default();
            v["previous_score"] = json!(previous);
            v["increase"] = json!(increase);
            v
        })
        .collect();
    Ok(Json(json!({ "date": day, "since": since, "results": results })))
}

/// `GET /v1/reports/runs?report=churn`: newest first (admin keys).
#[utoipa::path(
    get,
    path = "/v1/reports/runs",
    tag = "churn",
    summary = "Report runs, newest first",
    params(("report" = Option<String>, Query, description = "Report type, e.g. churn"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip")),
    responses((status = 200, description = "Runs", body = tally_store::Listed<tally_store::ReportRun>))
)]
pub async fn runs(State(app): State<AppState>, caller: Caller, Query(params): Query<Params>) -> ApiResult<Json<Listed<ReportRun>>> {
    caller.require_admin()?;
    only(&params, &["report", "limit", "offset"])?;
    if let Some(r) = params.get("report").filter(|r| !crate::daily::REPORTS.contains(&r.as_str())) {
        return Err(ApiError::bad_parameter("report", format!("unknown report {r:?}; known: {}", crate::daily::REPORTS.join(", "))));
    }
    let page = super::resources::page(params.get("limit").map(String::as_str), params.get("offset").map(String::as_str))?;
    Ok(Json(app.store.report_runs(params.get("report").map(String::as_str), page).await?))
}
