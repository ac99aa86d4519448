//! User reports in SQL: a typed `q` filter and an ordering compiled to one parameterized query
//! over the live aggregates, the same text for both backends but for a few dialect spellings.
//! Field names come from a whitelist (`tally_domain::report::Catalog`) and every value is a bound
//! parameter: no input is ever pasted into SQL.
//!
//! Each user's billing period is the current period of the organization's latest live
//! subscription (trialing, active or payment issue), else the calendar month in UTC; the period's
//! usage is read from the figures kept for it (see `crate::periods`).

use crate::sql::Dialect;
use jiff::Timestamp;
use tally_domain::report::fields::{BalanceMeasure, LlmMeasure, Period};
use tally_domain::report::{Condition, FieldType, Filter, Lookup, Order, Source, Value};
use tally_domain::{OrganizationId, UserId};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    Real(f64),
    Bool(bool),
    Time(Timestamp),
}

/// What a report query asks for.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub filter: Option<Filter>,
    pub ordering: Vec<Order>,
    pub limit: u32,
    pub offset: u64,
    /// Whether to count every matching row too.
    pub count: bool,
    /// Keyset paging for exports in key order: only users after this (organization, user).
    pub after: Option<(OrganizationId, UserId)>,
    /// The instant "current period" and "calendar month" refer to.
    pub now: Timestamp,
}

/// One page of a report: the matching users in order, and how many match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportKeys {
    pub count: Option<u64>,
    pub users: Vec<(OrganizationId, UserId)>,
}

impl ReportKeys {
    /// Adds one row of a compiled page query: with a count, `n` and ids that are empty when the
    /// page is; without, the ids.
    pub(crate) fn push(&mut self, n: Option<i64>, organization: Option<String>, user: Option<String>) -> crate::Result<()> {
        if let Some(n) = n {
            self.count = Some(n as u64);
        }
        if let (Some(o), Some(u)) = (organization, user) {
            let corrupt = crate::StoreError::corrupt;
            self.users.push((OrganizationId::parse(o).map_err(corrupt)?, UserId::parse(u).map_err(corrupt)?));
        }
        Ok(())
    }
}

struct Builder {
    dialect: Dialect,
    params: Vec<Param>,
}

