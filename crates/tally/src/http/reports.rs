//! `GET /v1/user-reports`: every user with details, subscriptions, usage and balances, filtered
//! with `q`, ordered, paged, or exported whole as CSV or NDJSON. Admin keys only.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::Query;
use crate::app::AppState;
use crate::jobs::{self, RebuildOptions};
use crate::reports;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tally_domain::UsageType;
use tally_domain::entities::Plan;
use tally_domain::report::{self, Catalog, FieldError};
use tally_store::report::ReportQuery;
use tally_store::{JobRun, Store, StoreError};

fn field_error(parameter: &str, e: FieldError) -> ApiError {
    let detail = if e.token.is_empty() {
        format!("`{parameter}` at position {}: {}", e.at, e.message)
    } else {
        format!("`{parameter}` at position {} ({:?}): {}", e.at, e.token, e.message)
    };
    let mut extra = json!({ "parameter": parameter, "position": e.at, "token": e.token });
    if let Some(allowed) = e.allowed {
        extra["allowed"] = json!(allowed);
    }
    ApiError::bad_request(detail).with(extra)
}

enum Format {
    Json,
    Csv,
    Ndjson,
}

struct Params {
    q: String,
    ordering: String,
    limit: u32,
    offset: u64,
    format: Format,
}

fn params(pairs: Vec<(String, String)>) -> ApiResult<Params> {
    let mut p = Params { q: String::new(), ordering: String::new(), limit: 0, offset: 0, format: Format::Json };
    let (mut limit, mut offset) = (None, None);
    for (key, value) in pairs {
        match key.as_str() {
            "q" => p.q = value,
            "ordering" => p.ordering = value,
            "limit" => limit = Some(value),
            "offset" => offset = Some(value),
            "format" => {
                p.format = match value.as_str() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    "ndjson" => Format::Ndjson,
                    _ => return Err(ApiError::bad_parameter("format", format!("{value:?} is not one of json, csv, ndjson"))),
                }
            }
            _ => return Err(ApiError::bad_parameter(&key, "unknown parameter; known: q, ordering, limit, offset, format")),
        }
    }
    let page = super::resources::page(limit.as_deref(), offset.as_deref())?;
    (p.limit, p.offset) = (page.limit, page.offset);
    Ok(p)
}

/// Plans by id, for balances.
async fn plans(store: &dyn Store) -> Result<HashMap<String, Plan>, StoreError> {
    let plans = crate::series::every(|page| store.plans(page)).await?;
    Ok(plans.into_iter().map(|p| (p.id.clone(), p)).collect())
}

