//! Reference entities and API keys on SQLite.

use super::{map_err, micros, timestamp};
use crate::sql::{SUBSCRIPTION_COLUMNS, USER_COLUMNS};
use crate::{ApiKey, Listed, Page, Result, StoreError, Write};
use rusqlite::{Connection, Params, Row, params};
use serde_json::Value;
use tally_domain::entities::{Organization, Plan, Subscription, SubscriptionStatus, Team, User};
use tally_domain::meter::Meter;
use tally_domain::{Aggregation, OrganizationId, Role, Scope, TeamId, UsageType, UsageTypeKey, UserId};

pub(super) fn seed_usage_types(conn: &Connection) -> Result<()> {
    for t in UsageType::builtins() {
        conn.execute(
            "INSERT INTO usage_types (key, name, unit, aggregation, description) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![t.key.as_str(), t.name, t.unit, t.aggregation.as_str(), t.description],
        )
        .map_err(map_err)?;
    }
    Ok(())
}

fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(StoreError::corrupt)
}

fn opt_ts(value: Option<i64>) -> Result<Option<jiff::Timestamp>> {
    value.map(timestamp).transpose()
}

/// Runs a count and a page query that share their filter parameters.
pub(super) fn listed<T>(
    conn: &Connection,
    count_sql: &str,
    page_sql: &str,
    filter: impl Params + Clone,
    page: Page,
    map: impl Fn(&Row) -> Result<T>,
) -> Result<Listed<T>> {
    let count: i64 = conn.query_row(count_sql, filter.clone(), |r| r.get(0)).map_err(map_err)?;
    let sql = format!("{page_sql} LIMIT {} OFFSET {}", page.limit, page.offset);
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query(filter).map_err(map_err)?;
    let mut results = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        results.push(map(row)?);
    }
    Ok(Listed { count: count as u64, results })
}

/// A page of a tenant table, of one organization or of all. Two statements rather than
/// `?1 IS NULL OR organization_id = ?1`, which SQLite cannot answer from the key.
fn by_organization<T>(
    conn: &Connection,
    table: &str,
    columns: &str,
    order: &str,
    org: Option<&OrganizationId>,
    page: Page,
    map: impl Fn(&Row) -> Result<T>,
) -> Result<Listed<T>> {
    let filter = if org.is_some() { " WHERE organization_id = ?1" } else { "" };
    listed(
        conn,
        &format!("SELECT count(*) FROM {table}{filter}"),
        &format!("SELECT {columns} FROM {table}{filter} ORDER BY {order}"),
        rusqlite::params_from_iter(org.map(OrganizationId::as_str)),
        page,
        map,
    )
}

pub(super) fn one<T>(conn: &Connection, sql: &str, params: impl Params, map: impl Fn(&Row) -> Result<T>) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query(params).map_err(map_err)?;
    match rows.next().map_err(map_err)? {
        Some(row) => Ok(Some(map(row)?)),
        None => Ok(None),
    }
}

/// Runs a create (`ON CONFLICT DO NOTHING`, zero rows means it existed) or a replace.
fn save(conn: &Connection, what: String, write: Write, create_sql: &str, replace_sql: &str, params: impl Params) -> Result<()> {
    let sql = match write {
        Write::Create => create_sql,
        Write::Replace => replace_sql,
    };
    let changed = conn.execute(sql, params).map_err(map_err)?;
    if write == Write::Create && changed == 0 {
        return Err(StoreError::AlreadyExists(what));
    }
    Ok(())
}

pub(super) fn col<T: rusqlite::types::FromSql>(row: &Row, i: usize) -> Result<T> {
    row.get(i).map_err(map_err)
}

// ---- usage types

pub(super) fn usage_types(conn: &Connection) -> Result<Vec<UsageType>> {
    let mut stmt =
        conn.prepare_cached("SELECT key, name, unit, aggregation, description FROM usage_types ORDER BY key").map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let aggregation: String = col(r, 3)?;
        out.push(UsageType {
            key: UsageTypeKey::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?,
            name: col(r, 1)?,
            unit: col(r, 2)?,
            aggregation: Aggregation::parse(&aggregation).ok_or_else(|| StoreError::corrupt(aggregation))?,
            description: col(r, 4)?,
        });
    }
    Ok(out)
}