impl Builder {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        self.dialect.mark(self.params.len())
    }

    fn real(&self, sql: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("CAST({sql} AS REAL)"),
            Dialect::Postgres => format!("CAST({sql} AS DOUBLE PRECISION)"),
        }
    }

    /// The SQL expression for a scalar field (not `subscriptions[]`).
    fn expr(&mut self, source: &Source) -> String {
        match source {
            Source::User(column) => format!("u.{column}"),
            Source::FullName => "(u.first_name || ' ' || u.last_name)".to_owned(),
            Source::Organization(column) => format!("p.organization_{column}"),
            Source::Metadata(key) => match self.dialect {
                Dialect::Sqlite => {
                    let path = self.bind(Param::Text(format!("$.\"{key}\"")));
                    format!("CAST(json_extract(u.metadata, {path}) AS TEXT)")
                }
                Dialect::Postgres => {
                    let key = self.bind(Param::Text(key.clone()));
                    format!("(u.metadata ->> {key})")
                }
            },
            Source::Subscription(column) => format!("s.{column}"),
            Source::Usage { usage_type, period } => {
                let t = self.bind(Param::Text(usage_type.clone()));
                self.usage("sum", &t, *period)
            }
            Source::Llm { period, measure } => {
                let t = self.bind(Param::Text("llm_request".into()));
                let column = match measure {
                    LlmMeasure::Requests => "count",
                    LlmMeasure::Failed => "llm_failures",
                    LlmMeasure::InputTokens => "input_tokens",
                    LlmMeasure::OutputTokens => "output_tokens",
                    LlmMeasure::Cost => "cost_nanos",
                };
                let value = self.usage(column, &t, *period);
                if *measure == LlmMeasure::Cost { format!("({} / 1e9)", self.real(&value)) } else { value }
            }
            Source::TotalStorage => {
                let t = self.bind(Param::Text("storage_bytes".into()));
                format!(
                    "COALESCE((SELECT uu.last_value FROM user_usage uu WHERE uu.organization_id = u.organization_id \
                     AND uu.user_id = u.user_id AND uu.usage_type = {t}), 0)"
                )
            }
            Source::Balance { usage_type, measure } => {
                let limit = self.limit(usage_type);
                if *measure == BalanceMeasure::EffectiveLimit {
                    return limit;
                }
                let t = self.bind(Param::Text(usage_type.clone()));
                // As `Balance::used`: a gauge counts its latest value, a `max` type its peak.
                let sum = self.usage("sum", &t, Period::Current);
                let peak = self.usage("max", &t, Period::Current);
                let latest = self.usage("last_value", &t, Period::AllTime);
                let used = format!(
                    "(CASE (SELECT ut.aggregation FROM usage_types ut WHERE ut.key = {t}) WHEN 'latest' THEN {latest} \
                     WHEN 'max' THEN {peak} ELSE {sum} END)"
                );
                match measure {
                    BalanceMeasure::EffectiveLimit => limit,
                    BalanceMeasure::BalanceValue => format!("({limit} - {used})"),
                    // Unlimited: 0 %. A zero limit is 100 % used by any usage.
                    BalanceMeasure::BalancePercent => format!(
                        "(CASE WHEN {limit} IS NULL THEN 0.0 WHEN {limit} = 0 THEN (CASE WHEN {used} > 0 THEN 100.0 ELSE 0.0 END) \
                         ELSE {used} * 100.0 / {limit} END)"
                    ),
                    BalanceMeasure::Exceeded => format!("(CASE WHEN {limit} IS NOT NULL AND {used} > {limit} THEN 1 ELSE 0 END = 1)"),
                }
            }
        }
    }

    /// A user's figure of `usage_type` (already bound as `t`): all time from `user_usage`; the
    /// current period from `user_usage_period` where it covers the expected period (`p.fresh`),
    /// else from the hourly cells of the period's hours.
    fn usage(&mut self, column: &str, t: &str, period: Period) -> String {
        match period {
            Period::AllTime => format!(
                "COALESCE((SELECT uu.{column} FROM user_usage uu WHERE uu.organization_id = u.organization_id \
                 AND uu.user_id = u.user_id AND uu.usage_type = {t}), 0)"
            ),
            Period::Current => {
                // A period's peak is its largest hourly peak; every other figure adds up.
                let combine = if column == "max" { "max" } else { "sum" };
                format!(
                    "COALESCE(CASE WHEN p.fresh = 1 THEN (SELECT pu.{column} FROM user_usage_period pu \
                     WHERE pu.organization_id = u.organization_id AND pu.user_id = u.user_id AND pu.usage_type = {t}) \
                     ELSE (SELECT {combine}(h.{column}) FROM usage_hourly h WHERE h.organization_id = u.organization_id \
                     AND h.user_id = u.user_id AND h.hour >= p.period_start AND h.hour < p.period_end AND h.usage_type = {t}) END, 0)"
                )
            }
        }
    }

    /// The plan limit plus add-ons for a usage type, NULL when unlimited.
    fn limit(&mut self, usage_type: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let limit_path = self.bind(Param::Text(format!("$.usage.\"{usage_type}\".limit")));
                let add_on_path = self.bind(Param::Text(format!("$.\"{usage_type}\"")));
                format!(
                    "((SELECT CAST(json_extract(pl.body, {limit_path}) AS REAL) FROM plans pl WHERE pl.plan_id = p.plan_id) \
                     + COALESCE(CAST(json_extract(p.add_ons, {add_on_path}) AS REAL), 0))"
                )
            }
            Dialect::Postgres => {
                let key = self.bind(Param::Text(usage_type.to_owned()));
                format!(
                    "((SELECT CAST(pl.body -> 'usage' -> {key} ->> 'limit' AS DOUBLE PRECISION) FROM plans pl WHERE pl.plan_id = p.plan_id) \
                     + COALESCE(CAST(p.add_ons ->> {key} AS DOUBLE PRECISION), 0))"
                )
            }
        }
    }

    fn value(&self, v: &Value) -> Param {
        match v {
            Value::Text(s) => Param::Text(s.clone()),
            Value::Integer(i) => Param::Int(*i),
            Value::Number(n) => Param::Real(*n),
            // SQLite keeps booleans as 0/1.
            Value::Boolean(b) => match self.dialect {
                Dialect::Sqlite => Param::Int(i64::from(*b)),
                Dialect::Postgres => Param::Bool(*b),
            },
            Value::DateTime(t) => Param::Time(*t),
        }
    }

    /// A field's expression, cast so that bound values of its type compare with it
    /// (PostgreSQL's `role` is a SMALLINT, bound integers are BIGINT).
    fn typed_expr(&mut self, field: &tally_domain::report::Field) -> String {
        let e = self.expr(&field.source);
        match (self.dialect, field.ty) {
            (Dialect::Postgres, FieldType::Integer) => format!("CAST({e} AS BIGINT)"),
            (Dialect::Postgres, FieldType::Number) => format!("CAST({e} AS DOUBLE PRECISION)"),
            _ => e,
        }
    }

    fn condition(&mut self, c: &Condition) -> String {
        let target = self.typed_expr(&c.field);
        let text = match c.lookup {
            Lookup::IsNull => {
                let is_null = matches!(c.values.first(), Some(Value::Boolean(true)));
                format!("{target} IS {}NULL", if is_null { "" } else { "NOT " })
            }
            Lookup::In => {
                let params: Vec<Param> = c.values.iter().map(|v| self.value(v)).collect();
                let marks: Vec<String> = params.into_iter().map(|p| self.bind(p)).collect();
                format!("{target} IN ({})", marks.join(", "))
            }
            lookup => {
                let param = self.value(&c.values[0]);
                let (op, pattern) = match lookup {
                    Lookup::Exact => ("=", None),
                    Lookup::Gt => (">", None),
                    Lookup::Gte => (">=", None),
                    Lookup::Lt => ("<", None),
                    Lookup::Lte => ("<=", None),
                    Lookup::IExact => ("", Some(("", ""))),
                    Lookup::Contains | Lookup::IContains => ("", Some(("%", "%"))),
                    Lookup::StartsWith | Lookup::IStartsWith => ("", Some(("", "%"))),
                    Lookup::In | Lookup::IsNull => unreachable!("handled above"),
                };
                match pattern {
                    None => {
                        let mark = self.bind(param);
                        format!("{target} {op} {mark}")
                    }
                    Some((before, after)) => {
                        let Param::Text(s) = param else { unreachable!("text lookups take text") };
                        let insensitive = matches!(lookup, Lookup::IExact | Lookup::IContains | Lookup::IStartsWith);
                        match (self.dialect, insensitive) {
                            // SQLite's LIKE ignores (ASCII) case, so case-sensitive lookups use instr/substr.
                            (Dialect::Sqlite, false) => {
                                let mark = self.bind(Param::Text(s));
                                match lookup {
                                    Lookup::Contains => format!("instr({target}, {mark}) > 0"),
                                    _ => format!("substr({target}, 1, length({mark})) = {mark}"),
                                }
                            }
                            (dialect, _) => {
                                let escaped = s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                                let mark = self.bind(Param::Text(format!("{before}{escaped}{after}")));
                                let like = match (dialect, insensitive) {
                                    (Dialect::Postgres, true) => "ILIKE",
                                    _ => "LIKE",
                                };
                                format!("{target} {like} {mark} ESCAPE '\\'")
                            }
                        }
                    }
                }
            }
        };
        match c.field.source {
            Source::Subscription(_) => {
                format!("EXISTS (SELECT 1 FROM subscriptions s WHERE s.organization_id = u.organization_id AND {text})")
            }
            _ => text,
        }
    }

    fn filter(&mut self, f: &Filter) -> String {
        match f {
            Filter::Condition(c) => self.condition(c),
            Filter::Not(inner) => format!("NOT ({})", self.filter(inner)),
            Filter::And(parts) => format!("({})", parts.iter().map(|p| self.filter(p)).collect::<Vec<_>>().join(" AND ")),
            Filter::Or(parts) => format!("({})", parts.iter().map(|p| self.filter(p)).collect::<Vec<_>>().join(" OR ")),
        }
    }
}

