//! SQL text shared by both backends: the aggregate upserts differ only in how each dialect
//! spells "the smaller of two values", so they are generated here once.

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
pub const USER_KEYS: [&str; 3] = ["organization_id", "user_id", "usage_type"];
pub const MONTH_KEYS: [&str; 4] = ["organization_id", "user_id", "usage_type", "month"];

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
    (SELECT CAST(coalesce(sum(last_value), 0) AS DOUBLE PRECISION) FROM usage_hourly_org)";
