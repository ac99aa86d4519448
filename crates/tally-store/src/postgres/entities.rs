//! Reference entities and API keys on PostgreSQL.

use super::map_err;
use crate::sql::{SUBSCRIPTION_COLUMNS, USER_COLUMNS};
use crate::{ApiKey, Listed, Page, Result, StoreError, Write};
use tally_domain::entities::{Organization, Plan, Subscription, SubscriptionStatus, Team, User};
use tally_domain::meter::Meter;
use tally_domain::{Aggregation, OrganizationId, Role, Scope, TeamId, UsageType, UsageTypeKey, UserId};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Client, Row, Transaction};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn seed_usage_types(tx: &Transaction<'_>) -> Result<()> {
    for t in UsageType::builtins() {
        tx.execute(
            "INSERT INTO usage_types (key, name, unit, aggregation, description) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&t.key.as_str(), &t.name, &t.unit, &t.aggregation.as_str(), &t.description],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

fn parse<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(StoreError::corrupt)
}

async fn listed<T>(
    conn: &Client,
    count_sql: &str,
    page_sql: &str,
    filter: Params<'_>,
    page: Page,
    map: impl Fn(&Row) -> Result<T>,
) -> Result<Listed<T>> {
    let count: i64 = conn.query_one(count_sql, filter).await.map_err(map_err)?.get(0);
    let sql = format!("{page_sql} LIMIT {} OFFSET {}", page.limit, page.offset);
    let rows = conn.query(&sql, filter).await.map_err(map_err)?;
    Ok(Listed { count: count as u64, results: rows.iter().map(map).collect::<Result<_>>()? })
}

async fn one<T>(conn: &Client, sql: &str, params: Params<'_>, map: impl Fn(&Row) -> Result<T>) -> Result<Option<T>> {
    conn.query_opt(sql, params).await.map_err(map_err)?.as_ref().map(map).transpose()
}

async fn save(conn: &Client, what: String, write: Write, insert: &str, update: &str, params: Params<'_>) -> Result<()> {
    let sql = match write {
        Write::Create => format!("{insert} ON CONFLICT DO NOTHING"),
        Write::Replace => format!("{insert} {update}"),
    };
    let changed = conn.execute(&sql, params).await.map_err(map_err)?;
    if write == Write::Create && changed == 0 {
        return Err(StoreError::AlreadyExists(what));
    }
    Ok(())
}

// ---- usage types

pub(super) async fn usage_types(conn: &Client) -> Result<Vec<UsageType>> {
    let rows = conn.query("SELECT key, name, unit, aggregation, description FROM usage_types ORDER BY key", &[]).await.map_err(map_err)?;
    rows.iter()
        .map(|r| {
            let aggregation: String = r.get(3);
            Ok(UsageType {
                key: parse(UsageTypeKey::parse(r.get::<_, String>(0)))?,
                name: r.get(1),
                unit: r.get(2),
                aggregation: Aggregation::parse(&aggregation).ok_or_else(|| StoreError::corrupt(aggregation))?,
                description: r.get(4),
            })
        })
        .collect()
}

pub(super) async fn save_usage_type(conn: &Client, t: &UsageType, write: Write) -> Result<()> {
    save(
        conn,
        format!("usage type {}", t.key),
        write,
        "INSERT INTO usage_types (key, name, unit, aggregation, description) VALUES ($1, $2, $3, $4, $5)",
        "ON CONFLICT (key) DO UPDATE SET name = excluded.name, unit = excluded.unit, aggregation = excluded.aggregation, description = excluded.description",
        &[&t.key.as_str(), &t.name, &t.unit, &t.aggregation.as_str(), &t.description],
    )
    .await
}

// ---- organizations

const ORG_COLUMNS: &str = "organization_id, name, is_active, metadata, created_at";

fn org_row(r: &Row) -> Result<Organization> {
    Ok(Organization {
        id: parse(OrganizationId::parse(r.get::<_, String>(0)))?,
        name: r.get(1),
        is_active: r.get(2),
        metadata: r.get::<_, Json<serde_json::Value>>(3).0,
        created_at: r.get(4),
    })
}

pub(super) async fn save_organization(conn: &Client, o: &Organization, write: Write) -> Result<()> {
    save(
        conn,
        format!("organization {}", o.id),
        write,
        &format!("INSERT INTO organizations ({ORG_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
        "ON CONFLICT (organization_id) DO UPDATE SET name = excluded.name, is_active = excluded.is_active, metadata = excluded.metadata",
        &[&o.id.as_str(), &o.name, &o.is_active, &Json(&o.metadata), &o.created_at],
    )
    .await
}

pub(super) async fn organization(conn: &Client, id: &OrganizationId) -> Result<Option<Organization>> {
    one(conn, &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE organization_id = $1"), &[&id.as_str()], org_row).await
}

pub(super) async fn organizations(conn: &Client, page: Page) -> Result<Listed<Organization>> {
    listed(
        conn,
        "SELECT count(*) FROM organizations",
        &format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY organization_id"),
        &[],
        page,
        org_row,
    )
    .await
}

// ---- teams

const TEAM_COLUMNS: &str = "team_id, organization_id, name, metadata, created_at";

fn team_row(r: &Row) -> Result<Team> {
    Ok(Team {
        id: parse(TeamId::parse(r.get::<_, String>(0)))?,
        organization_id: parse(OrganizationId::parse(r.get::<_, String>(1)))?,
        name: r.get(2),
        metadata: r.get::<_, Json<serde_json::Value>>(3).0,
        created_at: r.get(4),
    })
}

pub(super) async fn save_team(conn: &Client, t: &Team, write: Write) -> Result<()> {
    save(
        conn,
        format!("team {}", t.id),
        write,
        &format!("INSERT INTO teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
        "ON CONFLICT (organization_id, team_id) DO UPDATE SET name = excluded.name, metadata = excluded.metadata",
        &[&t.id.as_str(), &t.organization_id.as_str(), &t.name, &Json(&t.metadata), &t.created_at],
    )
    .await
}

pub(super) async fn team(conn: &Client, id: &TeamId) -> Result<Option<Team>> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE team_id = $1 ORDER BY organization_id LIMIT 1");
    one(conn, &sql, &[&id.as_str()], team_row).await
}

pub(super) async fn teams(conn: &Client, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Team>> {
    let org = org.map(OrganizationId::as_str);
    listed(
        conn,
        "SELECT count(*) FROM teams WHERE $1::text IS NULL OR organization_id = $1",
        &format!("SELECT {TEAM_COLUMNS} FROM teams WHERE $1::text IS NULL OR organization_id = $1 ORDER BY organization_id, team_id"),
        &[&org],
        page,
        team_row,
    )
    .await
}

// ---- users

pub(super) fn user_row(r: &Row) -> Result<User> {
    let role: i16 = r.get(6);
    Ok(User {
        id: parse(UserId::parse(r.get::<_, String>(0)))?,
        organization_id: parse(OrganizationId::parse(r.get::<_, String>(1)))?,
        username: r.get(2),
        email: r.get(3),
        first_name: r.get(4),
        last_name: r.get(5),
        role: Role::from_code(role.into()).ok_or_else(|| StoreError::corrupt(format!("role {role}")))?,
        is_bot: r.get(7),
        is_active: r.get(8),
        is_superuser: r.get(9),
        date_joined: r.get(10),
        last_login: r.get(11),
        last_activity: r.get(12),
        metadata: r.get::<_, Json<serde_json::Value>>(13).0,
    })
}

pub(super) async fn save_user(conn: &Client, u: &User, write: Write) -> Result<()> {
    // last_activity belongs to ingestion: a save never overwrites it.
    let role = u.role.code() as i16;
    save(
        conn,
        format!("user {}", u.id),
        write,
        "INSERT INTO users (user_id, organization_id, username, email, first_name, last_name, role, is_bot, is_active, \
         is_superuser, date_joined, last_login, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        "ON CONFLICT (organization_id, user_id) DO UPDATE SET username = excluded.username, email = excluded.email, \
         first_name = excluded.first_name, last_name = excluded.last_name, role = excluded.role, is_bot = excluded.is_bot, \
         is_active = excluded.is_active, is_superuser = excluded.is_superuser, date_joined = excluded.date_joined, \
         last_login = excluded.last_login, metadata = excluded.metadata",
        &[
            &u.id.as_str(),
            &u.organization_id.as_str(),
            &u.username,
            &u.email,
            &u.first_name,
            &u.last_name,
            &role,
            &u.is_bot,
            &u.is_active,
            &u.is_superuser,
            &u.date_joined,
            &u.last_login,
            &Json(&u.metadata),
        ],
    )
    .await
}

pub(super) async fn user(conn: &Client, id: &UserId) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1 ORDER BY organization_id LIMIT 1");
    one(conn, &sql, &[&id.as_str()], user_row).await
}

pub(super) async fn users(conn: &Client, org: Option<&OrganizationId>, page: Page) -> Result<Listed<User>> {
    let org = org.map(OrganizationId::as_str);
    listed(
        conn,
        "SELECT count(*) FROM users WHERE $1::text IS NULL OR organization_id = $1",
        &format!("SELECT {USER_COLUMNS} FROM users WHERE $1::text IS NULL OR organization_id = $1 ORDER BY organization_id, user_id"),
        &[&org],
        page,
        user_row,
    )
    .await
}

// ---- plans

fn plan_row(r: &Row) -> Result<Plan> {
    Ok(r.get::<_, Json<Plan>>(0).0)
}

pub(super) async fn save_plan(conn: &Client, p: &Plan, write: Write) -> Result<()> {
    save(
        conn,
        format!("plan {}", p.id),
        write,
        "INSERT INTO plans (plan_id, body, created_at) VALUES ($1, $2, $3)",
        "ON CONFLICT (plan_id) DO UPDATE SET body = excluded.body",
        &[&p.id, &Json(p), &p.created_at],
    )
    .await
}

pub(super) async fn plan(conn: &Client, id: &str) -> Result<Option<Plan>> {
    one(conn, "SELECT body FROM plans WHERE plan_id = $1", &[&id], plan_row).await
}

pub(super) async fn plans(conn: &Client, page: Page) -> Result<Listed<Plan>> {
    listed(conn, "SELECT count(*) FROM plans", "SELECT body FROM plans ORDER BY plan_id", &[], page, plan_row).await
}

// ---- meters (a handful per organization: stored whole as JSON)

fn meter_row(r: &Row) -> Result<Meter> {
    Ok(r.get::<_, Json<Meter>>(0).0)
}

pub(super) async fn save_meter(conn: &Client, org: &OrganizationId, m: &Meter, write: Write) -> Result<()> {
    save(
        conn,
        format!("meter {}", m.slug),
        write,
        "INSERT INTO meters (organization_id, slug, meter_id, event_type, body) VALUES ($1, $2, $3, $4, $5)",
        "ON CONFLICT (organization_id, slug) DO UPDATE SET body = excluded.body",
        &[&org.as_str(), &m.slug.as_str(), &m.id, &m.event_type, &Json(m)],
    )
    .await
}

pub(super) async fn meter(conn: &Client, org: &OrganizationId, id_or_slug: &str) -> Result<Option<Meter>> {
    one(
        conn,
        "SELECT body FROM meters WHERE organization_id = $1 AND (slug = $2 OR meter_id = $2) ORDER BY slug = $2 DESC LIMIT 1",
        &[&org.as_str(), &id_or_slug],
        meter_row,
    )
    .await
}

pub(super) async fn meters(conn: &Client, org: &OrganizationId) -> Result<Vec<Meter>> {
    let rows = conn.query("SELECT body FROM meters WHERE organization_id = $1 ORDER BY slug", &[&org.as_str()]).await.map_err(map_err)?;
    rows.iter().map(meter_row).collect()
}

pub(super) async fn delete_meter(conn: &Client, org: &OrganizationId, slug: &str) -> Result<bool> {
    let deleted =
        conn.execute("DELETE FROM meters WHERE organization_id = $1 AND slug = $2", &[&org.as_str(), &slug]).await.map_err(map_err)?;
    Ok(deleted > 0)
}

// ---- subscriptions

pub(super) fn subscription_row(r: &Row) -> Result<Subscription> {
    let status: String = r.get(3);
    Ok(Subscription {
        id: r.get(0),
        organization_id: parse(OrganizationId::parse(r.get::<_, String>(1)))?,
        plan_id: r.get(2),
        status: SubscriptionStatus::parse(&status).ok_or_else(|| StoreError::corrupt(status))?,
        current_period_start: r.get(4),
        current_period_end: r.get(5),
        trial_end: r.get(6),
        add_ons: r.get::<_, Json<_>>(7).0,
        created_at: r.get(8),
    })
}

pub(super) async fn save_subscription(conn: &Client, s: &Subscription, write: Write) -> Result<()> {
    save(
        conn,
        format!("subscription {}", s.id),
        write,
        &format!("INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        "ON CONFLICT (organization_id, subscription_id) DO UPDATE SET plan_id = excluded.plan_id, status = excluded.status, \
         current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
         trial_end = excluded.trial_end, add_ons = excluded.add_ons",
        &[
            &s.id,
            &s.organization_id.as_str(),
            &s.plan_id,
            &s.status.as_str(),
            &s.current_period_start,
            &s.current_period_end,
            &s.trial_end,
            &Json(&s.add_ons),
            &s.created_at,
        ],
    )
    .await
}

pub(super) async fn subscription(conn: &Client, id: &str) -> Result<Option<Subscription>> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = $1 ORDER BY organization_id LIMIT 1");
    one(conn, &sql, &[&id], subscription_row).await
}

pub(super) async fn subscriptions(conn: &Client, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Subscription>> {
    let org = org.map(OrganizationId::as_str);
    listed(
        conn,
        "SELECT count(*) FROM subscriptions WHERE $1::text IS NULL OR organization_id = $1",
        &format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE $1::text IS NULL OR organization_id = $1 \
             ORDER BY organization_id, subscription_id"
        ),
        &[&org],
        page,
        subscription_row,
    )
    .await
}

// ---- API keys

const KEY_COLUMNS: &str = "key_id, name, scope, digest, created_at, revoked_at";

fn key_row(r: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0),
        name: r.get(1),
        scope: parse(Scope::parse(r.get::<_, &str>(2)))?,
        digest: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    })
}

pub(super) async fn create_api_key(conn: &Client, k: &ApiKey) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[&k.id, &k.name, &k.scope.to_string(), &k.digest, &k.created_at, &k.revoked_at],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn api_key_by_digest(conn: &Client, digest: &str) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = $1 AND revoked_at IS NULL");
    one(conn, &sql, &[&digest], key_row).await
}

pub(super) async fn api_keys(conn: &Client) -> Result<Vec<ApiKey>> {
    let rows = conn.query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"), &[]).await.map_err(map_err)?;
    rows.iter().map(key_row).collect()
}

pub(super) async fn revoke_api_key(conn: &Client, id: &str, at: jiff::Timestamp) -> Result<bool> {
    let n =
        conn.execute("UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL", &[&id, &at]).await.map_err(map_err)?;
    Ok(n == 1)
}
