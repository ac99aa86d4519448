//! User reports on PostgreSQL: the compiled page query (with its count), the row loaders, and the
//! refill of each organization's billing-period figures.

use super::entities::{subscription_row, user_row};
use super::events::{AggArrays, aggregate_row, upsert_sql};
use super::map_err;
use crate::periods;
use crate::report::{self, Figures, Loaded, Param, ReportKeys, ReportQuery};
use crate::sql::{self, Dialect};
use crate::{ReportRow, Result};
use jiff::Timestamp;
use tally_domain::rollup::{Aggregate, period_totals, sorted};
use tally_domain::{OrganizationId, UserId};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

fn boxed(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(s) => Box::new(s),
                Param::Int(i) => Box::new(i),
                Param::Real(f) => Box::new(f),
                Param::Bool(b) => Box::new(b),
                Param::Time(t) => Box::new(t),
            }
        })
        .collect()
}

fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

pub(super) async fn users(conn: &Client, q: &ReportQuery) -> Result<ReportKeys> {
    let (sql, params) = report::compile(Dialect::Postgres, q);
    let params = boxed(params);
    let mut keys = ReportKeys { count: None, users: Vec::new() };
    let first = usize::from(q.count);
    for r in conn.query(&sql, &refs(&params)).await.map_err(map_err)? {
        let n = if q.count { Some(r.get(0)) } else { None };
        keys.push(n, r.get(first), r.get(first + 1))?;
    }
    Ok(keys)
}

fn figures(rows: &[tokio_postgres::Row]) -> Figures {
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), aggregate_row(r, 3))).collect()
}

/// Refills the kept period figures of the organizations whose billing period changed or was
/// never recorded (`org`: only that one), one transaction each; returns how many.
pub(super) async fn refresh_periods(conn: &mut Client, org: Option<&str>, now: Timestamp) -> Result<u64> {
    let (month_start, month_end) = periods::calendar_month(now);
    let stale = periods::stale(Dialect::Postgres);
    let candidates: Vec<String> =
        conn.query(&stale, &[&month_start, &month_end, &org]).await.map_err(map_err)?.iter().map(|r| r.get(0)).collect();
    let mut refilled = 0;
    for candidate in candidates {
        let tx = conn.transaction().await.map_err(map_err)?;
        // Ingestion waits meanwhile (SHARE conflicts with its inserts into events, taken before it
        // reads the recorded period), so no batch lands between reading the hourly cells and
        // recording the period they were summed for.
        tx.batch_execute("LOCK TABLE events IN SHARE MODE").await.map_err(map_err)?;
        // Checked again under the lock: another refresh may have done it meanwhile.
        let rows = tx.query(&stale, &[&month_start, &month_end, &Some(candidate.as_str())]).await.map_err(map_err)?;
        if let Some(r) = rows.first() {
            refill(&tx, &candidate, r.get(1), r.get(2)).await?;
            refilled += 1;
        }
        tx.commit().await.map_err(map_err)?;
    }
    Ok(refilled)
}

async fn refill(tx: &Transaction<'_>, org: &str, start: Timestamp, end: Timestamp) -> Result<()> {
    let cells = tx.query(&periods::hourly_cells(Dialect::Postgres), &[&org, &start, &end]).await.map_err(map_err)?;
    let cells: Vec<(&str, &str, Timestamp, Aggregate)> =
        cells.iter().map(|r| (r.get(0), r.get(1), r.get(2), aggregate_row(r, 3))).collect();
    let totals = period_totals(cells.iter().map(|(u, t, hour, a)| (org, *u, *t, *hour, a)), |_| Some((start, end)));
    let kept = sorted(&totals);
    tx.execute("DELETE FROM user_usage_period WHERE organization_id = $1", &[&org]).await.map_err(map_err)?;
    let (orgs, users): (Vec<&str>, Vec<&str>) = kept.iter().map(|(k, _)| (k.organization_id, k.user_id)).unzip();
    let types: Vec<&str> = kept.iter().map(|(k, _)| k.usage_type).collect();
    let aggs = AggArrays::of(kept.iter().map(|(_, a)| a));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&orgs, &users, &types];
    params.extend(aggs.params());
    tx.execute(&upsert_sql("user_usage_period", &sql::USER_KEYS, &["text", "text", "text"]), &params).await.map_err(map_err)?;
    tx.execute(&periods::record(Dialect::Postgres), &[&org, &start, &end]).await.map_err(map_err)?;
    Ok(())
}

pub(super) async fn rows(conn: &Client, keys: &[(OrganizationId, UserId)], now: Timestamp) -> Result<Vec<ReportRow>> {
    let q = report::row_queries(Dialect::Postgres);
    let orgs: Vec<&str> = keys.iter().map(|(o, _)| o.as_str()).collect();
    let users: Vec<&str> = keys.iter().map(|(_, u)| u.as_str()).collect();
    let by_key: [&(dyn ToSql + Sync); 2] = [&orgs, &users];
    // Sent at once: the connection pipelines them, so the server runs one while this side
    // decodes the one before.
    let (users, organizations, subscriptions, recorded, all_time) = tokio::try_join!(
        conn.query(&q.users, &by_key),
        conn.query(&q.organizations, &by_key),
        conn.query(&q.subscriptions, &by_key),
        conn.query(&q.recorded, &by_key),
        conn.query(&q.all_time, &by_key),
    )
    .map_err(map_err)?;
    let loaded = Loaded {
        users: users.iter().map(user_row).collect::<Result<_>>()?,
        organizations: organizations.iter().map(|r| (r.get(0), r.get(1))).collect(),
        subscriptions: subscriptions.iter().map(subscription_row).collect::<Result<_>>()?,
        recorded: recorded.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect(),
    };
    let all_time = figures(&all_time);
    let periods = loaded.periods(keys, now);
    let (kept, summed) = loaded.split_kept(&periods);
    let mut current = Vec::new();
    if !kept.is_empty() {
        let orgs: Vec<&str> = kept.iter().map(|(o, _)| o.as_str()).collect();
        let users: Vec<&str> = kept.iter().map(|(_, u)| u.as_str()).collect();
        current = figures(&conn.query(&q.kept, &[&orgs, &users]).await.map_err(map_err)?);
    }
    if !summed.is_empty() {
        let (starts, ends): (Vec<Timestamp>, Vec<Timestamp>) = summed.iter().map(|(_, _, s, e)| (*s, *e)).unzip();
        let orgs: Vec<&str> = summed.iter().map(|(o, _, _, _)| o.as_str()).collect();
        let users: Vec<&str> = summed.iter().map(|(_, u, _, _)| u.as_str()).collect();
        current.extend(figures(&conn.query(&q.current, &[&orgs, &users, &starts, &ends]).await.map_err(map_err)?));
    }
    Ok(loaded.assemble(&periods, all_time, current))
}
