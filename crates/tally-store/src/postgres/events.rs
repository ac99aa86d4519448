//! Usage events and their roll-ups on PostgreSQL.

use super::map_err;
use crate::range::{one_day_each, split};
use crate::sql::{self, Dialect};
use crate::{
    AggregatesFingerprint, CellScope, LatencyDays, MonthCells, Result, StoreError, Subject, TimeRange, UsageFilter, UsageTotal,
    first_occurrences, rollup_of,
};
use jiff::Timestamp;
use jiff::civil::Date;
use std::collections::{BTreeMap, HashMap, HashSet};
use tally_domain::event::{LlmColumns, LlmStatus};
use tally_domain::llm::Latencies;
use tally_domain::llm::latency::{DayLatencies, LatencyHistogram};
use tally_domain::rollup::{Aggregate, LlmDay, LlmDayKey, OrgCellKey, OrgDayKey, Rollup, sorted, sorted_refs};
use tally_domain::series::Cell;
use tally_domain::{EventId, LlmFields, Money, OrganizationId, TeamId, UsageEvent, UsageTypeKey, UserId};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

const INSERT_EVENTS: &str = "INSERT INTO events (organization_id, event_id, ts, user_id, team_id, usage_type, quantity, \
     properties, model, provider, status, input_tokens, output_tokens, cost_nanos, latency_ms, received_at, price_version, \
     cached_input_tokens) \
     SELECT o, i, t, u, tm, ty, q, p::jsonb, m, pr, st, it, ot, c, l, $16, pv, ci FROM unnest($1::text[], $2::text[], \
     $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[], \
     $12::int8[], $13::int8[], $14::int8[], $15::int8[], $17::int8[], $18::int8[]) AS x(o, i, t, u, tm, ty, q, p, m, pr, st, it, ot, c, l, pv, ci) \
     ON CONFLICT DO NOTHING RETURNING organization_id, event_id";

pub(super) async fn record(conn: &mut Client, events: &[UsageEvent]) -> Result<Vec<bool>> {
    let (candidates, mut stored) = first_occurrences(events);
    let picked: Vec<&UsageEvent> = candidates.iter().map(|&i| &events[i]).collect();
    let llms: Vec<Option<&LlmFields>> = picked.iter().map(|e| e.llm.as_ref()).collect();
    let orgs: Vec<&str> = picked.iter().map(|e| e.organization_id.as_str()).collect();
    let ids: Vec<&str> = picked.iter().map(|e| e.id.as_str()).collect();
    let times: Vec<Timestamp> = picked.iter().map(|e| e.timestamp).collect();
    let users: Vec<&str> = picked.iter().map(|e| e.user_id.as_str()).collect();
    let teams: Vec<Option<&str>> = picked.iter().map(|e| e.team_id.as_ref().map(TeamId::as_str)).collect();
    let types: Vec<&str> = picked.iter().map(|e| e.usage_type.as_str()).collect();
    let quantities: Vec<f64> = picked.iter().map(|e| e.quantity).collect();
    let properties: Vec<Option<&str>> = picked.iter().map(|e| e.properties.as_deref()).collect();
    let models: Vec<Option<&str>> = llms.iter().map(|l| l.and_then(|l| l.model.as_deref())).collect();
    let providers: Vec<Option<&str>> = llms.iter().map(|l| l.and_then(|l| l.provider.as_deref())).collect();
    let statuses: Vec<Option<&str>> = llms.iter().map(|l| l.and_then(|l| l.status.map(LlmStatus::as_str))).collect();
    let input: Vec<Option<i64>> = llms.iter().map(|l| l.map(|l| l.input_tokens)).collect();
    let output: Vec<Option<i64>> = llms.iter().map(|l| l.map(|l| l.output_tokens)).collect();
    let costs: Vec<Option<i64>> = llms.iter().map(|l| l.and_then(|l| l.cost.map(Money::nanos))).collect();
    let latencies: Vec<Option<i64>> = llms.iter().map(|l| l.and_then(|l| l.latency_ms)).collect();
    let price_versions: Vec<Option<i64>> = llms.iter().map(|l| l.and_then(|l| l.price_version)).collect();
    let cached: Vec<Option<i64>> = llms.iter().map(|l| l.map(|l| l.cached_input_tokens).filter(|c| *c > 0)).collect();
    let received_at = Timestamp::now();

    let tx = conn.transaction().await.map_err(map_err)?;
    let inserted = tx
        .query(
            INSERT_EVENTS,
            &[
                &orgs,
                &ids,
                &times,
                &users,
                &teams,
                &types,
                &quantities,
                &properties,
                &models,
                &providers,
                &statuses,
                &input,
                &output,
                &costs,
                &latencies,
                &received_at,
                &price_versions,
                &cached,
            ],
        )
        .await
        .map_err(map_err)?;
    let new: HashSet<(&str, &str)> = inserted.iter().map(|r| (r.get::<_, &str>(0), r.get::<_, &str>(1))).collect();
    for &i in &candidates {
        stored[i] = new.contains(&(events[i].organization_id.as_str(), events[i].id.as_str()));
    }
    apply(&tx, &rollup_of(events, &stored)).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(stored)
}

