//! Evaluating a rule for one subject: which stretch of time its window covers now, the metric's
//! value from window totals, and how the alerts of that rule and subject change from the state
//! the last evaluation left.

use super::{AlertRule, Metric, Window};
use crate::ids::{OrganizationId, TeamId, UserId};
use crate::money::Money;
use crate::report::balance::Balance;
use crate::time::{date_start, hour_start, month_start};
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// One thing a rule watches: a user, a team, an organization, or everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User { organization_id: OrganizationId, user_id: UserId },
    Team { organization_id: OrganizationId, team_id: TeamId },
    Organization { organization_id: OrganizationId },
    All,
}

impl Subject {
    pub fn organization_id(&self) -> Option<&OrganizationId> {
        match self {
            Subject::User { organization_id, .. } | Subject::Team { organization_id, .. } | Subject::Organization { organization_id } => {
                Some(organization_id)
            }
            Subject::All => None,
        }
    }

    /// Names the subject inside its organization (the key of its rule state).
    pub fn key(&self) -> String {
        match self {
            Subject::User { user_id, .. } => format!("user:{user_id}"),
            Subject::Team { team_id, .. } => format!("team:{team_id}"),
            Subject::Organization { .. } => "organization".to_owned(),
            Subject::All => "all".to_owned(),
        }
    }

    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Subject::User { user_id, .. } => Some(user_id),
            _ => None,
        }
    }

    pub fn team_id(&self) -> Option<&TeamId> {
        match self {
            Subject::Team { team_id, .. } => Some(team_id),
            _ => None,
        }
    }
}

/// Totals of one usage type over a window, as the live aggregates hold them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTotal {
    pub usage_type: String,
    pub count: i64,
    pub sum: f64,
    pub llm_successes: i64,
    pub llm_failures: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanos: i64,
    /// The largest single quantity.
    pub max: f64,
    /// A gauge's latest value (storage in use); known from a user's all-time totals only.
    pub latest: f64,
}

/// What a balance compares: the plan's effective limit (`None`: unlimited) and how the usage
/// type aggregates (a gauge counts its latest value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceTerms {
    pub limit: Option<f64>,
    pub aggregation: crate::Aggregation,
}

/// Where a window starts now: `from` bounds the totals (none: all time), `start` names the
/// window so that a new one (a new month, a new billing period) starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: Option<Timestamp>,
    pub start: Option<Timestamp>,
}

/// The span of a window at `now`, for a subject whose billing period is `period`.
pub fn span(window: Window, now: Timestamp, period: (Timestamp, Timestamp)) -> Span {
    let fixed = |start: Timestamp| Span { from: Some(start), start: Some(start) };
    match window {
        Window::CurrentPeriod => fixed(period.0),
        Window::Month => fixed(date_start(month_start(now))),
        Window::Day => fixed(date_start(now.to_zoned(TimeZone::UTC).date())),
        Window::AllTime | Window::LastRequests { .. } => Span { from: None, start: None },
        // Whole hours, so the hourly aggregates answer it without raw events.
        Window::LastHours { hours } => Span { from: Some(hour_start(now) - SignedDuration::from_hours(i64::from(hours) - 1)), start: None },
    }
}

/// The metric's value over the totals; `balance` holds the plan's terms (balance metrics only).
pub fn value(metric: &Metric, totals: &[WindowTotal], balance: Option<BalanceTerms>) -> Decimal {
    fn of_type<'a>(totals: &'a [WindowTotal], t: &'a str) -> impl Iterator<Item = &'a WindowTotal> {
        totals.iter().filter(move |x| x.usage_type == t)
    }
    let requests: i64 = totals.iter().map(|t| t.llm_successes + t.llm_failures).sum();
    let real = |x: f64| Decimal::try_from(x).unwrap_or_default().round_dp(9);
    match metric {
        Metric::UsageSum { usage_type } => real(of_type(totals, usage_type).map(|t| t.sum).sum()),
        Metric::UsageCount { usage_type } => Decimal::from(of_type(totals, usage_type).map(|t| t.count).sum::<i64>()),
        Metric::LlmCost => Money::from_nanos(totals.iter().map(|t| t.cost_nanos).sum()).to_decimal(),
        Metric::LlmTokens => Decimal::from(totals.iter().map(|t| t.input_tokens + t.output_tokens).sum::<i64>()),
        Metric::LlmRequests => Decimal::from(requests),
        Metric::LlmErrorRate if requests == 0 => Decimal::ZERO,
        Metric::LlmErrorRate => {
            let failures: i64 = totals.iter().map(|t| t.llm_failures).sum();
            (Decimal::from(failures) * Decimal::ONE_HUNDRED / Decimal::from(requests)).round_dp(4)
        }
        Metric::BalancePercent { usage_type } => {
            let terms = balance.unwrap_or(BalanceTerms { limit: None, aggregation: crate::Aggregation::Sum });
            let sum = of_type(totals, usage_type).map(|t| t.sum).sum();
            let max = of_type(totals, usage_type).map(|t| t.max).fold(0.0, f64::max);
            let latest = of_type(totals, usage_type).map(|t| t.latest).fold(0.0, f64::max);
            real(Balance::of(terms.limit, Balance::used(terms.aggregation, sum, max, latest)).balance_percent).round_dp(4)
        }
    }
}

