//! Churn reports, alerts and report runs on PostgreSQL.

use super::map_err;
use crate::ChurnBatch;
use crate::sql::{ALERT_COLUMNS, CHURN_COLUMNS, Dialect, REPORT_RUN_COLUMNS as RUN_COLUMNS, churn_source};
use crate::{ActivityDays, Alert, ChurnOrdering, ChurnQuery, ChurnRow, Listed, Page, ReportRun, Result, StoreError, UserDay};
use bytes::{BufMut, BytesMut};
use jiff::Timestamp;
use jiff::civil::Date;
use tally_domain::OrganizationId;
use tally_domain::churn::{ChurnDetails, DayActivity};
use tally_domain::time::date_start;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, Json, ToSql, Type, accepts, to_sql_checked};
use tokio_postgres::{Client, Row};

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

fn org_of(text: String) -> Result<OrganizationId> {
    OrganizationId::parse(text).map_err(StoreError::corrupt)
}

pub(super) async fn daily_activity(conn: &Client, org: &OrganizationId, days: &ActivityDays) -> Result<Vec<UserDay>> {
    let rows = conn
        .query(
            "SELECT user_id, (ts AT TIME ZONE 'UTC')::date, max(ts), count(*), count(*) FILTER (WHERE usage_type = $4), \
             count(*) FILTER (WHERE usage_type = $5), \
             coalesce(sum((properties ->> $6)::float8) FILTER (WHERE jsonb_typeof(properties -> $6) = 'number'), 0), \
             count(*) FILTER (WHERE jsonb_typeof(properties -> $6) = 'number') \
             FROM events WHERE organization_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1, 2",
            &[
                &org.as_str(),
                &date_start(days.from),
                &date_start(days.to),
                &days.login_type,
                &days.progress_type,
                &days.frustration_property,
            ],
        )
        .await
        .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| UserDay {
            user_id: r.get(0),
            activity: DayActivity {
                day: r.get(1),
                last_active: r.get(2),
                events: r.get(3),
                logins: r.get(4),
                progress: r.get(5),
                frustration_sum: r.get(6),
                frustration_count: r.get(7),
            },
        })
        .collect())
}

fn churn_row(r: &Row) -> Result<ChurnRow> {
    Ok(ChurnRow {
        organization_id: org_of(r.get(0))?,
        report_date: r.get(1),
        user_id: r.get(2),
        score: r.get(3),
        risk_level: r.get(4),
        details: ChurnDetails::from_stored(&r.get::<_, Json<serde_json::Value>>(5).0).map_err(StoreError::corrupt)?,
        login_count: r.get(6),
        login_trend: r.get(7),
        days_until_renewal: r.get(8),
        schema_version: r.get(9),
    })
}

/// A JSON document serialized already, written as `json` as it is.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // `json`'s binary form is its text.
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON);
    to_sql_checked!();
}

