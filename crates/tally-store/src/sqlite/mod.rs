//! The embedded backend: one SQLite file in WAL mode. One writer connection (SQLite allows one
//! writer at a time; the group committer feeds it big transactions) and a small pool of readers.

mod alerts;
mod churn;
mod entities;
mod events;
mod import;
mod jobs;
mod prices;
mod report;
mod seats;

use crate::{Result, StoreError};
use rusqlite::{Connection, OpenFlags, ffi};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_core.sql")),
    (2, include_str!("../../migrations/sqlite/0002_hourly_by_user.sql")),
    (3, include_str!("../../migrations/sqlite/0003_meters.sql")),
    (4, include_str!("../../migrations/sqlite/0004_job_runs.sql")),
    (5, include_str!("../../migrations/sqlite/0005_llm_requests_by_user.sql")),
    (6, include_str!("../../migrations/sqlite/0006_llm_prices.sql")),
    (7, include_str!("../../migrations/sqlite/0007_seats.sql")),
    (8, include_str!("../../migrations/sqlite/0008_churn.sql")),
    (9, include_str!("../../migrations/sqlite/0009_alert_rules.sql")),
    (10, include_str!("../../migrations/sqlite/0010_cached_input_tokens.sql")),
    (11, include_str!("../../migrations/sqlite/0011_llm_latency_index.sql")),
    (12, include_str!("../../migrations/sqlite/0012_llm_latency_histograms.sql")),
    (13, include_str!("../../migrations/sqlite/0013_llm_latency_backfill.sql")),
    (14, include_str!("../../migrations/sqlite/0014_llm_unpriced.sql")),
    (15, include_str!("../../migrations/sqlite/0015_monthly_org.sql")),
    (16, include_str!("../../migrations/sqlite/0016_llm_daily.sql")),
    (17, include_str!("../../migrations/sqlite/0017_monthly_org_type.sql")),
    (18, include_str!("../../migrations/sqlite/0018_billing_periods.sql")),
    (19, include_str!("../../migrations/sqlite/0019_users_clustered.sql")),
    (20, include_str!("../../migrations/sqlite/0020_events_clustered.sql")),
    (21, include_str!("../../migrations/sqlite/0021_churn_history_by_dates.sql")),
    (22, include_str!("../../migrations/sqlite/0022_daily_org.sql")),
    (23, include_str!("../../migrations/sqlite/0023_weekly_org.sql")),
];
const IDLE_READERS: usize = 8;

/// Cloning shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_owned();
        let store = tokio::task::spawn_blocking(move || -> Result<SqliteStore> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Config(format!("cannot create data directory {}: {e}", dir.display())))?;
            }
            let mut writer = connect(&path)?;
            migrate(&mut writer)?;
            analyze(&writer)?;
            Ok(SqliteStore { path, writer: Arc::new(Mutex::new(writer)), readers: Arc::default() })
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        tracing::info!(path = %store.path.display(), "sqlite store open");
        Ok(store)
    }

    /// Runs `f` on a reader connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("reader pool lock").pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = connect(&path)?;
                    // Readers lean on the OS page cache; a writer-sized cache in each of them grew
                    // the process by hundreds of megabytes as a large database was read.
                    conn.execute_batch("PRAGMA cache_size = -16384").map_err(map_err)?;
                    conn
                }
            };
            let result = f(&conn);
            let mut idle = readers.lock().expect("reader pool lock");
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Runs `f` on the single writer connection, off the async runtime.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(map_err)?;
    // synchronous=FULL: an acknowledged event survives power loss, not only a process crash.
    // Group commit keeps the fsync per transaction, not per event.
    // page_size applies to a new database only (before its first write). 16 KiB pages make fewer,
    // larger WAL writes and checkpoints for the scattered roll-up upserts (BENCHMARKS.md); the
    // checkpoint still runs every 32 MiB of WAL. soft_heap_limit (process-wide) caps what all
    // connections' page caches hold together: past it SQLite recycles cached pages instead of
    // growing, so memory stays bounded however many readers have run and however large the file.
    conn.execute_batch(
        "PRAGMA soft_heap_limit = 268435456;
         PRAGMA page_size = 16384;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;
         PRAGMA wal_autocheckpoint = 2000;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA foreign_keys = OFF;",
    )
    .map_err(map_err)?;
    register_functions(&conn)?;
    Ok(conn)
}

