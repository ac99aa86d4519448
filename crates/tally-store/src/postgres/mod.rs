//! The production backend: PostgreSQL through a connection pool. Ingestion sends whole batches as
//! arrays (`unnest`) so a group commit costs a handful of round trips, not one per event.

mod alerts;
mod churn;
mod entities;
mod events;
mod import;
mod jobs;
mod prices;
mod report;
mod seats;

use crate::{
    ActivityDays, AggregatesFingerprint, Alert, AlertQuery, ApiKey, CellScope, ChurnQuery, ChurnRow, Delivery, DeliveryAttempt,
    DeliveryQuery, Importer, JobRun, LatencyDays, Listed, MonthCells, Page, PushOutcome, ReportRun, Result, SeatSnapshot, Server, Store,
    StoreError, Subject, TimeRange, UsageFilter, UsageTotal, UserDay, WindowQuery, Write,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use jiff::Timestamp;
use std::time::Duration;
use tally_domain::alerts::evaluate::{Observation, RuleState, WindowTotal};
use tally_domain::alerts::{AlertRule, Channel};
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tally_domain::llm::Latencies;
use tally_domain::llm::prices::{ModelPrice, PriceTable, UnpricedModel};
use tally_domain::meter::Meter;
use tally_domain::seats::audit::AuditEvent;
use tally_domain::seats::ledger::LedgerEntry;
use tally_domain::seats::remote::RemotePush;
use tally_domain::series::Cell;
use tally_domain::{OrganizationId, TeamId, UsageEvent, UsageType, UserId};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_core.sql")),
    (2, include_str!("../../migrations/postgres/0002_hourly_by_user.sql")),
    (3, include_str!("../../migrations/postgres/0003_meters.sql")),
    (4, include_str!("../../migrations/postgres/0004_job_runs.sql")),
    (5, include_str!("../../migrations/postgres/0005_llm_requests_by_user.sql")),
    (6, include_str!("../../migrations/postgres/0006_llm_prices.sql")),
    (7, include_str!("../../migrations/postgres/0007_seats.sql")),
    (8, include_str!("../../migrations/postgres/0008_churn.sql")),
    (9, include_str!("../../migrations/postgres/0009_alert_rules.sql")),
    (10, include_str!("../../migrations/postgres/0010_cached_input_tokens.sql")),
    (11, include_str!("../../migrations/postgres/0011_llm_latency_index.sql")),
    (12, include_str!("../../migrations/postgres/0012_llm_latency_histograms.sql")),
    (13, include_str!("../../migrations/postgres/0013_llm_latency_backfill.sql")),
    (14, include_str!("../../migrations/postgres/0014_llm_unpriced.sql")),
    (15, include_str!("../../migrations/postgres/0015_monthly_org.sql")),
    (16, include_str!("../../migrations/postgres/0016_llm_daily.sql")),
    (17, include_str!("../../migrations/postgres/0017_monthly_org_type.sql")),
    (18, include_str!("../../migrations/postgres/0018_billing_periods.sql")),
    (19, include_str!("../../migrations/postgres/0019_username_search.sql")),
    (20, include_str!("../../migrations/postgres/0020_room_for_updates.sql")),
    (21, include_str!("../../migrations/postgres/0021_latency_buckets_as_text.sql")),
    (22, include_str!("../../migrations/postgres/0022_churn_history_by_dates.sql")),
    (23, include_str!("../../migrations/postgres/0023_daily_org.sql")),
    (24, include_str!("../../migrations/postgres/0024_index_only_cells.sql")),
    (25, include_str!("../../migrations/postgres/0025_churn_details_as_json.sql")),
    (26, include_str!("../../migrations/postgres/0026_churn_levels_by_score.sql")),
    (27, include_str!("../../migrations/postgres/0027_weekly_org.sql")),
];
/// Serializes schema changes when several `tally serve` processes start at once.
const MIGRATION_LOCK: i64 = 0x0074_616c_6c79;
const POOL_SIZE: usize = 16;

pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL {}: {e}", crate::redact_url(url))))?;
        // No JIT: Tally's queries are short, but the planner's cost of a report page (a lookup
        // per candidate user) passes the JIT thresholds, and compiling took longer than running:
        // 616 ms against 126 ms without JIT, measured. Options the URL gives come first.
        let options = config.get_options().map_or(String::new(), |o| format!("{o} "));
        config.options(format!("{options}-c jit=off"));
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts { wait: timeout, create: timeout, recycle: timeout })
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let store = PostgresStore { pool };
        store.migrate().await?;
        tracing::info!(url = %crate::redact_url(url), "postgres store open");
        Ok(store)
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => map_err(e),
            other => StoreError::Unavailable(other.to_string()),
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(map_err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
            .await
            .map_err(map_err)?;
        for (version, sql) in MIGRATIONS {
            let applied = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", &[version])
                .await
                .map_err(map_err)?
                .get::<_, bool>(0);
            if !applied {
                tx.batch_execute(sql).await.map_err(map_err)?;
                tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", &[version]).await.map_err(map_err)?;
                tracing::info!(version, "postgres migration applied");
            }
        }
        entities::seed_usage_types(&tx).await?;
        tx.commit().await.map_err(map_err)
    }
}

/// PostgreSQL's errors, in domain terms.
pub(crate) fn map_err(error: tokio_postgres::Error) -> StoreError {
    match error.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::AlreadyExists(error.to_string()),
        Some(code) if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY => StoreError::Full(error.to_string()),
        Some(code) if *code == SqlState::UNTRANSLATABLE_CHARACTER || *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
            StoreError::Unstorable(error.as_db_error().map_or_else(|| error.to_string(), |db| db.message().to_owned()))
        }
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Unavailable(error.to_string())
        }
        // The server's own message says what went wrong ("db error" alone does not).
        Some(code) => StoreError::Internal(match error.as_db_error() {
            Some(db) => format!("{} ({}): {}", error, code.code(), db.message()),
            None => error.to_string(),
        }),
        // No SQLSTATE: the connection failed, or (a bug, not an outage) a value did not convert.
        None => {
            let io = std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>());
            if error.is_closed() || io { StoreError::Unavailable(error.to_string()) } else { StoreError::Internal(error.to_string()) }
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        self.conn().await?.simple_query("SELECT 1").await.map_err(map_err).map(drop)
    }

    async fn usage_types(&self) -> Result<Vec<UsageType>> {
        entities::usage_types(&**self.conn().await?).await
    }

    async fn save_usage_type(&self, t: &UsageType, write: Write) -> Result<()> {
        entities::save_usage_type(&**self.conn().await?, t, write).await
    }

    async fn save_organization(&self, o: &Organization, write: Write) -> Result<()> {
        entities::save_organization(&**self.conn().await?, o, write).await
    }

    async fn organization(&self, id: &OrganizationId) -> Result<Option<Organization>> {
        entities::organization(&**self.conn().await?, id).await
    }

    async fn organizations(&self, page: Page) -> Result<Listed<Organization>> {
        entities::organizations(&**self.conn().await?, page).await
    }

    async fn save_team(&self, t: &Team, write: Write) -> Result<()> {
        entities::save_team(&**self.conn().await?, t, write).await
    }

    async fn team(&self, id: &TeamId) -> Result<Option<Team>> {
        entities::team(&**self.conn().await?, id).await
    }

    async fn teams(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Team>> {
        entities::teams(&**self.conn().await?, org, page).await
    }

    async fn save_user(&self, u: &User, write: Write) -> Result<()> {
        entities::save_user(&**self.conn().await?, u, write).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>> {
        entities::user(&**self.conn().await?, id).await
    }

    async fn users(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<User>> {
        entities::users(&**self.conn().await?, org, page).await
    }

    async fn save_plan(&self, p: &Plan, write: Write) -> Result<()> {
        entities::save_plan(&**self.conn().await?, p, write).await
    }

    async fn plan(&self, id: &str) -> Result<Option<Plan>> {
        entities::plan(&**self.conn().await?, id).await
    }

    async fn save_meter(&self, org: &OrganizationId, meter: &Meter, write: Write) -> Result<()> {
        entities::save_meter(&**self.conn().await?, org, meter, write).await
    }

    async fn meter(&self, org: &OrganizationId, id_or_slug: &str) -> Result<Option<Meter>> {
        entities::meter(&**self.conn().await?, org, id_or_slug).await
    }

    async fn meters(&self, org: &OrganizationId) -> Result<Vec<Meter>> {
        entities::meters(&**self.conn().await?, org).await
    }

    async fn delete_meter(&self, org: &OrganizationId, slug: &str) -> Result<bool> {
        entities::delete_meter(&**self.conn().await?, org, slug).await
    }

    async fn plans(&self, page: Page) -> Result<Listed<Plan>> {
        entities::plans(&**self.conn().await?, page).await
    }

    async fn save_subscription(&self, s: &Subscription, write: Write) -> Result<()> {
        let mut conn = self.conn().await?;
        entities::save_subscription(&conn, s, write).await?;
        report::refresh_periods(&mut conn, Some(s.organization_id.as_str()), Timestamp::now()).await.map(drop)
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        entities::subscription(&**self.conn().await?, id).await
    }

    async fn subscriptions(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Subscription>> {
        entities::subscriptions(&**self.conn().await?, org, page).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        entities::create_api_key(&**self.conn().await?, key).await
    }

    async fn api_key_by_digest(&self, digest: &str) -> Result<Option<ApiKey>> {
        entities::api_key_by_digest(&**self.conn().await?, digest).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        entities::api_keys(&**self.conn().await?).await
    }

    async fn revoke_api_key(&self, id: &str, at: jiff::Timestamp) -> Result<bool> {
        entities::revoke_api_key(&**self.conn().await?, id, at).await
    }

    async fn record_events(&self, events: Vec<UsageEvent>) -> Result<Vec<bool>> {
        events::record(&mut **self.conn().await?, &events).await
    }

    async fn importer(&self) -> Result<Box<dyn Importer>> {
        Ok(Box::new(import::PostgresImporter::new(self.conn().await?)))
    }

    async fn usage_cells(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, scope: CellScope) -> Result<Vec<Cell>> {
        events::cells(&**self.conn().await?, filter, from, to, scope).await
    }

    async fn usage_month_cells(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
        cells: MonthCells,
        summed: bool,
    ) -> Result<Vec<Cell>> {
        events::month_cells(&**self.conn().await?, filter, from, to, cells, summed).await
    }

    async fn usage_day_cells(&self, filter: &UsageFilter, buckets: &[(Timestamp, Timestamp)], summed: bool) -> Result<Vec<Cell>> {
        events::day_cells(&**self.conn().await?, filter, buckets, summed).await
    }

    async fn usage_week_cells(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, summed: bool) -> Result<Vec<Cell>> {
        events::week_cells(&**self.conn().await?, filter, from, to, summed).await
    }

    async fn usage_events(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, with_properties: bool) -> Result<Vec<UsageEvent>> {
        events::events_between(&**self.conn().await?, filter, from, to, with_properties).await
    }

    async fn any_usage_events(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp) -> Result<bool> {
        events::any_between(&**self.conn().await?, filter, from, to).await
    }

    async fn usage_totals(&self, subject: &Subject, range: TimeRange) -> Result<Vec<UsageTotal>> {
        events::totals(&**self.conn().await?, subject, range).await
    }

    async fn report_users(&self, query: &crate::report::ReportQuery) -> Result<crate::report::ReportKeys> {
        report::users(&**self.conn().await?, query).await
    }

    async fn report_rows(&self, users: &[(OrganizationId, UserId)], now: Timestamp) -> Result<Vec<crate::ReportRow>> {
        report::rows(&**self.conn().await?, users, now).await
    }

    async fn refresh_statistics(&self) -> Result<()> {
        // Tally's own tables only: a bare ANALYZE would also read every other schema's tables
        // of a shared database.
        let conn = self.conn().await?;
        let tables: Vec<String> = conn
            .query("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = current_schema()", &[])
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if tables.is_empty() {
            return Ok(());
        }
        // VACUUM as well: it keeps the visibility map that lets series read settled cells from
        // their covering indexes alone (migration 24); autovacuum may lag a large load by far.
        conn.batch_execute(&format!("VACUUM (ANALYZE) {}", tables.join(", "))).await.map_err(map_err)
    }

    async fn refresh_billing_periods(&self, org: Option<&OrganizationId>, now: Timestamp) -> Result<u64> {
        report::refresh_periods(&mut **self.conn().await?, org.map(OrganizationId::as_str), now).await
    }

    async fn claim_job(&self, job: &str, owner: &str, lease_until: Timestamp, now: Timestamp) -> Result<crate::JobRun> {
        jobs::claim(&mut **self.conn().await?, job, owner, lease_until, now).await
    }

    async fn advance_job(
        &self,
        run_id: &str,
        owner: &str,
        max_organizations: u32,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<crate::JobRun> {
        jobs::advance(&mut **self.conn().await?, run_id, owner, max_organizations, lease_until, now).await
    }

    async fn abort_job(&self, run_id: &str, error: &str, now: Timestamp) -> Result<()> {
        jobs::abort(&**self.conn().await?, run_id, error, now).await
    }

    async fn job_runs(&self, job: &str) -> Result<Vec<crate::JobRun>> {
        jobs::runs(&**self.conn().await?, job).await
    }

    async fn llm_requests(&self, org: &OrganizationId, user: &UserId, query: &crate::LlmRequestQuery) -> Result<Vec<UsageEvent>> {
        events::llm_requests(&**self.conn().await?, org, user, query).await
    }

    async fn llm_latencies(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<Latencies> {
        events::llm_latencies(&**self.conn().await?, org, user, from, to).await
    }

    async fn llm_day_cells(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<Vec<Cell>> {
        events::llm_day_cells(&**self.conn().await?, org, user, from, to).await
    }

    async fn llm_latency_days(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<LatencyDays> {
        events::llm_latency_days(&**self.conn().await?, org, user, from, to).await
    }

    async fn llm_first_request(
        &self,
        org: &OrganizationId,
        user: Option<&UserId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<Timestamp>> {
        events::llm_first_request(&**self.conn().await?, org, user, from, to).await
    }

    async fn llm_activity(&self, org: Option<&OrganizationId>, limit: u32) -> Result<Vec<UsageEvent>> {
        events::llm_activity(&**self.conn().await?, org, limit).await
    }

    async fn llm_prices(&self) -> Result<PriceTable> {
        prices::table(&**self.conn().await?).await
    }

    async fn save_llm_price(&self, price: &ModelPrice) -> Result<i64> {
        prices::save(&mut **self.conn().await?, price).await
    }

    async fn delete_llm_price(&self, model: &str) -> Result<Option<i64>> {
        prices::delete(&mut **self.conn().await?, model).await
    }

    async fn reprice_llm(&self, from: Timestamp, to: Timestamp, table: &PriceTable) -> Result<u64> {
        prices::reprice(&mut **self.conn().await?, from, to, table).await
    }

    async fn unpriced_models(&self, org: Option<&OrganizationId>) -> Result<Vec<UnpricedModel>> {
        prices::unpriced(&**self.conn().await?, org).await
    }

    async fn record_audit_events(&self, events: Vec<AuditEvent>, now: Timestamp) -> Result<Vec<bool>> {
        seats::record_audit(&mut **self.conn().await?, &events, now).await
    }

    async fn audit_events(&self, org: &OrganizationId, page: Page) -> Result<Listed<AuditEvent>> {
        seats::audit_events(&**self.conn().await?, org, page).await
    }

    async fn seat_snapshots(&self, at: Vec<(OrganizationId, Timestamp)>) -> Result<Vec<SeatSnapshot>> {
        seats::seat_snapshots(&**self.conn().await?, &at).await
    }

    async fn save_server(&self, server: &Server, write: Write) -> Result<()> {
        seats::save_server(&mut **self.conn().await?, server, write).await
    }

    async fn server(&self, id: &str) -> Result<Option<Server>> {
        seats::server(&**self.conn().await?, id).await
    }

    async fn servers(&self) -> Result<Vec<Server>> {
        seats::servers(&**self.conn().await?).await
    }

    async fn record_push(&self, server: &Server, push: RemotePush, now: Timestamp) -> Result<PushOutcome> {
        seats::record_push(&mut **self.conn().await?, server, &push, now).await
    }

    async fn server_realms(&self, server_id: &str) -> Result<Vec<OrganizationId>> {
        seats::server_realms(&**self.conn().await?, server_id).await
    }

    async fn realm_server(&self, org: &OrganizationId) -> Result<Option<String>> {
        seats::realm_server(&**self.conn().await?, org).await
    }

    async fn unprocessed_audit_events(&self, after: Option<crate::AuditKey>, limit: u32) -> Result<Vec<AuditEvent>> {
        seats::unprocessed_audit(&**self.conn().await?, after, limit).await
    }

    async fn ledger(&self, org: &OrganizationId, page: Page) -> Result<Listed<LedgerEntry>> {
        seats::ledger(&**self.conn().await?, org, page).await
    }

    async fn ledger_since(&self, org: &OrganizationId, since: Timestamp) -> Result<Vec<LedgerEntry>> {
        seats::ledger_since(&**self.conn().await?, org, since).await
    }

    async fn commit_ledger(
        &self,
        run_id: &str,
        owner: &str,
        entries: Vec<LedgerEntry>,
        processed: Vec<(OrganizationId, String)>,
        lease_until: Timestamp,
        now: Timestamp,
        finished: bool,
    ) -> Result<JobRun> {
        seats::commit_ledger(&mut **self.conn().await?, run_id, owner, &entries, &processed, lease_until, now, finished).await
    }

    async fn daily_activity(&self, org: &OrganizationId, days: &ActivityDays) -> Result<Vec<UserDay>> {
        churn::daily_activity(&**self.conn().await?, org, days).await
    }

    async fn save_churn_reports(
        &self,
        date: jiff::civil::Date,
        batches: Vec<crate::ChurnBatch>,
        now: Timestamp,
        replace: bool,
    ) -> Result<u64> {
        churn::save_reports(&mut **self.conn().await?, date, &batches, now, replace).await
    }

    async fn churn_scores_exist(&self, date: jiff::civil::Date, org: Option<&OrganizationId>) -> Result<bool> {
        churn::scores_exist(&**self.conn().await?, date, org).await
    }

    async fn churn_scores(&self, query: &ChurnQuery) -> Result<Listed<ChurnRow>> {
        churn::scores(&**self.conn().await?, query).await
    }

    async fn latest_churn_date(&self, org: Option<&OrganizationId>) -> Result<Option<jiff::civil::Date>> {
        churn::latest_date(&**self.conn().await?, org).await
    }

    async fn churn_risers(
        &self,
        date: jiff::civil::Date,
        since: jiff::civil::Date,
        min_increase: f64,
        org: Option<&OrganizationId>,
        limit: u32,
    ) -> Result<Vec<(ChurnRow, f64)>> {
        churn::risers(&**self.conn().await?, date, since, min_increase, org, limit).await
    }

    async fn tidy_churn_scores(&self) -> Result<()> {
        // Outside a transaction, as VACUUM must be.
        self.conn().await?.batch_execute("VACUUM (ANALYZE) churn_scores").await.map_err(map_err)
    }

    async fn alerts(&self, query: &AlertQuery) -> Result<Listed<Alert>> {
        alerts::alerts(&**self.conn().await?, query).await
    }

    async fn open_alerts(&self, org: &OrganizationId, source: &str) -> Result<Vec<crate::OpenAlert>> {
        alerts::open_alerts_of(&**self.conn().await?, org, source).await
    }

    async fn resolve_alert(&self, id: &str, action_taken: &str, now: Timestamp) -> Result<Option<Alert>> {
        alerts::resolve(&**self.conn().await?, id, action_taken, now).await
    }

    async fn save_alert_rule(&self, rule: &AlertRule, write: Write) -> Result<()> {
        alerts::save_rule(&**self.conn().await?, rule, write).await
    }

    async fn alert_rule(&self, id: &str) -> Result<Option<AlertRule>> {
        alerts::rule(&**self.conn().await?, id).await
    }

    async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        alerts::rules(&**self.conn().await?).await
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool> {
        alerts::delete_rule(&mut **self.conn().await?, id).await
    }

    async fn create_channel(&self, channel: &Channel, secret: Option<&str>) -> Result<()> {
        alerts::create_channel(&**self.conn().await?, channel, secret).await
    }

    async fn channel(&self, id: &str) -> Result<Option<(Channel, Option<String>)>> {
        alerts::channel(&**self.conn().await?, id).await
    }

    async fn channels(&self) -> Result<Vec<Channel>> {
        alerts::channels(&**self.conn().await?).await
    }

    async fn delete_channel(&self, id: &str) -> Result<bool> {
        alerts::delete_channel(&**self.conn().await?, id).await
    }

    async fn window_totals(&self, queries: Vec<WindowQuery>) -> Result<Vec<Vec<WindowTotal>>> {
        alerts::window_totals(&**self.conn().await?, &queries).await
    }

    async fn rule_states(&self, keys: Vec<(Option<OrganizationId>, String, String)>) -> Result<Vec<Option<RuleState>>> {
        alerts::rule_states(&**self.conn().await?, &keys).await
    }

    async fn apply_observations(&self, observations: Vec<Observation>, now: Timestamp) -> Result<Vec<Alert>> {
        alerts::apply_observations(&mut **self.conn().await?, &observations, now).await
    }

    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<Delivery>> {
        alerts::claim_deliveries(&**self.conn().await?, now, lease_until, limit).await
    }

    async fn record_delivery_attempt(
        &self,
        delivery: &Delivery,
        attempt: DeliveryAttempt,
        delivered: bool,
        retry_at: Option<Timestamp>,
    ) -> Result<()> {
        alerts::record_attempt(&**self.conn().await?, delivery, &attempt, delivered, retry_at).await
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Listed<Delivery>> {
        alerts::deliveries(&**self.conn().await?, query).await
    }

    async fn save_report_run(&self, run: &ReportRun) -> Result<()> {
        churn::save_run(&**self.conn().await?, run).await
    }

    async fn report_runs(&self, report: Option<&str>, page: Page) -> Result<Listed<ReportRun>> {
        churn::runs(&**self.conn().await?, report, page).await
    }

    async fn report_succeeded(&self, report: &str, date: jiff::civil::Date, org: Option<&OrganizationId>) -> Result<bool> {
        churn::succeeded(&**self.conn().await?, report, date, org).await
    }

    async fn finish_job(&self, run_id: &str, owner: &str, now: Timestamp) -> Result<()> {
        churn::finish_job(&**self.conn().await?, run_id, owner, now).await
    }

    async fn event_count(&self) -> Result<u64> {
        let row = self.conn().await?.query_one("SELECT count(*) FROM events", &[]).await.map_err(map_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn rebuild_aggregates(&self) -> Result<u64> {
        events::rebuild(&mut **self.conn().await?).await
    }

    async fn aggregates_fingerprint(&self) -> Result<AggregatesFingerprint> {
        events::fingerprint(&**self.conn().await?).await
    }
}
