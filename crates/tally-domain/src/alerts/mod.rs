//! Threshold rules and budgets: what a rule watches (scope, metric, window), when it fires
//! (operator, threshold, repeat steps), and where it says so (channels). A rule with `hard: true`
//! is a budget: once exceeded, entitlements answer not allowed. Parsing is strict and names the
//! field at fault; evaluation ([`evaluate`]) is pure arithmetic over totals the store gathered.

pub mod evaluate;
pub mod webhook;

use crate::churn::RiskLevel;
use crate::ids::{OrganizationId, TeamId, UserId};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;

/// The id of the built-in system health rule.
pub const SYSTEM_RULE_ID: &str = "system-llm-error-rate";
/// The channel every deployment has: a line in the server log.
pub const LOG_CHANNEL: &str = "log";
/// At most this many step alerts open for one rule and subject at once.
pub const MAX_STEPS: u32 = 100;
const MAX_CHANNELS: usize = 10;
const MAX_WINDOW_HOURS: u32 = 24 * 366;
const MAX_LAST_REQUESTS: u32 = 10_000;

/// Whose usage a rule watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuleScope {
    User {
        organization_id: OrganizationId,
        user_id: UserId,
    },
    Team {
        organization_id: OrganizationId,
        team_id: TeamId,
    },
    Organization {
        organization_id: OrganizationId,
    },
    /// Every user of every organization billed on the plan, each on their own.
    Plan {
        plan_id: String,
    },
    /// Every request of every organization: system health.
    All,
}

impl RuleScope {
    /// The organization the scope lies in, if one.
    pub fn organization_id(&self) -> Option<&OrganizationId> {
        match self {
            RuleScope::User { organization_id, .. }
            | RuleScope::Team { organization_id, .. }
            | RuleScope::Organization { organization_id } => Some(organization_id),
            RuleScope::Plan { .. } | RuleScope::All => None,
        }
    }
}

/// What a rule measures. Usage metrics name their usage type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Metric {
    UsageSum {
        usage_type: String,
    },
    UsageCount {
        usage_type: String,
    },
    /// LLM cost in the price table's currency (USD).
    LlmCost,
    LlmTokens,
    LlmRequests,
    /// Failed LLM requests as a percentage of all (0–100).
    LlmErrorRate,
    /// Usage of the current billing period as a percentage of the plan's limit plus add-ons.
    BalancePercent {
        usage_type: String,
    },
}

impl Metric {
    pub fn name(&self) -> &'static str {
        match self {
            Metric::UsageSum { .. } => "usage_sum",
            Metric::UsageCount { .. } => "usage_count",
            Metric::LlmCost => "llm_cost",
            Metric::LlmTokens => "llm_tokens",
            Metric::LlmRequests => "llm_requests",
            Metric::LlmErrorRate => "llm_error_rate",
            Metric::BalancePercent { .. } => "balance_percent",
        }
    }

    pub fn usage_type(&self) -> Option<&str> {
        match self {
            Metric::UsageSum { usage_type } | Metric::UsageCount { usage_type } | Metric::BalancePercent { usage_type } => Some(usage_type),
            _ => None,
        }
    }

    /// Whether the value only grows within a window (sums and counts), so a budget can cap it.
    pub fn is_cumulative(&self) -> bool {
        !matches!(self, Metric::LlmErrorRate)
    }

    /// The alert type of alerts this metric opens.
    pub fn alert_type(&self) -> String {
        self.name().to_uppercase()
    }
}

/// Over which stretch of time (or of requests) the metric is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Window {
    /// The billing subscription's current period, else the UTC calendar month.
    CurrentPeriod,
    /// The UTC calendar month.
    Month,
    /// The UTC day.
    Day,
    AllTime,
    /// The current hour and the `hours - 1` before it, in whole UTC hours.
    LastHours {
        hours: u32,
    },
    /// The latest `requests` LLM requests (error rate only).
    LastRequests {
        requests: u32,
    },
}

