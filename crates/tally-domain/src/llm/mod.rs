//! LLM request analytics: summaries, breakdowns by model and provider, and monthly figures,
//! folded from the live aggregate cells of `llm_request` events (whole hours) and raw events
//! (cut hours), plus latency histograms (whole days) and raw latencies (cut days) for percentiles.

pub mod latency;
pub mod prices;

use crate::Money;
use crate::rollup::Aggregate;
use crate::series::Cell;
use crate::time::month_start;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use latency::LatencyStats;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Additive LLM figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LlmTotals {
    pub requests: i64,
    pub successes: i64,
    pub failures: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanos: i64,
    pub last: Option<Timestamp>,
}

impl LlmTotals {
    pub fn add(&mut self, a: &Aggregate) {
        self.requests += a.count;
        self.successes += a.llm_successes;
        self.failures += a.llm_failures;
        self.input_tokens += a.input_tokens;
        self.output_tokens += a.output_tokens;
        self.cost_nanos += a.cost_nanos;
        self.last = Some(self.last.map_or(a.last_ts, |l| l.max(a.last_ts)));
    }

    pub fn total_tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens
    }

    pub fn cost(&self) -> Money {
        Money::from_nanos(self.cost_nanos)
    }
}

/// The latencies of individual requests, as read from raw events (only requests that reported
/// a latency count), and when the first request of the range was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    pub values: Vec<i64>,
    pub first_request: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub total_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub total_cost: Money,
    pub avg_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<i64>,
    pub most_used_model: Option<String>,
    pub most_used_provider: Option<String>,
    pub first_request_at: Option<Timestamp>,
    pub last_request_at: Option<Timestamp>,
    pub active_days: usize,
}

/// The key with the most requests (ties: the smaller key), ignoring empty keys.
fn most_used(counts: &HashMap<&str, i64>) -> Option<String> {
    counts.iter().filter(|(k, _)| !k.is_empty()).max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))).map(|(k, _)| (*k).to_owned())
}

pub fn summary(cells: &[Cell], latencies: &LatencyStats) -> Summary {
    let mut totals = LlmTotals::default();
    let (mut models, mut providers): (HashMap<&str, i64>, HashMap<&str, i64>) = Default::default();
    let mut days = BTreeSet::new();
    for c in cells.iter().filter(|c| c.aggregate.count > 0) {
        totals.add(&c.aggregate);
        *models.entry(c.model.as_str()).or_default() += c.aggregate.count;
        *providers.entry(c.provider.as_str()).or_default() += c.aggregate.count;
        days.insert(c.at.to_zoned(TimeZone::UTC).date());
    }
    Summary {
        total_requests: totals.requests,
        successful_requests: totals.successes,
        failed_requests: totals.failures,
        input_tokens: totals.input_tokens,
        output_tokens: totals.output_tokens,
        total_tokens: totals.total_tokens(),
        total_cost: totals.cost(),
        avg_latency_ms: latencies.histogram.average(),
        p95_latency_ms: latencies.histogram.quantile(0.95),
        most_used_model: most_used(&models),
        most_used_provider: most_used(&providers),
        first_request_at: latencies.first_request,
        last_request_at: totals.last,
        active_days: days.len(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Model,
    Provider,
    ModelAndProvider,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        match s {
            "model" => Some(By::Model),
            "provider" => Some(By::Provider),
            "model,provider" | "provider,model" => Some(By::ModelAndProvider),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakdownRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub request_count: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub total_cost: Money,
    pub avg_tokens_per_request: f64,
    pub failure_rate: f64,
    pub last_used: Option<Timestamp>,
}

fn row(model: Option<String>, provider: Option<String>, t: &LlmTotals) -> BreakdownRow {
    BreakdownRow {
        model,
        provider,
        request_count: t.requests,
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        total_tokens: t.total_tokens(),
        total_cost: t.cost(),
        avg_tokens_per_request: if t.requests == 0 { 0.0 } else { t.total_tokens() as f64 / t.requests as f64 },
        failure_rate: if t.requests == 0 { 0.0 } else { t.failures as f64 / t.requests as f64 },
        last_used: t.last,
    }
}

/// Rows by model and/or provider, the most requested first (ties by name).
pub fn breakdown(cells: &[Cell], by: By) -> Vec<BreakdownRow> {
    let mut groups: BTreeMap<(Option<&str>, Option<&str>), LlmTotals> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.aggregate.count > 0) {
        let key = match by {
            By::Model => (Some(c.model.as_str()), None),
            By::Provider => (None, Some(c.provider.as_str())),
            By::ModelAndProvider => (Some(c.model.as_str()), Some(c.provider.as_str())),
        };
        groups.entry(key).or_default().add(&c.aggregate);
    }
    let mut rows: Vec<BreakdownRow> = groups.iter().map(|((m, p), t)| row(m.map(str::to_owned), p.map(str::to_owned), t)).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.request_count));
    rows
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Month {
    /// `YYYY-MM`, UTC.
    pub month: String,
    pub request_count: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub total_cost: Money,
    pub models: Vec<BreakdownRow>,
    pub providers: Vec<BreakdownRow>,
}

/// Calendar months (UTC), oldest first, each with its model and provider breakdowns.
pub fn monthly(cells: &[Cell]) -> Vec<Month> {
    let mut by_month: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.aggregate.count > 0) {
        by_month.entry(month_start(c.at).strftime("%Y-%m").to_string()).or_default().push(c.clone());
    }
    by_month
        .into_iter()
        .map(|(month, cells)| {
            let mut t = LlmTotals::default();
            cells.iter().for_each(|c| t.add(&c.aggregate));
            Month {
                month,
                request_count: t.requests,
                successful_requests: t.successes,
                failed_requests: t.failures,
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                total_tokens: t.total_tokens(),
                total_cost: t.cost(),
                models: breakdown(&cells, By::Model),
                providers: breakdown(&cells, By::Provider),
            }
        })
        .collect()
}

