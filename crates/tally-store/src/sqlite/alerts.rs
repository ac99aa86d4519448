//! Alerts of every source, threshold rules, channels, rule states and the delivery outbox on SQLite.

use super::churn::{conditions, listed, text};
use super::entities::{col, one};
use super::{map_err, micros, timestamp};
use crate::alerting::{deliveries as outbox_rows, delivery_status, key_range, merge_totals, org_key, plan, subject_keys, window_hours};
use crate::sql::{self, Dialect};
use crate::sql::{ALERT_COLUMNS, DELIVERY_COLUMNS};
use crate::{Alert, AlertQuery, Delivery, DeliveryAttempt, DeliveryQuery, Listed, OpenAlert, Page, Result, StoreError, WindowQuery, Write};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tally_domain::OrganizationId;
use tally_domain::alerts::evaluate::{Observation, RuleState, Subject, WindowTotal, changes, transition};
use tally_domain::alerts::{AlertRule, Channel};

fn json(text: String) -> Result<serde_json::Value> {
    serde_json::from_str(&text).map_err(StoreError::corrupt)
}

fn organization(text: String) -> Result<Option<OrganizationId>> {
    if text.is_empty() { Ok(None) } else { OrganizationId::parse(text).map(Some).map_err(StoreError::corrupt) }
}

fn alert_row(r: &Row) -> Result<Alert> {
    Ok(Alert {
        id: col(r, 0)?,
        organization_id: organization(col(r, 1)?)?,
        source: col(r, 2)?,
        rule_id: col(r, 3)?,
        key: col(r, 4)?,
        user_id: col(r, 5)?,
        team_id: col(r, 6)?,
        alert_type: col(r, 7)?,
        severity: col(r, 8)?,
        status: col(r, 9)?,
        report_date: col::<Option<String>>(r, 10)?.map(|d| d.parse().map_err(StoreError::corrupt)).transpose()?,
        details: json(col(r, 11)?)?,
        opened_at: timestamp(col(r, 12)?)?,
        resolved_at: col::<Option<i64>>(r, 13)?.map(timestamp).transpose()?,
        resolution: col(r, 14)?,
        action_taken: col(r, 15)?,
    })
}

pub(super) fn alerts(conn: &Connection, q: &AlertQuery) -> Result<Listed<Alert>> {
    let (clause, values) = conditions(&[
        ("alert_id = ?", text(&q.id)),
        ("status = ?", text(&q.status)),
        ("severity = ?", text(&q.severity)),
        ("alert_type = ?", text(&q.alert_type)),
        ("source = ?", text(&q.source)),
        ("rule_id = ?", text(&q.rule_id)),
        ("organization_id = ?", text(&q.organization_id)),
        ("user_id = ?", text(&q.user_id)),
    ]);
    listed(conn, "alerts", ALERT_COLUMNS, &clause, values, "opened_at DESC, alert_id", q.page.unwrap_or(Page::all()), alert_row)
}

pub(super) fn open_alerts_of(conn: &Connection, org: &OrganizationId, source: &str) -> Result<Vec<OpenAlert>> {
    // `status = 'open'` written out, so that the partial index of open alerts answers it.
    let mut stmt = conn
        .prepare_cached(
            "SELECT alert_id, user_id, alert_type, report_date FROM alerts WHERE organization_id = ?1 AND status = 'open' AND source = ?2",
        )
        .map_err(map_err)?;
    let mut rows = stmt.query(params![org.as_str(), source]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(OpenAlert {
            id: col(r, 0)?,
            user_id: col(r, 1)?,
            alert_type: col(r, 2)?,
            report_date: col::<Option<String>>(r, 3)?.map(|d| d.parse()).transpose().map_err(StoreError::corrupt)?,
        });
    }
    Ok(out)
}