impl Window {
    /// Whether the value can fall as time passes with no new events, so a periodic sweep must
    /// re-evaluate it.
    pub fn slides(&self) -> bool {
        matches!(self, Window::LastHours { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Operator {
    pub fn holds(self, value: Decimal, threshold: Decimal) -> bool {
        match self {
            Operator::Gt => value > threshold,
            Operator::Gte => value >= threshold,
            Operator::Lt => value < threshold,
            Operator::Lte => value <= threshold,
        }
    }

    fn rises(self) -> bool {
        matches!(self, Operator::Gt | Operator::Gte)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub id: String,
    /// The organization that manages the rule; `None` for the platform's operators.
    pub owner: Option<OrganizationId>,
    pub name: String,
    pub scope: RuleScope,
    pub metric: Metric,
    pub window: Window,
    pub operator: Operator,
    #[serde(with = "rust_decimal::serde::str")]
    pub threshold: Decimal,
    /// Opens a further alert for every step of this size beyond the threshold.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub repeat_every: Option<Decimal>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    pub channels: Vec<String>,
    /// A budget: once exceeded, the scope's users are not entitled to more.
    pub hard: bool,
    pub enabled: bool,
    pub builtin: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A field of a rule body that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError { field: field.to_owned(), reason: reason.into() }
}

impl AlertRule {
    /// The built-in system health rule: LLM error rate over the last 100 requests above 10%.
    pub fn system(now: Timestamp) -> AlertRule {
        AlertRule {
            id: SYSTEM_RULE_ID.to_owned(),
            owner: None,
            name: "LLM error rate (system)".to_owned(),
            scope: RuleScope::All,
            metric: Metric::LlmErrorRate,
            window: Window::LastRequests { requests: 100 },
            operator: Operator::Gt,
            threshold: Decimal::from(10),
            repeat_every: None,
            severity: "high".to_owned(),
            channels: vec![LOG_CHANNEL.to_owned()],
            hard: false,
            enabled: true,
            builtin: true,
            created_at: now,
            updated_at: now,
        }
    }

    /// Parses a rule body. Scopes arrive as `{"type": "user", "user_id": …}`; a user's or team's
    /// organization may be left out and filled in by the caller (`organization_id` is then
    /// `None` in [`RuleBody::scope`]).
    pub fn parse_body(body: &Value) -> Result<RuleBody, FieldError> {
        let Value::Object(map) = body else { return Err(bad("body", "must be a JSON object")) };
        const FIELDS: [&str; 12] =
            ["id", "name", "scope", "metric", "window", "operator", "threshold", "repeat_every", "severity", "channels", "hard", "enabled"];
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(unknown, format!("unknown field; known fields: {}", FIELDS.join(", "))));
        }
        let id = optional_text(map, "id")?;
        if let Some(id) = &id
            && (id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/'))
        {
            return Err(bad("id", "must be 1 to 128 characters, without `/` or control characters"));
        }
        let name = optional_text(map, "name")?.unwrap_or_default();
        if name.len() > 200 {
            return Err(bad("name", "must be at most 200 characters"));
        }
        let scope = parse_scope(map.get("scope").ok_or_else(|| bad("scope", "is required"))?)?;
        let metric = parse_metric(map.get("metric").ok_or_else(|| bad("metric", "is required"))?)?;
        let window = match map.get("window") {
            None | Some(Value::Null) => match metric {
                Metric::LlmErrorRate => Window::LastRequests { requests: 100 },
                _ => Window::CurrentPeriod,
            },
            Some(w) => parse_window(w)?,
        };
        let operator = match map.get("operator") {
            None | Some(Value::Null) => Operator::Gt,
            Some(Value::String(s)) => serde_json::from_value(Value::String(s.clone()))
                .map_err(|_| bad("operator", format!("{s:?} is not one of gt, gte, lt, lte")))?,
            Some(_) => return Err(bad("operator", "must be one of gt, gte, lt, lte")),
        };
        let threshold = decimal(map.get("threshold").ok_or_else(|| bad("threshold", "is required"))?, "threshold")?;
        let repeat_every = match map.get("repeat_every") {
            None | Some(Value::Null) => None,
            Some(v) => Some(decimal(v, "repeat_every")?),
        };
        let severity = match optional_text(map, "severity")? {
            None => "medium".to_owned(),
            Some(s) => RiskLevel::parse(&s)
                .map(|l| l.as_str().to_lowercase())
                .ok_or_else(|| bad("severity", format!("{s:?} is not one of low, medium, high, critical")))?,
        };
        let channels = match map.get("channels") {
            None | Some(Value::Null) => vec![LOG_CHANNEL.to_owned()],
            Some(Value::Array(items)) => {
                let mut channels = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.is_empty() && s.len() <= 128 => {
                            if !channels.contains(s) {
                                channels.push(s.clone());
                            }
                        }
                        _ => return Err(bad(&format!("channels[{i}]"), "must be a channel id")),
                    }
                }
                if channels.len() > MAX_CHANNELS {
                    return Err(bad("channels", format!("at most {MAX_CHANNELS} channels")));
                }
                channels
            }
            Some(_) => return Err(bad("channels", "must be an array of channel ids")),
        };
        let hard = flag(map, "hard", false)?;
        let enabled = flag(map, "enabled", true)?;
        let body = RuleBody { id, name, scope, metric, window, operator, threshold, repeat_every, severity, channels, hard, enabled };
        body.check()?;
        Ok(body)
    }

    /// The level a value reaches: `None` below the threshold, `Some(0)` past it, `Some(k)` past
    /// `k` repeat steps beyond it (capped at [`MAX_STEPS`]).
    pub fn level(&self, value: Decimal) -> Option<u32> {
        if !self.operator.holds(value, self.threshold) {
            return None;
        }
        let Some(step) = self.repeat_every.filter(|s| *s > Decimal::ZERO && self.operator.rises()) else { return Some(0) };
        let mut steps = ((value - self.threshold) / step).floor();
        // With `gt`, landing exactly on a step's line has not passed it yet.
        if self.operator == Operator::Gt && self.threshold + steps * step == value {
            steps -= Decimal::ONE;
        }
        let steps = u32::try_from(steps.max(Decimal::ZERO).min(Decimal::from(MAX_STEPS - 1))).unwrap_or(0);
        Some(steps)
    }

    /// The line step `k` crosses.
    pub fn step_threshold(&self, step: u32) -> Decimal {
        self.threshold + self.repeat_every.unwrap_or_default() * Decimal::from(step)
    }
}

/// A parsed rule body, before it gets its id, owner and times.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleBody {
    pub id: Option<String>,
    pub name: String,
    pub scope: PartialScope,
    pub metric: Metric,
    pub window: Window,
    pub operator: Operator,
    pub threshold: Decimal,
    pub repeat_every: Option<Decimal>,
    pub severity: String,
    pub channels: Vec<String>,
    pub hard: bool,
    pub enabled: bool,
}

/// A scope as sent: a user's or team's organization may be missing, to be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialScope {
    User { organization_id: Option<OrganizationId>, user_id: UserId },
    Team { organization_id: Option<OrganizationId>, team_id: TeamId },
    Organization { organization_id: OrganizationId },
    Plan { plan_id: String },
    All,
}

