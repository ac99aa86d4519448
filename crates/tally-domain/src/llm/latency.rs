//! Latency histograms: LLM request latencies kept per user, day, model and provider (and per
//! organization and day) as counts in log-spaced buckets, so that a summary's percentiles read a
//! few rows instead of every request. The buckets follow DDSketch: every value in a bucket lies within
//! [`RELATIVE_ACCURACY`] of the bucket's representative value, and histograms merge by adding
//! counts, in any order, with the same result.

use crate::event::MAX_FUTURE;
use crate::time::{SECONDS_PER_DAY, day_start};
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap};

/// How far a percentile read from a histogram may lie from the true one, relatively.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// The ratio between the bounds of a bucket: `(1 + α) / (1 - α)`.
fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// The bucket of a latency: 0 for 0 ms, else `1 + ⌈log_γ(ms)⌉`, so bucket `i ≥ 1` holds
/// `(γ^(i-2), γ^(i-1)]`.
pub fn bucket_of(ms: i64) -> i32 {
    if ms <= 0 { 0 } else { 1 + ((ms as f64).ln() / gamma().ln()).ceil() as i32 }
}

/// The value a bucket stands for: the point whose relative distance to both bounds is α.
fn representative(bucket: i32) -> f64 {
    if bucket <= 0 {
        return 0.0;
    }
    let g = gamma();
    2.0 * g.powi(bucket - 1) / (g + 1.0)
}

/// Counts of latencies per bucket, with their exact sum (for the average).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: BTreeMap<i32, i64>,
    pub sum_ms: i64,
}

impl LatencyHistogram {
    pub fn record(&mut self, ms: i64) {
        *self.buckets.entry(bucket_of(ms)).or_default() += 1;
        self.sum_ms += ms;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (bucket, n) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += n;
        }
        self.sum_ms += other.sum_ms;
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> i64 {
        self.buckets.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn average(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum_ms as f64 / count as f64)
    }

    /// The nearest-rank `q`-quantile (0 < q ≤ 1), within [`RELATIVE_ACCURACY`] of the exact one
    /// (exact below about 50 ms, where every whole millisecond has a bucket of its own).
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as i64).clamp(1, count);
        let mut seen = 0;
        let bucket = self.buckets.iter().find_map(|(b, n)| {
            seen += n;
            (seen >= rank).then_some(*b)
        })?;
        Some(representative(bucket).round() as i64)
    }

    /// The buckets as a JSON object (`{"bucket": count}`), as the stores keep them; both merge
    /// two such objects in SQL by adding counts per key.
    pub fn buckets_json(&self) -> String {
        let entries: Vec<String> = self.buckets.iter().map(|(b, n)| format!("\"{b}\":{n}")).collect();
        format!("{{{}}}", entries.join(","))
    }

    /// Rebuilds a histogram from stored buckets (JSON as [`Self::buckets_json`] writes it) and the
    /// sum of its latencies.
    pub fn from_stored(buckets_json: &str, sum_ms: i64) -> Result<LatencyHistogram, String> {
        let mut histogram = LatencyHistogram::default();
        histogram.merge_stored(buckets_json, sum_ms)?;
        Ok(histogram)
    }

    /// Adds stored buckets and their latency sum to this histogram.
    pub fn merge_stored(&mut self, buckets_json: &str, sum_ms: i64) -> Result<(), String> {
        self.merge_all_stored([(buckets_json, sum_ms)])
    }

    /// Adds many stored bucket objects (with their latency sums) at once: a summary merges
    /// hundreds of stored days of a hundred buckets or more each, so the counts add up in a dense
    /// array first (bucket numbers stay under [`DENSE_BUCKETS`] for any latency) and go into the
    /// histogram's map once per bucket.
    pub fn merge_all_stored<'s>(&mut self, stored: impl IntoIterator<Item = (&'s str, i64)>) -> Result<(), String> {
        let mut dense: Vec<i64> = Vec::new();
        for (buckets_json, sum_ms) in stored {
            for_each_stored_bucket(buckets_json, |bucket, n| match usize::try_from(bucket) {
                Ok(i) if i < DENSE_BUCKETS => {
                    if dense.len() <= i {
                        dense.resize(i + 1, 0);
                    }
                    dense[i] += n;
                }
                _ => *self.buckets.entry(bucket).or_default() += n,
            })?;
            self.sum_ms += sum_ms;
        }
        for (i, n) in dense.into_iter().enumerate().filter(|(_, n)| *n != 0) {
            *self.buckets.entry(i as i32).or_default() += n;
        }
        Ok(())
    }
}