/// Users ranked by a measure, for an organization's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    Cost,
    Tokens,
    Requests,
}

impl TopBy {
    pub fn parse(s: &str) -> Option<TopBy> {
        match s {
            "cost" => Some(TopBy::Cost),
            "tokens" => Some(TopBy::Tokens),
            "requests" => Some(TopBy::Requests),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopUser {
    pub user_id: String,
    pub requests: i64,
    pub total_tokens: i64,
    pub total_cost: Money,
}

/// The `n` users with the most of `by` (ties by user id).
pub fn top_users(cells: &[Cell], by: TopBy, n: usize) -> Vec<TopUser> {
    let mut users: HashMap<&str, LlmTotals> = HashMap::new();
    for c in cells.iter().filter(|c| c.aggregate.count > 0) {
        users.entry(c.user_id.as_str()).or_default().add(&c.aggregate);
    }
    let mut ranked: Vec<(&str, LlmTotals)> = users.into_iter().collect();
    let measure = |t: &LlmTotals| match by {
        TopBy::Cost => t.cost_nanos,
        TopBy::Tokens => t.total_tokens(),
        TopBy::Requests => t.requests,
    };
    ranked.sort_by(|a, b| measure(&b.1).cmp(&measure(&a.1)).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(u, t)| TopUser { user_id: u.to_owned(), requests: t.requests, total_tokens: t.total_tokens(), total_cost: t.cost() })
        .collect()
}

/// An opaque position in a user's request history: the last request's time and event id.
pub fn encode_cursor(at: Timestamp, event_id: &str) -> String {
    format!("{}.{}", at.as_microsecond(), hex::encode(event_id))
}

pub fn decode_cursor(cursor: &str) -> Option<(Timestamp, String)> {
    let (micros, id) = cursor.split_once('.')?;
    let at = Timestamp::from_microsecond(micros.parse().ok()?).ok()?;
    let id = String::from_utf8(hex::decode(id).ok()?).ok()?;
    Some((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `who`: (user, model, provider); `counts`: (requests, failures).
    fn cell(at: &str, who: (&str, &str, &str), counts: (i64, i64), tokens: (i64, i64), cost_nanos: i64) -> Cell {
        let ((user, model, provider), (count, failures)) = (who, counts);
        let ts: Timestamp = at.parse().unwrap();
        let mut aggregate = Aggregate::single(count as f64, ts);
        aggregate.count = count;
        aggregate.llm_failures = failures;
        aggregate.llm_successes = count - failures;
        (aggregate.input_tokens, aggregate.output_tokens) = tokens;
        aggregate.cost_nanos = cost_nanos;
        Cell {
            at: ts,
            organization_id: "acme".into(),
            user_id: user.into(),
            usage_type: "llm_request".into(),
            team_id: String::new(),
            model: model.into(),
            provider: provider.into(),
            aggregate,
        }
    }

    fn cells() -> Vec<Cell> {
        vec![
            cell("2025-03-01T10:00:00Z", ("ann", "gpt-4o", "openai"), (3, 1), (300, 60), 750_000_000),
            cell("2025-03-01T11:00:00Z", ("ann", "claude", "anthropic"), (1, 0), (50, 10), 100_000_000),
            cell("2025-04-02T09:00:00Z", ("bob", "gpt-4o", "openai"), (2, 0), (200, 40), 2_000_000_000),
        ]
    }

    #[test]
    fn a_summary_adds_up_and_ranks() {
        let mut lat = LatencyStats { first_request: Some("2025-03-01T10:05:00Z".parse().unwrap()), ..LatencyStats::default() };
        (1..=20).for_each(|ms| lat.histogram.record(ms));
        let s = summary(&cells(), &lat);
        assert_eq!(s.p95_latency_ms, Some(19));
        assert_eq!((s.total_requests, s.successful_requests, s.failed_requests), (6, 5, 1));
        assert_eq!((s.input_tokens, s.output_tokens, s.total_tokens), (550, 110, 660));
        assert_eq!(s.total_cost.to_string(), "2.85");
        assert_eq!((s.most_used_model.as_deref(), s.most_used_provider.as_deref()), (Some("gpt-4o"), Some("openai")));
        assert_eq!((s.active_days, s.avg_latency_ms), (2, Some(10.5)));
        assert_eq!(s.last_request_at, Some("2025-04-02T09:00:00Z".parse().unwrap()));
        let empty = summary(&[], &LatencyStats::default());
        assert_eq!((empty.total_requests, empty.p95_latency_ms, empty.most_used_model), (0, None, None));
    }

    #[test]
    fn cursors_round_trip_and_refuse_noise() {
        let at: Timestamp = "2025-03-01T10:00:00.123456Z".parse().unwrap();
        assert_eq!(decode_cursor(&encode_cursor(at, "a.b:c")), Some((at, "a.b:c".to_owned())));
        for bad in ["", "x", "12.zz", "abc.00", "99999999999999999999.61"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn breakdowns_and_months() {
        let rows = breakdown(&cells(), By::Model);
        assert_eq!(rows[0].model.as_deref(), Some("gpt-4o"));
        assert_eq!((rows[0].request_count, rows[0].total_tokens, rows[0].failure_rate), (5, 600, 0.2));
        assert_eq!(rows[0].avg_tokens_per_request, 120.0);
        assert_eq!(rows[0].provider, None);
        let both = breakdown(&cells(), By::ModelAndProvider);
        assert_eq!((both[1].model.as_deref(), both[1].provider.as_deref()), (Some("claude"), Some("anthropic")));
        let months = monthly(&cells());
        assert_eq!(months.iter().map(|m| (m.month.as_str(), m.request_count)).collect::<Vec<_>>(), [("2025-03", 4), ("2025-04", 2)]);
        assert_eq!(months[0].providers.len(), 2);
        let top = top_users(&cells(), TopBy::Cost, 1);
        assert_eq!((top[0].user_id.as_str(), top[0].total_cost.to_string()), ("bob", "2".to_owned()));
        assert_eq!(top_users(&cells(), TopBy::Requests, 5)[0].user_id, "ann");
    }
}
