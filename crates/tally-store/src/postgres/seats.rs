//! Audit events, seat snapshots, self-hosted servers' pushes and the license ledger on PostgreSQL.

use super::jobs::run;
use super::map_err;
use crate::sql::{AUDIT_COLUMNS, LEDGER_COLUMNS, SERVER_COLUMNS};
use crate::{AuditSource, JobRun, Listed, Page, PushOutcome, Result, SeatSnapshot, Server, StoreError, Stored, Write};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use tally_domain::seats::audit::{AuditEvent, AuditEventType, user_after};
use tally_domain::seats::ledger::LedgerEntry;
use tally_domain::seats::remote::{RemoteCount, RemotePush, realm_organization};
use tally_domain::seats::{RoleCounts, UserSeat};
use tally_domain::{OrganizationId, Role, UserId};
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Row, Transaction};

fn corrupt<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(StoreError::corrupt)
}

fn role_of(code: Option<i16>) -> Result<Option<Role>> {
    code.map(|c| corrupt(Role::try_from(i64::from(c)))).transpose()
}

fn counts_of(value: Option<Json<serde_json::Value>>) -> Result<Option<RoleCounts>> {
    value.map(|Json(v)| corrupt(RoleCounts::from_json(&v))).transpose()
}

fn audit_row(r: &Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        organization_id: corrupt(OrganizationId::parse(r.get::<_, String>(0)))?,
        id: r.get(1),
        event_time: r.get(2),
        event_type: corrupt(AuditEventType::from_code(i64::from(r.get::<_, i16>(3))))?,
        user_id: r.get::<_, Option<String>>(4).map(|u| corrupt(UserId::parse(u))).transpose()?,
        role: role_of(r.get(5))?,
        old_role: role_of(r.get(6))?,
        new_role: role_of(r.get(7))?,
        is_bot: r.get(8),
        plan_id: r.get(9),
        role_counts: counts_of(r.get(10))?,
        backfilled: r.get(11),
        server_id: r.get(12),
    })
}

fn code(role: Option<Role>) -> Option<i16> {
    role.map(|r| r.code() as i16)
}

const INSERT_AUDIT: &str = "INSERT INTO audit_events (organization_id, audit_id, event_time, event_type, user_id, role, old_role, new_role, \
     is_bot, plan_id, role_counts, backfilled, server_id, received_at) \
     SELECT o, i, t, ty, u, r, r0, r1, b, p, c::jsonb, bf, s, $14 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int2[], \
     $5::text[], $6::int2[], $7::int2[], $8::int2[], $9::bool[], $10::text[], $11::text[], $12::bool[], $13::text[]) \
     AS x(o, i, t, ty, u, r, r0, r1, b, p, c, bf, s) ON CONFLICT DO NOTHING RETURNING organization_id, audit_id";