/// The twelve aggregate columns as arrays, in [`sql::AGG_COLUMNS`] order.
pub(super) struct AggArrays {
    count: Vec<i64>,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    last_ts: Vec<Timestamp>,
    last_value: Vec<f64>,
    llm_successes: Vec<i64>,
    llm_failures: Vec<i64>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    cost_nanos: Vec<i64>,
    latency_ms_sum: Vec<i64>,
}

impl AggArrays {
    pub(super) fn of<'a>(aggs: impl Iterator<Item = &'a Aggregate>) -> Self {
        let mut a = AggArrays {
            count: vec![],
            sum: vec![],
            min: vec![],
            max: vec![],
            last_ts: vec![],
            last_value: vec![],
            llm_successes: vec![],
            llm_failures: vec![],
            input_tokens: vec![],
            output_tokens: vec![],
            cost_nanos: vec![],
            latency_ms_sum: vec![],
        };
        for g in aggs {
            a.count.push(g.count);
            a.sum.push(g.sum);
            a.min.push(g.min);
            a.max.push(g.max);
            a.last_ts.push(g.last_ts);
            a.last_value.push(g.last_value);
            a.llm_successes.push(g.llm_successes);
            a.llm_failures.push(g.llm_failures);
            a.input_tokens.push(g.input_tokens);
            a.output_tokens.push(g.output_tokens);
            a.cost_nanos.push(g.cost_nanos);
            a.latency_ms_sum.push(g.latency_ms_sum);
        }
        a
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.count,
            &self.sum,
            &self.min,
            &self.max,
            &self.last_ts,
            &self.last_value,
            &self.llm_successes,
            &self.llm_failures,
            &self.input_tokens,
            &self.output_tokens,
            &self.cost_nanos,
            &self.latency_ms_sum,
        ]
    }
}

const AGG_TYPES: [&str; 12] =
    ["int8", "float8", "float8", "float8", "timestamptz", "float8", "int8", "int8", "int8", "int8", "int8", "int8"];

pub(super) fn upsert_sql(table: &str, keys: &[&str], key_types: &[&str]) -> String {
    let columns: Vec<&str> = keys.iter().chain(sql::AGG_COLUMNS.iter()).copied().collect();
    let arrays: Vec<String> = key_types.iter().chain(AGG_TYPES.iter()).enumerate().map(|(i, t)| format!("${}::{t}[]", i + 1)).collect();
    format!(
        "INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays}) {merge}",
        cols = columns.join(", "),
        arrays = arrays.join(", "),
        merge = sql::merge_clause(Dialect::Postgres, table, keys)
    )
}

/// One key column of sorted roll-up rows, as an array parameter.
fn column<K, V, T>(rows: &[(K, V)], f: impl Fn(&K) -> T) -> Vec<T> {
    rows.iter().map(|(k, _)| f(k)).collect()
}

