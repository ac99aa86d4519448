//! Churn risk: a score from 0 to 100 per subscriber per day, from six weighted signals over two
//! adjacent windows before the report date, and the alerts that follow from it. Pure: the inputs
//! are gathered elsewhere in a few set-based queries.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped when the meaning of a stored row's `details` changes.
pub const SCHEMA_VERSION: i64 = 1;

/// What a deployment may tune (`[churn]` in `tally.toml`). Weights are fractions summing to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnSettings {
    pub weight_inactivity: f64,
    pub weight_engagement: f64,
    pub weight_frustration: f64,
    pub weight_logins: f64,
    pub weight_progress: f64,
    pub weight_payment: f64,
    /// Days of inactivity that count as full risk.
    pub inactivity_days: i64,
    /// Length of each of the two compared windows, in days.
    pub window_days: i64,
    pub login_type: String,
    pub progress_type: String,
    /// The event property read as frustration (0–100).
    pub frustration_property: String,
}

impl Default for ChurnSettings {
    fn default() -> Self {
        ChurnSettings {
            weight_inactivity: 0.25,
            weight_engagement: 0.20,
            weight_frustration: 0.15,
            weight_logins: 0.15,
            weight_progress: 0.15,
            weight_payment: 0.10,
            inactivity_days: 14,
            window_days: 7,
            login_type: "login".into(),
            progress_type: "assignment_completed".into(),
            frustration_property: "frustration_score".into(),
        }
    }
}

impl ChurnSettings {
    pub fn check(&self) -> Result<(), String> {
        let weights = [
            self.weight_inactivity,
            self.weight_engagement,
            self.weight_frustration,
            self.weight_logins,
            self.weight_progress,
            self.weight_payment,
        ];
        if weights.iter().any(|w| !(0.0..=1.0).contains(w)) || (weights.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err(format!("churn weights must each be between 0 and 1 and sum to 1, got {weights:?}"));
        }
        if !(1..=90).contains(&self.inactivity_days) || !(1..=90).contains(&self.window_days) {
            return Err("churn `inactivity_days` and `window_days` must be 1 to 90".into());
        }
        let plain = |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain(&self.frustration_property) || !plain(&self.login_type) || !plain(&self.progress_type) {
            return Err("churn `frustration_property`, `login_type` and `progress_type` must be names of letters, digits and `_`".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 4] = [RiskLevel::Low, RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical];

    pub fn of(score: f64) -> Self {
        Self::ALL.into_iter().rev().find(|l| score >= l.scores().0).unwrap_or(RiskLevel::Low)
    }

    /// The scores of this level: at least the first, below the second when there is one. A
    /// query for a level also asks for its scores, which an index on scores answers.
    pub fn scores(self) -> (f64, Option<f64>) {
        match self {
            RiskLevel::Low => (0.0, Some(25.0)),
            RiskLevel::Medium => (25.0, Some(50.0)),
            RiskLevel::High => (50.0, Some(75.0)),
            RiskLevel::Critical => (75.0, None),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "LOW",
            RiskLevel::Medium => "MEDIUM",
            RiskLevel::High => "HIGH",
            RiskLevel::Critical => "CRITICAL",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str().eq_ignore_ascii_case(text))
    }
}

/// One user's inputs for report date D. Windows: `recent` is the `window_days` days ending at the
/// end of D, `earlier` the same length just before.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChurnInput {
    /// Whole days from the user's last activity (or, never active, from joining) to the end of D.
    pub days_inactive: Option<i64>,
    pub activity: [i64; 2],
    pub logins: [i64; 2],
    pub progress: [i64; 2],
    /// Average frustration (0–100) over both windows, if any event carried it.
    pub frustration: Option<f64>,
    pub payment_issue: bool,
    /// Days from the end of D to the end of the subscription period.
    pub days_until_renewal: Option<i64>,
    /// Trialing, with the trial ending within this many days of the end of D.
    pub trial_days_left: Option<i64>,
}

/// One user's activity on one UTC day, as the report reads it from events: each day is read
/// once, and a report date folds the days of its two windows ([`WindowActivity::of_days`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayActivity {
    pub day: Date,
    /// The day's latest event.
    pub last_active: Timestamp,
    pub events: i64,
    pub logins: i64,
    pub progress: i64,
    /// Sum and number of the events that carried a numeric frustration.
    pub frustration_sum: f64,
    pub frustration_count: i64,
}

