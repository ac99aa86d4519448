//! `/compat/openmeter/api/v1/…`: OpenMeter's events and meters API for its SDKs, answering
//! errors as OpenMeter does (`application/problem+json`). The mapping is in
//! `crate::compat::openmeter`, the meter arithmetic in `tally_domain::meter`.
//!
//! An OpenMeter namespace is a Tally organization: an `org:<id>` key acts on its own, an `admin`
//! key (or, for ingestion, an `ingest` key) names one in the `X-Tally-Organization` header.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::app::AppState;
use crate::compat::openmeter::{self as om, Invalid, QueryInput};
use crate::ingest;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tally_domain::meter::query::{self, MeteredEvent};
use tally_domain::meter::{CompiledMeter, Meter, MeterCreate, MeterError, MeterUpdate};
use tally_domain::{OrganizationId, Scope, UsageType, UserId};
use tally_store::{StoreError, UsageFilter, Write};

const ORGANIZATION_HEADER: &str = "x-tally-organization";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Ingest,
    Read,
    Manage,
}

/// The organization a request acts on, if the key may do `access` there.
fn namespace(caller: &Caller, headers: &HeaderMap, access: Access) -> ApiResult<OrganizationId> {
    let named = headers
        .get(ORGANIZATION_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| OrganizationId::parse(s.trim()).ok())
                .ok_or_else(|| ApiError::bad_request("the X-Tally-Organization header is not an organization id"))
        })
        .transpose()?;
    let needs_header = || ApiError::bad_request("name the organization in the X-Tally-Organization header, or use an org:<id> key");
    match &caller.scope {
        Scope::Organization(own) => match named {
            Some(other) if other != *own => Err(ApiError::forbidden(format!("this key acts on organization {:?} only", own.as_str()))),
            _ => Ok(own.clone()),
        },
        Scope::Admin => named.ok_or_else(needs_header),
        Scope::Ingest if access == Access::Ingest => named.ok_or_else(needs_header),
        scope => Err(ApiError::forbidden(match access {
            Access::Ingest => format!("a {scope} key cannot write events"),
            Access::Read | Access::Manage => format!("a {scope} key cannot read or manage meters; use an org:<id> or admin key"),
        })),
    }
}

fn json_body<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid-body", format!("the body does not fit: {e}"))
            .with(json!({ "line": e.line(), "column": e.column() }))
    })
}

fn meter_error(e: MeterError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid-meter", e.to_string()).with(json!({ "field": e.field }))
}

fn compiled(meter: &Meter) -> ApiResult<CompiledMeter> {
    // Stored meters were checked when saved; failing here means the row was damaged.
    meter.compile().map_err(super::error::internal)
}

