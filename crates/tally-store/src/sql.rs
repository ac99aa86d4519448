//! SQL text shared by both backends: the aggregate upserts differ only in how each dialect
//! spells "the smaller of two values", so they are generated here once.

use crate::UsageFilter;
use jiff::Timestamp;

/// The aggregate columns, in the order [`crate::sql::AGG_COLUMNS`] binds them.
pub const AGG_COLUMNS: [&str; 12] = [
    "count",
    "sum",
    "min",
    "max",
    "last_ts",
    "last_value",
    "llm_successes",
    "llm_failures",
    "input_tokens",
    "output_tokens",
    "cost_nanos",
    "latency_ms_sum",
];

#[derive(Clone, Copy)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The `n`th (from 1) bound parameter's placeholder.
    pub fn mark(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// Placeholders for parameters 1 to `n`, comma-separated.
    pub fn marks(self, n: usize) -> String {
        (1..=n).map(|i| self.mark(i)).collect::<Vec<_>>().join(", ")
    }

    fn least(self) -> &'static str {
        match self {
            Dialect::Sqlite => "min",
            Dialect::Postgres => "LEAST",
        }
    }

    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "max",
            Dialect::Postgres => "GREATEST",
        }
    }
}

/// `ON CONFLICT (keys) DO UPDATE SET …` that merges an incoming aggregate into the stored one,
/// with the same rules as `Aggregate::merge`.
pub fn merge_clause(dialect: Dialect, table: &str, keys: &[&str]) -> String {
    let (least, greatest) = (dialect.least(), dialect.greatest());
    let t = table;
    format!(
        "ON CONFLICT ({keys}) DO UPDATE SET \
         count = {t}.count + excluded.count, \
         sum = {t}.sum + excluded.sum, \
         min = {least}({t}.min, excluded.min), \
         max = {greatest}({t}.max, excluded.max), \
         last_value = CASE WHEN excluded.last_ts > {t}.last_ts \
              OR (excluded.last_ts = {t}.last_ts AND excluded.last_value > {t}.last_value) \
              THEN excluded.last_value ELSE {t}.last_value END, \
         last_ts = {greatest}({t}.last_ts, excluded.last_ts), \
         llm_successes = {t}.llm_successes + excluded.llm_successes, \
         llm_failures = {t}.llm_failures + excluded.llm_failures, \
         input_tokens = {t}.input_tokens + excluded.input_tokens, \
         output_tokens = {t}.output_tokens + excluded.output_tokens, \
         cost_nanos = {t}.cost_nanos + excluded.cost_nanos, \
         latency_ms_sum = {t}.latency_ms_sum + excluded.latency_ms_sum",
        keys = keys.join(", ")
    )
}

/// Key columns of the roll-up tables, in primary-key order.
pub const HOURLY_KEYS: [&str; 7] = ["organization_id", "user_id", "hour", "usage_type", "team_id", "model", "provider"];
pub const ORG_HOURLY_KEYS: [&str; 6] = ["organization_id", "hour", "usage_type", "team_id", "model", "provider"];
pub const ORG_DAILY_KEYS: [&str; 6] = ["organization_id", "day", "usage_type", "team_id", "model", "provider"];
pub const ORG_WEEKLY_KEYS: [&str; 6] = ["organization_id", "week", "usage_type", "team_id", "model", "provider"];
pub const ORG_MONTH_KEYS: [&str; 6] = ["organization_id", "month", "usage_type", "team_id", "model", "provider"];
pub const USER_KEYS: [&str; 3] = ["organization_id", "user_id", "usage_type"];
pub const MONTH_KEYS: [&str; 4] = ["organization_id", "user_id", "usage_type", "month"];
pub const LLM_DAY_KEYS: [&str; 5] = ["organization_id", "user_id", "day", "model", "provider"];

/// Every table derived from raw events by the roll-up: what a rebuild wipes and replays.
pub const AGGREGATE_TABLES: [&str; 12] = [
    "usage_hourly",
    "usage_hourly_org",
    "usage_daily_org",
    "usage_weekly_org",
    "usage_monthly_org",
    "usage_monthly_org_type",
    "user_usage",
    "user_usage_period",
    "user_usage_monthly",
    "llm_latency_daily_org",
    "llm_unpriced",
    "llm_daily",
];