/// What the last evaluation of a rule for a subject left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleState {
    pub window_start: Option<Timestamp>,
    pub level: Option<u32>,
}

/// How the alerts of one rule and subject change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transition {
    /// Resolve the open alerts of this step and above (`Some(0)`: all of them).
    pub resolve_from: Option<u32>,
    /// Open one alert per step.
    pub open: Vec<u32>,
}

/// Staying at a level changes nothing; rising opens the steps passed; falling resolves the steps
/// left; a new window forgets the old one's alerts and starts from nothing.
pub fn transition(previous: Option<&RuleState>, window_start: Option<Timestamp>, level: Option<u32>) -> Transition {
    let (was, new_window) = match previous {
        Some(p) if p.window_start == window_start => (p.level, false),
        Some(_) => (None, true),
        None => (None, false),
    };
    let first_new = was.map_or(0, |w| w + 1);
    let open = match level {
        Some(l) if was.is_none_or(|w| l > w) => (first_new..=l).collect(),
        _ => Vec::new(),
    };
    let resolve_from = if new_window {
        Some(0)
    } else {
        match (was, level) {
            (Some(_), None) => Some(0),
            (Some(w), Some(l)) if l < w => Some(l + 1),
            _ => None,
        }
    };
    Transition { resolve_from, open }
}

/// Whether an evaluation must be written: it opens or resolves alerts, or it starts a new
/// window or a first state above the line. Evaluations that change nothing write nothing.
pub fn changes(previous: Option<&RuleState>, window_start: Option<Timestamp>, level: Option<u32>) -> bool {
    let same_window = previous.map_or(level.is_none(), |p| p.window_start == window_start);
    transition(previous, window_start, level) != Transition::default() || !same_window
}

/// One evaluation of a rule for a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub rule: AlertRule,
    pub subject: Subject,
    pub window_start: Option<Timestamp>,
    pub value: Decimal,
    pub level: Option<u32>,
    pub at: Timestamp,
}

impl Observation {
    /// What makes two open alerts the same alert: rule, subject and step.
    pub fn alert_key(&self, step: u32) -> String {
        format!("{}{step}", self.key_prefix())
    }

    /// The common start of this rule's and subject's alert keys.
    pub fn key_prefix(&self) -> String {
        format!("rule:{}:{}:", self.rule.id, self.subject.key())
    }

