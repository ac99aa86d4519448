//! Spend series: usage priced by the plan each organization was on at the time. Charges depend
//! on where usage stands within its billing period (allowances, tiers, packages), so each cell is
//! priced as the increase of its period's charge: `amount(figure after) − amount(figure before)`,
//! with the figure running through the period in time order. Summed over a period this is exactly
//! the period's charge; split over buckets it shows when the money was spent.

use super::build::{Cell, Dimension};
use super::grid::Grid;
use crate::entities::{Plan, Subscription, SubscriptionStatus};
use crate::money::Money;
use crate::pricing::period_amount;
use crate::usage_type::Aggregation;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Which plan priced an organization's usage at an instant, and the billing period it fell in.
pub struct PlanTimeline<'a> {
    subscriptions: HashMap<&'a str, Vec<&'a Subscription>>,
    plans: HashMap<&'a str, &'a Plan>,
}

impl<'a> PlanTimeline<'a> {
    pub fn new(subscriptions: &'a [Subscription], plans: &'a [Plan]) -> Self {
        let mut by_org: HashMap<&str, Vec<&Subscription>> = HashMap::new();
        for s in subscriptions {
            by_org.entry(s.organization_id.as_str()).or_default().push(s);
        }
        PlanTimeline { subscriptions: by_org, plans: plans.iter().map(|p| (p.id.as_str(), p)).collect() }
    }

    /// The subscription in force: begun by then (created or period started), not canceled before
    /// then; of several, the one whose current period started last.
    fn subscription(&self, org: &str, t: Timestamp) -> Option<&'a Subscription> {
        self.subscriptions
            .get(org)?
            .iter()
            .filter(|s| t >= s.created_at.min(s.current_period_start))
            .filter(|s| !(s.status == SubscriptionStatus::Canceled && t >= s.current_period_end))
            .max_by_key(|s| (s.current_period_start <= t, s.current_period_start))
            .copied()
    }

    /// The plan and the start of the billing period holding `t`.
    pub fn at(&self, org: &str, t: Timestamp) -> Option<(&'a Plan, Timestamp)> {
        let s = self.subscription(org, t)?;
        let plan = self.plans.get(s.plan_id.as_str())?;
        Some((plan, period_start(s, t)))
    }

    /// The earliest start of a billing period holding an instant of `[from, …)` for any
    /// organization, so that spend can count the usage of a period from its beginning.
    pub fn earliest_period_start(&self, from: Timestamp) -> Timestamp {
        self.subscriptions.keys().filter_map(|org| self.at(org, from).map(|(_, start)| start)).min().unwrap_or(from).min(from)
    }
}

/// Periods repeat from the current one, backwards and forwards, in whole months when the current
/// period is whole months long (monthly, annual), else in its exact length.
fn period_start(s: &Subscription, t: Timestamp) -> Timestamp {
    let (start, end) = (s.current_period_start.to_zoned(TimeZone::UTC), s.current_period_end.to_zoned(TimeZone::UTC));
    let months = start.until((jiff::Unit::Month, &end)).map(|span| span.get_months()).unwrap_or(0);
    if months > 0 && start.checked_add(months.months()).ok().as_ref() == Some(&end) {
        let step = |k: i64| start.checked_add((k * i64::from(months)).months()).map(|z| z.timestamp()).unwrap_or(t);
        let mut k: i64 = 0;
        while step(k) > t {
            k -= 1;
        }
        while step(k + 1) <= t {
            k += 1;
        }
        step(k)
    } else {
        let length = s.current_period_start.duration_until(s.current_period_end).as_secs().max(1);
        let offset = s.current_period_start.duration_until(t).as_secs().div_euclid(length) * length;
        Timestamp::from_second(s.current_period_start.as_second() + offset).unwrap_or(t)
    }
}

/// A cell's spend, in its plan's currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced<'c> {
    pub cell: &'c Cell,
    pub currency: String,
    pub amount: Money,
}

/// A period's price terms: charge model, included units, currency.
type PeriodTerms = (crate::pricing::Charge, f64, String);

