//! Daily reports. A report type has a name, a schedule and three steps: gather its inputs with a
//! few set-based queries per organization, compute rows (pure, in `tally_domain`), and store them
//! (rows and alert changes in one transaction per organization). Runs are recorded; a day that
//! already succeeded is skipped unless forced; a lease keeps two runs of a report apart.
//!
//! The one report today is `churn`: a risk score per subscriber and day, and its alerts.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use tally_domain::churn::{self, AlertType, ChurnInput, ChurnSettings, RiskLevel};
use tally_domain::entities::{Subscription, SubscriptionStatus, User};
use tally_domain::time::date_start;
use tally_domain::{OrganizationId, Role};
use tally_store::{Alert, AlertQuery, ChurnBatch, ChurnRow, ChurnWindows, ReportRun, Store, StoreError, UserActivity};

pub const CHURN: &str = "churn";
/// Report types, by name.
pub const REPORTS: &[&str] = &[CHURN];
pub const MAX_DAYS_BACK: u32 = 366;
/// The hour (UTC) the daily run starts inside `tally serve`.
pub const SCHEDULE_HOUR: i8 = 2;

#[derive(Debug, Clone)]
pub struct Generate {
    pub organization: Option<OrganizationId>,
    pub dry_run: bool,
    pub force: bool,
    pub settings: ChurnSettings,
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
pub enum ReportError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The days a run covers: `days_back` days ending at `date` (default yesterday, UTC), oldest
/// first. A future date or too many days is refused with the allowed values.
pub fn days(date: Option<Date>, days_back: u32, today: Date) -> Result<Vec<Date>, ReportError> {
    let last = date.unwrap_or_else(|| today.yesterday().expect("a day before today"));
    if last > today {
        return Err(ReportError::Invalid(format!("the date {last} is in the future; give today ({today}) or an earlier date")));
    }
    if !(1..=MAX_DAYS_BACK).contains(&days_back) {
        return Err(ReportError::Invalid(format!("--days-back must be 1 to {MAX_DAYS_BACK}, got {days_back}")));
    }
    Ok((0..i64::from(days_back)).rev().map(|n| last.checked_sub(n.days()).expect("dates in range")).collect())
}

fn whole_days(from: Timestamp, to: Timestamp) -> i64 {
    (to.as_second() - from.as_second()).div_euclid(86_400)
}

/// The live subscription of each organization that has one (active, trialing or payment issue).
async fn subscribers(store: &dyn Store, only: Option<&OrganizationId>) -> Result<Vec<Subscription>, StoreError> {
    let mut latest: BTreeMap<OrganizationId, Subscription> = BTreeMap::new();
    for s in crate::series::every(|page| store.subscriptions(only, page)).await? {
        if matches!(s.status, SubscriptionStatus::Active | SubscriptionStatus::Trialing | SubscriptionStatus::PaymentIssue) {
            let keep = latest
                .get(&s.organization_id)
                .is_none_or(|l| (s.current_period_start, s.created_at) > (l.current_period_start, l.created_at));
            if keep {
                latest.insert(s.organization_id.clone(), s);
            }
        }
    }
    Ok(latest.into_values().collect())
}

/// One user's inputs, from the gathered activity, the user and the subscription.
fn input(user: &User, activity: Option<&UserActivity>, sub: &Subscription, day_end: Timestamp, lookback_days: i64) -> ChurnInput {
    let days_inactive = match (activity.and_then(|a| a.last_active), user.last_activity) {
        (Some(last), _) => whole_days(last, day_end),
        (None, Some(last)) if last <= day_end => whole_days(last, day_end),
        // Never active: inactive since joining.
        (None, None) => whole_days(user.date_joined, day_end).max(0),
        // Active only after the day asked (a backfill): at least the whole lookback.
        (None, Some(_)) => lookback_days,
    };
    let a = activity.cloned().unwrap_or_default();
    ChurnInput {
        days_inactive: Some(days_inactive),
        activity: a.activity,
        logins: a.logins,
        progress: a.progress,
        frustration: a.frustration,
        payment_issue: sub.status == SubscriptionStatus::PaymentIssue,
        days_until_renewal: Some(whole_days(day_end, sub.current_period_end)),
        trial_days_left: match (sub.status, sub.trial_end) {
            (SubscriptionStatus::Trialing, Some(end)) => Some(whole_days(day_end, end)),
            _ => None,
        },
    }
}

/// Organization-level alerts go to the owners, or the admins when there is no owner.
fn billing_contacts(users: &[User]) -> HashSet<&str> {
    for role in [Role::Owner, Role::Admin] {
        let found: HashSet<&str> = users.iter().filter(|u| u.role == role && u.is_active && !u.is_bot).map(|u| u.id.as_str()).collect();
        if !found.is_empty() {
            return found;
        }
    }
    HashSet::new()
}

/// Computes one organization's report for one day: its rows and alert changes.
async fn organization_day(
    store: &dyn Store,
    sub: &Subscription,
    day: Date,
    options: &Generate,
    outcome: &mut DayOutcome,
) -> Result<ChurnBatch, StoreError> {
    let org = &sub.organization_id;
    let settings = &options.settings;
    let day_end = date_start(day.tomorrow().expect("in range"));
    let window = SignedDuration::from_hours(24 * settings.window_days);
    let windows = ChurnWindows {
        start: day_end - window - window,
        middle: day_end - window,
        end: day_end,
        login_type: settings.login_type.clone(),
        progress_type: settings.progress_type.clone(),
        frustration_property: settings.frustration_property.clone(),
    };
    let users: Vec<User> = crate::series::every(|page| store.users(Some(org), page))
        .await?
        .into_iter()
        .filter(|u| u.is_active && !u.is_bot && u.date_joined < day_end)
        .collect();
    let activity: HashMap<String, UserActivity> =
        store.churn_activity(org, &windows).await?.into_iter().map(|a| (a.user_id.clone(), a)).collect();
    let contacts = billing_contacts(&users);
    let now = Timestamp::now();
    let lookback = (2 * settings.window_days).max(settings.inactivity_days);
    let mut rows = Vec::with_capacity(users.len());
    let mut raised: Vec<(String, AlertType)> = Vec::new();
    let mut levels: HashMap<String, RiskLevel> = HashMap::new();
    for user in &users {
        let input = input(user, activity.get(user.id.as_str()), sub, day_end, lookback);
        let score = churn::score(&input, settings);
        *outcome.by_level.entry(score.risk_level.as_str()).or_default() += 1;
        levels.insert(user.id.to_string(), score.risk_level);
        raised.extend(churn::alert_conditions(&input, contacts.contains(user.id.as_str())).into_iter().map(|t| (user.id.to_string(), t)));
        rows.push(ChurnRow {
            organization_id: org.clone(),
            report_date: day,
            user_id: user.id.to_string(),
            score: score.score,
            risk_level: score.risk_level.as_str().to_owned(),
            details: score.details(),
            login_count: score.login_count,
            login_trend: score.login_trend.to_owned(),
            days_until_renewal: score.days_until_renewal,
            schema_version: churn::SCHEMA_VERSION,
        });
    }
    let open_alerts =
        store.alerts(&AlertQuery { status: Some("open".into()), organization_id: Some(org.clone()), ..Default::default() }).await?;
    let open: Vec<(String, AlertType, String)> =
        open_alerts.results.iter().filter_map(|a| Some((a.user_id.clone(), AlertType::parse(&a.alert_type)?, a.id.clone()))).collect();
    let evaluated: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let (to_open, to_resolve) = churn::reconcile(&open, &raised, &evaluated);
    // Recomputing an earlier day never closes what a later day's report opened.
    let later: HashSet<&str> = open_alerts.results.iter().filter(|a| a.report_date > day).map(|a| a.id.as_str()).collect();
    let to_resolve: Vec<&str> = to_resolve.into_iter().filter(|id| !later.contains(id)).collect();
    outcome.rows += rows.len() as u64;
    outcome.alerts_resolved += to_resolve.len() as u64;
    let open = to_open
        .into_iter()
        .map(|(user, kind)| {
            let level = levels.get(user).copied().unwrap_or(RiskLevel::Low);
            Alert {
                id: format!("alt_{:016x}", rand::random::<u64>()),
                organization_id: org.clone(),
                user_id: user.clone(),
                alert_type: kind.as_str().to_owned(),
                severity: level.as_str().to_lowercase(),
                status: "open".into(),
                report_date: day,
                details: serde_json::json!({ "risk_level": level.as_str() }),
                opened_at: now,
                resolved_at: None,
                resolution: None,
                action_taken: None,
            }
        })
        .collect();
    let resolve = to_resolve.into_iter().map(str::to_owned).collect();
    Ok(ChurnBatch { organization_id: org.clone(), rows, open, resolve })
}

/// Rows per transaction when storing a day.
const ROWS_PER_COMMIT: usize = 20_000;

/// Stores (or, dry, counts) the batches gathered so far.
async fn flush(
    store: &dyn Store,
    day: Date,
    pending: &mut Vec<ChurnBatch>,
    options: &Generate,
    outcome: &mut DayOutcome,
) -> Result<(), StoreError> {
    let batches = std::mem::take(pending);
    match options.dry_run {
        true => outcome.alerts_opened += batches.iter().map(|b| b.open.len() as u64).sum::<u64>(),
        false => outcome.alerts_opened += store.save_churn_reports(day, batches, Timestamp::now()).await?,
    }
    Ok(())
}

/// Runs the churn report for one day over every subscribed organization (or one).
pub async fn generate_day(store: &dyn Store, day: Date, options: &Generate) -> Result<DayOutcome, StoreError> {
    let started = Instant::now();
    let mut outcome = DayOutcome { date: Some(day), ..Default::default() };
    if !options.dry_run && !options.force && store.report_succeeded(CHURN, day, options.organization.as_ref()).await? {
        outcome.skipped = true;
        return Ok(outcome);
    }
    let result = async {
        let mut pending: Vec<ChurnBatch> = Vec::new();
        let mut pending_rows = 0;
        for sub in subscribers(store, options.organization.as_ref()).await? {
            let batch = organization_day(store, &sub, day, options, &mut outcome).await?;
            pending_rows += batch.rows.len();
            pending.push(batch);
            if pending_rows >= ROWS_PER_COMMIT {
                flush(store, day, &mut pending, options, &mut outcome).await?;
                pending_rows = 0;
            }
        }
        flush(store, day, &mut pending, options, &mut outcome).await
    }
    .await;
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    if !options.dry_run {
        let run = ReportRun {
            id: format!("{:032x}", rand::random::<u128>()),
            report: CHURN.into(),
            report_date: day,
            organization_id: options.organization.as_ref().map(|o| o.to_string()),
            status: if result.is_ok() { "succeeded" } else { "failed" }.into(),
            rows_written: outcome.rows,
            alerts_opened: outcome.alerts_opened,
            alerts_resolved: outcome.alerts_resolved,
            started_at: Timestamp::now() - SignedDuration::from_millis(outcome.duration_ms as i64),
            duration_ms: outcome.duration_ms,
            error: result.as_ref().err().map(ToString::to_string),
        };
        store.save_report_run(&run).await?;
    }
    result.map(|_| outcome)
}

/// Runs the report for each day, oldest first, under the report's lease.
pub async fn generate(
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
        false => Some(store.claim_job(&format!("report:{CHURN}"), &owner, now + lease, now).await?),
    };
    let mut outcomes = Vec::with_capacity(days.len());
    let result = async {
        for day in days {
            let outcome = generate_day(store, *day, options).await?;
            progress(&outcome);
            outcomes.push(outcome);
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

/// Runs yesterday's churn report every day at 02:00 UTC while the server runs.
pub async fn daily(store: std::sync::Arc<dyn Store>, settings: ChurnSettings) {
    loop {
        let now = Timestamp::now();
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut next = date_start(today) + SignedDuration::from_hours(i64::from(SCHEDULE_HOUR));
        if next <= now {
            next += SignedDuration::from_hours(24);
        }
        tokio::time::sleep(next.duration_since(now).unsigned_abs()).await;
        let day = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date().yesterday().expect("in range");
        let options = Generate { organization: None, dry_run: false, force: false, settings: settings.clone() };
        match generate(store.as_ref(), &[day], &options, |_| {}).await {
            Ok(done) => tracing::info!(date = %day, rows = done.first().map_or(0, |d| d.rows), "churn report done"),
            Err(StoreError::Conflict(holder)) => tracing::info!(%holder, "churn report already running elsewhere"),
            Err(e) => tracing::warn!(error = %e, "churn report failed; retrying tomorrow"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
