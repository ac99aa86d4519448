//! The time grid of a series: calendar buckets in the asked time zone, and how to read them
//! exactly from UTC-hourly aggregates. Whole UTC hours inside one bucket come from the
//! aggregates; an hour that a bucket boundary (or the range's end) cuts through is read from raw
//! events, piece by piece, so half-hour zones and ranges ending "now" are still exact.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::time::{date_start, day_start, hour_start, month_start, next_month_start, week_start};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Hour,
    Day,
    /// Weeks start on Monday.
    Week,
    Month,
}

impl Interval {
    pub const ALL: [&'static str; 4] = ["hour", "day", "week", "month"];

    pub fn parse(s: &str) -> Option<Interval> {
        Some(match s {
            "hour" => Interval::Hour,
            "day" => Interval::Day,
            "week" => Interval::Week,
            "month" => Interval::Month,
            _ => return None,
        })
    }

    fn span(self, n: i64) -> Span {
        match self {
            Interval::Hour => n.hours(),
            Interval::Day => n.days(),
            Interval::Week => n.weeks(),
            Interval::Month => n.months(),
        }
    }

    /// The start of the bucket holding `z`, in `z`'s zone.
    pub fn floor(self, z: &Zoned) -> Zoned {
        let floored = match self {
            // Hours are floored on the absolute time line: a zone's hours are UTC hours shifted by
            // its offset, and an offset such as +05:30 keeps its half hour.
            Interval::Hour => {
                let offset = SignedDuration::from_secs(i64::from(z.offset().seconds()));
                let local = z.timestamp() + offset;
                let local_floor = hour_start(local);
                return (local_floor - offset).to_zoned(z.time_zone().clone());
            }
            Interval::Day => z.start_of_day(),
            Interval::Week => {
                let monday = z.date().checked_sub((z.weekday().to_monday_zero_offset() as i64).days()).expect("date in range");
                monday.to_zoned(z.time_zone().clone())
            }
            Interval::Month => z.date().first_of_month().to_zoned(z.time_zone().clone()),
        };
        floored.expect("the start of a bucket exists in every zone")
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        })
    }
}

/// Buckets `[starts[i], starts[i + 1])`, the last ending at `end`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub interval: Interval,
    pub starts: Vec<Zoned>,
    pub end: Timestamp,
}

/// What to read: UTC hours `[hours_from, hours_to)` from the aggregates, except the
/// `split_hours` that a bucket boundary or the grid's ends cut through; those are read from raw
/// events (`raw`, the split hours clipped to the grid), each event bucketed by its own time.
/// When every bucket is a UTC calendar month, the whole `months` inside the hours may be read
/// from monthly aggregates instead of their hours (each month is exactly one bucket); else when
/// every bucket is a UTC week (Monday to Monday), the whole `weeks` likewise from weekly
/// aggregates; and when every bucket starts at a UTC midnight (UTC days, weeks, months), the
/// whole `days` after those weeks from daily aggregates (each day lies inside one bucket). The
/// ranges follow on from `hours_from` in that order, each left out when empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPlan {
    pub hours_from: Timestamp,
    pub hours_to: Timestamp,
    pub split_hours: Vec<Timestamp>,
    pub raw: Vec<(Timestamp, Timestamp)>,
    pub months: Option<(Timestamp, Timestamp)>,
    pub weeks: Option<(Timestamp, Timestamp)>,
    pub days: Option<(Timestamp, Timestamp)>,
}

impl Grid {
    /// The buckets from the one holding `from` up to `to` (exclusive); `None` if the grid would
    /// exceed `max_buckets`.
    pub fn new(interval: Interval, from: &Zoned, to: Timestamp, max_buckets: usize) -> Option<Grid> {
        let first = interval.floor(from);
        let mut starts = Vec::new();
        let mut next = first.clone();
        while next.timestamp() < to {
            if starts.len() == max_buckets {
                return None;
            }
            starts.push(next.clone());
            next = first.checked_add(interval.span(starts.len() as i64)).ok()?;
        }
        Some(Grid { interval, starts, end: to })
    }

