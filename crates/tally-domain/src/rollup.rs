//! Roll-up arithmetic: how a set of new events changes the aggregates. The store applies the
//! resulting deltas with upserts in the same transaction as the events; a rebuild replays raw
//! events through this same code, so live and rebuilt figures cannot drift apart.

use crate::event::{LLM_USAGE_TYPE, LlmFields, LlmStatus, UsageEvent};
use crate::llm::latency::{DayLatencies, LatencyHistogram};
use crate::time::{date_start, day_start, hour_start, month_start, week_start};
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
    /// One quantity at one instant, with no LLM figures.
    pub fn single(quantity: f64, at: Timestamp) -> Self {
        Aggregate {
            count: 1,
            sum: quantity,
            min: quantity,
            max: quantity,
            last_ts: at,
            last_value: quantity,
            llm_successes: 0,
            llm_failures: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: 0,
            latency_ms_sum: 0,
        }
    }

    pub fn of(event: &UsageEvent) -> Self {
        Aggregate::of_parts(event.quantity, event.timestamp, event.llm.as_ref())
    }

    /// An event's aggregate from the parts that count: its quantity, time and LLM facts.
    pub fn of_parts(quantity: f64, at: Timestamp, llm: Option<&LlmFields>) -> Self {
        let mut agg = Aggregate::single(quantity, at);
        if let Some(llm) = llm {
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
        self.add_figures(other);
        if (other.last_ts, other.last_value) > (self.last_ts, self.last_value) {
            self.last_ts = other.last_ts;
            self.last_value = other.last_value;
        }
    }

    /// As a summed read merges cells that serve additive figures only: the latest time and
    /// value are each the largest, as SQL's `max` gives them.
    pub fn merge_summed(&mut self, other: &Aggregate) {
        self.add_figures(other);
        self.last_ts = self.last_ts.max(other.last_ts);
        self.last_value = self.last_value.max(other.last_value);
    }

    /// Counts, sums, extremes and LLM figures: what every merge adds up alike.
    fn add_figures(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.llm_successes += other.llm_successes;
        self.llm_failures += other.llm_failures;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_nanos += other.cost_nanos;
        self.latency_ms_sum += other.latency_ms_sum;
    }
}

/// Hash maps keyed by strings borrowed from the batch: folding a batch allocates no keys.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The finest grain: organization × user × hour × usage type × team × model × provider, in the
/// order of the table's primary key so that sorted upserts walk the B-tree left to right.
/// Absent team, model and provider are the empty string so the key has no NULLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourlyKey<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub hour: Timestamp,
    pub usage_type: &'a str,
    pub team_id: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
}

/// An organization-wide cell: the finest grain without the user, at the start of its hour, UTC
/// day or UTC calendar month, so that organization and team series read one row per period and
/// dimension instead of one per active user (and long ranges one per day or month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgCellKey<'a> {
    pub organization_id: &'a str,
    pub at: Timestamp,
    pub usage_type: &'a str,
    pub team_id: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
}

/// An organization's usage type in one UTC calendar month (`month` at its first instant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgMonthTypeKey<'a> {
    pub organization_id: &'a str,
    pub month: Timestamp,
    pub usage_type: &'a str,
}

/// An organization's usage of a type in a UTC month: its events' aggregate (so that series that
/// split by nothing finer read one row per organization, month and type), and the sum of every
/// user's latest value of the month (how gauges such as storage in use add up across users). A
/// batch's change to that sum depends on the values it replaces, which only the store knows: the
/// roll-up leaves `latest_sum` at zero and the store adds each user's change (see
/// [`OrgTypeMonth::replace`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrgTypeMonth {
    pub aggregate: Aggregate,
    pub latest_sum: f64,
}

impl OrgTypeMonth {
    /// A user's latest value of the month went from `before` (0 for a user new to the month) to
    /// `after`.
    pub fn replace(&mut self, before: f64, after: f64) {
        self.latest_sum += after - before;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserTypeKey<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub usage_type: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserMonthKey<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub usage_type: &'a str,
    pub month: Date,
}

/// A user's LLM requests of one UTC day with one model and provider, so that summaries over long
/// ranges read a row per day and model instead of one per hour (or per request, for latencies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LlmDayKey<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub day: Timestamp,
    pub model: &'a str,
    pub provider: &'a str,
}

/// A user's LLM requests of a day, model and provider: their figures, and the histogram of the
/// latencies of those that reported one (its sum is the aggregate's `latency_ms_sum`).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmDay {
    pub aggregate: Aggregate,
    pub latencies: LatencyHistogram,
}

