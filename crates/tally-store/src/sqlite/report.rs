//! User reports on SQLite: the compiled page and count queries, and the row loaders.

use super::entities::{subscription_row, user_row};
use super::events::aggregate_row;
use super::{map_err, micros};
use crate::report::{self, Figures, Loaded, Param, ReportKeys, ReportQuery};
use crate::sql::Dialect;
use crate::{ReportRow, Result, StoreError};
use jiff::Timestamp;
use rusqlite::Connection;
use rusqlite::types::Value;
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
    let ((page_sql, page_params), count) = report::compile(Dialect::Sqlite, q);
    let mut stmt = conn.prepare(&page_sql).map_err(map_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(bound(page_params)), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(map_err)?;
    let mut users = Vec::new();
    for row in rows {
        let (o, u) = row.map_err(map_err)?;
        users.push((OrganizationId::parse(o).map_err(StoreError::corrupt)?, UserId::parse(u).map_err(StoreError::corrupt)?));
    }
    let count = match count {
        Some((sql, params)) => {
            let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(bound(params)), |r| r.get(0)).map_err(map_err)?;
            Some(n as u64)
        }
        None => None,
    };
    Ok(ReportKeys { count, users })
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
    };
    let all_time: Figures = all(conn, &q.all_time, &keys_json, figure)?;
    let periods = loaded.periods(keys, now);
    let bounds: Vec<(&str, &str, i64, i64)> = periods.iter().map(|(o, u, s, e)| (o.as_str(), u.as_str(), micros(*s), micros(*e))).collect();
    let current: Figures = all(conn, &q.current, &to_json(&bounds)?, figure)?;
    Ok(loaded.assemble(&periods, all_time, current))
}