/// `WITH …` and `FROM …` of a page: each organization's name, billing period and plan (`p`,
/// computed once per query, not once per user), with whether `user_usage_period` covers that
/// period (`p.fresh`); then its users (`u`), read in key order.
fn from_clause(b: &mut Builder, now: Timestamp) -> (String, String) {
    let (start, end) = crate::periods::calendar_month(now);
    let (month_start, month_end) = (b.bind(Param::Time(start)), b.bind(Param::Time(end)));
    let with = format!(
        "WITH p AS MATERIALIZED (SELECT e.*, \
           CASE WHEN bp.period_start = e.period_start AND bp.period_end = e.period_end THEN 1 ELSE 0 END AS fresh \
           FROM ({}) e LEFT JOIN billing_periods bp ON bp.organization_id = e.organization_id)",
        crate::periods::expected(&month_start, &month_end)
    );
    (with, "FROM p JOIN users u ON u.organization_id = p.organization_id".to_owned())
}

/// SQL text and the values its placeholders bind, in order.
pub type Compiled = (String, Vec<Param>);

/// The page query. Without a count it selects `organization_id, user_id` in order. With one,
/// the matching users and their ordering keys are collected once (`m`), and each row is
/// `n, organization_id, user_id`: `n` their number, then the page in order, or a single row with
/// empty ids when the page is empty, so the count costs no second pass over the filter.
pub fn compile(dialect: Dialect, q: &ReportQuery) -> Compiled {
    let mut b = Builder { dialect, params: Vec::new() };
    let (with, from) = from_clause(&mut b, q.now);
    let mut conditions: Vec<String> = q.filter.iter().map(|f| b.filter(f)).collect();
    if let Some((org, user)) = &q.after {
        let (o, u) = (b.bind(Param::Text(org.as_str().to_owned())), b.bind(Param::Text(user.as_str().to_owned())));
        // A row value, so that both backends seek the key index rather than scan.
        conditions.push(format!("(u.organization_id, u.user_id) > ({o}, {u})"));
    }
    let where_clause = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let keys: Vec<(String, &str)> =
        q.ordering.iter().map(|o| (b.expr(&o.field.source), if o.descending { "DESC" } else { "ASC" })).collect();
    // Each ordering key (`names`: the expressions, or the columns holding them) in its direction,
    // then a stable tie-break so that pages never overlap or skip (`tie`: whose key columns).
    let order_by = |names: Vec<String>, tie: &str| {
        let mut items: Vec<String> = names.into_iter().zip(&keys).map(|(name, (_, direction))| format!("{name} {direction}")).collect();
        items.extend([format!("{tie}organization_id ASC"), format!("{tie}user_id ASC")]);
        items.join(", ")
    };
    let window = format!("LIMIT {} OFFSET {}", q.limit, q.offset);
    let sql = if q.count {
        let names = |prefix: &str| (1..=keys.len()).map(|i| format!("{prefix}k{i}")).collect::<Vec<_>>();
        let selected: String = keys.iter().zip(names("")).map(|((e, _), name)| format!(", {e} AS {name}")).collect();
        format!(
            "{with}, m AS MATERIALIZED (SELECT u.organization_id, u.user_id{selected} {from}{where_clause}) \
             SELECT c.n, pg.organization_id, pg.user_id FROM (SELECT count(*) AS n FROM m) c \
             LEFT JOIN (SELECT * FROM m ORDER BY {} {window}) pg ON 1 = 1 ORDER BY {}",
            order_by(names(""), ""),
            order_by(names("pg."), "pg.")
        )
    } else {
        let order = order_by(keys.iter().map(|(e, _)| e.clone()).collect(), "u.");
        format!("{with} SELECT u.organization_id, u.user_id {from}{where_clause} ORDER BY {order} {window}")
    };
    (sql, b.params)
}

