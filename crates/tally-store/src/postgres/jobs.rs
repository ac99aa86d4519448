//! Resumable jobs on PostgreSQL: run bookkeeping with a lease (shared by every process on the
//! database), the per-organization rebuild of what user reports keep per user, and the full
//! replay of an organization's aggregates.

use super::events::{AggArrays, apply, event_row, upsert_sql};
use super::map_err;
use crate::{JobRun, Result, StoreError, sql};
use jiff::Timestamp;
use tally_domain::event::{LlmColumns, LlmFields};
use tally_domain::rollup::{Aggregate, Rollup, UserFigures};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Transaction};

const RUN_COLUMNS: &str = "run_id, job, status, cursor, processed, started_at, finished_at, last_error, lease_owner, lease_until";

fn run_row(r: &Row) -> JobRun {
    JobRun {
        id: r.get(0),
        job: r.get(1),
        status: r.get(2),
        cursor: r.get(3),
        processed: r.get::<_, i64>(4) as u64,
        started_at: r.get(5),
        finished_at: r.get(6),
        last_error: r.get(7),
        lease_owner: r.get(8),
        lease_until: r.get(9),
    }
}

pub(super) async fn run(conn: &impl GenericClient, run_id: &str) -> Result<JobRun> {
    let rows = conn.query(&format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE run_id = $1"), &[&run_id]).await.map_err(map_err)?;
    rows.first().map(run_row).ok_or_else(|| StoreError::NotFound(format!("job run {run_id}")))
}

pub(super) async fn claim(conn: &mut Client, job: &str, owner: &str, lease_until: Timestamp, now: Timestamp) -> Result<JobRun> {
    let tx = conn.transaction().await.map_err(map_err)?;
    let current = tx
        .query("SELECT run_id, lease_owner, lease_until FROM job_runs WHERE job = $1 AND status = 'in_progress' FOR UPDATE", &[&job])
        .await
        .map_err(map_err)?;
    let run_id: String = match current.first() {
        Some(r) if r.get::<_, String>(1) != owner && r.get::<_, Timestamp>(2) > now => {
            return Err(StoreError::Conflict(format!(
                "a run of {job} is in progress: {} holds its lease until {}",
                r.get::<_, String>(1),
                r.get::<_, Timestamp>(2)
            )));
        }
        // Its holder stopped renewing the lease (killed, or gone): resume from the cursor.
        Some(r) => {
            let run_id: String = r.get(0);
            tx.execute("UPDATE job_runs SET lease_owner = $2, lease_until = $3 WHERE run_id = $1", &[&run_id, &owner, &lease_until])
                .await
                .map_err(map_err)?;
            run_id
        }
        None => {
            let run_id = format!("{:032x}", rand::random::<u128>());
            // Two processes starting at once: the unique index on in-progress runs lets one win.
            tx.execute(
                "INSERT INTO job_runs (run_id, job, status, processed, started_at, lease_owner, lease_until) \
                 VALUES ($1, $2, 'in_progress', 0, $3, $4, $5)",
                &[&run_id, &job, &now, &owner, &lease_until],
            )
            .await
            .map_err(|e| match map_err(e) {
                StoreError::AlreadyExists(_) => StoreError::Conflict(format!("a run of {job} has just started elsewhere")),
                other => other,
            })?;
            run_id
        }
    };
    let claimed = run(&tx, &run_id).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(claimed)
}

/// Replaces every aggregate of one organization by what its raw events give.
pub(super) async fn rebuild_organization(tx: &Transaction<'_>, org: &str) -> Result<u64> {
    const BATCH: i64 = 50_000;
    for table in crate::sql::AGGREGATE_TABLES {
        tx.execute(&format!("DELETE FROM {table} WHERE organization_id = $1"), &[&org]).await.map_err(map_err)?;
    }
    tx.execute("UPDATE users SET last_activity = NULL WHERE organization_id = $1 AND last_activity IS NOT NULL", &[&org])
        .await
        .map_err(map_err)?;
    let mut after = String::new();
    let mut replayed = 0;
    loop {
        let rows = tx
            .query(
                "SELECT organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
                 input_tokens, output_tokens, cost_nanos, latency_ms FROM events \
                 WHERE organization_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3",
                &[&org, &after, &BATCH],
            )
            .await
            .map_err(map_err)?;
        let Some(last) = rows.last() else { return Ok(replayed) };
        after = last.get(1);
        let batch = rows.iter().map(event_row).collect::<Result<Vec<_>>>()?;
        replayed += batch.len() as u64;
        apply(tx, &Rollup::of(&batch)).await?;
    }
}

/// Replaces what the user report keeps of one organization's users (all-time and billing-period
/// figures, last activity) by what its raw events give, read a few thousand users at a time in
/// user order; returns how many events it read. The hourly cells are left to
/// `tally aggregates rebuild`: the report does not read them for a recorded period.
pub(super) async fn rebuild_user_figures(tx: &Transaction<'_>, org: &str) -> Result<u64> {
    const USERS: usize = 2_000;
    let period: Option<(Timestamp, Timestamp)> = tx
        .query_opt("SELECT period_start, period_end FROM billing_periods WHERE organization_id = $1", &[&org])
        .await
        .map_err(map_err)?
        .map(|r| (r.get(0), r.get(1)));
    tx.execute("DELETE FROM user_usage WHERE organization_id = $1", &[&org]).await.map_err(map_err)?;
    tx.execute("DELETE FROM user_usage_period WHERE organization_id = $1", &[&org]).await.map_err(map_err)?;
    let users: Vec<String> = tx
        .query("SELECT user_id FROM users WHERE organization_id = $1 ORDER BY user_id", &[&org])
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut read = 0;
    for chunk in users.chunks(USERS) {
        let (first, last) = (&chunk[0], &chunk[chunk.len() - 1]);
        let rows = tx
            .query(
                "SELECT user_id, ts, usage_type, quantity, status, input_tokens, output_tokens, cost_nanos, latency_ms                  FROM events WHERE organization_id = $1 AND user_id >= $2 AND user_id <= $3 ORDER BY user_id",
                &[&org, first, last],
            )
            .await
            .map_err(map_err)?;
        read += rows.len() as u64;
        let mut figures: Vec<(&str, UserFigures)> = chunk.iter().map(|u| (u.as_str(), UserFigures::default())).collect();
        let mut at_user = 0;
        for r in &rows {
            let user: &str = r.get(0);
            while figures[at_user].0 != user {
                at_user += 1;
                if at_user == figures.len() {
                    return Err(StoreError::corrupt(format!("events of user {user} of {org}, who is not registered")));
                }
            }
            let at: Timestamp = r.get(1);
            let llm = LlmFields::from_columns(LlmColumns {
                model: None,
                provider: None,
                status: r.get(4),
                input_tokens: r.get(5),
                output_tokens: r.get(6),
                cost_nanos: r.get(7),
                latency_ms: r.get(8),
            });
            figures[at_user].1.add(r.get(2), at, &Aggregate::of_parts(r.get(3), at, llm.as_ref()), period);
        }
        write_user_figures(tx, org, &figures).await?;
    }
    Ok(read)
}

/// Writes rebuilt figures into emptied tables, and every user's last activity (none without events).
async fn write_user_figures(tx: &Transaction<'_>, org: &str, figures: &[(&str, UserFigures)]) -> Result<()> {
    type Kept = fn(&UserFigures) -> &[(String, Aggregate)];
    let tables: [(&str, Kept); 2] = [("user_usage", |f| &f.all_time), ("user_usage_period", |f| &f.period)];
    for (table, kept) in tables {
        let rows: Vec<(&str, &str, &Aggregate)> =
            figures.iter().flat_map(|(user, f)| kept(f).iter().map(move |(t, a)| (*user, t.as_str(), a))).collect();
        if rows.is_empty() {
            continue;
        }
        let orgs = vec![org; rows.len()];
        let users: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let types: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let aggs = AggArrays::of(rows.iter().map(|r| r.2));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&orgs, &users, &types];
        params.extend(aggs.params());
        tx.execute(&upsert_sql(table, &sql::USER_KEYS, &["text", "text", "text"]), &params).await.map_err(map_err)?;
    }
    let users: Vec<&str> = figures.iter().map(|(u, _)| *u).collect();
    let last: Vec<Option<Timestamp>> = figures.iter().map(|(_, f)| f.last_activity).collect();
    tx.execute(
        "UPDATE users SET last_activity = k.t FROM unnest($2::text[], $3::timestamptz[]) AS k(u, t) \
         WHERE users.organization_id = $1 AND users.user_id = k.u AND users.last_activity IS DISTINCT FROM k.t",
        &[&org, &users, &last],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn advance(
    conn: &mut Client,
    run_id: &str,
    owner: &str,
    max_orgs: u32,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<JobRun> {
    let tx = conn.transaction().await.map_err(map_err)?;
    // Ingestion waits while an organization's aggregates are replaced (SHARE conflicts with its
    // inserts), so no event lands between reading the events and writing the figures.
    tx.batch_execute("LOCK TABLE events IN SHARE MODE").await.map_err(map_err)?;
    let renewed = tx
        .execute(
            "UPDATE job_runs SET lease_until = $3 WHERE run_id = $1 AND lease_owner = $2 AND status = 'in_progress'",
            &[&run_id, &owner, &lease_until],
        )
        .await
        .map_err(map_err)?;
    if renewed == 0 {
        return Err(StoreError::Conflict(format!("job run {run_id} is no longer held by {owner}")));
    }
    let cursor = run(&tx, run_id).await?.cursor.unwrap_or_default();
    let orgs: Vec<String> = tx
        .query(
            "SELECT organization_id FROM organizations WHERE organization_id > $1 ORDER BY organization_id LIMIT $2",
            &[&cursor, &i64::from(max_orgs)],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match orgs.last() {
        None => {
            tx.execute("UPDATE job_runs SET status = 'completed', finished_at = $2 WHERE run_id = $1", &[&run_id, &now])
                .await
                .map_err(map_err)?;
        }
        Some(last) => {
            let mut replayed = 0u64;
            for org in &orgs {
                replayed += rebuild_user_figures(&tx, org).await?;
            }
            tx.execute(
                "UPDATE job_runs SET cursor = $2, processed = processed + $3 WHERE run_id = $1",
                &[&run_id, last, &(replayed as i64)],
            )
            .await
            .map_err(map_err)?;
        }
    }
    let advanced = run(&tx, run_id).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(advanced)
}

pub(super) async fn abort(conn: &Client, run_id: &str, error: &str, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE job_runs SET status = 'aborted', last_error = $2, finished_at = $3 WHERE run_id = $1 AND status = 'in_progress'",
        &[&run_id, &error, &now],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn runs(conn: &Client, job: &str) -> Result<Vec<JobRun>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE job = $1 ORDER BY started_at DESC, run_id");
    Ok(conn.query(&sql, &[&job]).await.map_err(map_err)?.iter().map(run_row).collect())
}