/// An organization's LLM latencies of one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgDayKey<'a> {
    pub organization_id: &'a str,
    pub day: Timestamp,
}

/// LLM requests of an organization stored without a cost, by model (empty: none named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnpricedKey<'a> {
    pub organization_id: &'a str,
    pub model: &'a str,
}

/// How many unpriced requests, and the latest one's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpriced {
    pub requests: i64,
    pub last_seen: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserRef<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamRef<'a> {
    pub organization_id: &'a str,
    pub team_id: &'a str,
}

/// Everything a batch of new events changes, borrowing its keys from the events.
#[derive(Debug, Default)]
pub struct Rollup<'a> {
    pub hourly: Map<HourlyKey<'a>, Aggregate>,
    pub org_hourly: Map<OrgCellKey<'a>, Aggregate>,
    pub org_daily: Map<OrgCellKey<'a>, Aggregate>,
    pub org_weekly: Map<OrgCellKey<'a>, Aggregate>,
    pub org_monthly: Map<OrgCellKey<'a>, Aggregate>,
    pub user_totals: Map<UserTypeKey<'a>, Aggregate>,
    pub user_months: Map<UserMonthKey<'a>, Aggregate>,
    pub org_type_months: Map<OrgMonthTypeKey<'a>, OrgTypeMonth>,
    pub llm_days: Map<LlmDayKey<'a>, LlmDay>,
    /// An organization's LLM requests per day with the histogram of their latencies.
    pub org_latency_days: Map<OrgDayKey<'a>, DayLatencies>,
    /// LLM requests without a cost (none given, none priced), for the list of models to price.
    pub unpriced: Map<UnpricedKey<'a>, Unpriced>,
    /// Users seen, with the latest event time in the batch (their last activity).
    pub users: Map<UserRef<'a>, Timestamp>,
    pub teams: Map<TeamRef<'a>, Timestamp>,
    pub organizations: Map<&'a str, Timestamp>,
}

fn add<K: Eq + std::hash::Hash>(map: &mut Map<K, Aggregate>, key: K, agg: &Aggregate) {
    map.entry(key).and_modify(|a| a.merge(agg)).or_insert(*agg);
}

fn latest<K: Eq + std::hash::Hash>(map: &mut Map<K, Timestamp>, key: K, ts: Timestamp) {
    map.entry(key).and_modify(|t| *t = (*t).max(ts)).or_insert(ts);
}

/// A map's entries in key order, the order in which the store writes them: B-tree pages are
/// visited left to right, and concurrent writers take row locks in one order (no deadlocks).
pub fn sorted<K: Ord + Copy, V: Copy>(map: &Map<K, V>) -> Vec<(K, V)> {
    let mut rows: Vec<(K, V)> = map.iter().map(|(k, v)| (*k, *v)).collect();
    rows.sort_unstable_by_key(|row| row.0);
    rows
}

/// [`sorted`] for values that are not `Copy`, by reference.
pub fn sorted_refs<K: Ord + Copy, V>(map: &Map<K, V>) -> Vec<(K, &V)> {
    let mut rows: Vec<(K, &V)> = map.iter().map(|(k, v)| (*k, v)).collect();
    rows.sort_unstable_by_key(|row| row.0);
    rows
}