/// A user's activity in the two windows before the end of a report date: `[earlier, recent]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowActivity {
    /// The latest event in either window.
    pub last_active: Option<Timestamp>,
    pub activity: [i64; 2],
    pub logins: [i64; 2],
    pub progress: [i64; 2],
    /// Average frustration over both windows, if any event carried it.
    pub frustration: Option<f64>,
}

impl WindowActivity {
    /// Folds a user's days into the windows that end with `date`: the recent window is the last
    /// `window_days` days up to and including `date`, the earlier one the same length before it.
    /// Days outside both are ignored.
    pub fn of_days<'a>(days: impl IntoIterator<Item = &'a DayActivity>, date: Date, window_days: i64) -> Self {
        let mut out = WindowActivity::default();
        let (mut frustration_sum, mut frustration_count) = (0.0, 0);
        for d in days {
            let age = (date - d.day).get_days() as i64;
            let window = match age {
                a if a < 0 || a >= 2 * window_days => continue,
                a if a < window_days => 1,
                _ => 0,
            };
            out.last_active = out.last_active.max(Some(d.last_active));
            out.activity[window] += d.events;
            out.logins[window] += d.logins;
            out.progress[window] += d.progress;
            frustration_sum += d.frustration_sum;
            frustration_count += d.frustration_count;
        }
        out.frustration = (frustration_count > 0).then(|| frustration_sum / frustration_count as f64);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ChurnSignal)]
pub struct Signal {
    pub name: &'static str,
    pub weight: f64,
    /// The input: days, a decay fraction, an average, or 0/1.
    pub raw: Option<f64>,
    /// 0 to 1.
    pub risk: f64,
    /// Points of the score (0 to 100 × weight).
    pub contribution: f64,
    /// Why the signal contributes nothing, when its input is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<&'static str>,
}

/// The six signals in the order they are scored and stored: name, and why one contributes
/// nothing when its input is missing (exactly when its raw value is).
const SIGNALS: [(&str, &str); 6] = [
    ("inactivity", "no activity and no join date"),
    ("engagement_decay", "no activity in the earlier window"),
    ("frustration", "no event carried a frustration score"),
    ("login_decay", "no logins in the earlier window"),
    ("progress_stall", "no completions in the earlier window"),
    ("payment_issue", "no subscription status"),
];

/// What a score is made of: every signal's input, risk, weight and points.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChurnDetails {
    pub schema_version: i64,
    pub signals: Vec<Signal>,
}

impl ChurnDetails {
    /// The stored form: per signal, in scoring order, `[weight, raw, risk, contribution]`. Names
    /// and missing reasons follow from the position and a null raw value; a row is written for
    /// every subscriber every day, and this is about a fifth of the JSON the API shows.
    pub fn stored(&self) -> String {
        let figures: Vec<(f64, Option<f64>, f64, f64)> = self.signals.iter().map(|s| (s.weight, s.raw, s.risk, s.contribution)).collect();
        serde_json::to_string(&figures).expect("numbers serialize")
    }