pub(super) fn resolve(conn: &mut Connection, id: &str, action: &str, now: Timestamp) -> Result<Option<Alert>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    tx.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = ?2, resolution = 'manual', action_taken = ?3 WHERE alert_id = ?1 AND status = 'open'",
        params![id, micros(now), action],
    )
    .map_err(map_err)?;
    let alert = one(&tx, &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?1"), [id], alert_row)?;
    tx.commit().map_err(map_err)?;
    Ok(alert)
}

// ---- rules and channels

fn rule_row(r: &Row) -> Result<AlertRule> {
    serde_json::from_str(&col::<String>(r, 0)?).map_err(StoreError::corrupt)
}

pub(super) fn save_rule(conn: &Connection, rule: &AlertRule, write: Write) -> Result<()> {
    let body = serde_json::to_string(rule).map_err(StoreError::corrupt)?;
    let sql = match write {
        Write::Create => "INSERT INTO alert_rules (rule_id, owner_id, body, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        Write::Replace => {
            "INSERT INTO alert_rules (rule_id, owner_id, body, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (rule_id) DO UPDATE SET owner_id = excluded.owner_id, body = excluded.body, updated_at = excluded.updated_at"
        }
    };
    let changed = conn
        .execute(sql, params![rule.id, rule.owner.as_ref().map(OrganizationId::as_str), body, micros(rule.updated_at)])
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::AlreadyExists(format!("alert rule {:?}", rule.id)));
    }
    Ok(())
}

pub(super) fn rule(conn: &Connection, id: &str) -> Result<Option<AlertRule>> {
    one(conn, "SELECT body FROM alert_rules WHERE rule_id = ?1", [id], rule_row)
}

pub(super) fn rules(conn: &Connection) -> Result<Vec<AlertRule>> {
    let mut stmt = conn.prepare_cached("SELECT body FROM alert_rules ORDER BY rule_id").map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(rule_row(r)?);
    }
    Ok(out)
}

pub(super) fn delete_rule(conn: &mut Connection, id: &str) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let existed = tx.execute("DELETE FROM alert_rules WHERE rule_id = ?1", [id]).map_err(map_err)? > 0;
    tx.execute("DELETE FROM rule_states WHERE rule_id = ?1", [id]).map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(existed)
}

pub(super) fn create_channel(conn: &Connection, channel: &Channel, secret: Option<&str>) -> Result<()> {
    let body = serde_json::to_string(channel).map_err(StoreError::corrupt)?;
    let changed = conn
        .execute(
            "INSERT INTO notification_channels (channel_id, owner_id, body, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![channel.id, channel.owner.as_ref().map(OrganizationId::as_str), body, secret, micros(channel.created_at)],
        )
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::AlreadyExists(format!("channel {:?}", channel.id)));
    }
    Ok(())
}

fn channel_row(r: &Row) -> Result<Channel> {
    serde_json::from_str(&col::<String>(r, 0)?).map_err(StoreError::corrupt)
}

pub(super) fn channel(conn: &Connection, id: &str) -> Result<Option<(Channel, Option<String>)>> {
    one(conn, "SELECT body, secret FROM notification_channels WHERE channel_id = ?1", [id], |r| Ok((channel_row(r)?, col(r, 1)?)))
}

pub(super) fn channels(conn: &Connection) -> Result<Vec<Channel>> {
    let mut stmt = conn.prepare_cached("SELECT body FROM notification_channels ORDER BY channel_id").map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(channel_row(r)?);
    }
    Ok(out)
}

pub(super) fn delete_channel(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM notification_channels WHERE channel_id = ?1", [id]).map_err(map_err)? > 0)
}

// ---- evaluation

const TOTAL_COLUMNS: &str = "usage_type, sum(count), sum(sum), sum(llm_successes), sum(llm_failures), sum(input_tokens), \
     sum(output_tokens), sum(cost_nanos), max(max), 0.0";

