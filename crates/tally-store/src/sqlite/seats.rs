//! Audit events, seat snapshots, self-hosted servers' pushes and the license ledger on SQLite.

use super::entities::{col, listed, one};
use super::jobs::run;
use super::{map_err, micros, timestamp};
use crate::sql::{AUDIT_COLUMNS, LEDGER_COLUMNS, SERVER_COLUMNS};
use crate::{AuditSource, JobRun, Listed, Page, PushOutcome, Result, SeatSnapshot, Server, StoreError, Stored, Write};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use std::collections::HashMap;
use tally_domain::seats::audit::{AuditEvent, AuditEventType, user_after};
use tally_domain::seats::ledger::LedgerEntry;
use tally_domain::seats::remote::{RemotePush, realm_organization};
use tally_domain::seats::{RoleCounts, UserSeat};
use tally_domain::{OrganizationId, Role, UserId};

fn counts_json(counts: Option<&RoleCounts>) -> Option<String> {
    counts.map(|c| c.to_json().to_string())
}

fn counts_of(text: Option<String>) -> Result<Option<RoleCounts>> {
    text.map(|t| serde_json::from_str(&t).map_err(StoreError::corrupt).and_then(|v| RoleCounts::from_json(&v).map_err(StoreError::corrupt)))
        .transpose()
}

fn role_of(code: Option<i64>) -> Result<Option<Role>> {
    code.map(|c| Role::try_from(c).map_err(StoreError::corrupt)).transpose()
}

fn audit_row(r: &Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        organization_id: OrganizationId::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?,
        id: col(r, 1)?,
        event_time: timestamp(col(r, 2)?)?,
        event_type: AuditEventType::from_code(col(r, 3)?).map_err(StoreError::corrupt)?,
        user_id: col::<Option<String>>(r, 4)?.map(UserId::parse).transpose().map_err(StoreError::corrupt)?,
        role: role_of(col(r, 5)?)?,
        old_role: role_of(col(r, 6)?)?,
        new_role: role_of(col(r, 7)?)?,
        is_bot: col(r, 8)?,
        plan_id: col(r, 9)?,
        role_counts: counts_of(col(r, 10)?)?,
        backfilled: col(r, 11)?,
        server_id: col(r, 12)?,
    })
}

/// Active users of an organization by role, from Tally's user table.
fn user_counts(tx: &Connection, org: &str) -> Result<RoleCounts> {
    let mut stmt = tx
        .prepare_cached("SELECT role, is_bot, count(*) FROM users WHERE organization_id = ?1 AND is_active = 1 GROUP BY role, is_bot")
        .map_err(map_err)?;
    let mut rows = stmt.query([org]).map_err(map_err)?;
    let (mut humans, mut bots) = (Vec::new(), 0);
    while let Some(r) = rows.next().map_err(map_err)? {
        let n: i64 = col(r, 2)?;
        match col::<bool>(r, 1)? {
            true => bots += n as u64,
            false => humans.extend(Role::from_code(col(r, 0)?).map(|role| (role, n as u64))),
        }
    }
    Ok(RoleCounts::new(humans, bots))
}

fn user_seat(tx: &Connection, org: &str, user: &str) -> Result<Option<UserSeat>> {
    one(tx, "SELECT role, is_bot, is_active FROM users WHERE organization_id = ?1 AND user_id = ?2", params![org, user], |r| {
        Ok(UserSeat { role: Role::try_from(col::<i64>(r, 0)?).map_err(StoreError::corrupt)?, is_bot: col(r, 1)?, is_active: col(r, 2)? })
    })
}