pub(super) fn save_usage_type(conn: &Connection, t: &UsageType, write: Write) -> Result<()> {
    const INSERT: &str = "INSERT INTO usage_types (key, name, unit, aggregation, description) VALUES (?1, ?2, ?3, ?4, ?5)";
    save(
        conn,
        format!("usage type {}", t.key),
        write,
        &format!("{INSERT} ON CONFLICT DO NOTHING"),
        &format!(
            "{INSERT} ON CONFLICT (key) DO UPDATE SET name = excluded.name, unit = excluded.unit, aggregation = excluded.aggregation, description = excluded.description"
        ),
        params![t.key.as_str(), t.name, t.unit, t.aggregation.as_str(), t.description],
    )
}

// ---- organizations

const ORG_COLUMNS: &str = "organization_id, name, is_active, metadata, created_at";

fn org_row(r: &Row) -> Result<Organization> {
    Ok(Organization {
        id: OrganizationId::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?,
        name: col(r, 1)?,
        is_active: col(r, 2)?,
        metadata: json(&col::<String>(r, 3)?)?,
        created_at: timestamp(col(r, 4)?)?,
    })
}

pub(super) fn save_organization(conn: &Connection, o: &Organization, write: Write) -> Result<()> {
    let insert = format!("INSERT INTO organizations ({ORG_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)");
    save(
        conn,
        format!("organization {}", o.id),
        write,
        &format!("{insert} ON CONFLICT DO NOTHING"),
        &format!(
            "{insert} ON CONFLICT (organization_id) DO UPDATE SET name = excluded.name, is_active = excluded.is_active, metadata = excluded.metadata"
        ),
        params![o.id.as_str(), o.name, o.is_active, o.metadata.to_string(), micros(o.created_at)],
    )
}

