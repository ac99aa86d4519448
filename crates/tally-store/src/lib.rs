//! Tally's storage. One domain-shaped trait, [`Store`], with two real backends: embedded SQLite
//! (the default, one file) and PostgreSQL. The backend is chosen once, from the URL, by [`open`].
//! Every backend maps its driver's errors to [`StoreError`], so nothing above sees a driver type.

mod alerting;
mod error;
pub mod group_commit;
mod periods;
pub mod postgres;
mod range;
pub mod report;
mod sql;
pub mod sqlite;
pub mod testing;
mod types;

pub use error::{Result, StoreError};
pub use group_commit::{CommitError, CommitObserver, GroupCommitter};
pub use sql::Dialect;
pub use types::*;

use async_trait::async_trait;
use jiff::Timestamp;
use std::sync::Arc;
use tally_domain::alerts::evaluate::{Observation, RuleState, WindowTotal};
use tally_domain::alerts::{AlertRule, Channel};
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tally_domain::llm::Latencies;
use tally_domain::llm::prices::{ModelPrice, PriceTable, UnpricedModel};
use tally_domain::meter::Meter;
use tally_domain::rollup::Rollup;
use tally_domain::seats::audit::AuditEvent;
use tally_domain::seats::ledger::LedgerEntry;
use tally_domain::seats::remote::RemotePush;
use tally_domain::series::Cell;
use tally_domain::{OrganizationId, TeamId, UsageEvent, UsageType, UserId};

/// Tables that are small, global reference data: copied to every node when sharded. Every other
/// table is a tenant table whose primary and unique keys start with `organization_id`.
pub const REFERENCE_TABLES: &[&str] = &[
    "schema_migrations",
    "usage_types",
    "plans",
    "api_keys",
    "job_runs",
    "llm_prices",
    "llm_price_table",
    "servers",
    "report_runs",
    "alert_rules",
    "notification_channels",
];

/// Stages events for a bulk import and stores them on [`Importer::commit`]. What is staged is
/// neither visible nor durable before that; an import cut short is run again, and dedup makes
/// that safe. After an error, drop the importer: what it had staged is in an unknown state.
#[async_trait]
pub trait Importer: Send {
    async fn stage(&mut self, events: Vec<UsageEvent>) -> Result<()>;
    /// Events staged since the last commit, duplicates included.
    fn staged(&self) -> usize;
    /// Stores the staged events that are new, and their roll-ups, in one transaction, exactly as
    /// [`Store::record_events`] would: an event staged twice, or already stored, counts once.
    async fn commit(&mut self) -> Result<Imported>;
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<()>;

    async fn usage_types(&self) -> Result<Vec<UsageType>>;
    async fn save_usage_type(&self, usage_type: &UsageType, write: Write) -> Result<()>;

    async fn save_organization(&self, org: &Organization, write: Write) -> Result<()>;
    async fn organization(&self, id: &OrganizationId) -> Result<Option<Organization>>;
    async fn organizations(&self, page: Page) -> Result<Listed<Organization>>;

