//! The churn-risk report: a score per subscriber and day from six signals (scored in
//! `tally_domain::churn`), and the alerts that follow. Its unit is an organization with a live
//! subscription; its inputs are the organization's users, their activity in the two windows before
//! the day's end (read per user and day, one range of its events) and its open alerts. A run keeps
//! what it has read — the users, and the days of events — so that a backfill reads each day of
//! events once rather than once for every report date whose windows cover it.

use super::{DailyReport, DayOutcome};
use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tally_domain::churn::{self, AlertType, ChurnInput, ChurnSettings, DayActivity, RiskLevel, WindowActivity};
use tally_domain::entities::{Subscription, SubscriptionStatus, User};
use tally_domain::report::balance::billing_subscription;
use tally_domain::time::date_start;
use tally_domain::{OrganizationId, Role};
use tally_store::{ActivityDays, Alert, ChurnBatch, ChurnRow, OpenAlert, Store, StoreError};

fn whole_days(from: Timestamp, to: Timestamp) -> i64 {
    (to.as_second() - from.as_second()).div_euclid(86_400)
}

/// The subscription that bills each organization that has a live one (active, trialing or
/// payment issue).
async fn subscribers(store: &dyn Store, only: Option<&OrganizationId>) -> Result<Vec<Subscription>, StoreError> {
    let mut by_organization: BTreeMap<OrganizationId, Vec<Subscription>> = BTreeMap::new();
    for s in crate::series::every(|page| store.subscriptions(only, page)).await? {
        by_organization.entry(s.organization_id.clone()).or_default().push(s);
    }
    Ok(by_organization.values().filter_map(|subs| billing_subscription(subs).cloned()).collect())
}

/// One user's inputs, from the gathered activity, the user and the subscription.
fn input(user: &User, activity: Option<&WindowActivity>, sub: &Subscription, day_end: Timestamp, lookback_days: i64) -> ChurnInput {
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
fn billing_contacts<'a>(users: &[&'a User]) -> HashSet<&'a str> {
    for role in [Role::Owner, Role::Admin] {
        let found: HashSet<&str> = users.iter().filter(|u| u.role == role && u.is_active && !u.is_bot).map(|u| u.id.as_str()).collect();
        if !found.is_empty() {
            return found;
        }
    }
    HashSet::new()
}

/// The churn report, with the deployment's settings.
pub struct ChurnReport {
    pub settings: ChurnSettings,
}

/// One organization's inputs for a day.
pub struct Inputs {
    subscription: Subscription,
    /// Its active users, also those who joined after the day (shared by every day of a run).
    users: Arc<[User]>,
    activity: HashMap<String, WindowActivity>,
    open_alerts: Vec<OpenAlert>,
}

/// An organization's active users, read on a run's first day (a backfill scores the users as
/// they are now on every day, as each day run alone would), and the days of activity read.
pub struct ReadOrganization {
    users: Arc<[User]>,
    days: ReadDays,
}

/// An organization's activity on the days `[from, to)`, per user.
struct ReadDays {
    from: Date,
    to: Date,
    by_user: HashMap<String, Vec<DayActivity>>,
}

impl ReadDays {
    fn empty(from: Date) -> Self {
        ReadDays { from, to: from, by_user: HashMap::new() }
    }

    /// Whether these days join up with `[from, to)`: they start no later and end within it.
    fn leads_into(&self, from: Date, to: Date) -> bool {
        self.from <= from && from <= self.to && self.to <= to
    }

    /// Forgets the days before `from`.
    fn keep_from(&mut self, from: Date) {
        self.by_user.retain(|_, days| {
            days.retain(|d| d.day >= from);
            !days.is_empty()
        });
        self.from = from;
    }
}

#[async_trait]
impl DailyReport for ChurnReport {
    type Unit = Subscription;
    type Inputs = Inputs;
    type Output = ChurnBatch;
    type Key = OrganizationId;
    /// What the run has read of the organization, for its later days to reuse.
    type Carry = Option<ReadOrganization>;

