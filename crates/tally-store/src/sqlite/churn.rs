//! Churn reports, alerts and report runs on SQLite.

use super::entities::col;
use super::{map_err, micros, timestamp};
use crate::ChurnBatch;
use crate::sql::{ALERT_COLUMNS, CHURN_COLUMNS, Dialect, REPORT_RUN_COLUMNS as RUN_COLUMNS, churn_source};
use crate::{ActivityDays, ChurnOrdering, ChurnQuery, ChurnRow, Listed, Page, ReportRun, Result, StoreError, UserDay};
use jiff::Timestamp;
use jiff::civil::Date;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, Row, TransactionBehavior, params, params_from_iter};
use tally_domain::OrganizationId;
use tally_domain::churn::{ChurnDetails, DayActivity};
use tally_domain::time::date_start;

fn date(text: String) -> Result<Date> {
    text.parse().map_err(StoreError::corrupt)
}

fn json(text: String) -> Result<serde_json::Value> {
    serde_json::from_str(&text).map_err(StoreError::corrupt)
}

pub(super) fn daily_activity(conn: &Connection, org: &OrganizationId, days: &ActivityDays) -> Result<Vec<UserDay>> {
    // The property is checked to be a plain name before it gets here.
    let path = format!("$.{}", days.frustration_property);
    let mut stmt = conn
        .prepare_cached(
            "SELECT user_id, (ts - ?2) / 86400000000, max(ts), count(*), sum(usage_type = ?4), sum(usage_type = ?5), total(f), count(f) \
             FROM (SELECT user_id, ts, usage_type, \
                 CASE WHEN json_type(properties, ?6) IN ('integer', 'real') THEN json_extract(properties, ?6) END AS f \
                 FROM events WHERE organization_id = ?1 AND ts >= ?2 AND ts < ?3) \
             GROUP BY 1, 2",
        )
        .map_err(map_err)?;
    let from = date_start(days.from);
    let mut rows = stmt
        .query(params![org.as_str(), micros(from), micros(date_start(days.to)), days.login_type, days.progress_type, path])
        .map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let day = days.from.checked_add(jiff::Span::new().days(col::<i64>(r, 1)?)).map_err(StoreError::corrupt)?;
        out.push(UserDay {
            user_id: col(r, 0)?,
            activity: DayActivity {
                day,
                last_active: timestamp(col(r, 2)?)?,
                events: col(r, 3)?,
                logins: col(r, 4)?,
                progress: col(r, 5)?,
                frustration_sum: col(r, 6)?,
                frustration_count: col(r, 7)?,
            },
        });
    }
    Ok(out)
}

fn churn_row(r: &Row) -> Result<ChurnRow> {
    Ok(ChurnRow {
        organization_id: OrganizationId::parse(col::<String>(r, 0)?).map_err(StoreError::corrupt)?,
        report_date: date(col(r, 1)?)?,
        user_id: col(r, 2)?,
        score: col(r, 3)?,
        risk_level: col(r, 4)?,
        details: ChurnDetails::from_stored(&json(col(r, 5)?)?).map_err(StoreError::corrupt)?,
        login_count: col(r, 6)?,
        login_trend: col(r, 7)?,
        days_until_renewal: col(r, 8)?,
        schema_version: col(r, 9)?,
    })
}

