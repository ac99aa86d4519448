//! Threshold rules at work. Ingestion marks the (organization, team, user) triples its committed
//! events touched; an evaluator task takes the marks in rounds, evaluates the rules that watch
//! them from the live aggregates, and lands the changes (alerts and their outbox rows) in one
//! transaction. A periodic sweep re-evaluates every rule: sliding windows fall, periods roll
//! over, and marks lost in a crash are caught up. [`deliver`] empties the outbox.

pub mod deliver;
pub mod rules;

use crate::config::AlertSettings;
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tally_domain::Aggregation;
use tally_domain::alerts::evaluate::{BalanceTerms, Observation, Subject, WindowTotal, changes, span, value};
use tally_domain::alerts::{AlertRule, Metric, RuleScope, Window};
use tally_domain::entities::{Plan, Subscription};
use tally_domain::report::balance::{Balance, billing_period, billing_subscription};
use tally_domain::{OrganizationId, TeamId, UsageEvent, UserId};
use tally_store::{Alert, AlertQuery, Page, Store, StoreError, WindowQuery};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Marks gathered this long before a round starts, so a burst of batches is one round.
const ROUND_DELAY: Duration = Duration::from_millis(100);
/// How long an organization's subscription and plan are trusted before they are read again.
const BILLING_TTL: Duration = Duration::from_secs(60);

pub type Touched = (OrganizationId, Option<TeamId>, UserId);

/// The enabled rules, indexed by what they watch.
#[derive(Default)]
struct RuleIndex {
    rules: Vec<Arc<AlertRule>>,
    by_user: HashMap<(OrganizationId, UserId), Vec<usize>>,
    by_team: HashMap<(OrganizationId, TeamId), Vec<usize>>,
    by_organization: HashMap<OrganizationId, Vec<usize>>,
    by_plan: HashMap<String, Vec<usize>>,
    all: Vec<usize>,
}

impl RuleIndex {
    fn of(rules: Vec<AlertRule>) -> RuleIndex {
        let mut index = RuleIndex::default();
        for rule in rules.into_iter().filter(|r| r.enabled) {
            let i = index.rules.len();
            match &rule.scope {
                RuleScope::User { organization_id, user_id } => {
                    index.by_user.entry((organization_id.clone(), user_id.clone())).or_default().push(i)
                }
                RuleScope::Team { organization_id, team_id } => {
                    index.by_team.entry((organization_id.clone(), team_id.clone())).or_default().push(i)
                }
                RuleScope::Organization { organization_id } => index.by_organization.entry(organization_id.clone()).or_default().push(i),
                RuleScope::Plan { plan_id } => index.by_plan.entry(plan_id.clone()).or_default().push(i),
                RuleScope::All => index.all.push(i),
            }
            index.rules.push(Arc::new(rule));
        }
        index
    }

    fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// An organization's billing subscription and its plan, as of `read`. Shared, not copied: every
/// rule of a round reads it.
struct Billing {
    subscription: Option<Subscription>,
    plan: Option<Plan>,
    read: Instant,
}

pub struct Alerting {
    store: Arc<dyn Store>,
    pub settings: AlertSettings,
    index: RwLock<Arc<RuleIndex>>,
    touched: Mutex<HashSet<Touched>>,
    llm_touched: AtomicBool,
    /// Whether an evaluator runs in this process (else nothing is marked).
    running: AtomicBool,
    wake_evaluator: Notify,
    /// Rung when the outbox got new rows.
    pub wake_delivery: Notify,
    billing: Mutex<HashMap<OrganizationId, Arc<Billing>>>,
    /// How each usage type aggregates (a gauge's balance counts its latest value).
    aggregations: RwLock<HashMap<String, tally_domain::Aggregation>>,
}

impl Alerting {
    /// Seeds the built-in system rule if the store has none, and loads the rules.
    pub async fn start(store: Arc<dyn Store>, settings: AlertSettings) -> Result<Alerting, StoreError> {
        if store.alert_rule(tally_domain::alerts::SYSTEM_RULE_ID).await?.is_none() {
            match store.save_alert_rule(&AlertRule::system(Timestamp::now()), tally_store::Write::Create).await {
                Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let alerting = Alerting {
            store,
            settings,
            index: RwLock::default(),
            touched: Mutex::default(),
            llm_touched: AtomicBool::new(false),
            running: AtomicBool::new(false),
            wake_evaluator: Notify::new(),
            wake_delivery: Notify::new(),
            billing: Mutex::default(),
            aggregations: RwLock::default(),
        };
        alerting.reload().await?;
        Ok(alerting)
    }

    /// Reloads the rules (after a change here; periodically for changes made elsewhere).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let index = Arc::new(RuleIndex::of(self.store.alert_rules().await?));
        let aggregations = self.store.usage_types().await?.into_iter().map(|t| (t.key.to_string(), t.aggregation)).collect();
        *self.index.write().expect("rule index lock") = index;
        *self.aggregations.write().expect("aggregations lock") = aggregations;
        Ok(())
    }

    fn index(&self) -> Arc<RuleIndex> {
        self.index.read().expect("rule index lock").clone()
    }

    /// What a batch touches, if any rule could care (nothing is copied while none exists or no
    /// evaluator runs); pass it to [`Alerting::touched`] once the batch is committed.
    pub fn marks(&self, events: &[UsageEvent]) -> Option<Vec<(Touched, bool)>> {
        if !self.running.load(Ordering::Relaxed) || self.index().is_empty() {
            return None;
        }
        Some(events.iter().map(|e| ((e.organization_id.clone(), e.team_id.clone(), e.user_id.clone()), e.llm.is_some())).collect())
    }

    /// Marks what the stored events of a committed batch touched, for the next round.
    pub fn touched(&self, marks: Vec<(Touched, bool)>, stored: &[bool]) {
        let mut llm = false;
        {
            let mut touched = self.touched.lock().expect("touched lock");
            for (mark, is_llm) in marks.into_iter().zip(stored).filter(|(_, s)| **s).map(|(m, _)| m) {
                llm |= is_llm;
                touched.insert(mark);
            }
        }
        if llm {
            self.llm_touched.store(true, Ordering::Relaxed);
        }
        self.wake_evaluator.notify_one();
    }

    /// One round: the rules watching what was touched since the last one. If it fails, the
    /// marks are kept for the next round.
    pub async fn evaluate_touched(&self) -> Result<Vec<Alert>, StoreError> {
        let touched: Vec<Touched> = std::mem::take(&mut *self.touched.lock().expect("touched lock")).into_iter().collect();
        let llm = self.llm_touched.swap(false, Ordering::Relaxed);
        let result = self.evaluate(&touched, llm).await;
        if result.is_err() {
            self.touched.lock().expect("touched lock").extend(touched);
            if llm {
                self.llm_touched.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    async fn evaluate(&self, touched: &[Touched], llm: bool) -> Result<Vec<Alert>, StoreError> {
        let index = self.index();
        let mut pairs: HashSet<(usize, Subject)> = HashSet::new();
        if llm {
            pairs.extend(index.all.iter().map(|&i| (i, Subject::All)));
        }
        for (org, team, user) in touched {
            let user_subject = || Subject::User { organization_id: org.clone(), user_id: user.clone() };
            if let Some(rules) = index.by_user.get(&(org.clone(), user.clone())) {
                pairs.extend(rules.iter().map(|&i| (i, user_subject())));
            }
            if let Some(rules) = index.by_organization.get(org) {
                pairs.extend(rules.iter().map(|&i| (i, Subject::Organization { organization_id: org.clone() })));
            }
            if let Some(team) = team
                && let Some(rules) = index.by_team.get(&(org.clone(), team.clone()))
            {
                pairs.extend(rules.iter().map(|&i| (i, Subject::Team { organization_id: org.clone(), team_id: team.clone() })));
            }
            if !index.by_plan.is_empty()
                && let Some(plan) = &self.billing(org).await?.plan
                && let Some(rules) = index.by_plan.get(&plan.id)
            {
                pairs.extend(rules.iter().map(|&i| (i, user_subject())));
            }
        }
        let pairs: Vec<(Arc<AlertRule>, Subject)> = pairs.into_iter().map(|(i, s)| (index.rules[i].clone(), s)).collect();
        self.land(pairs).await
    }

    /// The sweep: every rule for its own subject, and each plan rule for the users it has open
    /// alerts for (so their windows can roll over) or, in a `full` sweep (the first after a
    /// start, which catches up on marks a crash lost), for every user billed on its plan.
    pub async fn sweep(&self, full: bool) -> Result<Vec<Alert>, StoreError> {
        self.reload().await?;
        let index = self.index();
        let mut pairs = Vec::new();
        for rule in &index.rules {
            match &rule.scope {
                RuleScope::Plan { plan_id } if full => {
                    pairs.extend(self.plan_users(plan_id).await?.into_iter().map(|s| (rule.clone(), s)));
                }
                RuleScope::Plan { .. } => {
                    let query = AlertQuery {
                        rule_id: Some(rule.id.clone()),
                        status: Some("open".into()),
                        page: Some(Page::all()),
                        ..Default::default()
                    };
                    for alert in self.store.alerts(&query).await?.results {
                        if let (Some(org), Some(user)) = (alert.organization_id, alert.user_id.and_then(|u| UserId::parse(u).ok())) {
                            pairs.push((rule.clone(), Subject::User { organization_id: org, user_id: user }));
                        }
                    }
                }
                scope => pairs.push((rule.clone(), subject_of(scope).expect("a fixed scope has one subject"))),
            }
        }
        pairs.sort_by(|a, b| (&a.0.id, &a.1).cmp(&(&b.0.id, &b.1)));
        pairs.dedup_by(|a, b| a.0.id == b.0.id && a.1 == b.1);
        self.land(pairs).await
    }

    /// Evaluates one rule now for its subjects (a new rule whose line is already crossed).
    pub async fn evaluate_rule(&self, rule: &AlertRule) -> Result<Vec<Alert>, StoreError> {
        if !rule.enabled {
            return Ok(Vec::new());
        }
        let rule = Arc::new(rule.clone());
        let subjects = match (&rule.scope, subject_of(&rule.scope)) {
            (_, Some(subject)) => vec![subject],
            (RuleScope::Plan { plan_id }, None) => self.plan_users(plan_id).await?,
            _ => Vec::new(),
        };
        self.land(subjects.into_iter().map(|s| (rule.clone(), s)).collect()).await
    }

    /// Every user of the organizations whose billing subscription is on the plan.
    async fn plan_users(&self, plan_id: &str) -> Result<Vec<Subject>, StoreError> {
        let mut organizations = std::collections::BTreeSet::new();
        let mut page = Page::all();
        loop {
            let listed = self.store.subscriptions(None, page).await?;
            organizations.extend(listed.results.iter().map(|s| s.organization_id.clone()));
            if listed.results.len() < page.limit as usize {
                break;
            }
            page.offset += u64::from(page.limit);
        }
        let mut users = Vec::new();
        for org in organizations {
            if self.billing(&org).await?.plan.as_ref().is_none_or(|p| p.id != plan_id) {
                continue;
            }
            let mut page = Page::all();
            loop {
                let listed = self.store.users(Some(&org), page).await?;
                users.extend(listed.results.iter().map(|u| Subject::User { organization_id: org.clone(), user_id: u.id.clone() }));
                if listed.results.len() < page.limit as usize {
                    break;
                }
                page.offset += u64::from(page.limit);
            }
        }
        Ok(users)
    }

    /// Observes the pairs, then lands the ones whose state changes.
    async fn land(&self, pairs: Vec<(Arc<AlertRule>, Subject)>) -> Result<Vec<Alert>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        let observations = self.observe(&pairs, now).await?;
        let keys = observations.iter().map(|o| (o.subject.organization_id().cloned(), o.rule.id.clone(), o.subject.key())).collect();
        let states = self.store.rule_states(keys).await?;
        let changed: Vec<Observation> = observations
            .into_iter()
            .zip(states)
            .filter(|(o, state)| changes(state.as_ref(), o.window_start, o.level))
            .map(|(o, _)| o)
            .collect();
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let alerts = self.store.apply_observations(changed, now).await?;
        for alert in &alerts {
            tracing::info!(alert = %alert.id, status = %alert.status, rule = ?alert.rule_id, organization = ?alert.organization_id, user = ?alert.user_id, "alert {}", alert.status);
        }
        if !alerts.is_empty() {
            self.wake_delivery.notify_one();
        }
        Ok(alerts)
    }

    /// The value and level of each rule for its subject, now, from the live aggregates.
    pub async fn observe(&self, pairs: &[(Arc<AlertRule>, Subject)], now: Timestamp) -> Result<Vec<Observation>, StoreError> {
        let mut queries: Vec<WindowQuery> = Vec::new();
        let mut query_of: HashMap<(Subject, Option<Timestamp>, Option<u32>), usize> = HashMap::new();
        let mut plans = Vec::with_capacity(pairs.len());
        for (rule, subject) in pairs {
            let billing = match subject.organization_id() {
                Some(org) => Some(self.billing(org).await?),
                None => None,
            };
            let period = billing_period(billing.as_ref().and_then(|b| b.subscription.as_ref()), now);
            let mut window = span(rule.window, now, period);
            let balance = match &rule.metric {
                Metric::BalancePercent { usage_type } => Some(BalanceTerms {
                    limit: billing.as_ref().and_then(|b| Balance::limit(b.plan.as_ref(), b.subscription.as_ref(), usage_type)),
                    aggregation: self.aggregations.read().expect("aggregations lock").get(usage_type).copied().unwrap_or(Aggregation::Sum),
                }),
                _ => None,
            };
            // A gauge's balance is its latest value, which a user's all-time totals hold.
            if balance.is_some_and(|b| b.aggregation == Aggregation::Latest) {
                window.from = None;
            }
            let last = match rule.window {
                Window::LastRequests { requests } => Some(requests),
                _ => None,
            };
            let key = (subject.clone(), window.from, last);
            let at = *query_of.entry(key).or_insert_with(|| {
                queries.push(WindowQuery { subject: subject.clone(), from: window.from, last_requests: last });
                queries.len() - 1
            });
            plans.push((at, window.start, balance));
        }
        let totals: Vec<Vec<WindowTotal>> = self.store.window_totals(queries).await?;
        Ok(pairs
            .iter()
            .zip(plans)
            .map(|((rule, subject), (at, window_start, balance))| {
                let v = value(&rule.metric, &totals[at], balance);
                Observation { rule: (**rule).clone(), subject: subject.clone(), window_start, value: v, level: rule.level(v), at: now }
            })
            .collect())
    }

    /// The organization's billing subscription and plan, cached briefly.
    async fn billing(&self, org: &OrganizationId) -> Result<Arc<Billing>, StoreError> {
        if let Some(b) = self.billing.lock().expect("billing lock").get(org).filter(|b| b.read.elapsed() < BILLING_TTL) {
            return Ok(b.clone());
        }
        let subscriptions = self.store.subscriptions(Some(org), Page::all()).await?.results;
        let subscription = billing_subscription(&subscriptions).cloned();
        let plan = match &subscription {
            Some(s) => self.store.plan(&s.plan_id).await?,
            None => None,
        };
        let billing = Arc::new(Billing { subscription, plan, read: Instant::now() });
        self.billing.lock().expect("billing lock").insert(org.clone(), billing.clone());
        Ok(billing)
    }

    /// The enabled hard rules that apply to a user: theirs, their organization's, their plan's.
    pub async fn budgets_of(&self, org: &OrganizationId, user: &UserId) -> Result<Vec<(Arc<AlertRule>, Subject)>, StoreError> {
        let index = self.index();
        let mut pairs = Vec::new();
        let user_subject = || Subject::User { organization_id: org.clone(), user_id: user.clone() };
        for &i in index.by_user.get(&(org.clone(), user.clone())).into_iter().flatten() {
            pairs.push((index.rules[i].clone(), user_subject()));
        }
        for &i in index.by_organization.get(org).into_iter().flatten() {
            pairs.push((index.rules[i].clone(), Subject::Organization { organization_id: org.clone() }));
        }
        if !index.by_plan.is_empty()
            && let Some(plan) = &self.billing(org).await?.plan
        {
            for &i in index.by_plan.get(&plan.id).into_iter().flatten() {
                pairs.push((index.rules[i].clone(), user_subject()));
            }
        }
        pairs.retain(|(rule, _)| rule.hard);
        Ok(pairs)
    }
}

/// The one subject of a scope that names it (not a plan's users).
pub fn subject_of(scope: &RuleScope) -> Option<Subject> {
    match scope {
        RuleScope::User { organization_id, user_id } => {
            Some(Subject::User { organization_id: organization_id.clone(), user_id: user_id.clone() })
        }
        RuleScope::Team { organization_id, team_id } => {
            Some(Subject::Team { organization_id: organization_id.clone(), team_id: team_id.clone() })
        }
        RuleScope::Organization { organization_id } => Some(Subject::Organization { organization_id: organization_id.clone() }),
        RuleScope::All => Some(Subject::All),
        RuleScope::Plan { .. } => None,
    }
}

/// Starts the evaluator, the sweep and the delivery worker.
pub fn spawn(alerting: Arc<Alerting>) -> Vec<JoinHandle<()>> {
    alerting.running.store(true, Ordering::Relaxed);
    let evaluator = {
        let alerting = alerting.clone();
        tokio::spawn(async move {
            loop {
                alerting.wake_evaluator.notified().await;
                tokio::time::sleep(ROUND_DELAY).await;
                if let Err(error) = alerting.evaluate_touched().await {
                    tracing::warn!(%error, "rule evaluation failed; the sweep will catch up");
                }
            }
        })
    };
    let sweep = {
        let alerting = alerting.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs_f64(alerting.settings.sweep_seconds));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut full = true;
            loop {
                every.tick().await;
                match alerting.sweep(full).await {
                    Ok(_) => full = false,
                    Err(error) => tracing::warn!(%error, "rule sweep failed"),
                }
            }
        })
    };
    let delivery = tokio::spawn(deliver::run(alerting));
    vec![evaluator, sweep, delivery]
}