/// A day's LLM requests as the stores keep them: how many there were, and the histogram of
/// those that reported a latency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayLatencies {
    pub requests: i64,
    pub histogram: LatencyHistogram,
}

impl DayLatencies {
    pub fn record(&mut self, latency_ms: Option<i64>) {
        self.requests += 1;
        if let Some(ms) = latency_ms {
            self.histogram.record(ms);
        }
    }
}

/// More than the bucket of the longest latency an `i64` of milliseconds can hold.
pub const DENSE_BUCKETS: usize = 4096;

/// Calls `f` with each bucket and count of a stored object (`{"12": 3, "40": 1}`, as both stores
/// write it, with or without spaces). Anything else goes through a JSON parser, so a valid object
/// of another spelling still reads.
fn for_each_stored_bucket(json: &str, mut f: impl FnMut(i32, i64)) -> Result<(), String> {
    fn fast(json: &str, f: &mut impl FnMut(i32, i64)) -> Option<()> {
        let inner = json.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
        if inner.is_empty() {
            return Some(());
        }
        for entry in inner.split(',') {
            let (key, value) = entry.split_once(':')?;
            let key = key.trim().strip_prefix('"')?.strip_suffix('"')?;
            f(key.parse().ok()?, value.trim().parse().ok()?);
        }
        Some(())
    }
    let mut parsed = Vec::new();
    if fast(json, &mut |b, n| parsed.push((b, n))).is_none() {
        let raw: HashMap<String, i64> = serde_json::from_str(json).map_err(|e| format!("latency histogram {json:?}: {e}"))?;
        parsed.clear();
        for (key, n) in raw {
            parsed.push((key.parse().map_err(|_| format!("latency histogram bucket {key:?} is not an integer"))?, n));
        }
    }
    parsed.into_iter().for_each(|(b, n)| f(b, n));
    Ok(())
}

/// Adds two stored bucket objects key by key (SQLite's `tally_merge_buckets`).
pub fn merge_buckets_json(a: &str, b: &str) -> Result<String, String> {
    let mut merged = LatencyHistogram::from_stored(a, 0)?;
    merged.merge(&LatencyHistogram::from_stored(b, 0)?);
    Ok(merged.buckets_json())
}

/// What a summary shows of latencies: the histogram of the range and its first request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyStats {
    pub histogram: LatencyHistogram,
    pub first_request: Option<Timestamp>,
}

/// How a range's latencies are read: whole UTC days from the histograms, the cut days around
/// them from raw requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPlan {
    /// Whole days `[from, to)`, both at midnight UTC.
    pub days: Option<(Timestamp, Timestamp)>,
    /// Pieces to read from raw requests, in time order.
    pub edges: Vec<(Timestamp, Timestamp)>,
}