    /// The grid of equal length just before this one (for `compare=previous_period`).
    pub fn previous(&self) -> Grid {
        let n = self.starts.len() as i64;
        let Some(first) = self.starts.first() else { return self.clone() };
        let start = first.checked_sub(self.interval.span(n)).expect("date in range");
        let starts: Vec<Zoned> = (0..n).map(|i| start.checked_add(self.interval.span(i)).expect("date in range")).collect();
        Grid { interval: self.interval, starts, end: first.timestamp() }
    }

    pub fn from(&self) -> Timestamp {
        self.starts.first().map_or(self.end, Zoned::timestamp)
    }

    /// The bucket holding `ts`, if inside the grid.
    pub fn bucket(&self, ts: Timestamp) -> Option<usize> {
        if ts < self.from() || ts >= self.end {
            return None;
        }
        Some(self.starts.partition_point(|s| s.timestamp() <= ts) - 1)
    }

    /// The buckets' spans clipped to `[from, to)`, ascending, empty ones left out: how a read
    /// of whole days sums them per bucket.
    pub fn spans_within(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let stops = self.starts.iter().skip(1).map(Zoned::timestamp).chain([self.end]);
        self.starts
            .iter()
            .zip(stops)
            .map(|(start, stop)| (start.timestamp().max(from), stop.min(to)))
            .filter(|(start, stop)| start < stop)
            .collect()
    }

    pub fn plan(&self) -> ReadPlan {
        self.plan_through(self.end, false)
    }

    /// As [`Grid::plan`] for a grid that ends at the present: the hour holding its end is read
    /// whole from the aggregates — everything stored so far — instead of from the raw events
    /// up to the end, which during a busy hour can be millions. (An event stamped ahead of the
    /// server's clock by skew lands in that hour too.) Likewise a grid of UTC months reads its
    /// last month whole from the monthly aggregates.
    pub fn plan_to_present(&self) -> ReadPlan {
        let hour = SignedDuration::from_hours(1);
        self.plan_through(if hour_start(self.end) == self.end { self.end } else { hour_start(self.end) + hour }, true)
    }

    /// Whether the grid has buckets and each is one UTC calendar month.
    fn utc_months(&self) -> bool {
        self.interval == Interval::Month
            && !self.starts.is_empty()
            && self.starts.iter().all(|s| date_start(month_start(s.timestamp())) == s.timestamp())
    }

    /// Whether the grid has buckets and each is one UTC week.
    fn utc_weeks(&self) -> bool {
        self.interval == Interval::Week && !self.starts.is_empty() && self.starts.iter().all(|s| week_start(s.timestamp()) == s.timestamp())
    }

    /// Whether the grid has buckets of a day or longer, each starting at a UTC midnight.
    fn utc_days(&self) -> bool {
        self.interval != Interval::Hour && !self.starts.is_empty() && self.starts.iter().all(|s| day_start(s.timestamp()) == s.timestamp())
    }

