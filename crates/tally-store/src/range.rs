//! Splitting a time range into whole hours (answered by hourly aggregates) and the partial hours
//! at its edges (answered by raw events), so totals are exact for any range.

use crate::TimeRange;
use jiff::{SignedDuration, Timestamp};
use tally_domain::time::hour_start;

#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// Whole hours, if any; an unbounded end stays unbounded.
    pub hours: Option<TimeRange>,
    /// Sub-hour pieces to read from raw events.
    pub edges: Vec<(Timestamp, Timestamp)>,
}

fn ceil_hour(ts: Timestamp) -> Timestamp {
    let floor = hour_start(ts);
    if floor == ts { ts } else { floor + SignedDuration::from_hours(1) }
}

pub fn split(range: TimeRange) -> Split {
    let from_h = range.from.map(ceil_hour);
    let to_h = range.to.map(hour_start);
    if let (Some(f), Some(t)) = (from_h, to_h)
        && f >= t
    {
        // No whole hour inside: read the range from raw events.
        let edges = match (range.from, range.to) {
            (Some(a), Some(b)) if a < b => vec![(a, b)],
            _ => vec![],
        };
        return Split { hours: None, edges };
    }
    let mut edges = Vec::new();
    if let (Some(from), Some(f)) = (range.from, from_h)
        && from < f
    {
        edges.push((from, f));
    }
    if let (Some(to), Some(t)) = (range.to, to_h)
        && t < to
    {
        edges.push((t, to));
    }
    Split { hours: Some(TimeRange { from: from_h, to: to_h }), edges }
}

/// Whether buckets of whole days (as `Store::usage_day_cells` takes them) are the days
/// themselves: none longer than a day, each starting where the one before stops. Their cells
/// are then one range scan of days, with nothing to sum.
pub fn one_day_each(buckets: &[(Timestamp, Timestamp)]) -> bool {
    buckets.iter().all(|(start, stop)| start.duration_until(*stop) <= SignedDuration::from_hours(24))
        && buckets.windows(2).all(|pair| pair[0].1 == pair[1].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_are_days_when_each_is_one_and_they_follow_on() {
        let (d1, d2, d3, d4) =
            (ts("2025-01-01T00:00:00Z"), ts("2025-01-02T00:00:00Z"), ts("2025-01-03T00:00:00Z"), ts("2025-01-04T00:00:00Z"));
        assert!(one_day_each(&[(d1, d2), (d2, d3), (d3, ts("2025-01-03T17:00:00Z"))]));
        assert!(one_day_each(&[]));
        assert!(!one_day_each(&[(d1, d3)]), "a bucket of two days sums them");
        assert!(!one_day_each(&[(d1, d2), (d3, d4)]), "a day between buckets is left out");
    }

    fn range(from: Option<&str>, to: Option<&str>) -> TimeRange {
        TimeRange { from: from.map(ts), to: to.map(ts) }
    }

    #[test]
    fn aligned_ranges_need_no_raw_events() {
        let s = split(range(Some("2025-01-01T00:00:00Z"), Some("2025-01-02T00:00:00Z")));
        assert_eq!(s.hours, Some(range(Some("2025-01-01T00:00:00Z"), Some("2025-01-02T00:00:00Z"))));
        assert!(s.edges.is_empty());
        assert_eq!(split(TimeRange::default()), Split { hours: Some(TimeRange::default()), edges: vec![] });
    }

    #[test]
    fn ragged_edges_come_from_raw_events() {
        let s = split(range(Some("2025-01-01T00:30:00Z"), Some("2025-01-01T05:10:00Z")));
        assert_eq!(s.hours, Some(range(Some("2025-01-01T01:00:00Z"), Some("2025-01-01T05:00:00Z"))));
        assert_eq!(
            s.edges,
            vec![(ts("2025-01-01T00:30:00Z"), ts("2025-01-01T01:00:00Z")), (ts("2025-01-01T05:00:00Z"), ts("2025-01-01T05:10:00Z"))]
        );
        let open = split(range(Some("2025-01-01T00:30:00Z"), None));
        assert_eq!(open.hours, Some(range(Some("2025-01-01T01:00:00Z"), None)));
        assert_eq!(open.edges.len(), 1);
    }

    #[test]
    fn inside_one_hour_is_all_raw() {
        let s = split(range(Some("2025-01-01T00:10:00Z"), Some("2025-01-01T00:20:00Z")));
        assert_eq!(s.hours, None);
        assert_eq!(s.edges, vec![(ts("2025-01-01T00:10:00Z"), ts("2025-01-01T00:20:00Z"))]);
        let s = split(range(Some("2025-01-01T00:10:00Z"), Some("2025-01-01T01:20:00Z")));
        assert_eq!(s.hours, None);
        assert_eq!(s.edges, vec![(ts("2025-01-01T00:10:00Z"), ts("2025-01-01T01:20:00Z"))]);
        assert!(split(range(Some("2025-01-01T02:00:00Z"), Some("2025-01-01T01:00:00Z"))).edges.is_empty());
    }
}