/// `POST /api/v1/events`: one CloudEvent or a batch; 204 once every event is committed, 400 with
/// each invalid event's index and reason (and nothing stored) otherwise.
#[utoipa::path(
    post,
    path = "/compat/openmeter/api/v1/events",
    tag = "compat-openmeter",
    summary = "OpenMeter: ingest CloudEvents",
    request_body(content((Object = "application/cloudevents+json"), (Vec<Object> = "application/cloudevents-batch+json"), (Object = "application/json"))),
    responses((status = 204, description = "Stored"))
)]
pub async fn ingest_events(State(app): State<AppState>, caller: Caller, headers: HeaderMap, body: Body) -> ApiResult<StatusCode> {
    let org = namespace(&caller, &headers, Access::Ingest)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let shape = match media.as_str() {
        "application/cloudevents+json" => Some(false),
        "application/cloudevents-batch+json" => Some(true),
        "application/json" => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "Content-Type {content_type:?} is not supported; send application/cloudevents+json, \
                     application/cloudevents-batch+json or application/json"
                ),
            ));
        }
    };
    let bytes = super::body::bytes(&app, body).await?;
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if shape.is_some_and(|batch| batch != is_array) {
        let expected = if is_array { "one CloudEvent object" } else { "a JSON array of CloudEvents" };
        return Err(ApiError::bad_request(format!("a {media} body must be {expected}")));
    }
    let items: Vec<Box<RawValue>> = if is_array { json_body(&bytes)? } else { vec![json_body(&bytes)?] };
    if items.len() > om::MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!("{} events in one request; the limit is {}", items.len(), om::MAX_BATCH),
        ));
    }

    let meters = app.store.meters(&org).await?.iter().map(compiled).collect::<ApiResult<Vec<_>>>()?;
    let now = Timestamp::now();
    let (mut raws, mut origin, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
    for (index, item) in items.iter().enumerate() {
        match om::map_event(item, &meters, org.as_str(), now) {
            Ok(events) => {
                origin.extend(std::iter::repeat_n(index, events.len()));
                raws.extend(events.into_iter().map(Ok));
            }
            Err(reason) => invalid.push(Invalid { index, reason }),
        }
    }
    let (valid, rejected) = ingest::validated(&app, raws).await?;
    invalid.extend(rejected.into_iter().map(|r| Invalid { index: origin[r.index], reason: r.reason }));
    if !invalid.is_empty() {
        invalid.sort_by_key(|i| i.index);
        invalid.dedup_by_key(|i| i.index);
        let detail = format!(
            "{} of {} events are invalid (first: #{}: {}); nothing was stored",
            invalid.len(),
            items.len(),
            invalid[0].index,
            invalid[0].reason
        );
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid-events", detail).with(json!({ "invalidEvents": invalid })));
    }
    ingest::commit(&app, valid, Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/meters`.
#[utoipa::path(
    get,
    path = "/compat/openmeter/api/v1/meters",
    tag = "compat-openmeter",
    summary = "OpenMeter: meters",
    responses((status = 200, description = "Meters", body = Vec<tally_domain::meter::Meter>))
)]
pub async fn list_meters(State(app): State<AppState>, caller: Caller, headers: HeaderMap) -> ApiResult<Json<Vec<Meter>>> {
    let org = namespace(&caller, &headers, Access::Read)?;
    Ok(Json(app.store.meters(&org).await?))
}

/// `POST /api/v1/meters`: 201 with the meter; its usage type is registered if new.
#[utoipa::path(
    post,
    path = "/compat/openmeter/api/v1/meters",
    tag = "compat-openmeter",
    summary = "OpenMeter: create a meter",
    request_body = Object,
    responses((status = 201, description = "The meter", body = tally_domain::meter::Meter))
)]
pub async fn create_meter(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Meter>)> {
    let org = namespace(&caller, &headers, Access::Manage)?;
    let create: MeterCreate = json_body(&body)?;
    let now = Timestamp::now();
    let meter = create.into_meter(new_id(now), now).map_err(meter_error)?;
    register_usage_type(&app, &meter).await?;
    app.store.save_meter(&org, &meter, Write::Create).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => {
            ApiError::new(StatusCode::CONFLICT, "already-exists", format!("a meter with slug {:?} already exists", meter.slug.as_str()))
        }
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(meter)))
}

/// Meters record into the usage type of their slug: reuse it if its aggregation agrees, else
/// create it.
async fn register_usage_type(app: &AppState, meter: &Meter) -> ApiResult<()> {
    let wanted = meter.aggregation.usage_aggregation();
    if let Some(existing) = app.store.usage_types().await?.into_iter().find(|t| t.key == meter.slug) {
        if existing.aggregation == wanted {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "usage-type-conflict",
            format!(
                "the usage type {:?} exists with aggregation {}, but a {:?} meter records with {}; choose another slug",
                meter.slug.as_str(),
                existing.aggregation.as_str(),
                meter.aggregation,
                wanted.as_str()
            ),
        ));
    }
    let usage_type = UsageType {
        key: meter.slug.clone(),
        name: meter.name.clone(),
        unit: "unit".to_owned(),
        aggregation: wanted,
        description: format!("Recorded by the OpenMeter-compatible meter {} (events of type {:?})", meter.slug, meter.event_type),
    };
    match app.store.save_usage_type(&usage_type, Write::Create).await {
        // Another request registered it first: the same definition.
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    app.usage_types.reload(app.store.as_ref()).await?;
    Ok(())
}

/// A ULID (as OpenMeter's ids are): creation time in milliseconds, then 80 random bits, in
/// Crockford's base 32, so ids sort by creation.
fn new_id(now: Timestamp) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value = (u128::from(now.as_millisecond() as u64 & 0xFFFF_FFFF_FFFF) << 80) | (rand::random::<u128>() >> 48);
    (0..26).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

async fn find_meter(app: &AppState, org: &OrganizationId, id_or_slug: &str) -> ApiResult<Meter> {
    app.store.meter(org, id_or_slug).await?.ok_or_else(|| ApiError::not_found(format!("meter {id_or_slug:?}")))
}

/// `GET /api/v1/meters/{idOrSlug}`.
#[utoipa::path(
    get,
    path = "/compat/openmeter/api/v1/meters/{idOrSlug}",
    tag = "compat-openmeter",
    summary = "OpenMeter: one meter",
    params(("idOrSlug" = String, Path, description = "Meter id or slug")),
    responses((status = 200, description = "The meter", body = tally_domain::meter::Meter))
)]
pub async fn get_meter(State(app): State<AppState>, caller: Caller, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Meter>> {
    let org = namespace(&caller, &headers, Access::Read)?;
    Ok(Json(find_meter(&app, &org, &id).await?))
}

/// `PUT /api/v1/meters/{idOrSlug}`: name, description, group-by and metadata.
#[utoipa::path(
    put,
    path = "/compat/openmeter/api/v1/meters/{idOrSlug}",
    tag = "compat-openmeter",
    summary = "OpenMeter: update a meter",
    params(("idOrSlug" = String, Path, description = "Meter id or slug")),
    request_body = Object,
    responses((status = 200, description = "The meter", body = tally_domain::meter::Meter))
)]
pub async fn update_meter(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Meter>> {
    let org = namespace(&caller, &headers, Access::Manage)?;
    let update: MeterUpdate = json_body(&body)?;
    let mut meter = find_meter(&app, &org, &id).await?;
    meter.apply(update, Timestamp::now()).map_err(meter_error)?;
    app.store.save_meter(&org, &meter, Write::Replace).await?;
    Ok(Json(meter))
}

/// `DELETE /api/v1/meters/{idOrSlug}`: the meter goes; its events stay in its usage type.
#[utoipa::path(
    delete,
    path = "/compat/openmeter/api/v1/meters/{idOrSlug}",
    tag = "compat-openmeter",
    summary = "OpenMeter: delete a meter",
    params(("idOrSlug" = String, Path, description = "Meter id or slug")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_meter(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let org = namespace(&caller, &headers, Access::Manage)?;
    let meter = find_meter(&app, &org, &id).await?;
    app.store.delete_meter(&org, meter.slug.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/meters/{idOrSlug}/query`.
#[utoipa::path(
    get,
    path = "/compat/openmeter/api/v1/meters/{idOrSlug}/query",
    tag = "compat-openmeter",
    summary = "OpenMeter: query a meter",
    params(("idOrSlug" = String, Path, description = "Meter id or slug"), ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339)"), ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339)"), ("windowSize" = Option<String>, Query, description = "MINUTE, HOUR, DAY or MONTH"), ("windowTimeZone" = Option<String>, Query, description = "IANA time zone"), ("subject" = Option<String>, Query, description = "A subject (repeatable)"), ("groupBy" = Option<String>, Query, description = "A group-by key (repeatable)")),
    responses((status = 200, description = "`{from, to, windowSize, data}` as JSON, or CSV with `Accept: text/csv`", content((Object = "application/json"), (String = "text/csv"))))
)]
pub async fn query_get(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let input = QueryInput::from_pairs(pairs).map_err(|e| ApiError::bad_parameter(&e.parameter, e.detail))?;
    run_query(&app, &caller, &headers, &id, input).await
}