impl RuleBody {
    fn check(&self) -> Result<(), FieldError> {
        let rate = self.metric == Metric::LlmErrorRate;
        match (self.window, rate) {
            (Window::LastRequests { .. }, false) => {
                return Err(bad("window", "`last_requests` applies to the `llm_error_rate` metric only"));
            }
            (_, true) if self.hard => return Err(bad("hard", "an error rate can fall again; only sums and counts can be budgets")),
            _ => {}
        }
        if matches!(self.metric, Metric::BalancePercent { .. }) && self.window != Window::CurrentPeriod {
            return Err(bad("window", "a balance is over the current billing period; leave `window` out"));
        }
        if self.scope == PartialScope::All && !rate {
            return Err(bad("scope", "the `all` scope watches system health: its metric must be `llm_error_rate`"));
        }
        if self.hard && matches!(self.scope, PartialScope::All) {
            return Err(bad("hard", "a budget needs a user, team, organization or plan scope"));
        }
        if self.hard && !matches!(self.operator, Operator::Gt | Operator::Gte) {
            return Err(bad("operator", "a budget caps usage from above: use gt or gte"));
        }
        if self.threshold.is_sign_negative() {
            return Err(bad("threshold", "must not be negative"));
        }
        if rate && self.threshold > Decimal::ONE_HUNDRED {
            return Err(bad("threshold", "an error rate is a percentage from 0 to 100"));
        }
        if let Some(step) = self.repeat_every {
            if step <= Decimal::ZERO {
                return Err(bad("repeat_every", "must be greater than zero"));
            }
            if !matches!(self.operator, Operator::Gt | Operator::Gte) {
                return Err(bad("repeat_every", "repeat steps go upwards: use them with gt or gte"));
            }
        }
        Ok(())
    }
}

/// Where alerts are told: a webhook, or the server log (the built-in channel `log`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    /// The organization that manages it; `None` for operators.
    pub owner: Option<OrganizationId>,
    pub name: String,
    pub kind: ChannelKind,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelKind {
    Webhook { url: String },
    Log,
}