/// Prices every cell whose organization had a plan pricing its usage type at the time. Cells
/// before the range of interest must be included (from the period's start) for tiers to be right;
/// the caller drops them afterwards by bucketing.
pub fn price<'c>(cells: &'c [Cell], timeline: &PlanTimeline<'_>, aggregation_of: impl Fn(&str) -> Aggregation) -> Vec<Priced<'c>> {
    // (organization, usage type, period start) → the terms that price it, and its cells.
    let mut periods: BTreeMap<(&str, &str, Timestamp), (PeriodTerms, Vec<&Cell>)> = BTreeMap::new();
    for cell in cells {
        let Some((plan, start)) = timeline.at(&cell.organization_id, cell.at) else { continue };
        let Some(usage) = plan.usage.get(&cell.usage_type) else { continue };
        match periods.entry((&cell.organization_id, &cell.usage_type, start)) {
            Entry::Occupied(mut period) => period.get_mut().1.push(cell),
            // The terms are looked up once per period, not per cell.
            Entry::Vacant(period) => {
                let Some(charge) = usage.charge() else { continue };
                period.insert(((charge, usage.included, plan.currency.clone()), vec![cell]));
            }
        }
    }
    let mut priced = Vec::new();
    for (key, ((charge, included, currency), mut period_cells)) in periods {
        let aggregation = aggregation_of(key.1);
        period_cells.sort_by_key(|c| c.at);
        let mut figure = 0.0;
        let mut users = HashSet::new();
        let mut charged = period_amount(&charge, included, 0.0);
        for cell in period_cells {
            let a = &cell.aggregate;
            figure = match aggregation {
                Aggregation::Sum => figure + a.sum,
                Aggregation::Count => figure + a.count as f64,
                // Gauges are billed on their peak in the period.
                Aggregation::Max => figure.max(a.max),
                Aggregation::Latest => figure.max(a.last_value),
                Aggregation::UniqueCount => {
                    users.insert((&cell.organization_id, &cell.user_id));
                    users.len() as f64
                }
            };
            let now = period_amount(&charge, included, figure);
            let amount = Money::from_nanos(now.nanos() - charged.nanos());
            charged = now;
            priced.push(Priced { cell, currency: currency.clone(), amount });
        }
    }
    priced
}

/// A spend series: breakdown values, currency, money per bucket and in total.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendSeries {
    pub breakdown_value: Vec<String>,
    pub currency: String,
    pub data: Vec<Money>,
    pub count: Money,
    pub other: bool,
}