/// Upserts organization-wide cells (hourly, daily or monthly) in one statement.
async fn upsert_organization_cells(
    tx: &Transaction<'_>,
    table: &str,
    keys: &[&str; 6],
    cells: &[(OrgCellKey<'_>, Aggregate)],
) -> Result<()> {
    let (org, at) = (column(cells, |k| k.organization_id), column(cells, |k| k.at));
    let (ty, team) = (column(cells, |k| k.usage_type), column(cells, |k| k.team_id));
    let (model, provider) = (column(cells, |k| k.model), column(cells, |k| k.provider));
    let aggs = AggArrays::of(cells.iter().map(|(_, a)| a));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &at, &ty, &team, &model, &provider];
    params.extend(aggs.params());
    let sql = upsert_sql(table, keys, &["text", "timestamptz", "text", "text", "text", "text"]);
    tx.execute(&sql, &params).await.map_err(map_err)?;
    Ok(())
}

/// Applies a roll-up inside the caller's transaction, a statement per table.
pub(super) async fn apply(tx: &Transaction<'_>, rollup: &Rollup<'_>) -> Result<()> {
    let orgs = sorted(&rollup.organizations);
    let (ids, at): (Vec<&str>, Vec<Timestamp>) = orgs.into_iter().unzip();
    let registered: Vec<String> = tx
        .query(
            "INSERT INTO organizations (organization_id, name, created_at) SELECT o, o, t FROM unnest($1::text[], $2::timestamptz[]) AS x(o, t) \
             ON CONFLICT DO NOTHING RETURNING organization_id",
            &[&ids, &at],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Which period each organization's kept figures cover, read by a statement of its own so
    // that it sees what a concurrent batch that registered one of them recorded (ours waited for
    // it to commit). One registered here has no cells yet: its period (a subscription saved ahead
    // of its first event may set it) is recorded empty, and this batch adds to it.
    const RECORDED: &str = "SELECT organization_id, period_start, period_end FROM billing_periods WHERE organization_id = ANY($1)";
    let rows = if registered.is_empty() {
        tx.query(RECORDED, &[&ids]).await
    } else {
        let (month_start, month_end) = crate::periods::calendar_month(Timestamp::now());
        let sql = format!(
            "WITH recorded AS (INSERT INTO billing_periods (organization_id, period_start, period_end) \
               SELECT organization_id, period_start, period_end FROM ({}) e WHERE organization_id = ANY($4) \
               ON CONFLICT DO NOTHING RETURNING organization_id, period_start, period_end) \
             SELECT organization_id, period_start, period_end FROM recorded UNION ALL {RECORDED}",
            crate::periods::expected("$2::timestamptz", "$3::timestamptz"),
        );
        tx.query(&sql, &[&ids, &month_start, &month_end, &registered]).await
    };
    let periods: HashMap<String, (Timestamp, Timestamp)> =
        rows.map_err(map_err)?.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();

    let teams = sorted(&rollup.teams);
    let (orgs, ids) = (column(&teams, |t| t.organization_id), column(&teams, |t| t.team_id));
    let at: Vec<Timestamp> = teams.iter().map(|(_, t)| *t).collect();
    tx.execute(
        "INSERT INTO teams (organization_id, team_id, name, created_at) SELECT o, i, i, t \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS x(o, i, t) ON CONFLICT DO NOTHING",
        &[&orgs, &ids, &at],
    )
    .await
    .map_err(map_err)?;

    let users = sorted(&rollup.users);
    let (orgs, ids) = (column(&users, |u| u.organization_id), column(&users, |u| u.user_id));
    let at: Vec<Timestamp> = users.iter().map(|(_, t)| *t).collect();
    tx.execute(
        "INSERT INTO users (organization_id, user_id, username, date_joined, last_activity) SELECT o, i, i, t, t \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS x(o, i, t) \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET last_activity = excluded.last_activity \
         WHERE users.last_activity IS NULL OR users.last_activity < excluded.last_activity",
        &[&orgs, &ids, &at],
    )
    .await
    .map_err(map_err)?;

    let hourly = sorted(&rollup.hourly);
    let (org, user, hours) = (column(&hourly, |k| k.organization_id), column(&hourly, |k| k.user_id), column(&hourly, |k| k.hour));
    let (ty, team) = (column(&hourly, |k| k.usage_type), column(&hourly, |k| k.team_id));
    let (model, provider) = (column(&hourly, |k| k.model), column(&hourly, |k| k.provider));
    let aggs = AggArrays::of(hourly.iter().map(|(_, a)| a));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &user, &hours, &ty, &team, &model, &provider];
    params.extend(aggs.params());
    let sql = upsert_sql("usage_hourly", &sql::HOURLY_KEYS, &["text", "text", "timestamptz", "text", "text", "text", "text"]);
    tx.execute(&sql, &params).await.map_err(map_err)?;

    upsert_organization_cells(tx, "usage_hourly_org", &sql::ORG_HOURLY_KEYS, &sorted(&rollup.org_hourly)).await?;
    upsert_organization_cells(tx, "usage_daily_org", &sql::ORG_DAILY_KEYS, &sorted(&rollup.org_daily)).await?;
    upsert_organization_cells(tx, "usage_weekly_org", &sql::ORG_WEEKLY_KEYS, &sorted(&rollup.org_weekly)).await?;
    upsert_organization_cells(tx, "usage_monthly_org", &sql::ORG_MONTH_KEYS, &sorted(&rollup.org_monthly)).await?;

    let totals = sorted(&rollup.user_totals);
    let (org, user, ty) = (column(&totals, |k| k.organization_id), column(&totals, |k| k.user_id), column(&totals, |k| k.usage_type));
    let aggs = AggArrays::of(totals.iter().map(|(_, a)| a));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &user, &ty];
    params.extend(aggs.params());
    tx.execute(&upsert_sql("user_usage", &sql::USER_KEYS, &["text", "text", "text"]), &params).await.map_err(map_err)?;

    let kept = sorted(&rollup.period_totals(|org| periods.get(org).copied()));
    if !kept.is_empty() {
        let (org, user, ty) = (column(&kept, |k| k.organization_id), column(&kept, |k| k.user_id), column(&kept, |k| k.usage_type));
        let aggs = AggArrays::of(kept.iter().map(|(_, a)| a));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &user, &ty];
        params.extend(aggs.params());
        tx.execute(&upsert_sql("user_usage_period", &sql::USER_KEYS, &["text", "text", "text"]), &params).await.map_err(map_err)?;
    }

    let months = sorted(&rollup.user_months);
    let (org, user, ty) = (column(&months, |k| k.organization_id), column(&months, |k| k.user_id), column(&months, |k| k.usage_type));
    let month: Vec<Date> = column(&months, |k| k.month);
    let aggs = AggArrays::of(months.iter().map(|(_, a)| a));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &user, &ty, &month];
    params.extend(aggs.params());
    // The organizations' monthly figures per type, whose sums of latest values move by what each
    // user's monthly upsert returns (new and replaced value), in the same statement; rows are
    // locked in key order.
    let org_months = sorted(&rollup.org_type_months);
    let (o_org, o_month, o_type) =
        (column(&org_months, |k| k.organization_id), column(&org_months, |k| k.month), column(&org_months, |k| k.usage_type));
    let o_aggs = AggArrays::of(org_months.iter().map(|(_, m)| &m.aggregate));
    params.extend([&o_org as &(dyn ToSql + Sync), &o_month, &o_type]);
    params.extend(o_aggs.params());
    let first = 4 + sql::AGG_COLUMNS.len() + 1;
    let arrays: Vec<String> =
        ["text", "timestamptz", "text"].iter().chain(AGG_TYPES.iter()).enumerate().map(|(i, t)| format!("${}::{t}[]", first + i)).collect();
    let columns: Vec<&str> = sql::ORG_TYPE_MONTH_KEYS.iter().chain(sql::AGG_COLUMNS.iter()).copied().collect();
    let names: Vec<String> = columns.iter().map(|c| format!("x.{c}")).collect();
    let sql = format!(
        "WITH changed AS ({}{}), \
         changes AS (SELECT organization_id, usage_type, month, sum(last_value - replaced_value) AS change FROM changed GROUP BY 1, 2, 3) \
         INSERT INTO usage_monthly_org_type ({}, latest_sum) \
         SELECT {}, coalesce(c.change, 0) FROM unnest({}) AS x({}) \
         LEFT JOIN changes c ON c.organization_id = x.organization_id AND c.usage_type = x.usage_type \
         AND c.month = (x.month AT TIME ZONE 'UTC')::date \
         ORDER BY x.organization_id, x.month, x.usage_type {}",
        upsert_sql("user_usage_monthly", &sql::MONTH_KEYS, &["text", "text", "text", "date"]),
        sql::USER_MONTH_RETURNING,
        columns.join(", "),
        names.join(", "),
        arrays.join(", "),
        columns.join(", "),
        sql::org_type_month_merge(Dialect::Postgres)
    );
    tx.execute(&sql, &params).await.map_err(map_err)?;

    // The LLM tables: statements only when the batch has rows for them.
    if !rollup.llm_days.is_empty() {
        // Pipelined: each table's rows are read and locked before it is written, the user
        // days' statement sent first by every transaction, so locks are taken in one order.
        let (days, org_days) = (sorted_refs(&rollup.llm_days), sorted_refs(&rollup.org_latency_days));
        tokio::try_join!(llm_days(tx, &days), org_latency_days(tx, &org_days))?;
    }
    if !rollup.unpriced.is_empty() {
        let unpriced = sorted(&rollup.unpriced);
        let (org, model) = (column(&unpriced, |k| k.organization_id), column(&unpriced, |k| k.model));
        let requests: Vec<i64> = unpriced.iter().map(|(_, u)| u.requests).collect();
        let seen: Vec<Timestamp> = unpriced.iter().map(|(_, u)| u.last_seen).collect();
        tx.execute(&sql::unpriced_upsert(Dialect::Postgres), &[&org, &model, &requests, &seen]).await.map_err(map_err)?;
    }
    Ok(())
}

