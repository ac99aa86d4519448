//! Audit events, seat snapshots, self-hosted servers' pushes and the license ledger on PostgreSQL.

use super::jobs::run;
use super::map_err;
use crate::sql::{AUDIT_COLUMNS, LEDGER_COLUMNS, SERVER_COLUMNS};
use crate::{AuditSource, JobRun, Listed, Page, PushOutcome, Result, SeatSnapshot, Server, StoreError, Stored, Write};
use jiff::Timestamp;
use std::collections::HashMap;
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

/// Active users of an organization by role, from Tally's user table.
async fn user_counts(tx: &Transaction<'_>, org: &str) -> Result<RoleCounts> {
    let rows = tx
        .query("SELECT role, is_bot, count(*) FROM users WHERE organization_id = $1 AND is_active GROUP BY role, is_bot", &[&org])
        .await
        .map_err(map_err)?;
    let (mut humans, mut bots) = (Vec::new(), 0);
    for r in rows {
        let n = r.get::<_, i64>(2) as u64;
        match r.get::<_, bool>(1) {
            true => bots += n,
            false => humans.extend(Role::from_code(i64::from(r.get::<_, i16>(0))).map(|role| (role, n))),
        }
    }
    Ok(RoleCounts::new(humans, bots))
}

async fn user_seat(tx: &Transaction<'_>, org: &str, user: &str) -> Result<Option<UserSeat>> {
    let row = tx
        .query_opt("SELECT role, is_bot, is_active FROM users WHERE organization_id = $1 AND user_id = $2", &[&org, &user])
        .await
        .map_err(map_err)?;
    row.map(|r| Ok(UserSeat { role: corrupt(Role::try_from(i64::from(r.get::<_, i16>(0))))?, is_bot: r.get(1), is_active: r.get(2) }))
        .transpose()
}