pub(super) async fn save_reports(conn: &mut Client, day: Date, batches: &[ChurnBatch], now: Timestamp, replace: bool) -> Result<u64> {
    let tx = conn.transaction().await.map_err(map_err)?;
    if replace {
        // One statement per organization, pipelined: equality on the key's first two columns
        // finds its rows by the key however stale the statistics are after a backfill wrote
        // millions of rows (one statement for all, `= ANY`, was planned as a scan of the table).
        let clear = tx.prepare("DELETE FROM churn_scores WHERE organization_id = $1 AND report_date = $2").await.map_err(map_err)?;
        let (tx, clear) = (&tx, &clear);
        let clearing = batches.iter().map(|b| async move { tx.execute(clear, &[&b.organization_id.as_str(), &day]).await });
        futures_util::future::try_join_all(clearing).await.map_err(map_err)?;
    }
    // COPY, not INSERT … SELECT unnest: a day writes a row per subscriber (200,000 here).
    let sink =
        tx.copy_in(&format!("COPY churn_scores ({CHURN_COLUMNS}, computed_at) FROM STDIN (FORMAT binary)")).await.map_err(map_err)?;
    let types = [
        Type::TEXT,
        Type::DATE,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::JSON,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for r in batches.iter().flat_map(|b| &b.rows) {
        let details = r.details.stored();
        let row: [&(dyn ToSql + Sync); 11] = [
            &r.organization_id.as_str(),
            &day,
            &r.user_id.as_str(),
            &r.score,
            &r.risk_level.as_str(),
            &JsonText(&details),
            &r.login_count,
            &r.login_trend.as_str(),
            &r.days_until_renewal,
            &r.schema_version,
            &now,
        ];
        writer.as_mut().write(&row).await.map_err(map_err)?;
    }
    writer.finish().await.map_err(map_err)?;
    let (close_orgs, close_ids): (Vec<&str>, Vec<&str>) =
        batches.iter().flat_map(|b| b.resolve.iter().map(move |id| (b.organization_id.as_str(), id.as_str()))).unzip();
    tx.execute(
        "UPDATE alerts a SET status = 'resolved', resolved_at = $3, resolution = 'auto' FROM unnest($1::text[], $2::text[]) AS x(o, i) \
         WHERE a.organization_id = x.o AND a.alert_id = x.i AND a.status = 'open'",
        &[&close_orgs, &close_ids, &now],
    )
    .await
    .map_err(map_err)?;
    let alerts: Vec<&Alert> = batches.iter().flat_map(|b| &b.open).collect();
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    let alert_orgs: Vec<&str> = alerts.iter().map(|a| crate::alerting::org_key(a.organization_id.as_ref())).collect();
    let alert_users: Vec<Option<&str>> = alerts.iter().map(|a| a.user_id.as_deref()).collect();
    let keys: Vec<&str> = alerts.iter().map(|a| a.key.as_str()).collect();
    let types: Vec<&str> = alerts.iter().map(|a| a.alert_type.as_str()).collect();
    let severities: Vec<&str> = alerts.iter().map(|a| a.severity.as_str()).collect();
    let alert_details: Vec<String> = alerts.iter().map(|a| a.details.to_string()).collect();
    let opened = tx
        .execute(
            &format!(
                "INSERT INTO alerts ({ALERT_COLUMNS}) SELECT i, o, 'churn_report', NULL, k, u, NULL, t, s, 'open', $1, d::jsonb, $8, NULL, NULL, NULL \
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $9::text[]) AS x(i, o, u, t, s, d, k) \
                 ON CONFLICT DO NOTHING"
            ),
            &[&day, &ids, &alert_orgs, &alert_users, &types, &severities, &alert_details, &now, &keys],
        )
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(opened)
}

/// `WHERE` conditions and their values, numbered from 1.
pub(super) fn conditions(parts: Vec<(&str, Option<Param>)>) -> (String, Vec<Param>) {
    let mut sql = Vec::new();
    let mut values = Vec::new();
    for (condition, value) in parts {
        if let Some(v) = value {
            values.push(v);
            sql.push(condition.replace('?', &format!("${}", values.len())));
        }
    }
    let clause = if sql.is_empty() { String::new() } else { format!(" WHERE {}", sql.join(" AND ")) };
    (clause, values)
}

pub(super) fn text(v: &Option<impl ToString>) -> Option<Param> {
    v.as_ref().map(|v| Box::new(v.to_string()) as Param)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn listed<T>(
    conn: &Client,
    table: &str,
    columns: &str,
    clause: &str,
    values: &[Param],
    order: &str,
    page: Page,
    map: impl Fn(&Row) -> Result<T>,
) -> Result<Listed<T>> {
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
    let count: i64 = conn.query_one(&format!("SELECT count(*) FROM {table}{clause}"), &params).await.map_err(map_err)?.get(0);
    let sql = format!("SELECT {columns} FROM {table}{clause} ORDER BY {order} LIMIT {} OFFSET {}", page.limit, page.offset);
    let rows = conn.query(&sql, &params).await.map_err(map_err)?;
    Ok(Listed { count: count as u64, results: rows.iter().map(map).collect::<Result<_>>()? })
}

pub(super) async fn scores(conn: &Client, q: &ChurnQuery) -> Result<Listed<ChurnRow>> {
    let (lowest, below) = q.level_scores();
    let (clause, values) = conditions(vec![
        ("report_date = ?", q.date.map(|d| Box::new(d) as Param)),
        ("organization_id = ?", text(&q.organization_id)),
        ("user_id = ?", text(&q.user_id)),
        ("risk_level = ?", text(&q.risk_level)),
        ("score >= ?", lowest.map(|s| Box::new(s) as Param)),
        ("score < ?", below.map(|s| Box::new(s) as Param)),
        ("score >= ?", q.min_score.map(|s| Box::new(s) as Param)),
    ]);
    let order = match q.ordering {
        ChurnOrdering::ScoreDesc => "score DESC, organization_id, user_id",
        ChurnOrdering::ScoreAsc => "score, organization_id, user_id",
        ChurnOrdering::User => "user_id, organization_id",
        ChurnOrdering::DateDesc => "report_date DESC, organization_id, user_id",
    };
    let source = churn_source(Dialect::Postgres, q);
    listed(conn, &source, CHURN_COLUMNS, &clause, &values, order, q.page, churn_row).await
}

pub(super) async fn scores_exist(conn: &Client, day: Date, org: Option<&OrganizationId>) -> Result<bool> {
    let row = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM churn_scores WHERE report_date = $1 AND ($2::text IS NULL OR organization_id = $2))",
            &[&day, &org.map(OrganizationId::as_str)],
        )
        .await
        .map_err(map_err)?;
    Ok(row.get(0))
}

