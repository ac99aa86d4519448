//! Create, read, update and list for the reference entities, written once over [`Resource`].
//! `POST` creates (409 if it exists), `PUT` creates or replaces (idempotent metadata sync),
//! `PATCH` applies a JSON merge patch (RFC 7396), `GET` reads one or a page.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::app::AppState;
use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tally_domain::{OrganizationId, Scope, TeamId, UsageType, UserId};
use tally_store::{Listed, Page, Store, StoreError, Write};
use utoipa_axum::router::OpenApiRouter;

#[async_trait]
pub trait Resource: Serialize + DeserializeOwned + utoipa::ToSchema + Clone + Send + Sync + 'static {
    /// Singular noun for messages: "organization".
    const NAME: &'static str;
    fn id(&self) -> String;
    /// Global reference data (plans, usage types): every reading key may list it.
    const GLOBAL: bool = false;
    /// The organization it belongs to; `None` for global reference data (plans, usage types).
    fn organization(&self) -> Option<&OrganizationId>;
    /// Checks beyond the types (ordering of dates…).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError>;
    async fn list(store: &dyn Store, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError>;
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError>;
}

/// The routes of one resource under `path`, with their OpenAPI operations (written here rather
/// than by `#[utoipa::path]`, which cannot annotate generic handlers).
pub fn routes<R: Resource>(path: &str) -> OpenApiRouter<AppState> {
    let one = format!("{path}/{{id}}");
    let mut router =
        OpenApiRouter::new().route(path, get(list::<R>).post(create::<R>)).route(&one, get(read::<R>).put(put::<R>).patch(patch::<R>));
    super::openapi::add_resource::<R>(router.get_openapi_mut(), path, &one, R::NAME);
    router
}

fn may_read<R: Resource>(caller: &Caller, item: &R) -> bool {
    match (&caller.scope, item.organization()) {
        (Scope::Admin, _) => true,
        (Scope::Organization(_) | Scope::User(_), None) => true,
        (Scope::Organization(own), Some(org)) => own == org,
        (Scope::User(own), Some(_)) => R::NAME == "user" && own.as_str() == item.id(),
        _ => false,
    }
}

fn may_write<R: Resource>(caller: &Caller, item: &R) -> Result<(), ApiError> {
    match (&caller.scope, item.organization()) {
        (Scope::Admin, _) => Ok(()),
        (Scope::Organization(own), Some(org)) if own == org => Ok(()),
        (Scope::Organization(_), None) => Err(ApiError::forbidden(format!("only an admin key can change a {}", R::NAME))),
        _ => Err(ApiError::forbidden(format!("this key cannot change this {}", R::NAME))),
    }
}

fn body(body: Result<Json<Value>, JsonRejection>) -> ApiResult<Value> {
    body.map(|Json(v)| v).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text())))
}

fn parse<R: Resource>(value: Value) -> ApiResult<R> {
    let item: R = serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid {}: {e}", R::NAME)))?;
    item.check().map_err(|e| ApiError::bad_request(format!("invalid {}: {e}", R::NAME)))?;
    Ok(item)
}

async fn found<R: Resource>(app: &AppState, caller: &Caller, id: &str) -> ApiResult<R> {
    match R::fetch(app.store.as_ref(), id).await? {
        // Someone else's data answers 404, exactly like data that does not exist.
        Some(item) if may_read(caller, &item) => Ok(item),
        _ => Err(ApiError::not_found(format!("{} {id:?}", R::NAME))),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub organization_id: Option<String>,
}

/// A count parameter from 1 to `max`, `default` when absent.
pub fn count(name: &str, value: Option<&str>, default: u32, max: u32) -> ApiResult<u32> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_parameter(name, format!("must be a whole number from 1 to {max}, got {v:?}"))),
    }
}

