//! `GET /v1/usage`: parameters → a validated query → cells from the store → series. The HTTP
//! handler only authorizes and shapes the answer; everything here is testable without a socket.

mod params;

pub use params::{ParamError, SeriesParams, SeriesQuery};

use serde::Serialize;
use std::collections::HashMap;
use tally_domain::series::{Cell, Dimension, Grid, Series, build};
use tally_domain::{Aggregation, UsageType};
use tally_store::{Store, StoreError, UsageFilter};

/// Reads every cell a grid needs: whole hours from the aggregates, cut hours from raw events.
pub async fn cells(store: &dyn Store, filter: &UsageFilter, grid: &Grid, per_user: bool) -> Result<Vec<Cell>, StoreError> {
    let plan = grid.plan();
    let mut cells = store.usage_cells(filter, plan.hours_from, plan.hours_to, per_user).await?;
    cells.retain(|c| plan.split_hours.binary_search(&c.at).is_err());
    for (from, to) in plan.raw {
        cells.extend(store.usage_events(filter, from, to).await?.iter().map(Cell::of_event));
    }
    Ok(cells)
}

#[derive(Debug, Serialize)]
pub struct SeriesResult {
    pub id: String,
    pub label: String,
    pub breakdown_type: Option<Vec<&'static str>>,
    pub breakdown_value: Option<Vec<String>>,
    pub usage_type: String,
    pub aggregation: Aggregation,
    pub dates: Vec<String>,
    pub data: Vec<f64>,
    pub count: f64,
    pub compare_label: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct SeriesAnswer {
    pub results: Vec<SeriesResult>,
    pub interval: tally_domain::series::Interval,
    pub date_from: String,
    pub date_to: String,
    pub timezone: String,
}

/// Runs a validated query.
pub async fn run(store: &dyn Store, q: &SeriesQuery, types: &[UsageType]) -> Result<SeriesAnswer, StoreError> {
    let aggregation: HashMap<&str, Aggregation> = types.iter().map(|t| (t.key.as_str(), t.aggregation)).collect();
    let aggregation_of = |t: &str| aggregation.get(t).copied().unwrap_or(Aggregation::Sum);
    let per_user = q.breakdowns.iter().any(|d| d.needs_users())
        || q.filter.user_id.is_some()
        || aggregation.iter().any(|(key, a)| {
            matches!(a, Aggregation::Latest | Aggregation::UniqueCount)
                && (q.filter.usage_types.is_empty() || q.filter.usage_types.iter().any(|t| t.as_str() == *key))
        });
    let mut periods = vec![(q.grid.clone(), None)];
    if q.compare {
        periods = vec![(q.grid.clone(), Some("current")), (q.grid.previous(), Some("previous"))];
    }
    let mut results = Vec::new();
    for (grid, compare_label) in periods {
        let cells = cells(store, &q.filter, &grid, per_user).await?;
        let series = build(&grid, &cells, &q.breakdowns, aggregation_of, q.limit);
        let dates: Vec<String> = grid.starts.iter().map(|z| z.timestamp().display_with_offset(z.offset()).to_string()).collect();
        results.extend(series.into_iter().map(|s| labelled(s, &q.breakdowns, dates.clone(), compare_label)));
    }
    Ok(SeriesAnswer {
        results,
        interval: q.grid.interval,
        date_from: in_zone(q, q.grid.from()),
        date_to: in_zone(q, q.grid.end),
        timezone: q.timezone.iana_name().unwrap_or("UTC").to_owned(),
    })
}

/// RFC 3339 with the zone's offset at that instant.
fn in_zone(q: &SeriesQuery, ts: jiff::Timestamp) -> String {
    ts.display_with_offset(q.timezone.to_offset(ts)).to_string()
}

fn labelled(s: Series, breakdowns: &[Dimension], dates: Vec<String>, compare_label: Option<&'static str>) -> SeriesResult {
    let shown = |v: &str| if v.is_empty() { "none".to_owned() } else { v.to_owned() };
    let (label, breakdown_type, breakdown_value) = if breakdowns.is_empty() {
        (s.usage_type.clone(), None, None)
    } else {
        let values: Vec<String> = s.breakdown_value.iter().map(|v| shown(v)).collect();
        (values.join(" · "), Some(breakdowns.iter().map(|d| d.as_str()).collect()), Some(values))
    };
    let mut id = if breakdowns.is_empty() { s.usage_type.clone() } else { s.breakdown_value.join("::") };
    if s.other {
        id = "$other".to_owned();
    }
    if let Some(c) = compare_label {
        id = format!("{c}:{id}");
    }
    SeriesResult {
        id,
        label,
        breakdown_type,
        breakdown_value,
        usage_type: s.usage_type,
        aggregation: s.aggregation,
        dates,
        data: s.data,
        count: s.count,
        compare_label,
    }
}

/// One CSV row per (series, bucket).
pub fn to_csv(answer: &SeriesAnswer) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["series", "label", "usage_type", "compare", "date", "value"]);
    for r in &answer.results {
        for (date, value) in r.dates.iter().zip(&r.data) {
            let _ = w.write_record([&r.id, &r.label, &r.usage_type, r.compare_label.unwrap_or(""), date, &value.to_string()]);
        }
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