/// The domain's latency-histogram arithmetic as SQL functions, so that upserts merge histograms
/// in place and migrations can bucket stored latencies.
fn register_functions(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    use tally_domain::llm::latency::{bucket_of, merge_buckets_json};
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("tally_latency_bucket", 1, flags, |ctx| Ok(bucket_of(ctx.get::<i64>(0)?))).map_err(map_err)?;
    conn.create_scalar_function("tally_merge_buckets", 2, flags, |ctx| {
        let (a, b): (String, String) = (ctx.get(0)?, ctx.get(1)?);
        merge_buckets_json(&a, &b).map_err(|e| rusqlite::Error::UserFunctionError(e.into()))
    })
    .map_err(map_err)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .map_err(map_err)?;
    for (version, sql) in MIGRATIONS {
        let applied: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)", [version], |r| r.get(0)).map_err(map_err)?;
        if !applied {
            tx.execute_batch(sql).map_err(map_err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                (version, jiff::Timestamp::now().as_microsecond()),
            )
            .map_err(map_err)?;
            tracing::info!(version, "sqlite migration applied");
        }
    }
    entities::seed_usage_types(&tx)?;
    tx.commit().map_err(map_err)
}

/// Refreshes the query planner's statistics from a bounded sample of each index (milliseconds
/// at any size). Without them SQLite guesses, and may scan all users through a secondary index
/// with a lookup per user: several times slower for a filtered report page.
fn analyze(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA analysis_limit = 1000; ANALYZE;").map_err(map_err)
}

/// SQLite's errors, in domain terms.
pub(crate) fn map_err(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(e, _) = &error {
        match e.code {
            ffi::ErrorCode::DiskFull => return StoreError::Full(error.to_string()),
            ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => {
                return StoreError::Unavailable(error.to_string());
            }
            ffi::ErrorCode::ConstraintViolation
                if e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY || e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                return StoreError::AlreadyExists(error.to_string());
            }
            ffi::ErrorCode::CannotOpen | ffi::ErrorCode::ReadOnly | ffi::ErrorCode::SystemIoFailure => {
                return StoreError::Unavailable(error.to_string());
            }
            _ => {}
        }
    }
    StoreError::Internal(error.to_string())
}

pub(crate) fn micros(ts: jiff::Timestamp) -> i64 {
    ts.as_microsecond()
}

pub(crate) fn timestamp(micros: i64) -> Result<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(micros).map_err(StoreError::corrupt)
}