impl<'a> Rollup<'a> {
    pub fn of(events: impl IntoIterator<Item = &'a UsageEvent>) -> Rollup<'a> {
        let mut rollup = Rollup::default();
        for event in events {
            rollup.add(event);
        }
        rollup
    }

    pub fn add(&mut self, e: &'a UsageEvent) {
        let agg = Aggregate::of(e);
        let organization_id = e.organization_id.as_str();
        let user_id = e.user_id.as_str();
        let usage_type = e.usage_type.as_str();
        let team_id = e.team_id.as_ref().map_or("", |t| t.as_str());
        let (model, provider) =
            e.llm.as_ref().map_or(("", ""), |l| (l.model.as_deref().unwrap_or(""), l.provider.as_deref().unwrap_or("")));
        let hour = hour_start(e.timestamp);
        add(&mut self.hourly, HourlyKey { organization_id, user_id, hour, usage_type, team_id, model, provider }, &agg);
        let org_cell = |at| OrgCellKey { organization_id, at, usage_type, team_id, model, provider };
        add(&mut self.org_hourly, org_cell(hour), &agg);
        add(&mut self.org_daily, org_cell(day_start(e.timestamp)), &agg);
        add(&mut self.org_weekly, org_cell(week_start(e.timestamp)), &agg);
        let month = month_start(e.timestamp);
        let month_at = date_start(month);
        add(&mut self.org_monthly, org_cell(month_at), &agg);
        add(&mut self.user_months, UserMonthKey { organization_id, user_id, usage_type, month }, &agg);
        self.org_type_months
            .entry(OrgMonthTypeKey { organization_id, month: month_at, usage_type })
            .and_modify(|m| m.aggregate.merge(&agg))
            .or_insert(OrgTypeMonth { aggregate: agg, latest_sum: 0.0 });
        add(&mut self.user_totals, UserTypeKey { organization_id, user_id, usage_type }, &agg);
        if usage_type == LLM_USAGE_TYPE {
            let (day, latency) = (day_start(e.timestamp), e.llm.as_ref().and_then(|l| l.latency_ms));
            let llm_day = self
                .llm_days
                .entry(LlmDayKey { organization_id, user_id, day, model, provider })
                .and_modify(|d| d.aggregate.merge(&agg))
                .or_insert_with(|| LlmDay { aggregate: agg, latencies: LatencyHistogram::default() });
            if let Some(ms) = latency {
                llm_day.latencies.record(ms);
            }
            self.org_latency_days.entry(OrgDayKey { organization_id, day }).or_default().record(latency);
            if e.llm.as_ref().and_then(|l| l.cost).is_none() {
                let seen = Unpriced { requests: 1, last_seen: e.timestamp };
                self.unpriced
                    .entry(UnpricedKey { organization_id, model })
                    .and_modify(|u| *u = Unpriced { requests: u.requests + 1, last_seen: u.last_seen.max(e.timestamp) })
                    .or_insert(seen);
            }
        }
        latest(&mut self.users, UserRef { organization_id, user_id }, e.timestamp);
        if !team_id.is_empty() {
            latest(&mut self.teams, TeamRef { organization_id, team_id }, e.timestamp);
        }
        latest(&mut self.organizations, organization_id, e.timestamp);
    }

    /// The batch's figures per user and usage type inside each organization's billing period:
    /// its hourly cells whose hour falls in `[start, end)` of `period(organization)` (`None`: no
    /// period on record, nothing to add). This is the rule by which a period's figures are
    /// refilled from stored hourly cells too ([`period_totals`]), so both always agree.
    pub fn period_totals(&self, period: impl Fn(&str) -> Option<(Timestamp, Timestamp)>) -> Map<UserTypeKey<'a>, Aggregate> {
        period_totals(self.hourly.iter().map(|(k, a)| (k.organization_id, k.user_id, k.usage_type, k.hour, a)), period)
    }
}

/// What the user report keeps of one user, folded from the user's events one at a time: per usage
/// type the all-time aggregate and that of the organization's billing period (the events whose
/// hour falls in `[start, end)`, the rule of [`period_totals`]), and the latest event time. A
/// rebuild of the report folds each user's raw events through it, so its figures are those the
/// live path keeps through [`Rollup`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFigures {
    pub all_time: Vec<(String, Aggregate)>,
    pub period: Vec<(String, Aggregate)>,
    pub last_activity: Option<Timestamp>,
}

impl UserFigures {
    pub fn add(&mut self, usage_type: &str, at: Timestamp, agg: &Aggregate, period: Option<(Timestamp, Timestamp)>) {
        // A user has a handful of usage types: a short list beats a map.
        fn merge_into(figures: &mut Vec<(String, Aggregate)>, usage_type: &str, agg: &Aggregate) {
            match figures.iter_mut().find(|(t, _)| t == usage_type) {
                Some((_, a)) => a.merge(agg),
                None => figures.push((usage_type.to_owned(), *agg)),
            }
        }
        merge_into(&mut self.all_time, usage_type, agg);
        let hour = hour_start(at);
        if period.is_some_and(|(start, end)| hour >= start && hour < end) {
            merge_into(&mut self.period, usage_type, agg);
        }
        self.last_activity = self.last_activity.max(Some(at));
    }
}