pub(super) async fn totals(conn: &Client, subject: &Subject, range: TimeRange) -> Result<Vec<UsageTotal>> {
    let org = subject.organization_id().as_str();
    let user = match subject {
        Subject::User { user_id, .. } => Some(user_id.as_str()),
        Subject::Organization(_) => None,
    };
    let mut merged: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    let parts = split(range);
    let mut queries: Vec<(&str, Option<Timestamp>, Option<Timestamp>)> = Vec::new();
    if let Some(hours) = parts.hours {
        let sql = match (user, hours.from, hours.to) {
            // A user's all-time totals are kept ready in user_usage.
            (Some(_), None, None) => {
                "SELECT usage_type, count, sum FROM user_usage WHERE organization_id = $1 AND user_id = $2 \
                 AND $3::timestamptz IS NULL AND $4::timestamptz IS NULL"
            }
            (Some(_), _, _) => {
                "SELECT usage_type, sum(count)::int8, sum(sum) FROM usage_hourly WHERE organization_id = $1 AND user_id = $2 \
                 AND ($3::timestamptz IS NULL OR hour >= $3) AND ($4::timestamptz IS NULL OR hour < $4) GROUP BY usage_type"
            }
            (None, _, _) => {
                "SELECT usage_type, sum(count)::int8, sum(sum) FROM usage_hourly_org WHERE organization_id = $1 AND $2::text IS NULL \
                 AND ($3::timestamptz IS NULL OR hour >= $3) AND ($4::timestamptz IS NULL OR hour < $4) GROUP BY usage_type"
            }
        };
        queries.push((sql, hours.from, hours.to));
    }
    for (from, to) in parts.edges {
        // An edge is under an hour of one organization's events: the time index narrows it enough.
        let sql = "SELECT usage_type, count(*), sum(quantity) FROM events WHERE organization_id = $1 \
             AND ($2::text IS NULL OR user_id = $2) AND ts >= $3 AND ts < $4 GROUP BY usage_type";
        queries.push((sql, Some(from), Some(to)));
    }
    for (sql, from, to) in queries {
        for row in conn.query(sql, &[&org, &user, &from, &to]).await.map_err(map_err)? {
            let e = merged.entry(row.get(0)).or_default();
            e.0 += row.get::<_, i64>(1);
            e.1 += row.get::<_, f64>(2);
        }
    }
    Ok(merged.into_iter().map(|(usage_type, (count, sum))| UsageTotal { usage_type, count, sum }).collect())
}

