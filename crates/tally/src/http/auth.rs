//! Who is calling: the API key in `Authorization: Bearer …`, looked up by its digest.

use super::error::ApiError;
use crate::app::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tally_domain::entities::User;
use tally_domain::{OrganizationId, Scope, UserId};

/// The authenticated caller.
pub struct Caller {
    pub scope: Scope,
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.scope.is_admin() { Ok(()) } else { Err(ApiError::forbidden("this needs an admin key")) }
    }

    /// The organization with this id, if it exists and the key may read it; 404 otherwise, as
    /// if it did not exist.
    pub async fn readable_organization(&self, app: &AppState, id: &str) -> Result<OrganizationId, ApiError> {
        let not_found = || ApiError::not_found(format!("organization {id:?}"));
        let org = OrganizationId::parse(id.to_owned()).map_err(|_| not_found())?;
        if !self.scope.can_read_organization(&org) || app.store.organization(&org).await?.is_none() {
            return Err(not_found());
        }
        Ok(org)
    }

    /// The user with this id, if the key may read it; 404 otherwise, as if it did not exist.
    pub async fn readable_user(&self, app: &AppState, id: &str) -> Result<User, ApiError> {
        let not_found = || ApiError::not_found(format!("user {id:?}"));
        let user_id = UserId::parse(id.to_owned()).map_err(|_| not_found())?;
        let user = app.store.user(&user_id).await?.ok_or_else(not_found)?;
        if !self.scope.can_read_user(&user.organization_id, &user.id) {
            return Err(not_found());
        }
        Ok(user)
    }

    /// Read access to anything beyond ingestion: admin, org and user keys.
    pub fn require_reader(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Admin | Scope::Organization(_) | Scope::User(_) => Ok(()),
            _ => Err(ApiError::forbidden(format!("a {} key cannot read data", self.scope))),
        }
    }
}

/// The dashboard's cookie: the API key the person signed in with (HTTP-only, same-site).
pub const SESSION_COOKIE: &str = "tally_session";
/// The header the dashboard sends with every request; a cross-site form cannot set it, so a
/// cookie-authenticated request without it is refused (CSRF).
pub const CSRF_HEADER: &str = "x-tally-csrf";

/// The value of one cookie of a request.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let secret = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <api key>`"))?,
            None => {
                let secret = cookie(&parts.headers, SESSION_COOKIE)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <api key>` header"))?;
                let reads = matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
                if !reads && !parts.headers.contains_key(CSRF_HEADER) {
                    return Err(ApiError::forbidden(format!(
                        "a signed-in request that changes data must carry the `{CSRF_HEADER}` header"
                    )));
                }
                secret
            }
        };
        let (key_id, scope) = authenticate(app, secret).await?;
        app.rate_limiter.check(&key_id)?;
        Ok(Caller { scope })
    }
}

/// The id and scope of a live API key. Keys are found by their SHA-256 digest, so the secret
/// itself is never compared (nor stored).
pub async fn authenticate(app: &AppState, secret: &str) -> Result<(String, Scope), ApiError> {
    let digest = tally_domain::key::digest(secret);
    let key = app.store.api_key_by_digest(&digest).await?.ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
    Ok((key.id, key.scope))
}
