//! Alerts of every source, threshold rules, channels, rule states and the delivery outbox on
//! PostgreSQL.

use super::churn::{Param, conditions, listed, text};
use super::map_err;
use crate::alerting::{deliveries as outbox_rows, delivery_status, key_range, merge_totals, org_key, plan, subject_keys, window_hours};
use crate::sql::{self, Dialect};
use crate::sql::{ALERT_COLUMNS, DELIVERY_COLUMNS};
use crate::{Alert, AlertQuery, Delivery, DeliveryAttempt, DeliveryQuery, Listed, OpenAlert, Page, Result, StoreError, WindowQuery, Write};
use jiff::Timestamp;
use tally_domain::OrganizationId;
use tally_domain::alerts::evaluate::{Observation, RuleState, Subject, WindowTotal, changes, transition};
use tally_domain::alerts::{AlertRule, Channel};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Client, GenericClient, Row};

fn organization(text: String) -> Result<Option<OrganizationId>> {
    if text.is_empty() { Ok(None) } else { OrganizationId::parse(text).map(Some).map_err(StoreError::corrupt) }
}

fn alert_row(r: &Row) -> Result<Alert> {
    Ok(Alert {
        id: r.get(0),
        organization_id: organization(r.get(1))?,
        source: r.get(2),
        rule_id: r.get(3),
        key: r.get(4),
        user_id: r.get(5),
        team_id: r.get(6),
        alert_type: r.get(7),
        severity: r.get(8),
        status: r.get(9),
        report_date: r.get(10),
        details: r.get::<_, Json<serde_json::Value>>(11).0,
        opened_at: r.get(12),
        resolved_at: r.get(13),
        resolution: r.get(14),
        action_taken: r.get(15),
    })
}

pub(super) async fn alerts(conn: &Client, q: &AlertQuery) -> Result<Listed<Alert>> {
    let (clause, values) = conditions(vec![
        ("alert_id = ?", text(&q.id)),
        ("status = ?", text(&q.status)),
        ("severity = ?", text(&q.severity)),
        ("alert_type = ?", text(&q.alert_type)),
        ("source = ?", text(&q.source)),
        ("rule_id = ?", text(&q.rule_id)),
        ("organization_id = ?", text(&q.organization_id)),
        ("user_id = ?", text(&q.user_id)),
    ]);
    listed(conn, "alerts", ALERT_COLUMNS, &clause, &values, "opened_at DESC, alert_id", q.page.unwrap_or(Page::all()), alert_row).await
}

pub(super) async fn open_alerts_of(conn: &Client, org: &OrganizationId, source: &str) -> Result<Vec<OpenAlert>> {
    // `status = 'open'` written out, so that the partial index of open alerts answers it.
    let rows = conn
        .query(
            "SELECT alert_id, user_id, alert_type, report_date FROM alerts WHERE organization_id = $1 AND status = 'open' AND source = $2",
            &[&org.as_str(), &source],
        )
        .await
        .map_err(map_err)?;
    Ok(rows.iter().map(|r| OpenAlert { id: r.get(0), user_id: r.get(1), alert_type: r.get(2), report_date: r.get(3) }).collect())
}

pub(super) async fn resolve(conn: &Client, id: &str, action: &str, now: Timestamp) -> Result<Option<Alert>> {
    conn.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = $2, resolution = 'manual', action_taken = $3 WHERE alert_id = $1 AND status = 'open'",
        &[&id, &now, &action],
    )
    .await
    .map_err(map_err)?;
    let row = conn.query_opt(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1"), &[&id]).await.map_err(map_err)?;
    row.as_ref().map(alert_row).transpose()
}

// ---- rules and channels

fn rule_row(r: &Row) -> Result<AlertRule> {
    serde_json::from_value(r.get::<_, Json<serde_json::Value>>(0).0).map_err(StoreError::corrupt)
}

pub(super) async fn save_rule(conn: &Client, rule: &AlertRule, write: Write) -> Result<()> {
    let body = serde_json::to_value(rule).map_err(StoreError::corrupt)?;
    let sql = match write {
        Write::Create => "INSERT INTO alert_rules (rule_id, owner_id, body, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        Write::Replace => {
            "INSERT INTO alert_rules (rule_id, owner_id, body, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rule_id) DO UPDATE SET owner_id = excluded.owner_id, body = excluded.body, updated_at = excluded.updated_at"
        }
    };
    let changed = conn
        .execute(sql, &[&rule.id, &rule.owner.as_ref().map(OrganizationId::as_str), &Json(&body), &rule.updated_at])
        .await
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::AlreadyExists(format!("alert rule {:?}", rule.id)));
    }
    Ok(())
}