fn totals(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<WindowTotal>> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query(params).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(WindowTotal {
            usage_type: col(r, 0)?,
            count: col::<Option<i64>>(r, 1)?.unwrap_or(0),
            sum: col::<Option<f64>>(r, 2)?.unwrap_or(0.0),
            llm_successes: col::<Option<i64>>(r, 3)?.unwrap_or(0),
            llm_failures: col::<Option<i64>>(r, 4)?.unwrap_or(0),
            input_tokens: col::<Option<i64>>(r, 5)?.unwrap_or(0),
            output_tokens: col::<Option<i64>>(r, 6)?.unwrap_or(0),
            cost_nanos: col::<Option<i64>>(r, 7)?.unwrap_or(0),
            max: col::<Option<f64>>(r, 8)?.unwrap_or(0.0),
            latest: col::<Option<f64>>(r, 9)?.unwrap_or(0.0),
        });
    }
    Ok(out)
}

pub(super) fn window_totals(conn: &Connection, queries: &[WindowQuery]) -> Result<Vec<Vec<WindowTotal>>> {
    queries.iter().map(|q| window_total(conn, q)).collect()
}

fn window_total(conn: &Connection, q: &WindowQuery) -> Result<Vec<WindowTotal>> {
    if let Some(n) = q.last_requests {
        return last_requests(conn, &q.subject, n);
    }
    // The all scope watches the latest requests only (checked when a rule is made).
    let Some((org, user, team)) = subject_keys(&q.subject) else { return Ok(Vec::new()) };
    // A window starting inside an hour: that hour's whole cell would overcount, so it is read
    // from raw events (under an hour of one subject's events), and cells start an hour later.
    let (cells_from, edge) = window_hours(q.from);
    let mut parts = match (user, cells_from) {
        (Some(u), None) => totals(
            conn,
            "SELECT usage_type, count, sum, llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, max, last_value FROM user_usage \
             WHERE organization_id = ?1 AND user_id = ?2",
            params![org, u],
        )?,
        (Some(u), Some(from)) => totals(
            conn,
            &format!(
                "SELECT {TOTAL_COLUMNS} FROM usage_hourly WHERE organization_id = ?1 AND user_id = ?2 AND hour >= ?3 GROUP BY usage_type"
            ),
            params![org, u, micros(from)],
        )?,
        (None, from) => {
            let from = from.map_or(i64::MIN, micros);
            match team {
                Some(t) => totals(
                    conn,
                    &format!(
                        "SELECT {TOTAL_COLUMNS} FROM usage_hourly_org WHERE organization_id = ?1 AND hour >= ?2 AND team_id = ?3 GROUP BY usage_type"
                    ),
                    params![org, from, t],
                )?,
                None => totals(
                    conn,
                    &format!("SELECT {TOTAL_COLUMNS} FROM usage_hourly_org WHERE organization_id = ?1 AND hour >= ?2 GROUP BY usage_type"),
                    params![org, from],
                )?,
            }
        }
    };
    if let Some((from, to)) = edge {
        parts.extend(totals(
            conn,
            "SELECT usage_type, count(*), sum(quantity), sum(status = 'success'), sum(status = 'error'), sum(input_tokens), \
             sum(output_tokens), sum(cost_nanos), max(quantity), 0.0 FROM events WHERE organization_id = ?1 AND ts >= ?2 AND ts < ?3 \
             AND (?4 IS NULL OR user_id = ?4) AND (?5 IS NULL OR team_id = ?5) GROUP BY usage_type",
            params![org, micros(from), micros(to), user, team],
        )?);
    }
    Ok(merge_totals(parts))
}

fn last_requests(conn: &Connection, subject: &Subject, n: u32) -> Result<Vec<WindowTotal>> {
    let (sql, values) = sql::last_requests_query(Dialect::Sqlite, subject, n);
    let rows = totals(conn, &sql, rusqlite::params_from_iter(values))?;
    Ok(rows.into_iter().filter(|t| t.count > 0).collect())
}