/// Stores audit events inside the caller's transaction; see `Store::record_audit_events`. Rows
/// go in as one array insert; only the ones that were new then change users, in event order,
/// under an advisory lock per organization so concurrent writers keep the counts in step.
async fn insert_audit(tx: &Transaction<'_>, events: &[AuditEvent], now: Timestamp) -> Result<Vec<bool>> {
    let orgs: Vec<&str> = events.iter().map(|e| e.organization_id.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let times: Vec<Timestamp> = events.iter().map(|e| e.event_time).collect();
    let types: Vec<i16> = events.iter().map(|e| e.event_type.code() as i16).collect();
    let users: Vec<Option<&str>> = events.iter().map(|e| e.user_id.as_ref().map(UserId::as_str)).collect();
    let roles: Vec<Option<i16>> = events.iter().map(|e| code(e.role)).collect();
    let old_roles: Vec<Option<i16>> = events.iter().map(|e| code(e.old_role)).collect();
    let new_roles: Vec<Option<i16>> = events.iter().map(|e| code(e.new_role)).collect();
    let bots: Vec<bool> = events.iter().map(|e| e.is_bot).collect();
    let plans: Vec<Option<&str>> = events.iter().map(|e| e.plan_id.as_deref()).collect();
    let counts: Vec<Option<String>> = events.iter().map(|e| e.role_counts.map(|c| c.to_json().to_string())).collect();
    let backfilled: Vec<bool> = events.iter().map(|e| e.backfilled).collect();
    let servers: Vec<Option<&str>> = events.iter().map(|e| e.server_id.as_deref()).collect();
    let inserted = tx
        .query(
            INSERT_AUDIT,
            &[&orgs, &ids, &times, &types, &users, &roles, &old_roles, &new_roles, &bots, &plans, &counts, &backfilled, &servers, &now],
        )
        .await
        .map_err(map_err)?;
    let mut new: HashSet<(String, String)> = inserted.iter().map(|r| (r.get(0), r.get(1))).collect();
    // The first occurrence of each new key is the stored one.
    let stored: Vec<bool> = events.iter().map(|e| new.remove(&(e.organization_id.to_string(), e.id.clone()))).collect();
    let fresh: Vec<&AuditEvent> = events.iter().zip(&stored).filter(|(_, s)| **s).map(|(e, _)| e).collect();
    if fresh.is_empty() {
        return Ok(stored);
    }
    let (org_ids, org_times): (Vec<&str>, Vec<Timestamp>) = fresh.iter().map(|e| (e.organization_id.as_str(), e.event_time)).unzip();
    tx.execute(
        "INSERT INTO organizations (organization_id, name, created_at) SELECT DISTINCT ON (o) o, o, t FROM unnest($1::text[], $2::timestamptz[]) \
         AS x(o, t) ORDER BY o, t ON CONFLICT DO NOTHING",
        &[&org_ids, &org_times],
    )
    .await
    .map_err(map_err)?;
    apply_to_users(tx, &fresh).await?;
    for e in fresh.iter().filter(|e| e.event_type.organization_active().is_some()) {
        let active = e.event_type.organization_active();
        tx.execute("UPDATE organizations SET is_active = $2 WHERE organization_id = $1", &[&e.organization_id.as_str(), &active])
            .await
            .map_err(map_err)?;
    }
    Ok(stored)
}

/// Applies new user events to the user table, in order, and fills in the role counts of those
/// that came without.
async fn apply_to_users(tx: &Transaction<'_>, fresh: &[&AuditEvent]) -> Result<()> {
    let user_events: Vec<&AuditEvent> = fresh.iter().copied().filter(|e| e.user_id.is_some() && e.event_type.is_user_event()).collect();
    if user_events.is_empty() {
        return Ok(());
    }
    let mut orgs: Vec<&str> = user_events.iter().map(|e| e.organization_id.as_str()).collect();
    orgs.sort_unstable();
    orgs.dedup();
    // Sorted, so two writers take the locks in the same order.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('audit:' || o)) FROM unnest($1::text[]) AS x(o) ORDER BY o", &[&orgs])
        .await
        .map_err(map_err)?;
    let rows = tx
        .query(
            "SELECT organization_id, role, is_bot, count(*) FROM users WHERE organization_id = ANY($1) AND is_active \
             GROUP BY organization_id, role, is_bot",
            &[&orgs],
        )
        .await
        .map_err(map_err)?;
    let mut live: HashMap<String, RoleCounts> = orgs.iter().map(|o| ((*o).to_owned(), RoleCounts::default())).collect();
    for r in rows {
        let n = r.get::<_, i64>(3) as u64;
        let added = match r.get::<_, bool>(2) {
            true => RoleCounts::new([], n),
            false => RoleCounts::new(Role::from_code(i64::from(r.get::<_, i16>(1))).map(|role| (role, n)), 0),
        };
        let counts = live.get_mut(r.get::<_, &str>(0)).expect("asked for");
        *counts = counts.plus(&added);
    }
    let (key_orgs, key_users): (Vec<&str>, Vec<&str>) =
        user_events.iter().map(|e| (e.organization_id.as_str(), e.user_id.as_ref().map_or("", UserId::as_str))).unzip();
    let rows = tx
        .query(
            "SELECT u.organization_id, u.user_id, u.role, u.is_bot, u.is_active FROM users u \
             JOIN unnest($1::text[], $2::text[]) AS k(o, i) ON u.organization_id = k.o AND u.user_id = k.i",
            &[&key_orgs, &key_users],
        )
        .await
        .map_err(map_err)?;
    let mut seats: HashMap<(String, String), UserSeat> = HashMap::new();
    for r in rows {
        let seat = UserSeat { role: corrupt(Role::try_from(i64::from(r.get::<_, i16>(2))))?, is_bot: r.get(3), is_active: r.get(4) };
        seats.insert((r.get(0), r.get(1)), seat);
    }
    let mut changed: HashMap<(String, String), (UserSeat, Timestamp)> = HashMap::new();
    let mut filled: Vec<(&str, &str, String)> = Vec::new();
    for e in &user_events {
        let key = (e.organization_id.to_string(), e.user_id.as_ref().map(UserId::to_string).unwrap_or_default());
        let counts = live.get_mut(e.organization_id.as_str()).expect("every organization loaded");
        let before = seats.get(&key).copied();
        let after = user_after(before, e);
        before.into_iter().for_each(|b| counts.remove(b));
        if let Some(a) = after {
            counts.add(a);
            seats.insert(key.clone(), a);
            let joined = changed.get(&key).map_or(e.event_time, |(_, t)| *t);
            changed.insert(key, (a, joined));
        }
        if e.role_counts.is_none() {
            filled.push((e.organization_id.as_str(), e.id.as_str(), counts.to_json().to_string()));
        }
    }
    let states: Vec<_> = changed.into_iter().collect();
    let user_orgs: Vec<&str> = states.iter().map(|((o, _), _)| o.as_str()).collect();
    let user_ids: Vec<&str> = states.iter().map(|((_, u), _)| u.as_str()).collect();
    let roles: Vec<i16> = states.iter().map(|(_, (s, _))| s.role.code() as i16).collect();
    let bots: Vec<bool> = states.iter().map(|(_, (s, _))| s.is_bot).collect();
    let active: Vec<bool> = states.iter().map(|(_, (s, _))| s.is_active).collect();
    let joined: Vec<Timestamp> = states.iter().map(|(_, (_, t))| *t).collect();
    tx.execute(
        "INSERT INTO users (organization_id, user_id, username, role, is_bot, is_active, date_joined) \
         SELECT o, i, i, r, b, a, t FROM unnest($1::text[], $2::text[], $3::int2[], $4::bool[], $5::bool[], $6::timestamptz[]) \
         AS x(o, i, r, b, a, t) ON CONFLICT (organization_id, user_id) DO UPDATE SET \
         role = excluded.role, is_bot = excluded.is_bot, is_active = excluded.is_active",
        &[&user_orgs, &user_ids, &roles, &bots, &active, &joined],
    )
    .await
    .map_err(map_err)?;
    if !filled.is_empty() {
        let (o, rest): (Vec<&str>, Vec<(&str, String)>) = filled.into_iter().map(|(o, i, c)| (o, (i, c))).unzip();
        let (i, c): (Vec<&str>, Vec<String>) = rest.into_iter().unzip();
        tx.execute(
            "UPDATE audit_events a SET role_counts = x.c::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS x(o, i, c) \
             WHERE a.organization_id = x.o AND a.audit_id = x.i",
            &[&o, &i, &c],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

pub(super) async fn record_audit(conn: &mut Client, events: &[AuditEvent], now: Timestamp) -> Result<Vec<bool>> {
    let tx = conn.transaction().await.map_err(map_err)?;
    let stored = insert_audit(&tx, events, now).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(stored)
}

pub(super) async fn audit_events(conn: &Client, org: &OrganizationId, page: Page) -> Result<Listed<AuditEvent>> {
    let count: i64 =
        conn.query_one("SELECT count(*) FROM audit_events WHERE organization_id = $1", &[&org.as_str()]).await.map_err(map_err)?.get(0);
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE organization_id = $1 ORDER BY event_time DESC, audit_id DESC LIMIT {} OFFSET {}",
        page.limit, page.offset
    );
    let rows = conn.query(&sql, &[&org.as_str()]).await.map_err(map_err)?;
    Ok(Listed { count: count as u64, results: rows.iter().map(audit_row).collect::<Result<_>>()? })
}

pub(super) async fn seat_snapshots(conn: &Client, at: &[(OrganizationId, Timestamp)]) -> Result<Vec<SeatSnapshot>> {
    let (orgs, times): (Vec<&str>, Vec<Timestamp>) = at.iter().map(|(o, t)| (o.as_str(), *t)).unzip();
    // Two index probes per moment, in one round trip.
    let rows = conn
        .query(
            "SELECT q.o, c.audit_id, c.event_type, c.event_time, c.role_counts, s.event_type \
             FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS q(o, t, n) \
             LEFT JOIN LATERAL (SELECT audit_id, event_type, event_time, role_counts FROM audit_events a \
                 WHERE a.organization_id = q.o AND a.event_time <= q.t AND a.role_counts IS NOT NULL \
                 ORDER BY a.event_time DESC, a.audit_id DESC LIMIT 1) c ON TRUE \
             LEFT JOIN LATERAL (SELECT event_type FROM audit_events a \
                 WHERE a.organization_id = q.o AND a.event_time <= q.t AND a.event_type IN (201, 202) \
                 ORDER BY a.event_time DESC, a.audit_id DESC LIMIT 1) s ON TRUE \
             ORDER BY q.n",
            &[&orgs, &times],
        )
        .await
        .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            let source = r.get::<_, Option<String>>(1).map(|id| AuditSource {
                organization_id: r.get(0),
                id,
                event_type: i64::from(r.get::<_, i16>(2)),
                event_time: r.get(3),
            });
            let last_switch = r.get::<_, Option<i16>>(5).map(i64::from);
            Ok(SeatSnapshot {
                role_counts: counts_of(r.get(4))?,
                source,
                is_active: last_switch != Some(AuditEventType::OrganizationDeactivated.code()),
            })
        })
        .collect()
}

// ---- servers

fn server_row(r: &Row) -> Result<Server> {
    Ok(Server {
        id: r.get(0),
        organization_id: corrupt(OrganizationId::parse(r.get::<_, String>(1)))?,
        hostname: r.get(2),
        contact_email: r.get(3),
        key_id: r.get(4),
        created_at: r.get(5),
        last_push_at: r.get(6),
        last_audit_log_id: r.get(7),
        last_realm_count_id: r.get(8),
        last_installation_count_id: r.get(9),
    })
}

pub(super) async fn save_server(conn: &mut Client, s: &Server, write: Write) -> Result<()> {
    let tx = conn.transaction().await.map_err(map_err)?;
    tx.execute(
        "INSERT INTO organizations (organization_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&s.organization_id.as_str(), &s.hostname, &s.created_at],
    )
    .await
    .map_err(map_err)?;
    let insert =
        "INSERT INTO servers (server_id, organization_id, hostname, contact_email, key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
    let sql = match write {
        Write::Create => format!("{insert} ON CONFLICT DO NOTHING"),
        Write::Replace => format!(
            "{insert} ON CONFLICT (server_id) DO UPDATE SET organization_id = excluded.organization_id, hostname = excluded.hostname, \
             contact_email = excluded.contact_email, key_id = excluded.key_id"
        ),
    };
    let changed = tx
        .execute(&sql, &[&s.id, &s.organization_id.as_str(), &s.hostname, &s.contact_email, &s.key_id, &s.created_at])
        .await
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::AlreadyExists(format!("server {}", s.id)));
    }
    tx.commit().await.map_err(map_err)
}