/// The queries that load what a report shows of a page of users. The users are passed as one
/// JSON array (SQLite, `?1`: `[[organization, user], …]`) or as parallel arrays (PostgreSQL,
/// `$1`, `$2`); for `current` each user also carries its billing period's start and end.
pub(crate) struct RowQueries {
    pub users: String,
    pub organizations: String,
    pub subscriptions: String,
    /// The periods the organizations' `user_usage_period` rows cover.
    pub recorded: String,
    pub all_time: String,
    /// The users' figures of their organization's recorded period.
    pub kept: String,
    /// The users' figures of a period from the hourly cells (where none are kept for it).
    pub current: String,
}

pub(crate) fn row_queries(dialect: Dialect) -> RowQueries {
    use crate::sql::{CELL_COLUMNS, SUBSCRIPTION_COLUMNS, USER_COLUMNS};
    let (keys, periods, big) = match dialect {
        Dialect::Sqlite => (
            "(SELECT json_extract(value, '$[0]') AS o, json_extract(value, '$[1]') AS u FROM json_each(?1))",
            "(SELECT json_extract(value, '$[0]') AS o, json_extract(value, '$[1]') AS u, json_extract(value, '$[2]') AS s, \
              json_extract(value, '$[3]') AS e FROM json_each(?1))",
            "INTEGER",
        ),
        Dialect::Postgres => (
            "(SELECT * FROM unnest($1::text[], $2::text[]) AS k(o, u))",
            "(SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS k(o, u, s, e))",
            "BIGINT",
        ),
    };
    let sum = |c: &str| format!("CAST(sum(h.{c}) AS {big})");
    RowQueries {
        users: format!("SELECT {USER_COLUMNS} FROM users WHERE (organization_id, user_id) IN (SELECT o, u FROM {keys} k)"),
        organizations: format!("SELECT organization_id, name FROM organizations WHERE organization_id IN (SELECT o FROM {keys} k)"),
        subscriptions: format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE organization_id IN (SELECT o FROM {keys} k) \
             ORDER BY organization_id, current_period_start DESC, subscription_id"
        ),
        recorded: format!(
            "SELECT organization_id, period_start, period_end FROM billing_periods WHERE organization_id IN (SELECT o FROM {keys} k)"
        ),
        all_time: format!(
            "SELECT organization_id, user_id, usage_type, {CELL_COLUMNS} FROM user_usage \
             WHERE (organization_id, user_id) IN (SELECT o, u FROM {keys} k)"
        ),
        kept: format!(
            "SELECT organization_id, user_id, usage_type, {CELL_COLUMNS} FROM user_usage_period \
             WHERE (organization_id, user_id) IN (SELECT o, u FROM {keys} k)"
        ),
        current: format!(
            "SELECT h.organization_id, h.user_id, h.usage_type, {}, sum(h.sum), min(h.min), max(h.max), max(h.last_ts), max(h.last_value), \
             {}, {}, {}, {}, {}, {} FROM usage_hourly h JOIN {periods} k \
             ON h.organization_id = k.o AND h.user_id = k.u AND h.hour >= k.s AND h.hour < k.e \
             GROUP BY h.organization_id, h.user_id, h.usage_type",
            sum("count"),
            sum("llm_successes"),
            sum("llm_failures"),
            sum("input_tokens"),
            sum("output_tokens"),
            sum("cost_nanos"),
            sum("latency_ms_sum"),
        ),
    }
}

