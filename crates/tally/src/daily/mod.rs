//! Daily reports. A report type is a small registered type ([`DailyReport`]): a name, a schedule
//! and three steps — gather one unit's inputs (an organization's) with a few set-based queries,
//! compute its rows (pure), and upsert a batch of units in one transaction. This module runs
//! them: days oldest first, each run recorded, a day that succeeded skipped unless forced, a
//! dry run that writes nothing, and a lease that keeps two runs of a report apart.

pub mod churn;

use async_trait::async_trait;
use futures_util::StreamExt;
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tally_domain::OrganizationId;
use tally_domain::time::date_start;
use tally_store::{ReportRun, Store, StoreError};

/// The report types, by name.
pub const REPORTS: &[&str] = &["churn"];
pub const MAX_DAYS_BACK: u32 = 366;
/// Rows per transaction when storing a day.
const ROWS_PER_COMMIT: usize = 20_000;
/// Units gathered ahead of the one being computed: the store reads for them while the report
/// scores and writes.
const GATHER_AHEAD: usize = 4;

#[async_trait]
pub trait DailyReport: Send + Sync {
    /// What one step covers (an organization and what the report needs to know of it).
    type Unit: Send + Sync;
    type Inputs: Send;
    type Output: Send;
    /// What identifies a unit from one day to the next: its carry follows it.
    type Key: Eq + std::hash::Hash + Send;
    /// What a run carries for one unit from one day to the next (days run oldest first), so
    /// that a backfill reads each day's inputs once instead of once for every later day that
    /// looks back at it. Each unit has its own, so that units are gathered side by side.
    type Carry: Default + Send;

    /// The name its runs are recorded under.
    fn name(&self) -> &'static str;
    /// The UTC hour at which `tally serve` runs it for the day before.
    fn schedule_hour(&self) -> i8;
    /// The units a day covers (of one organization, if given).
    async fn units(&self, store: &dyn Store, only: Option<&OrganizationId>) -> Result<Vec<Self::Unit>, StoreError>;
    /// The unit's key, under which its carry is kept.
    fn key(unit: &Self::Unit) -> Self::Key;
    /// Reads a unit's inputs for the day, with what the run carries for it.
    async fn gather(&self, store: &dyn Store, unit: &Self::Unit, day: Date, carry: &mut Self::Carry) -> Result<Self::Inputs, StoreError>;
    /// Pure: the unit's rows and alert changes; counts them into `outcome`.
    fn compute(&self, inputs: Self::Inputs, day: Date, now: Timestamp, outcome: &mut DayOutcome) -> Self::Output;
    /// Rows an output holds (to size transactions).
    fn rows(output: &Self::Output) -> usize;
    /// Alerts an output would open (what a dry run reports).
    fn alerts(output: &Self::Output) -> u64;
    /// Whether the day holds rows already (of one organization, if given), before a run writes.
    async fn written(&self, store: &dyn Store, day: Date, only: Option<&OrganizationId>) -> Result<bool, StoreError>;
    /// Stores a batch of outputs in one transaction, replacing the units' rows of the day if
    /// the day held rows before the run (`replace`); returns the alerts opened.
    async fn upsert(
        &self,
        store: &dyn Store,
        day: Date,
        outputs: Vec<Self::Output>,
        now: Timestamp,
        replace: bool,
    ) -> Result<u64, StoreError>;