    /// Reads the stored form, or the full form rows were first written in.
    pub fn from_stored(value: &Value) -> Result<Self, String> {
        // A signal from its place in SIGNALS and its four figures, whichever form held them.
        let signal = |(name, missing): (&'static str, &'static str), [weight, raw, risk, contribution]: [&Value; 4]| {
            let number = |v: &Value| v.as_f64().ok_or_else(|| format!("not a number: {v}"));
            let raw = if raw.is_null() { None } else { Some(number(raw)?) };
            let (weight, risk, contribution) = (number(weight)?, number(risk)?, number(contribution)?);
            Ok::<_, String>(Signal { name, weight, raw, risk, contribution, missing: raw.is_none().then_some(missing) })
        };
        let signals = match value {
            Value::Array(figures) if figures.len() == SIGNALS.len() => figures
                .iter()
                .zip(SIGNALS)
                .map(|(f, known)| match f.as_array().map(Vec::as_slice) {
                    Some([weight, raw, risk, contribution]) => signal(known, [weight, raw, risk, contribution]),
                    _ => Err(format!("a signal's figures are not [weight, raw, risk, contribution]: {f}")),
                })
                .collect::<Result<_, _>>()?,
            Value::Object(full) => full
                .get("signals")
                .and_then(Value::as_array)
                .ok_or("no signals")?
                .iter()
                .map(|s| {
                    let known = SIGNALS
                        .into_iter()
                        .find(|(name, _)| s.get("name").and_then(Value::as_str) == Some(name))
                        .ok_or_else(|| format!("unknown signal {s}"))?;
                    let field = |key: &str| s.get(key).unwrap_or(&Value::Null);
                    signal(known, [field("weight"), field("raw"), field("risk"), field("contribution")])
                })
                .collect::<Result<_, String>>()?,
            other => return Err(format!("churn details are neither stored figures nor signals: {other}")),
        };
        Ok(ChurnDetails { schema_version: SCHEMA_VERSION, signals })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnScore {
    pub score: f64,
    pub risk_level: RiskLevel,
    pub details: ChurnDetails,
    pub login_count: i64,
    /// `up`, `down` or `flat`: logins in the recent window against the earlier one.
    pub login_trend: &'static str,
    pub days_until_renewal: Option<i64>,
}

/// The drop from the earlier window to the recent one, as a fraction of the earlier (0 when it
/// grew); `None` when the earlier window had nothing to drop from.
fn decay([earlier, recent]: [i64; 2]) -> Option<f64> {
    (earlier > 0).then(|| ((earlier - recent) as f64 / earlier as f64).clamp(0.0, 1.0))
}

/// The signal at `index` of [`SIGNALS`], and its exact points (the stored figures are rounded
/// for reading).
fn signal(index: usize, weight: f64, raw: Option<f64>, risk: Option<f64>) -> (Signal, f64) {
    let (name, missing) = SIGNALS[index];
    let risk_value = risk.unwrap_or(0.0).clamp(0.0, 1.0);
    let points = 100.0 * weight * risk_value;
    let signal = Signal {
        name,
        weight,
        raw,
        risk: (risk_value * 10_000.0).round() / 10_000.0,
        contribution: round2(points),
        missing: risk.is_none().then_some(missing),
    };
    (signal, points)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn score(input: &ChurnInput, settings: &ChurnSettings) -> ChurnScore {
    let inactive = input.days_inactive.map(|d| d as f64);
    let engagement = decay(input.activity);
    let logins = decay(input.logins);
    let progress = decay(input.progress);
    let (signals, points): (Vec<Signal>, Vec<f64>) = [
        signal(0, settings.weight_inactivity, inactive, inactive.map(|d| d / settings.inactivity_days as f64)),
        signal(1, settings.weight_engagement, engagement, engagement),
        signal(2, settings.weight_frustration, input.frustration, input.frustration.map(|f| f / 100.0)),
        signal(3, settings.weight_logins, logins, logins),
        signal(4, settings.weight_progress, progress, progress),
        signal(5, settings.weight_payment, Some(f64::from(u8::from(input.payment_issue))), Some(f64::from(u8::from(input.payment_issue)))),
    ]
    .into_iter()
    .unzip();
    let score = round2(points.iter().sum::<f64>().clamp(0.0, 100.0));
    let [earlier, recent] = input.logins;
    ChurnScore {
        score,
        risk_level: RiskLevel::of(score),
        details: ChurnDetails { schema_version: SCHEMA_VERSION, signals },
        login_count: recent,
        login_trend: match recent.cmp(&earlier) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "flat",
        },
        days_until_renewal: input.days_until_renewal,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertType {
    Inactivity,
    EngagementDrop,
    HighFrustration,
    PaymentRisk,
    TrialExpiring,
}

impl AlertType {
    pub const ALL: [AlertType; 5] =
        [AlertType::Inactivity, AlertType::EngagementDrop, AlertType::HighFrustration, AlertType::PaymentRisk, AlertType::TrialExpiring];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::Inactivity => "INACTIVITY",
            AlertType::EngagementDrop => "ENGAGEMENT_DROP",
            AlertType::HighFrustration => "HIGH_FRUSTRATION",
            AlertType::PaymentRisk => "PAYMENT_RISK",
            AlertType::TrialExpiring => "TRIAL_EXPIRING",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

/// Days of inactivity that raise `INACTIVITY`.
pub const INACTIVITY_ALERT_DAYS: i64 = 7;
/// Login drop (fraction) that raises `ENGAGEMENT_DROP`.
pub const LOGIN_DROP_ALERT: f64 = 0.5;
pub const FRUSTRATION_ALERT: f64 = 70.0;
pub const TRIAL_ALERT_DAYS: i64 = 3;

/// The alert conditions that hold for a user. Organization-level ones (payment, trial) are
/// raised for the organization's billing contacts only (`billing_contact`).
pub fn alert_conditions(input: &ChurnInput, billing_contact: bool) -> Vec<AlertType> {
    let mut out = Vec::new();
    if input.days_inactive.is_some_and(|d| d >= INACTIVITY_ALERT_DAYS) {
        out.push(AlertType::Inactivity);
    }
    if decay(input.logins).is_some_and(|d| d >= LOGIN_DROP_ALERT) {
        out.push(AlertType::EngagementDrop);
    }
    if input.frustration.is_some_and(|f| f >= FRUSTRATION_ALERT) {
        out.push(AlertType::HighFrustration);
    }
    if billing_contact && input.payment_issue {
        out.push(AlertType::PaymentRisk);
    }
    if billing_contact && input.trial_days_left.is_some_and(|d| (0..=TRIAL_ALERT_DAYS).contains(&d)) {
        out.push(AlertType::TrialExpiring);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ChurnSettings {
        ChurnSettings::default()
    }

    fn healthy() -> ChurnInput {
        ChurnInput {
            days_inactive: Some(0),
            activity: [20, 20],
            logins: [5, 5],
            progress: [3, 3],
            frustration: Some(0.0),
            payment_issue: false,
            days_until_renewal: Some(12),
            trial_days_left: None,
        }
    }

    fn contribution(s: &ChurnScore, name: &str) -> f64 {
        s.details.signals.iter().find(|x| x.name == name).unwrap().contribution
    }

    #[test]
    fn days_fold_into_the_two_windows_ending_with_the_date() {
        let date: Date = "2026-03-20".parse().unwrap();
        let day = |offset: i64, events: i64, frustration: Option<f64>| DayActivity {
            day: date.checked_sub(jiff::Span::new().days(offset)).unwrap(),
            last_active: jiff::tz::TimeZone::UTC
                .to_timestamp(date.checked_sub(jiff::Span::new().days(offset)).unwrap().at(9, 0, 0, 0))
                .unwrap(),
            events,
            logins: 1,
            progress: events / 2,
            frustration_sum: frustration.unwrap_or(0.0),
            frustration_count: i64::from(frustration.is_some()),
        };
        // A day after the date (a backfill's later days) and one before both windows are ignored.
        let days =
            [day(-1, 100, Some(0.0)), day(0, 4, None), day(6, 2, Some(90.0)), day(7, 6, Some(30.0)), day(13, 10, None), day(14, 50, None)];
        let w = WindowActivity::of_days(&days, date, 7);
        assert_eq!((w.activity, w.logins, w.progress), ([16, 6], [2, 2], [8, 3]));
        assert_eq!(w.frustration, Some(60.0));
        assert_eq!(w.last_active, Some(days[1].last_active));
        // Nothing in range: no last activity, no frustration.
        assert_eq!(WindowActivity::of_days(&days[5..], date, 7), WindowActivity::default());
    }

    #[test]
    fn details_are_stored_compactly_and_read_back_whole() {
        let mut input = healthy();
        input.frustration = None;
        input.payment_issue = true;
        let details = score(&input, &settings()).details;
        let stored = details.stored();
        assert_eq!(
            stored,
            "[[0.25,0.0,0.0,0.0],[0.2,0.0,0.0,0.0],[0.15,null,0.0,0.0],[0.15,0.0,0.0,0.0],[0.15,0.0,0.0,0.0],[0.1,1.0,1.0,10.0]]"
        );
        let read = ChurnDetails::from_stored(&serde_json::from_str(&stored).unwrap()).unwrap();
        assert_eq!(read, details);
        assert_eq!(read.signals[2].missing, Some("no event carried a frustration score"));
        // Rows written before the compact form hold the whole JSON; they read the same.
        let whole = serde_json::to_value(&details).unwrap();
        assert_eq!(ChurnDetails::from_stored(&whole).unwrap(), details);
        for bad in ["[]", "[[1,2,3]]", r#"{"signals":[{"name":"luck","weight":1}]}"#, "\"text\""] {
            assert!(ChurnDetails::from_stored(&serde_json::from_str(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_weight_is_pinned_at_full_risk() {
        type Edit = fn(&mut ChurnInput);
        let cases: [(&str, Edit, f64); 6] = [
            ("inactivity", |i| i.days_inactive = Some(14), 25.0),
            ("engagement_decay", |i| i.activity = [20, 0], 20.0),
            ("frustration", |i| i.frustration = Some(100.0), 15.0),
            ("login_decay", |i| i.logins = [5, 0], 15.0),
            ("progress_stall", |i| i.progress = [3, 0], 15.0),
            ("payment_issue", |i| i.payment_issue = true, 10.0),
        ];
        for (name, edit, points) in cases {
            let mut input = healthy();
            edit(&mut input);
            let s = score(&input, &settings());
            assert_eq!(contribution(&s, name), points, "{name}");
            assert_eq!(s.score, points, "{name}: only that signal moves");
        }
        let s = score(&healthy(), &settings());
        assert_eq!((s.score, s.risk_level), (0.0, RiskLevel::Low));
    }

    #[test]
    fn edges_and_partial_risk() {
        let table: [(Option<i64>, f64); 5] = [(Some(0), 0.0), (Some(7), 12.5), (Some(14), 25.0), (Some(30), 25.0), (None, 0.0)];
        for (days, points) in table {
            let s = score(&ChurnInput { days_inactive: days, ..healthy() }, &settings());
            assert_eq!(contribution(&s, "inactivity"), points, "{days:?} days");
        }
        // Zero logins in both windows: nothing to decay from, so no risk and the reason is given.
        let s = score(&ChurnInput { logins: [0, 0], ..healthy() }, &settings());
        let logins = s.details.signals.iter().find(|x| x.name == "login_decay").unwrap();
        assert_eq!((logins.contribution, logins.missing), (0.0, Some("no logins in the earlier window")));
        assert_eq!(s.login_trend, "flat");
        // Growth is not negative risk.
        let s = score(&ChurnInput { logins: [2, 9], ..healthy() }, &settings());
        assert_eq!((contribution(&s, "login_decay"), s.login_trend, s.login_count), (0.0, "up", 9));
        // Half the logins: half the weight.
        assert_eq!(contribution(&score(&ChurnInput { logins: [4, 2], ..healthy() }, &settings()), "login_decay"), 7.5);
        // No activity ever, no frustration data: missing inputs contribute 0.
        let never =
            ChurnInput { days_inactive: Some(20), activity: [0, 0], logins: [0, 0], progress: [0, 0], frustration: None, ..healthy() };
        let s = score(&never, &settings());
        assert_eq!(s.score, 25.0);
        assert_eq!(s.details.signals.iter().filter(|x| x.missing.is_some()).count(), 4);
    }

    #[test]
    fn levels_have_exact_thresholds() {
        for (score, level) in [
            (0.0, RiskLevel::Low),
            (24.99, RiskLevel::Low),
            (25.0, RiskLevel::Medium),
            (49.99, RiskLevel::Medium),
            (50.0, RiskLevel::High),
            (74.99, RiskLevel::High),
            (75.0, RiskLevel::Critical),
            (100.0, RiskLevel::Critical),
        ] {
            assert_eq!(RiskLevel::of(score), level, "{score}");
        }
        for level in RiskLevel::ALL {
            let (low, high) = level.scores();
            assert_eq!(RiskLevel::of(low), level);
            if let Some(high) = high {
                assert_eq!(RiskLevel::of(high - 1e-9), level);
                assert_ne!(RiskLevel::of(high), level);
            }
        }
        assert_eq!(RiskLevel::parse("high"), Some(RiskLevel::High));
        assert_eq!(RiskLevel::parse("severe"), None);
    }

    #[test]
    fn alert_conditions_follow_their_thresholds() {
        assert!(alert_conditions(&healthy(), true).is_empty());
        let worst = ChurnInput {
            days_inactive: Some(7),
            logins: [4, 2],
            frustration: Some(70.0),
            payment_issue: true,
            trial_days_left: Some(3),
            ..healthy()
        };
        assert_eq!(alert_conditions(&worst, true), AlertType::ALL.to_vec());
        // Organization-level alerts go to billing contacts only.
        assert_eq!(alert_conditions(&worst, false), [AlertType::Inactivity, AlertType::EngagementDrop, AlertType::HighFrustration]);
        let almost = ChurnInput { days_inactive: Some(6), logins: [4, 3], frustration: Some(69.9), trial_days_left: Some(4), ..healthy() };
        assert!(alert_conditions(&almost, true).is_empty());
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings().check().is_ok());
        let bad = ChurnSettings { weight_payment: 0.5, ..settings() };
        assert!(bad.check().unwrap_err().contains("sum to 1"));
        assert!(ChurnSettings { window_days: 0, ..settings() }.check().is_err());
    }
}

/// What a run changes: the alerts to open (conditions without an open alert) and the open alerts
/// to resolve (their user was evaluated and the condition no longer holds). `open` lists the open
/// alerts as (user, type, alert id); `raised` the conditions that hold for the evaluated users.
pub fn reconcile<'a>(
    open: &'a [(String, AlertType, String)],
    raised: &'a [(String, AlertType)],
    evaluated: &std::collections::HashSet<&str>,
) -> (Vec<&'a (String, AlertType)>, Vec<&'a str>) {
    let still: std::collections::HashSet<(&str, AlertType)> = raised.iter().map(|(u, t)| (u.as_str(), *t)).collect();
    let already: std::collections::HashSet<(&str, AlertType)> = open.iter().map(|(u, t, _)| (u.as_str(), *t)).collect();
    let to_open = raised.iter().filter(|(u, t)| !already.contains(&(u.as_str(), *t))).collect();
    let to_resolve = open
        .iter()
        .filter(|(u, t, _)| evaluated.contains(u.as_str()) && !still.contains(&(u.as_str(), *t)))
        .map(|(_, _, id)| id.as_str())
        .collect();
    (to_open, to_resolve)
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;

    #[test]
    fn persisting_conditions_do_not_reopen_and_cleared_ones_resolve() {
        let open =
            vec![("ann".to_owned(), AlertType::Inactivity, "a1".to_owned()), ("bob".to_owned(), AlertType::PaymentRisk, "a2".to_owned())];
        let raised = vec![("ann".to_owned(), AlertType::Inactivity), ("ann".to_owned(), AlertType::HighFrustration)];
        let evaluated = ["ann", "bob"].into_iter().collect();
        let (to_open, to_resolve) = reconcile(&open, &raised, &evaluated);
        assert_eq!(to_open, [&("ann".to_owned(), AlertType::HighFrustration)]);
        assert_eq!(to_resolve, ["a2"]);
        // A user not evaluated this run (no longer a subscriber) keeps their alerts.
        let (_, to_resolve) = reconcile(&open, &raised, &["ann"].into_iter().collect());
        assert!(to_resolve.is_empty());
    }
}