/// Figures per (organization, user, usage type).
pub(crate) type Figures = Vec<(String, String, String, tally_domain::rollup::Aggregate)>;

/// What the row queries loaded, put together per user in the asked order.
pub(crate) struct Loaded {
    pub users: Vec<tally_domain::entities::User>,
    pub organizations: std::collections::HashMap<String, String>,
    pub subscriptions: Vec<tally_domain::entities::Subscription>,
    /// The period each organization's kept figures cover (`RowQueries::recorded`).
    pub recorded: std::collections::HashMap<String, (Timestamp, Timestamp)>,
}

/// One user of a page and the billing period its `current` figures cover.
pub(crate) type UserPeriod = (OrganizationId, UserId, Timestamp, Timestamp);

impl Loaded {
    /// The organization's subscriptions, latest period first.
    fn subscriptions_of(&self, org: &OrganizationId) -> Vec<tally_domain::entities::Subscription> {
        self.subscriptions.iter().filter(|s| s.organization_id == *org).cloned().collect()
    }

    /// Each user's billing period, in the order of `keys`.
    pub fn periods(&self, keys: &[(OrganizationId, UserId)], now: Timestamp) -> Vec<UserPeriod> {
        use tally_domain::report::balance::{billing_period, billing_subscription};
        let mut by_org = std::collections::HashMap::new();
        keys.iter()
            .map(|(o, u)| {
                let (start, end) = *by_org.entry(o).or_insert_with(|| billing_period(billing_subscription(&self.subscriptions_of(o)), now));
                (o.clone(), u.clone(), start, end)
            })
            .collect()
    }