/// Splits `[from, to)` into whole UTC days and cut edges. A bound past where any event can lie
/// (before 2000, or after `now` plus the accepted clock skew) moves out to its day's edge, so
/// that an all-time range reads histograms only.
pub fn day_plan(from: Timestamp, to: Timestamp, now: Timestamp) -> DayPlan {
    let day = SignedDuration::from_secs(SECONDS_PER_DAY);
    let day_end = |ts: Timestamp| if day_start(ts) == ts { ts } else { day_start(ts) + day };
    let from_whole = if from <= crate::event::EARLIEST { day_start(from) } else { day_end(from) };
    let to_whole = if to > now + MAX_FUTURE { day_end(to) } else { day_start(to) };
    if from >= to || from_whole >= to_whole {
        let edges = if from < to { vec![(from, to)] } else { Vec::new() };
        return DayPlan { days: None, edges };
    }
    let mut edges = Vec::new();
    if from < from_whole {
        edges.push((from, from_whole));
    }
    if to_whole < to {
        edges.push((to_whole, to));
    }
    DayPlan { days: Some((from_whole, to_whole)), edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: impl IntoIterator<Item = i64>) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        values.into_iter().for_each(|v| h.record(v));
        h
    }

    fn exact_quantile(values: &mut [i64], q: f64) -> i64 {
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    #[test]
    fn stored_objects_of_either_store_merge_at_once() {
        let mut h = LatencyHistogram::default();
        // SQLite's spelling, PostgreSQL's jsonb text, an empty day, and an escaped key.
        h.merge_all_stored([("{\"3\":2,\"70\":1}", 80), ("{\"3\": 1, \"2000\": 5}", 900), ("{}", 0), (r#"{"\u0037\u0030": 4}"#, 280)])
            .unwrap();
        assert_eq!(h.buckets_json(), "{\"3\":3,\"70\":5,\"2000\":5}");
        assert_eq!((h.count(), h.sum_ms), (13, 1260));
        assert!(h.merge_stored("[1, 2]", 0).is_err());
        assert!(h.merge_stored("{\"x\": 1}", 0).is_err());
    }

    #[test]
    fn small_latencies_are_exact() {
        let h = of(0..=40);
        assert_eq!(h.quantile(0.95), Some(38)); // the 39th of 41 values
        assert_eq!(h.quantile(1.0), Some(40));
        assert_eq!(h.quantile(0.01), Some(0));
        assert_eq!(h.average(), Some(20.0));
    }

    #[test]
    fn percentiles_stay_within_the_relative_accuracy() {
        // A spread of latencies from 1 ms to a few minutes, deterministic.
        let mut values: Vec<i64> = (0..20_000i64).map(|i| 1 + ((i * 7_919) % 1_000) * ((i * 104_729) % 250) + (i % 17)).collect();
        let h = of(values.iter().copied());
        for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
            let exact = exact_quantile(&mut values, q) as f64;
            let approx = h.quantile(q).unwrap() as f64;
            assert!((approx - exact).abs() <= exact * RELATIVE_ACCURACY + 0.5, "q={q}: {approx} vs {exact}");
        }
    }

    #[test]
    fn merging_adds_up_in_any_order_and_survives_storage() {
        let (a, b) = (of([5, 120, 3_000]), of([120, 90_000]));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab, of([5, 120, 3_000, 120, 90_000]));
        assert_eq!((ab.count(), ab.sum_ms), (5, 93_245));
        let stored = LatencyHistogram::from_stored(&ab.buckets_json(), ab.sum_ms).unwrap();
        assert_eq!(stored, ab);
        assert!(LatencyHistogram::from_stored("{\"x\":1}", 1).is_err());
        assert_eq!(merge_buckets_json(&a.buckets_json(), &b.buckets_json()).unwrap(), ab.buckets_json());
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn day_plans_read_whole_days_from_histograms_and_cut_days_raw() {
        let now = ts("2025-06-10T15:00:00Z");
        // Cut at both ends.
        let p = day_plan(ts("2025-06-01T06:00:00Z"), ts("2025-06-05T12:00:00Z"), now);
        assert_eq!(p.days, Some((ts("2025-06-02T00:00:00Z"), ts("2025-06-05T00:00:00Z"))));
        assert_eq!(
            p.edges,
            [(ts("2025-06-01T06:00:00Z"), ts("2025-06-02T00:00:00Z")), (ts("2025-06-05T00:00:00Z"), ts("2025-06-05T12:00:00Z"))]
        );
        // Aligned: no edges.
        let p = day_plan(ts("2025-06-01T00:00:00Z"), ts("2025-06-03T00:00:00Z"), now);
        assert_eq!((p.days.is_some(), p.edges.len()), (true, 0));
        // Inside one day: raw only.
        let p = day_plan(ts("2025-06-01T06:00:00Z"), ts("2025-06-01T09:00:00Z"), now);
        assert_eq!((p.days, p.edges.len()), (None, 1));
        // All time: histograms only, whatever the bounds' time of day.
        let (earliest, latest) = crate::event::all_time(now);
        let p = day_plan(earliest, latest, now);
        assert_eq!(p.days, Some((ts("2000-01-01T00:00:00Z"), ts("2025-06-12T00:00:00Z"))));
        assert!(p.edges.is_empty());
        // "Until now" cuts today: today's requests are read raw.
        let p = day_plan(earliest, now, now);
        assert_eq!(p.edges, [(ts("2025-06-10T00:00:00Z"), now)]);
        assert!(day_plan(now, now, now).edges.is_empty());
    }

    #[test]
    fn an_empty_histogram_has_no_figures() {
        let h = LatencyHistogram::default();
        assert!(h.is_empty());
        assert_eq!((h.average(), h.quantile(0.95)), (None, None));
        assert_eq!(h.buckets_json(), "{}");
    }
}