/// Replays every stored event through the roll-up code in one transaction. Writers are locked out
/// for its duration (`SHARE` mode), so no event can slip between the wipe and the replay.
pub(super) async fn rebuild(conn: &mut Client) -> Result<u64> {
    const BATCH: i64 = 50_000;
    let tx = conn.transaction().await.map_err(map_err)?;
    tx.batch_execute(&format!(
        "LOCK TABLE events IN SHARE MODE; {} UPDATE users SET last_activity = NULL WHERE last_activity IS NOT NULL;",
        sql::AGGREGATE_TABLES.map(|t| format!("DELETE FROM {t};")).join(" ")
    ))
    .await
    .map_err(map_err)?;
    let mut after = (String::new(), String::new());
    let mut replayed = 0u64;
    loop {
        let rows = tx
            .query(
                "SELECT organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
                 input_tokens, output_tokens, cost_nanos, latency_ms FROM events \
                 WHERE (organization_id, event_id) > ($1, $2) ORDER BY organization_id, event_id LIMIT $3",
                &[&after.0, &after.1, &BATCH],
            )
            .await
            .map_err(map_err)?;
        let Some(last) = rows.last() else { break };
        after = (last.get(0), last.get(1));
        let batch = rows.iter().map(event_row).collect::<Result<Vec<_>>>()?;
        replayed += batch.len() as u64;
        apply(&tx, &Rollup::of(&batch)).await?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(replayed)
}

pub(super) fn event_row(r: &tokio_postgres::Row) -> Result<UsageEvent> {
    let llm = LlmColumns {
        model: r.get(7),
        provider: r.get(8),
        status: r.get(9),
        input_tokens: r.get(10),
        output_tokens: r.get(11),
        cost_nanos: r.get(12),
        latency_ms: r.get(13),
    };
    let corrupt = |e: tally_domain::ids::IdError| StoreError::corrupt(e);
    Ok(UsageEvent {
        organization_id: OrganizationId::parse(r.get::<_, String>(0)).map_err(corrupt)?,
        id: EventId::parse(r.get::<_, String>(1)).map_err(corrupt)?,
        timestamp: r.get(2),
        user_id: UserId::parse(r.get::<_, String>(3)).map_err(corrupt)?,
        team_id: r.get::<_, Option<String>>(4).map(TeamId::parse).transpose().map_err(corrupt)?,
        usage_type: UsageTypeKey::parse(r.get::<_, String>(5)).map_err(StoreError::corrupt)?,
        quantity: r.get(6),
        properties: None,
        llm: LlmFields::from_columns(llm),
    })
}

pub(super) async fn cells(conn: &Client, filter: &UsageFilter, from: Timestamp, to: Timestamp, scope: CellScope) -> Result<Vec<Cell>> {
    let (sql, values) = sql::cells_query(Dialect::Postgres, filter, scope);
    Ok(filtered(conn, &sql, &values, from, to).await?.iter().map(cell_row).collect())
}

pub(super) async fn month_cells(
    conn: &Client,
    filter: &UsageFilter,
    from: Timestamp,
    to: Timestamp,
    cells: MonthCells,
    summed: bool,
) -> Result<Vec<Cell>> {
    let (sql, values) = sql::month_cells_query(Dialect::Postgres, filter, cells, summed);
    Ok(filtered(conn, &sql, &values, from, to).await?.iter().map(cell_row).collect())
}

pub(super) async fn week_cells(conn: &Client, filter: &UsageFilter, from: Timestamp, to: Timestamp, summed: bool) -> Result<Vec<Cell>> {
    let (sql, values) = sql::week_cells_query(Dialect::Postgres, filter, summed);
    Ok(filtered(conn, &sql, &values, from, to).await?.iter().map(cell_row).collect())
}

pub(super) async fn day_cells(conn: &Client, filter: &UsageFilter, buckets: &[(Timestamp, Timestamp)], summed: bool) -> Result<Vec<Cell>> {
    let (Some((from, _)), Some((_, to))) = (buckets.first(), buckets.last()) else { return Ok(Vec::new()) };
    let (sql, values) = if one_day_each(buckets) {
        sql::day_cells_query(Dialect::Postgres, filter, summed)
    } else {
        sql::bucketed_day_cells_query(filter, buckets, summed)
    };
    Ok(filtered(conn, &sql, &values, *from, *to).await?.iter().map(cell_row).collect())
}

/// Runs a filtered query whose first two parameters are the time bounds and whose filter values
/// follow.
async fn filtered(conn: &Client, sql: &str, values: &[String], from: Timestamp, to: Timestamp) -> Result<Vec<tokio_postgres::Row>> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&from, &to];
    params.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
    conn.query(sql, &params).await.map_err(map_err)
}