    /// What an alert of this step records: the rule, the value, the line crossed.
    pub fn details(&self, step: u32) -> Value {
        let mut details = json!({
            "rule_id": self.rule.id,
            "rule_name": self.rule.name,
            "metric": self.rule.metric,
            "window": self.rule.window,
            "operator": self.rule.operator,
            "threshold": self.rule.threshold.to_string(),
            "step": step,
            "step_threshold": self.rule.step_threshold(step).to_string(),
            "value": self.value.normalize().to_string(),
            "window_start": self.window_start,
            "subject": self.subject.key(),
            "hard": self.rule.hard,
        });
        if self.rule.metric == Metric::LlmCost {
            details["currency"] = json!("USD");
        }
        details
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn windows_start_where_their_calendar_says() {
        let now = ts("2026-11-22T15:42:10Z");
        let period = (ts("2026-11-05T09:30:00Z"), ts("2026-12-05T09:30:00Z"));
        assert_eq!(span(Window::CurrentPeriod, now, period).from, Some(period.0));
        assert_eq!(span(Window::Month, now, period).start, Some(ts("2026-11-01T00:00:00Z")));
        assert_eq!(span(Window::Day, now, period).from, Some(ts("2026-11-22T00:00:00Z")));
        let last = span(Window::LastHours { hours: 24 }, now, period);
        assert_eq!((last.from, last.start), (Some(ts("2026-11-21T16:00:00Z")), None));
        assert_eq!(span(Window::AllTime, now, period), Span { from: None, start: None });
    }

    fn total(usage_type: &str, sum: f64, ok: i64, failed: i64, cost_nanos: i64) -> WindowTotal {
        WindowTotal {
            usage_type: usage_type.into(),
            count: ok + failed,
            sum,
            llm_successes: ok,
            llm_failures: failed,
            input_tokens: 10 * ok,
            output_tokens: 5 * ok,
            cost_nanos,
            max: sum,
            latest: sum,
        }
    }

    #[test]
    fn values_come_from_the_totals() {
        let totals = [total("llm_request", 7.0, 6, 2, 2_500_000_000), total("submission", 42.5, 0, 0, 0)];
        assert_eq!(value(&Metric::LlmCost, &totals, None), Decimal::new(25, 1));
        assert_eq!(value(&Metric::LlmRequests, &totals, None), Decimal::from(8));
        assert_eq!(value(&Metric::LlmTokens, &totals, None), Decimal::from(90));
        assert_eq!(value(&Metric::LlmErrorRate, &totals, None), Decimal::from(25));
        assert_eq!(value(&Metric::LlmErrorRate, &[], None), Decimal::ZERO);
        let sum = Metric::UsageSum { usage_type: "submission".into() };
        assert_eq!(value(&sum, &totals, None), Decimal::new(425, 1));
        let balance = Metric::BalancePercent { usage_type: "submission".into() };
        let terms = |limit, aggregation| Some(BalanceTerms { limit, aggregation });
        assert_eq!(value(&balance, &totals, terms(Some(50.0), crate::Aggregation::Sum)), Decimal::from(85));
        assert_eq!(value(&balance, &totals, terms(None, crate::Aggregation::Sum)), Decimal::ZERO, "unlimited is never used up");
        let storage = [WindowTotal { usage_type: "storage_bytes".into(), sum: 900.0, latest: 300.0, ..Default::default() }];
        let gauge = Metric::BalancePercent { usage_type: "storage_bytes".into() };
        assert_eq!(
            value(&gauge, &storage, terms(Some(600.0), crate::Aggregation::Latest)),
            Decimal::from(50),
            "a gauge counts its latest value"
        );
    }

    #[test]
    fn transitions_open_once_and_resolve_on_the_way_down() {
        let w = Some(ts("2026-11-01T00:00:00Z"));
        let state = |level| RuleState { window_start: w, level };
        assert_eq!(transition(None, w, None), Transition::default());
        assert_eq!(transition(None, w, Some(0)).open, vec![0]);
        assert_eq!(transition(Some(&state(Some(0))), w, Some(0)), Transition::default(), "staying above opens nothing");
        assert_eq!(transition(Some(&state(Some(0))), w, Some(2)).open, vec![1, 2]);
        assert_eq!(transition(Some(&state(Some(2))), w, None), Transition { resolve_from: Some(0), open: vec![] });
        assert_eq!(transition(Some(&state(Some(2))), w, Some(0)), Transition { resolve_from: Some(1), open: vec![] });
        let next_month = Some(ts("2026-12-01T00:00:00Z"));
        assert_eq!(transition(Some(&state(Some(1))), next_month, Some(0)), Transition { resolve_from: Some(0), open: vec![0] });
        assert_eq!(transition(Some(&state(None)), next_month, None), Transition { resolve_from: Some(0), open: vec![] });
    }

    #[test]
    fn only_changes_are_written() {
        let w = Some(ts("2026-11-01T00:00:00Z"));
        let state = |level| RuleState { window_start: w, level };
        assert!(!changes(None, w, None), "below the line with no history: nothing to keep");
        assert!(changes(None, w, Some(0)));
        assert!(!changes(Some(&state(Some(1))), w, Some(1)));
        assert!(changes(Some(&state(Some(1))), w, Some(0)));
        assert!(changes(Some(&state(None)), Some(ts("2026-12-01T00:00:00Z")), None), "a new window is remembered");
    }
}