    async fn save_team(&self, team: &Team, write: Write) -> Result<()>;
    async fn team(&self, id: &TeamId) -> Result<Option<Team>>;
    async fn teams(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Team>>;

    async fn save_user(&self, user: &User, write: Write) -> Result<()>;
    async fn user(&self, id: &UserId) -> Result<Option<User>>;
    async fn users(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<User>>;

    async fn save_plan(&self, plan: &Plan, write: Write) -> Result<()>;
    async fn plan(&self, id: &str) -> Result<Option<Plan>>;
    async fn plans(&self, page: Page) -> Result<Listed<Plan>>;

    async fn save_subscription(&self, subscription: &Subscription, write: Write) -> Result<()>;
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>>;
    async fn subscriptions(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Subscription>>;

    /// Meters of the OpenMeter-compatible API; `Write::Create` fails if the slug or id is taken.
    async fn save_meter(&self, org: &OrganizationId, meter: &Meter, write: Write) -> Result<()>;
    /// The organization's meter with this id or slug.
    async fn meter(&self, org: &OrganizationId, id_or_slug: &str) -> Result<Option<Meter>>;
    /// Every meter of the organization, by slug.
    async fn meters(&self, org: &OrganizationId) -> Result<Vec<Meter>>;
    /// Returns whether the meter existed.
    async fn delete_meter(&self, org: &OrganizationId, slug: &str) -> Result<bool>;

    async fn create_api_key(&self, key: &ApiKey) -> Result<()>;
    /// The key with this digest, unless it was revoked.
    async fn api_key_by_digest(&self, digest: &str) -> Result<Option<ApiKey>>;
    async fn api_keys(&self) -> Result<Vec<ApiKey>>;
    /// Returns whether a live key with this id existed.
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool>;

    /// Stores the events and applies their roll-up in one transaction. The answer says, per
    /// event and in order, whether it was new (`true`) or a duplicate of a stored one (`false`);
    /// duplicates inside `events` count once. Nothing is visible until the transaction commits.
    async fn record_events(&self, events: Vec<UsageEvent>) -> Result<Vec<bool>>;

    /// A bulk import (`tally import`): events are staged, then stored with their roll-ups a large
    /// chunk per transaction, in key order, so that each commit writes densely onto the pages it
    /// touches rather than one page per event (BENCHMARKS.md, ingest).
    async fn importer(&self) -> Result<Box<dyn Importer>>;

    /// Totals per usage type over `[from, to)` (all time when both are `None`), exact to the
    /// microsecond: whole hours from the hourly aggregates, partial hours from raw events.
    async fn usage_totals(&self, subject: &Subject, range: TimeRange) -> Result<Vec<UsageTotal>>;

    /// Hourly aggregate cells with `hour` in `[from, to)`, kept apart as `scope` says (per user
    /// whenever the filter names a user).
    async fn usage_cells(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, scope: CellScope) -> Result<Vec<Cell>>;

    /// Organization-wide cells of whole UTC months with `month` in `[from, to)` (both month
    /// starts), as finely as `cells` asks, and `summed` over organizations when the caller keeps
    /// them apart nowhere (not for `LatestSums`). The tables have no user column: a filter naming
    /// a user is a caller's bug and fails.
    async fn usage_month_cells(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
        cells: MonthCells,
        summed: bool,
    ) -> Result<Vec<Cell>>;

    /// Organization-wide cells of whole UTC days summed into `buckets` (`(start, stop)` pairs of
    /// midnights, ascending and disjoint; days outside them are left out): one cell per bucket
    /// and dimension, at its start, `summed` over organizations when the caller keeps them apart
    /// nowhere. Additive figures only: a bucket's latest value is its largest. The table has no
    /// user column: a filter naming a user is a caller's bug and fails.
    async fn usage_day_cells(&self, filter: &UsageFilter, buckets: &[(Timestamp, Timestamp)], summed: bool) -> Result<Vec<Cell>>;

    /// Organization-wide cells of whole UTC weeks (Monday to Monday) in `[from, to)`, whose
    /// bounds are Monday midnights: one cell per week and dimension, at its Monday, `summed` over
    /// organizations as [`Store::usage_day_cells`] sums them. The table has no user column.
    async fn usage_week_cells(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, summed: bool) -> Result<Vec<Cell>>;

    /// Raw events in `[from, to)`, for sub-hour pieces of a series (without their properties) and
    /// for meter queries (with them).
    async fn usage_events(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, with_properties: bool) -> Result<Vec<UsageEvent>>;

    /// Whether any event of `[from, to)` matches the filter (reads at most one).
    async fn any_usage_events(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp) -> Result<bool>;

    /// The users a report query selects, in its order, and how many match if asked.
    async fn report_users(&self, query: &report::ReportQuery) -> Result<report::ReportKeys>;

    /// What the report shows of these users, in the same order (users that vanished are skipped).
    async fn report_rows(&self, users: &[(OrganizationId, UserId)], now: Timestamp) -> Result<Vec<ReportRow>>;

    /// Refills the current-period figures kept per user for the organizations whose billing
    /// period changed (a subscription saved, a calendar month begun) or was never recorded;
    /// `org` limits it to that one. Returns how many organizations were refilled. Saving a
    /// subscription refreshes its organization; `tally serve` refreshes all every minute.
    async fn refresh_billing_periods(&self, org: Option<&OrganizationId>, now: Timestamp) -> Result<u64>;

    /// Refreshes the query planner's statistics (after a bulk load, and hourly while serving):
    /// SQLite keeps none unless asked, PostgreSQL's autovacuum may lag a large load. PostgreSQL
    /// also vacuums, so that index-only scans find settled pages marked all-visible.
    async fn refresh_statistics(&self) -> Result<()>;

    /// Starts a run of a resumable job, or takes over the one in progress whose holder stopped
    /// renewing its lease; `Conflict` while another holder's lease runs.
    async fn claim_job(&self, job: &str, owner: &str, lease_until: Timestamp, now: Timestamp) -> Result<JobRun>;

    /// Recomputes every aggregate of the next `max_organizations` organizations after the run's
    /// cursor from their raw events, and in the same transaction advances the cursor and renews
    /// the lease; completes the run when no organization is left. `Conflict` if the lease was lost.
    async fn advance_job(
        &self,
        run_id: &str,
        owner: &str,
        max_organizations: u32,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<JobRun>;

    /// Marks a run aborted, with the error that stopped it.
    async fn abort_job(&self, run_id: &str, error: &str, now: Timestamp) -> Result<()>;

    /// A job's runs, newest first.
    async fn job_runs(&self, job: &str) -> Result<Vec<JobRun>>;

    /// One user's LLM requests, newest first (a page; see [`LlmRequestQuery`]).
    async fn llm_requests(&self, org: &OrganizationId, user: &UserId, query: &LlmRequestQuery) -> Result<Vec<UsageEvent>>;

    /// The latency of every LLM request of a user (or an organization) in `[from, to)` that has
    /// one, and when the first of them was; a user's come from one covering index.
    async fn llm_latencies(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<Latencies>;
    /// The daily LLM cells of the whole UTC days in `[from, to)` (both at midnight) of a user (or
    /// of every user of an organization): one per user, day, model and provider, `at` the day.
    async fn llm_day_cells(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<Vec<Cell>>;
    /// The latency histograms of the whole UTC days in `[from, to)` (both at midnight) of a user
    /// (or an organization), merged, and the first of those days that has one.
    async fn llm_latency_days(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<LatencyDays>;
    /// When the first LLM request of a user (or an organization) in `[from, to)` was.
    async fn llm_first_request(
        &self,
        org: &OrganizationId,
        user: Option<&UserId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<Timestamp>>;

    /// The latest LLM requests, of one organization or of all, newest first.
    async fn llm_activity(&self, org: Option<&OrganizationId>, limit: u32) -> Result<Vec<UsageEvent>>;

    /// The LLM price table and its version.
    async fn llm_prices(&self) -> Result<PriceTable>;
    /// Creates or replaces one model's price; returns the table's new version.
    async fn save_llm_price(&self, price: &ModelPrice) -> Result<i64>;
    /// Removes one model's price; the new version, or `None` if there was none.
    async fn delete_llm_price(&self, model: &str) -> Result<Option<i64>>;
    /// Re-prices, with `table`, the LLM requests of `[from, to)` whose cost Tally computed or could
    /// not compute (an event's own cost is never touched), and rebuilds the aggregates of the
    /// organizations concerned, in one transaction; returns the requests re-priced.
    async fn reprice_llm(&self, from: Timestamp, to: Timestamp, table: &PriceTable) -> Result<u64>;
    /// Models of LLM requests stored without a cost (none given, none priced), most requested first.
    async fn unpriced_models(&self, org: Option<&OrganizationId>) -> Result<Vec<UnpricedModel>>;

    /// Stores audit events in one transaction; the answer says, per event, whether it was new
    /// (a repeated `(organization, id)` is skipped). An event about a user with a `user_id`
    /// updates Tally's user table, and one without role counts gets them from that table as it
    /// stands right after the event. Switching an organization off or on updates it too.
    async fn record_audit_events(&self, events: Vec<AuditEvent>, now: Timestamp) -> Result<Vec<bool>>;
    /// An organization's audit events, newest first.
    async fn audit_events(&self, org: &OrganizationId, page: Page) -> Result<Listed<AuditEvent>>;
    /// Each organization's role counts and on/off state at its moment, from its audit history.
    async fn seat_snapshots(&self, at: Vec<(OrganizationId, Timestamp)>) -> Result<Vec<SeatSnapshot>>;

    /// Creates (`AlreadyExists` if the id is taken) or replaces a server, creating its
    /// organization if new.
    async fn save_server(&self, server: &Server, write: Write) -> Result<()>;
    async fn server(&self, id: &str) -> Result<Option<Server>>;
    async fn servers(&self) -> Result<Vec<Server>>;
    /// Stores a server's push in one transaction: its realms as organizations, its count rows and
    /// audit rows (re-sent rows are skipped and counted as duplicates), and the push time.
    async fn record_push(&self, server: &Server, push: RemotePush, now: Timestamp) -> Result<PushOutcome>;
    /// The organizations a server's realms became.
    async fn server_realms(&self, server_id: &str) -> Result<Vec<OrganizationId>>;
    /// The server an organization is a realm of.
    async fn realm_server(&self, org: &OrganizationId) -> Result<Option<String>>;

    /// Audit events the ledger job has not processed yet, oldest first (by time, organization and
    /// id), after the given one if any: a run walks forward without rereading what it marked.
    async fn unprocessed_audit_events(&self, after: Option<AuditKey>, limit: u32) -> Result<Vec<AuditEvent>>;
    /// An organization's license ledger, newest first.
    async fn ledger(&self, org: &OrganizationId, page: Page) -> Result<Listed<LedgerEntry>>;
    /// The ledger from its last row before `since` on, in writing order.
    async fn ledger_since(&self, org: &OrganizationId, since: Timestamp) -> Result<Vec<LedgerEntry>>;
    /// Appends ledger rows and marks audit events processed, in one transaction that renews the
    /// run's lease (`Conflict` if it was lost, or if another writer appended to a ledger first)
    /// and completes the run when `finished`.
    #[allow(clippy::too_many_arguments)]
    async fn commit_ledger(
        &self,
        run_id: &str,
        owner: &str,
        entries: Vec<LedgerEntry>,
        processed: Vec<(OrganizationId, String)>,
        lease_until: Timestamp,
        now: Timestamp,
        finished: bool,
    ) -> Result<JobRun>;

    /// Per user of the organization and UTC day with events in the days asked (one range of its
    /// events): the counts, the day's latest event and its frustration figures.
    async fn daily_activity(&self, org: &OrganizationId, days: &ActivityDays) -> Result<Vec<UserDay>>;
    /// Stores each organization's churn rows of that date (replacing those it has, if `replace`:
    /// a run that found none for the date at its start skips looking), opens and resolves alerts,
    /// in one transaction; an alert whose user already has an open one of its type is not opened
    /// again. Returns the alerts opened.
    async fn save_churn_reports(&self, date: jiff::civil::Date, batches: Vec<ChurnBatch>, now: Timestamp, replace: bool) -> Result<u64>;
    /// Whether any churn rows of that date are stored (of one organization, if given).
    async fn churn_scores_exist(&self, date: jiff::civil::Date, org: Option<&OrganizationId>) -> Result<bool>;
    async fn churn_scores(&self, query: &ChurnQuery) -> Result<Listed<ChurnRow>>;
    /// Keeps the report's reads fast after a run wrote many rows: on PostgreSQL it vacuums and
    /// analyzes them, so a day's counts are index-only scans; SQLite refreshes its statistics.
    async fn tidy_churn_scores(&self) -> Result<()>;
    /// The latest date with churn rows (of one organization, or any).
    async fn latest_churn_date(&self, org: Option<&OrganizationId>) -> Result<Option<jiff::civil::Date>>;
    /// Rows of `date` whose score rose by at least `min_increase` since `since`, with the earlier
    /// score, largest rise first.
    async fn churn_risers(
        &self,
        date: jiff::civil::Date,
        since: jiff::civil::Date,
        min_increase: f64,
        org: Option<&OrganizationId>,
        limit: u32,
    ) -> Result<Vec<(ChurnRow, f64)>>;
    /// Alerts newest first; open ones of an organization when `query` says so.
    async fn alerts(&self, query: &AlertQuery) -> Result<Listed<Alert>>;
    /// The open alerts a source raised in an organization, from the index of open alerts: what a
    /// report reconciles the day's conditions with, without counting or ordering.
    async fn open_alerts(&self, org: &OrganizationId, source: &str) -> Result<Vec<crate::OpenAlert>>;
    /// Closes an open alert by hand; the alert as it is now, or `None` if no such alert.
    async fn resolve_alert(&self, id: &str, action_taken: &str, now: Timestamp) -> Result<Option<Alert>>;
    /// Creates (`AlreadyExists` if the id is taken) or replaces a rule.
    async fn save_alert_rule(&self, rule: &AlertRule, write: Write) -> Result<()>;
    async fn alert_rule(&self, id: &str) -> Result<Option<AlertRule>>;
    /// Every rule, by id.
    async fn alert_rules(&self) -> Result<Vec<AlertRule>>;
    /// Removes a rule and its evaluation state (its alerts stay); whether it existed.
    async fn delete_alert_rule(&self, id: &str) -> Result<bool>;
    /// Creates a channel with its signing secret (`AlreadyExists` if the id is taken).
    async fn create_channel(&self, channel: &Channel, secret: Option<&str>) -> Result<()>;
    /// A channel and its signing secret.
    async fn channel(&self, id: &str) -> Result<Option<(Channel, Option<String>)>>;
    async fn channels(&self) -> Result<Vec<Channel>>;
    async fn delete_channel(&self, id: &str) -> Result<bool>;
    /// Per query, in order, the totals per usage type of its subject over its window: whole
    /// hours from the hourly aggregates (a window starting inside an hour adds that hour's raw
    /// events), or the outcome of the latest LLM requests.
    async fn window_totals(&self, queries: Vec<WindowQuery>) -> Result<Vec<Vec<WindowTotal>>>;
    /// What the last evaluations left, per (organization, rule, subject) key.
    async fn rule_states(&self, keys: Vec<(Option<OrganizationId>, String, String)>) -> Result<Vec<Option<RuleState>>>;
    /// Lands evaluations in one transaction: per observation, re-reads its state, resolves and
    /// opens alerts as the transition says, queues one delivery per channel for each alert
    /// opened or resolved, and saves the new state. Returns the alerts opened or resolved.
    async fn apply_observations(&self, observations: Vec<Observation>, now: Timestamp) -> Result<Vec<Alert>>;
    /// Claims up to `limit` due deliveries: each is pushed to `lease_until` so no other worker
    /// takes it while this one tries.
    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<Delivery>>;
    /// Records an attempt: delivered when `delivered`, else due again at `retry_at` or, without
    /// one, given up.
    async fn record_delivery_attempt(
        &self,
        delivery: &Delivery,
        attempt: DeliveryAttempt,
        delivered: bool,
        retry_at: Option<Timestamp>,
    ) -> Result<()>;
    /// Deliveries newest first.
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Listed<Delivery>>;
    async fn save_report_run(&self, run: &ReportRun) -> Result<()>;
    /// Report runs, newest first.
    async fn report_runs(&self, report: Option<&str>, page: Page) -> Result<Listed<ReportRun>>;
    /// Whether a run of the report for that date (and organization, or all) succeeded.
    async fn report_succeeded(&self, report: &str, date: jiff::civil::Date, org: Option<&OrganizationId>) -> Result<bool>;
    /// Completes a job run this owner holds (a lease taken with `claim_job`).
    async fn finish_job(&self, run_id: &str, owner: &str, now: Timestamp) -> Result<()>;

    async fn event_count(&self) -> Result<u64>;

    /// Recomputes every aggregate from raw events, atomically; returns the events replayed.
    async fn rebuild_aggregates(&self) -> Result<u64>;

    /// A digest of every aggregate row, to compare live and rebuilt figures.
    async fn aggregates_fingerprint(&self) -> Result<AggregatesFingerprint>;
}

/// Opens the store a URL names: `sqlite://PATH` or `postgres://…`/`postgresql://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(path)).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Config(format!("unsupported database URL {:?}: expected sqlite://PATH or postgres://…", redact_url(url))))
    }
}

/// The URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Splits a deduplicated batch into the events to insert, remembering each one's position.
pub(crate) fn first_occurrences(events: &[UsageEvent]) -> (Vec<usize>, Vec<bool>) {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    let mut candidates = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if seen.insert((e.organization_id.as_str(), e.id.as_str())) {
            candidates.push(i);
        }
    }
    (candidates, vec![false; events.len()])
}

/// What both backends store of an event besides its key, time, user, type and quantity, in the
/// form their columns take.
pub(crate) struct EventColumns<'a> {
    pub team_id: Option<&'a str>,
    pub properties: Option<&'a str>,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub status: Option<&'static str>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_nanos: Option<i64>,
    pub latency_ms: Option<i64>,
    pub price_version: Option<i64>,
    /// `None` rather than zero, as ingestion stores it.
    pub cached_input_tokens: Option<i64>,
}

impl<'a> EventColumns<'a> {
    pub fn of(e: &'a UsageEvent) -> Self {
        let llm = e.llm.as_ref();
        EventColumns {
            team_id: e.team_id.as_ref().map(TeamId::as_str),
            properties: e.properties.as_deref(),
            model: llm.and_then(|l| l.model.as_deref()),
            provider: llm.and_then(|l| l.provider.as_deref()),
            status: llm.and_then(|l| l.status.map(tally_domain::event::LlmStatus::as_str)),
            input_tokens: llm.map(|l| l.input_tokens),
            output_tokens: llm.map(|l| l.output_tokens),
            cost_nanos: llm.and_then(|l| l.cost.map(tally_domain::Money::nanos)),
            latency_ms: llm.and_then(|l| l.latency_ms),
            price_version: llm.and_then(|l| l.price_version),
            cached_input_tokens: llm.map(|l| l.cached_input_tokens).filter(|c| *c > 0),
        }
    }
}

pub(crate) fn rollup_of<'a>(events: &'a [UsageEvent], stored: &[bool]) -> Rollup<'a> {
    Rollup::of(events.iter().zip(stored).filter(|(_, s)| **s).map(|(e, _)| e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_a_url() {
        assert_eq!(redact_url("postgres://tally:s3cret@db:5432/tally"), "postgres://tally:***@db:5432/tally");
        assert_eq!(redact_url("postgres://db/tally"), "postgres://db/tally");
        assert_eq!(redact_url("sqlite:///tmp/x"), "sqlite:///tmp/x");
    }
}