pub(super) async fn latest_date(conn: &Client, org: Option<&OrganizationId>) -> Result<Option<Date>> {
    let row = conn
        .query_one(
            "SELECT max(report_date) FROM churn_scores WHERE $1::text IS NULL OR organization_id = $1",
            &[&org.map(OrganizationId::as_str)],
        )
        .await
        .map_err(map_err)?;
    Ok(row.get(0))
}

pub(super) async fn risers(
    conn: &Client,
    day: Date,
    since: Date,
    min_increase: f64,
    org: Option<&OrganizationId>,
    limit: u32,
) -> Result<Vec<(ChurnRow, f64)>> {
    let columns: Vec<String> = CHURN_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect();
    let sql = format!(
        "SELECT {}, p.score FROM churn_scores c JOIN churn_scores p ON p.organization_id = c.organization_id AND p.user_id = c.user_id \
         AND p.report_date = $2 WHERE c.report_date = $1 AND c.score - p.score >= $3 AND ($4::text IS NULL OR c.organization_id = $4) \
         ORDER BY c.score - p.score DESC, c.organization_id, c.user_id LIMIT $5",
        columns.join(", ")
    );
    let rows =
        conn.query(&sql, &[&day, &since, &min_increase, &org.map(OrganizationId::as_str), &i64::from(limit)]).await.map_err(map_err)?;
    rows.iter().map(|r| Ok((churn_row(r)?, r.get(10)))).collect()
}

fn run_row(r: &Row) -> Result<ReportRun> {
    Ok(ReportRun {
        id: r.get(0),
        report: r.get(1),
        report_date: r.get(2),
        organization_id: r.get(3),
        status: r.get(4),
        rows_written: r.get::<_, i64>(5) as u64,
        alerts_opened: r.get::<_, i64>(6) as u64,
        alerts_resolved: r.get::<_, i64>(7) as u64,
        started_at: r.get(8),
        duration_ms: r.get::<_, i64>(9) as u64,
        error: r.get(10),
    })
}

pub(super) async fn save_run(conn: &Client, run: &ReportRun) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO report_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
        &[
            &run.id,
            &run.report,
            &run.report_date,
            &run.organization_id,
            &run.status,
            &(run.rows_written as i64),
            &(run.alerts_opened as i64),
            &(run.alerts_resolved as i64),
            &run.started_at,
            &(run.duration_ms as i64),
            &run.error,
        ],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn runs(conn: &Client, report: Option<&str>, page: Page) -> Result<Listed<ReportRun>> {
    let (clause, values) = conditions(vec![("report = ?", report.map(|r| Box::new(r.to_owned()) as Param))]);
    listed(conn, "report_runs", RUN_COLUMNS, &clause, &values, "started_at DESC, run_id", page, run_row).await
}

pub(super) async fn succeeded(conn: &Client, report: &str, day: Date, org: Option<&OrganizationId>) -> Result<bool> {
    let row = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM report_runs WHERE report = $1 AND report_date = $2 AND status = 'succeeded' \
             AND (organization_id IS NULL OR organization_id = $3))",
            &[&report, &day, &org.map(OrganizationId::as_str)],
        )
        .await
        .map_err(map_err)?;
    Ok(row.get(0))
}

pub(super) async fn finish_job(conn: &Client, run_id: &str, owner: &str, now: Timestamp) -> Result<()> {
    let done = conn
        .execute(
            "UPDATE job_runs SET status = 'completed', finished_at = $3 WHERE run_id = $1 AND lease_owner = $2 AND status = 'in_progress'",
            &[&run_id, &owner, &now],
        )
        .await
        .map_err(map_err)?;
    if done == 0 {
        return Err(StoreError::Conflict(format!("job run {run_id} is no longer held by {owner}")));
    }
    Ok(())
}