pub(super) fn save_reports(conn: &mut Connection, day: Date, batches: &[ChurnBatch], now: Timestamp, replace: bool) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let mut opened = 0;
    {
        let mut clear = tx.prepare_cached("DELETE FROM churn_scores WHERE organization_id = ?1 AND report_date = ?2").map_err(map_err)?;
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT INTO churn_scores ({CHURN_COLUMNS}, computed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))
            .map_err(map_err)?;
        let mut close = tx
            .prepare_cached(
                "UPDATE alerts SET status = 'resolved', resolved_at = ?3, resolution = 'auto' WHERE organization_id = ?1 AND alert_id = ?2 AND status = 'open'",
            )
            .map_err(map_err)?;
        let mut raise = tx
            .prepare_cached(&format!(
                "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES (?1, ?2, 'churn_report', NULL, ?3, ?4, NULL, ?5, ?6, 'open', ?7, ?8, ?9, NULL, NULL, NULL) \
                 ON CONFLICT DO NOTHING"
            ))
            .map_err(map_err)?;
        for batch in batches {
            let org = batch.organization_id.as_str();
            if replace {
                clear.execute(params![org, day.to_string()]).map_err(map_err)?;
            }
            for row in &batch.rows {
                insert
                    .execute(params![
                        org,
                        row.report_date.to_string(),
                        row.user_id,
                        row.score,
                        row.risk_level,
                        row.details.stored(),
                        row.login_count,
                        row.login_trend,
                        row.days_until_renewal,
                        row.schema_version,
                        micros(now)
                    ])
                    .map_err(map_err)?;
            }
            for id in &batch.resolve {
                close.execute(params![org, id, micros(now)]).map_err(map_err)?;
            }
            for a in &batch.open {
                opened += raise
                    .execute(params![
                        a.id,
                        org,
                        a.key,
                        a.user_id,
                        a.alert_type,
                        a.severity,
                        a.report_date.map(|d| d.to_string()),
                        a.details.to_string(),
                        micros(a.opened_at)
                    ])
                    .map_err(map_err)? as u64;
            }
        }
    }
    tx.commit().map_err(map_err)?;
    Ok(opened)
}

/// `WHERE` conditions and their values, numbered from 1.
pub(super) fn conditions(parts: &[(&str, Option<Sql>)]) -> (String, Vec<Sql>) {
    let mut sql = Vec::new();
    let mut values = Vec::new();
    for (condition, value) in parts {
        if let Some(v) = value {
            values.push(v.clone());
            sql.push(condition.replace('?', &format!("?{}", values.len())));
        }
    }
    let clause = if sql.is_empty() { String::new() } else { format!(" WHERE {}", sql.join(" AND ")) };
    (clause, values)
}

pub(super) fn text(v: &Option<impl ToString>) -> Option<Sql> {
    v.as_ref().map(|v| Sql::Text(v.to_string()))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn listed<T>(
    conn: &Connection,
    table: &str,
    columns: &str,
    clause: &str,
    values: Vec<Sql>,
    order: &str,
    page: Page,
    map: impl Fn(&Row) -> Result<T>,
) -> Result<Listed<T>> {
    let count: i64 =
        conn.query_row(&format!("SELECT count(*) FROM {table}{clause}"), params_from_iter(values.iter()), |r| r.get(0)).map_err(map_err)?;
    let sql = format!("SELECT {columns} FROM {table}{clause} ORDER BY {order} LIMIT {} OFFSET {}", page.limit, page.offset);
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query(params_from_iter(values.iter())).map_err(map_err)?;
    let mut results = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        results.push(map(r)?);
    }
    Ok(Listed { count: count as u64, results })
}

pub(super) fn scores(conn: &Connection, q: &ChurnQuery) -> Result<Listed<ChurnRow>> {
    let (lowest, below) = q.level_scores();
    let (clause, values) = conditions(&[
        ("report_date = ?", text(&q.date)),
        ("organization_id = ?", text(&q.organization_id)),
        ("user_id = ?", text(&q.user_id)),
        ("risk_level = ?", text(&q.risk_level)),
        ("score >= ?", lowest.map(Sql::Real)),
        ("score < ?", below.map(Sql::Real)),
        ("score >= ?", q.min_score.map(Sql::Real)),
    ]);
    let order = match q.ordering {
        ChurnOrdering::ScoreDesc => "score DESC, organization_id, user_id",
        ChurnOrdering::ScoreAsc => "score, organization_id, user_id",
        ChurnOrdering::User => "user_id, organization_id",
        ChurnOrdering::DateDesc => "report_date DESC, organization_id, user_id",
    };
    let source = churn_source(Dialect::Sqlite, q);
    listed(conn, &source, CHURN_COLUMNS, &clause, values, order, q.page, churn_row)
}