pub(super) async fn server(conn: &Client, id: &str) -> Result<Option<Server>> {
    let row = conn.query_opt(&format!("SELECT {SERVER_COLUMNS} FROM servers WHERE server_id = $1"), &[&id]).await.map_err(map_err)?;
    row.as_ref().map(server_row).transpose()
}

pub(super) async fn servers(conn: &Client) -> Result<Vec<Server>> {
    let rows = conn.query(&format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY created_at, server_id"), &[]).await.map_err(map_err)?;
    rows.iter().map(server_row).collect()
}

pub(super) async fn server_realms(conn: &Client, server_id: &str) -> Result<Vec<OrganizationId>> {
    let rows = conn
        .query("SELECT organization_id FROM remote_realms WHERE server_id = $1 ORDER BY remote_id", &[&server_id])
        .await
        .map_err(map_err)?;
    rows.iter().map(|r| corrupt(OrganizationId::parse(r.get::<_, String>(0)))).collect()
}

pub(super) async fn realm_server(conn: &Client, org: &OrganizationId) -> Result<Option<String>> {
    let row = conn.query_opt("SELECT server_id FROM remote_realms WHERE organization_id = $1", &[&org.as_str()]).await.map_err(map_err)?;
    Ok(row.map(|r| r.get(0)))
}

async fn store_counts(tx: &Transaction<'_>, server: &Server, rows: &[RemoteCount]) -> Result<Stored> {
    let orgs: Vec<String> = rows
        .iter()
        .map(|c| c.realm_id.map_or_else(|| server.organization_id.to_string(), |realm| realm_organization(&server.id, realm).to_string()))
        .collect();
    let ids: Vec<i64> = rows.iter().map(|c| c.id).collect();
    let realms: Vec<Option<i64>> = rows.iter().map(|c| c.realm_id).collect();
    let properties: Vec<&str> = rows.iter().map(|c| c.property.as_str()).collect();
    let subgroups: Vec<Option<&str>> = rows.iter().map(|c| c.subgroup.as_deref()).collect();
    let ends: Vec<Timestamp> = rows.iter().map(|c| c.end_time).collect();
    let values: Vec<i64> = rows.iter().map(|c| c.value).collect();
    let stored = tx
        .execute(
            "INSERT INTO remote_counts (organization_id, remote_id, server_id, realm_id, property, subgroup, end_time, value) \
             SELECT o, i, $3, r, p, s, t, v FROM unnest($1::text[], $2::int8[], $4::int8[], $5::text[], $6::text[], $7::timestamptz[], $8::int8[]) \
             AS x(o, i, r, p, s, t, v) ON CONFLICT DO NOTHING",
            &[&orgs, &ids, &server.id, &realms, &properties, &subgroups, &ends, &values],
        )
        .await
        .map_err(map_err)?;
    Ok(Stored { stored, duplicates: rows.len() as u64 - stored })
}

pub(super) async fn record_push(conn: &mut Client, server: &Server, push: &RemotePush, now: Timestamp) -> Result<PushOutcome> {
    let tx = conn.transaction().await.map_err(map_err)?;
    let realms = push.realm_organizations(&server.id);
    for (org, realm, described) in &realms {
        let insert = "INSERT INTO organizations (organization_id, name, is_active, created_at) VALUES ($1, $2, $3, $4)";
        let org_sql = match described {
            true => format!("{insert} ON CONFLICT (organization_id) DO UPDATE SET name = excluded.name, is_active = excluded.is_active"),
            false => format!("{insert} ON CONFLICT DO NOTHING"),
        };
        tx.execute(&org_sql, &[&org.as_str(), &realm.name, &!realm.deactivated, &now]).await.map_err(map_err)?;
        let insert =
            "INSERT INTO remote_realms (organization_id, server_id, remote_id, uuid, name, deactivated) VALUES ($1, $2, $3, $4, $5, $6)";
        let link_sql = match described {
            true => format!(
                "{insert} ON CONFLICT (organization_id) DO UPDATE SET uuid = excluded.uuid, name = excluded.name, deactivated = excluded.deactivated"
            ),
            false => format!("{insert} ON CONFLICT DO NOTHING"),
        };
        tx.execute(&link_sql, &[&org.as_str(), &server.id, &realm.id, &realm.uuid, &realm.name, &realm.deactivated])
            .await
            .map_err(map_err)?;
    }
    let realm_counts = store_counts(&tx, server, &push.realm_counts).await?;
    let installation_counts = store_counts(&tx, server, &push.installation_counts).await?;
    let audit = insert_audit(&tx, &push.audit_events, now).await?;
    let stored_audit = audit.iter().filter(|s| **s).count() as u64;
    let last_audit = push.audit_events.iter().filter_map(|e| e.id.parse::<i64>().ok()).max();
    let last_realm_count = push.realm_counts.iter().map(|c| c.id).max();
    let last_installation_count = push.installation_counts.iter().map(|c| c.id).max();
    tx.execute(
        "UPDATE servers SET last_push_at = $2, \
         last_audit_log_id = GREATEST(last_audit_log_id, $3), \
         last_realm_count_id = GREATEST(last_realm_count_id, $4), \
         last_installation_count_id = GREATEST(last_installation_count_id, $5) WHERE server_id = $1",
        &[&server.id, &now, &last_audit, &last_realm_count, &last_installation_count],
    )
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(PushOutcome {
        format: push.format,
        realms: realms.len() as u64,
        realm_counts,
        installation_counts,
        audit_log_rows: Stored { stored: stored_audit, duplicates: audit.len() as u64 - stored_audit },
    })
}

// ---- the ledger

fn ledger_row(r: &Row) -> LedgerEntry {
    LedgerEntry {
        organization_id: r.get(0),
        seq: r.get(1),
        audit_organization_id: r.get(2),
        audit_id: r.get(3),
        event_time: r.get(4),
        licenses: r.get::<_, i64>(5) as u64,
        licenses_at_next_renewal: r.get::<_, i64>(6) as u64,
        is_renewal: r.get(7),
    }
}

pub(super) async fn unprocessed_audit(conn: &Client, after: Option<crate::AuditKey>, limit: u32) -> Result<Vec<AuditEvent>> {
    // Walking forward from the last row read keeps the scan off the index entries of rows this run
    // has just marked (dead until vacuumed).
    let rows = match &after {
        None => {
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE NOT processed ORDER BY event_time, organization_id, audit_id LIMIT $1"
            );
            conn.query(&sql, &[&i64::from(limit)]).await
        }
        Some((t, org, id)) => {
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE NOT processed AND (event_time, organization_id, audit_id) > ($2, $3, $4) \
                 ORDER BY event_time, organization_id, audit_id LIMIT $1"
            );
            conn.query(&sql, &[&i64::from(limit), t, &org.as_str(), id]).await
        }
    };
    rows.map_err(map_err)?.iter().map(audit_row).collect()
}