/// Appended to the merge of a user's monthly cell: the row remembers the latest value the update
/// replaces (the right-hand side reads the row before the update, under its lock), and returns
/// the new latest value with it, so the organization's sum of latest values moves by the change
/// (columns 3 and 4 of the returned row).
pub const USER_MONTH_RETURNING: &str =
    ", replaced_value = user_usage_monthly.last_value RETURNING organization_id, usage_type, month, last_value, replaced_value";

/// Key columns of the organizations' monthly figures per usage type (`usage_monthly_org_type`).
pub const ORG_TYPE_MONTH_KEYS: [&str; 3] = ["organization_id", "month", "usage_type"];

/// The merge of an organization's monthly figures of a type: the aggregate as every cell's, and
/// the sum of latest values moved by the batch's change (the last column, `latest_sum`).
pub fn org_type_month_merge(dialect: Dialect) -> String {
    format!(
        "{}, latest_sum = usage_monthly_org_type.latest_sum + excluded.latest_sum",
        merge_clause(dialect, "usage_monthly_org_type", &ORG_TYPE_MONTH_KEYS)
    )
}

/// What an upsert of latency buckets does with the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Merges it with the incoming one key by key (`tally_merge_buckets`, a Rust function on
    /// SQLite, SQL on PostgreSQL).
    Merge,
    /// Replaces it: the incoming object already holds the stored counts (merged by the caller
    /// with the row locked).
    Replace,
}

impl Buckets {
    fn assignment(self, table: &str) -> String {
        match self {
            Buckets::Merge => format!("buckets = tally_merge_buckets({table}.buckets, excluded.buckets)"),
            Buckets::Replace => "buckets = excluded.buckets".to_owned(),
        }
    }
}

/// The upsert of an organization's day of latencies (placeholders numbered from 1: organization,
/// day, requests, latency sum, buckets): counts and sums add, the buckets as `buckets` says. On
/// PostgreSQL the rows come from `unnest` of arrays.
pub fn org_latency_upsert(dialect: Dialect, buckets: Buckets) -> String {
    let rows = match dialect {
        Dialect::Sqlite => "VALUES (?1, ?2, ?3, ?4, ?5)",
        Dialect::Postgres => {
            "SELECT o, d, r, s, b FROM unnest($1::text[], $2::timestamptz[], $3::int8[], $4::int8[], $5::text[]) AS x(o, d, r, s, b)"
        }
    };
    format!(
        "INSERT INTO llm_latency_daily_org (organization_id, day, requests, latency_ms_sum, buckets) {rows} \
         ON CONFLICT (organization_id, day) DO UPDATE SET requests = llm_latency_daily_org.requests + excluded.requests, \
         latency_ms_sum = llm_latency_daily_org.latency_ms_sum + excluded.latency_ms_sum, {}",
        buckets.assignment("llm_latency_daily_org")
    )
}

