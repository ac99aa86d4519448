//! Billing periods and the per-user figures kept for them (`user_usage_period`).
//!
//! An organization's billing period is the current period of its latest live subscription
//! (trialing, active or payment issue), else the calendar month in UTC (see
//! `tally_domain::report::balance`). `billing_periods` records the period that the organization's
//! `user_usage_period` rows cover, and those rows always equal its hourly cells whose hour falls
//! in it: ingestion adds each batch's cells inside the recorded period, and a refresh refills an
//! organization whose period changed (a subscription saved, a calendar month begun) from its
//! hourly cells, under a lock that keeps ingestion out meanwhile. Readers use the rows only where
//! the recorded period is the one they expect, and sum hourly cells elsewhere, so a period that
//! has not been refreshed yet is slower to read, never wrong.

use crate::sql::{CELL_COLUMNS, Dialect};

/// Every organization's expected billing period, with the plan and add-ons of the subscription
/// that sets it, and its name: `organization_id, period_start, period_end, plan_id, add_ons,
/// organization_name`. `month_start` and `month_end` are the placeholders of the calendar month
/// that applies without a subscription.
pub(crate) fn expected(month_start: &str, month_end: &str) -> String {
    format!(
        "SELECT o2.organization_id, COALESCE(sub.current_period_start, {month_start}) AS period_start, \
                COALESCE(sub.current_period_end, {month_end}) AS period_end, sub.plan_id, sub.add_ons, \
                o2.name AS organization_name \
         FROM organizations o2 LEFT JOIN \
           (SELECT organization_id, current_period_start, current_period_end, plan_id, add_ons, \
                   row_number() OVER (PARTITION BY organization_id ORDER BY current_period_start DESC, subscription_id) AS n \
            FROM subscriptions WHERE status IN ('trialing', 'active', 'payment_issue')) sub \
           ON sub.organization_id = o2.organization_id AND sub.n = 1"
    )
}

/// The organizations whose recorded period is missing or not the expected one, with the
/// expected period. Parameters: the calendar month's start and end, and an organization to
/// limit the search to (NULL: all).
pub(crate) fn stale(dialect: Dialect) -> String {
    let (start, end, org) = match dialect {
        Dialect::Sqlite => ("?1", "?2", "?3"),
        // Typed, as PostgreSQL cannot infer them from `COALESCE` and `IS NULL`.
        Dialect::Postgres => ("$1::timestamptz", "$2::timestamptz", "$3::text"),
    };
    format!(
        "SELECT e.organization_id, e.period_start, e.period_end FROM ({}) e \
         LEFT JOIN billing_periods bp ON bp.organization_id = e.organization_id \
         WHERE ({org} IS NULL OR e.organization_id = {org}) \
         AND (bp.organization_id IS NULL OR bp.period_start <> e.period_start OR bp.period_end <> e.period_end) \
         ORDER BY e.organization_id",
        expected(start, end)
    )
}

/// An organization's hourly cells inside a period, to refill its period figures from:
/// `user_id, usage_type, hour`, then the aggregate columns. Parameters: organization, start, end.
pub(crate) fn hourly_cells(dialect: Dialect) -> String {
    let [org, start, end] = [1, 2, 3].map(|n| dialect.mark(n));
    format!(
        "SELECT user_id, usage_type, hour, {CELL_COLUMNS} FROM usage_hourly \
         WHERE organization_id = {org} AND hour >= {start} AND hour < {end}"
    )
}

/// Records an organization's period (placeholders: organization, start, end).
pub(crate) fn record(dialect: Dialect) -> String {
    let [org, start, end] = [1, 2, 3].map(|n| dialect.mark(n));
    format!(
        "INSERT INTO billing_periods (organization_id, period_start, period_end) VALUES ({org}, {start}, {end}) \
         ON CONFLICT (organization_id) DO UPDATE SET period_start = excluded.period_start, period_end = excluded.period_end"
    )
}

/// The calendar month holding `now`: the period of an organization without a subscription, as
/// ingestion records it for an organization it registers.
pub(crate) fn calendar_month(now: jiff::Timestamp) -> (jiff::Timestamp, jiff::Timestamp) {
    tally_domain::report::balance::billing_period(None, now)
}