/// `limit` (default 100) and `offset` of a listing.
pub fn page(limit: Option<&str>, offset: Option<&str>) -> ApiResult<Page> {
    let limit = count("limit", limit, 100, Page::MAX_LIMIT)?;
    let offset = match offset {
        None => 0,
        // The databases count rows in signed 64 bits.
        Some(o) => o
            .parse::<u64>()
            .ok()
            .filter(|&n| i64::try_from(n).is_ok())
            .ok_or_else(|| ApiError::bad_parameter("offset", format!("must be a whole number from 0 to {}, got {o:?}", i64::MAX)))?,
    };
    Ok(Page { limit, offset })
}

async fn list<R: Resource>(State(app): State<AppState>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Listed<R>>> {
    caller.require_reader()?;
    let page = page(q.limit.as_deref(), q.offset.as_deref())?;
    let asked = q.organization_id.map(OrganizationId::parse).transpose().map_err(|e| ApiError::bad_parameter("organization_id", e))?;
    let org = match &caller.scope {
        Scope::Admin => asked,
        Scope::Organization(own) => {
            if asked.as_ref().is_some_and(|a| a != own) {
                return Ok(Json(Listed { count: 0, results: vec![] }));
            }
            Some(own.clone())
        }
        Scope::User(_) if R::GLOBAL => None,
        _ => return Err(ApiError::forbidden(format!("a {} key cannot list {}s", caller.scope, R::NAME))),
    };
    let listed = R::list(app.store.as_ref(), org.as_ref(), page).await?;
    Ok(Json(listed))
}

async fn read<R: Resource>(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<R>> {
    caller.require_reader()?;
    found(&app, &caller, &id).await.map(Json)
}

async fn create<R: Resource>(
    State(app): State<AppState>,
    caller: Caller,
    json: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<R>)> {
    let item: R = parse(body(json)?)?;
    may_write(&caller, &item)?;
    item.save(app.store.as_ref(), Write::Create).await?;
    after_write::<R>(&app).await?;
    Ok((StatusCode::CREATED, Json(item)))
}

async fn put<R: Resource>(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    json: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<R>> {
    let item: R = parse(body(json)?)?;
    if item.id() != id {
        return Err(ApiError::bad_request(format!("the body's id {:?} does not match the path's {id:?}", item.id())));
    }
    may_write(&caller, &item)?;
    if let Some(existing) = R::fetch(app.store.as_ref(), &id).await? {
        may_write(&caller, &existing)?;
        ensure_same_organization(&existing, &item)?;
    }
    item.save(app.store.as_ref(), Write::Replace).await?;
    after_write::<R>(&app).await?;
    Ok(Json(item))
}

async fn patch<R: Resource>(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    json: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<R>> {
    let patch = body(json)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("a PATCH body must be a JSON object (RFC 7396 merge patch)"));
    }
    let existing: R = found(&app, &caller, &id).await?;
    may_write(&caller, &existing)?;
    let mut merged = serde_json::to_value(&existing).map_err(super::error::internal)?;
    merge_patch(&mut merged, patch);
    let item: R = parse(merged)?;
    if item.id() != id {
        return Err(ApiError::bad_request("`id` cannot be changed"));
    }
    ensure_same_organization(&existing, &item)?;
    item.save(app.store.as_ref(), Write::Replace).await?;
    after_write::<R>(&app).await?;
    Ok(Json(item))
}

fn ensure_same_organization<R: Resource>(existing: &R, item: &R) -> ApiResult<()> {
    if existing.organization() != item.organization() {
        return Err(ApiError::bad_request(format!("a {}'s `organization_id` cannot be changed", R::NAME)));
    }
    Ok(())
}

/// Validation caches what usage types exist; a change must be visible to the next event.
async fn after_write<R: Resource>(app: &AppState) -> ApiResult<()> {
    if R::NAME == "usage type" {
        app.usage_types.reload(app.store.as_ref()).await?;
    }
    Ok(())
}

/// RFC 7396: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (key, value) in patch {
                if value.is_null() {
                    map.remove(&key);
                } else {
                    merge_patch(map.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

#[async_trait]
impl Resource for Organization {
    const NAME: &'static str = "organization";
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn organization(&self) -> Option<&OrganizationId> {
        Some(&self.id)
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        match OrganizationId::parse(id) {
            Ok(id) => store.organization(&id).await,
            Err(_) => Ok(None),
        }
    }
    async fn list(store: &dyn Store, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError> {
        match org {
            // An organization key lists just its own organization.
            Some(id) => {
                let own = store.organization(id).await?;
                Ok(Listed { count: own.iter().count() as u64, results: own.into_iter().filter(|_| page.offset == 0).collect() })
            }
            None => store.organizations(page).await,
        }
    }
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError> {
        store.save_organization(self, write).await
    }
}

#[async_trait]
impl Resource for Team {
    const NAME: &'static str = "team";
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn organization(&self) -> Option<&OrganizationId> {
        Some(&self.organization_id)
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        match TeamId::parse(id) {
            Ok(id) => store.team(&id).await,
            Err(_) => Ok(None),
        }
    }
    async fn list(store: &dyn Store, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError> {
        store.teams(org, page).await
    }
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError> {
        store.save_team(self, write).await
    }
}

#[async_trait]
impl Resource for User {
    const NAME: &'static str = "user";
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn organization(&self) -> Option<&OrganizationId> {
        Some(&self.organization_id)
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        match UserId::parse(id) {
            Ok(id) => store.user(&id).await,
            Err(_) => Ok(None),
        }
    }
    async fn list(store: &dyn Store, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError> {
        store.users(org, page).await
    }
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError> {
        store.save_user(self, write).await
    }
}

#[async_trait]
impl Resource for Plan {
    const NAME: &'static str = "plan";
    const GLOBAL: bool = true;
    fn id(&self) -> String {
        self.id.clone()
    }
    fn organization(&self) -> Option<&OrganizationId> {
        None
    }
    fn check(&self) -> Result<(), String> {
        Plan::check(self)
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        store.plan(id).await
    }
    async fn list(store: &dyn Store, _org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError> {
        store.plans(page).await
    }
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError> {
        store.save_plan(self, write).await
    }
}

#[async_trait]
impl Resource for Subscription {
    const NAME: &'static str = "subscription";
    fn id(&self) -> String {
        self.id.clone()
    }
    fn organization(&self) -> Option<&OrganizationId> {
        Some(&self.organization_id)
    }
    fn check(&self) -> Result<(), String> {
        Subscription::check(self)
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        store.subscription(id).await
    }
    async fn list(store: &dyn Store, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError> {
        store.subscriptions(org, page).await
    }
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError> {
        if store.plan(&self.plan_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("plan {:?}", self.plan_id)));
        }
        store.save_subscription(self, write).await
    }
}

#[async_trait]
impl Resource for UsageType {
    const NAME: &'static str = "usage type";
    const GLOBAL: bool = true;
    fn id(&self) -> String {
        self.key.to_string()
    }
    fn organization(&self) -> Option<&OrganizationId> {
        None
    }
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        Ok(store.usage_types().await?.into_iter().find(|t| t.key.as_str() == id))
    }
    async fn list(store: &dyn Store, _org: Option<&OrganizationId>, page: Page) -> Result<Listed<Self>, StoreError> {
        let all = store.usage_types().await?;
        let count = all.len() as u64;
        let results = all.into_iter().skip(page.offset as usize).take(page.limit as usize).collect();
        Ok(Listed { count, results })
    }
    async fn save(&self, store: &dyn Store, write: Write) -> Result<(), StoreError> {
        store.save_usage_type(self, write).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, json!({"a": {"b": 1}}));
        assert_eq!(doc, json!({"a": {"b": 1}}));
    }

    #[test]
    fn paging_parameters_are_checked() {
        assert_eq!(page(None, None).unwrap(), Page { limit: 100, offset: 0 });
        assert_eq!(page(Some("1000"), Some("5")).unwrap(), Page { limit: 1000, offset: 5 });
        for bad in ["0", "1001", "ten", "-1"] {
            assert!(page(Some(bad), None).is_err(), "{bad}");
        }
        assert!(page(None, Some("x")).is_err());
        assert!(page(None, Some("9223372036854775808")).is_err(), "beyond what the databases count");
        assert_eq!(page(None, Some("9223372036854775807")).unwrap().offset, i64::MAX as u64);
    }
}