/// Stores audit events inside the caller's transaction; see `Store::record_audit_events`.
fn insert_audit(tx: &Transaction<'_>, events: &[AuditEvent], now: Timestamp) -> Result<Vec<bool>> {
    let mut live_counts: HashMap<String, RoleCounts> = HashMap::new();
    let mut stored = Vec::with_capacity(events.len());
    let mut exists = tx.prepare_cached("SELECT 1 FROM audit_events WHERE organization_id = ?1 AND audit_id = ?2").map_err(map_err)?;
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))
        .map_err(map_err)?;
    let mut org_row = tx
        .prepare_cached("INSERT INTO organizations (organization_id, name, created_at) VALUES (?1, ?1, ?2) ON CONFLICT DO NOTHING")
        .map_err(map_err)?;
    for e in events {
        let org = e.organization_id.as_str();
        if exists.exists(params![org, e.id]).map_err(map_err)? {
            stored.push(false);
            continue;
        }
        org_row.execute(params![org, micros(e.event_time)]).map_err(map_err)?;
        let mut role_counts = e.role_counts;
        if let (Some(user), true) = (&e.user_id, e.event_type.is_user_event()) {
            let before = user_seat(tx, org, user.as_str())?;
            let after = user_after(before, e);
            let counts = match live_counts.get_mut(org) {
                Some(c) => c,
                None => live_counts.entry(org.to_owned()).or_insert(user_counts(tx, org)?),
            };
            before.into_iter().for_each(|b| counts.remove(b));
            if let Some(a) = after {
                counts.add(a);
                tx.execute(
                    "INSERT INTO users (organization_id, user_id, username, role, is_bot, is_active, date_joined) \
                     VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (organization_id, user_id) DO UPDATE SET \
                     role = excluded.role, is_bot = excluded.is_bot, is_active = excluded.is_active",
                    params![org, user.as_str(), a.role.code(), a.is_bot, a.is_active, micros(e.event_time)],
                )
                .map_err(map_err)?;
            }
            role_counts = role_counts.or(Some(*counts));
        }
        if let Some(active) = e.event_type.organization_active() {
            tx.execute("UPDATE organizations SET is_active = ?2 WHERE organization_id = ?1", params![org, active]).map_err(map_err)?;
        }
        insert
            .execute(params![
                org,
                e.id,
                micros(e.event_time),
                e.event_type.code(),
                e.user_id.as_ref().map(UserId::as_str),
                e.role.map(Role::code),
                e.old_role.map(Role::code),
                e.new_role.map(Role::code),
                e.is_bot,
                e.plan_id,
                counts_json(role_counts.as_ref()),
                e.backfilled,
                e.server_id,
                micros(now),
            ])
            .map_err(map_err)?;
        stored.push(true);
    }
    Ok(stored)
}

pub(super) fn record_audit(conn: &mut Connection, events: &[AuditEvent], now: Timestamp) -> Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let stored = insert_audit(&tx, events, now)?;
    tx.commit().map_err(map_err)?;
    Ok(stored)
}

pub(super) fn audit_events(conn: &Connection, org: &OrganizationId, page: Page) -> Result<Listed<AuditEvent>> {
    listed(
        conn,
        "SELECT count(*) FROM audit_events WHERE organization_id = ?1",
        &format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE organization_id = ?1 ORDER BY event_time DESC, audit_id DESC"),
        [org.as_str()],
        page,
        audit_row,
    )
}

pub(super) fn seat_snapshots(conn: &Connection, at: &[(OrganizationId, Timestamp)]) -> Result<Vec<SeatSnapshot>> {
    let mut counts = conn
        .prepare_cached(
            "SELECT audit_id, event_type, event_time, role_counts FROM audit_events \
             WHERE organization_id = ?1 AND event_time <= ?2 AND role_counts IS NOT NULL ORDER BY event_time DESC, audit_id DESC LIMIT 1",
        )
        .map_err(map_err)?;
    let mut switch = conn
        .prepare_cached(
            "SELECT event_type FROM audit_events WHERE organization_id = ?1 AND event_time <= ?2 AND event_type IN (201, 202) \
             ORDER BY event_time DESC, audit_id DESC LIMIT 1",
        )
        .map_err(map_err)?;
    let mut out = Vec::with_capacity(at.len());
    for (org, t) in at {
        let latest = counts
            .query_row(params![org.as_str(), micros(*t)], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .map_err(map_err)?;
        let (role_counts, source) = match latest {
            None => (None, None),
            Some((id, event_type, event_time, text)) => (
                counts_of(text)?,
                Some(AuditSource { organization_id: org.to_string(), id, event_type, event_time: timestamp(event_time)? }),
            ),
        };
        let last_switch: Option<i64> = switch.query_row(params![org.as_str(), micros(*t)], |r| r.get(0)).optional().map_err(map_err)?;
        let is_active = last_switch != Some(AuditEventType::OrganizationDeactivated.code());
        out.push(SeatSnapshot { role_counts, source, is_active });
    }
    Ok(out)
}

// ---- servers

fn server_row(r: &Row) -> Result<Server> {
    Ok(Server {
        id: col(r, 0)?,
        organization_id: OrganizationId::parse(col::<String>(r, 1)?).map_err(StoreError::corrupt)?,
        hostname: col(r, 2)?,
        contact_email: col(r, 3)?,
        key_id: col(r, 4)?,
        created_at: timestamp(col(r, 5)?)?,
        last_push_at: col::<Option<i64>>(r, 6)?.map(timestamp).transpose()?,
        last_audit_log_id: col(r, 7)?,
        last_realm_count_id: col(r, 8)?,
        last_installation_count_id: col(r, 9)?,
    })
}

pub(super) fn save_server(conn: &mut Connection, s: &Server, write: Write) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    tx.execute(
        "INSERT INTO organizations (organization_id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![s.organization_id.as_str(), s.hostname, micros(s.created_at)],
    )
    .map_err(map_err)?;
    let insert =
        "INSERT INTO servers (server_id, organization_id, hostname, contact_email, key_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    let sql = match write {
        Write::Create => format!("{insert} ON CONFLICT DO NOTHING"),
        Write::Replace => format!(
            "{insert} ON CONFLICT (server_id) DO UPDATE SET organization_id = excluded.organization_id, hostname = excluded.hostname, \
             contact_email = excluded.contact_email, key_id = excluded.key_id"
        ),
    };
    let changed = tx
        .execute(&sql, params![s.id, s.organization_id.as_str(), s.hostname, s.contact_email, s.key_id, micros(s.created_at)])
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::AlreadyExists(format!("server {}", s.id)));
    }
    tx.commit().map_err(map_err)
}