    fn plan_through(&self, to: Timestamp, to_present: bool) -> ReadPlan {
        let from = self.from();
        let hour = SignedDuration::from_hours(1);
        let mut cuts: Vec<Timestamp> = self.starts.iter().map(Zoned::timestamp).chain([to]).filter(|t| hour_start(*t) != *t).collect();
        cuts.dedup();
        let mut split_hours: Vec<Timestamp> = cuts.iter().map(|t| hour_start(*t)).collect();
        split_hours.dedup();
        let raw = split_hours.iter().map(|&h| (h.max(from), (h + hour).min(to))).collect();
        let hours_from = hour_start(from);
        let hours_to = if hour_start(to) == to { to } else { hour_start(to) + hour };
        // Whole units (months, weeks, days) run up to the start of the one holding the grid's
        // end; at the present that last one counts whole too, up to `next`.
        let whole_to = |last: Timestamp, next: Timestamp| if last == self.end || !to_present { last } else { next };
        let nonempty = |r: (Timestamp, Timestamp)| (r.0 < r.1).then_some(r);
        let month = date_start(month_start(self.end));
        // The grid starts at a month start, a week start, a midnight: `hours_from`.
        let months = self.utc_months().then(|| (hours_from, whole_to(month, next_month_start(self.end)))).and_then(nonempty);
        let week = week_start(self.end);
        let weeks = (months.is_none() && self.utc_weeks())
            .then(|| (hours_from, whole_to(week, week + SignedDuration::from_hours(7 * 24))))
            .and_then(nonempty);
        let day = day_start(self.end);
        let days = (months.is_none() && self.utc_days())
            .then(|| (weeks.map_or(hours_from, |w| w.1), whole_to(day, day + SignedDuration::from_hours(24))))
            .and_then(nonempty);
        ReadPlan { hours_from, hours_to, split_hours, raw, months, weeks, days }
    }
}

