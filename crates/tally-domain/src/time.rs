//! Time bucketing in UTC. Calendar buckets in other zones are applied at the query edge.

use jiff::{Timestamp, ToSpan, civil::Date, tz::TimeZone};

const SECONDS_PER_HOUR: i64 = 3600;
pub const SECONDS_PER_DAY: i64 = 86_400;

/// The start of the UTC hour that holds `ts`.
pub fn hour_start(ts: Timestamp) -> Timestamp {
    let secs = ts.as_second().div_euclid(SECONDS_PER_HOUR) * SECONDS_PER_HOUR;
    Timestamp::from_second(secs).expect("an hour start inside a valid timestamp's range")
}

/// The start of the UTC day that holds `ts`.
pub fn day_start(ts: Timestamp) -> Timestamp {
    let secs = ts.as_second().div_euclid(SECONDS_PER_DAY) * SECONDS_PER_DAY;
    Timestamp::from_second(secs).expect("a day start inside a valid timestamp's range")
}

/// The start of the UTC week (Monday midnight, as series weeks start) that holds `ts`.
pub fn week_start(ts: Timestamp) -> Timestamp {
    let days = ts.as_second().div_euclid(SECONDS_PER_DAY);
    // 1970-01-01, day 0, was a Thursday: three days after a Monday.
    let monday = days - (days + 3).rem_euclid(7);
    Timestamp::from_second(monday * SECONDS_PER_DAY).expect("a week start inside a valid timestamp's range")
}

/// The first day of the UTC calendar month that holds `ts`.
pub fn month_start(ts: Timestamp) -> Date {
    ts.to_zoned(TimeZone::UTC).date().first_of_month()
}

/// The start instant of a UTC calendar date.
pub fn date_start(date: Date) -> Timestamp {
    date.to_zoned(TimeZone::UTC).expect("UTC has no gaps").timestamp()
}

/// The start of the UTC month after the one holding `ts`.
pub fn next_month_start(ts: Timestamp) -> Timestamp {
    date_start(month_start(ts).checked_add(1.month()).expect("month in range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn hours_floor() {
        assert_eq!(hour_start(ts("2025-03-30T01:59:59.999Z")), ts("2025-03-30T01:00:00Z"));
        assert_eq!(hour_start(ts("2025-03-30T02:00:00Z")), ts("2025-03-30T02:00:00Z"));
        assert_eq!(hour_start(ts("1969-12-31T23:30:00Z")), ts("1969-12-31T23:00:00Z"));
    }

    #[test]
    fn weeks_floor_to_monday() {
        assert_eq!(week_start(ts("2025-01-01T12:00:00Z")), ts("2024-12-30T00:00:00Z"), "a Wednesday");
        assert_eq!(week_start(ts("2024-12-30T00:00:00Z")), ts("2024-12-30T00:00:00Z"), "a Monday's first instant");
        assert_eq!(week_start(ts("2025-01-05T23:59:59.999Z")), ts("2024-12-30T00:00:00Z"), "a Sunday's last");
        assert_eq!(week_start(ts("1970-01-01T00:00:00Z")), ts("1969-12-29T00:00:00Z"));
    }

    #[test]
    fn months_floor() {
        assert_eq!(month_start(ts("2024-02-29T23:59:59Z")).to_string(), "2024-02-01");
        assert_eq!(next_month_start(ts("2024-12-15T00:00:00Z")), ts("2025-01-01T00:00:00Z"));
    }
}