fn state(conn: &Connection, org: &str, rule: &str, subject: &str) -> Result<Option<RuleState>> {
    conn.prepare_cached("SELECT window_start, level FROM rule_states WHERE organization_id = ?1 AND rule_id = ?2 AND subject = ?3")
        .map_err(map_err)?
        .query_row(params![org, rule, subject], |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)))
        .optional()
        .map_err(map_err)?
        .map(|(window, level)| Ok(RuleState { window_start: window.map(timestamp).transpose()?, level: level.map(|l| l as u32) }))
        .transpose()
}

pub(super) fn rule_states(conn: &Connection, keys: &[(Option<OrganizationId>, String, String)]) -> Result<Vec<Option<RuleState>>> {
    keys.iter().map(|(org, rule, subject)| state(conn, org_key(org.as_ref()), rule, subject)).collect()
}

pub(super) fn apply_observations(conn: &mut Connection, observations: &[Observation], now: Timestamp) -> Result<Vec<Alert>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let mut changed = Vec::new();
    for obs in observations {
        let org = org_key(obs.subject.organization_id());
        let subject = obs.subject.key();
        let previous = state(&tx, org, &obs.rule.id, &subject)?;
        if !changes(previous.as_ref(), obs.window_start, obs.level) {
            continue;
        }
        let open = if transition(previous.as_ref(), obs.window_start, obs.level).resolve_from.is_some() {
            open_alerts(&tx, org, &obs.key_prefix())?
        } else {
            Vec::new()
        };
        let (resolve, opened) = plan(obs, previous, &open, now);
        for id in resolve {
            let resolved = one(
                &tx,
                &format!(
                    "UPDATE alerts SET status = 'resolved', resolved_at = ?3, resolution = 'auto' \
                     WHERE organization_id = ?1 AND alert_id = ?2 AND status = 'open' RETURNING {ALERT_COLUMNS}"
                ),
                params![org, id, micros(now)],
                alert_row,
            )?;
            if let Some(alert) = resolved {
                queue(&tx, &outbox_rows(&alert, &obs.rule.channels, "alert.resolved", now))?;
                changed.push(alert);
            }
        }
        for alert in opened {
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'open', NULL, ?10, ?11, NULL, NULL, NULL) \
                     ON CONFLICT DO NOTHING"
                ))
                .map_err(map_err)?
                .execute(params![
                    alert.id,
                    org,
                    alert.source,
                    alert.rule_id,
                    alert.key,
                    alert.user_id,
                    alert.team_id,
                    alert.alert_type,
                    alert.severity,
                    alert.details.to_string(),
                    micros(alert.opened_at)
                ])
                .map_err(map_err)?;
            if inserted > 0 {
                queue(&tx, &outbox_rows(&alert, &obs.rule.channels, "alert.opened", now))?;
                changed.push(alert);
            }
        }
        tx.prepare_cached(
            "INSERT INTO rule_states (organization_id, rule_id, subject, window_start, level, value, evaluated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (organization_id, rule_id, subject) DO UPDATE SET \
             window_start = excluded.window_start, level = excluded.level, value = excluded.value, evaluated_at = excluded.evaluated_at",
        )
        .map_err(map_err)?
        .execute(params![
            org,
            obs.rule.id,
            subject,
            obs.window_start.map(micros),
            obs.level.map(i64::from),
            obs.value.to_string(),
            micros(obs.at)
        ])
        .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)?;
    Ok(changed)
}

fn open_alerts(tx: &Transaction<'_>, org: &str, prefix: &str) -> Result<Vec<(String, String)>> {
    let (start, end) = key_range(prefix);
    let mut stmt = tx
        .prepare_cached(
            "SELECT alert_id, alert_key FROM alerts WHERE organization_id = ?1 AND status = 'open' AND alert_key >= ?2 AND alert_key < ?3",
        )
        .map_err(map_err)?;
    let rows = stmt.query_map(params![org, start, end], |r| Ok((r.get(0)?, r.get(1)?))).map_err(map_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map_err)
}

