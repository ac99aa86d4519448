//! Roll-up arithmetic: how a set of new events changes the aggregates. The store applies the
//! resulting deltas with upserts in the same transaction as the events; a rebuild replays raw
//! events through this same code, so live and rebuilt figures cannot drift apart.

use crate::event::{LlmStatus, UsageEvent};
use crate::time::{hour_start, month_start};
use jiff::Timestamp;
use jiff::civil::Date;
use std::collections::HashMap;

/// One aggregate cell. `min`/`max`/`last_*` combine by comparison, everything else by addition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Time and value of the latest event (gauges such as storage use). Ties go to the larger value
    /// so that the result never depends on arrival order.
    pub last_ts: Timestamp,
    pub last_value: f64,
    pub llm_successes: i64,
    pub llm_failures: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanos: i64,
    pub latency_ms_sum: i64,
}

impl Aggregate {
    pub fn of(event: &UsageEvent) -> Self {
        let mut agg = Aggregate {
            count: 1,
            sum: event.quantity,
            min: event.quantity,
            max: event.quantity,
            last_ts: event.timestamp,
            last_value: event.quantity,
            llm_successes: 0,
            llm_failures: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: 0,
            latency_ms_sum: 0,
        };
        if let Some(llm) = &event.llm {
            match llm.status {
                Some(LlmStatus::Error) => agg.llm_failures = 1,
                Some(LlmStatus::Success) => agg.llm_successes = 1,
                None => {}
            }
            agg.input_tokens = llm.input_tokens;
            agg.output_tokens = llm.output_tokens;
            agg.cost_nanos = llm.cost.map_or(0, |c| c.nanos());
            agg.latency_ms_sum = llm.latency_ms.unwrap_or(0);
        }
        agg
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if (other.last_ts, other.last_value) > (self.last_ts, self.last_value) {
            self.last_ts = other.last_ts;
            self.last_value = other.last_value;
        }
        self.llm_successes += other.llm_successes;
        self.llm_failures += other.llm_failures;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_nanos += other.cost_nanos;
        self.latency_ms_sum += other.latency_ms_sum;
    }
}