/// A cell as the cell queries select it: time, the six key columns, the aggregate.
fn cell_row(r: &tokio_postgres::Row) -> Cell {
    Cell {
        at: r.get(0),
        organization_id: r.get(1),
        user_id: r.get(2),
        usage_type: r.get(3),
        team_id: r.get(4),
        model: r.get(5),
        provider: r.get(6),
        aggregate: aggregate_row(r, 7),
    }
}

/// Latency buckets merged on this side rather than by the server (which would parse and print
/// every touched object): the stored objects of the rows a batch touches are read and locked in
/// key order (the order every upsert takes its locks in), merged here, and written back whole by
/// one upsert, while the rows not stored yet go in by another, sent at once (pipelined), whose
/// buckets still merge in SQL should another transaction insert the same row first (none can
/// today: the same user's rows upserted earlier in the batch already put such transactions one
/// after the other). `lock` selects `(ordinality, buckets)` of the rows whose keys are the
/// parameters.
async fn merged_buckets(
    tx: &Transaction<'_>,
    lock: &str,
    keys: &[&(dyn ToSql + Sync)],
    histograms: impl Iterator<Item = LatencyHistogram>,
) -> Result<Vec<(String, bool)>> {
    let mut histograms: Vec<(LatencyHistogram, bool)> = histograms.map(|h| (h, false)).collect();
    for r in tx.query(lock, keys).await.map_err(map_err)? {
        let at = usize::try_from(r.get::<_, i64>(0) - 1).map_err(StoreError::corrupt)?;
        let stored = LatencyHistogram::from_stored(r.get(1), 0).map_err(StoreError::corrupt)?;
        let (histogram, seen) = histograms.get_mut(at).ok_or_else(|| StoreError::corrupt("a locked row outside the batch"))?;
        histogram.merge(&stored);
        *seen = true;
    }
    Ok(histograms.into_iter().map(|(h, seen)| (h.buckets_json(), seen)).collect())
}

/// The rows whose stored row was seen (and locked), and the others.
fn split_seen<T>(rows: impl Iterator<Item = (T, bool)>) -> (Vec<T>, Vec<T>) {
    let (mut stored, mut new) = (Vec::new(), Vec::new());
    for (row, seen) in rows {
        if seen { stored.push(row) } else { new.push(row) }
    }
    (stored, new)
}

async fn llm_days(tx: &Transaction<'_>, days: &[(LlmDayKey<'_>, &LlmDay)]) -> Result<()> {
    let (org, user, day) = (column(days, |k| k.organization_id), column(days, |k| k.user_id), column(days, |k| k.day));
    let (model, provider) = (column(days, |k| k.model), column(days, |k| k.provider));
    let lock = "SELECT k.i, d.buckets FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) \
                WITH ORDINALITY AS k(o, u, d, m, p, i) JOIN llm_daily d ON d.organization_id = k.o AND d.user_id = k.u \
                AND d.day = k.d AND d.model = k.m AND d.provider = k.p \
                ORDER BY d.organization_id, d.user_id, d.day, d.model, d.provider FOR UPDATE OF d";
    let buckets = merged_buckets(tx, lock, &[&org, &user, &day, &model, &provider], days.iter().map(|(_, d)| d.latencies.clone())).await?;
    let (stored, new) = split_seen(days.iter().zip(buckets).map(|((k, d), (b, seen))| ((*k, (&d.aggregate, b)), seen)));
    tokio::try_join!(upsert_llm_days(tx, &stored, sql::Buckets::Replace), upsert_llm_days(tx, &new, sql::Buckets::Merge))?;
    Ok(())
}