pub(super) async fn ledger(conn: &Client, org: &OrganizationId, page: Page) -> Result<Listed<LedgerEntry>> {
    let count: i64 =
        conn.query_one("SELECT count(*) FROM license_ledger WHERE organization_id = $1", &[&org.as_str()]).await.map_err(map_err)?.get(0);
    let sql = format!(
        "SELECT {LEDGER_COLUMNS} FROM license_ledger WHERE organization_id = $1 ORDER BY seq DESC LIMIT {} OFFSET {}",
        page.limit, page.offset
    );
    let rows = conn.query(&sql, &[&org.as_str()]).await.map_err(map_err)?;
    Ok(Listed { count: count as u64, results: rows.iter().map(ledger_row).collect() })
}

pub(super) async fn ledger_since(conn: &Client, org: &OrganizationId, since: Timestamp) -> Result<Vec<LedgerEntry>> {
    let sql = format!(
        "SELECT {LEDGER_COLUMNS} FROM license_ledger WHERE organization_id = $1 AND seq >= \
         coalesce((SELECT max(seq) FROM license_ledger WHERE organization_id = $1 AND event_time < $2), 0) ORDER BY seq"
    );
    Ok(conn.query(&sql, &[&org.as_str(), &since]).await.map_err(map_err)?.iter().map(ledger_row).collect())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn commit_ledger(
    conn: &mut Client,
    run_id: &str,
    owner: &str,
    entries: &[LedgerEntry],
    processed: &[(OrganizationId, String)],
    lease_until: Timestamp,
    now: Timestamp,
    finished: bool,
) -> Result<JobRun> {
    let tx = conn.transaction().await.map_err(map_err)?;
    let renewed = tx
        .execute(
            "UPDATE job_runs SET lease_until = $3, processed = processed + $4 WHERE run_id = $1 AND lease_owner = $2 AND status = 'in_progress'",
            &[&run_id, &owner, &lease_until, &(processed.len() as i64)],
        )
        .await
        .map_err(map_err)?;
    if renewed == 0 {
        return Err(StoreError::Conflict(format!("job run {run_id} is no longer held by {owner}")));
    }
    let orgs: Vec<&str> = entries.iter().map(|e| e.organization_id.as_str()).collect();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    let audit_orgs: Vec<&str> = entries.iter().map(|e| e.audit_organization_id.as_str()).collect();
    let audit_ids: Vec<&str> = entries.iter().map(|e| e.audit_id.as_str()).collect();
    let times: Vec<Timestamp> = entries.iter().map(|e| e.event_time).collect();
    let licenses: Vec<i64> = entries.iter().map(|e| e.licenses as i64).collect();
    let next: Vec<i64> = entries.iter().map(|e| e.licenses_at_next_renewal as i64).collect();
    let renewals: Vec<bool> = entries.iter().map(|e| e.is_renewal).collect();
    tx.execute(
        &format!(
            "INSERT INTO license_ledger ({LEDGER_COLUMNS}, created_at) SELECT *, $9 FROM unnest($1::text[], $2::int8[], $3::text[], \
             $4::text[], $5::timestamptz[], $6::int8[], $7::int8[], $8::bool[]) \
             ON CONFLICT (organization_id, audit_organization_id, audit_id) DO NOTHING"
        ),
        &[&orgs, &seqs, &audit_orgs, &audit_ids, &times, &licenses, &next, &renewals, &now],
    )
    .await
    .map_err(|e| match map_err(e) {
        StoreError::AlreadyExists(what) => StoreError::Conflict(format!("the ledger moved on under this run: {what}")),
        other => other,
    })?;
    let (orgs, ids): (Vec<&str>, Vec<&str>) = processed.iter().map(|(o, id)| (o.as_str(), id.as_str())).unzip();
    tx.execute(
        "UPDATE audit_events a SET processed = TRUE FROM unnest($1::text[], $2::text[]) AS p(organization_id, audit_id) \
         WHERE a.organization_id = p.organization_id AND a.audit_id = p.audit_id",
        &[&orgs, &ids],
    )
    .await
    .map_err(map_err)?;
    if finished {
        tx.execute("UPDATE job_runs SET status = 'completed', finished_at = $2 WHERE run_id = $1", &[&run_id, &now])
            .await
            .map_err(map_err)?;
    }
    let run = run(&tx, run_id).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(run)
}
