//! The license ledger: an append-only record of licensed seats. Inside a billing period
//! `licenses` never goes down (a seat once used is paid for the period); `licenses_at_next_renewal`
//! follows the seat count, never below the plan minimum; each period starts with a renewal row
//! that resets `licenses` to it. A row is written only when one of the numbers changes, and names
//! what caused it (an audit event, or the renewal), so the same cause can never write twice.

use crate::entities::Subscription;
use jiff::{Span, Timestamp, ToSpan, tz::TimeZone};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub organization_id: String,
    /// Order of writing within the organization, from 1.
    pub seq: i64,
    pub event_time: Timestamp,
    pub licenses: u64,
    pub licenses_at_next_renewal: u64,
    pub is_renewal: bool,
    /// The organization of the audit event that caused the row (a server's ledger follows its
    /// realms' events); empty for renewals.
    pub audit_organization_id: String,
    /// The audit event that caused the row, or `renewal:<period start>`.
    pub audit_id: String,
}

/// Billing periods: the subscription's current period, and periods of the same number of
/// calendar months (UTC) before and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    anchor: Timestamp,
    months: i32,
}

impl Periods {
    pub fn of(subscription: &Subscription) -> Self {
        let (start, end) = (subscription.current_period_start, subscription.current_period_end);
        let start_z = start.to_zoned(TimeZone::UTC);
        // The whole calendar months the period spans (at least one).
        let mut months = 1;
        while months < 120 && start_z.checked_add((months + 1).months()).is_ok_and(|z| z.timestamp() <= end) {
            months += 1;
        }
        Periods { anchor: start, months }
    }

    pub fn months(&self) -> i32 {
        self.months
    }

    fn nth_start(&self, n: i64) -> Option<Timestamp> {
        let span = Span::new().try_months(n * i64::from(self.months)).ok()?;
        self.anchor.to_zoned(TimeZone::UTC).checked_add(span).ok().map(|z| z.timestamp())
    }

    /// `[start, end)` of the period that holds `t`.
    pub fn containing(&self, t: Timestamp) -> (Timestamp, Timestamp) {
        // Periods are at least 28 days: estimate the index, then step to the right one.
        let approx = (t.as_second() - self.anchor.as_second()).div_euclid(28 * 86_400 * i64::from(self.months));
        let mut n = approx + 1;
        while self.nth_start(n).is_some_and(|s| s > t) {
            n -= 1;
        }
        let start = self.nth_start(n).unwrap_or(self.anchor);
        let end = self.nth_start(n + 1).unwrap_or(Timestamp::MAX);
        (start, end)
    }

    /// The first period's start: the ledger begins there.
    pub fn first_start(&self) -> Timestamp {
        self.anchor
    }
}

/// What a licensee's plan says about licenses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub periods: Periods,
    pub minimum_licenses: u64,
}

/// An audit event as the ledger sees it: when, what caused it, and the seat count at its time
/// and at the latest time the ledger knows (`max(its time, the ledger's last row)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatChange {
    pub event_time: Timestamp,
    pub audit_organization_id: String,
    pub audit_id: String,
    pub seats_then: u64,
    pub seats_latest: u64,
}