/// A parsed channel body: its id if given, name, kind and signing secret if given.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelBody {
    pub id: Option<String>,
    pub name: String,
    pub kind: ChannelKind,
    pub secret: Option<webhook::Secret>,
}

impl Channel {
    /// The built-in log channel.
    pub fn log() -> Channel {
        Channel {
            id: LOG_CHANNEL.to_owned(),
            owner: None,
            name: "Server log".to_owned(),
            kind: ChannelKind::Log,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    pub fn parse_body(body: &Value) -> Result<ChannelBody, FieldError> {
        let Value::Object(map) = body else { return Err(bad("body", "must be a JSON object")) };
        const FIELDS: [&str; 5] = ["id", "name", "type", "url", "secret"];
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(unknown, format!("unknown field; known fields: {}", FIELDS.join(", "))));
        }
        let id = optional_text(map, "id")?;
        if let Some(id) = &id
            && (id.is_empty() || id.len() > 128 || id == LOG_CHANNEL || id.chars().any(|c| c.is_control() || c == '/'))
        {
            return Err(bad("id", "must be 1 to 128 characters without `/`, and not `log` (the built-in channel)"));
        }
        let name = optional_text(map, "name")?.unwrap_or_default();
        let kind = match optional_text(map, "type")?.as_deref() {
            None | Some("webhook") => {
                let url = optional_text(map, "url")?.ok_or_else(|| bad("url", "is required for a webhook"))?;
                let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
                match rest {
                    Some(rest) if !rest.is_empty() && !rest.starts_with('/') && url.len() <= 2048 => ChannelKind::Webhook { url },
                    _ => return Err(bad("url", format!("{url:?} is not an http:// or https:// URL with a host"))),
                }
            }
            Some("log") => ChannelKind::Log,
            Some(other) => return Err(bad("type", format!("{other:?} is not one of webhook, log"))),
        };
        let secret = match optional_text(map, "secret")? {
            None => None,
            Some(_) if kind == ChannelKind::Log => return Err(bad("secret", "a log channel signs nothing")),
            Some(text) => Some(webhook::Secret::parse(&text).map_err(|e| bad("secret", e.to_string()))?),
        };
        Ok(ChannelBody { id, name, kind, secret })
    }
}

fn optional_text(map: &Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

fn flag(map: &Map<String, Value>, field: &str, default: bool) -> Result<bool, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(field, "must be true or false")),
    }
}

/// A threshold: a JSON number or a decimal string ("10.00"), never anything else.
fn decimal(value: &Value, field: &str) -> Result<Decimal, FieldError> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(bad(field, "must be a number (or a decimal string such as \"10.00\")")),
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| bad(field, format!("{text:?} is not a decimal number")))
}

fn id_field<T>(map: &Map<String, Value>, field: &str, parse: impl Fn(String) -> Result<T, crate::ids::IdError>) -> Result<T, FieldError> {
    let path = format!("scope.{field}");
    match map.get(field) {
        Some(Value::String(s)) => parse(s.clone()).map_err(|e| bad(&path, e.to_string())),
        Some(_) => Err(bad(&path, "must be a string")),
        None => Err(bad(&path, "is required for this scope type")),
    }
}

fn parse_scope(value: &Value) -> Result<PartialScope, FieldError> {
    let Value::Object(map) = value else { return Err(bad("scope", "must be an object such as {\"type\": \"user\", \"user_id\": \"u1\"}")) };
    let organization = match map.get("organization_id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(id_field(map, "organization_id", OrganizationId::parse)?),
    };
    let kind = match map.get("type") {
        Some(Value::String(t)) => t.as_str(),
        _ => return Err(bad("scope.type", "is required: one of user, team, organization, plan, all")),
    };
    let allowed: &[&str] = match kind {
        "user" => &["type", "organization_id", "user_id"],
        "team" => &["type", "organization_id", "team_id"],
        "organization" => &["type", "organization_id"],
        "plan" => &["type", "plan_id"],
        "all" => &["type"],
        other => return Err(bad("scope.type", format!("{other:?} is not one of user, team, organization, plan, all"))),
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(&format!("scope.{unknown}"), format!("is not a field of a {kind} scope")));
    }
    Ok(match kind {
        "user" => PartialScope::User { organization_id: organization, user_id: id_field(map, "user_id", UserId::parse)? },
        "team" => PartialScope::Team { organization_id: organization, team_id: id_field(map, "team_id", TeamId::parse)? },
        "organization" => PartialScope::Organization {
            organization_id: organization.ok_or_else(|| bad("scope.organization_id", "is required for this scope type"))?,
        },
        "plan" => PartialScope::Plan { plan_id: id_field(map, "plan_id", |s| crate::ids::check(&s).map(|_| s))? },
        _ => PartialScope::All,
    })
}

