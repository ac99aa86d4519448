//! A meter query: the meter's events of `[from, to)` aggregated per time window (in a time zone's
//! calendar), per subject and per group-by value, with exact decimal arithmetic. Only windows
//! that hold events are returned, ordered by window, subject and group values.

use super::{CompiledMeter, MeterAggregation, Reading, SUBJECT};
use crate::series::grid::Interval;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WindowSize {
    Minute,
    Hour,
    Day,
    Month,
}

impl WindowSize {
    pub const ALL: [&'static str; 4] = ["MINUTE", "HOUR", "DAY", "MONTH"];

    pub fn parse(s: &str) -> Option<WindowSize> {
        Some(match s {
            "MINUTE" => WindowSize::Minute,
            "HOUR" => WindowSize::Hour,
            "DAY" => WindowSize::Day,
            "MONTH" => WindowSize::Month,
            _ => return None,
        })
    }

    /// The window holding `at`, in `tz`'s calendar: its start and end.
    pub fn window(self, at: Timestamp, tz: &TimeZone) -> (Timestamp, Timestamp) {
        let z = at.to_zoned(tz.clone());
        let start: Zoned = match self {
            // Minutes are whole in every zone (no offset has seconds since 1972).
            WindowSize::Minute => {
                let s = at.as_second().div_euclid(60) * 60;
                return (Timestamp::from_second(s).expect("in range"), Timestamp::from_second(s + 60).expect("in range"));
            }
            WindowSize::Hour => Interval::Hour.floor(&z),
            WindowSize::Day => Interval::Day.floor(&z),
            WindowSize::Month => Interval::Month.floor(&z),
        };
        let end = match self {
            WindowSize::Minute | WindowSize::Hour => start.checked_add(1.hour()),
            WindowSize::Day => start.checked_add(1.day()),
            WindowSize::Month => start.checked_add(1.month()),
        }
        .expect("in range");
        (start.timestamp(), end.timestamp())
    }
}

/// What to aggregate. `from`/`to` bound the events (`to` exclusive); without a window size each
/// group gets one row over the whole range.
#[derive(Debug, Clone)]
pub struct MeterQuery {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub window_size: Option<WindowSize>,
    pub time_zone: TimeZone,
    /// Only these subjects (empty: all).
    pub subjects: Vec<String>,
    /// Group-by keys: the meter's own, or `subject`.
    pub group_by: Vec<String>,
    /// Keep only events whose group-by value is one of these.
    pub filter_group_by: BTreeMap<String, Vec<String>>,
}

/// A parameter that does not fit the meter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{parameter}`: {message}")]
pub struct QueryError {
    pub parameter: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub value: f64,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub subject: Option<String>,
    pub group_by: BTreeMap<String, Option<String>>,
}

/// One stored event of the meter.
pub struct MeteredEvent<'a> {
    pub timestamp: Timestamp,
    pub subject: &'a str,
    /// The event's data, as stored (JSON text).
    pub data: Option<&'a str>,
}

