//! Usage totals and time series for organizations, teams and users, from the live aggregates.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::app::AppState;
use crate::series::{CsvRows, Measure, ParamError, SeriesAnswer, SeriesParams, SeriesQuery};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_domain::{Scope, UsageType};
use tally_store::{Subject, TimeRange, UsageTotal};

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TotalsResponse {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub totals: Vec<UsageTotal>,
}

fn instant(name: &str, value: Option<&str>) -> ApiResult<Option<Timestamp>> {
    value
        .map(|v| {
            v.parse::<Timestamp>()
                .map_err(|_| ApiError::bad_parameter(name, format!("{v:?} is not an RFC 3339 date-time such as 2025-01-31T00:00:00Z")))
        })
        .transpose()
}

pub fn range(q: &RangeQuery) -> ApiResult<TimeRange> {
    let range = TimeRange { from: instant("from", q.from.as_deref())?, to: instant("to", q.to.as_deref())? };
    if let (Some(from), Some(to)) = (range.from, range.to)
        && to < from
    {
        return Err(ApiError::bad_parameter("to", format!("{to} is before `from` {from}")));
    }
    Ok(range)
}

#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/usage/totals",
    tag = "usage",
    summary = "An organization's usage totals per usage type",
    params(("id" = String, Path, description = "The organization's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent")),
    responses((status = 200, description = "Totals", body = TotalsResponse))
)]
pub async fn organization_totals(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<TotalsResponse>> {
    let range = range(&q)?;
    let org = caller.readable_organization(&app, &id).await?;
    answer(&app, Subject::Organization(org), range).await
}

async fn answer(app: &AppState, subject: Subject, range: TimeRange) -> ApiResult<Json<TotalsResponse>> {
    let totals = app.store.usage_totals(&subject, range).await?;
    Ok(Json(TotalsResponse { from: range.from, to: range.to, totals }))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/usage/totals",
    tag = "usage",
    summary = "A user's usage totals per usage type",
    params(("id" = String, Path, description = "The user's id"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339 date-time); all time when absent"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339 date-time); all time when absent")),
    responses((status = 200, description = "Totals", body = TotalsResponse))
)]
pub async fn user_totals(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<TotalsResponse>> {
    let range = range(&q)?;
    let user = caller.readable_user(&app, &id).await?;
    answer(&app, Subject::User { organization_id: user.organization_id, user_id: user.id }, range).await
}

/// `GET /v1/usage`: usage time series with breakdowns (see `crate::series`).
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    summary = "Usage time series with breakdowns",
    params(("organization_id" = Option<String>, Query, description = "The organization (implied by an org key; an admin key may omit it for all organizations)"), ("team_id" = Option<String>, Query, description = "Only this team"), ("user_id" = Option<String>, Query, description = "Only this user"), ("usage_type" = Option<String>, Query, description = "One or several usage type keys, comma-separated"), ("breakdowns" = Option<String>, Query, description = "JSON array of up to 3 of type, team, user, organization, model, provider, status"), ("interval" = Option<String>, Query, description = "hour, day, week (from Monday) or month"), ("date_from" = Option<String>, Query, description = "RFC 3339 date or date-time, or relative: -30d, -12w, -6m (default -30d)"), ("date_to" = Option<String>, Query, description = "RFC 3339 date or date-time, or relative"), ("timezone" = Option<String>, Query, description = "IANA time zone of the buckets (default UTC)"), ("compare" = Option<String>, Query, description = "previous_period: add each series for the previous period of equal length"), ("limit" = Option<u32>, Query, description = "Most series to return; the rest are summed into `other`"), ("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, description = "The series, or CSV (one row per series and bucket) with `format=csv` or `Accept: text/csv`", content((crate::series::SeriesAnswer<crate::series::SeriesResult> = "application/json"), (String = "text/csv"))))
)]
pub async fn series(State(app): State<AppState>, caller: Caller, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult<Response> {
    let (query, types) = series_query(&app, &caller, pairs, Measure::Usage).await?;
    let answer = crate::series::run(app.store.as_ref(), &query, &types).await?;
    Ok(respond(&query, answer))
}

/// `GET /v1/spend`: the same series in money, priced by the plan in force at the time.
#[utoipa::path(
    get,
    path = "/v1/spend",
    tag = "usage",
    summary = "Spend time series, priced by the plan in force at the time",
    params(("organization_id" = Option<String>, Query, description = "The organization (implied by an org key; an admin key may omit it for all organizations)"), ("team_id" = Option<String>, Query, description = "Only this team"), ("user_id" = Option<String>, Query, description = "Only this user"), ("usage_type" = Option<String>, Query, description = "One or several usage type keys, comma-separated"), ("breakdowns" = Option<String>, Query, description = "JSON array of up to 3 of type, team, user, organization, model, provider, status"), ("interval" = Option<String>, Query, description = "hour, day, week (from Monday) or month"), ("date_from" = Option<String>, Query, description = "RFC 3339 date or date-time, or relative: -30d, -12w, -6m (default -30d)"), ("date_to" = Option<String>, Query, description = "RFC 3339 date or date-time, or relative"), ("timezone" = Option<String>, Query, description = "IANA time zone of the buckets (default UTC)"), ("compare" = Option<String>, Query, description = "previous_period: add each series for the previous period of equal length"), ("limit" = Option<u32>, Query, description = "Most series to return; the rest are summed into `other`"), ("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, description = "The series in money, or CSV with `format=csv` or `Accept: text/csv`", content((crate::series::SeriesAnswer<crate::series::SpendResult> = "application/json"), (String = "text/csv"))))
)]
pub async fn spend(State(app): State<AppState>, caller: Caller, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult<Response> {
    let (query, types) = series_query(&app, &caller, pairs, Measure::Spend).await?;
    let answer = crate::series::run_spend(app.store.as_ref(), &query, &types).await?;
    Ok(respond(&query, answer))
}

async fn series_query(
    app: &AppState,
    caller: &Caller,
    pairs: Vec<(String, String)>,
    measure: Measure,
) -> ApiResult<(SeriesQuery, Vec<UsageType>)> {
    caller.require_reader()?;
    let mut params = SeriesParams::from_pairs(pairs).map_err(param_error)?;
    scope_params(app, &caller.scope, &mut params).await?;
    let types = app.store.usage_types().await?;
    let query = params.parse(measure, Timestamp::now(), &types).map_err(param_error)?;
    if let Some(org) = &query.filter.organization_id
        && app.store.organization(org).await?.is_none()
    {
        return Err(ApiError::not_found(format!("organization {:?}", org.as_str())));
    }
    Ok((query, types))
}

fn respond<R: Serialize + CsvRows>(query: &SeriesQuery, answer: SeriesAnswer<R>) -> Response {
    if query.csv {
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], crate::series::to_csv(&answer)).into_response();
    }
    Json(answer).into_response()
}

pub fn param_error(e: ParamError) -> ApiError {
    ApiError::bad_parameter(&e.parameter, e.detail)
}

/// Narrows a query to what the caller's key may read: an `org:` key its organization, a `user:`
/// key its own usage. Asking for anything else is refused, not silently narrowed.
async fn scope_params(app: &AppState, scope: &Scope, params: &mut SeriesParams) -> ApiResult<()> {
    match scope {
        Scope::Admin => Ok(()),
        Scope::Organization(org) => match &params.organization_id {
            Some(asked) if asked != org.as_str() => {
                Err(ApiError::forbidden(format!("this key reads organization {:?} only", org.as_str())))
            }
            _ => {
                params.organization_id = Some(org.as_str().to_owned());
                Ok(())
            }
        },
        Scope::User(user_id) => {
            if params.user_id.as_deref().is_some_and(|u| u != user_id.as_str()) {
                return Err(ApiError::forbidden(format!("this key reads user {:?} only", user_id.as_str())));
            }
            let user = app.store.user(user_id).await?.ok_or_else(|| ApiError::forbidden("this key's user no longer exists"))?;
            if params.organization_id.as_deref().is_some_and(|o| o != user.organization_id.as_str()) {
                return Err(ApiError::forbidden(format!("this key reads user {:?} only", user_id.as_str())));
            }
            params.organization_id = Some(user.organization_id.as_str().to_owned());
            params.user_id = Some(user_id.as_str().to_owned());
            Ok(())
        }
        Scope::Ingest | Scope::Server(_) => Err(ApiError::forbidden(format!("a {scope} key cannot read data"))),
    }
}