fn parse_metric(value: &Value) -> Result<Metric, FieldError> {
    let (kind, usage_type) = match value {
        Value::String(s) => (s.as_str(), None),
        Value::Object(map) => {
            let kind = match map.get("type") {
                Some(Value::String(t)) => t.as_str(),
                _ => return Err(bad("metric.type", "is required")),
            };
            if let Some(unknown) = map.keys().find(|k| !["type", "usage_type"].contains(&k.as_str())) {
                return Err(bad(&format!("metric.{unknown}"), "is not a field of a metric"));
            }
            let usage_type = match map.get("usage_type") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => Some(t.clone()),
                Some(_) => return Err(bad("metric.usage_type", "must be a usage type key")),
            };
            (kind, usage_type)
        }
        _ => {
            return Err(bad(
                "metric",
                "must be a metric name or an object such as {\"type\": \"usage_sum\", \"usage_type\": \"submission\"}",
            ));
        }
    };
    let needs_type = |usage_type: Option<String>| usage_type.ok_or_else(|| bad("metric.usage_type", format!("is required for {kind}")));
    let no_type = |metric: Metric, usage_type: Option<String>| match usage_type {
        Some(_) => Err(bad("metric.usage_type", format!("{kind} covers LLM requests only; leave usage_type out"))),
        None => Ok(metric),
    };
    match kind {
        "usage_sum" => Ok(Metric::UsageSum { usage_type: needs_type(usage_type)? }),
        "usage_count" => Ok(Metric::UsageCount { usage_type: needs_type(usage_type)? }),
        "balance_percent" => Ok(Metric::BalancePercent { usage_type: needs_type(usage_type)? }),
        "llm_cost" => no_type(Metric::LlmCost, usage_type),
        "llm_tokens" => no_type(Metric::LlmTokens, usage_type),
        "llm_requests" => no_type(Metric::LlmRequests, usage_type),
        "llm_error_rate" => no_type(Metric::LlmErrorRate, usage_type),
        other => Err(bad(
            "metric.type",
            format!("{other:?} is not one of usage_sum, usage_count, llm_cost, llm_tokens, llm_requests, llm_error_rate, balance_percent"),
        )),
    }
}