/// Hourly cells (organization, user, usage type, hour, aggregate) folded per user and usage type,
/// keeping only those whose hour falls in their organization's billing period.
pub fn period_totals<'k, 'c>(
    cells: impl IntoIterator<Item = (&'k str, &'k str, &'k str, Timestamp, &'c Aggregate)>,
    period: impl Fn(&str) -> Option<(Timestamp, Timestamp)>,
) -> Map<UserTypeKey<'k>, Aggregate> {
    let mut totals = Map::default();
    for (organization_id, user_id, usage_type, hour, a) in cells {
        if period(organization_id).is_some_and(|(start, end)| hour >= start && hour < end) {
            add(&mut totals, UserTypeKey { organization_id, user_id, usage_type }, a);
        }
    }
    totals
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
        assert_eq!(r.org_hourly.len(), 2);
        let day = r.org_daily.iter().map(|(k, a)| (k.at.to_string(), a.count, a.sum)).collect::<Vec<_>>();
        assert_eq!(day, [("2025-01-01T00:00:00Z".to_owned(), 3, 8.0)], "one day's cell holds all its hours");
        let week = r.org_weekly.iter().map(|(k, a)| (k.at.to_string(), a.count, a.sum)).collect::<Vec<_>>();
        assert_eq!(week, [("2024-12-30T00:00:00Z".to_owned(), 3, 8.0)], "a week's cell starts on its Monday");
        let first = r.hourly.iter().find(|(k, _)| k.hour.to_string() == "2025-01-01T10:00:00Z").unwrap().1;
        assert_eq!((first.count, first.sum, first.min, first.max), (2, 7.0, 2.0, 5.0));
        let total = &r.user_totals[&UserTypeKey { organization_id: "o", user_id: "u", usage_type: "api_call" }];
        assert_eq!((total.count, total.sum), (3, 8.0));
        assert_eq!(r.users[&UserRef { organization_id: "o", user_id: "u" }].to_string(), "2025-01-01T11:00:00Z");
    }

    #[test]
    fn period_totals_keep_the_hours_inside_each_organizations_period() {
        let events = [
            ev("1", "2025-01-14T23:59:00Z", "u", "api_call", 1.0, ""),
            ev("2", "2025-01-15T00:00:00Z", "u", "api_call", 2.0, ""),
            ev("3", "2025-02-14T23:00:00Z", "u", "api_call", 4.0, ""),
            ev("4", "2025-02-15T00:00:00Z", "u", "api_call", 8.0, ""),
            ev("5", "2025-01-20T00:00:00Z", "v", "storage_bytes", 5.0, ""),
        ];
        let r = Rollup::of(&events);
        let period = ("2025-01-15T00:00:00Z".parse().unwrap(), "2025-02-15T00:00:00Z".parse().unwrap());
        let totals = r.period_totals(|org| (org == "o").then_some(period));
        let api = totals[&UserTypeKey { organization_id: "o", user_id: "u", usage_type: "api_call" }];
        assert_eq!((api.count, api.sum, api.min, api.max), (2, 6.0, 2.0, 4.0), "start inclusive, end exclusive");
        assert_eq!(totals.len(), 2);
        assert!(r.period_totals(|_| None).is_empty(), "no period on record: nothing to add");
    }

    #[test]
    fn a_users_figures_are_those_the_live_rollup_keeps() {
        let events = [
            ev("1", "2025-01-14T23:59:00Z", "u", "api_call", 1.0, ""),
            ev("2", "2025-01-15T00:30:00Z", "u", "api_call", 2.0, ""),
            ev("3", "2025-01-20T00:00:00Z", "u", "storage_bytes", 5.0, ""),
            ev("4", "2025-01-21T00:00:00Z", "u", "storage_bytes", 3.0, ""),
            ev("5", "2025-01-22T08:00:00Z", "u", "llm_request", 1.0, r#","status":"error","input_tokens":7,"cost":"0.25""#),
            ev("6", "2025-02-15T00:00:00Z", "u", "llm_request", 1.0, r#","status":"success","latency_ms":40"#),
        ];
        let period = ("2025-01-15T00:00:00Z".parse().unwrap(), "2025-02-15T00:00:00Z".parse().unwrap());
        let mut figures = UserFigures::default();
        for e in events.iter().rev() {
            figures.add(e.usage_type.as_str(), e.timestamp, &Aggregate::of(e), Some(period));
        }
        let live = Rollup::of(&events);
        let key = |usage_type| UserTypeKey { organization_id: "o", user_id: "u", usage_type };
        for (usage_type, a) in &figures.all_time {
            assert_eq!(live.user_totals[&key(usage_type.as_str())], *a, "{usage_type}");
        }
        let period_totals = live.period_totals(|_| Some(period));
        for (usage_type, a) in &figures.period {
            assert_eq!(period_totals[&key(usage_type.as_str())], *a, "{usage_type} in the period");
        }
        assert_eq!((figures.all_time.len(), figures.period.len()), (live.user_totals.len(), period_totals.len()));
        assert_eq!(figures.last_activity, Some(events[5].timestamp));
    }

    #[test]
    fn latest_value_does_not_depend_on_order() {
        let a = ev("1", "2025-01-01T10:00:00Z", "u", "storage_bytes", 100.0, "");
        let b = ev("2", "2025-01-01T09:00:00Z", "u", "storage_bytes", 300.0, "");
        let c = ev("3", "2025-01-01T10:00:00Z", "u", "storage_bytes", 50.0, "");
        let forward = Rollup::of([&a, &b, &c]);
        let backward = Rollup::of([&c, &b, &a]);
        let key = UserTypeKey { organization_id: "o", user_id: "u", usage_type: "storage_bytes" };
        assert_eq!(forward.user_totals[&key], backward.user_totals[&key]);
        assert_eq!(forward.user_totals[&key].last_value, 100.0);
    }

    #[test]
    fn a_summed_merge_adds_alike_and_keeps_the_largest_latest() {
        let (early, late) = ("2025-01-01T09:00:00Z".parse().unwrap(), "2025-01-01T10:00:00Z".parse().unwrap());
        let (mut merged, mut summed) = (Aggregate::single(300.0, early), Aggregate::single(300.0, early));
        let later = Aggregate::single(100.0, late);
        merged.merge(&later);
        summed.merge_summed(&later);
        assert_eq!((summed.count, summed.sum, summed.min, summed.max), (merged.count, merged.sum, merged.min, merged.max));
        assert_eq!((merged.last_ts, merged.last_value), (late, 100.0), "a merge keeps the latest event's value");
        assert_eq!((summed.last_ts, summed.last_value), (late, 300.0), "a summed merge keeps the largest of each");
    }

    #[test]
    fn organization_latest_sums_move_by_each_users_change() {
        let events = [
            ev("1", "2025-01-05T10:00:00Z", "u", "storage_bytes", 100.0, ""),
            ev("2", "2025-01-06T10:00:00Z", "v", "storage_bytes", 300.0, ""),
            ev("3", "2025-02-01T00:00:00Z", "u", "storage_bytes", 50.0, ""),
        ];
        let r = Rollup::of(&events);
        let january = r.org_type_months
            [&OrgMonthTypeKey { organization_id: "o", month: "2025-01-01T00:00:00Z".parse().unwrap(), usage_type: "storage_bytes" }];
        let a = january.aggregate;
        assert_eq!((a.count, a.sum, a.last_ts.to_string().as_str(), january.latest_sum), (2, 400.0, "2025-01-06T10:00:00Z", 0.0));
        let mut sum = january;
        sum.replace(0.0, 100.0); // u new to January
        sum.replace(0.0, 300.0); // v new to January
        sum.replace(100.0, 40.0); // u's later report
        assert_eq!(sum.latest_sum, 340.0);
        assert_eq!(r.org_type_months.len(), 2);
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
        assert_eq!((r.user_months.len(), r.org_monthly.len()), (2, 2));
        let total = r.user_totals.values().next().unwrap();
        assert_eq!((total.llm_successes, total.llm_failures), (1, 1));
        assert_eq!((total.input_tokens, total.output_tokens, total.cost_nanos, total.latency_ms_sum), (11, 3, 750_000_000, 140));
        assert!(r.hourly.keys().all(|k| k.model == "m" && k.provider == "p"));
        // Two UTC days, one latency each, for the user and for the organization.
        assert_eq!((r.llm_days.len(), r.org_latency_days.len()), (2, 2));
        let total: i64 = r.org_latency_days.values().map(|d| d.histogram.sum_ms).sum();
        assert_eq!(total, 140);
        assert!(r.llm_days.values().all(|d| d.aggregate.count == 1 && d.latencies.count() == 1));
        assert_eq!(r.llm_days.values().map(|d| d.latencies.sum_ms).sum::<i64>(), 140);
        assert!(r.unpriced.is_empty(), "both carry a cost");
        let unpriced = [
            ev("3", "2025-02-01T00:30:00Z", "u", "llm_request", 1.0, r#","model":"m""#),
            ev("4", "2025-02-02T00:00:00Z", "v", "llm_request", 1.0, r#","model":"m""#),
        ];
        let r = Rollup::of(&unpriced);
        let expected = Unpriced { requests: 2, last_seen: "2025-02-02T00:00:00Z".parse().unwrap() };
        assert_eq!(r.unpriced[&UnpricedKey { organization_id: "o", model: "m" }], expected);
    }
}