fn queue(tx: &Transaction<'_>, rows: &[Delivery]) -> Result<()> {
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT INTO notification_deliveries ({DELIVERY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, '[]', ?7, ?7, NULL)"
        ))
        .map_err(map_err)?;
    for d in rows {
        insert
            .execute(params![
                d.id,
                org_key(d.organization_id.as_ref()),
                d.channel_id,
                d.alert_id,
                d.event_type,
                d.payload.to_string(),
                micros(d.created_at)
            ])
            .map_err(map_err)?;
    }
    Ok(())
}

// ---- deliveries

fn delivery_row(r: &Row) -> Result<Delivery> {
    let status: String = col(r, 6)?;
    let next: i64 = col(r, 9)?;
    Ok(Delivery {
        id: col(r, 0)?,
        organization_id: organization(col(r, 1)?)?,
        channel_id: col(r, 2)?,
        alert_id: col(r, 3)?,
        event_type: col(r, 4)?,
        payload: json(col(r, 5)?)?,
        attempts: col::<i64>(r, 7)? as u32,
        attempt_log: serde_json::from_str(&col::<String>(r, 8)?).map_err(StoreError::corrupt)?,
        next_attempt_at: if status == "pending" { Some(timestamp(next)?) } else { None },
        status,
        created_at: timestamp(col(r, 10)?)?,
        delivered_at: col::<Option<i64>>(r, 11)?.map(timestamp).transpose()?,
    })
}

pub(super) fn claim_deliveries(conn: &mut Connection, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<Delivery>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let claimed = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "UPDATE notification_deliveries SET next_attempt_at = ?3 WHERE (organization_id, delivery_id) IN \
                 (SELECT organization_id, delivery_id FROM notification_deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 \
                  ORDER BY next_attempt_at LIMIT ?2) RETURNING {DELIVERY_COLUMNS}"
            ))
            .map_err(map_err)?;
        let mut rows = stmt.query(params![micros(now), limit, micros(lease_until)]).map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(map_err)? {
            out.push(delivery_row(r)?);
        }
        out
    };
    tx.commit().map_err(map_err)?;
    Ok(claimed)
}

pub(super) fn record_attempt(
    conn: &Connection,
    d: &Delivery,
    attempt: &DeliveryAttempt,
    delivered: bool,
    retry_at: Option<Timestamp>,
) -> Result<()> {
    let status = delivery_status(delivered, retry_at);
    let entry = serde_json::to_string(attempt).map_err(StoreError::corrupt)?;
    // Only the claim this worker holds moves: the attempt count it saw must still be there.
    conn.execute(
        "UPDATE notification_deliveries SET attempts = attempts + 1, attempt_log = json_insert(attempt_log, '$[#]', json(?3)), \
         status = ?4, next_attempt_at = coalesce(?5, next_attempt_at), delivered_at = ?6 \
         WHERE organization_id = ?1 AND delivery_id = ?2 AND status = 'pending' AND attempts = ?7",
        params![
            org_key(d.organization_id.as_ref()),
            d.id,
            entry,
            status,
            retry_at.map(micros),
            delivered.then(|| micros(attempt.at)),
            i64::from(d.attempts)
        ],
    )
    .map_err(map_err)?;
    Ok(())
}

pub(super) fn deliveries(conn: &Connection, q: &DeliveryQuery) -> Result<Listed<Delivery>> {
    let (clause, values) = conditions(&[
        ("organization_id = ?", text(&q.organization_id)),
        ("status = ?", text(&q.status)),
        ("channel_id = ?", text(&q.channel_id)),
        ("alert_id = ?", text(&q.alert_id)),
    ]);
    listed(
        conn,
        "notification_deliveries",
        DELIVERY_COLUMNS,
        &clause,
        values,
        "created_at DESC, delivery_id",
        q.page.unwrap_or(Page::all()),
        delivery_row,
    )
}