pub(super) async fn rule(conn: &Client, id: &str) -> Result<Option<AlertRule>> {
    conn.query_opt("SELECT body FROM alert_rules WHERE rule_id = $1", &[&id]).await.map_err(map_err)?.as_ref().map(rule_row).transpose()
}

pub(super) async fn rules(conn: &Client) -> Result<Vec<AlertRule>> {
    conn.query("SELECT body FROM alert_rules ORDER BY rule_id", &[]).await.map_err(map_err)?.iter().map(rule_row).collect()
}

pub(super) async fn delete_rule(conn: &mut Client, id: &str) -> Result<bool> {
    let tx = conn.transaction().await.map_err(map_err)?;
    let existed = tx.execute("DELETE FROM alert_rules WHERE rule_id = $1", &[&id]).await.map_err(map_err)? > 0;
    tx.execute("DELETE FROM rule_states WHERE rule_id = $1", &[&id]).await.map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(existed)
}

pub(super) async fn create_channel(conn: &Client, channel: &Channel, secret: Option<&str>) -> Result<()> {
    let body = serde_json::to_value(channel).map_err(StoreError::corrupt)?;
    let changed = conn
        .execute(
            "INSERT INTO notification_channels (channel_id, owner_id, body, secret, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&channel.id, &channel.owner.as_ref().map(OrganizationId::as_str), &Json(&body), &secret, &channel.created_at],
        )
        .await
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::AlreadyExists(format!("channel {:?}", channel.id)));
    }
    Ok(())
}

fn channel_row(r: &Row) -> Result<Channel> {
    serde_json::from_value(r.get::<_, Json<serde_json::Value>>(0).0).map_err(StoreError::corrupt)
}

pub(super) async fn channel(conn: &Client, id: &str) -> Result<Option<(Channel, Option<String>)>> {
    let row = conn.query_opt("SELECT body, secret FROM notification_channels WHERE channel_id = $1", &[&id]).await.map_err(map_err)?;
    row.map(|r| Ok((channel_row(&r)?, r.get(1)))).transpose()
}

pub(super) async fn channels(conn: &Client) -> Result<Vec<Channel>> {
    conn.query("SELECT body FROM notification_channels ORDER BY channel_id", &[]).await.map_err(map_err)?.iter().map(channel_row).collect()
}

pub(super) async fn delete_channel(conn: &Client, id: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM notification_channels WHERE channel_id = $1", &[&id]).await.map_err(map_err)? > 0)
}

// ---- evaluation

const TOTAL_COLUMNS: &str = "usage_type, sum(count)::int8, sum(sum), sum(llm_successes)::int8, sum(llm_failures)::int8, \
     sum(input_tokens)::int8, sum(output_tokens)::int8, sum(cost_nanos)::int8, max(max), 0::float8";

/// A usage type's totals from the eight columns starting at `first`.
fn total_row(r: &Row, first: usize) -> WindowTotal {
    let int = |i: usize| r.get::<_, Option<i64>>(first + i).unwrap_or(0);
    WindowTotal {
        usage_type: r.get(first),
        count: int(1),
        sum: r.get::<_, Option<f64>>(first + 2).unwrap_or(0.0),
        llm_successes: int(3),
        llm_failures: int(4),
        input_tokens: int(5),
        output_tokens: int(6),
        cost_nanos: int(7),
        max: r.get::<_, Option<f64>>(first + 8).unwrap_or(0.0),
        latest: r.get::<_, Option<f64>>(first + 9).unwrap_or(0.0),
    }
}

