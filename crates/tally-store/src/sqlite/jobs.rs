//! Resumable jobs on SQLite: run bookkeeping with a lease, the per-organization rebuild of what
//! user reports keep per user, and the full replay of an organization's aggregates.

use super::events::{apply, event_row, recorded_period, upsert, upsert_sql};
use super::{map_err, micros, timestamp};
use crate::{JobRun, Result, StoreError, sql};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::collections::HashSet;
use tally_domain::event::{LlmColumns, LlmFields};
use tally_domain::rollup::{Aggregate, Rollup, UserFigures};

const RUN_COLUMNS: &str = "run_id, job, status, cursor, processed, started_at, finished_at, last_error, lease_owner, lease_until";

fn run_row(r: &rusqlite::Row<'_>) -> Result<JobRun> {
    let opt_ts = |i: usize| -> Result<Option<Timestamp>> { r.get::<_, Option<i64>>(i).map_err(map_err)?.map(timestamp).transpose() };
    Ok(JobRun {
        id: r.get(0).map_err(map_err)?,
        job: r.get(1).map_err(map_err)?,
        status: r.get(2).map_err(map_err)?,
        cursor: r.get(3).map_err(map_err)?,
        processed: r.get::<_, i64>(4).map_err(map_err)? as u64,
        started_at: timestamp(r.get(5).map_err(map_err)?)?,
        finished_at: opt_ts(6)?,
        last_error: r.get(7).map_err(map_err)?,
        lease_owner: r.get(8).map_err(map_err)?,
        lease_until: timestamp(r.get(9).map_err(map_err)?)?,
    })
}

pub(super) fn run(tx: &Connection, run_id: &str) -> Result<JobRun> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE run_id = ?1");
    let mut stmt = tx.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query([run_id]).map_err(map_err)?;
    match rows.next().map_err(map_err)? {
        Some(r) => run_row(r),
        None => Err(StoreError::NotFound(format!("job run {run_id}"))),
    }
}

pub(super) fn claim(conn: &mut Connection, job: &str, owner: &str, lease_until: Timestamp, now: Timestamp) -> Result<JobRun> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let current: Option<(String, String, i64)> = tx
        .query_row("SELECT run_id, lease_owner, lease_until FROM job_runs WHERE job = ?1 AND status = 'in_progress'", [job], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(map_err)?;
    let run_id = match current {
        Some((_, holder, until)) if holder != owner && until > micros(now) => {
            return Err(StoreError::Conflict(format!(
                "a run of {job} is in progress: {holder} holds its lease until {}",
                timestamp(until)?
            )));
        }
        // Its holder stopped renewing the lease (killed, or gone): resume from the cursor.
        Some((run_id, _, _)) => {
            tx.execute(
                "UPDATE job_runs SET lease_owner = ?2, lease_until = ?3 WHERE run_id = ?1",
                params![run_id, owner, micros(lease_until)],
            )
            .map_err(map_err)?;
            run_id
        }
        None => {
            let run_id = format!("{:032x}", rand::random::<u128>());
            tx.execute(
                "INSERT INTO job_runs (run_id, job, status, processed, started_at, lease_owner, lease_until) \
                 VALUES (?1, ?2, 'in_progress', 0, ?3, ?4, ?5)",
                params![run_id, job, micros(now), owner, micros(lease_until)],
            )
            .map_err(map_err)?;
            run_id
        }
    };
    let claimed = run(&tx, &run_id)?;
    tx.commit().map_err(map_err)?;
    Ok(claimed)
}