    fn name(&self) -> &'static str {
        "churn"
    }

    fn schedule_hour(&self) -> i8 {
        2
    }

    /// Every organization with a live subscription (active, trialing or payment issue).
    async fn units(&self, store: &dyn Store, only: Option<&OrganizationId>) -> Result<Vec<Subscription>, StoreError> {
        subscribers(store, only).await
    }

    fn key(sub: &Subscription) -> OrganizationId {
        sub.organization_id.clone()
    }

    async fn gather(
        &self,
        store: &dyn Store,
        sub: &Subscription,
        day: Date,
        read: &mut Option<ReadOrganization>,
    ) -> Result<Inputs, StoreError> {
        let org = &sub.organization_id;
        let settings = &self.settings;
        let to = day.tomorrow().expect("in range");
        let from = to.checked_sub(jiff::Span::new().days(2 * settings.window_days)).expect("in range");
        // What this date still has to read: the organization's users once a run, the days of
        // events that the days read so far do not reach; read side by side with open alerts.
        let read_from = match read {
            Some(read) if read.days.leads_into(from, to) => read.days.to,
            _ => from,
        };
        let asked = (read_from < to).then(|| ActivityDays {
            from: read_from,
            to,
            login_type: settings.login_type.clone(),
            progress_type: settings.progress_type.clone(),
            frustration_property: settings.frustration_property.clone(),
        });
        let known = read.is_some();
        let (users, new_days, open_alerts) = tokio::try_join!(
            async {
                match known {
                    true => Ok(None),
                    false => crate::series::every(|page| store.users(Some(org), page)).await.map(Some),
                }
            },
            async {
                match &asked {
                    Some(asked) => store.daily_activity(org, asked).await,
                    None => Ok(Vec::new()),
                }
            },
            store.open_alerts(org, "churn_report"),
        )?;
        let read = match users {
            Some(users) => read.insert(ReadOrganization {
                users: users.into_iter().filter(|u| u.is_active && !u.is_bot).collect(),
                days: ReadDays::empty(from),
            }),
            None => read.as_mut().expect("users are read when nothing was"),
        };
        let days = &mut read.days;
        // Days that do not lead into this date's windows are read again from their start.
        if read_from == from {
            *days = ReadDays::empty(from);
        }
        for u in new_days {
            days.by_user.entry(u.user_id).or_default().push(u.activity);
        }
        days.to = to;
        days.keep_from(from);
        let activity = days.by_user.iter().map(|(user, d)| (user.clone(), WindowActivity::of_days(d, day, settings.window_days))).collect();
        Ok(Inputs { subscription: sub.clone(), users: read.users.clone(), activity, open_alerts })
    }

    fn compute(&self, inputs: Inputs, day: Date, now: Timestamp, outcome: &mut DayOutcome) -> ChurnBatch {
        let Inputs { subscription: sub, users, activity, open_alerts } = inputs;
        let org = &sub.organization_id;
        let settings = &self.settings;
        let day_end = date_start(day.tomorrow().expect("in range"));
        let users: Vec<&User> = users.iter().filter(|u| u.date_joined < day_end).collect();
        let contacts = billing_contacts(&users);
        let lookback = (2 * settings.window_days).max(settings.inactivity_days);
        let mut rows = Vec::with_capacity(users.len());
        let mut raised: Vec<(String, AlertType)> = Vec::new();
        let mut levels: HashMap<String, RiskLevel> = HashMap::new();
        for &user in &users {
            let input = input(user, activity.get(user.id.as_str()), &sub, day_end, lookback);
            let score = churn::score(&input, settings);
            *outcome.by_level.entry(score.risk_level.as_str()).or_default() += 1;
            levels.insert(user.id.to_string(), score.risk_level);
            raised
                .extend(churn::alert_conditions(&input, contacts.contains(user.id.as_str())).into_iter().map(|t| (user.id.to_string(), t)));
            rows.push(ChurnRow {
                organization_id: org.clone(),
                report_date: day,
                user_id: user.id.to_string(),
                score: score.score,
                risk_level: score.risk_level.as_str().to_owned(),
                details: score.details,
                login_count: score.login_count,
                login_trend: score.login_trend.to_owned(),
                days_until_renewal: score.days_until_renewal,
                schema_version: churn::SCHEMA_VERSION,
            });
        }
        let open: Vec<(String, AlertType, String)> =
            open_alerts.iter().filter_map(|a| Some((a.user_id.clone()?, AlertType::parse(&a.alert_type)?, a.id.clone()))).collect();
        let evaluated: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let (to_open, to_resolve) = churn::reconcile(&open, &raised, &evaluated);
        // Recomputing an earlier day never closes what a later day's report opened.
        let later: HashSet<&str> = open_alerts.iter().filter(|a| a.report_date.is_some_and(|d| d > day)).map(|a| a.id.as_str()).collect();
        let resolve: Vec<String> = to_resolve.into_iter().filter(|id| !later.contains(id)).map(str::to_owned).collect();
        outcome.rows += rows.len() as u64;
        outcome.alerts_resolved += resolve.len() as u64;
        let open = to_open
            .into_iter()
            .map(|(user, kind)| {
                let level = levels.get(user).copied().unwrap_or(RiskLevel::Low);
                Alert {
                    id: format!("alt_{:016x}", rand::random::<u64>()),
                    organization_id: Some(org.clone()),
                    source: "churn_report".into(),
                    rule_id: None,
                    key: format!("{}:{user}", kind.as_str()),
                    user_id: Some(user.clone()),
                    team_id: None,
                    alert_type: kind.as_str().to_owned(),
                    severity: level.as_str().to_lowercase(),
                    status: "open".into(),
                    report_date: Some(day),
                    details: serde_json::json!({ "risk_level": level.as_str() }),
                    opened_at: now,
                    resolved_at: None,
                    resolution: None,
                    action_taken: None,
                }
            })
            .collect();
        ChurnBatch { organization_id: org.clone(), rows, open, resolve }
    }

    fn rows(output: &ChurnBatch) -> usize {
        output.rows.len()
    }

    fn alerts(output: &ChurnBatch) -> u64 {
        output.open.len() as u64
    }

    async fn written(&self, store: &dyn Store, day: Date, only: Option<&OrganizationId>) -> Result<bool, StoreError> {
        store.churn_scores_exist(day, only).await
    }

    async fn upsert(
        &self,
        store: &dyn Store,
        day: Date,
        batches: Vec<ChurnBatch>,
        now: Timestamp,
        replace: bool,
    ) -> Result<u64, StoreError> {
        store.save_churn_reports(day, batches, now, replace).await
    }

    async fn tidy(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.tidy_churn_scores().await
    }
}