/// Parses `date_from`/`date_to`: an RFC 3339 date-time, a date (midnight in `tz`; as an end, the
/// whole day is included), or relative to now: `-30d`, `-12w`, `-6m`, `-24h`.
pub fn parse_instant(s: &str, tz: &TimeZone, now: &Zoned, is_end: bool) -> Option<Zoned> {
    if let Some(rel) = s.strip_prefix('-') {
        let (n, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit())?);
        let n: i64 = n.parse().ok().filter(|n| *n <= 100_000)?;
        let span = match unit {
            "h" => n.hours(),
            "d" => n.days(),
            "w" => n.weeks(),
            "m" => n.months(),
            "y" => n.years(),
            _ => return None,
        };
        return now.checked_sub(span).ok();
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts.to_zoned(tz.clone()));
    }
    let date: jiff::civil::Date = s.parse().ok()?;
    let date = if is_end { date.checked_add(1.day()).ok()? } else { date };
    date.to_zoned(tz.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoned(s: &str, tz: &str) -> Zoned {
        s.parse::<Timestamp>().unwrap().to_zoned(TimeZone::get(tz).unwrap())
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn days_follow_the_zone_across_dst() {
        // Europe/Berlin leaves summer time on 2025-10-26: that day has 25 hours.
        let g = Grid::new(Interval::Day, &zoned("2025-10-25T10:00:00Z", "Europe/Berlin"), ts("2025-10-27T23:00:00Z"), 100).unwrap();
        let starts: Vec<String> = g.starts.iter().map(|z| z.timestamp().to_string()).collect();
        assert_eq!(starts, ["2025-10-24T22:00:00Z", "2025-10-25T22:00:00Z", "2025-10-26T23:00:00Z"]);
        assert_eq!(g.starts[1].timestamp().duration_until(g.starts[2].timestamp()), SignedDuration::from_hours(25));
        assert_eq!(g.bucket(ts("2025-10-26T22:59:59Z")), Some(1));
        assert_eq!(g.bucket(ts("2025-10-26T23:00:00Z")), Some(2));
        assert_eq!(g.bucket(ts("2025-10-24T21:59:59Z")), None);
    }

    #[test]
    fn spans_are_the_buckets_clipped_to_a_range() {
        let w = Grid::new(Interval::Week, &zoned("2025-01-01T12:00:00Z", "UTC"), ts("2025-01-20T00:00:00Z"), 100).unwrap();
        let spans = |from: &str, to: &str| -> Vec<(String, String)> {
            w.spans_within(ts(from), ts(to)).iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        assert_eq!(
            spans("2025-01-02T00:00:00Z", "2025-01-15T00:00:00Z"),
            [
                ("2025-01-02T00:00:00Z".into(), "2025-01-06T00:00:00Z".into()),
                ("2025-01-06T00:00:00Z".into(), "2025-01-13T00:00:00Z".into()),
                ("2025-01-13T00:00:00Z".into(), "2025-01-15T00:00:00Z".into()),
            ]
        );
        assert_eq!(
            spans("2025-01-13T00:00:00Z", "2025-02-01T00:00:00Z"),
            [("2025-01-13T00:00:00Z".into(), "2025-01-20T00:00:00Z".into())],
            "the grid's end closes the last bucket"
        );
        assert!(spans("2025-01-06T00:00:00Z", "2025-01-06T00:00:00Z").is_empty());
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let w = Grid::new(Interval::Week, &zoned("2025-01-01T12:00:00Z", "UTC"), ts("2025-01-20T00:00:00Z"), 100).unwrap();
        assert_eq!(w.starts[0].date().to_string(), "2024-12-30");
        assert_eq!(w.starts.len(), 3);
        let m = Grid::new(Interval::Month, &zoned("2025-01-31T12:00:00Z", "UTC"), ts("2025-03-01T00:00:00Z"), 100).unwrap();
        assert_eq!(m.starts.iter().map(|z| z.date().to_string()).collect::<Vec<_>>(), ["2025-01-01", "2025-02-01"]);
    }

    #[test]
    fn whole_hour_zones_read_only_aggregates() {
        let g = Grid::new(Interval::Day, &zoned("2025-01-01T00:00:00Z", "America/New_York"), ts("2025-01-03T05:00:00Z"), 100).unwrap();
        let plan = g.plan();
        assert!(plan.raw.is_empty() && plan.split_hours.is_empty());
        assert_eq!((plan.hours_from, plan.hours_to), (ts("2024-12-31T05:00:00Z"), ts("2025-01-03T05:00:00Z")));
    }

    #[test]
    fn half_hour_zones_and_ragged_ends_read_raw_pieces() {
        // Asia/Kolkata is +05:30: every day starts at 18:30 UTC.
        let g = Grid::new(Interval::Day, &zoned("2025-01-01T00:00:00Z", "Asia/Kolkata"), ts("2025-01-02T20:15:00Z"), 100).unwrap();
        let plan = g.plan();
        assert_eq!(
            plan.split_hours,
            [ts("2024-12-31T18:00:00Z"), ts("2025-01-01T18:00:00Z"), ts("2025-01-02T18:00:00Z"), ts("2025-01-02T20:00:00Z")]
        );
        assert_eq!(
            plan.raw,
            [
                (ts("2024-12-31T18:30:00Z"), ts("2024-12-31T19:00:00Z")),
                (ts("2025-01-01T18:00:00Z"), ts("2025-01-01T19:00:00Z")),
                (ts("2025-01-02T18:00:00Z"), ts("2025-01-02T19:00:00Z")),
                (ts("2025-01-02T20:00:00Z"), ts("2025-01-02T20:15:00Z")),
            ]
        );
        // Ending at the present, the last hour is read whole from the aggregates; the bucket
        // boundaries still split theirs.
        let present = g.plan_to_present();
        assert_eq!(present.split_hours, plan.split_hours[..3]);
        assert_eq!(present.raw, plan.raw[..3]);
        assert_eq!(present.hours_to, ts("2025-01-02T21:00:00Z"));
    }

    #[test]
    fn utc_month_grids_read_whole_months_from_monthly_aggregates() {
        let g = Grid::new(Interval::Month, &zoned("2025-01-20T00:00:00Z", "UTC"), ts("2025-03-10T12:30:00Z"), 100).unwrap();
        // A fixed end: January and February whole, March's days from hours and raw events.
        let plan = g.plan();
        assert_eq!(plan.months, Some((ts("2025-01-01T00:00:00Z"), ts("2025-03-01T00:00:00Z"))));
        assert_eq!((plan.hours_to, plan.raw.len()), (ts("2025-03-10T13:00:00Z"), 1));
        // At the present: March too, everything stored so far.
        let present = g.plan_to_present();
        assert_eq!(present.months, Some((ts("2025-01-01T00:00:00Z"), ts("2025-04-01T00:00:00Z"))));
        assert!(present.raw.is_empty());
        // Months of another zone are not UTC months; days are never months.
        let paris = Grid::new(Interval::Month, &zoned("2025-01-20T00:00:00Z", "Europe/Paris"), ts("2025-03-10T00:00:00Z"), 100).unwrap();
        assert_eq!(paris.plan_to_present().months, None);
        let days = Grid::new(Interval::Day, &zoned("2025-01-01T00:00:00Z", "UTC"), ts("2025-03-10T00:00:00Z"), 100).unwrap();
        assert_eq!(days.plan().months, None);
        // A grid inside one month, not at the present, has no whole month.
        let inside = Grid::new(Interval::Month, &zoned("2025-03-02T00:00:00Z", "UTC"), ts("2025-03-10T00:00:00Z"), 100).unwrap();
        assert_eq!(inside.plan().months, None);
        // An empty grid reads nothing, not even at the present.
        let empty = Grid::new(Interval::Month, &zoned("2025-03-10T00:00:00Z", "UTC"), ts("2025-03-01T00:00:00Z"), 100).unwrap();
        assert_eq!(empty.plan_to_present().months, None);
    }

    #[test]
    fn grids_of_utc_weeks_read_whole_weeks_from_weekly_aggregates_then_days() {
        let w = Grid::new(Interval::Week, &zoned("2025-01-01T12:00:00Z", "UTC"), ts("2025-01-22T10:30:00Z"), 100).unwrap();
        // A fixed end: every whole week, then the last week's whole days, then its last day's
        // hours and raw events.
        let plan = w.plan();
        assert_eq!(plan.weeks, Some((ts("2024-12-30T00:00:00Z"), ts("2025-01-20T00:00:00Z"))));
        assert_eq!(plan.days, Some((ts("2025-01-20T00:00:00Z"), ts("2025-01-22T00:00:00Z"))));
        assert_eq!((plan.hours_to, plan.raw.len()), (ts("2025-01-22T11:00:00Z"), 1));
        // At the present: the last week too, everything stored so far; no day is left to read.
        let present = w.plan_to_present();
        assert_eq!((present.weeks, present.days), (Some((ts("2024-12-30T00:00:00Z"), ts("2025-01-27T00:00:00Z"))), None));
        // Ending at a Monday: whole weeks only.
        let monday = Grid::new(Interval::Week, &zoned("2025-01-01T12:00:00Z", "UTC"), ts("2025-01-20T00:00:00Z"), 100).unwrap();
        assert_eq!((monday.plan().weeks.map(|w| w.1), monday.plan().days), (Some(ts("2025-01-20T00:00:00Z")), None));
        // Inside its first week and not at the present: days alone.
        let short = Grid::new(Interval::Week, &zoned("2025-01-01T12:00:00Z", "UTC"), ts("2025-01-03T00:00:00Z"), 100).unwrap();
        assert_eq!((short.plan().weeks, short.plan().days), (None, Some((ts("2024-12-30T00:00:00Z"), ts("2025-01-03T00:00:00Z")))));
        // Weeks of another zone are not UTC weeks, nor are days.
        let paris = Grid::new(Interval::Week, &zoned("2025-01-01T12:00:00Z", "Europe/Paris"), ts("2025-01-22T00:00:00Z"), 100).unwrap();
        assert_eq!(paris.plan_to_present().weeks, None);
        let d = Grid::new(Interval::Day, &zoned("2025-01-06T00:00:00Z", "UTC"), ts("2025-01-20T00:00:00Z"), 100).unwrap();
        assert_eq!(d.plan().weeks, None);
    }

    #[test]
    fn grids_of_utc_days_read_whole_days_from_daily_aggregates() {
        let d = Grid::new(Interval::Day, &zoned("2025-01-01T00:00:00Z", "UTC"), ts("2025-01-03T00:00:00Z"), 100).unwrap();
        assert_eq!(d.plan().days, Some((ts("2025-01-01T00:00:00Z"), ts("2025-01-03T00:00:00Z"))));
        // Days of another zone cut UTC days; hours are finer than days; UTC months read months.
        let paris = Grid::new(Interval::Day, &zoned("2025-01-01T00:00:00Z", "Europe/Paris"), ts("2025-01-05T00:00:00Z"), 100).unwrap();
        assert_eq!(paris.plan_to_present().days, None);
        let hours = Grid::new(Interval::Hour, &zoned("2025-01-01T00:00:00Z", "UTC"), ts("2025-01-03T00:00:00Z"), 100).unwrap();
        assert_eq!(hours.plan_to_present().days, None);
        let m = Grid::new(Interval::Month, &zoned("2025-01-01T00:00:00Z", "UTC"), ts("2025-03-10T00:00:00Z"), 100).unwrap();
        assert_eq!((m.plan().months.is_some(), m.plan().days), (true, None));
        // A grid inside one day, not at the present, has no whole day.
        let inside = Grid::new(Interval::Day, &zoned("2025-01-01T00:00:00Z", "UTC"), ts("2025-01-01T10:00:00Z"), 100).unwrap();
        assert_eq!(inside.plan().days, None);
    }

    #[test]
    fn hour_buckets_keep_a_half_hour_offset() {
        let g = Grid::new(Interval::Hour, &zoned("2025-01-01T00:10:00Z", "Asia/Kolkata"), ts("2025-01-01T02:00:00Z"), 100).unwrap();
        assert_eq!(g.starts[0].timestamp(), ts("2024-12-31T23:30:00Z"));
        assert_eq!(g.starts.len(), 3);
    }

    #[test]
    fn too_many_buckets_is_refused() {
        assert!(Grid::new(Interval::Hour, &zoned("2025-01-01T00:00:00Z", "UTC"), ts("2025-03-01T00:00:00Z"), 744).is_none());
    }

    #[test]
    fn previous_period_has_the_same_shape() {
        let g = Grid::new(Interval::Month, &zoned("2025-03-15T00:00:00Z", "UTC"), ts("2025-05-10T00:00:00Z"), 100).unwrap();
        let p = g.previous();
        assert_eq!(p.starts.iter().map(|z| z.date().to_string()).collect::<Vec<_>>(), ["2024-12-01", "2025-01-01", "2025-02-01"]);
        assert_eq!(p.end, ts("2025-03-01T00:00:00Z"));
    }

    #[test]
    fn instants_parse_in_every_form() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let now = zoned("2025-06-15T12:00:00Z", "Europe/Paris");
        assert_eq!(parse_instant("-30d", &tz, &now, false).unwrap().timestamp(), ts("2025-05-16T12:00:00Z"));
        assert_eq!(parse_instant("-1m", &tz, &now, false).unwrap().timestamp(), ts("2025-05-15T12:00:00Z"));
        assert_eq!(parse_instant("2025-06-01", &tz, &now, false).unwrap().timestamp(), ts("2025-05-31T22:00:00Z"));
        assert_eq!(parse_instant("2025-06-01", &tz, &now, true).unwrap().timestamp(), ts("2025-06-01T22:00:00Z"));
        assert_eq!(parse_instant("2025-06-01T10:00:00Z", &tz, &now, false).unwrap().timestamp(), ts("2025-06-01T10:00:00Z"));
        for bad in ["", "-", "-5x", "yesterday", "2025-13-01", "-99999999d"] {
            assert!(parse_instant(bad, &tz, &now, false).is_none(), "{bad}");
        }
    }
}
