//! The next invoice of a seat-priced subscription: the renewal at the end of the current period,
//! and prorated charges for licenses added during it. Amounts are exact: prorations are computed
//! in integer nano-units and rounded half up to the cent, per line.

use super::ledger::{LedgerEntry, Periods};
use crate::entities::SeatPricing;
use crate::money::Money;
use jiff::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceLine {
    /// `renewal` or `proration`.
    pub kind: &'static str,
    pub description: String,
    pub quantity: u64,
    pub unit_price: Money,
    /// The part of the period charged: `1` for a renewal.
    pub fraction: String,
    pub amount: Money,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoicePreview {
    pub invoice_date: Timestamp,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub licenses: u64,
    pub licenses_at_next_renewal: u64,
    pub lines: Vec<InvoiceLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("the plan has no seat price (`seats.price_per_seat_monthly` or `seats.price_per_seat_annual`)")]
    NoSeatPrice,
    #[error("the license ledger has no row yet: run the ledger job (`tally jobs run ledger`)")]
    EmptyLedger,
    #[error("an amount is out of range")]
    Overflow,
}

const NANOS_PER_CENT: i128 = 10_000_000;

/// The price of one seat for one period of `months` months.
pub fn seat_price(pricing: &SeatPricing, months: i32) -> Result<Money, InvoiceError> {
    let months = i64::from(months);
    let nanos = match (pricing.price_per_seat_monthly, pricing.price_per_seat_annual) {
        (_, Some(annual)) if months % 12 == 0 => annual.nanos().checked_mul(months / 12),
        (Some(monthly), _) => monthly.nanos().checked_mul(months),
        (None, Some(annual)) => annual.nanos().checked_mul(months).map(|n| n / 12),
        (None, None) => return Err(InvoiceError::NoSeatPrice),
    };
    nanos.map(Money::from_nanos).ok_or(InvoiceError::Overflow)
}

/// Seats paid for at `licenses`: nothing at or under the free allowance, every seat above it.
fn paid(pricing: &SeatPricing, licenses: u64) -> u64 {
    if licenses <= u64::from(pricing.free_seats) { 0 } else { licenses }
}

fn times(price: Money, quantity: u64) -> Result<Money, InvoiceError> {
    i64::try_from(quantity).ok().and_then(|q| price.nanos().checked_mul(q)).map(Money::from_nanos).ok_or(InvoiceError::Overflow)
}

/// `ledger` is the licensee's ledger in writing order (at least the rows of the current period
/// and the one before them); `now` picks the current period.
pub fn preview(pricing: &SeatPricing, periods: &Periods, ledger: &[LedgerEntry], now: Timestamp) -> Result<InvoicePreview, InvoiceError> {
    let last = ledger.last().ok_or(InvoiceError::EmptyLedger)?;
    let (start, end) = periods.containing(now.max(last.event_time));
    let price = seat_price(pricing, periods.months())?;
    let (_, next_end) = periods.containing(end);
    let renewal_seats = paid(pricing, last.licenses_at_next_renewal);
    let mut lines = vec![InvoiceLine {
        kind: "renewal",
        description: format!("{} licenses for {} to {}", last.licenses_at_next_renewal, end, next_end),
        quantity: renewal_seats,
        unit_price: price,
        fraction: "1".into(),
        amount: times(price, renewal_seats)?,
        period_start: end,
        period_end: next_end,
    }];
    let period_us = i128::from((end.as_microsecond() - start.as_microsecond()).max(1));
    let mut before: Option<u64> = None;
    for row in ledger {
        if row.event_time < start {
            before = Some(row.licenses);
            continue;
        }
        if row.event_time >= end {
            break;
        }
        let previous = match (row.is_renewal, before) {
            (true, _) | (false, None) => row.licenses,
            (false, Some(b)) => b,
        };
        before = Some(row.licenses);
        let added = paid(pricing, row.licenses).saturating_sub(paid(pricing, previous));
        if added == 0 {
            continue;
        }
        let remaining_us = i128::from(end.as_microsecond() - row.event_time.as_microsecond());
        let exact = i128::from(price.nanos()) * i128::from(added) * remaining_us;
        let cents = (exact + period_us * NANOS_PER_CENT / 2) / (period_us * NANOS_PER_CENT);
        let amount = i64::try_from(cents * NANOS_PER_CENT).map(Money::from_nanos).map_err(|_| InvoiceError::Overflow)?;
        lines.push(InvoiceLine {
            kind: "proration",
            description: format!("{added} licenses added {} for the rest of the period", row.event_time),
            quantity: added,
            unit_price: price,
            fraction: fraction(remaining_us, period_us),
            amount,
            period_start: row.event_time,
            period_end: end,
        });
    }
    let total = lines.iter().try_fold(Money::ZERO, |sum, l| sum.checked_add(l.amount)).ok_or(InvoiceError::Overflow)?;
    Ok(InvoicePreview {
        invoice_date: end,
        period_start: start,
        period_end: end,
        licenses: last.licenses,
        licenses_at_next_renewal: last.licenses_at_next_renewal,
        lines,
        total,
    })
}