/// `POST /api/v1/meters/{idOrSlug}/query`: the same, for queries too long for a URL.
#[utoipa::path(
    post,
    path = "/compat/openmeter/api/v1/meters/{idOrSlug}/query",
    tag = "compat-openmeter",
    summary = "OpenMeter: query a meter (body)",
    params(("idOrSlug" = String, Path, description = "Meter id or slug")),
    request_body = Object,
    responses((status = 200, description = "`{from, to, windowSize, data}` as JSON, or CSV with `Accept: text/csv`", content((Object = "application/json"), (String = "text/csv"))))
)]
pub async fn query_post(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let input: QueryInput = json_body(&body)?;
    run_query(&app, &caller, &headers, &id, input).await
}

async fn run_query(app: &AppState, caller: &Caller, headers: &HeaderMap, id: &str, input: QueryInput) -> ApiResult<Response> {
    let org = namespace(caller, headers, Access::Read)?;
    let meter = find_meter(app, &org, id).await?;
    let compiled = compiled(&meter)?;
    let query = input.parse().map_err(|e| ApiError::bad_parameter(&e.parameter, e.detail))?;
    query.check(&compiled).map_err(|e| ApiError::bad_parameter(&e.parameter, e.message))?;

    let (earliest, latest) = tally_domain::event::all_time(Timestamp::now());
    let (from, to) = (query.from.unwrap_or(earliest), query.to.unwrap_or(latest));
    let filter = UsageFilter {
        organization_id: Some(org),
        user_id: match query.subjects.as_slice() {
            [one] => UserId::parse(one.clone()).ok(),
            _ => None,
        },
        usage_types: vec![meter.slug.clone()],
        ..UsageFilter::default()
    };
    let events = app.store.usage_events(&filter, from, to, true).await?;
    let metered =
        events.iter().map(|e| MeteredEvent { timestamp: e.timestamp, subject: e.user_id.as_str(), data: e.properties.as_deref() });
    let rows = query::run(&compiled, &query, metered);

    let wants_csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let keys: Vec<String> = query.group_by.iter().filter(|k| k.as_str() != "subject").cloned().collect();
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], om::rows_csv(&rows, &keys)).into_response());
    }
    let mut answer = json!({ "data": rows });
    let fields =
        [("from", query.from.map(|t| json!(t))), ("to", query.to.map(|t| json!(t))), ("windowSize", query.window_size.map(|w| json!(w)))];
    for (name, value) in fields {
        if let Some(v) = value {
            answer[name] = v;
        }
    }
    Ok(Json::<Value>(answer).into_response())
}