#[utoipa::path(
    get,
    path = "/v1/user-reports",
    tag = "reports",
    summary = "Every user with organization, subscriptions, usage and balances (admin)",
    params(("q" = Option<String>, Query, description = "Filter in the q language, e.g. `service_usage__submission__current_period__gte:100 AND is_active:true`"), ("ordering" = Option<String>, Query, description = "A field path, `-` for descending"), ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"), ("offset" = Option<u64>, Query, description = "Rows to skip"), ("format" = Option<String>, Query, description = "json (default), csv or ndjson")),
    responses((status = 200, description = "`{count, next, previous, results}`, or CSV or NDJSON as `format` asks", content((Object = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))))
)]
pub async fn user_reports(State(app): State<AppState>, caller: Caller, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = params(pairs)?;
    let types = app.store.usage_types().await?;
    let catalog = Catalog::new(types.iter().map(|t| t.key.to_string()).collect());
    let filter = report::filter(&p.q, &catalog).map_err(|e| field_error("q", e))?;
    let ordering = catalog.ordering(&p.ordering).map_err(|e| field_error("ordering", e))?;
    let now = Timestamp::now();
    let plans = plans(app.store.as_ref()).await?;
    let query = ReportQuery { filter, ordering, limit: p.limit, offset: p.offset, count: true, after: None, now };
    match p.format {
        Format::Json => {
            let keys = app.store.report_users(&query).await?;
            let rows = app.store.report_rows(&keys.users, now).await?;
            let count = keys.count.unwrap_or_default();
            let link = |offset: u64| {
                let mut url = format!("/v1/user-reports?limit={}&offset={offset}", p.limit);
                for (k, v) in [("q", &p.q), ("ordering", &p.ordering)] {
                    if !v.is_empty() {
                        url.push_str(&format!("&{k}={}", encode(v)));
                    }
                }
                url
            };
            let next = (p.offset + u64::from(p.limit) < count).then(|| link(p.offset + u64::from(p.limit)));
            let previous = (p.offset > 0).then(|| link(p.offset.saturating_sub(u64::from(p.limit))));
            let results: Vec<Value> = rows.iter().map(|r| reports::record(r, &types, &plans)).collect();
            Ok(Json(json!({ "count": count, "next": next, "previous": previous, "results": results })).into_response())
        }
        Format::Csv | Format::Ndjson => Ok(export(app.store.clone(), query, types, plans, matches!(p.format, Format::Csv))),
    }
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Streams every matching row, a page at a time (see [`reports::Export`]).
fn export(store: Arc<dyn Store>, query: ReportQuery, types: Vec<UsageType>, plans: HashMap<String, Plan>, csv: bool) -> Response {
    let columns = Arc::new(reports::CsvColumns::new(&types));
    let first = if csv { Some(csv_line(columns.header())) } else { None };
    let pages = reports::Export::new(store, query).prefetched();
    let stream = futures_util::StreamExt::map(pages, move |page| match page {
        Ok(rows) => {
            let out = if csv {
                let mut w = csv::Writer::from_writer(Vec::new());
                for row in &rows {
                    w.write_record(columns.row(&reports::record(row, &types, &plans))).map_err(std::io::Error::other)?;
                }
                w.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?
            } else {
                let mut out = Vec::new();
                for row in &rows {
                    serde_json::to_writer(&mut out, &reports::record(row, &types, &plans)).map_err(std::io::Error::other)?;
                    out.push(b'\n');
                }
                out
            };
            Ok(bytes::Bytes::from(out))
        }
        // The answer has started: cutting it short is how the error shows.
        Err(e) => {
            tracing::error!(error = %e, "user report export failed");
            Err(std::io::Error::other(e.to_string()))
        }
    });
    let head = futures_util::stream::iter(first.map(|h| Ok::<_, std::io::Error>(bytes::Bytes::from(h))));
    let content_type = if csv { "text/csv; charset=utf-8" } else { "application/x-ndjson" };
    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(futures_util::StreamExt::chain(head, stream))).into_response()
}

fn csv_line(cells: &[String]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(cells);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// `POST /v1/user-reports/rebuild`: starts (or resumes) the rebuild in the background; 202 with
/// the run, 409 while another run holds the lease.
#[utoipa::path(
    post,
    path = "/v1/user-reports/rebuild",
    tag = "reports",
    summary = "Rebuild the per-user aggregates from raw events (admin)",
    responses((status = 202, description = "The rebuild job", body = tally_store::JobRun))
)]
pub async fn rebuild(State(app): State<AppState>, caller: Caller) -> ApiResult<(axum::http::StatusCode, Json<JobRun>)> {
    caller.require_admin()?;
    let options = RebuildOptions::default();
    let claimed = jobs::claim_user_reports(app.store.as_ref(), &options).await?;
    let run = claimed.run.clone();
    let store = app.store.clone();
    tokio::spawn(async move {
        if let Err(e) = claimed.finish(store.as_ref(), &options, |_| {}).await {
            tracing::error!(error = %e, "user report rebuild stopped");
        }
    });
    Ok((axum::http::StatusCode::ACCEPTED, Json(run)))
}

/// `GET /v1/user-reports/runs`: the rebuild runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/user-reports/runs",
    tag = "reports",
    summary = "Rebuild runs (admin)",
    responses((status = 200, description = "`{count, results}`", body = Object))
)]
pub async fn runs(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let runs = app.store.job_runs(jobs::USER_REPORTS).await?;
    Ok(Json(json!({ "count": runs.len(), "results": runs })))
}