/// Replaces every aggregate of one organization by what its raw events give.
pub(super) fn rebuild_organization(tx: &Transaction<'_>, org: &str) -> Result<u64> {
    const BATCH: i64 = 50_000;
    for table in crate::sql::AGGREGATE_TABLES {
        tx.execute(&format!("DELETE FROM {table} WHERE organization_id = ?1"), [org]).map_err(map_err)?;
    }
    tx.execute("UPDATE users SET last_activity = NULL WHERE organization_id = ?1", [org]).map_err(map_err)?;
    let mut after = String::new();
    let mut replayed = 0;
    loop {
        let mut batch = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT event_id, organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
                     input_tokens, output_tokens, cost_nanos, latency_ms FROM events \
                     WHERE organization_id = ?1 AND event_id > ?2 ORDER BY event_id LIMIT ?3",
                )
                .map_err(map_err)?;
            let mut rows = stmt.query(params![org, after, BATCH]).map_err(map_err)?;
            while let Some(r) = rows.next().map_err(map_err)? {
                after = r.get(0).map_err(map_err)?;
                batch.push(event_row(r)?);
            }
        }
        if batch.is_empty() {
            return Ok(replayed);
        }
        replayed += batch.len() as u64;
        apply(tx, &Rollup::of(&batch))?;
    }
}

/// Replaces what the user report keeps of one organization's users (all-time and billing-period
/// figures, last activity) by what its raw events give: the organization's events, stored
/// together, are read in user order and folded a user at a time; returns how many it read. The hourly cells are left to
/// `tally aggregates rebuild`: the report does not read them for a recorded period.
pub(super) fn rebuild_user_figures(tx: &Transaction<'_>, org: &str) -> Result<u64> {
    let period = recorded_period(tx, org)?;
    tx.execute("DELETE FROM user_usage WHERE organization_id = ?1", [org]).map_err(map_err)?;
    tx.execute("DELETE FROM user_usage_period WHERE organization_id = ?1", [org]).map_err(map_err)?;
    // Users whose last activity no event backs any more lose it at the end.
    let mut unbacked: HashSet<String> = {
        let mut stmt =
            tx.prepare_cached("SELECT user_id FROM users WHERE organization_id = ?1 AND last_activity IS NOT NULL").map_err(map_err)?;
        stmt.query_map([org], |r| r.get(0)).map_err(map_err)?.collect::<rusqlite::Result<_>>().map_err(map_err)?
    };
    let mut writer = FiguresWriter::new(tx, org)?;
    let mut events = tx
        .prepare_cached(
            "SELECT user_id, ts, usage_type, quantity, status, input_tokens, output_tokens, cost_nanos, latency_ms              FROM events WHERE organization_id = ?1 ORDER BY user_id",
        )
        .map_err(map_err)?;
    let mut rows = events.query([org]).map_err(map_err)?;
    let (mut user, mut figures, mut read) = (String::new(), UserFigures::default(), 0);
    while let Some(r) = rows.next().map_err(map_err)? {
        read += 1;
        let row_user = r.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(map_err)?;
        if row_user != user {
            writer.write(&user, &figures)?;
            unbacked.remove(&user);
            row_user.clone_into(&mut user);
            figures = UserFigures::default();
        }
        let at = timestamp(r.get(1).map_err(map_err)?)?;
        let usage_type = r.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(map_err)?;
        let llm = LlmFields::from_columns(LlmColumns {
            model: None,
            provider: None,
            status: r.get(4).map_err(map_err)?,
            input_tokens: r.get(5).map_err(map_err)?,
            output_tokens: r.get(6).map_err(map_err)?,
            cost_nanos: r.get(7).map_err(map_err)?,
            latency_ms: r.get(8).map_err(map_err)?,
        });
        figures.add(usage_type, at, &Aggregate::of_parts(r.get(3).map_err(map_err)?, at, llm.as_ref()), period);
    }
    writer.write(&user, &figures)?;
    unbacked.remove(&user);
    for user in unbacked {
        writer.write(&user, &UserFigures::default())?;
    }
    Ok(read)
}

/// Writes a user's rebuilt figures into emptied tables.
struct FiguresWriter<'t> {
    org: &'t str,
    all_time: rusqlite::CachedStatement<'t>,
    period: rusqlite::CachedStatement<'t>,
    activity: rusqlite::CachedStatement<'t>,
}