fn parse_window(value: &Value) -> Result<Window, FieldError> {
    let (kind, map) = match value {
        Value::String(s) => (s.as_str(), None),
        Value::Object(map) => match map.get("type") {
            Some(Value::String(t)) => (t.as_str(), Some(map)),
            _ => return Err(bad("window.type", "is required")),
        },
        _ => return Err(bad("window", "must be a window name or an object such as {\"type\": \"last_hours\", \"hours\": 24}")),
    };
    let count = |field: &str, max: u32| -> Result<u32, FieldError> {
        let path = format!("window.{field}");
        match map.and_then(|m| m.get(field)) {
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|n| (1..=u64::from(max)).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| bad(&path, format!("must be a whole number from 1 to {max}"))),
            Some(_) => Err(bad(&path, format!("must be a whole number from 1 to {max}"))),
            None => Err(bad(&path, "is required for this window type")),
        }
    };
    Ok(match kind {
        "current_period" => Window::CurrentPeriod,
        "month" => Window::Month,
        "day" => Window::Day,
        "all_time" => Window::AllTime,
        "last_hours" => Window::LastHours { hours: count("hours", MAX_WINDOW_HOURS)? },
        "last_requests" => Window::LastRequests { requests: count("requests", MAX_LAST_REQUESTS)? },
        other => {
            return Err(bad(
                "window.type",
                format!("{other:?} is not one of current_period, month, day, all_time, last_hours, last_requests"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Result<RuleBody, FieldError> {
        AlertRule::parse_body(&v)
    }

    #[test]
    fn a_cost_rule_parses_with_defaults() {
        let b = body(json!({"scope": {"type": "user", "user_id": "u1"}, "metric": "llm_cost", "threshold": "10.00"})).unwrap();
        assert_eq!(b.scope, PartialScope::User { organization_id: None, user_id: UserId::parse("u1").unwrap() });
        assert_eq!((b.window, b.operator, b.threshold), (Window::CurrentPeriod, Operator::Gt, Decimal::new(1000, 2)));
        assert_eq!((b.severity.as_str(), b.channels.as_slice(), b.hard, b.enabled), ("medium", &["log".to_owned()][..], false, true));
        let rate = body(json!({"scope": {"type": "all"}, "metric": "llm_error_rate", "threshold": 10})).unwrap();
        assert_eq!(rate.window, Window::LastRequests { requests: 100 });
    }

    #[test]
    fn bad_bodies_name_their_field() {
        let field = |v: Value| body(v).unwrap_err().field;
        let scope = json!({"type": "organization", "organization_id": "acme"});
        assert_eq!(field(json!({"scope": scope, "metric": "llm_cost", "threshold": "ten"})), "threshold");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_cost", "threshold": [1]})), "threshold");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_karma", "threshold": 1})), "metric.type");
        assert_eq!(field(json!({"scope": {"type": "galaxy"}, "metric": "llm_cost", "threshold": 1})), "scope.type");
        assert_eq!(field(json!({"scope": scope, "metric": "usage_sum", "threshold": 1})), "metric.usage_type");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_cost", "threshold": 1, "channels": [3]})), "channels[0]");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_cost", "threshold": 1, "colour": "red"})), "colour");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_error_rate", "threshold": 1, "hard": true})), "hard");
        assert_eq!(
            field(json!({"scope": scope, "metric": "llm_cost", "threshold": 1, "window": {"type": "last_requests", "requests": 5}})),
            "window"
        );
        assert_eq!(field(json!({"scope": scope, "metric": "llm_cost", "threshold": 1, "window": {"type": "last_hours"}})), "window.hours");
        assert_eq!(field(json!({"scope": {"type": "all"}, "metric": "llm_cost", "threshold": 1})), "scope");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_error_rate", "threshold": 140})), "threshold");
        assert_eq!(field(json!({"scope": scope, "metric": "llm_cost", "threshold": 1, "severity": "dire"})), "severity");
    }

    #[test]
    fn channels_need_a_web_url() {
        let ok = Channel::parse_body(&json!({"url": "https://hooks.example.com/tally"})).unwrap();
        assert_eq!(ok.kind, ChannelKind::Webhook { url: "https://hooks.example.com/tally".into() });
        let field = |v: Value| Channel::parse_body(&v).unwrap_err().field;
        assert_eq!(field(json!({"url": "ftp://example.com/x"})), "url");
        assert_eq!(field(json!({"url": "https:///nohost"})), "url");
        assert_eq!(field(json!({"type": "pager"})), "type");
        assert_eq!(field(json!({"url": "https://example.com", "secret": "hunter2"})), "secret");
        assert_eq!(field(json!({"id": "log", "type": "log"})), "id");
    }

    fn rule(operator: Operator, threshold: i64, repeat: Option<i64>) -> AlertRule {
        AlertRule {
            operator,
            threshold: Decimal::from(threshold),
            repeat_every: repeat.map(Decimal::from),
            scope: RuleScope::Organization { organization_id: OrganizationId::parse("acme").unwrap() },
            metric: Metric::LlmCost,
            window: Window::CurrentPeriod,
            ..AlertRule::system(Timestamp::UNIX_EPOCH)
        }
    }

    #[test]
    fn levels_count_the_steps_passed() {
        let plain = rule(Operator::Gt, 10, None);
        assert_eq!(plain.level(Decimal::from(10)), None, "reaching the line is not crossing it");
        assert_eq!(plain.level(Decimal::new(1001, 2)), Some(0));
        assert_eq!(plain.level(Decimal::from(1000)), Some(0), "no repeat: one alert however far");
        let stepped = rule(Operator::Gt, 10, Some(10));
        assert_eq!(stepped.level(Decimal::from(20)), Some(0));
        assert_eq!(stepped.level(Decimal::new(2001, 2)), Some(1));
        assert_eq!(stepped.level(Decimal::from(45)), Some(3));
        assert_eq!(stepped.level(Decimal::from(1_000_000)), Some(MAX_STEPS - 1));
        assert_eq!(stepped.step_threshold(3), Decimal::from(40));
        let gte = rule(Operator::Gte, 10, Some(10));
        assert_eq!(gte.level(Decimal::from(20)), Some(1));
        let below = rule(Operator::Lt, 10, None);
        assert_eq!((below.level(Decimal::from(9)), below.level(Decimal::from(10))), (Some(0), None));
    }
}