async fn upsert_llm_days(tx: &Transaction<'_>, rows: &[(LlmDayKey<'_>, (&Aggregate, String))], mode: sql::Buckets) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (org, user, day) = (column(rows, |k| k.organization_id), column(rows, |k| k.user_id), column(rows, |k| k.day));
    let (model, provider) = (column(rows, |k| k.model), column(rows, |k| k.provider));
    let aggs = AggArrays::of(rows.iter().map(|(_, (a, _))| *a));
    let buckets: Vec<&str> = rows.iter().map(|(_, (_, b))| b.as_str()).collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&org, &user, &day, &model, &provider];
    params.extend(aggs.params());
    params.push(&buckets);
    tx.execute(&sql::llm_day_upsert(Dialect::Postgres, &AGG_TYPES, mode), &params).await.map_err(map_err)?;
    Ok(())
}

async fn org_latency_days(tx: &Transaction<'_>, days: &[(OrgDayKey<'_>, &DayLatencies)]) -> Result<()> {
    let (org, day) = (column(days, |k| k.organization_id), column(days, |k| k.day));
    let lock = "SELECT k.i, d.buckets FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS k(o, d, i) \
                JOIN llm_latency_daily_org d ON d.organization_id = k.o AND d.day = k.d \
                ORDER BY d.organization_id, d.day FOR UPDATE OF d";
    let buckets = merged_buckets(tx, lock, &[&org, &day], days.iter().map(|(_, d)| d.histogram.clone())).await?;
    let (stored, new) = split_seen(days.iter().zip(buckets).map(|((k, d), (b, seen))| ((*k, (*d, b)), seen)));
    tokio::try_join!(upsert_org_latency_days(tx, &stored, sql::Buckets::Replace), upsert_org_latency_days(tx, &new, sql::Buckets::Merge))?;
    Ok(())
}