use crate::{
    ActivityDays, AggregatesFingerprint, Alert, AlertQuery, ApiKey, CellScope, ChurnQuery, ChurnRow, Delivery, DeliveryAttempt,
    DeliveryQuery, Importer, JobRun, LatencyDays, Listed, MonthCells, Page, PushOutcome, ReportRun, SeatSnapshot, Server, Store, Subject,
    TimeRange, UsageFilter, UsageTotal, UserDay, WindowQuery, Write,
};
use async_trait::async_trait;
use jiff::Timestamp;
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

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)).await
    }

    async fn usage_types(&self) -> Result<Vec<UsageType>> {
        self.read(entities::usage_types).await
    }

    async fn save_usage_type(&self, t: &UsageType, write: Write) -> Result<()> {
        let t = t.clone();
        self.write(move |c| entities::save_usage_type(c, &t, write)).await
    }

    async fn save_organization(&self, o: &Organization, write: Write) -> Result<()> {
        let o = o.clone();
        self.write(move |c| entities::save_organization(c, &o, write)).await
    }

    async fn organization(&self, id: &OrganizationId) -> Result<Option<Organization>> {
        let id = id.clone();
        self.read(move |c| entities::organization(c, &id)).await
    }

    async fn organizations(&self, page: Page) -> Result<Listed<Organization>> {
        self.read(move |c| entities::organizations(c, page)).await
    }

    async fn save_team(&self, t: &Team, write: Write) -> Result<()> {
        let t = t.clone();
        self.write(move |c| entities::save_team(c, &t, write)).await
    }

    async fn team(&self, id: &TeamId) -> Result<Option<Team>> {
        let id = id.clone();
        self.read(move |c| entities::team(c, &id)).await
    }

    async fn teams(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Team>> {
        let org = org.cloned();
        self.read(move |c| entities::teams(c, org.as_ref(), page)).await
    }

    async fn save_user(&self, u: &User, write: Write) -> Result<()> {
        let u = u.clone();
        self.write(move |c| entities::save_user(c, &u, write)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let id = id.clone();
        self.read(move |c| entities::user(c, &id)).await
    }

    async fn users(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<User>> {
        let org = org.cloned();
        self.read(move |c| entities::users(c, org.as_ref(), page)).await
    }

    async fn save_plan(&self, p: &Plan, write: Write) -> Result<()> {
        let p = p.clone();
        self.write(move |c| entities::save_plan(c, &p, write)).await
    }

    async fn plan(&self, id: &str) -> Result<Option<Plan>> {
        let id = id.to_owned();
        self.read(move |c| entities::plan(c, &id)).await
    }

    async fn save_meter(&self, org: &OrganizationId, meter: &Meter, write: Write) -> Result<()> {
        let (org, meter) = (org.clone(), meter.clone());
        self.write(move |c| entities::save_meter(c, &org, &meter, write)).await
    }

    async fn meter(&self, org: &OrganizationId, id_or_slug: &str) -> Result<Option<Meter>> {
        let (org, id_or_slug) = (org.clone(), id_or_slug.to_owned());
        self.read(move |c| entities::meter(c, &org, &id_or_slug)).await
    }

    async fn meters(&self, org: &OrganizationId) -> Result<Vec<Meter>> {
        let org = org.clone();
        self.read(move |c| entities::meters(c, &org)).await
    }

    async fn delete_meter(&self, org: &OrganizationId, slug: &str) -> Result<bool> {
        let (org, slug) = (org.clone(), slug.to_owned());
        self.write(move |c| entities::delete_meter(c, &org, &slug)).await
    }

    async fn plans(&self, page: Page) -> Result<Listed<Plan>> {
        self.read(move |c| entities::plans(c, page)).await
    }

    async fn save_subscription(&self, s: &Subscription, write: Write) -> Result<()> {
        let s = s.clone();
        self.write(move |c| {
            entities::save_subscription(c, &s, write)?;
            report::refresh_periods(c, Some(s.organization_id.as_str()), Timestamp::now()).map(drop)
        })
        .await
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        let id = id.to_owned();
        self.read(move |c| entities::subscription(c, &id)).await
    }

    async fn subscriptions(&self, org: Option<&OrganizationId>, page: Page) -> Result<Listed<Subscription>> {
        let org = org.cloned();
        self.read(move |c| entities::subscriptions(c, org.as_ref(), page)).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.write(move |c| entities::create_api_key(c, &key)).await
    }

    async fn api_key_by_digest(&self, digest: &str) -> Result<Option<ApiKey>> {
        let digest = digest.to_owned();
        self.read(move |c| entities::api_key_by_digest(c, &digest)).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(entities::api_keys).await
    }

    async fn revoke_api_key(&self, id: &str, at: jiff::Timestamp) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| entities::revoke_api_key(c, &id, at)).await
    }

    async fn record_events(&self, events: Vec<UsageEvent>) -> Result<Vec<bool>> {
        self.write(move |c| events::record(c, &events)).await
    }

    async fn importer(&self) -> Result<Box<dyn Importer>> {
        Ok(Box::new(import::SqliteImporter::new(self.clone())))
    }

    async fn usage_cells(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, scope: CellScope) -> Result<Vec<Cell>> {
        let filter = filter.clone();
        self.read(move |c| events::cells(c, &filter, from, to, scope)).await
    }

    async fn usage_month_cells(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
        cells: MonthCells,
        summed: bool,
    ) -> Result<Vec<Cell>> {
        let filter = filter.clone();
        self.read(move |c| events::month_cells(c, &filter, from, to, cells, summed)).await
    }

    async fn usage_day_cells(&self, filter: &UsageFilter, buckets: &[(Timestamp, Timestamp)], summed: bool) -> Result<Vec<Cell>> {
        let (filter, buckets) = (filter.clone(), buckets.to_vec());
        self.read(move |c| events::day_cells(c, &filter, &buckets, summed)).await
    }

    async fn usage_week_cells(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, summed: bool) -> Result<Vec<Cell>> {
        let filter = filter.clone();
        self.read(move |c| events::week_cells(c, &filter, from, to, summed)).await
    }

    async fn usage_events(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp, with_properties: bool) -> Result<Vec<UsageEvent>> {
        let filter = filter.clone();
        self.read(move |c| events::events_between(c, &filter, from, to, with_properties)).await
    }

    async fn any_usage_events(&self, filter: &UsageFilter, from: Timestamp, to: Timestamp) -> Result<bool> {
        let filter = filter.clone();
        self.read(move |c| events::any_between(c, &filter, from, to)).await
    }

    async fn usage_totals(&self, subject: &Subject, range: TimeRange) -> Result<Vec<UsageTotal>> {
        let subject = subject.clone();
        self.read(move |c| events::totals(c, &subject, range)).await
    }

    async fn report_users(&self, query: &crate::report::ReportQuery) -> Result<crate::report::ReportKeys> {
        let query = query.clone();
        self.read(move |c| report::users(c, &query)).await
    }

    async fn report_rows(&self, users: &[(OrganizationId, UserId)], now: Timestamp) -> Result<Vec<crate::ReportRow>> {
        let users = users.to_vec();
        self.read(move |c| report::rows(c, &users, now)).await
    }

    async fn refresh_billing_periods(&self, org: Option<&OrganizationId>, now: Timestamp) -> Result<u64> {
        let org = org.cloned();
        self.write(move |c| report::refresh_periods(c, org.as_ref().map(OrganizationId::as_str), now)).await
    }

    async fn claim_job(&self, job: &str, owner: &str, lease_until: Timestamp, now: Timestamp) -> Result<crate::JobRun> {
        let (job, owner) = (job.to_owned(), owner.to_owned());
        self.write(move |c| jobs::claim(c, &job, &owner, lease_until, now)).await
    }

    async fn advance_job(
        &self,
        run_id: &str,
        owner: &str,
        max_organizations: u32,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<crate::JobRun> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.write(move |c| jobs::advance(c, &run_id, &owner, max_organizations, lease_until, now)).await
    }

    async fn abort_job(&self, run_id: &str, error: &str, now: Timestamp) -> Result<()> {
        let (run_id, error) = (run_id.to_owned(), error.to_owned());
        self.write(move |c| jobs::abort(c, &run_id, &error, now)).await
    }

    async fn job_runs(&self, job: &str) -> Result<Vec<crate::JobRun>> {
        let job = job.to_owned();
        self.read(move |c| jobs::runs(c, &job)).await
    }

    async fn llm_requests(&self, org: &OrganizationId, user: &UserId, query: &crate::LlmRequestQuery) -> Result<Vec<UsageEvent>> {
        let (org, user, query) = (org.clone(), user.clone(), query.clone());
        self.read(move |c| events::llm_requests(c, &org, &user, &query)).await
    }

    async fn llm_latencies(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<Latencies> {
        let (org, user) = (org.to_string(), user.map(UserId::to_string));
        self.read(move |c| events::llm_latencies(c, &org, user.as_deref(), from, to)).await
    }

    async fn llm_day_cells(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<Vec<Cell>> {
        let (org, user) = (org.to_string(), user.map(UserId::to_string));
        self.read(move |c| events::llm_day_cells(c, &org, user.as_deref(), from, to)).await
    }

    async fn llm_latency_days(&self, org: &OrganizationId, user: Option<&UserId>, from: Timestamp, to: Timestamp) -> Result<LatencyDays> {
        let (org, user) = (org.to_string(), user.map(UserId::to_string));
        self.read(move |c| events::llm_latency_days(c, &org, user.as_deref(), from, to)).await
    }

    async fn llm_first_request(
        &self,
        org: &OrganizationId,
        user: Option<&UserId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let (org, user) = (org.to_string(), user.map(UserId::to_string));
        self.read(move |c| events::llm_first_request(c, &org, user.as_deref(), from, to)).await
    }

    async fn llm_activity(&self, org: Option<&OrganizationId>, limit: u32) -> Result<Vec<UsageEvent>> {
        let org = org.cloned();
        self.read(move |c| events::llm_activity(c, org.as_ref(), limit)).await
    }

    async fn llm_prices(&self) -> Result<PriceTable> {
        self.read(prices::table).await
    }

    async fn save_llm_price(&self, price: &ModelPrice) -> Result<i64> {
        let price = price.clone();
        self.write(move |c| prices::save(c, &price)).await
    }

    async fn delete_llm_price(&self, model: &str) -> Result<Option<i64>> {
        let model = model.to_owned();
        self.write(move |c| prices::delete(c, &model)).await
    }

    async fn reprice_llm(&self, from: Timestamp, to: Timestamp, table: &PriceTable) -> Result<u64> {
        let table = table.clone();
        self.write(move |c| prices::reprice(c, from, to, &table)).await
    }

    async fn unpriced_models(&self, org: Option<&OrganizationId>) -> Result<Vec<UnpricedModel>> {
        let org = org.cloned();
        self.read(move |c| prices::unpriced(c, org.as_ref())).await
    }

    async fn record_audit_events(&self, events: Vec<AuditEvent>, now: Timestamp) -> Result<Vec<bool>> {
        self.write(move |c| seats::record_audit(c, &events, now)).await
    }

    async fn audit_events(&self, org: &OrganizationId, page: Page) -> Result<Listed<AuditEvent>> {
        let org = org.clone();
        self.read(move |c| seats::audit_events(c, &org, page)).await
    }

    async fn seat_snapshots(&self, at: Vec<(OrganizationId, Timestamp)>) -> Result<Vec<SeatSnapshot>> {
        self.read(move |c| seats::seat_snapshots(c, &at)).await
    }

    async fn save_server(&self, server: &Server, write: Write) -> Result<()> {
        let server = server.clone();
        self.write(move |c| seats::save_server(c, &server, write)).await
    }

    async fn server(&self, id: &str) -> Result<Option<Server>> {
        let id = id.to_owned();
        self.read(move |c| seats::server(c, &id)).await
    }

    async fn servers(&self) -> Result<Vec<Server>> {
        self.read(seats::servers).await
    }

    async fn record_push(&self, server: &Server, push: RemotePush, now: Timestamp) -> Result<PushOutcome> {
        let server = server.clone();
        self.write(move |c| seats::record_push(c, &server, &push, now)).await
    }

    async fn server_realms(&self, server_id: &str) -> Result<Vec<OrganizationId>> {
        let id = server_id.to_owned();
        self.read(move |c| seats::server_realms(c, &id)).await
    }

    async fn realm_server(&self, org: &OrganizationId) -> Result<Option<String>> {
        let org = org.clone();
        self.read(move |c| seats::realm_server(c, &org)).await
    }

    async fn unprocessed_audit_events(&self, after: Option<crate::AuditKey>, limit: u32) -> Result<Vec<AuditEvent>> {
        self.read(move |c| seats::unprocessed_audit(c, after, limit)).await
    }

    async fn ledger(&self, org: &OrganizationId, page: Page) -> Result<Listed<LedgerEntry>> {
        let org = org.clone();
        self.read(move |c| seats::ledger(c, &org, page)).await
    }

    async fn ledger_since(&self, org: &OrganizationId, since: Timestamp) -> Result<Vec<LedgerEntry>> {
        let org = org.clone();
        self.read(move |c| seats::ledger_since(c, &org, since)).await
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
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.write(move |c| seats::commit_ledger(c, &run_id, &owner, &entries, &processed, lease_until, now, finished)).await
    }

    async fn daily_activity(&self, org: &OrganizationId, days: &ActivityDays) -> Result<Vec<UserDay>> {
        let (org, days) = (org.clone(), days.clone());
        self.read(move |c| churn::daily_activity(c, &org, &days)).await
    }

    async fn save_churn_reports(
        &self,
        date: jiff::civil::Date,
        batches: Vec<crate::ChurnBatch>,
        now: Timestamp,
        replace: bool,
    ) -> Result<u64> {
        self.write(move |c| churn::save_reports(c, date, &batches, now, replace)).await
    }

    async fn churn_scores_exist(&self, date: jiff::civil::Date, org: Option<&OrganizationId>) -> Result<bool> {
        let org = org.map(|o| o.as_str().to_owned());
        self.read(move |c| churn::scores_exist(c, date, org.as_deref())).await
    }

    async fn churn_scores(&self, query: &ChurnQuery) -> Result<Listed<ChurnRow>> {
        let query = query.clone();
        self.read(move |c| churn::scores(c, &query)).await
    }

    async fn latest_churn_date(&self, org: Option<&OrganizationId>) -> Result<Option<jiff::civil::Date>> {
        let org = org.cloned();
        self.read(move |c| churn::latest_date(c, org.as_ref())).await
    }

    async fn churn_risers(
        &self,
        date: jiff::civil::Date,
        since: jiff::civil::Date,
        min_increase: f64,
        org: Option<&OrganizationId>,
        limit: u32,
    ) -> Result<Vec<(ChurnRow, f64)>> {
        let org = org.cloned();
        self.read(move |c| churn::risers(c, date, since, min_increase, org.as_ref(), limit)).await
    }

    async fn refresh_statistics(&self) -> Result<()> {
        self.write(|c| analyze(c)).await
    }

    async fn tidy_churn_scores(&self) -> Result<()> {
        self.write(|c| c.execute_batch("PRAGMA optimize").map_err(map_err)).await
    }

    async fn alerts(&self, query: &AlertQuery) -> Result<Listed<Alert>> {
        let query = query.clone();
        self.read(move |c| alerts::alerts(c, &query)).await
    }

    async fn open_alerts(&self, org: &OrganizationId, source: &str) -> Result<Vec<crate::OpenAlert>> {
        let (org, source) = (org.clone(), source.to_owned());
        self.read(move |c| alerts::open_alerts_of(c, &org, &source)).await
    }

    async fn resolve_alert(&self, id: &str, action_taken: &str, now: Timestamp) -> Result<Option<Alert>> {
        let (id, action) = (id.to_owned(), action_taken.to_owned());
        self.write(move |c| alerts::resolve(c, &id, &action, now)).await
    }

    async fn save_alert_rule(&self, rule: &AlertRule, write: Write) -> Result<()> {
        let rule = rule.clone();
        self.write(move |c| alerts::save_rule(c, &rule, write)).await
    }

    async fn alert_rule(&self, id: &str) -> Result<Option<AlertRule>> {
        let id = id.to_owned();
        self.read(move |c| alerts::rule(c, &id)).await
    }

    async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        self.read(alerts::rules).await
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| alerts::delete_rule(c, &id)).await
    }

    async fn create_channel(&self, channel: &Channel, secret: Option<&str>) -> Result<()> {
        let (channel, secret) = (channel.clone(), secret.map(str::to_owned));
        self.write(move |c| alerts::create_channel(c, &channel, secret.as_deref())).await
    }

    async fn channel(&self, id: &str) -> Result<Option<(Channel, Option<String>)>> {
        let id = id.to_owned();
        self.read(move |c| alerts::channel(c, &id)).await
    }

    async fn channels(&self) -> Result<Vec<Channel>> {
        self.read(alerts::channels).await
    }

    async fn delete_channel(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| alerts::delete_channel(c, &id)).await
    }

    async fn window_totals(&self, queries: Vec<WindowQuery>) -> Result<Vec<Vec<WindowTotal>>> {
        self.read(move |c| alerts::window_totals(c, &queries)).await
    }

    async fn rule_states(&self, keys: Vec<(Option<OrganizationId>, String, String)>) -> Result<Vec<Option<RuleState>>> {
        self.read(move |c| alerts::rule_states(c, &keys)).await
    }

    async fn apply_observations(&self, observations: Vec<Observation>, now: Timestamp) -> Result<Vec<Alert>> {
        self.write(move |c| alerts::apply_observations(c, &observations, now)).await
    }

    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<Delivery>> {
        self.write(move |c| alerts::claim_deliveries(c, now, lease_until, limit)).await
    }

    async fn record_delivery_attempt(
        &self,
        delivery: &Delivery,
        attempt: DeliveryAttempt,
        delivered: bool,
        retry_at: Option<Timestamp>,
    ) -> Result<()> {
        let delivery = delivery.clone();
        self.write(move |c| alerts::record_attempt(c, &delivery, &attempt, delivered, retry_at)).await
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Listed<Delivery>> {
        let query = query.clone();
        self.read(move |c| alerts::deliveries(c, &query)).await
    }

    async fn save_report_run(&self, run: &ReportRun) -> Result<()> {
        let run = run.clone();
        self.write(move |c| churn::save_run(c, &run)).await
    }

    async fn report_runs(&self, report: Option<&str>, page: Page) -> Result<Listed<ReportRun>> {
        let report = report.map(str::to_owned);
        self.read(move |c| churn::runs(c, report.as_deref(), page)).await
    }

    async fn report_succeeded(&self, report: &str, date: jiff::civil::Date, org: Option<&OrganizationId>) -> Result<bool> {
        let (report, org) = (report.to_owned(), org.cloned());
        self.read(move |c| churn::succeeded(c, &report, date, org.as_ref())).await
    }

    async fn finish_job(&self, run_id: &str, owner: &str, now: Timestamp) -> Result<()> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.write(move |c| jobs::finish(c, &run_id, &owner, now)).await
    }

    async fn event_count(&self) -> Result<u64> {
        self.read(events::event_count).await
    }

    async fn rebuild_aggregates(&self) -> Result<u64> {
        self.write(events::rebuild).await
    }

    async fn aggregates_fingerprint(&self) -> Result<AggregatesFingerprint> {
        self.read(events::fingerprint).await
    }
}