pub(super) fn organization(conn: &Connection, id: &OrganizationId) -> Result<Option<Organization>> {
    one(conn, &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE organization_id = ?1"), [id.as_str()], org_row)
}

pub(super) fn organizations(conn: &Connection, page: Page) -> Result<Listed<Organization>> {
    listed(
        conn,
        "SELECT count(*) FROM organizations",
        &format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY organization_id"),
        (),
        page,
        org_row,
    )
}

// ---- teams

const TEAM_COLUMNS: &str = "team_id, organization_id, name, metadata, created_at";

fn team_row(r: &Row) -> Result<Team> {
    Ok(Team {
        id: TeamId::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?,
        organization_id: OrganizationId::parse(col::<String>(r, 1)?).map_err(StoreError::corrupt)?,
        name: col(r, 2)?,
        metadata: json(&col::<String>(r, 3)?)?,
        created_at: timestamp(col(r, 4)?)?,
    })
}

pub(super) fn save_team(conn: &Connection, t: &Team, write: Write) -> Result<()> {
    let insert = format!("INSERT INTO teams ({TEAM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)");
    save(
        conn,
        format!("team {}", t.id),
        write,
        &format!("{insert} ON CONFLICT DO NOTHING"),
        &format!("{insert} ON CONFLICT (organization_id, team_id) DO UPDATE SET name = excluded.name, metadata = excluded.metadata"),
        params![t.id.as_str(), t.organization_id.as_str(), t.name, t.metadata.to_string(), micros(t.created_at)],
    )
}

pub(super) fn team(conn: &Connection, id: &TeamId) -> Result<Option<Team>> {
    one(conn, &format!("SELECT {TEAM_COLUMNS} FROM teams WHERE team_id = ?1 ORDER BY organization_id LIMIT 1"), [id.as_str()], team_row)
}

pub(super) fn teams(conn: &Connection, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Team>> {
    by_organization(conn, "teams", TEAM_COLUMNS, "organization_id, team_id", org, page, team_row)
}

// ---- users

pub(super) fn user_row(r: &Row) -> Result<User> {
    let role: i64 = col(r, 6)?;
    Ok(User {
        id: UserId::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?,
        organization_id: OrganizationId::parse(col::<String>(r, 1)?).map_err(StoreError::corrupt)?,
        username: col(r, 2)?,
        email: col(r, 3)?,
        first_name: col(r, 4)?,
        last_name: col(r, 5)?,
        role: Role::from_code(role).ok_or_else(|| StoreError::corrupt(format!("role {role}")))?,
        is_bot: col(r, 7)?,
        is_active: col(r, 8)?,
        is_superuser: col(r, 9)?,
        date_joined: timestamp(col(r, 10)?)?,
        last_login: opt_ts(col(r, 11)?)?,
        last_activity: opt_ts(col(r, 12)?)?,
        metadata: json(&col::<String>(r, 13)?)?,
    })
}

pub(super) fn save_user(conn: &Connection, u: &User, write: Write) -> Result<()> {
    // last_activity belongs to ingestion: a save never overwrites it.
    let insert = "INSERT INTO users (user_id, organization_id, username, email, first_name, last_name, role, is_bot, \
         is_active, is_superuser, date_joined, last_login, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
    save(
        conn,
        format!("user {}", u.id),
        write,
        &format!("{insert} ON CONFLICT DO NOTHING"),
        &format!(
            "{insert} ON CONFLICT (organization_id, user_id) DO UPDATE SET username = excluded.username, email = excluded.email, \
             first_name = excluded.first_name, last_name = excluded.last_name, role = excluded.role, is_bot = excluded.is_bot, \
             is_active = excluded.is_active, is_superuser = excluded.is_superuser, date_joined = excluded.date_joined, \
             last_login = excluded.last_login, metadata = excluded.metadata"
        ),
        params![
            u.id.as_str(),
            u.organization_id.as_str(),
            u.username,
            u.email,
            u.first_name,
            u.last_name,
            u.role.code(),
            u.is_bot,
            u.is_active,
            u.is_superuser,
            micros(u.date_joined),
            u.last_login.map(micros),
            u.metadata.to_string()
        ],
    )
}

pub(super) fn user(conn: &Connection, id: &UserId) -> Result<Option<User>> {
    one(conn, &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1 ORDER BY organization_id LIMIT 1"), [id.as_str()], user_row)
}

pub(super) fn users(conn: &Connection, org: Option<&OrganizationId>, page: Page) -> Result<Listed<User>> {
    by_organization(conn, "users", USER_COLUMNS, "organization_id, user_id", org, page, user_row)
}

// ---- plans (small reference data: stored whole as JSON)

fn plan_row(r: &Row) -> Result<Plan> {
    serde_json::from_str(&col::<String>(r, 0)?).map_err(StoreError::corrupt)
}

pub(super) fn save_plan(conn: &Connection, p: &Plan, write: Write) -> Result<()> {
    let body = serde_json::to_string(p).map_err(|e| StoreError::Internal(e.to_string()))?;
    let insert = "INSERT INTO plans (plan_id, body, created_at) VALUES (?1, ?2, ?3)";
    save(
        conn,
        format!("plan {}", p.id),
        write,
        &format!("{insert} ON CONFLICT DO NOTHING"),
        &format!("{insert} ON CONFLICT (plan_id) DO UPDATE SET body = excluded.body"),
        params![p.id, body, micros(p.created_at)],
    )
}

pub(super) fn plan(conn: &Connection, id: &str) -> Result<Option<Plan>> {
    one(conn, "SELECT body FROM plans WHERE plan_id = ?1", [id], plan_row)
}

pub(super) fn plans(conn: &Connection, page: Page) -> Result<Listed<Plan>> {
    listed(conn, "SELECT count(*) FROM plans", "SELECT body FROM plans ORDER BY plan_id", (), page, plan_row)
}

// ---- meters (a handful per organization: stored whole as JSON)

fn meter_row(r: &Row) -> Result<Meter> {
    serde_json::from_str(&col::<String>(r, 0)?).map_err(StoreError::corrupt)
}

pub(super) fn save_meter(conn: &Connection, org: &OrganizationId, m: &Meter, write: Write) -> Result<()> {
    let body = serde_json::to_string(m).map_err(|e| StoreError::Internal(e.to_string()))?;
    let insert = "INSERT INTO meters (organization_id, slug, meter_id, event_type, body) VALUES (?1, ?2, ?3, ?4, ?5)";
    save(
        conn,
        format!("meter {}", m.slug),
        write,
        &format!("{insert} ON CONFLICT DO NOTHING"),
        &format!("{insert} ON CONFLICT (organization_id, slug) DO UPDATE SET body = excluded.body"),
        params![org.as_str(), m.slug.as_str(), m.id, m.event_type, body],
    )
}

pub(super) fn meter(conn: &Connection, org: &OrganizationId, id_or_slug: &str) -> Result<Option<Meter>> {
    one(
        conn,
        "SELECT body FROM meters WHERE organization_id = ?1 AND (slug = ?2 OR meter_id = ?2) ORDER BY slug = ?2 DESC LIMIT 1",
        params![org.as_str(), id_or_slug],
        meter_row,
    )
}

pub(super) fn meters(conn: &Connection, org: &OrganizationId) -> Result<Vec<Meter>> {
    let mut stmt = conn.prepare_cached("SELECT body FROM meters WHERE organization_id = ?1 ORDER BY slug").map_err(map_err)?;
    let mut rows = stmt.query([org.as_str()]).map_err(map_err)?;
    let mut meters = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        meters.push(meter_row(row)?);
    }
    Ok(meters)
}

pub(super) fn delete_meter(conn: &Connection, org: &OrganizationId, slug: &str) -> Result<bool> {
    let deleted =
        conn.execute("DELETE FROM meters WHERE organization_id = ?1 AND slug = ?2", params![org.as_str(), slug]).map_err(map_err)?;
    Ok(deleted > 0)
}

// ---- subscriptions

pub(super) fn subscription_row(r: &Row) -> Result<Subscription> {
    let status: String = col(r, 3)?;
    Ok(Subscription {
        id: col(r, 0)?,
        organization_id: OrganizationId::parse(col::<String>(r, 1)?).map_err(StoreError::corrupt)?,
        plan_id: col(r, 2)?,
        status: SubscriptionStatus::parse(&status).ok_or_else(|| StoreError::corrupt(status))?,
        current_period_start: timestamp(col(r, 4)?)?,
        current_period_end: timestamp(col(r, 5)?)?,
        trial_end: opt_ts(col(r, 6)?)?,
        add_ons: serde_json::from_str(&col::<String>(r, 7)?).map_err(StoreError::corrupt)?,
        created_at: timestamp(col(r, 8)?)?,
    })
}

pub(super) fn save_subscription(conn: &Connection, s: &Subscription, write: Write) -> Result<()> {
    let insert = format!("INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    let add_ons = serde_json::to_string(&s.add_ons).map_err(|e| StoreError::Internal(e.to_string()))?;
    save(
        conn,
        format!("subscription {}", s.id),
        write,
        &format!("{insert} ON CONFLICT DO NOTHING"),
        &format!(
            "{insert} ON CONFLICT (organization_id, subscription_id) DO UPDATE SET plan_id = excluded.plan_id, status = excluded.status, \
             current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
             trial_end = excluded.trial_end, add_ons = excluded.add_ons"
        ),
        params![
            s.id,
            s.organization_id.as_str(),
            s.plan_id,
            s.status.as_str(),
            micros(s.current_period_start),
            micros(s.current_period_end),
            s.trial_end.map(micros),
            add_ons,
            micros(s.created_at)
        ],
    )
}

pub(super) fn subscription(conn: &Connection, id: &str) -> Result<Option<Subscription>> {
    one(
        conn,
        &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = ?1 ORDER BY organization_id LIMIT 1"),
        [id],
        subscription_row,
    )
}

pub(super) fn subscriptions(conn: &Connection, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Subscription>> {
    by_organization(conn, "subscriptions", SUBSCRIPTION_COLUMNS, "organization_id, subscription_id", org, page, subscription_row)
}

// ---- API keys

const KEY_COLUMNS: &str = "key_id, name, scope, digest, created_at, revoked_at";

fn key_row(r: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        id: col(r, 0)?,
        name: col(r, 1)?,
        scope: Scope::parse(&col::<String>(r, 2)?).map_err(StoreError::corrupt)?,
        digest: col(r, 3)?,
        created_at: timestamp(col(r, 4)?)?,
        revoked_at: opt_ts(col(r, 5)?)?,
    })
}

pub(super) fn create_api_key(conn: &Connection, k: &ApiKey) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![k.id, k.name, k.scope.to_string(), k.digest, micros(k.created_at), k.revoked_at.map(micros)],
    )
    .map_err(map_err)?;
    Ok(())
}

pub(super) fn api_key_by_digest(conn: &Connection, digest: &str) -> Result<Option<ApiKey>> {
    one(conn, &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = ?1 AND revoked_at IS NULL"), [digest], key_row)
}

pub(super) fn api_keys(conn: &Connection) -> Result<Vec<ApiKey>> {
    Ok(listed(
        conn,
        "SELECT count(*) FROM api_keys",
        &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"),
        (),
        Page { limit: u32::MAX, offset: 0 },
        key_row,
    )?
    .results)
}

pub(super) fn revoke_api_key(conn: &Connection, id: &str, at: jiff::Timestamp) -> Result<bool> {
    let n = conn
        .execute("UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL", params![id, micros(at)])
        .map_err(map_err)?;
    Ok(n == 1)
}