    /// After a run wrote its days: upkeep that keeps the report's reads fast.
    async fn tidy(&self, _store: &dyn Store) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Generate {
    pub organization: Option<OrganizationId>,
    pub dry_run: bool,
    pub force: bool,
}

/// What one day's run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayOutcome {
    pub date: Option<Date>,
    pub skipped: bool,
    pub rows: u64,
    pub by_level: BTreeMap<&'static str, u64>,
    pub alerts_opened: u64,
    pub alerts_resolved: u64,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDays(String);

/// The days a run covers: `days_back` days ending at `date` (default yesterday, UTC), oldest
/// first. A future date or too many days is refused with the allowed values.
pub fn days(date: Option<Date>, days_back: u32, today: Date) -> Result<Vec<Date>, InvalidDays> {
    let last = date.unwrap_or_else(|| today.yesterday().expect("a day before today"));
    if last > today {
        return Err(InvalidDays(format!("the date {last} is in the future; give today ({today}) or an earlier date")));
    }
    if !(1..=MAX_DAYS_BACK).contains(&days_back) {
        return Err(InvalidDays(format!("--days-back must be 1 to {MAX_DAYS_BACK}, got {days_back}")));
    }
    Ok((0..i64::from(days_back)).rev().map(|n| last.checked_sub(n.days()).expect("dates in range")).collect())
}

/// Stores (or, dry, counts) a batch of outputs; returns the alerts opened.
async fn flush<R: DailyReport>(
    report: &R,
    store: &dyn Store,
    day: Date,
    outputs: Vec<R::Output>,
    options: &Generate,
    replace: bool,
) -> Result<u64, StoreError> {
    match options.dry_run {
        true => Ok(outputs.iter().map(R::alerts).sum()),
        false => report.upsert(store, day, outputs, Timestamp::now(), replace).await,
    }
}

/// Runs a report for one day over every unit, in transactions of about `ROWS_PER_COMMIT` rows,
/// and records the run.
async fn generate_day<R: DailyReport>(
    report: &R,
    store: &dyn Store,
    day: Date,
    options: &Generate,
    carry: &mut HashMap<R::Key, R::Carry>,
) -> Result<DayOutcome, StoreError> {
    let (started, started_at) = (Instant::now(), Timestamp::now());
    let mut outcome = DayOutcome { date: Some(day), ..Default::default() };
    if !options.dry_run && !options.force && store.report_succeeded(report.name(), day, options.organization.as_ref()).await? {
        outcome.skipped = true;
        return Ok(outcome);
    }
    let result = async {
        let units = report.units(store, options.organization.as_ref()).await?;
        // Known once, before this run writes any: whether the day's rows replace earlier ones.
        let replace = match options.dry_run {
            true => false,
            false => report.written(store, day, options.organization.as_ref()).await?,
        };
        let mut carries: Vec<R::Carry> = units.iter().map(|u| carry.remove(&R::key(u)).unwrap_or_default()).collect();
        // Batches are written while the next ones are gathered: the store reads and writes side
        // by side instead of in turns.
        let (batches, mut to_write) = tokio::sync::mpsc::channel::<Vec<R::Output>>(1);
        // The gathering owns the sender (and borrows the rest through these), so that the writer
        // sees the end of the batches when the gathering ends.
        let (units, carries_of, counted) = (&units, &mut carries, &mut outcome);
        let gathering = async move {
            // Made up front, as futures that do nothing until the stream below polls them.
            let gathers: Vec<_> = units.iter().zip(carries_of.iter_mut()).map(|(unit, c)| report.gather(store, unit, day, c)).collect();
            let mut gathered = futures_util::stream::iter(gathers).buffered(GATHER_AHEAD);
            let (mut pending, mut pending_rows) = (Vec::new(), 0);
            while let Some(inputs) = gathered.next().await {
                let output = report.compute(inputs?, day, Timestamp::now(), counted);
                pending_rows += R::rows(&output);
                pending.push(output);
                if pending_rows >= ROWS_PER_COMMIT {
                    pending_rows = 0;
                    // Sending fails only once the writer has stopped, which it does only on an
                    // error, and that error is what the run returns.
                    if batches.send(std::mem::take(&mut pending)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !pending.is_empty() {
                // As above: a failed send means the writer's error is the run's.
                let _ = batches.send(pending).await;
            }
            Ok::<_, StoreError>(())
        };
        let writing = async {
            let mut opened = 0;
            while let Some(outputs) = to_write.recv().await {
                opened += flush(report, store, day, outputs, options, replace).await?;
            }
            Ok::<_, StoreError>(opened)
        };
        let ((), opened) = tokio::try_join!(gathering, writing)?;
        outcome.alerts_opened += opened;
        // What units no longer covered carried is dropped with them.
        *carry = units.iter().map(R::key).zip(carries).collect();
        Ok::<_, StoreError>(())
    }
    .await;
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    if !options.dry_run {
        let run = ReportRun {
            id: format!("{:032x}", rand::random::<u128>()),
            report: report.name().into(),
            report_date: day,
            organization_id: options.organization.as_ref().map(|o| o.to_string()),
            status: if result.is_ok() { "succeeded" } else { "failed" }.into(),
            rows_written: outcome.rows,
            alerts_opened: outcome.alerts_opened,
            alerts_resolved: outcome.alerts_resolved,
            started_at,
            duration_ms: outcome.duration_ms,
            error: result.as_ref().err().map(ToString::to_string),
        };
        store.save_report_run(&run).await?;
    }
    result.map(|_| outcome)
}

/// Runs a report for each day, oldest first, under the report's lease.
pub async fn generate<R: DailyReport>(
    report: &R,
    store: &dyn Store,
    days: &[Date],
    options: &Generate,
    progress: impl Fn(&DayOutcome),
) -> Result<Vec<DayOutcome>, StoreError> {
    let owner = crate::jobs::owner();
    let lease = SignedDuration::from_hours(1);
    let now = Timestamp::now();
    let run = match options.dry_run {
        true => None,
        false => Some(store.claim_job(&format!("report:{}", report.name()), &owner, now + lease, now).await?),
    };
    let mut outcomes = Vec::with_capacity(days.len());
    let mut carry = HashMap::new();
    let result = async {
        for day in days {
            let outcome = generate_day(report, store, *day, options, &mut carry).await?;
            progress(&outcome);
            outcomes.push(outcome);
        }
        if !options.dry_run {
            report.tidy(store).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    if let Some(run) = run {
        match &result {
            Ok(()) => store.finish_job(&run.id, &owner, Timestamp::now()).await?,
            Err(e) => store.abort_job(&run.id, &e.to_string(), Timestamp::now()).await?,
        }
    }
    result.map(|_| outcomes)
}

/// Runs a report for the day before, every day at its hour (UTC), while the server runs.
pub async fn schedule<R: DailyReport>(store: std::sync::Arc<dyn Store>, report: R) {
    loop {
        let now = Timestamp::now();
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut next = date_start(today) + SignedDuration::from_hours(i64::from(report.schedule_hour()));
        if next <= now {
            next += SignedDuration::from_hours(24);
        }
        tokio::time::sleep(next.duration_since(now).unsigned_abs()).await;
        let day = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date().yesterday().expect("in range");
        match generate(&report, store.as_ref(), &[day], &Generate::default(), |_| {}).await {
            Ok(done) => tracing::info!(report = report.name(), date = %day, rows = done.first().map_or(0, |d| d.rows), "daily report done"),
            Err(StoreError::Conflict(holder)) => tracing::info!(report = report.name(), %holder, "daily report already running elsewhere"),
            Err(e) => tracing::warn!(report = report.name(), error = %e, "daily report failed; retrying tomorrow"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A report whose units are indexes into `sizes`, each scored as that many rows and one
    /// alert; it records the units of every batch it is asked to store, and fails the batch
    /// holding `fail_at`.
    struct Counting {
        sizes: Vec<usize>,
        fail_at: Option<usize>,
        stored: Mutex<Vec<Vec<usize>>>,
    }

    #[async_trait]
    impl DailyReport for Counting {
        type Unit = usize;
        type Inputs = usize;
        type Output = (usize, usize);
        type Key = usize;
        type Carry = ();

        fn name(&self) -> &'static str {
            "counting"
        }

        fn schedule_hour(&self) -> i8 {
            2
        }

        async fn units(&self, _: &dyn Store, _: Option<&OrganizationId>) -> Result<Vec<usize>, StoreError> {
            Ok((0..self.sizes.len()).collect())
        }

        fn key(unit: &usize) -> usize {
            *unit
        }

        async fn gather(&self, _: &dyn Store, unit: &usize, _: Date, _: &mut ()) -> Result<usize, StoreError> {
            Ok(*unit)
        }

        fn compute(&self, unit: usize, _: Date, _: Timestamp, outcome: &mut DayOutcome) -> (usize, usize) {
            outcome.rows += self.sizes[unit] as u64;
            (unit, self.sizes[unit])
        }

        fn rows(output: &(usize, usize)) -> usize {
            output.1
        }

        fn alerts(_: &(usize, usize)) -> u64 {
            1
        }

        async fn written(&self, _: &dyn Store, _: Date, _: Option<&OrganizationId>) -> Result<bool, StoreError> {
            Ok(false)
        }

        async fn upsert(&self, _: &dyn Store, _: Date, outputs: Vec<(usize, usize)>, _: Timestamp, _: bool) -> Result<u64, StoreError> {
            let units: Vec<usize> = outputs.iter().map(|o| o.0).collect();
            if self.fail_at.is_some_and(|f| units.contains(&f)) {
                return Err(StoreError::Conflict("refused".into()));
            }
            self.stored.lock().unwrap().push(units);
            Ok(outputs.len() as u64)
        }
    }

    #[tokio::test]
    async fn every_output_is_stored_once_in_order_in_batches_written_while_the_next_are_gathered() {
        let dir = tempfile::tempdir().unwrap();
        let store = tally_store::sqlite::SqliteStore::open(&dir.path().join("tally.db")).await.unwrap();
        let day: Date = "2026-03-09".parse().unwrap();
        let report = Counting { sizes: vec![15_000, 15_000, 3_000, 25_000, 10], fail_at: None, stored: Mutex::new(Vec::new()) };
        let done = generate(&report, &store, &[day], &Generate::default(), |_| {}).await.unwrap();
        assert_eq!(*report.stored.lock().unwrap(), [vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!((done[0].rows, done[0].alerts_opened), (58_010, 5));

        // A batch that fails to store fails the run, and the run is recorded as failed.
        let report = Counting { sizes: vec![15_000, 15_000, 3_000, 25_000, 10], fail_at: Some(3), stored: Mutex::new(Vec::new()) };
        let options = Generate { force: true, ..Default::default() };
        let failed = generate(&report, &store, &[day], &options, |_| {}).await.unwrap_err();
        assert!(failed.to_string().contains("refused"), "{failed}");
        assert_eq!(*report.stored.lock().unwrap(), [vec![0, 1]]);
        let runs = store.report_runs(Some("counting"), tally_store::Page { limit: 10, offset: 0 }).await.unwrap();
        assert_eq!(runs.results.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["failed", "succeeded"]);
    }

    #[test]
    fn days_run_oldest_first_and_refuse_bad_ranges() {
        let today: Date = "2026-03-10".parse().unwrap();
        assert_eq!(days(None, 1, today).unwrap(), ["2026-03-09".parse::<Date>().unwrap()]);
        let back = days(Some("2026-03-01".parse().unwrap()), 3, today).unwrap();
        assert_eq!(back.iter().map(ToString::to_string).collect::<Vec<_>>(), ["2026-02-27", "2026-02-28", "2026-03-01"]);
        assert!(days(Some("2026-03-11".parse().unwrap()), 1, today).unwrap_err().to_string().contains("future"));
        assert!(days(None, 367, today).unwrap_err().to_string().contains("1 to 366"));
        assert!(days(None, 0, today).is_err());
    }
}
