//! `GET /v1/usage` and `GET /v1/spend`: parameters → a validated query → cells from the store →
//! series (of usage, or of money). The HTTP handlers only authorize and shape the answer.

mod params;

pub use params::{Measure, ParamError, SeriesParams, SeriesQuery};

use serde::Serialize;
use std::collections::HashMap;
use tally_domain::entities::{Plan, Subscription};
use tally_domain::llm::latency::{DayPlan, LatencyStats, day_plan};
use tally_domain::series::spend::{self, PlanTimeline};
use tally_domain::series::{Cell, Dimension, Grid, Series, build};
use tally_domain::{Aggregation, Money, UsageType, UsageTypeKey};
use tally_store::{CellScope, Listed, MonthCells, Page, Store, StoreError, UsageFilter};

/// How finely a query may read a grid's whole periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    /// Hourly aggregates: each cell keeps its hour and organization (spend prices each by the
    /// organization's plan of its time).
    Hours,
    /// Monthly or daily aggregates for whole UTC months or days where the grid allows, hourly
    /// ones elsewhere; organizations summed in the store unless the query breaks down by them.
    Months,
}

/// Whose cells a query reads for a set of usage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Organization-wide cells: additive figures, any breakdown but by user.
    Organizations,
    /// Every user's cells: breakdowns by user, and figures that look at each user.
    Users,
    /// Latest values summed over each organization's users: every user's hourly cells, and for
    /// whole months the organization's monthly sums of latest values (no team, model, provider
    /// or user in the query).
    LatestSums,
}

/// What a read keeps apart beyond time and usage type.
#[derive(Debug, Clone, Copy)]
struct Apart {
    /// Team, model and provider (monthly cells are otherwise summed over them).
    dimensions: bool,
    /// Organizations (organization-wide cells are otherwise summed over them in the store).
    organizations: bool,
}

/// Reads every cell a grid needs: whole months or days (when the grain and the read allow) and
/// whole hours from the aggregates, cut hours from raw events.
async fn cells(
    store: &dyn Store,
    filter: &UsageFilter,
    grid: &Grid,
    read: Read,
    to_present: bool,
    grain: Grain,
    apart: Apart,
) -> Result<Vec<Cell>, StoreError> {
    let plan = if to_present { grid.plan_to_present() } else { grid.plan() };
    // Summing over organizations costs the store a grouping, for nothing when it reads only one.
    let summed = !apart.organizations && read == Read::Organizations && filter.organization_id.is_none();
    let scope = match read {
        Read::Organizations if summed => CellScope::Summed,
        Read::Organizations => CellScope::Organizations,
        Read::Users | Read::LatestSums => CellScope::Users,
    };
    let months = plan.months.filter(|_| grain == Grain::Months && read != Read::Users && filter.user_id.is_none());
    // Weekly and daily cells are organization-wide, and have no latest values summed over users.
    let daily = grain == Grain::Months && read == Read::Organizations && filter.user_id.is_none();
    let (weeks, days) = (plan.weeks.filter(|_| daily), plan.days.filter(|_| daily));
    // Months, or weeks then days, follow on from the first hour; hours read the rest.
    let whole: Vec<(jiff::Timestamp, jiff::Timestamp)> = [months, weeks, days].into_iter().flatten().collect();
    let hours = match (whole.first(), whole.last()) {
        (Some((from, _)), Some((_, to))) => vec![(plan.hours_from, *from), (*to, plan.hours_to)],
        _ => vec![(plan.hours_from, plan.hours_to)],
    };
    let mut cells = Vec::new();
    for (from, to) in hours.into_iter().filter(|(from, to)| from < to) {
        cells.extend(store.usage_cells(filter, from, to, scope).await?);
    }
    cells.retain(|c| plan.split_hours.binary_search(&c.at).is_err());
    if let Some((from, to)) = months {
        let grain = match read {
            Read::LatestSums => MonthCells::LatestSums,
            _ if apart.dimensions => MonthCells::Split,
            _ => MonthCells::PerType,
        };
        cells.extend(store.usage_month_cells(filter, from, to, grain, summed).await?);
    }
    if let Some((from, to)) = weeks {
        cells.extend(store.usage_week_cells(filter, from, to, summed).await?);
    }
    if let Some((from, to)) = days {
        cells.extend(store.usage_day_cells(filter, &grid.spans_within(from, to), summed).await?);
    }
    for (from, to) in plan.raw {
        cells.extend(store.usage_events(filter, from, to, false).await?.iter().map(Cell::of_event));
    }
    Ok(cells)
}