/// Stores audit events inside the caller's transaction; see `Store::record_audit_events`. A row
/// is inserted first and its effects applied only if it was new, so two writers racing on the
/// same event apply it once; an advisory lock per organization keeps their counts in step.
async fn insert_audit(tx: &Transaction<'_>, events: &[AuditEvent], now: Timestamp) -> Result<Vec<bool>> {
    let mut live_counts: HashMap<String, RoleCounts> = HashMap::new();
    let mut stored = Vec::with_capacity(events.len());
    let insert = tx
        .prepare(&format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT DO NOTHING"
        ))
        .await
        .map_err(map_err)?;
    for e in events {
        let org = e.organization_id.as_str();
        let counts = e.role_counts.map(|c| Json(c.to_json()));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
            &org,
            &e.id,
            &e.event_time,
            &(e.event_type.code() as i16),
            &e.user_id.as_ref().map(UserId::as_str),
            &code(e.role),
            &code(e.old_role),
            &code(e.new_role),
            &e.is_bot,
            &e.plan_id,
            &counts,
            &e.backfilled,
            &e.server_id,
            &now,
        ];
        if tx.execute(&insert, &params).await.map_err(map_err)? == 0 {
            stored.push(false);
            continue;
        }
        stored.push(true);
        tx.execute(
            "INSERT INTO organizations (organization_id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT DO NOTHING",
            &[&org, &e.event_time],
        )
        .await
        .map_err(map_err)?;
        if let (Some(user), true) = (&e.user_id, e.event_type.is_user_event()) {
            if !live_counts.contains_key(org) {
                tx.execute("SELECT pg_advisory_xact_lock(hashtext('audit:' || $1))", &[&org]).await.map_err(map_err)?;
                let loaded = user_counts(tx, org).await?;
                live_counts.insert(org.to_owned(), loaded);
            }
            let counts = live_counts.get_mut(org).expect("loaded above");
            let before = user_seat(tx, org, user.as_str()).await?;
            let after = user_after(before, e);
            before.into_iter().for_each(|b| counts.remove(b));
            if let Some(a) = after {
                counts.add(a);
                tx.execute(
                    "INSERT INTO users (organization_id, user_id, username, role, is_bot, is_active, date_joined) \
                     VALUES ($1, $2, $2, $3, $4, $5, $6) ON CONFLICT (organization_id, user_id) DO UPDATE SET \
                     role = excluded.role, is_bot = excluded.is_bot, is_active = excluded.is_active",
                    &[&org, &user.as_str(), &(a.role.code() as i16), &a.is_bot, &a.is_active, &e.event_time],
                )
                .await
                .map_err(map_err)?;
            }
            if e.role_counts.is_none() {
                tx.execute(
                    "UPDATE audit_events SET role_counts = $3 WHERE organization_id = $1 AND audit_id = $2",
                    &[&org, &e.id, &Json(counts.to_json())],
                )
                .await
                .map_err(map_err)?;
            }
        }
        if let Some(active) = e.event_type.organization_active() {
            tx.execute("UPDATE organizations SET is_active = $2 WHERE organization_id = $1", &[&org, &active]).await.map_err(map_err)?;
        }
    }
    Ok(stored)
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
    let counts = conn
        .prepare(
            "SELECT audit_id, event_type, event_time, role_counts FROM audit_events \
             WHERE organization_id = $1 AND event_time <= $2 AND role_counts IS NOT NULL ORDER BY event_time DESC, audit_id DESC LIMIT 1",
        )
        .await
        .map_err(map_err)?;
    let switch = conn
        .prepare(
            "SELECT event_type FROM audit_events WHERE organization_id = $1 AND event_time <= $2 AND event_type IN (201, 202) \
             ORDER BY event_time DESC, audit_id DESC LIMIT 1",
        )
        .await
        .map_err(map_err)?;
    let mut out = Vec::with_capacity(at.len());
    for (org, t) in at {
        let (role_counts, source) = match conn.query_opt(&counts, &[&org.as_str(), t]).await.map_err(map_err)? {
            None => (None, None),
            Some(r) => (
                counts_of(r.get(3))?,
                Some(AuditSource {
                    organization_id: org.to_string(),
                    id: r.get(0),
                    event_type: i64::from(r.get::<_, i16>(1)),
                    event_time: r.get(2),
                }),
            ),
        };
        let last_switch = conn.query_opt(&switch, &[&org.as_str(), t]).await.map_err(map_err)?.map(|r| i64::from(r.get::<_, i16>(0)));
        let is_active = last_switch != Some(AuditEventType::OrganizationDeactivated.code());
        out.push(SeatSnapshot { role_counts, source, is_active });
    }
    Ok(out)
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
    let insert = tx
        .prepare(
            "INSERT INTO remote_counts (organization_id, remote_id, server_id, realm_id, property, subgroup, end_time, value) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(map_err)?;
    let mut s = Stored::default();
    for c in rows {
        let org = c.realm_id.map_or_else(|| server.organization_id.clone(), |realm| realm_organization(&server.id, realm));
        let n = tx
            .execute(&insert, &[&org.as_str(), &c.id, &server.id, &c.realm_id, &c.property, &c.subgroup, &c.end_time, &c.value])
            .await
            .map_err(map_err)?;
        if n == 1 { s.stored += 1 } else { s.duplicates += 1 }
    }
    Ok(s)
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

pub(super) async fn unprocessed_audit(conn: &Client, limit: u32) -> Result<Vec<AuditEvent>> {
    let sql =
        format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE NOT processed ORDER BY event_time, organization_id, audit_id LIMIT $1");
    conn.query(&sql, &[&i64::from(limit)]).await.map_err(map_err)?.iter().map(audit_row).collect()
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
    let insert = tx
        .prepare(&format!(
            "INSERT INTO license_ledger ({LEDGER_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (organization_id, audit_organization_id, audit_id) DO NOTHING"
        ))
        .await
        .map_err(map_err)?;
    for e in entries {
        tx.execute(
            &insert,
            &[
                &e.organization_id,
                &e.seq,
                &e.audit_organization_id,
                &e.audit_id,
                &e.event_time,
                &(e.licenses as i64),
                &(e.licenses_at_next_renewal as i64),
                &e.is_renewal,
                &now,
            ],
        )
        .await
        .map_err(|e| match map_err(e) {
            StoreError::AlreadyExists(what) => StoreError::Conflict(format!("the ledger moved on under this run: {what}")),
            other => other,
        })?;
    }
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