impl<'t> FiguresWriter<'t> {
    fn new(tx: &'t Transaction<'_>, org: &'t str) -> Result<Self> {
        Ok(FiguresWriter {
            org,
            all_time: tx.prepare_cached(&upsert_sql("user_usage", &sql::USER_KEYS)).map_err(map_err)?,
            period: tx.prepare_cached(&upsert_sql("user_usage_period", &sql::USER_KEYS)).map_err(map_err)?,
            activity: tx
                .prepare_cached(
                    "UPDATE users SET last_activity = ?3 WHERE organization_id = ?1 AND user_id = ?2 AND last_activity IS NOT ?3",
                )
                .map_err(map_err)?,
        })
    }

    fn write(&mut self, user: &str, figures: &UserFigures) -> Result<()> {
        if user.is_empty() {
            return Ok(());
        }
        for (usage_type, a) in &figures.all_time {
            upsert(&mut self.all_time, &[&self.org, &user, usage_type], a)?;
        }
        for (usage_type, a) in &figures.period {
            upsert(&mut self.period, &[&self.org, &user, usage_type], a)?;
        }
        self.activity.execute(params![self.org, user, figures.last_activity.map(micros)]).map_err(map_err)?;
        Ok(())
    }
}

pub(super) fn advance(
    conn: &mut Connection,
    run_id: &str,
    owner: &str,
    max_orgs: u32,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<JobRun> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let renewed = tx
        .execute(
            "UPDATE job_runs SET lease_until = ?3 WHERE run_id = ?1 AND lease_owner = ?2 AND status = 'in_progress'",
            params![run_id, owner, micros(lease_until)],
        )
        .map_err(map_err)?;
    if renewed == 0 {
        return Err(StoreError::Conflict(format!("job run {run_id} is no longer held by {owner}")));
    }
    let cursor = run(&tx, run_id)?.cursor.unwrap_or_default();
    let orgs: Vec<String> = {
        let mut stmt = tx
            .prepare_cached("SELECT organization_id FROM organizations WHERE organization_id > ?1 ORDER BY organization_id LIMIT ?2")
            .map_err(map_err)?;
        let rows = stmt.query_map(params![cursor, max_orgs], |r| r.get(0)).map_err(map_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
    };
    match orgs.last() {
        None => {
            tx.execute("UPDATE job_runs SET status = 'completed', finished_at = ?2 WHERE run_id = ?1", params![run_id, micros(now)])
                .map_err(map_err)?;
        }
        Some(last) => {
            let mut replayed = 0;
            for org in &orgs {
                replayed += rebuild_user_figures(&tx, org)?;
            }
            tx.execute(
                "UPDATE job_runs SET cursor = ?2, processed = processed + ?3 WHERE run_id = ?1",
                params![run_id, last, replayed as i64],
            )
            .map_err(map_err)?;
        }
    }
    let advanced = run(&tx, run_id)?;
    tx.commit().map_err(map_err)?;
    Ok(advanced)
}

pub(super) fn abort(conn: &Connection, run_id: &str, error: &str, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE job_runs SET status = 'aborted', last_error = ?2, finished_at = ?3 WHERE run_id = ?1 AND status = 'in_progress'",
        params![run_id, error, micros(now)],
    )
    .map_err(map_err)?;
    Ok(())
}

pub(super) fn runs(conn: &Connection, job: &str) -> Result<Vec<JobRun>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE job = ?1 ORDER BY started_at DESC, run_id");
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query([job]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(run_row(r)?);
    }
    Ok(out)
}

pub(super) fn finish(conn: &Connection, run_id: &str, owner: &str, now: Timestamp) -> Result<()> {
    let done = conn
        .execute(
            "UPDATE job_runs SET status = 'completed', finished_at = ?3 WHERE run_id = ?1 AND lease_owner = ?2 AND status = 'in_progress'",
            params![run_id, owner, micros(now)],
        )
        .map_err(map_err)?;
    if done == 0 {
        return Err(StoreError::Conflict(format!("job run {run_id} is no longer held by {owner}")));
    }
    Ok(())
}