/// The LLM cells and latency figures of a user (or of an organization) in `[from, to)`, for its
/// summary: both read whole UTC days from what is kept per day and the cut days at either end
/// from hourly cells and raw requests, by one plan.
pub async fn llm_cells_and_latencies(
    store: &dyn Store,
    org: &tally_domain::OrganizationId,
    user: Option<&tally_domain::UserId>,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> Result<(Vec<Cell>, LatencyStats), StoreError> {
    let plan = day_plan(from, to, jiff::Timestamp::now());
    Ok((llm_cells(store, org, user, &plan).await?, latencies(store, org, user, &plan, from, to).await?))
}

/// The LLM cells of a user (or of every user of an organization) in `[from, to)`: whole UTC
/// days from the daily LLM cells, the cut days at either end as [`cells_between`] reads them.
pub async fn llm_cells_between(
    store: &dyn Store,
    org: &tally_domain::OrganizationId,
    user: Option<&tally_domain::UserId>,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> Result<Vec<Cell>, StoreError> {
    llm_cells(store, org, user, &day_plan(from, to, jiff::Timestamp::now())).await
}

async fn llm_cells(
    store: &dyn Store,
    org: &tally_domain::OrganizationId,
    user: Option<&tally_domain::UserId>,
    plan: &DayPlan,
) -> Result<Vec<Cell>, StoreError> {
    let filter = UsageFilter {
        organization_id: Some(org.clone()),
        user_id: user.cloned(),
        usage_types: vec![UsageTypeKey::llm_request()],
        ..UsageFilter::default()
    };
    let mut cells = match plan.days {
        Some((days_from, days_to)) => store.llm_day_cells(org, user, days_from, days_to).await?,
        None => Vec::new(),
    };
    for (edge_from, edge_to) in &plan.edges {
        cells.extend(cells_between(store, &filter, *edge_from, *edge_to).await?);
    }
    Ok(cells)
}

/// Latency figures by a day plan of `[from, to)`: whole days from the stored histograms, cut
/// days from raw requests, and the first request's time from one index probe.
async fn latencies(
    store: &dyn Store,
    org: &tally_domain::OrganizationId,
    user: Option<&tally_domain::UserId>,
    plan: &DayPlan,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> Result<LatencyStats, StoreError> {
    let mut stats = LatencyStats::default();
    let mut firsts = Vec::new();
    for (edge_from, edge_to) in &plan.edges {
        let raw = store.llm_latencies(org, user, *edge_from, *edge_to).await?;
        raw.values.iter().for_each(|ms| stats.histogram.record(*ms));
        firsts.extend(raw.first_request);
    }
    if let Some((days_from, days_to)) = plan.days {
        let days = store.llm_latency_days(org, user, days_from, days_to).await?;
        stats.histogram.merge(&days.histogram);
        if let Some(day) = days.first_day {
            let day_end = day + jiff::SignedDuration::from_hours(24);
            firsts.extend(store.llm_first_request(org, user, day.max(from), day_end.min(to)).await?);
        }
    }
    stats.first_request = firsts.into_iter().min();
    Ok(stats)
}

/// Every cell of `[from, to)`: whole UTC hours from the aggregates, the cut hours at either end
/// from raw events.
async fn cells_between(
    store: &dyn Store,
    filter: &UsageFilter,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> Result<Vec<Cell>, StoreError> {
    use tally_domain::time::hour_start;
    let hour = jiff::SignedDuration::from_hours(1);
    // Widen a cut hour to the whole hour when the part left out holds no event: the answer is
    // the same, and an hour's aggregates cost far less than its raw events. A range that ends
    // now (as most do) ends in a partial hour whose later part is the future, empty, while its
    // earlier part may hold most of an hour of a busy organization's events.
    let holds_none = |a, b| async move { store.any_usage_events(filter, a, b).await.map(|any| !any) };
    let (floor_from, ceil_to) = (hour_start(from), if hour_start(to) == to { to } else { hour_start(to) + hour });
    let from = if floor_from < from && holds_none(floor_from, from).await? { floor_from } else { from };
    let to = if to < ceil_to && holds_none(to, ceil_to).await? { ceil_to } else { to };
    let hours_from = if hour_start(from) == from { from } else { hour_start(from) + hour };
    let hours_to = hour_start(to).max(hours_from);
    let mut cells = Vec::new();
    if hours_from < hours_to {
        cells = store.usage_cells(filter, hours_from, hours_to, CellScope::Users).await?;
    }
    for (a, b) in [(from, hours_from.min(to)), (hours_to.max(from), to)] {
        if a < b {
            cells.extend(store.usage_events(filter, a, b, false).await?.iter().map(Cell::of_event));
        }
    }
    Ok(cells)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// One spend series: money per bucket, exact, as decimal strings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SpendResult {
    pub id: String,
    pub label: String,
    pub breakdown_type: Option<Vec<&'static str>>,
    pub breakdown_value: Option<Vec<String>>,
    pub currency: String,
    pub dates: Vec<String>,
    pub data: Vec<Money>,
    pub count: Money,
    pub compare_label: Option<&'static str>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesAnswer<R = SeriesResult> {
    pub results: Vec<R>,
    pub interval: tally_domain::series::Interval,
    pub date_from: String,
    pub date_to: String,
    pub timezone: String,
}

/// Reads the cells a query needs. Per-user cells are many more rows, so they are read only where
/// needed: for every type when filtering or breaking down by user, else only for the types whose
/// aggregation looks at each user (latest values, distinct users); the rest come from the
/// organization-wide cells, summed over organizations in the store unless the query breaks down
/// by organization or the grain keeps them apart.
async fn query_cells(
    store: &dyn Store,
    q: &SeriesQuery,
    grid: &Grid,
    aggregation: &HashMap<&str, Aggregation>,
    grain: Grain,
) -> Result<Vec<Cell>, StoreError> {
    // The asked range, not a previous period's, may end at the present.
    let to_present = q.to_present && grid.end == q.grid.end;
    if q.breakdowns.iter().any(|d| d.needs_users()) || q.filter.user_id.is_some() {
        let apart = Apart { dimensions: true, organizations: true };
        return cells(store, &q.filter, grid, Read::Users, to_present, grain, apart).await;
    }
    let asked: Vec<UsageTypeKey> = if q.filter.usage_types.is_empty() {
        let mut all: Vec<UsageTypeKey> = aggregation.keys().filter_map(|k| UsageTypeKey::parse(*k).ok()).collect();
        all.sort();
        all
    } else {
        q.filter.usage_types.clone()
    };
    // Whether the cells must keep their team, model and provider (monthly cells are otherwise
    // summed over them in the store); latest values sum per organization only where the query
    // splits them no finer.
    let split = q.breakdowns.iter().any(|d| matches!(d, Dimension::Team | Dimension::Model | Dimension::Provider));
    let apart = Apart { dimensions: split, organizations: grain == Grain::Hours || q.breakdowns.contains(&Dimension::Organization) };
    let summable = q.filter.team_id.is_none() && q.breakdowns.iter().all(|d| matches!(d, Dimension::Type | Dimension::Organization));
    let read_of = |t: &UsageTypeKey| match aggregation.get(t.as_str()) {
        Some(Aggregation::Latest) if summable => Read::LatestSums,
        Some(Aggregation::Latest | Aggregation::UniqueCount) => Read::Users,
        _ => Read::Organizations,
    };
    // Every type is known here, so naming them all reads the same rows as naming none.
    let reads: Vec<(Read, UsageFilter)> = [Read::Organizations, Read::Users, Read::LatestSums]
        .into_iter()
        .map(|read| (read, asked.iter().filter(|t| read_of(t) == read).cloned().collect::<Vec<_>>()))
        .filter(|(_, types)| !types.is_empty())
        .map(|(read, types)| (read, UsageFilter { usage_types: types, ..q.filter.clone() }))
        .collect();
    // The reads are independent: the store answers them side by side.
    let parts =
        futures_util::future::try_join_all(reads.iter().map(|(read, filter)| cells(store, filter, grid, *read, to_present, grain, apart)))
            .await?;
    Ok(parts.into_iter().flatten().collect())
}

/// The grids to answer: the asked one, and with `compare` the previous period too.
fn periods(q: &SeriesQuery) -> Vec<(Grid, Option<&'static str>)> {
    if q.compare { vec![(q.grid.clone(), Some("current")), (q.grid.previous(), Some("previous"))] } else { vec![(q.grid.clone(), None)] }
}

fn aggregations(types: &[UsageType]) -> HashMap<&str, Aggregation> {
    types.iter().map(|t| (t.key.as_str(), t.aggregation)).collect()
}

/// Runs a validated usage query.
pub async fn run(store: &dyn Store, q: &SeriesQuery, types: &[UsageType]) -> Result<SeriesAnswer, StoreError> {
    let aggregation = aggregations(types);
    let aggregation_of = |t: &str| aggregation.get(t).copied().unwrap_or(Aggregation::Sum);
    let mut results = Vec::new();
    for (grid, compare_label) in periods(q) {
        let cells = query_cells(store, q, &grid, &aggregation, Grain::Months).await?;
        let series = build(&grid, &cells, &q.breakdowns, aggregation_of, q.limit);
        let dates = dates(&grid);
        results.extend(series.into_iter().map(|s| labelled(s, &q.breakdowns, dates.clone(), compare_label)));
    }
    Ok(answer(q, results))
}

fn answer<R>(q: &SeriesQuery, results: Vec<R>) -> SeriesAnswer<R> {
    SeriesAnswer {
        results,
        interval: q.grid.interval,
        date_from: in_zone(q, q.grid.from()),
        date_to: in_zone(q, q.grid.end),
        timezone: q.timezone.iana_name().unwrap_or("UTC").to_owned(),
    }
}

fn dates(grid: &Grid) -> Vec<String> {
    grid.starts.iter().map(|z| z.timestamp().display_with_offset(z.offset()).to_string()).collect()
}

/// Every row of a paged listing.
pub async fn every<T, Fut>(mut fetch: impl FnMut(Page) -> Fut) -> Result<Vec<T>, StoreError>
where
    Fut: std::future::Future<Output = Result<Listed<T>, StoreError>>,
{
    let mut all = Vec::new();
    let mut page = Page::all();
    loop {
        let listed = fetch(page).await?;
        let got = listed.results.len();
        all.extend(listed.results);
        if got < page.limit as usize {
            return Ok(all);
        }
        page.offset += got as u64;
    }
}

/// Runs a validated spend query: usage priced by the plan in force at the time. Each billing
/// period is read from its start, even before the range, so allowances and tiers are right.
pub async fn run_spend(store: &dyn Store, q: &SeriesQuery, types: &[UsageType]) -> Result<SeriesAnswer<SpendResult>, StoreError> {
    let aggregation = aggregations(types);
    let aggregation_of = |t: &str| aggregation.get(t).copied().unwrap_or(Aggregation::Sum);
    let org = q.filter.organization_id.as_ref();
    let subscriptions: Vec<Subscription> = every(|page| store.subscriptions(org, page)).await?;
    let plans: Vec<Plan> = every(|page| store.plans(page)).await?;
    let timeline = PlanTimeline::new(&subscriptions, &plans);
    let mut results = Vec::new();
    for (grid, compare_label) in periods(q) {
        let period_start = timeline.earliest_period_start(grid.from());
        let mut read = grid.clone();
        if period_start < grid.from() {
            read.starts.insert(0, period_start.to_zoned(q.timezone.clone()));
        }
        let cells = query_cells(store, q, &read, &aggregation, Grain::Hours).await?;
        let priced = spend::price(&cells, &timeline, aggregation_of);
        let dates = dates(&grid);
        for s in spend::series(&grid, &priced, &q.breakdowns, q.limit) {
            let (label, breakdown_type, breakdown_value) = labels(&s.breakdown_value, &q.breakdowns, "spend");
            let mut id = if s.other { "$other".to_owned() } else { format!("{}:{}", s.currency, s.breakdown_value.join("::")) };
            if let Some(c) = compare_label {
                id = format!("{c}:{id}");
            }
            results.push(SpendResult {
                id,
                label,
                breakdown_type,
                breakdown_value,
                currency: s.currency,
                dates: dates.clone(),
                data: s.data,
                count: s.count,
                compare_label,
            });
        }
    }
    Ok(answer(q, results))
}

/// A series' label and breakdown fields; `plain` labels a series without breakdowns.
fn labels(values: &[String], breakdowns: &[Dimension], plain: &str) -> (String, Option<Vec<&'static str>>, Option<Vec<String>>) {
    if breakdowns.is_empty() {
        return (plain.to_owned(), None, None);
    }
    let shown: Vec<String> = values.iter().map(|v| if v.is_empty() { "none".to_owned() } else { v.clone() }).collect();
    (shown.join(" · "), Some(breakdowns.iter().map(|d| d.as_str()).collect()), Some(shown))
}

/// RFC 3339 with the zone's offset at that instant.
fn in_zone(q: &SeriesQuery, ts: jiff::Timestamp) -> String {
    ts.display_with_offset(q.timezone.to_offset(ts)).to_string()
}

fn labelled(s: Series, breakdowns: &[Dimension], dates: Vec<String>, compare_label: Option<&'static str>) -> SeriesResult {
    let (label, breakdown_type, breakdown_value) = labels(&s.breakdown_value, breakdowns, &s.usage_type);
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

/// What a series contributes to CSV: the columns that name it, and its dated values.
pub trait CsvRows {
    const HEADER: [&'static str; 6];
    fn name(&self) -> [&str; 4];
    fn dates(&self) -> &[String];
    fn values(&self) -> Vec<String>;
}

impl CsvRows for SeriesResult {
    const HEADER: [&'static str; 6] = ["series", "label", "usage_type", "compare", "date", "value"];
    fn name(&self) -> [&str; 4] {
        [&self.id, &self.label, &self.usage_type, self.compare_label.unwrap_or("")]
    }
    fn dates(&self) -> &[String] {
        &self.dates
    }
    fn values(&self) -> Vec<String> {
        self.data.iter().map(f64::to_string).collect()
    }
}

impl CsvRows for SpendResult {
    const HEADER: [&'static str; 6] = ["series", "label", "currency", "compare", "date", "amount"];
    fn name(&self) -> [&str; 4] {
        [&self.id, &self.label, &self.currency, self.compare_label.unwrap_or("")]
    }
    fn dates(&self) -> &[String] {
        &self.dates
    }
    fn values(&self) -> Vec<String> {
        self.data.iter().map(Money::to_string).collect()
    }
}

/// One CSV row per (series, bucket).
pub fn to_csv<R: CsvRows>(answer: &SeriesAnswer<R>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(R::HEADER);
    for r in &answer.results {
        for (date, value) in r.dates().iter().zip(r.values()) {
            let [id, label, unit, compare] = r.name();
            let _ = w.write_record([id, label, unit, compare, date, &value]);
        }
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