/// The finest grain: organization × hour × usage type × team × user × model × provider.
/// Absent team, model and provider are the empty string so the key has no NULLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourlyKey {
    pub organization_id: String,
    pub hour: Timestamp,
    pub usage_type: String,
    pub team_id: String,
    pub user_id: String,
    pub model: String,
    pub provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserTypeKey {
    pub organization_id: String,
    pub user_id: String,
    pub usage_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserMonthKey {
    pub organization_id: String,
    pub user_id: String,
    pub usage_type: String,
    pub month: Date,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserRef {
    pub organization_id: String,
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamRef {
    pub organization_id: String,
    pub team_id: String,
}

/// Everything a batch of new events changes.
#[derive(Debug, Default)]
pub struct Rollup {
    pub hourly: HashMap<HourlyKey, Aggregate>,
    pub user_totals: HashMap<UserTypeKey, Aggregate>,
    pub user_months: HashMap<UserMonthKey, Aggregate>,
    /// Users seen, with the latest event time in the batch (their last activity).
    pub users: HashMap<UserRef, Timestamp>,
    pub teams: HashMap<TeamRef, Timestamp>,
    pub organizations: HashMap<String, Timestamp>,
}

fn add<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Aggregate>, key: K, agg: &Aggregate) {
    map.entry(key).and_modify(|a| a.merge(agg)).or_insert(*agg);
}

fn latest<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Timestamp>, key: K, ts: Timestamp) {
    map.entry(key).and_modify(|t| *t = (*t).max(ts)).or_insert(ts);
}

impl Rollup {
    pub fn of<'a>(events: impl IntoIterator<Item = &'a UsageEvent>) -> Rollup {
        let mut rollup = Rollup::default();
        for event in events {
            rollup.add(event);
        }
        rollup
    }

    pub fn add(&mut self, e: &UsageEvent) {
        let agg = Aggregate::of(e);
        let org = e.organization_id.as_str();
        let user = e.user_id.as_str();
        let usage_type = e.usage_type.as_str();
        let team = e.team_id.as_ref().map_or("", |t| t.as_str());
        let (model, provider) =
            e.llm.as_ref().map_or(("", ""), |l| (l.model.as_deref().unwrap_or(""), l.provider.as_deref().unwrap_or("")));
        add(
            &mut self.hourly,
            HourlyKey {
                organization_id: org.to_owned(),
                hour: hour_start(e.timestamp),
                usage_type: usage_type.to_owned(),
                team_id: team.to_owned(),
                user_id: user.to_owned(),
                model: model.to_owned(),
                provider: provider.to_owned(),
            },
            &agg,
        );
        let user_type = UserTypeKey { organization_id: org.to_owned(), user_id: user.to_owned(), usage_type: usage_type.to_owned() };
        add(
            &mut self.user_months,
            UserMonthKey {
                organization_id: user_type.organization_id.clone(),
                user_id: user_type.user_id.clone(),
                usage_type: user_type.usage_type.clone(),
                month: month_start(e.timestamp),
            },
            &agg,
        );
        add(&mut self.user_totals, user_type, &agg);
        latest(&mut self.users, UserRef { organization_id: org.to_owned(), user_id: user.to_owned() }, e.timestamp);
        if !team.is_empty() {
            latest(&mut self.teams, TeamRef { organization_id: org.to_owned(), team_id: team.to_owned() }, e.timestamp);
        }
        latest(&mut self.organizations, org.to_owned(), e.timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{RawEvent, ValidationContext};
    use std::collections::HashSet;

    fn ev(id: &str, ts: &str, user: &str, ty: &str, qty: f64, extra: &str) -> UsageEvent {
        let types: HashSet<String> = ["api_call", "llm_request", "storage_bytes"].into_iter().map(String::from).collect();
        let ctx = ValidationContext { now: "2030-01-01T00:00:00Z".parse().unwrap(), known_types: &types };
        let json =
            format!(r#"{{"id":"{id}","timestamp":"{ts}","organization_id":"o","user_id":"{user}","type":"{ty}","quantity":{qty}{extra}}}"#);
        RawEvent::from_json(&json).unwrap().validate(&ctx).unwrap()
    }

    #[test]
    fn events_in_one_hour_share_a_cell() {
        let events = [
            ev("1", "2025-01-01T10:05:00Z", "u", "api_call", 2.0, ""),
            ev("2", "2025-01-01T10:55:00Z", "u", "api_call", 5.0, ""),
            ev("3", "2025-01-01T11:00:00Z", "u", "api_call", 1.0, ""),
        ];
        let r = Rollup::of(&events);
        assert_eq!(r.hourly.len(), 2);
        let first = r.hourly.iter().find(|(k, _)| k.hour.to_string() == "2025-01-01T10:00:00Z").unwrap().1;
        assert_eq!((first.count, first.sum, first.min, first.max), (2, 7.0, 2.0, 5.0));
        let total = &r.user_totals[&UserTypeKey { organization_id: "o".into(), user_id: "u".into(), usage_type: "api_call".into() }];
        assert_eq!((total.count, total.sum), (3, 8.0));
        assert_eq!(r.users[&UserRef { organization_id: "o".into(), user_id: "u".into() }].to_string(), "2025-01-01T11:00:00Z");
    }

    #[test]
    fn latest_value_does_not_depend_on_order() {
        let a = ev("1", "2025-01-01T10:00:00Z", "u", "storage_bytes", 100.0, "");
        let b = ev("2", "2025-01-01T09:00:00Z", "u", "storage_bytes", 300.0, "");
        let c = ev("3", "2025-01-01T10:00:00Z", "u", "storage_bytes", 50.0, "");
        let forward = Rollup::of([&a, &b, &c]);
        let backward = Rollup::of([&c, &b, &a]);
        let key = UserTypeKey { organization_id: "o".into(), user_id: "u".into(), usage_type: "storage_bytes".into() };
        assert_eq!(forward.user_totals[&key], backward.user_totals[&key]);
        assert_eq!(forward.user_totals[&key].last_value, 100.0);
    }

    #[test]
    fn llm_figures_and_months() {
        let events = [
            ev(
                "1",
                "2025-01-31T23:00:00Z",
                "u",
                "llm_request",
                1.0,
                r#","model":"m","provider":"p","status":"success","input_tokens":10,"output_tokens":3,"cost":"0.5","latency_ms":100"#,
            ),
            ev(
                "2",
                "2025-02-01T00:30:00Z",
                "u",
                "llm_request",
                1.0,
                r#","model":"m","provider":"p","status":"error","input_tokens":1,"cost":"0.25","latency_ms":40"#,
            ),
        ];
        let r = Rollup::of(&events);
        assert_eq!(r.user_months.len(), 2);
        let total = r.user_totals.values().next().unwrap();
        assert_eq!((total.llm_successes, total.llm_failures), (1, 1));
        assert_eq!((total.input_tokens, total.output_tokens, total.cost_nanos, total.latency_ms_sum), (11, 3, 750_000_000, 140));
        assert!(r.hourly.keys().all(|k| k.model == "m" && k.provider == "p"));
    }
}