async fn totals(conn: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<WindowTotal>> {
    let rows = conn.query(sql, params).await.map_err(map_err)?;
    Ok(rows.iter().map(|r| total_row(r, 0)).collect())
}

/// One statement per kind of window, each answering every query of its kind through a lateral
/// index probe; only windows that start inside an hour and "the latest N requests" go one by one.
pub(super) async fn window_totals(conn: &Client, queries: &[WindowQuery]) -> Result<Vec<Vec<WindowTotal>>> {
    let mut out = vec![Vec::new(); queries.len()];
    // (query index, organization, user or team, whole-hour start)
    let (mut all_time, mut user_hours, mut org_hours) = (Vec::new(), Vec::new(), Vec::new());
    for (i, q) in queries.iter().enumerate() {
        if let Some(n) = q.last_requests {
            out[i] = last_requests(conn, &q.subject, n).await?;
            continue;
        }
        let Some((org, user, team)) = subject_keys(&q.subject) else { continue };
        // As on SQLite: a window starting inside an hour reads that hour from raw events.
        let (cells_from, partial) = window_hours(q.from);
        if let Some((from, to)) = partial {
            out[i] = edge(conn, org, user, team, from, to).await?;
        }
        let index = i as i64;
        match (user, cells_from) {
            (Some(u), None) => all_time.push((index, org, u)),
            (Some(u), Some(from)) => user_hours.push((index, org, u, from)),
            // All time starts where events may: PostgreSQL's timestamps do not reach `Timestamp::MIN`.
            (None, from) => org_hours.push((index, org, team, from.unwrap_or(tally_domain::event::EARLIEST))),
        }
    }
    let mut add = |rows: Vec<Row>| {
        for r in rows {
            out[r.get::<_, i64>(0) as usize].push(total_row(&r, 1));
        }
    };
    if !all_time.is_empty() {
        let (ids, orgs, users): (Vec<i64>, Vec<&str>, Vec<&str>) = unzip3(all_time.iter().map(|(i, o, u)| (*i, *o, *u)));
        add(conn
            .query(
                "SELECT q.i, t.usage_type, t.count, t.sum, t.llm_successes, t.llm_failures, t.input_tokens, t.output_tokens, t.cost_nanos, \
                 t.max, t.last_value \
                 FROM unnest($1::int8[], $2::text[], $3::text[]) AS q(i, o, u) \
                 JOIN user_usage t ON t.organization_id = q.o AND t.user_id = q.u",
                &[&ids, &orgs, &users],
            )
            .await
            .map_err(map_err)?);
    }
    if !user_hours.is_empty() {
        let (ids, orgs, users): (Vec<i64>, Vec<&str>, Vec<&str>) = unzip3(user_hours.iter().map(|(i, o, u, _)| (*i, *o, *u)));
        let froms: Vec<Timestamp> = user_hours.iter().map(|q| q.3).collect();
        add(conn
            .query(
                &format!(
                    "SELECT q.i, t.* FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[]) AS q(i, o, u, f) \
                     CROSS JOIN LATERAL (SELECT {TOTAL_COLUMNS} FROM usage_hourly \
                         WHERE organization_id = q.o AND user_id = q.u AND hour >= q.f GROUP BY usage_type) t"
                ),
                &[&ids, &orgs, &users, &froms],
            )
            .await
            .map_err(map_err)?);
    }
    if !org_hours.is_empty() {
        let (ids, orgs, teams): (Vec<i64>, Vec<&str>, Vec<Option<&str>>) = unzip3(org_hours.iter().map(|(i, o, t, _)| (*i, *o, *t)));
        let froms: Vec<Timestamp> = org_hours.iter().map(|q| q.3).collect();
        add(conn
            .query(
                &format!(
                    "SELECT q.i, t.* FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[]) AS q(i, o, tm, f) \
                     CROSS JOIN LATERAL (SELECT {TOTAL_COLUMNS} FROM usage_hourly_org \
                         WHERE organization_id = q.o AND hour >= q.f AND (q.tm IS NULL OR team_id = q.tm) GROUP BY usage_type) t"
                ),
                &[&ids, &orgs, &teams, &froms],
            )
            .await
            .map_err(map_err)?);
    }
    Ok(out.into_iter().map(merge_totals).collect())
}

fn unzip3<A, B, C>(items: impl Iterator<Item = (A, B, C)>) -> (Vec<A>, Vec<B>, Vec<C>) {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (x, y, z) in items {
        a.push(x);
        b.push(y);
        c.push(z);
    }
    (a, b, c)
}

/// The totals of a partial hour, from raw events.
async fn edge(
    conn: &Client,
    org: &str,
    user: Option<&str>,
    team: Option<&str>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<WindowTotal>> {
    totals(
        conn,
        "SELECT usage_type, count(*), sum(quantity), count(*) FILTER (WHERE status = 'success'), \
         count(*) FILTER (WHERE status = 'error'), sum(input_tokens)::int8, sum(output_tokens)::int8, sum(cost_nanos)::int8, \
         max(quantity), 0::float8 FROM events WHERE organization_id = $1 AND ts >= $2 AND ts < $3 \
         AND ($4::text IS NULL OR user_id = $4) AND ($5::text IS NULL OR team_id = $5) GROUP BY usage_type",
        &[&org, &from, &to, &user, &team],
    )
    .await
}

async fn last_requests(conn: &Client, subject: &Subject, n: u32) -> Result<Vec<WindowTotal>> {
    let (sql, values) = sql::last_requests_query(Dialect::Postgres, subject, n);
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let rows = totals(conn, &sql, &params).await?;
    Ok(rows.into_iter().filter(|t| t.count > 0).collect())
}

async fn state(conn: &impl GenericClient, org: &str, rule: &str, subject: &str, lock: bool) -> Result<Option<RuleState>> {
    let sql = format!(
        "SELECT window_start, level FROM rule_states WHERE organization_id = $1 AND rule_id = $2 AND subject = $3{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = conn.query_opt(&sql, &[&org, &rule, &subject]).await.map_err(map_err)?;
    Ok(row.map(|r| RuleState { window_start: r.get(0), level: r.get::<_, Option<i64>>(1).map(|l| l as u32) }))
}

pub(super) async fn rule_states(conn: &Client, keys: &[(Option<OrganizationId>, String, String)]) -> Result<Vec<Option<RuleState>>> {
    let orgs: Vec<&str> = keys.iter().map(|k| org_key(k.0.as_ref())).collect();
    let rules: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let subjects: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
    let rows = conn
        .query(
            "SELECT q.i, s.window_start, s.level FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(o, r, s, i) \
             JOIN rule_states s ON s.organization_id = q.o AND s.rule_id = q.r AND s.subject = q.s",
            &[&orgs, &rules, &subjects],
        )
        .await
        .map_err(map_err)?;
    let mut out = vec![None; keys.len()];
    for r in rows {
        out[r.get::<_, i64>(0) as usize - 1] =
            Some(RuleState { window_start: r.get(1), level: r.get::<_, Option<i64>>(2).map(|l| l as u32) });
    }
    Ok(out)
}

pub(super) async fn apply_observations(conn: &mut Client, observations: &[Observation], now: Timestamp) -> Result<Vec<Alert>> {
    let tx = conn.transaction().await.map_err(map_err)?;
    let mut changed = Vec::new();
    for obs in observations {
        let org = org_key(obs.subject.organization_id());
        let subject = obs.subject.key();
        // The row lock orders two processes evaluating the same rule and subject.
        let previous = state(&tx, org, &obs.rule.id, &subject, true).await?;
        if !changes(previous.as_ref(), obs.window_start, obs.level) {
            continue;
        }
        let open = if transition(previous.as_ref(), obs.window_start, obs.level).resolve_from.is_some() {
            let (start, end) = key_range(&obs.key_prefix());
            tx.query(
                "SELECT alert_id, alert_key FROM alerts WHERE organization_id = $1 AND status = 'open' AND alert_key >= $2 AND alert_key < $3",
                &[&org, &start, &end],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        } else {
            Vec::new()
        };
        let (resolve, opened) = plan(obs, previous, &open, now);
        for id in resolve {
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE alerts SET status = 'resolved', resolved_at = $3, resolution = 'auto' \
                         WHERE organization_id = $1 AND alert_id = $2 AND status = 'open' RETURNING {ALERT_COLUMNS}"
                    ),
                    &[&org, &id, &now],
                )
                .await
                .map_err(map_err)?;
            if let Some(alert) = row.as_ref().map(alert_row).transpose()? {
                queue(&tx, &outbox_rows(&alert, &obs.rule.channels, "alert.resolved", now)).await?;
                changed.push(alert);
            }
        }
        for alert in opened {
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', NULL, $10, $11, NULL, NULL, NULL) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &alert.id,
                        &org,
                        &alert.source,
                        &alert.rule_id,
                        &alert.key,
                        &alert.user_id,
                        &alert.team_id,
                        &alert.alert_type,
                        &alert.severity,
                        &Json(&alert.details),
                        &alert.opened_at,
                    ],
                )
                .await
                .map_err(map_err)?;
            if inserted > 0 {
                queue(&tx, &outbox_rows(&alert, &obs.rule.channels, "alert.opened", now)).await?;
                changed.push(alert);
            }
        }
        tx.execute(
            "INSERT INTO rule_states (organization_id, rule_id, subject, window_start, level, value, evaluated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (organization_id, rule_id, subject) DO UPDATE SET \
             window_start = excluded.window_start, level = excluded.level, value = excluded.value, evaluated_at = excluded.evaluated_at",
            &[&org, &obs.rule.id, &subject, &obs.window_start, &obs.level.map(i64::from), &obs.value.to_string(), &obs.at],
        )
        .await
        .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(changed)
}

async fn queue(tx: &impl GenericClient, rows: &[Delivery]) -> Result<()> {
    for d in rows {
        tx.execute(
            &format!(
                "INSERT INTO notification_deliveries ({DELIVERY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, '[]'::jsonb, $7, $7, NULL)"
            ),
            &[&d.id, &org_key(d.organization_id.as_ref()), &d.channel_id, &d.alert_id, &d.event_type, &Json(&d.payload), &d.created_at],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

// ---- deliveries

fn delivery_row(r: &Row) -> Result<Delivery> {
    let status: String = r.get(6);
    Ok(Delivery {
        id: r.get(0),
        organization_id: organization(r.get(1))?,
        channel_id: r.get(2),
        alert_id: r.get(3),
        event_type: r.get(4),
        payload: r.get::<_, Json<serde_json::Value>>(5).0,
        attempts: r.get::<_, i64>(7) as u32,
        attempt_log: serde_json::from_value(r.get::<_, Json<serde_json::Value>>(8).0).map_err(StoreError::corrupt)?,
        next_attempt_at: if status == "pending" { Some(r.get(9)) } else { None },
        status,
        created_at: r.get(10),
        delivered_at: r.get(11),
    })
}

pub(super) async fn claim_deliveries(conn: &Client, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<Delivery>> {
    // SKIP LOCKED: workers in other processes claim other rows instead of waiting.
    let rows = conn
        .query(
            &format!(
                "UPDATE notification_deliveries d SET next_attempt_at = $3 FROM \
                 (SELECT organization_id, delivery_id FROM notification_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
                  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due \
                 WHERE d.organization_id = due.organization_id AND d.delivery_id = due.delivery_id RETURNING {}",
                DELIVERY_COLUMNS.split(", ").map(|c| format!("d.{}", c.trim())).collect::<Vec<_>>().join(", ")
            ),
            &[&now, &i64::from(limit), &lease_until],
        )
        .await
        .map_err(map_err)?;
    rows.iter().map(delivery_row).collect()
}

pub(super) async fn record_attempt(
    conn: &Client,
    d: &Delivery,
    attempt: &DeliveryAttempt,
    delivered: bool,
    retry_at: Option<Timestamp>,
) -> Result<()> {
    let status = delivery_status(delivered, retry_at);
    let entry = serde_json::to_value(attempt).map_err(StoreError::corrupt)?;
    conn.execute(
        "UPDATE notification_deliveries SET attempts = attempts + 1, attempt_log = attempt_log || jsonb_build_array($3::jsonb), \
         status = $4, next_attempt_at = coalesce($5, next_attempt_at), delivered_at = $6 \
         WHERE organization_id = $1 AND delivery_id = $2 AND status = 'pending' AND attempts = $7",
        &[
            &org_key(d.organization_id.as_ref()),
            &d.id,
            &Json(&entry),
            &status,
            &retry_at,
            &delivered.then_some(attempt.at),
            &i64::from(d.attempts),
        ],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn deliveries(conn: &Client, q: &DeliveryQuery) -> Result<Listed<Delivery>> {
    let (clause, values): (String, Vec<Param>) = conditions(vec![
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
        &values,
        "created_at DESC, delivery_id",
        q.page.unwrap_or(Page::all()),
        delivery_row,
    )
    .await
}
