//! What both backends do alike when a rule evaluation lands: which open alerts to resolve, which
//! to open, and the outbox rows that tell each of the rule's channels.

use crate::{Alert, Delivery};
use jiff::Timestamp;
use serde_json::json;
use std::collections::BTreeMap;
use tally_domain::alerts::evaluate::{Observation, RuleState, Subject, WindowTotal, transition};

/// The alert ids to resolve and the alerts to open for one observation, given the state the last
/// one left and the open alerts (id, key) of its rule and subject.
pub(crate) fn plan(obs: &Observation, previous: Option<RuleState>, open: &[(String, String)], now: Timestamp) -> (Vec<String>, Vec<Alert>) {
    let change = transition(previous.as_ref(), obs.window_start, obs.level);
    let prefix = obs.key_prefix();
    let resolve = match change.resolve_from {
        None => Vec::new(),
        Some(from) => open
            .iter()
            .filter(|(_, key)| key.strip_prefix(&prefix).and_then(|step| step.parse::<u32>().ok()).is_some_and(|step| step >= from))
            .map(|(id, _)| id.clone())
            .collect(),
    };
    let source = if obs.rule.builtin { "system" } else { "rule" };
    let opened = change
        .open
        .into_iter()
        .map(|step| Alert {
            id: format!("alt_{:016x}", rand::random::<u64>()),
            organization_id: obs.subject.organization_id().cloned(),
            source: source.to_owned(),
            rule_id: Some(obs.rule.id.clone()),
            key: obs.alert_key(step),
            user_id: obs.subject.user_id().map(|u| u.to_string()),
            team_id: obs.subject.team_id().map(|t| t.to_string()),
            alert_type: obs.rule.metric.alert_type(),
            severity: obs.rule.severity.clone(),
            status: "open".to_owned(),
            report_date: None,
            details: obs.details(step),
            opened_at: now,
            resolved_at: None,
            resolution: None,
            action_taken: None,
        })
        .collect();
    (resolve, opened)
}

/// One outbox row per channel for an alert that opened (`alert.opened`) or resolved. The
/// delivery id is the `webhook-id` receivers deduplicate on.
pub(crate) fn deliveries(alert: &Alert, channels: &[String], event_type: &str, now: Timestamp) -> Vec<Delivery> {
    let payload = json!({ "type": event_type, "timestamp": now, "data": alert });
    channels
        .iter()
        .map(|channel| Delivery {
            id: format!("msg_{:024x}", rand::random::<u128>() >> 32),
            organization_id: alert.organization_id.clone(),
            channel_id: channel.clone(),
            alert_id: alert.id.clone(),
            event_type: event_type.to_owned(),
            payload: payload.clone(),
            status: "pending".to_owned(),
            attempts: 0,
            attempt_log: Vec::new(),
            next_attempt_at: Some(now),
            created_at: now,
            delivered_at: None,
        })
        .collect()
}

/// Adds up totals of the same usage type.
pub(crate) fn merge_totals(parts: impl IntoIterator<Item = WindowTotal>) -> Vec<WindowTotal> {
    let mut by_type: BTreeMap<String, WindowTotal> = BTreeMap::new();
    for t in parts {
        let e =
            by_type.entry(t.usage_type.clone()).or_insert_with(|| WindowTotal { usage_type: t.usage_type.clone(), ..Default::default() });
        e.count += t.count;
        e.sum += t.sum;
        e.llm_successes += t.llm_successes;
        e.llm_failures += t.llm_failures;
        e.input_tokens += t.input_tokens;
        e.output_tokens += t.output_tokens;
        e.cost_nanos += t.cost_nanos;
        e.max = e.max.max(t.max);
        e.latest = e.latest.max(t.latest);
    }
    by_type.into_values().collect()
}

/// A window's whole hours and the partial hour before them, cut as every range is cut
/// ([`crate::range::split`]): cells from the first whole hour on, raw events for the edge.
pub(crate) fn window_hours(from: Option<Timestamp>) -> (Option<Timestamp>, Option<(Timestamp, Timestamp)>) {
    let parts = crate::range::split(crate::TimeRange { from, to: None });
    (parts.hours.and_then(|h| h.from), parts.edges.first().copied())
}

/// A subject's organization, user and team as the aggregate tables key them; `None` for the
/// all scope, which watches the latest requests only.
pub(crate) fn subject_keys(subject: &Subject) -> Option<(&str, Option<&str>, Option<&str>)> {
    Some((subject.organization_id()?.as_str(), subject.user_id().map(|u| u.as_str()), subject.team_id().map(|t| t.as_str())))
}

/// A delivery's status after an attempt: delivered, due again at `retry_at`, or given up.
pub(crate) fn delivery_status(delivered: bool, retry_at: Option<Timestamp>) -> &'static str {
    match (delivered, retry_at) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    }
}

/// The key range `[start, end)` holding every alert key of a prefix ending in `:`.
pub(crate) fn key_range(prefix: &str) -> (String, String) {
    let end = format!("{};", prefix.strip_suffix(':').unwrap_or(prefix));
    (prefix.to_owned(), end)
}

/// How an organization is stored in tables keyed by it: system rows under the empty id.
pub(crate) fn org_key(org: Option<&tally_domain::OrganizationId>) -> &str {
    org.map_or("", |o| o.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use tally_domain::OrganizationId;
    use tally_domain::alerts::evaluate::Subject;
    use tally_domain::alerts::{AlertRule, Metric, RuleScope, Window};

    fn observation(value: i64, level: Option<u32>) -> Observation {
        let acme = OrganizationId::parse("acme").unwrap();
        let rule = AlertRule {
            id: "r1".into(),
            scope: RuleScope::Organization { organization_id: acme.clone() },
            metric: Metric::LlmCost,
            window: Window::CurrentPeriod,
            threshold: Decimal::from(10),
            repeat_every: Some(Decimal::from(10)),
            builtin: false,
            ..AlertRule::system(Timestamp::UNIX_EPOCH)
        };
        Observation {
            rule,
            subject: Subject::Organization { organization_id: acme },
            window_start: None,
            value: Decimal::from(value),
            level,
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn rising_opens_each_step_and_falling_resolves_the_steps_left() {
        let (resolve, opened) = plan(&observation(35, Some(2)), None, &[], Timestamp::UNIX_EPOCH);
        assert!(resolve.is_empty());
        let keys: Vec<&str> = opened.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["rule:r1:organization:0", "rule:r1:organization:1", "rule:r1:organization:2"]);
        assert_eq!((opened[0].source.as_str(), opened[0].alert_type.as_str()), ("rule", "LLM_COST"));
        let open: Vec<(String, String)> = opened.iter().map(|a| (a.id.clone(), a.key.clone())).collect();
        let was = RuleState { window_start: None, level: Some(2) };
        let (resolve, opened) = plan(&observation(15, Some(0)), Some(was), &open, Timestamp::UNIX_EPOCH);
        assert_eq!(resolve, vec![open[1].0.clone(), open[2].0.clone()]);
        assert!(opened.is_empty());
    }

    #[test]
    fn key_ranges_hold_only_their_prefix() {
        let (start, end) = key_range("rule:r1:user:u1:");
        assert!(start.as_str() <= "rule:r1:user:u1:7" && "rule:r1:user:u1:7" < end.as_str());
        assert!("rule:r1:user:u10:0" < start.as_str() || "rule:r1:user:u10:0" >= end.as_str());
    }
}