/// Walks one licensee's ledger forward over `changes` (in time order) and then up to `until`,
/// returning the rows to append after `last`. `initial_seats` is the seat count at the first
/// period's start, used only when the ledger is empty.
pub fn advance(
    organization_id: &str,
    terms: &Terms,
    last: Option<&LedgerEntry>,
    initial_seats: u64,
    changes: &[SeatChange],
    until: Timestamp,
) -> Vec<LedgerEntry> {
    let floor = |seats: u64| seats.max(terms.minimum_licenses);
    let mut out: Vec<LedgerEntry> = Vec::new();
    let mut state = last.cloned();
    // The latest moment the walk has reached: renewals are written up to it.
    let renew_until = |state: &mut Option<LedgerEntry>, out: &mut Vec<LedgerEntry>, t: Timestamp| loop {
        let (at, licenses) = match state {
            None if terms.periods.first_start() <= t => (terms.periods.first_start(), floor(initial_seats)),
            None => return,
            Some(s) => {
                let (_, end) = terms.periods.containing(s.event_time);
                if end > t {
                    return;
                }
                (end, s.licenses_at_next_renewal)
            }
        };
        let row = LedgerEntry {
            organization_id: organization_id.to_owned(),
            seq: state.as_ref().map_or(0, |s| s.seq) + 1,
            event_time: at,
            licenses,
            licenses_at_next_renewal: licenses,
            is_renewal: true,
            audit_organization_id: String::new(),
            audit_id: format!("renewal:{at}"),
        };
        out.push(row.clone());
        *state = Some(row);
    };
    for change in changes {
        renew_until(&mut state, &mut out, change.event_time);
        let Some(current) = &state else { continue }; // before the first period: nothing to license
        // Seats used at the change and at the ledger's latest moment must be licensed; a change
        // that arrives after a later period began cannot raise an earlier period's licenses.
        let (period_start, _) = terms.periods.containing(current.event_time);
        let mut licenses = current.licenses.max(floor(change.seats_latest));
        if change.event_time >= period_start {
            licenses = licenses.max(floor(change.seats_then));
        }
        let next = floor(change.seats_latest);
        if (licenses, next) == (current.licenses, current.licenses_at_next_renewal) {
            continue;
        }
        let row = LedgerEntry {
            organization_id: organization_id.to_owned(),
            seq: current.seq + 1,
            // The ledger's clock never runs backwards: a late change is booked when it is learned.
            event_time: change.event_time.max(current.event_time),
            licenses,
            licenses_at_next_renewal: next,
            is_renewal: false,
            audit_organization_id: change.audit_organization_id.clone(),
            audit_id: change.audit_id.clone(),
        };
        out.push(row.clone());
        state = Some(row);
    }
    renew_until(&mut state, &mut out, until);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::SubscriptionStatus;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn subscription(start: &str, end: &str) -> Subscription {
        Subscription {
            id: "s".into(),
            organization_id: crate::OrganizationId::parse("o").unwrap(),
            plan_id: "p".into(),
            status: SubscriptionStatus::Active,
            current_period_start: ts(start),
            current_period_end: ts(end),
            trial_end: None,
            add_ons: Default::default(),
            created_at: ts(start),
        }
    }

    fn change(at: &str, id: &str, then: u64, latest: u64) -> SeatChange {
        SeatChange { event_time: ts(at), audit_organization_id: "o".into(), audit_id: id.into(), seats_then: then, seats_latest: latest }
    }

    #[test]
    fn periods_step_by_calendar_months() {
        let monthly = Periods::of(&subscription("2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"));
        assert_eq!(monthly.months(), 1);
        assert_eq!(monthly.containing(ts("2026-03-15T00:00:00Z")), (ts("2026-02-28T00:00:00Z"), ts("2026-03-31T00:00:00Z")));
        let annual = Periods::of(&subscription("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"));
        assert_eq!(annual.months(), 12);
        assert_eq!(annual.containing(ts("2028-06-01T00:00:00Z")), (ts("2028-01-01T00:00:00Z"), ts("2029-01-01T00:00:00Z")));
        assert_eq!(annual.containing(ts("2025-06-01T00:00:00Z")), (ts("2025-01-01T00:00:00Z"), ts("2026-01-01T00:00:00Z")));
        assert_eq!(monthly.containing(ts("2026-01-31T00:00:00Z")).0, ts("2026-01-31T00:00:00Z"));
    }

    fn terms() -> Terms {
        Terms { periods: Periods::of(&subscription("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")), minimum_licenses: 6 }
    }

    #[test]
    fn licenses_only_grow_inside_a_period_and_renewals_reset_them() {
        let changes = [
            change("2026-01-05T00:00:00Z", "a1", 8, 8),
            change("2026-01-06T00:00:00Z", "a2", 8, 8), // nothing changes: no row
            change("2026-01-10T00:00:00Z", "a3", 5, 5), // below the minimum
            change("2026-02-03T00:00:00Z", "a4", 7, 7),
        ];
        let rows = advance("o", &terms(), None, 3, &changes, ts("2026-03-02T00:00:00Z"));
        let summary: Vec<(&str, u64, u64, bool)> =
            rows.iter().map(|r| (r.audit_id.as_str(), r.licenses, r.licenses_at_next_renewal, r.is_renewal)).collect();
        assert_eq!(
            summary,
            [
                ("renewal:2026-01-01T00:00:00Z", 6, 6, true),
                ("a1", 8, 8, false),
                ("a3", 8, 6, false),
                ("renewal:2026-02-01T00:00:00Z", 6, 6, true),
                ("a4", 7, 7, false),
                ("renewal:2026-03-01T00:00:00Z", 7, 7, true),
            ]
        );
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn continuing_from_the_last_row_writes_nothing_twice() {
        let first = advance("o", &terms(), None, 7, &[change("2026-01-05T00:00:00Z", "a1", 9, 9)], ts("2026-01-20T00:00:00Z"));
        let again = advance("o", &terms(), first.last(), 7, &[], ts("2026-01-20T00:00:00Z"));
        assert!(again.is_empty());
        // A late change for an earlier period cannot raise that period's licenses, only those in use now.
        let renewed = advance("o", &terms(), first.last(), 7, &[], ts("2026-02-02T00:00:00Z"));
        assert_eq!(renewed.len(), 1);
        let late = advance("o", &terms(), renewed.last(), 7, &[change("2026-01-20T00:00:00Z", "late", 12, 10)], ts("2026-02-02T00:00:00Z"));
        assert_eq!((late[0].licenses, late[0].licenses_at_next_renewal), (10, 10));
        assert_eq!(late[0].event_time, ts("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn changes_before_the_first_period_write_nothing() {
        let rows = advance("o", &terms(), None, 2, &[change("2025-12-20T00:00:00Z", "early", 9, 9)], ts("2025-12-31T00:00:00Z"));
        assert!(rows.is_empty());
    }
}
