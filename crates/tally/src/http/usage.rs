//! Usage totals for an organization or a user, from the live aggregates.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::app::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_domain::{OrganizationId, UserId};
use tally_store::{Subject, TimeRange, UsageTotal};

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Serialize)]
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

pub async fn organization_totals(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<TotalsResponse>> {
    let range = range(&q)?;
    let org = OrganizationId::parse(id.clone()).map_err(|_| ApiError::not_found(format!("organization {id:?}")))?;
    if !caller.scope.can_read_organization(&org) || app.store.organization(&org).await?.is_none() {
        return Err(ApiError::not_found(format!("organization {id:?}")));
    }
    answer(&app, Subject::Organization(org), range).await
}

async fn answer(app: &AppState, subject: Subject, range: TimeRange) -> ApiResult<Json<TotalsResponse>> {
    let totals = app.store.usage_totals(&subject, range).await?;
    Ok(Json(TotalsResponse { from: range.from, to: range.to, totals }))
}

pub async fn user_totals(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<TotalsResponse>> {
    let range = range(&q)?;
    let not_found = || ApiError::not_found(format!("user {id:?}"));
    let user_id = UserId::parse(id.clone()).map_err(|_| not_found())?;
    let user = app.store.user(&user_id).await?.ok_or_else(not_found)?;
    if !caller.scope.can_read_user(&user.organization_id, &user.id) {
        return Err(not_found());
    }
    answer(&app, Subject::User { organization_id: user.organization_id, user_id }, range).await
}
