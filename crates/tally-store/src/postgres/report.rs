//! User reports on PostgreSQL: the compiled page and count queries, and the row loaders.

use super::entities::{subscription_row, user_row};
use super::map_err;
use crate::report::{self, Figures, Loaded, Param, ReportKeys, ReportQuery};
use crate::sql::Dialect;
use crate::{ReportRow, Result, StoreError};
use jiff::Timestamp;
use tally_domain::rollup::Aggregate;
use tally_domain::{OrganizationId, UserId};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

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
    let ((page_sql, page_params), count) = report::compile(Dialect::Postgres, q);
    let params = boxed(page_params);
    let rows = conn.query(&page_sql, &refs(&params)).await.map_err(map_err)?;
    let users = rows
        .iter()
        .map(|r| {
            Ok((
                OrganizationId::parse(r.get::<_, String>(0)).map_err(StoreError::corrupt)?,
                UserId::parse(r.get::<_, String>(1)).map_err(StoreError::corrupt)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let count = match count {
        Some((sql, params)) => {
            let params = boxed(params);
            Some(conn.query_one(&sql, &refs(&params)).await.map_err(map_err)?.get::<_, i64>(0) as u64)
        }
        None => None,
    };
    Ok(ReportKeys { count, users })
}

fn figures(rows: &[tokio_postgres::Row]) -> Figures {
    rows.iter()
        .map(|r| {
            let aggregate = Aggregate {
                count: r.get(3),
                sum: r.get(4),
                min: r.get(5),
                max: r.get(6),
                last_ts: r.get(7),
                last_value: r.get(8),
                llm_successes: r.get(9),
                llm_failures: r.get(10),
                input_tokens: r.get(11),
                output_tokens: r.get(12),
                cost_nanos: r.get(13),
                latency_ms_sum: r.get(14),
            };
            (r.get(0), r.get(1), r.get(2), aggregate)
        })
        .collect()
}

pub(super) async fn rows(conn: &Client, keys: &[(OrganizationId, UserId)], now: Timestamp) -> Result<Vec<ReportRow>> {
    let q = report::row_queries(Dialect::Postgres);
    let orgs: Vec<&str> = keys.iter().map(|(o, _)| o.as_str()).collect();
    let users: Vec<&str> = keys.iter().map(|(_, u)| u.as_str()).collect();
    let by_key: [&(dyn ToSql + Sync); 2] = [&orgs, &users];
    let loaded = Loaded {
        users: conn.query(&q.users, &by_key).await.map_err(map_err)?.iter().map(user_row).collect::<Result<_>>()?,
        organizations: conn.query(&q.organizations, &by_key).await.map_err(map_err)?.iter().map(|r| (r.get(0), r.get(1))).collect(),
        subscriptions: conn.query(&q.subscriptions, &by_key).await.map_err(map_err)?.iter().map(subscription_row).collect::<Result<_>>()?,
    };
    let all_time = figures(&conn.query(&q.all_time, &by_key).await.map_err(map_err)?);
    let periods = loaded.periods(keys, now);
    let (starts, ends): (Vec<Timestamp>, Vec<Timestamp>) = periods.iter().map(|(_, _, s, e)| (*s, *e)).unzip();
    let p_orgs: Vec<&str> = periods.iter().map(|(o, _, _, _)| o.as_str()).collect();
    let p_users: Vec<&str> = periods.iter().map(|(_, u, _, _)| u.as_str()).collect();
    let current = figures(&conn.query(&q.current, &[&p_orgs, &p_users, &starts, &ends]).await.map_err(map_err)?);
    Ok(loaded.assemble(&periods, all_time, current))
}
