//! Folding aggregate cells into series: one series per combination of breakdown values, one
//! figure per bucket, combined according to each usage type's aggregation.

use super::grid::Grid;
use crate::event::UsageEvent;
use crate::rollup::Aggregate;
use crate::usage_type::Aggregation;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// One aggregate cell as the store returns it: an hour (or one raw event, at its own time) and
/// its dimensions. `user_id` is empty when the cells were read without the user dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub at: Timestamp,
    pub organization_id: String,
    pub user_id: String,
    pub usage_type: String,
    pub team_id: String,
    pub model: String,
    pub provider: String,
    pub aggregate: Aggregate,
}

impl Cell {
    /// A raw event read for an hour that a bucket boundary cuts through.
    pub fn of_event(e: &UsageEvent) -> Cell {
        let llm = e.llm.as_ref();
        Cell {
            at: e.timestamp,
            organization_id: e.organization_id.as_str().to_owned(),
            user_id: e.user_id.as_str().to_owned(),
            usage_type: e.usage_type.as_str().to_owned(),
            team_id: e.team_id.as_ref().map_or_else(String::new, |t| t.as_str().to_owned()),
            model: llm.and_then(|l| l.model.clone()).unwrap_or_default(),
            provider: llm.and_then(|l| l.provider.clone()).unwrap_or_default(),
            aggregate: Aggregate::of(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Type,
    Team,
    User,
    Organization,
    Model,
    Provider,
    /// LLM request outcome: `success`, `error`, or `none` (not an LLM request or no status).
    Status,
}

impl Dimension {
    pub const ALL: [&'static str; 7] = ["type", "team", "user", "organization", "model", "provider", "status"];

    pub fn parse(s: &str) -> Option<Dimension> {
        Some(match s {
            "type" => Dimension::Type,
            "team" => Dimension::Team,
            "user" => Dimension::User,
            "organization" => Dimension::Organization,
            "model" => Dimension::Model,
            "provider" => Dimension::Provider,
            "status" => Dimension::Status,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Dimension::ALL[self as usize]
    }

    /// Whether reading this dimension needs the per-user cells.
    pub fn needs_users(self) -> bool {
        self == Dimension::User
    }

    /// The cell's value in this dimension (not for `Status`, which splits a cell).
    pub fn value(self, c: &Cell) -> &str {
        match self {
            Dimension::Type => &c.usage_type,
            Dimension::Team => &c.team_id,
            Dimension::User => &c.user_id,
            Dimension::Organization => &c.organization_id,
            Dimension::Model => &c.model,
            Dimension::Provider => &c.provider,
            Dimension::Status => unreachable!("status splits a cell; it is not a column"),
        }
    }
}

/// A series before labelling: its breakdown values, usage type, figures per bucket and total.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub breakdown_value: Vec<String>,
    pub usage_type: String,
    pub aggregation: Aggregation,
    pub data: Vec<f64>,
    pub count: f64,
    /// Whether this is the remainder beyond `limit`.
    pub other: bool,
}

/// Per bucket state; the maps are filled only for aggregations that need them.
#[derive(Default)]
struct Acc {
    sum: f64,
    count: i64,
    max: Option<f64>,
    latest: HashMap<(String, String), (Timestamp, f64)>,
    users: HashSet<(String, String)>,
}

struct Building {
    usage_type: String,
    aggregation: Aggregation,
    buckets: Vec<Acc>,
    users: HashSet<(String, String)>,
}

/// Splits a cell by LLM status: success and error counts, the remainder as `none`.
fn status_parts(c: &Cell) -> Vec<(&'static str, Aggregate)> {
    let a = c.aggregate;
    let (ok, failed) = (a.llm_successes, a.llm_failures);
    if ok == 0 && failed == 0 {
        return vec![("none", a)];
    }
    let part = |n: i64| Aggregate { count: n, sum: n as f64, ..a };
    let mut parts = vec![];
    if ok > 0 {
        parts.push(("success", part(ok)));
    }
    if failed > 0 {
        parts.push(("error", part(failed)));
    }
    if a.count > ok + failed {
        parts.push(("none", part(a.count - ok - failed)));
    }
    parts
}

/// Builds one series per distinct breakdown value, in descending order of their totals; with a
/// `limit`, the series beyond it are summed into one `other` series.
pub fn build(
    grid: &Grid,
    cells: &[Cell],
    breakdowns: &[Dimension],
    aggregation_of: impl Fn(&str) -> Aggregation,
    limit: Option<usize>,
) -> Vec<Series> {
    let n = grid.starts.len();
    // Keyed by borrowed breakdown values (no string copies per cell); the order is set below.
    let mut series: HashMap<Vec<&str>, Building> = HashMap::new();
    for cell in cells {
        let Some(bucket) = grid.bucket(cell.at) else { continue };
        let parts = if breakdowns.contains(&Dimension::Status) { status_parts(cell) } else { vec![("", cell.aggregate)] };
        for (status, agg) in parts {
            let key: Vec<&str> = breakdowns.iter().map(|d| if *d == Dimension::Status { status } else { d.value(cell) }).collect();
            let s = series.entry(key).or_insert_with(|| Building {
                usage_type: cell.usage_type.clone(),
                aggregation: aggregation_of(&cell.usage_type),
                buckets: (0..n).map(|_| Acc::default()).collect(),
                users: HashSet::new(),
            });
            let acc = &mut s.buckets[bucket];
            acc.sum += agg.sum;
            acc.count += agg.count;
            acc.max = Some(acc.max.map_or(agg.max, |m| m.max(agg.max)));
            // Only these two look at who the cell is of (cloning it for every cell is not free).
            let who = || (cell.organization_id.clone(), cell.user_id.clone());
            match s.aggregation {
                Aggregation::Latest => {
                    let slot = acc.latest.entry(who()).or_insert((agg.last_ts, agg.last_value));
                    if (agg.last_ts, agg.last_value) > *slot {
                        *slot = (agg.last_ts, agg.last_value);
                    }
                }
                Aggregation::UniqueCount => {
                    acc.users.insert(who());
                    s.users.insert(who());
                }
                _ => {}
            }
        }
    }
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(key, b)| {
            let breakdown_value: Vec<String> = key.into_iter().map(str::to_owned).collect();
            let data: Vec<f64> = b.buckets.iter().map(|acc| figure(b.aggregation, acc)).collect();
            let count = match b.aggregation {
                Aggregation::Sum | Aggregation::Count => data.iter().sum(),
                Aggregation::Max => data.iter().copied().fold(0.0, f64::max),
                Aggregation::Latest => b.buckets.iter().rev().find(|a| a.count > 0).map_or(0.0, |a| figure(Aggregation::Latest, a)),
                Aggregation::UniqueCount => b.users.len() as f64,
            };
            Series { breakdown_value, usage_type: b.usage_type, aggregation: b.aggregation, data, count, other: false }
        })
        .collect();
    out.sort_by(|a, b| b.count.total_cmp(&a.count).then_with(|| a.breakdown_value.cmp(&b.breakdown_value)));
    if let Some(limit) = limit
        && out.len() > limit
    {
        let rest = out.split_off(limit);
        let aggregation = rest[0].aggregation;
        let combine = |a: f64, b: f64| if aggregation == Aggregation::Max { a.max(b) } else { a + b };
        let mut data = vec![0.0; n];
        let mut count = 0.0;
        for s in &rest {
            for (d, v) in data.iter_mut().zip(&s.data) {
                *d = combine(*d, *v);
            }
            count = combine(count, s.count);
        }
        let usage_type = if rest.iter().all(|s| s.usage_type == rest[0].usage_type) { rest[0].usage_type.clone() } else { String::new() };
        out.push(Series { breakdown_value: vec!["other".to_owned(); breakdowns.len()], usage_type, aggregation, data, count, other: true });
    }
    out
}

fn figure(aggregation: Aggregation, acc: &Acc) -> f64 {
    match aggregation {
        Aggregation::Sum => acc.sum,
        Aggregation::Count => acc.count as f64,
        Aggregation::Max => acc.max.unwrap_or(0.0),
        Aggregation::Latest => acc.latest.values().map(|(_, v)| v).sum(),
        Aggregation::UniqueCount => acc.users.len() as f64,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::grid::Interval;
    use super::*;
    use jiff::tz::TimeZone;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) fn cell(at: &str, user: &str, ty: &str, team: &str, qty: f64) -> Cell {
        let t = ts(at);
        Cell {
            at: t,
            organization_id: "o".into(),
            user_id: user.into(),
            usage_type: ty.into(),
            team_id: team.into(),
            model: String::new(),
            provider: String::new(),
            aggregate: Aggregate::single(qty, t),
        }
    }

    fn grid() -> Grid {
        Grid::new(Interval::Day, &ts("2025-01-01T00:00:00Z").to_zoned(TimeZone::UTC), ts("2025-01-04T00:00:00Z"), 100).unwrap()
    }

    fn agg(ty: &str) -> Aggregation {
        match ty {
            "storage_bytes" => Aggregation::Latest,
            "active" => Aggregation::UniqueCount,
            "peak" => Aggregation::Max,
            _ => Aggregation::Sum,
        }
    }

    #[test]
    fn every_bucket_is_present_and_totals_add_up() {
        let cells = [cell("2025-01-01T10:00:00Z", "a", "api_call", "", 2.0), cell("2025-01-03T10:00:00Z", "a", "api_call", "", 5.0)];
        let s = build(&grid(), &cells, &[], agg, None);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].data, [2.0, 0.0, 5.0]);
        assert_eq!(s[0].count, 7.0);
    }

    #[test]
    fn breakdowns_order_by_total_and_limit_folds_the_rest_into_other() {
        let cells = [
            cell("2025-01-01T10:00:00Z", "a", "api_call", "t1", 1.0),
            cell("2025-01-02T10:00:00Z", "a", "api_call", "t2", 10.0),
            cell("2025-01-02T10:00:00Z", "a", "api_call", "t3", 3.0),
            cell("2025-01-03T10:00:00Z", "a", "api_call", "t4", 2.0),
        ];
        let s = build(&grid(), &cells, &[Dimension::Team], agg, Some(2));
        let keys: Vec<&str> = s.iter().map(|s| s.breakdown_value[0].as_str()).collect();
        assert_eq!(keys, ["t2", "t3", "other"]);
        assert!(s[2].other);
        assert_eq!(s[2].data, [1.0, 0.0, 2.0]);
        assert_eq!(s[2].count, 3.0);
    }

    #[test]
    fn latest_sums_each_users_last_value_and_unique_counts_users() {
        let cells = [
            cell("2025-01-01T10:00:00Z", "a", "storage_bytes", "", 100.0),
            cell("2025-01-01T12:00:00Z", "a", "storage_bytes", "", 150.0),
            cell("2025-01-01T11:00:00Z", "b", "storage_bytes", "", 40.0),
            cell("2025-01-02T09:00:00Z", "b", "storage_bytes", "", 60.0),
        ];
        let s = build(&grid(), &cells, &[], agg, None);
        assert_eq!(s[0].data, [190.0, 60.0, 0.0]);
        assert_eq!(s[0].count, 60.0, "a gauge's total is its latest figure");
        let active = [
            cell("2025-01-01T10:00:00Z", "a", "active", "", 1.0),
            cell("2025-01-01T11:00:00Z", "a", "active", "", 1.0),
            cell("2025-01-02T11:00:00Z", "b", "active", "", 1.0),
        ];
        let s = build(&grid(), &active, &[], agg, None);
        assert_eq!((s[0].data.clone(), s[0].count), (vec![1.0, 1.0, 0.0], 2.0));
    }

    #[test]
    fn status_splits_request_counts() {
        let mut c = cell("2025-01-01T10:00:00Z", "a", "llm_request", "", 1.0);
        c.aggregate.count = 5;
        c.aggregate.sum = 5.0;
        c.aggregate.llm_successes = 3;
        c.aggregate.llm_failures = 1;
        let s = build(&grid(), &[c], &[Dimension::Status], agg, None);
        let got: Vec<(&str, f64)> = s.iter().map(|s| (s.breakdown_value[0].as_str(), s.count)).collect();
        assert_eq!(got, [("success", 3.0), ("error", 1.0), ("none", 1.0)]);
    }

    #[test]
    fn cells_outside_the_grid_are_ignored() {
        let cells = [cell("2024-12-31T23:59:59Z", "a", "api_call", "", 2.0), cell("2025-01-04T00:00:00Z", "a", "api_call", "", 2.0)];
        assert!(build(&grid(), &cells, &[], agg, None).is_empty());
    }
}
