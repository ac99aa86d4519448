//! The web dashboard: static files compiled into the binary (no build step, nothing fetched at
//! run time), sign-in that keeps the API key in an HTTP-only same-site cookie, and `/v1/me`,
//! which tells the pages what the key may see. The pages themselves call the JSON API.

use super::auth::{Caller, SESSION_COOKIE, authenticate};
use super::error::{ApiError, ApiResult};
use super::extract::Path;
use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tally_domain::Scope;

const INDEX: &str = include_str!("../../ui/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_str!("../../ui/chart.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../ui/favicon.svg")),
];
/// Everything comes from this server; nothing inline, no frames.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // The files change with the binary; revalidating costs little on loopback or a LAN.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: the dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    summary = "The web dashboard",
    responses((status = 200, description = "HTML", body = String, content_type = "text/html"))
)]
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{file}`: its scripts, styles and icon.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "dashboard",
    summary = "A dashboard script, style or icon",
    params(("file" = String, Path, description = "File name")),
    responses((status = 200, description = "The file", body = String, content_type = "text/plain"), (status = 404, description = "No such file", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => ApiError::not_found(format!("file {file:?}")).into_response(),
    }
}

fn session_cookie(value: &str, max_age: Option<u32>) -> HeaderValue {
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{age}")).expect("a key is printable ASCII")
}

/// `POST /ui/session` with `{"key": "tly_…"}`: signs in (a session cookie, gone when the browser
/// closes); 401 for an unknown or revoked key.
#[utoipa::path(
    post,
    path = "/ui/session",
    tag = "dashboard",
    summary = "Sign in to the dashboard with an API key (sets an HTTP-only cookie)",
    request_body = Object,
    responses((status = 204, description = "Signed in"))
)]
pub async fn sign_in(State(app): State<AppState>, body: axum::body::Body) -> ApiResult<Response> {
    let bytes = super::body::bytes(&app, body).await?;
    let body = super::body::json_value(&bytes)?;
    let key = body["key"]
        .as_str()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("send {\"key\": \"<api key>\"}").with(json!({ "field": "key" })))?;
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(ApiError::unauthorized("unknown or revoked API key"));
    }
    let (_, scope) = authenticate(&app, key).await?;
    if matches!(scope, Scope::Ingest | Scope::Server(_)) {
        return Err(ApiError::forbidden(format!("a {scope} key cannot read data; sign in with an admin, org or user key")));
    }
    let mut response = Json(me_of(&scope)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(key, None));
    Ok(response)
}

/// `DELETE /ui/session`: signs out (the cookie is cleared).
#[utoipa::path(
    delete,
    path = "/ui/session",
    tag = "dashboard",
    summary = "Sign out of the dashboard",
    responses((status = 204, description = "Signed out"))
)]
pub async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie("", Some(0)));
    response
}

/// `GET /v1/me`: what the caller's key is and which pages it may use.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "dashboard",
    summary = "What the caller's key is and what it may read",
    responses((status = 200, description = "`{kind, scope, organization_id, user_id, can}`", body = Object))
)]
pub async fn me(caller: Caller) -> Json<Value> {
    Json(me_of(&caller.scope))
}

fn me_of(scope: &Scope) -> Value {
    let (kind, organization, user, can): (&str, Option<String>, Option<String>, &[&str]) = match scope {
        Scope::Admin => ("admin", None, None, &["users", "seats", "churn"]),
        Scope::Organization(o) => ("organization", Some(o.to_string()), None, &["seats", "churn"]),
        Scope::User(u) => ("user", None, Some(u.to_string()), &["churn"]),
        Scope::Ingest => ("ingest", None, None, &[]),
        Scope::Server(_) => ("server", None, None, &[]),
    };
    json!({ "scope": scope.to_string(), "kind": kind, "organization_id": organization, "user_id": user, "can": can, "label": scope.to_string() })
}
