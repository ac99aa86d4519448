//! The billing period a user's "current period" figures cover, and balances against plan limits.
//! The report's SQL (in the store) computes the same figures for filtering and ordering; the
//! tests there check that both agree.

use crate::entities::{Plan, Subscription, SubscriptionStatus};
use crate::time::{date_start, month_start, next_month_start};
use jiff::Timestamp;
use serde::Serialize;

/// The subscription that bills an organization now: the live one (trialing, active or with a
/// payment issue) with the latest period start, ties broken by id.
pub fn billing_subscription(subscriptions: &[Subscription]) -> Option<&Subscription> {
    subscriptions
        .iter()
        .filter(|s| s.status != SubscriptionStatus::Canceled)
        .max_by(|a, b| a.current_period_start.cmp(&b.current_period_start).then_with(|| b.id.cmp(&a.id)))
}

/// That subscription's current period, else the calendar month in UTC holding `now`.
pub fn billing_period(subscription: Option<&Subscription>, now: Timestamp) -> (Timestamp, Timestamp) {
    match subscription {
        Some(s) => (s.current_period_start, s.current_period_end),
        None => (date_start(month_start(now)), next_month_start(now)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Balance {
    /// The plan limit plus add-ons; `None` is unlimited.
    pub effective_limit: Option<f64>,
    /// What is left: limit minus usage (negative when over); `None` when unlimited.
    pub balance_value: Option<f64>,
    /// Usage as a percentage of the limit: 0 when unlimited, 100 for any usage of a zero limit.
    pub balance_percent: f64,
    /// Usage above the limit; reaching it exactly is not exceeding it.
    pub exceeded: bool,
}

impl Balance {
    pub fn of(effective_limit: Option<f64>, used: f64) -> Balance {
        match effective_limit {
            None => Balance { effective_limit: None, balance_value: None, balance_percent: 0.0, exceeded: false },
            Some(limit) => Balance {
                effective_limit: Some(limit),
                balance_value: Some(limit - used),
                balance_percent: if limit == 0.0 { if used > 0.0 { 100.0 } else { 0.0 } } else { used * 100.0 / limit },
                exceeded: used > limit,
            },
        }
    }

    /// What counts against a limit: a counter's total over the period (sum), the period's peak
    /// for a `max` type, and for a gauge (`latest`: storage in use) its latest value, not the
    /// sum of its samples.
    pub fn used(aggregation: crate::Aggregation, period_sum: f64, period_max: f64, latest: f64) -> f64 {
        match aggregation {
            crate::Aggregation::Latest => latest,
            crate::Aggregation::Max => period_max,
            crate::Aggregation::Sum | crate::Aggregation::Count | crate::Aggregation::UniqueCount => period_sum,
        }
    }

    /// The limit a plan and a subscription's add-ons give a usage type; `None` if the plan does
    /// not limit it.
    pub fn limit(plan: Option<&Plan>, subscription: Option<&Subscription>, usage_type: &str) -> Option<f64> {
        let limit = plan?.usage.get(usage_type)?.limit?;
        let add_on = subscription.and_then(|s| s.add_ons.get(usage_type)).copied().unwrap_or(0.0);
        Some(limit + add_on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrganizationId;

    fn sub(id: &str, status: SubscriptionStatus, start: &str, end: &str) -> Subscription {
        Subscription {
            id: id.into(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            plan_id: "basic".into(),
            status,
            current_period_start: start.parse().unwrap(),
            current_period_end: end.parse().unwrap(),
            trial_end: None,
            add_ons: [("submission".to_owned(), 50.0)].into(),
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_latest_live_subscription_bills() {
        let subs = [
            sub("a", SubscriptionStatus::Active, "2025-01-15T00:00:00Z", "2025-02-15T00:00:00Z"),
            sub("b", SubscriptionStatus::Canceled, "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z"),
            sub("c", SubscriptionStatus::Trialing, "2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"),
        ];
        assert_eq!(billing_subscription(&subs).map(|s| s.id.as_str()), Some("c"));
        let now = "2025-05-20T12:00:00Z".parse().unwrap();
        assert_eq!(billing_period(None, now), ("2025-05-01T00:00:00Z".parse().unwrap(), "2025-06-01T00:00:00Z".parse().unwrap()));
        assert_eq!(billing_period(billing_subscription(&subs), now).0, "2025-02-01T00:00:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn gauges_count_their_latest_value() {
        use crate::Aggregation;
        assert_eq!(Balance::used(Aggregation::Sum, 30.0, 20.0, 5.0), 30.0);
        assert_eq!(Balance::used(Aggregation::Max, 30.0, 20.0, 5.0), 20.0);
        assert_eq!(Balance::used(Aggregation::Latest, 30.0, 20.0, 5.0), 5.0);
    }

    #[test]
    fn balances_against_limits() {
        assert_eq!(Balance::of(None, 10.0), Balance { effective_limit: None, balance_value: None, balance_percent: 0.0, exceeded: false });
        let at_limit = Balance::of(Some(100.0), 100.0);
        assert_eq!((at_limit.balance_value, at_limit.balance_percent, at_limit.exceeded), (Some(0.0), 100.0, false));
        let over = Balance::of(Some(100.0), 150.0);
        assert_eq!((over.balance_value, over.exceeded), (Some(-50.0), true));
        assert_eq!(Balance::of(Some(0.0), 1.0).balance_percent, 100.0);
        let s = sub("a", SubscriptionStatus::Active, "2025-01-15T00:00:00Z", "2025-02-15T00:00:00Z");
        let plan: Plan =
            serde_json::from_value(serde_json::json!({"id": "basic", "usage": {"submission": {"limit": 1000}, "api_call": {}}})).unwrap();
        assert_eq!(Balance::limit(Some(&plan), Some(&s), "submission"), Some(1050.0));
        assert_eq!(Balance::limit(Some(&plan), Some(&s), "api_call"), None);
        assert_eq!(Balance::limit(None, Some(&s), "submission"), None);
    }
}