/// `num / den` as a decimal with six places, for people reading the invoice.
fn fraction(num: i128, den: i128) -> String {
    let millionths = (num * 1_000_000 + den / 2) / den;
    format!("{}.{:06}", millionths / 1_000_000, millionths % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{Subscription, SubscriptionStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn periods() -> Periods {
        Periods::of(&Subscription {
            id: "s".into(),
            organization_id: crate::OrganizationId::parse("o").unwrap(),
            plan_id: "p".into(),
            status: SubscriptionStatus::Active,
            current_period_start: ts("2026-04-01T00:00:00Z"),
            current_period_end: ts("2026-05-01T00:00:00Z"),
            trial_end: None,
            add_ons: Default::default(),
            created_at: ts("2026-04-01T00:00:00Z"),
        })
    }

    fn row(at: &str, licenses: u64, next: u64, renewal: bool) -> LedgerEntry {
        LedgerEntry {
            organization_id: "o".into(),
            seq: 0,
            event_time: ts(at),
            licenses,
            licenses_at_next_renewal: next,
            is_renewal: renewal,
            audit_organization_id: String::new(),
            audit_id: String::new(),
        }
    }

    fn pricing(free: u32) -> SeatPricing {
        SeatPricing { free_seats: free, price_per_seat_monthly: Some(Money::parse_non_negative("8").unwrap()), ..Default::default() }
    }

    #[test]
    fn renewal_and_prorated_additions() {
        // April has 30 days: 2 seats added on the 16th pay 15/30 of a month.
        let ledger = [
            row("2026-04-01T00:00:00Z", 12, 12, true),
            row("2026-04-16T00:00:00Z", 14, 14, false),
            row("2026-04-20T00:00:00Z", 14, 13, false),
        ];
        let p = preview(&pricing(10), &periods(), &ledger, ts("2026-04-25T00:00:00Z")).unwrap();
        assert_eq!(p.invoice_date, ts("2026-05-01T00:00:00Z"));
        assert_eq!(p.lines.len(), 2);
        assert_eq!((p.lines[0].quantity, p.lines[0].amount.to_string().as_str()), (13, "104"));
        assert_eq!((p.lines[1].quantity, p.lines[1].fraction.as_str(), p.lines[1].amount.to_string().as_str()), (2, "0.500000", "8"));
        assert_eq!(p.total.to_string(), "112");
    }

    #[test]
    fn free_seats_cost_nothing_until_crossed() {
        let ledger = [row("2026-04-01T00:00:00Z", 8, 8, true), row("2026-04-11T00:00:00Z", 11, 11, false)];
        let p = preview(&pricing(10), &periods(), &ledger, ts("2026-04-12T00:00:00Z")).unwrap();
        // Crossing the allowance: all 11 seats are paid from then on (20 of 30 days).
        assert_eq!((p.lines[1].quantity, p.lines[1].amount.to_string().as_str()), (11, "58.67"));
        let under = [row("2026-04-01T00:00:00Z", 8, 9, true)];
        let p = preview(&pricing(10), &periods(), &under, ts("2026-04-12T00:00:00Z")).unwrap();
        assert_eq!(p.total, Money::ZERO);
    }

    #[test]
    fn prices_per_period_length() {
        let annual = SeatPricing { price_per_seat_annual: Some(Money::parse_non_negative("80").unwrap()), ..Default::default() };
        assert_eq!(seat_price(&annual, 12).unwrap().to_string(), "80");
        assert_eq!(seat_price(&annual, 3).unwrap().to_string(), "20");
        assert_eq!(seat_price(&pricing(0), 12).unwrap().to_string(), "96");
        assert_eq!(seat_price(&SeatPricing::default(), 1), Err(InvoiceError::NoSeatPrice));
        assert_eq!(preview(&pricing(0), &periods(), &[], ts("2026-04-12T00:00:00Z")), Err(InvoiceError::EmptyLedger));
    }
}