/// Folds priced cells into series per breakdown value and currency, largest first; with a
/// `limit`, the rest are summed per currency into `other` series.
pub fn series(grid: &Grid, priced: &[Priced<'_>], breakdowns: &[Dimension], limit: Option<usize>) -> Vec<SpendSeries> {
    let n = grid.starts.len();
    let mut acc: BTreeMap<(Vec<String>, &str), Vec<i64>> = BTreeMap::new();
    for p in priced {
        let Some(bucket) = grid.bucket(p.cell.at) else { continue };
        let key: Vec<String> = breakdowns.iter().map(|d| d.value(p.cell).to_owned()).collect();
        acc.entry((key, p.currency.as_str())).or_insert_with(|| vec![0; n])[bucket] += p.amount.nanos();
    }
    let mut out: Vec<SpendSeries> = acc
        .into_iter()
        .map(|((breakdown_value, currency), nanos)| SpendSeries {
            breakdown_value,
            currency: currency.to_owned(),
            count: Money::from_nanos(nanos.iter().sum()),
            data: nanos.into_iter().map(Money::from_nanos).collect(),
            other: false,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.breakdown_value, &a.currency).cmp(&(&b.breakdown_value, &b.currency))));
    if let Some(limit) = limit
        && out.len() > limit
    {
        let rest = out.split_off(limit);
        let mut others: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for s in rest {
            let sums = others.entry(s.currency).or_insert_with(|| vec![0; n]);
            for (sum, v) in sums.iter_mut().zip(&s.data) {
                *sum += v.nanos();
            }
        }
        out.extend(others.into_iter().map(|(currency, nanos)| SpendSeries {
            breakdown_value: vec!["other".to_owned(); breakdowns.len()],
            currency,
            count: Money::from_nanos(nanos.iter().sum()),
            data: nanos.into_iter().map(Money::from_nanos).collect(),
            other: true,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::grid::Interval;
    use super::*;
    use crate::entities::PlanUsage;
    use crate::ids::OrganizationId;
    use crate::pricing::{Charge, Tier};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn m(s: &str) -> Money {
        Money::parse_non_negative(s).unwrap()
    }

    fn plan(id: &str, usage: &[(&str, PlanUsage)]) -> Plan {
        serde_json::from_value(serde_json::json!({"id": id, "usage": usage.iter().map(|(k, u)| (k.to_string(), serde_json::to_value(u).unwrap())).collect::<serde_json::Map<_, _>>()})).unwrap()
    }

    fn terms(included: f64, charge: Charge) -> PlanUsage {
        PlanUsage { limit: None, unit_price: None, included, charge: Some(charge) }
    }

    fn sub(id: &str, plan: &str, start: &str, end: &str, status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: id.into(),
            organization_id: OrganizationId::parse("o".to_owned()).unwrap(),
            plan_id: plan.into(),
            status,
            current_period_start: ts(start),
            current_period_end: ts(end),
            trial_end: None,
            add_ons: Default::default(),
            created_at: ts(start),
        }
    }

    fn cell(at: &str, qty: f64) -> Cell {
        super::super::build::tests::cell(at, "u", "api_call", "", qty)
    }

    #[test]
    fn monthly_periods_repeat_backwards_and_forwards() {
        let s = sub("s", "p", "2025-03-15T00:00:00Z", "2025-04-15T00:00:00Z", SubscriptionStatus::Active);
        assert_eq!(period_start(&s, ts("2025-03-20T00:00:00Z")), ts("2025-03-15T00:00:00Z"));
        assert_eq!(period_start(&s, ts("2025-03-14T23:00:00Z")), ts("2025-02-15T00:00:00Z"));
        assert_eq!(period_start(&s, ts("2025-05-01T00:00:00Z")), ts("2025-04-15T00:00:00Z"));
        let weekly = sub("w", "p", "2025-03-03T00:00:00Z", "2025-03-10T00:00:00Z", SubscriptionStatus::Active);
        assert_eq!(period_start(&weekly, ts("2025-02-26T00:00:00Z")), ts("2025-02-24T00:00:00Z"));
    }

    #[test]
    fn graduated_spend_accrues_through_the_period_and_resets_with_the_next() {
        let tiers = vec![
            Tier { up_to: Some(10.0), unit_price: m("1"), flat_fee: m("0") },
            Tier { up_to: None, unit_price: m("0.5"), flat_fee: m("0") },
        ];
        let plans = [plan("p", &[("api_call", terms(2.0, Charge::Graduated { tiers }))])];
        let subs = [sub("s", "p", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", SubscriptionStatus::Active)];
        let timeline = PlanTimeline::new(&subs, &plans);
        // 2 free, then 10 at 1.00, then 0.50: 8 billable → 8; +6 → 2 at 1 + 4 at 0.5 = 4; next month: 3 → 1.
        let cells = [cell("2025-01-05T10:00:00Z", 10.0), cell("2025-01-20T10:00:00Z", 6.0), cell("2025-02-02T10:00:00Z", 3.0)];
        let priced = price(&cells, &timeline, |_| Aggregation::Sum);
        let amounts: Vec<Money> = priced.iter().map(|p| p.amount).collect();
        assert_eq!(amounts, [m("8"), m("4"), m("1")]);
        let grid = Grid::new(Interval::Month, &ts("2025-01-01T00:00:00Z").to_zoned(TimeZone::UTC), ts("2025-03-01T00:00:00Z"), 10).unwrap();
        let s = series(&grid, &priced, &[], None);
        assert_eq!(s[0].data, [m("12"), m("1")]);
        assert_eq!((s[0].count, s[0].currency.as_str()), (m("13"), "USD"));
    }

    #[test]
    fn the_plan_in_force_prices_each_instant() {
        let plans = [
            plan("cheap", &[("api_call", terms(0.0, Charge::Standard { unit_price: m("1") }))]),
            plan("dear", &[("api_call", terms(0.0, Charge::Standard { unit_price: m("3") }))]),
        ];
        let subs = [
            sub("old", "cheap", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", SubscriptionStatus::Canceled),
            sub("new", "dear", "2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z", SubscriptionStatus::Active),
        ];
        let timeline = PlanTimeline::new(&subs, &plans);
        let cells = [cell("2024-12-31T10:00:00Z", 1.0), cell("2025-01-10T10:00:00Z", 1.0), cell("2025-02-10T10:00:00Z", 1.0)];
        let priced = price(&cells, &timeline, |_| Aggregation::Sum);
        let amounts: Vec<(Timestamp, Money)> = priced.iter().map(|p| (p.cell.at, p.amount)).collect();
        assert_eq!(amounts, [(ts("2025-01-10T10:00:00Z"), m("1")), (ts("2025-02-10T10:00:00Z"), m("3"))]);
        assert_eq!(timeline.earliest_period_start(ts("2025-02-20T00:00:00Z")), ts("2025-02-01T00:00:00Z"));
    }

    #[test]
    fn volume_tiers_can_lower_the_running_charge() {
        let tiers = vec![
            Tier { up_to: Some(10.0), unit_price: m("1"), flat_fee: m("0") },
            Tier { up_to: None, unit_price: m("0.5"), flat_fee: m("0") },
        ];
        let plans = [plan("p", &[("api_call", terms(0.0, Charge::Volume { tiers }))])];
        let subs = [sub("s", "p", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", SubscriptionStatus::Active)];
        let timeline = PlanTimeline::new(&subs, &plans);
        let cells = [cell("2025-01-05T10:00:00Z", 10.0), cell("2025-01-06T10:00:00Z", 10.0)];
        let amounts: Vec<Money> = price(&cells, &timeline, |_| Aggregation::Sum).iter().map(|p| p.amount).collect();
        // 10 → 10.00; 20 → 10.00 in all: the second cell adds nothing.
        assert_eq!(amounts, [m("10"), m("0")]);
    }
}