impl MeterQuery {
    /// Checks the query against the meter: known group-by keys, an ordered range.
    pub fn check(&self, meter: &CompiledMeter) -> Result<(), QueryError> {
        let known = || {
            let mut keys: Vec<&str> = meter.meter.group_by.keys().map(String::as_str).collect();
            keys.push(SUBJECT);
            keys.join(", ")
        };
        for key in &self.group_by {
            if key != SUBJECT && !meter.has_group(key) {
                return Err(QueryError {
                    parameter: "groupBy".into(),
                    message: format!("{key:?} is not a group-by key of this meter; known: {}", known()),
                });
            }
        }
        for key in self.filter_group_by.keys() {
            if !meter.has_group(key) {
                return Err(QueryError {
                    parameter: format!("filterGroupBy[{key}]"),
                    message: format!("{key:?} is not a group-by key of this meter; known: {}", known()),
                });
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to <= from
        {
            return Err(QueryError { parameter: "to".into(), message: format!("{to} is not after `from` {from}") });
        }
        Ok(())
    }

    /// Whether rows carry their subject: when grouped by it or filtered to some.
    fn by_subject(&self) -> bool {
        !self.subjects.is_empty() || self.group_by.iter().any(|k| k == SUBJECT)
    }
}

#[derive(Default)]
struct Accumulator {
    count: u64,
    sum: Decimal,
    min: Option<Decimal>,
    max: Option<Decimal>,
    latest: Option<(Timestamp, Decimal)>,
    distinct: HashSet<String>,
}

impl Accumulator {
    fn add(&mut self, at: Timestamp, reading: Reading) {
        self.count += 1;
        match reading {
            Reading::Event => {}
            Reading::Distinct(s) => {
                self.distinct.insert(s);
            }
            Reading::Number(d) => {
                self.sum += d;
                self.min = Some(self.min.map_or(d, |m| m.min(d)));
                self.max = Some(self.max.map_or(d, |m| m.max(d)));
                if self.latest.is_none_or(|(t, _)| at >= t) {
                    self.latest = Some((at, d));
                }
            }
        }
    }

    fn value(&self, aggregation: MeterAggregation) -> f64 {
        let exact = match aggregation {
            MeterAggregation::Count => Decimal::from(self.count),
            MeterAggregation::UniqueCount => Decimal::from(self.distinct.len()),
            MeterAggregation::Sum => self.sum,
            MeterAggregation::Avg => self.sum.checked_div(Decimal::from(self.count)).unwrap_or_default(),
            MeterAggregation::Min => self.min.unwrap_or_default(),
            MeterAggregation::Max => self.max.unwrap_or_default(),
            MeterAggregation::Latest => self.latest.map(|(_, d)| d).unwrap_or_default(),
        };
        exact.to_f64().unwrap_or(0.0)
    }
}

type GroupKey = (Timestamp, Option<String>, Vec<Option<String>>);

/// Aggregates the meter's events. Events outside the range, before the meter's `eventFrom`, of
/// other subjects or filtered out are skipped; an event whose data lacks the value is skipped
/// too (ingestion refuses those, so only data stored before a meter change can lack it).
pub fn run<'a>(meter: &CompiledMeter, query: &MeterQuery, events: impl IntoIterator<Item = MeteredEvent<'a>>) -> Vec<Row> {
    let from = query.from.max(meter.meter.event_from);
    let subjects: HashSet<&str> = query.subjects.iter().map(String::as_str).collect();
    let keys: Vec<&str> = query.group_by.iter().map(String::as_str).filter(|k| *k != SUBJECT).collect();
    let by_subject = query.by_subject();
    let mut groups: BTreeMap<GroupKey, Accumulator> = BTreeMap::new();
    let (mut first, mut last) = (None::<Timestamp>, None::<Timestamp>);
    let empty = Value::Object(Default::default());
    for event in events {
        if from.is_some_and(|f| event.timestamp < f) || query.to.is_some_and(|t| event.timestamp >= t) {
            continue;
        }
        if !subjects.is_empty() && !subjects.contains(event.subject) {
            continue;
        }
        let parsed = event.data.and_then(|d| serde_json::from_str::<Value>(d).ok());
        let data = parsed.as_ref().unwrap_or(&empty);
        let kept = query.filter_group_by.iter().all(|(key, allowed)| meter.group_value(key, data).is_some_and(|v| allowed.contains(&v)));
        if !kept {
            continue;
        }
        let Ok(reading) = meter.read(data) else { continue };
        let window = match query.window_size {
            Some(size) => size.window(event.timestamp, &query.time_zone).0,
            None => Timestamp::UNIX_EPOCH,
        };
        first = Some(first.map_or(event.timestamp, |f| f.min(event.timestamp)));
        last = Some(last.map_or(event.timestamp, |l| l.max(event.timestamp)));
        let subject = by_subject.then(|| event.subject.to_owned());
        let values = keys.iter().map(|k| meter.group_value(k, data)).collect();
        groups.entry((window, subject, values)).or_default().add(event.timestamp, reading);
    }
    // Without windows, one row spans the asked range (or, unbounded, the minutes the events cover).
    let whole = (
        from.or_else(|| first.map(|f| WindowSize::Minute.window(f, &TimeZone::UTC).0)),
        query.to.or_else(|| last.map(|l| WindowSize::Minute.window(l, &TimeZone::UTC).1)),
    );
    groups
        .into_iter()
        .map(|((window, subject, values), acc)| {
            let (window_start, window_end) = match query.window_size {
                Some(size) => size.window(window, &query.time_zone),
                None => (whole.0.unwrap_or(window), whole.1.unwrap_or(window)),
            };
            Row {
                value: acc.value(meter.meter.aggregation),
                window_start,
                window_end,
                subject,
                group_by: keys.iter().map(|k| (*k).to_owned()).zip(values).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::MeterCreate;
    use serde_json::json;

    fn meter(aggregation: &str) -> CompiledMeter {
        let create: MeterCreate = serde_json::from_value(json!({
            "slug": "m", "aggregation": aggregation, "eventType": "prompt", "valueProperty": "$.v",
            "groupBy": {"model": "$.model"}
        }))
        .unwrap();
        create.into_meter("id".into(), Timestamp::UNIX_EPOCH).unwrap().compile().unwrap()
    }

    fn query() -> MeterQuery {
        MeterQuery {
            from: None,
            to: None,
            window_size: None,
            time_zone: TimeZone::UTC,
            subjects: vec![],
            group_by: vec![],
            filter_group_by: BTreeMap::new(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const DATA: [(&str, &str, &str); 5] = [
        ("2025-03-01T10:15:00Z", "ann", r#"{"v": 0.1, "model": "a"}"#),
        ("2025-03-01T10:45:00Z", "bob", r#"{"v": 0.2, "model": "b"}"#),
        ("2025-03-01T23:30:00Z", "ann", r#"{"v": "3", "model": "a"}"#),
        ("2025-03-02T00:10:00Z", "ann", r#"{"v": 4}"#),
        ("2025-03-02T00:20:00Z", "cid", r#"{"model": "a"}"#),
    ];

    fn events() -> Vec<MeteredEvent<'static>> {
        DATA.iter().map(|(t, s, d)| MeteredEvent { timestamp: ts(t), subject: s, data: Some(d) }).collect()
    }

    #[test]
    fn sums_are_exact_and_span_the_events_without_windows() {
        let rows = run(&meter("SUM"), &query(), events());
        assert_eq!(rows.len(), 1);
        // 0.1 + 0.2 + 3 + 4, summed as decimals: no 7.300000000000001.
        assert_eq!(rows[0].value, 7.3);
        assert_eq!((rows[0].window_start, rows[0].window_end), (ts("2025-03-01T10:15:00Z"), ts("2025-03-02T00:11:00Z")));
        assert_eq!(rows[0].subject, None);
    }

    #[test]
    fn every_aggregation() {
        let value = |agg: &str| run(&meter(agg), &query(), events())[0].value;
        assert_eq!(value("COUNT"), 5.0);
        assert_eq!(value("AVG"), 7.3 / 4.0);
        assert_eq!(value("MIN"), 0.1);
        assert_eq!(value("MAX"), 4.0);
        assert_eq!(value("LATEST"), 4.0);
        // UNIQUE_COUNT of $.v: 0.1, 0.2, "3", 4.
        assert_eq!(value("UNIQUE_COUNT"), 4.0);
    }

    #[test]
    fn daily_windows_follow_the_time_zone() {
        let mut q = query();
        q.window_size = Some(WindowSize::Day);
        let utc = run(&meter("SUM"), &q, events());
        assert_eq!(utc.iter().map(|r| r.value).collect::<Vec<_>>(), vec![3.3, 4.0]);
        assert_eq!(utc[1].window_start, ts("2025-03-02T00:00:00Z"));
        // In New York (UTC-5) every event falls on March 1st local time.
        q.time_zone = TimeZone::get("America/New_York").unwrap();
        let ny = run(&meter("SUM"), &q, events());
        assert_eq!(ny.len(), 1);
        assert_eq!((ny[0].window_start, ny[0].window_end), (ts("2025-03-01T05:00:00Z"), ts("2025-03-02T05:00:00Z")));
    }

    #[test]
    fn group_by_subject_and_property_with_filters() {
        let mut q = query();
        q.group_by = vec!["subject".into(), "model".into()];
        let rows = run(&meter("SUM"), &q, events());
        let got: Vec<(Option<&str>, Option<&str>, f64)> =
            rows.iter().map(|r| (r.subject.as_deref(), r.group_by["model"].as_deref(), r.value)).collect();
        assert_eq!(got, vec![(Some("ann"), None, 4.0), (Some("ann"), Some("a"), 3.1), (Some("bob"), Some("b"), 0.2)]);
        q.filter_group_by.insert("model".into(), vec!["a".into()]);
        q.group_by = vec![];
        q.subjects = vec!["ann".into()];
        let rows = run(&meter("SUM"), &q, events());
        assert_eq!((rows.len(), rows[0].value, rows[0].subject.as_deref()), (1, 3.1, Some("ann")));
    }

    #[test]
    fn ranges_are_half_open_and_checked() {
        let mut q = query();
        q.from = Some(ts("2025-03-01T10:45:00Z"));
        q.to = Some(ts("2025-03-02T00:10:00Z"));
        q.window_size = Some(WindowSize::Hour);
        let rows = run(&meter("COUNT"), &q, events());
        assert_eq!(rows.iter().map(|r| r.window_start).collect::<Vec<_>>(), vec![ts("2025-03-01T10:00:00Z"), ts("2025-03-01T23:00:00Z")]);
        q.group_by = vec!["colour".into()];
        assert_eq!(q.check(&meter("COUNT")).unwrap_err().parameter, "groupBy");
        q.group_by = vec![];
        q.to = q.from;
        assert_eq!(q.check(&meter("COUNT")).unwrap_err().parameter, "to");
    }

    #[test]
    fn month_and_minute_windows() {
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let (s, e) = WindowSize::Month.window(ts("2025-02-28T20:00:00Z"), &kolkata);
        // 01:30 on March 1st in Kolkata: the March window.
        assert_eq!((s, e), (ts("2025-02-28T18:30:00Z"), ts("2025-03-31T18:30:00Z")));
        let (s, e) = WindowSize::Minute.window(ts("2025-02-28T20:00:59.9Z"), &kolkata);
        assert_eq!((s, e), (ts("2025-02-28T20:00:00Z"), ts("2025-02-28T20:01:00Z")));
        let (s, e) = WindowSize::Hour.window(ts("2025-02-28T20:10:00Z"), &kolkata);
        assert_eq!((s, e), (ts("2025-02-28T19:30:00Z"), ts("2025-02-28T20:30:00Z")));
    }
}