pub(super) fn server(conn: &Connection, id: &str) -> Result<Option<Server>> {
    one(conn, &format!("SELECT {SERVER_COLUMNS} FROM servers WHERE server_id = ?1"), [id], server_row)
}

pub(super) fn servers(conn: &Connection) -> Result<Vec<Server>> {
    Ok(listed(
        conn,
        "SELECT count(*) FROM servers",
        &format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY created_at, server_id"),
        [],
        Page::all(),
        server_row,
    )?
    .results)
}

pub(super) fn server_realms(conn: &Connection, server_id: &str) -> Result<Vec<OrganizationId>> {
    let mut stmt =
        conn.prepare_cached("SELECT organization_id FROM remote_realms WHERE server_id = ?1 ORDER BY remote_id").map_err(map_err)?;
    let mut rows = stmt.query([server_id]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(OrganizationId::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?);
    }
    Ok(out)
}

pub(super) fn realm_server(conn: &Connection, org: &OrganizationId) -> Result<Option<String>> {
    one(conn, "SELECT server_id FROM remote_realms WHERE organization_id = ?1", [org.as_str()], |r| col(r, 0))
}

pub(super) fn record_push(conn: &mut Connection, server: &Server, push: &RemotePush, now: Timestamp) -> Result<PushOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let realms = push.realm_organizations(&server.id);
    for (org, realm, described) in &realms {
        let insert = "INSERT INTO organizations (organization_id, name, is_active, created_at) VALUES (?1, ?2, ?3, ?4)";
        let org_sql = match described {
            true => format!("{insert} ON CONFLICT (organization_id) DO UPDATE SET name = excluded.name, is_active = excluded.is_active"),
            false => format!("{insert} ON CONFLICT DO NOTHING"),
        };
        tx.execute(&org_sql, params![org.as_str(), realm.name, !realm.deactivated, micros(now)]).map_err(map_err)?;
        let insert =
            "INSERT INTO remote_realms (organization_id, server_id, remote_id, uuid, name, deactivated) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        let link_sql = match described {
            true => format!(
                "{insert} ON CONFLICT (organization_id) DO UPDATE SET uuid = excluded.uuid, name = excluded.name, deactivated = excluded.deactivated"
            ),
            false => format!("{insert} ON CONFLICT DO NOTHING"),
        };
        tx.execute(&link_sql, params![org.as_str(), server.id, realm.id, realm.uuid, realm.name, realm.deactivated]).map_err(map_err)?;
    }
    let mut count_row = tx
        .prepare_cached(
            "INSERT INTO remote_counts (organization_id, remote_id, server_id, realm_id, property, subgroup, end_time, value) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )
        .map_err(map_err)?;
    let mut tally = |rows: &[tally_domain::seats::remote::RemoteCount]| -> Result<Stored> {
        let mut s = Stored::default();
        for c in rows {
            let org = c.realm_id.map_or_else(|| server.organization_id.clone(), |realm| realm_organization(&server.id, realm));
            let n = count_row
                .execute(params![org.as_str(), c.id, server.id, c.realm_id, c.property, c.subgroup, micros(c.end_time), c.value])
                .map_err(map_err)?;
            if n == 1 { s.stored += 1 } else { s.duplicates += 1 }
        }
        Ok(s)
    };
    let realm_counts = tally(&push.realm_counts)?;
    let installation_counts = tally(&push.installation_counts)?;
    drop(count_row);
    let audit = insert_audit(&tx, &push.audit_events, now)?;
    let stored_audit = audit.iter().filter(|s| **s).count() as u64;
    let max = |ids: &mut dyn Iterator<Item = i64>| ids.max();
    tx.execute(
        "UPDATE servers SET last_push_at = ?2, \
         last_audit_log_id = max(coalesce(last_audit_log_id, ?3), coalesce(?3, last_audit_log_id)), \
         last_realm_count_id = max(coalesce(last_realm_count_id, ?4), coalesce(?4, last_realm_count_id)), \
         last_installation_count_id = max(coalesce(last_installation_count_id, ?5), coalesce(?5, last_installation_count_id)) \
         WHERE server_id = ?1",
        params![
            server.id,
            micros(now),
            max(&mut push.audit_events.iter().filter_map(|e| e.id.parse::<i64>().ok())),
            max(&mut push.realm_counts.iter().map(|c| c.id)),
            max(&mut push.installation_counts.iter().map(|c| c.id)),
        ],
    )
    .map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(PushOutcome {
        format: push.format,
        realms: realms.len() as u64,
        realm_counts,
        installation_counts,
        audit_log_rows: Stored { stored: stored_audit, duplicates: audit.len() as u64 - stored_audit },
    })
}