    /// The users whose period figures are kept for the period they need (read them with
    /// `RowQueries::kept`), and the others with their period (read with `RowQueries::current`).
    pub fn split_kept(&self, periods: &[UserPeriod]) -> (Vec<(OrganizationId, UserId)>, Vec<UserPeriod>) {
        let (kept, summed): (Vec<&UserPeriod>, Vec<&UserPeriod>) =
            periods.iter().partition(|(o, _, start, end)| self.recorded.get(o.as_str()) == Some(&(*start, *end)));
        (kept.into_iter().map(|(o, u, _, _)| (o.clone(), u.clone())).collect(), summed.into_iter().cloned().collect())
    }

    /// The rows, in the order of `periods` (users that vanished meanwhile are skipped).
    pub fn assemble(mut self, periods: &[UserPeriod], all_time: Figures, current: Figures) -> Vec<crate::ReportRow> {
        use std::collections::HashMap;
        let mut users: HashMap<(String, String), tally_domain::entities::User> = std::mem::take(&mut self.users)
            .into_iter()
            .map(|u| ((u.organization_id.as_str().to_owned(), u.id.as_str().to_owned()), u))
            .collect();
        let group = |figures: Figures| {
            let mut by_user: HashMap<(String, String), Vec<(String, tally_domain::rollup::Aggregate)>> = HashMap::new();
            for (o, u, t, a) in figures {
                by_user.entry((o, u)).or_default().push((t, a));
            }
            for v in by_user.values_mut() {
                v.sort_by(|a, b| a.0.cmp(&b.0));
            }
            by_user
        };
        let (mut all_time, mut current) = (group(all_time), group(current));
        periods
            .iter()
            .filter_map(|(o, u, start, end)| {
                let key = (o.as_str().to_owned(), u.as_str().to_owned());
                let user = users.remove(&key)?;
                Some(crate::ReportRow {
                    user,
                    organization_name: self.organizations.get(o.as_str()).cloned().unwrap_or_default(),
                    subscriptions: self.subscriptions_of(o),
                    period: (*start, *end),
                    all_time: all_time.remove(&key).unwrap_or_default(),
                    current: current.remove(&key).unwrap_or_default(),
                })
            })
            .collect()
    }
}
