//! User reports on SQLite: the compiled page query (with its count), the row loaders, and the
//! refill of each organization's billing-period figures.

use super::entities::{subscription_row, user_row};
use super::events::{aggregate_row, upsert, upsert_sql};
use super::{map_err, micros, timestamp};
use crate::periods;
use crate::report::{self, Figures, Loaded, Param, ReportKeys, ReportQuery};
use crate::sql::Dialect;
use crate::{ReportRow, Result, StoreError};
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tally_domain::rollup::{period_totals, sorted};
use tally_domain::{OrganizationId, UserId};

fn bound(params: Vec<Param>) -> Vec<Value> {
    params
        .into_iter()
        .map(|p| match p {
            Param::Text(s) => Value::Text(s),
            Param::Int(i) => Value::Integer(i),
            Param::Real(f) => Value::Real(f),
            Param::Bool(b) => Value::Integer(i64::from(b)),
            Param::Time(t) => Value::Integer(micros(t)),
        })
        .collect()
}

pub(super) fn users(conn: &Connection, q: &ReportQuery) -> Result<ReportKeys> {
    let (sql, params) = report::compile(Dialect::Sqlite, q);
    let mut stmt = conn.prepare(&sql).map_err(map_err)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(bound(params))).map_err(map_err)?;
    let mut keys = ReportKeys { count: None, users: Vec::new() };
    let first = usize::from(q.count);
    while let Some(r) = rows.next().map_err(map_err)? {
        let n = if q.count { Some(r.get(0).map_err(map_err)?) } else { None };
        keys.push(n, r.get(first).map_err(map_err)?, r.get(first + 1).map_err(map_err)?)?;
    }
    Ok(keys)
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Every row of a query that takes one JSON text parameter.
fn all<T>(conn: &Connection, sql: &str, json: &str, map: impl Fn(&rusqlite::Row<'_>) -> Result<T>) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query([json]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(map(r)?);
    }
    Ok(out)
}

fn figure(r: &rusqlite::Row<'_>) -> Result<(String, String, String, tally_domain::rollup::Aggregate)> {
    Ok((r.get(0).map_err(map_err)?, r.get(1).map_err(map_err)?, r.get(2).map_err(map_err)?, aggregate_row(r, 3)?))
}

pub(super) fn rows(conn: &Connection, keys: &[(OrganizationId, UserId)], now: Timestamp) -> Result<Vec<ReportRow>> {
    let q = report::row_queries(Dialect::Sqlite);
    let keys_json = to_json(&keys.iter().map(|(o, u)| [o.as_str(), u.as_str()]).collect::<Vec<_>>())?;
    let loaded = Loaded {
        users: all(conn, &q.users, &keys_json, user_row)?,
        organizations: all(conn, &q.organizations, &keys_json, |r| Ok((r.get(0).map_err(map_err)?, r.get(1).map_err(map_err)?)))?
            .into_iter()
            .collect(),
        subscriptions: all(conn, &q.subscriptions, &keys_json, subscription_row)?,
        recorded: all(conn, &q.recorded, &keys_json, |r| {
            Ok((r.get(0).map_err(map_err)?, (timestamp(r.get(1).map_err(map_err)?)?, timestamp(r.get(2).map_err(map_err)?)?)))
        })?
        .into_iter()
        .collect(),
    };
    let all_time: Figures = all(conn, &q.all_time, &keys_json, figure)?;
    let periods = loaded.periods(keys, now);
    let (kept, summed) = loaded.split_kept(&periods);
    let mut current: Figures = Vec::new();
    if !kept.is_empty() {
        let kept_json = to_json(&kept.iter().map(|(o, u)| [o.as_str(), u.as_str()]).collect::<Vec<_>>())?;
        current = all(conn, &q.kept, &kept_json, figure)?;
    }
    if !summed.is_empty() {
        let bounds: Vec<(&str, &str, i64, i64)> =
            summed.iter().map(|(o, u, s, e)| (o.as_str(), u.as_str(), micros(*s), micros(*e))).collect();
        current.extend(all(conn, &q.current, &to_json(&bounds)?, figure)?);
    }
    Ok(loaded.assemble(&periods, all_time, current))
}

/// Refills the kept period figures of the organizations whose billing period changed or was
/// never recorded (`org`: only that one), one transaction each (so ingestion is not held up for
/// long); returns how many.
pub(super) fn refresh_periods(conn: &mut Connection, org: Option<&str>, now: Timestamp) -> Result<u64> {
    let mut refilled = 0;
    for (candidate, _, _) in stale_periods(conn, org, now)? {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
        // Checked again under the write lock: another refresh may have done it meanwhile.
        if refresh_period(&tx, &candidate, now)? {
            refilled += 1;
        }
        tx.commit().map_err(map_err)?;
    }
    Ok(refilled)
}

/// Refills one organization's period figures inside the caller's transaction if its recorded
/// period is missing or not the expected one; whether it did.
pub(super) fn refresh_period(tx: &Transaction<'_>, org: &str, now: Timestamp) -> Result<bool> {
    match stale_periods(tx, Some(org), now)?.pop() {
        Some((_, start, end)) => refill(tx, org, timestamp(start)?, timestamp(end)?).map(|()| true),
        None => Ok(false),
    }
}

/// `periods::stale`: the organizations whose recorded period is missing or outdated, with the
/// expected one (microseconds).
fn stale_periods(conn: &Connection, org: Option<&str>, now: Timestamp) -> Result<Vec<(String, i64, i64)>> {
    let (month_start, month_end) = periods::calendar_month(now);
    let mut stmt = conn.prepare_cached(&periods::stale(Dialect::Sqlite)).map_err(map_err)?;
    let rows = stmt
        .query_map(rusqlite::params![micros(month_start), micros(month_end), org], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map_err)
}

fn refill(tx: &Transaction<'_>, org: &str, start: Timestamp, end: Timestamp) -> Result<()> {
    let mut cells = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&periods::hourly_cells(Dialect::Sqlite)).map_err(map_err)?;
        let mut rows = stmt.query(rusqlite::params![org, micros(start), micros(end)]).map_err(map_err)?;
        while let Some(r) = rows.next().map_err(map_err)? {
            let (user, usage_type): (String, String) = (r.get(0).map_err(map_err)?, r.get(1).map_err(map_err)?);
            cells.push((user, usage_type, timestamp(r.get(2).map_err(map_err)?)?, aggregate_row(r, 3)?));
        }
    }
    let totals = period_totals(cells.iter().map(|(u, t, hour, a)| (org, u.as_str(), t.as_str(), *hour, a)), |_| Some((start, end)));
    tx.execute("DELETE FROM user_usage_period WHERE organization_id = ?1", [org]).map_err(map_err)?;
    let mut insert = tx.prepare_cached(&upsert_sql("user_usage_period", &crate::sql::USER_KEYS)).map_err(map_err)?;
    for (k, a) in sorted(&totals) {
        upsert(&mut insert, &[&k.organization_id, &k.user_id, &k.usage_type], &a)?;
    }
    tx.execute(&periods::record(Dialect::Sqlite), rusqlite::params![org, micros(start), micros(end)]).map_err(map_err)?;
    Ok(())
}