// ---- the ledger

fn ledger_row(r: &Row) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        organization_id: col(r, 0)?,
        seq: col(r, 1)?,
        audit_organization_id: col(r, 2)?,
        audit_id: col(r, 3)?,
        event_time: timestamp(col(r, 4)?)?,
        licenses: col::<i64>(r, 5)? as u64,
        licenses_at_next_renewal: col::<i64>(r, 6)? as u64,
        is_renewal: col(r, 7)?,
    })
}

pub(super) fn unprocessed_audit(conn: &Connection, after: Option<crate::AuditKey>, limit: u32) -> Result<Vec<AuditEvent>> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE processed = 0 AND (?1 IS NULL OR (event_time, organization_id, audit_id) > (?1, ?2, ?3)) \
         ORDER BY event_time, organization_id, audit_id LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let (t, org, id) = match &after {
        Some((t, org, id)) => (Some(micros(*t)), Some(org.as_str()), Some(id.as_str())),
        None => (None, None, None),
    };
    let mut rows = stmt.query(params![t, org, id, limit]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(audit_row(r)?);
    }
    Ok(out)
}

pub(super) fn ledger(conn: &Connection, org: &OrganizationId, page: Page) -> Result<Listed<LedgerEntry>> {
    listed(
        conn,
        "SELECT count(*) FROM license_ledger WHERE organization_id = ?1",
        &format!("SELECT {LEDGER_COLUMNS} FROM license_ledger WHERE organization_id = ?1 ORDER BY seq DESC"),
        [org.as_str()],
        page,
        ledger_row,
    )
}

pub(super) fn ledger_since(conn: &Connection, org: &OrganizationId, since: Timestamp) -> Result<Vec<LedgerEntry>> {
    let sql = format!(
        "SELECT {LEDGER_COLUMNS} FROM license_ledger WHERE organization_id = ?1 AND seq >= \
         coalesce((SELECT max(seq) FROM license_ledger WHERE organization_id = ?1 AND event_time < ?2), 0) ORDER BY seq"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query(params![org.as_str(), micros(since)]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(ledger_row(r)?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn commit_ledger(
    conn: &mut Connection,
    run_id: &str,
    owner: &str,
    entries: &[LedgerEntry],
    processed: &[(OrganizationId, String)],
    lease_until: Timestamp,
    now: Timestamp,
    finished: bool,
) -> Result<JobRun> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let renewed = tx
        .execute(
            "UPDATE job_runs SET lease_until = ?3, processed = processed + ?4 WHERE run_id = ?1 AND lease_owner = ?2 AND status = 'in_progress'",
            params![run_id, owner, micros(lease_until), processed.len() as i64],
        )
        .map_err(map_err)?;
    if renewed == 0 {
        return Err(StoreError::Conflict(format!("job run {run_id} is no longer held by {owner}")));
    }
    {
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT INTO license_ledger ({LEDGER_COLUMNS}, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (organization_id, audit_organization_id, audit_id) DO NOTHING"
            ))
            .map_err(map_err)?;
        for e in entries {
            insert
                .execute(params![
                    e.organization_id,
                    e.seq,
                    e.audit_organization_id,
                    e.audit_id,
                    micros(e.event_time),
                    e.licenses as i64,
                    e.licenses_at_next_renewal as i64,
                    e.is_renewal,
                    micros(now)
                ])
                .map_err(|e| match map_err(e) {
                    StoreError::AlreadyExists(what) => StoreError::Conflict(format!("the ledger moved on under this run: {what}")),
                    other => other,
                })?;
        }
        let mut mark =
            tx.prepare_cached("UPDATE audit_events SET processed = 1 WHERE organization_id = ?1 AND audit_id = ?2").map_err(map_err)?;
        for (org, id) in processed {
            mark.execute(params![org.as_str(), id]).map_err(map_err)?;
        }
    }
    if finished {
        tx.execute("UPDATE job_runs SET status = 'completed', finished_at = ?2 WHERE run_id = ?1", params![run_id, micros(now)])
            .map_err(map_err)?;
    }
    let run = run(&tx, run_id)?;
    tx.commit().map_err(map_err)?;
    Ok(run)
}