/// The upsert of a user's day of LLM requests per model and provider: the key columns, the
/// aggregate columns, then the latency buckets (placeholders in that order; on PostgreSQL
/// arrays of `key_types`, the aggregate types and text for the buckets). The aggregate merges
/// as every roll-up cell does, the buckets as `buckets` says.
pub fn llm_day_upsert(dialect: Dialect, agg_types: &[&str], buckets: Buckets) -> String {
    let columns: Vec<&str> = LLM_DAY_KEYS.iter().chain(AGG_COLUMNS.iter()).copied().chain(["buckets"]).collect();
    let n = columns.len();
    let rows = match dialect {
        Dialect::Sqlite => format!("VALUES ({})", (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")),
        Dialect::Postgres => {
            let types = ["text", "text", "timestamptz", "text", "text"].iter().chain(agg_types).chain(&["text"]);
            let arrays: Vec<String> = types.enumerate().map(|(i, t)| format!("${}::{t}[]", i + 1)).collect();
            let names: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
            format!("SELECT {} FROM unnest({}) AS x({})", names.join(", "), arrays.join(", "), names.join(", "))
        }
    };
    format!(
        "INSERT INTO llm_daily ({}) {rows} {}, {}",
        columns.join(", "),
        merge_clause(dialect, "llm_daily", &LLM_DAY_KEYS),
        buckets.assignment("llm_daily")
    )
}

/// Portable casts: PostgreSQL's `sum(bigint)` is numeric, and SQLite reads these type names too.
pub const FINGERPRINT: &str = "SELECT \
    (SELECT CAST(count(*) AS BIGINT) FROM usage_hourly), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM usage_hourly), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM usage_hourly), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM usage_hourly), \
    (SELECT CAST(coalesce(sum(input_tokens + output_tokens), 0) AS BIGINT) FROM usage_hourly), \
    (SELECT CAST(count(*) AS BIGINT) FROM user_usage), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM user_usage), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM user_usage), \
    (SELECT CAST(count(*) AS BIGINT) FROM user_usage_monthly), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM user_usage_monthly), \
    (SELECT CAST(coalesce(sum(last_value), 0) AS DOUBLE PRECISION) FROM user_usage), \
    (SELECT CAST(count(*) AS BIGINT) FROM users WHERE last_activity IS NOT NULL), \
    (SELECT CAST(count(*) AS BIGINT) FROM usage_hourly_org), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM usage_hourly_org), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM usage_hourly_org), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM usage_hourly_org), \
    (SELECT CAST(coalesce(sum(last_value), 0) AS DOUBLE PRECISION) FROM usage_hourly_org), \
    (SELECT CAST(count(*) AS BIGINT) FROM llm_daily), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM llm_daily), \
    (SELECT CAST(coalesce(sum(latency_ms_sum), 0) AS BIGINT) FROM llm_daily), \
    (SELECT CAST(count(*) AS BIGINT) FROM llm_latency_daily_org), \
    (SELECT CAST(coalesce(sum(requests), 0) AS BIGINT) FROM llm_latency_daily_org), \
    (SELECT CAST(coalesce(sum(latency_ms_sum), 0) AS BIGINT) FROM llm_latency_daily_org), \
    (SELECT CAST(count(*) AS BIGINT) FROM llm_unpriced), \
    (SELECT CAST(coalesce(sum(requests), 0) AS BIGINT) FROM llm_unpriced), \
    (SELECT CAST(count(*) AS BIGINT) FROM usage_monthly_org), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM usage_monthly_org), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM usage_monthly_org), \
    (SELECT CAST(coalesce(sum(last_value), 0) AS DOUBLE PRECISION) FROM usage_monthly_org), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM llm_daily), \
    (SELECT CAST(coalesce(sum(input_tokens + output_tokens), 0) AS BIGINT) FROM llm_daily), \
    (SELECT CAST(count(*) AS BIGINT) FROM usage_monthly_org_type), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM usage_monthly_org_type), \
    (SELECT CAST(coalesce(sum(latest_sum), 0) AS DOUBLE PRECISION) FROM usage_monthly_org_type), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM usage_monthly_org_type), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM usage_monthly_org_type), \
    (SELECT CAST(count(*) AS BIGINT) FROM user_usage_period), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM user_usage_period), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM user_usage_period), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM user_usage_period), \
    (SELECT CAST(count(*) AS BIGINT) FROM usage_daily_org), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM usage_daily_org), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM usage_daily_org), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM usage_daily_org), \
    (SELECT CAST(coalesce(sum(last_value), 0) AS DOUBLE PRECISION) FROM usage_daily_org), \
    (SELECT CAST(count(*) AS BIGINT) FROM usage_weekly_org), \
    (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM usage_weekly_org), \
    (SELECT CAST(coalesce(sum(sum), 0) AS DOUBLE PRECISION) FROM usage_weekly_org), \
    (SELECT CAST(coalesce(sum(cost_nanos), 0) AS BIGINT) FROM usage_weekly_org), \
    (SELECT CAST(coalesce(sum(last_value), 0) AS DOUBLE PRECISION) FROM usage_weekly_org)";

pub const USER_COLUMNS: &str = "user_id, organization_id, username, email, first_name, last_name, role, is_bot, is_active, \
     is_superuser, date_joined, last_login, last_activity, metadata";

pub const SUBSCRIPTION_COLUMNS: &str =
    "subscription_id, organization_id, plan_id, status, current_period_start, current_period_end, trial_end, add_ons, created_at";

/// The aggregate columns of a cell read, after its seven key columns.
pub const CELL_COLUMNS: &str = "count, sum, min, max, last_ts, last_value, llm_successes, llm_failures, input_tokens, output_tokens, \
     cost_nanos, latency_ms_sum";

/// `AND …` conditions for a usage filter, with numbered placeholders from `first` (`?N` and `$N`
/// are both numbered), and the text values they bind, in order.
pub fn usage_conditions(dialect: Dialect, filter: &UsageFilter, first: usize) -> (String, Vec<String>) {
    let mark = |n: usize| dialect.mark(n);
    let mut sql = String::new();
    let mut values = Vec::new();
    let mut push = |column: &str, value: &str, values: &mut Vec<String>| {
        values.push(value.to_owned());
        sql.push_str(&format!(" AND {column} = {}", mark(first + values.len() - 1)));
    };
    if let Some(o) = &filter.organization_id {
        push("organization_id", o.as_str(), &mut values);
    }
    if let Some(t) = &filter.team_id {
        push("team_id", t.as_str(), &mut values);
    }
    if let Some(u) = &filter.user_id {
        push("user_id", u.as_str(), &mut values);
    }
    if !filter.usage_types.is_empty() {
        let marks: Vec<String> = filter.usage_types.iter().enumerate().map(|(i, _)| mark(first + values.len() + i)).collect();
        sql.push_str(&format!(" AND usage_type IN ({})", marks.join(", ")));
        values.extend(filter.usage_types.iter().map(|t| t.as_str().to_owned()));
    }
    (sql, values)
}

/// Hourly cells of a usage filter in `[from, to)`: the time bounds are the first two parameters.
pub fn cells_query(dialect: Dialect, filter: &UsageFilter, scope: crate::CellScope) -> (String, Vec<String>) {
    use crate::CellScope;
    let (conditions, values) = usage_conditions(dialect, filter, 3);
    let (p1, p2) = (dialect.mark(1), dialect.mark(2));
    let scope = if filter.user_id.is_some() { CellScope::Users } else { scope };
    let sql = match scope {
        CellScope::Users => format!(
            "SELECT hour, organization_id, user_id, usage_type, team_id, model, provider, {CELL_COLUMNS} FROM usage_hourly \
             WHERE hour >= {p1} AND hour < {p2}{conditions}"
        ),
        CellScope::Organizations => organization_cells(dialect, "usage_hourly_org", "hour", &conditions, false),
        CellScope::Summed => organization_cells(dialect, "usage_hourly_org", "hour", &conditions, true),
    };
    (sql, values)
}

/// Organization-wide daily cells of a usage filter (which names no user) with `day` in
/// `[from, to)`, `summed` over organizations when asked: the time bounds are the first two
/// parameters.
pub fn day_cells_query(dialect: Dialect, filter: &UsageFilter, summed: bool) -> (String, Vec<String>) {
    let (conditions, values) = usage_conditions(dialect, filter, 3);
    (organization_cells(dialect, "usage_daily_org", "day", &conditions, summed), values)
}

/// Organization-wide weekly cells of a usage filter (which names no user) with `week` in
/// `[from, to)`, `summed` over organizations when asked: the time bounds are the first two
/// parameters.
pub fn week_cells_query(dialect: Dialect, filter: &UsageFilter, summed: bool) -> (String, Vec<String>) {
    let (conditions, values) = usage_conditions(dialect, filter, 3);
    (organization_cells(dialect, "usage_weekly_org", "week", &conditions, summed), values)
}

/// PostgreSQL's daily cells summed into `buckets` in the query, as `Store::usage_day_cells`
/// asks: a week or a month of days comes back as one row instead of seven or thirty (SQLite,
/// in-process, sums them as it reads them instead). The buckets' outer bounds are the first two
/// parameters (so that the scan is bounded), the filter's values come next, and the last value
/// binds the buckets themselves, as an array of ranges.
pub fn bucketed_day_cells_query(filter: &UsageFilter, buckets: &[(Timestamp, Timestamp)], summed: bool) -> (String, Vec<String>) {
    let dialect = Dialect::Postgres;
    let (conditions, mut values) = usage_conditions(dialect, filter, 3);
    let (p1, p2, ranges) = (dialect.mark(1), dialect.mark(2), dialect.mark(3 + values.len()));
    values.push(format!("{{{}}}", buckets.iter().map(|(a, b)| format!("\"[{a},{b})\"")).collect::<Vec<_>>().join(",")));
    let (org, group) = if summed { ("''", "") } else { ("d.organization_id", "d.organization_id, ") };
    let sql = format!(
        "WITH b AS (SELECT lower(r) AS start, upper(r) AS stop FROM unnest({ranges}::text::tstzrange[]) AS r) \
         SELECT b.start, {org}, '', usage_type, team_id, model, provider, {} \
         FROM b JOIN usage_daily_org d ON d.day >= b.start AND d.day < b.stop \
         WHERE d.day >= {p1} AND d.day < {p2}{conditions} \
         GROUP BY b.start, {group}usage_type, team_id, model, provider",
        summed_columns(dialect, "last_value")
    );
    (sql, values)
}

/// The cells of an organization-wide table keyed by a time column, each organization's or
/// `summed` over them, filtered by `conditions` after the time bounds (parameters 1 and 2).
fn organization_cells(dialect: Dialect, table: &str, time: &str, conditions: &str, summed: bool) -> String {
    let (p1, p2) = (dialect.mark(1), dialect.mark(2));
    if summed {
        format!(
            "SELECT {time}, '', '', usage_type, team_id, model, provider, {} FROM {table} \
             WHERE {time} >= {p1} AND {time} < {p2}{conditions} GROUP BY {time}, usage_type, team_id, model, provider",
            summed_columns(dialect, "last_value")
        )
    } else {
        format!(
            "SELECT {time}, organization_id, '', usage_type, team_id, model, provider, {CELL_COLUMNS} FROM {table} \
             WHERE {time} >= {p1} AND {time} < {p2}{conditions}"
        )
    }
}

/// The aggregate columns summed over the rows of a group, as `Aggregate::merge` adds cells whose
/// latest values do not matter (a summed read serves additive figures, counts and peaks only);
/// `latest` names the latest-value column.
fn summed_columns(dialect: Dialect, latest: &str) -> String {
    let big = |c: &str| match dialect {
        Dialect::Sqlite => format!("sum({c})"),
        // PostgreSQL sums BIGINTs as NUMERIC.
        Dialect::Postgres => format!("CAST(sum({c}) AS BIGINT)"),
    };
    format!(
        "{}, sum(sum), min(min), max(max), max(last_ts), max({latest}), {}, {}, {}, {}, {}, {}",
        big("count"),
        big("llm_successes"),
        big("llm_failures"),
        big("input_tokens"),
        big("output_tokens"),
        big("cost_nanos"),
        big("latency_ms_sum")
    )
}

/// Organization-wide monthly cells of a usage filter (which names no user; for `PerType` and
/// `LatestSums` no team either) with `month` in `[from, to)`, `summed` over organizations when
/// asked (not for `LatestSums`): the time bounds are the first two parameters.
pub fn month_cells_query(dialect: Dialect, filter: &UsageFilter, cells: crate::MonthCells, summed: bool) -> (String, Vec<String>) {
    use crate::MonthCells;
    let (conditions, values) = usage_conditions(dialect, filter, 3);
    let (p1, p2) = (dialect.mark(1), dialect.mark(2));
    let (table, dimensions, latest) = match cells {
        MonthCells::Split => ("usage_monthly_org", "team_id, model, provider", "last_value"),
        MonthCells::PerType => ("usage_monthly_org_type", "'', '', ''", "last_value"),
        MonthCells::LatestSums => ("usage_monthly_org_type", "'', '', ''", "latest_sum"),
    };
    let sql = if summed && cells != MonthCells::LatestSums {
        let grouped = match cells {
            MonthCells::Split => ", team_id, model, provider",
            _ => "",
        };
        format!(
            "SELECT month, '', '', usage_type, {dimensions}, {} FROM {table} WHERE month >= {p1} AND month < {p2}{conditions} \
             GROUP BY month, usage_type{grouped}",
            summed_columns(dialect, latest)
        )
    } else {
        format!(
            "SELECT month, organization_id, '', usage_type, {dimensions}, count, sum, min, max, last_ts, {latest}, llm_successes, \
             llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum FROM {table} WHERE month >= {p1} AND month < {p2}{conditions}"
        )
    };
    (sql, values)
}

/// Raw events of a usage filter in `[from, to)`, in the column order of each backend's event
/// reader (SQLite's reads a row id first, PostgreSQL's starts at the organization), with the
/// properties as JSON text last when asked for.
pub fn events_query(dialect: Dialect, filter: &UsageFilter, with_properties: bool) -> (String, Vec<String>) {
    let (conditions, values) = usage_conditions(dialect, filter, 3);
    let (p1, p2) = (dialect.mark(1), dialect.mark(2));
    let lead = match dialect {
        Dialect::Sqlite => "0, ",
        Dialect::Postgres => "",
    };
    let properties = match (with_properties, dialect) {
        (false, _) => "",
        (true, Dialect::Sqlite) => ", properties",
        (true, Dialect::Postgres) => ", properties::text",
    };
    let sql = format!(
        "SELECT {lead}organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
         input_tokens, output_tokens, cost_nanos, latency_ms{properties} FROM events WHERE ts >= {p1} AND ts < {p2}{conditions}"
    );
    (sql, values)
}

/// [`events_query`] for at most one event: whether any matches.
pub fn any_event_query(dialect: Dialect, filter: &UsageFilter) -> (String, Vec<String>) {
    let (sql, values) = events_query(dialect, filter, false);
    (sql + " LIMIT 1", values)
}

/// A page of one user's LLM requests, newest first. The time bounds are the first two
/// parameters; with a cursor the second is the cursor's time and requests at that instant count
/// only below the cursor's event id.
pub fn llm_requests_query(dialect: Dialect, org: &str, user: &str, q: &crate::LlmRequestQuery) -> (String, Vec<String>) {
    let mark = |n: usize| dialect.mark(n);
    let mut values = vec![org.to_owned(), user.to_owned()];
    // The literal `usage_type = 'llm_request'` lets both backends use the partial index.
    let mut sql = format!(
        "SELECT {lead}organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
         input_tokens, output_tokens, cost_nanos, latency_ms FROM events \
         WHERE organization_id = {} AND user_id = {} AND usage_type = 'llm_request' AND ts >= {}",
        mark(3),
        mark(4),
        mark(1),
        lead = if matches!(dialect, Dialect::Sqlite) { "0, " } else { "" },
    );
    match &q.cursor {
        Some((_, id)) => {
            values.push(id.clone());
            // The redundant `ts <= t` is a range bound PostgreSQL can walk the index from; the OR
            // alone makes it scan down from the newest request.
            sql.push_str(&format!(" AND ts <= {t} AND (ts < {t} OR (ts = {t} AND event_id < {}))", mark(values.len() + 2), t = mark(2)));
        }
        None => sql.push_str(&format!(" AND ts < {}", mark(2))),
    }
    for (column, value) in [("model", &q.model), ("provider", &q.provider), ("status", &q.status)] {
        if let Some(v) = value {
            values.push(v.clone());
            sql.push_str(&format!(" AND {column} = {}", mark(values.len() + 2)));
        }
    }
    sql.push_str(&format!(" ORDER BY ts DESC, event_id DESC LIMIT {}", q.limit));
    (sql, values)
}

/// The latest LLM requests, of one organization (`?1`/`$1`) or of all, newest first.
pub fn llm_activity_query(dialect: Dialect, one_organization: bool, limit: u32) -> String {
    let (lead, org) = match dialect {
        Dialect::Sqlite => ("0, ", "?1"),
        Dialect::Postgres => ("", "$1"),
    };
    let scope = if one_organization { format!(" AND organization_id = {org}") } else { String::new() };
    format!(
        "SELECT {lead}organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
         input_tokens, output_tokens, cost_nanos, latency_ms FROM events WHERE usage_type = 'llm_request'{scope} \
         ORDER BY ts DESC, event_id DESC LIMIT {limit}"
    )
}

/// Models of unpriced LLM requests, of one organization (first parameter) or all.
pub fn unpriced_query(dialect: Dialect, one_organization: bool) -> String {
    let scope = match (one_organization, dialect) {
        (false, _) => "",
        (true, Dialect::Sqlite) => " WHERE organization_id = ?1",
        (true, Dialect::Postgres) => " WHERE organization_id = $1",
    };
    format!(
        "SELECT model, CAST(sum(requests) AS BIGINT), max(last_seen) FROM llm_unpriced{scope} \
         GROUP BY model ORDER BY 2 DESC, model"
    )
}

/// Upsert of unpriced request counts (organization, model, requests, last seen): counts add, the
/// latest time wins. On PostgreSQL the rows come from `unnest` of arrays.
pub fn unpriced_upsert(dialect: Dialect) -> String {
    let rows = match dialect {
        Dialect::Sqlite => "VALUES (?1, ?2, ?3, ?4)",
        Dialect::Postgres => "SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[])",
    };
    format!(
        "INSERT INTO llm_unpriced (organization_id, model, requests, last_seen) {rows} ON CONFLICT (organization_id, model) DO UPDATE SET \
         requests = llm_unpriced.requests + excluded.requests, last_seen = {}(llm_unpriced.last_seen, excluded.last_seen)",
        dialect.greatest()
    )
}

/// LLM requests of `[from, to)` (first two parameters) that the price table prices: those whose
/// cost it computed, and those it could not.
pub const REPRICEABLE: &str = "FROM events WHERE usage_type = 'llm_request' AND ts >= {from} AND ts < {to} \
     AND (price_version IS NOT NULL OR cost_nanos IS NULL)";

pub const AUDIT_COLUMNS: &str = "organization_id, audit_id, event_time, event_type, user_id, role, old_role, new_role, is_bot, plan_id, role_counts, backfilled, server_id";
pub const LEDGER_COLUMNS: &str =
    "organization_id, seq, audit_organization_id, audit_id, event_time, licenses, licenses_at_next_renewal, is_renewal";
pub const SERVER_COLUMNS: &str = "server_id, organization_id, hostname, contact_email, key_id, created_at, last_push_at, \
     last_audit_log_id, last_realm_count_id, last_installation_count_id";

pub const CHURN_COLUMNS: &str =
    "organization_id, report_date, user_id, score, risk_level, details, login_count, login_trend, days_until_renewal, schema_version";
/// What churn queries read from: the table, or for one user's history (an organization and a
/// user, no date) that user's row of each of the organization's report dates. The dates are found
/// by stepping down the primary key `(organization, date, user)` one seek a date, so that no
/// `(organization, user, date)` index has to take a random insert for every row a report writes.
/// A query is a history when it names an organization and a user and no date; its organization
/// and user are then the query's first two parameters.
pub fn churn_source(dialect: Dialect, q: &crate::ChurnQuery) -> String {
    if q.date.is_some() || q.organization_id.is_none() || q.user_id.is_none() {
        return "churn_scores".into();
    }
    let (org, user) = (dialect.mark(1), dialect.mark(2));
    format!(
        "(WITH RECURSIVE dates (day) AS ( \
           SELECT max(report_date) FROM churn_scores WHERE organization_id = {org} \
           UNION ALL \
           SELECT (SELECT max(report_date) FROM churn_scores WHERE organization_id = {org} AND report_date < dates.day) \
           FROM dates WHERE dates.day IS NOT NULL) \
         SELECT c.* FROM dates JOIN churn_scores c ON c.organization_id = {org} AND c.report_date = dates.day AND c.user_id = {user}) \
         AS churn_scores"
    )
}
pub const ALERT_COLUMNS: &str = "alert_id, organization_id, source, rule_id, alert_key, user_id, team_id, alert_type, severity, status, \
     report_date, details, opened_at, resolved_at, resolution, action_taken";
pub const DELIVERY_COLUMNS: &str = "delivery_id, organization_id, channel_id, alert_id, event_type, payload, status, attempts, attempt_log, \
     next_attempt_at, created_at, delivered_at";
pub const REPORT_RUN_COLUMNS: &str =
    "run_id, report, report_date, organization_id, status, rows_written, alerts_opened, alerts_resolved, started_at, duration_ms, error";

/// The latencies and times of LLM requests of an organization (parameters: organization, from,
/// to) or of one of its users (organization, user, from, to). The literal usage type lets both
/// backends read a user's from the covering partial index alone.
pub fn llm_latencies_query(dialect: Dialect, per_user: bool) -> String {
    llm_requests_in_range(dialect, per_user, "latency_ms, ts")
}

/// `SELECT {columns}` of the LLM requests of an organization or user in a range (the
/// parameters of [`llm_latencies_query`]).
fn llm_requests_in_range(dialect: Dialect, per_user: bool, columns: &str) -> String {
    format!("SELECT {columns} FROM events WHERE usage_type = 'llm_request' AND {}", llm_range(dialect, per_user, "ts"))
}

/// The conditions of every LLM range query: the organization (first parameter), the user when
/// one is named (second), and `time_column` in `[from, to)` (the last two).
fn llm_range(dialect: Dialect, per_user: bool, time_column: &str) -> String {
    let mark = |n: usize| dialect.mark(n);
    let (user, first) = if per_user { (format!(" AND user_id = {}", mark(2)), 3) } else { (String::new(), 2) };
    format!("organization_id = {}{user} AND {time_column} >= {} AND {time_column} < {}", mark(1), mark(first), mark(first + 1))
}

/// The stored latency histograms of a user's (parameters: organization, user, from, to) or an
/// organization's (organization, from, to) days in a range.
pub fn llm_latency_days_query(dialect: Dialect, per_user: bool) -> String {
    // A user's days are kept per model and provider (several rows a day), an organization's whole.
    let (table, requests) = if per_user { ("llm_daily", "count") } else { ("llm_latency_daily_org", "requests") };
    format!("SELECT day, {requests}, latency_ms_sum, buckets FROM {table} WHERE {}", llm_range(dialect, per_user, "day"))
}

/// A user's (parameters: organization, user, from, to) or an organization's users' (organization,
/// from, to) daily LLM cells with `day` in a range, as cells of `llm_request`.
pub fn llm_day_cells_query(dialect: Dialect, per_user: bool) -> String {
    format!(
        "SELECT day, organization_id, user_id, 'llm_request', '', model, provider, {CELL_COLUMNS} FROM llm_daily WHERE {}",
        llm_range(dialect, per_user, "day")
    )
}

/// The time of the first LLM request in a range, with the same parameters as
/// [`llm_latencies_query`]; a user's is one probe of the partial LLM index.
pub fn llm_first_request_query(dialect: Dialect, per_user: bool) -> String {
    llm_requests_in_range(dialect, per_user, "min(ts)")
}

/// The outcome of a subject's latest `n` LLM requests (one row of window totals) and its
/// parameters. The literal usage type lets both backends use the partial LLM indexes.
pub fn last_requests_query(dialect: Dialect, subject: &tally_domain::alerts::evaluate::Subject, n: u32) -> (String, Vec<String>) {
    let mark = |i: usize| match dialect {
        Dialect::Sqlite => format!("?{i}"),
        Dialect::Postgres => format!("${i}"),
    };
    let mut conditions = String::new();
    let mut values = Vec::new();
    let keys = [
        ("organization_id", subject.organization_id().map(|o| o.as_str())),
        ("user_id", subject.user_id().map(|u| u.as_str())),
        ("team_id", subject.team_id().map(|t| t.as_str())),
    ];
    for (column, value) in keys {
        if let Some(v) = value {
            values.push(v.to_owned());
            conditions.push_str(&format!("{column} = {} AND ", mark(values.len())));
        }
    }
    let outcome = match dialect {
        Dialect::Sqlite => "SELECT 'llm_request', count(*), count(*), sum(status = 'success'), sum(status = 'error'), 0, 0, 0, 1.0, 0.0",
        Dialect::Postgres => {
            "SELECT 'llm_request'::text, count(*), count(*)::float8, count(*) FILTER (WHERE status = 'success'), \
             count(*) FILTER (WHERE status = 'error'), 0::int8, 0::int8, 0::int8, 1::float8, 0::float8"
        }
    };
    let sql =
        format!("{outcome} FROM (SELECT status FROM events WHERE {conditions}usage_type = 'llm_request' ORDER BY ts DESC LIMIT {n}) x");
    (sql, values)
}