pub(super) fn scores_exist(conn: &Connection, day: Date, org: Option<&str>) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM churn_scores WHERE report_date = ?1 AND (?2 IS NULL OR organization_id = ?2))",
        params![day.to_string(), org],
        |r| r.get(0),
    )
    .map_err(map_err)
}

pub(super) fn latest_date(conn: &Connection, org: Option<&OrganizationId>) -> Result<Option<Date>> {
    let latest: Option<String> = match org {
        Some(o) => conn.query_row("SELECT max(report_date) FROM churn_scores WHERE organization_id = ?1", [o.as_str()], |r| r.get(0)),
        None => conn.query_row("SELECT max(report_date) FROM churn_scores", [], |r| r.get(0)),
    }
    .map_err(map_err)?;
    latest.map(date).transpose()
}

pub(super) fn risers(
    conn: &Connection,
    day: Date,
    since: Date,
    min_increase: f64,
    org: Option<&OrganizationId>,
    limit: u32,
) -> Result<Vec<(ChurnRow, f64)>> {
    let columns: Vec<String> = CHURN_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect();
    let sql = format!(
        "SELECT {}, p.score FROM churn_scores c JOIN churn_scores p ON p.organization_id = c.organization_id AND p.user_id = c.user_id \
         AND p.report_date = ?2 WHERE c.report_date = ?1 AND c.score - p.score >= ?3 AND (?4 IS NULL OR c.organization_id = ?4) \
         ORDER BY c.score - p.score DESC, c.organization_id, c.user_id LIMIT ?5",
        columns.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let mut rows =
        stmt.query(params![day.to_string(), since.to_string(), min_increase, org.map(OrganizationId::as_str), limit]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push((churn_row(r)?, col(r, 10)?));
    }
    Ok(out)
}

fn run_row(r: &Row) -> Result<ReportRun> {
    Ok(ReportRun {
        id: col(r, 0)?,
        report: col(r, 1)?,
        report_date: date(col(r, 2)?)?,
        organization_id: col(r, 3)?,
        status: col(r, 4)?,
        rows_written: col::<i64>(r, 5)? as u64,
        alerts_opened: col::<i64>(r, 6)? as u64,
        alerts_resolved: col::<i64>(r, 7)? as u64,
        started_at: timestamp(col(r, 8)?)?,
        duration_ms: col::<i64>(r, 9)? as u64,
        error: col(r, 10)?,
    })
}

pub(super) fn save_run(conn: &Connection, run: &ReportRun) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO report_runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            run.id,
            run.report,
            run.report_date.to_string(),
            run.organization_id,
            run.status,
            run.rows_written as i64,
            run.alerts_opened as i64,
            run.alerts_resolved as i64,
            micros(run.started_at),
            run.duration_ms as i64,
            run.error
        ],
    )
    .map_err(map_err)?;
    Ok(())
}

pub(super) fn runs(conn: &Connection, report: Option<&str>, page: Page) -> Result<Listed<ReportRun>> {
    let (clause, values) = conditions(&[("report = ?", report.map(|r| Sql::Text(r.to_owned())))]);
    listed(conn, "report_runs", RUN_COLUMNS, &clause, values, "started_at DESC, run_id", page, run_row)
}

pub(super) fn succeeded(conn: &Connection, report: &str, day: Date, org: Option<&OrganizationId>) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM report_runs WHERE report = ?1 AND report_date = ?2 AND status = 'succeeded' \
         AND (organization_id IS NULL OR organization_id = ?3))",
        params![report, day.to_string(), org.map(OrganizationId::as_str)],
        |r| r.get(0),
    )
    .map_err(map_err)
}