async fn upsert_org_latency_days(
    tx: &Transaction<'_>,
    rows: &[(OrgDayKey<'_>, (&DayLatencies, String))],
    mode: sql::Buckets,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (org, day) = (column(rows, |k| k.organization_id), column(rows, |k| k.day));
    let requests: Vec<i64> = rows.iter().map(|(_, (d, _))| d.requests).collect();
    let sums: Vec<i64> = rows.iter().map(|(_, (d, _))| d.histogram.sum_ms).collect();
    let buckets: Vec<&str> = rows.iter().map(|(_, (_, b))| b.as_str()).collect();
    tx.execute(&sql::org_latency_upsert(Dialect::Postgres, mode), &[&org, &day, &requests, &sums, &buckets]).await.map_err(map_err)?;
    Ok(())
}

/// Reads the twelve aggregate columns starting at `first`.
pub(super) fn aggregate_row(r: &tokio_postgres::Row, first: usize) -> Aggregate {
    Aggregate {
        count: r.get(first),
        sum: r.get(first + 1),
        min: r.get(first + 2),
        max: r.get(first + 3),
        last_ts: r.get(first + 4),
        last_value: r.get(first + 5),
        llm_successes: r.get(first + 6),
        llm_failures: r.get(first + 7),
        input_tokens: r.get(first + 8),
        output_tokens: r.get(first + 9),
        cost_nanos: r.get(first + 10),
        latency_ms_sum: r.get(first + 11),
    }
}

pub(super) async fn events_between(
    conn: &Client,
    filter: &UsageFilter,
    from: Timestamp,
    to: Timestamp,
    with_properties: bool,
) -> Result<Vec<UsageEvent>> {
    let (sql, values) = sql::events_query(Dialect::Postgres, filter, with_properties);
    let rows = filtered(conn, &sql, &values, from, to).await?;
    rows.iter()
        .map(|r| {
            let mut event = event_row(r)?;
            if with_properties {
                event.properties = r.get(14);
            }
            Ok(event)
        })
        .collect()
}

pub(super) async fn any_between(conn: &Client, filter: &UsageFilter, from: Timestamp, to: Timestamp) -> Result<bool> {
    let (sql, values) = sql::any_event_query(Dialect::Postgres, filter);
    Ok(!filtered(conn, &sql, &values, from, to).await?.is_empty())
}

pub(super) async fn fingerprint(conn: &Client) -> Result<AggregatesFingerprint> {
    let r = conn.query_one(sql::FINGERPRINT, &[]).await.map_err(map_err)?;
    Ok(AggregatesFingerprint {
        hourly_rows: r.get(0),
        hourly_count: r.get(1),
        hourly_sum: r.get(2),
        hourly_cost_nanos: r.get(3),
        hourly_tokens: r.get(4),
        user_rows: r.get(5),
        user_count: r.get(6),
        user_sum: r.get(7),
        month_rows: r.get(8),
        month_count: r.get(9),
        latest_values_sum: r.get(10),
        users_with_activity: r.get(11),
        org_hourly_rows: r.get(12),
        org_hourly_count: r.get(13),
        org_hourly_sum: r.get(14),
        org_hourly_cost_nanos: r.get(15),
        org_latest_values_sum: r.get(16),
        latency_day_rows: r.get(17),
        latency_day_requests: r.get(18),
        latency_day_sum_ms: r.get(19),
        org_latency_day_rows: r.get(20),
        org_latency_day_requests: r.get(21),
        org_latency_day_sum_ms: r.get(22),
        unpriced_rows: r.get(23),
        unpriced_requests: r.get(24),
        org_monthly_rows: r.get(25),
        org_monthly_count: r.get(26),
        org_monthly_sum: r.get(27),
        org_monthly_latest_values_sum: r.get(28),
        llm_day_cost_nanos: r.get(29),
        llm_day_tokens: r.get(30),
        org_type_month_rows: r.get(31),
        org_type_month_count: r.get(32),
        org_type_month_latest_sum: r.get(33),
        org_type_month_sum: r.get(34),
        org_type_month_cost_nanos: r.get(35),
        period_rows: r.get(36),
        period_count: r.get(37),
        period_sum: r.get(38),
        period_cost_nanos: r.get(39),
        org_daily_rows: r.get(40),
        org_daily_count: r.get(41),
        org_daily_sum: r.get(42),
        org_daily_cost_nanos: r.get(43),
        org_daily_latest_values_sum: r.get(44),
        org_weekly_rows: r.get(45),
        org_weekly_count: r.get(46),
        org_weekly_sum: r.get(47),
        org_weekly_cost_nanos: r.get(48),
        org_weekly_latest_values_sum: r.get(49),
    })
}

pub(super) async fn llm_requests(
    conn: &Client,
    org: &OrganizationId,
    user: &UserId,
    q: &crate::LlmRequestQuery,
) -> Result<Vec<UsageEvent>> {
    let (sql, values) = sql::llm_requests_query(Dialect::Postgres, org.as_str(), user.as_str(), q);
    let upper = q.cursor.as_ref().map_or(q.to, |(t, _)| (*t).min(q.to));
    filtered(conn, &sql, &values, q.from, upper).await?.iter().map(event_row).collect()
}

pub(super) async fn llm_activity(conn: &Client, org: Option<&OrganizationId>, limit: u32) -> Result<Vec<UsageEvent>> {
    let sql = sql::llm_activity_query(Dialect::Postgres, org.is_some(), limit);
    let rows = match org {
        Some(o) => conn.query(&sql, &[&o.as_str()]).await,
        None => conn.query(&sql, &[]).await,
    }
    .map_err(map_err)?;
    rows.iter().map(event_row).collect()
}

/// The parameters of the LLM range queries (`sql::llm_latencies_query` and its siblings): the
/// organization, the user if one is named, then the bounds.
fn llm_range_params<'a>(org: &'a &str, user: &'a Option<&str>, from: &'a Timestamp, to: &'a Timestamp) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![org];
    params.extend(user.as_ref().map(|u| u as &(dyn ToSql + Sync)));
    params.extend([from as &(dyn ToSql + Sync), to]);
    params
}

pub(super) async fn llm_day_cells(
    conn: &Client,
    org: &OrganizationId,
    user: Option<&UserId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Cell>> {
    let sql = sql::llm_day_cells_query(Dialect::Postgres, user.is_some());
    let rows = conn.query(&sql, &llm_range_params(&org.as_str(), &user.map(UserId::as_str), &from, &to)).await.map_err(map_err)?;
    Ok(rows.iter().map(cell_row).collect())
}

pub(super) async fn llm_latencies(
    conn: &Client,
    org: &OrganizationId,
    user: Option<&UserId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Latencies> {
    let sql = sql::llm_latencies_query(Dialect::Postgres, user.is_some());
    let rows = conn.query(&sql, &llm_range_params(&org.as_str(), &user.map(UserId::as_str), &from, &to)).await.map_err(map_err)?;
    Ok(Latencies {
        values: rows.iter().filter_map(|r| r.get::<_, Option<i64>>(0)).collect(),
        first_request: rows.iter().map(|r| r.get::<_, Timestamp>(1)).min(),
    })
}

pub(super) async fn llm_latency_days(
    conn: &Client,
    org: &OrganizationId,
    user: Option<&UserId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<LatencyDays> {
    let sql = sql::llm_latency_days_query(Dialect::Postgres, user.is_some());
    let rows = conn.query(&sql, &llm_range_params(&org.as_str(), &user.map(UserId::as_str), &from, &to)).await.map_err(map_err)?;
    let mut days = LatencyDays::default();
    days.histogram.merge_all_stored(rows.iter().map(|r| (r.get::<_, &str>(3), r.get::<_, i64>(2)))).map_err(StoreError::corrupt)?;
    days.first_day = rows.iter().map(|r| r.get::<_, Timestamp>(0)).min();
    Ok(days)
}

pub(super) async fn llm_first_request(
    conn: &Client,
    org: &OrganizationId,
    user: Option<&UserId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Option<Timestamp>> {
    let sql = sql::llm_first_request_query(Dialect::Postgres, user.is_some());
    let row = conn.query_one(&sql, &llm_range_params(&org.as_str(), &user.map(UserId::as_str), &from, &to)).await.map_err(map_err)?;
    Ok(row.get(0))
}
