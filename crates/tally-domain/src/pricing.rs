//! Charge models: what a period's usage of one usage type costs under a plan. Prices are exact
//! (`Money`, nano-units); quantities may be fractional (seconds of audio), so products go through
//! `Decimal` and round half-even to the nano-unit once.

use crate::money::Money;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};

/// One tier: units up to `up_to` (cumulative, inclusive; `None` = no upper bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub up_to: Option<f64>,
    pub unit_price: Money,
    /// Charged once when usage enters the tier.
    #[serde(default)]
    pub flat_fee: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum Charge {
    /// Every unit at one price.
    Standard { unit_price: Money },
    /// Each unit at the price of the tier it falls in.
    Graduated { tiers: Vec<Tier> },
    /// All units at the price of the tier the total reaches.
    Volume { tiers: Vec<Tier> },
    /// A price per started package of `package_size` units, after `free_units`.
    Package {
        package_size: f64,
        price: Money,
        #[serde(default)]
        free_units: f64,
    },
}

fn decimal(x: f64) -> Decimal {
    Decimal::from_f64(x).unwrap_or(Decimal::MAX)
}

fn times(units: f64, price: Money) -> Decimal {
    decimal(units) * price.to_decimal()
}

impl Charge {
    /// Whether the terms make sense: tiers ascending and ending unbounded, packages non-empty.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Charge::Standard { .. } => Ok(()),
            Charge::Graduated { tiers } | Charge::Volume { tiers } => {
                let Some(last) = tiers.last() else { return Err("`tiers` must not be empty".to_owned()) };
                if last.up_to.is_some() {
                    return Err("the last tier must have `up_to: null` (no upper bound)".to_owned());
                }
                let bounds: Vec<f64> = tiers.iter().filter_map(|t| t.up_to).collect();
                if bounds.len() != tiers.len() - 1 {
                    return Err("only the last tier may have `up_to: null`".to_owned());
                }
                if bounds.windows(2).any(|w| w[1] <= w[0]) || bounds.first().is_some_and(|b| *b <= 0.0 || !b.is_finite()) {
                    return Err("tier `up_to` bounds must be positive and strictly increasing".to_owned());
                }
                Ok(())
            }
            Charge::Package { package_size, free_units, .. } => {
                if !(package_size.is_finite() && *package_size > 0.0) {
                    return Err("`package_size` must be positive".to_owned());
                }
                if !(free_units.is_finite() && *free_units >= 0.0) {
                    return Err("`free_units` must not be negative".to_owned());
                }
                Ok(())
            }
        }
    }

    /// The charge for `units` billable units in one period.
    pub fn amount(&self, units: f64) -> Money {
        let units = units.max(0.0);
        let total = match self {
            Charge::Standard { unit_price } => times(units, *unit_price),
            Charge::Graduated { tiers } => {
                let mut total = Decimal::ZERO;
                let mut floor = 0.0;
                for tier in tiers {
                    if units <= floor {
                        break;
                    }
                    let ceiling = tier.up_to.unwrap_or(f64::INFINITY);
                    total += times(units.min(ceiling) - floor, tier.unit_price) + tier.flat_fee.to_decimal();
                    floor = ceiling;
                }
                total
            }
            Charge::Volume { tiers } => {
                if units == 0.0 {
                    Decimal::ZERO
                } else {
                    let tier = tiers.iter().find(|t| t.up_to.is_none_or(|up| units <= up)).or(tiers.last());
                    tier.map_or(Decimal::ZERO, |t| times(units, t.unit_price) + t.flat_fee.to_decimal())
                }
            }
            Charge::Package { package_size, price, free_units } => {
                let billable = (units - free_units).max(0.0);
                let packages = (decimal(billable) / decimal(*package_size)).ceil();
                packages * price.to_decimal()
            }
        };
        Money::from_decimal(total.round_dp(9)).unwrap_or(Money::from_nanos(i64::MAX))
    }
}

/// A plan's charge for a usage type with its allowance: the first `included` units of each
/// period are free, the rest priced by `charge`.
pub fn period_amount(charge: &Charge, included: f64, units: f64) -> Money {
    charge.amount(units - included)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse_non_negative(s).unwrap()
    }

    fn tiers() -> Vec<Tier> {
        vec![
            Tier { up_to: Some(100.0), unit_price: m("0.10"), flat_fee: m("0") },
            Tier { up_to: Some(1000.0), unit_price: m("0.05"), flat_fee: m("1") },
            Tier { up_to: None, unit_price: m("0.01"), flat_fee: m("0") },
        ]
    }

    #[test]
    fn standard_is_units_times_price_exactly() {
        let c = Charge::Standard { unit_price: m("0.000001") };
        assert_eq!(c.amount(3_000_000.0), m("3"));
        assert_eq!(c.amount(1.5), m("0.0000015"));
        assert_eq!(period_amount(&c, 1_000_000.0, 3_000_000.0), m("2"));
        assert_eq!(period_amount(&c, 1_000_000.0, 10.0), m("0"));
    }

    #[test]
    fn graduated_prices_each_unit_by_its_tier() {
        let c = Charge::Graduated { tiers: tiers() };
        assert_eq!(c.amount(0.0), m("0"));
        assert_eq!(c.amount(50.0), m("5"));
        assert_eq!(c.amount(100.0), m("10"));
        // 100 × 0.10 + 1 (entering tier 2) + 50 × 0.05
        assert_eq!(c.amount(150.0), m("13.5"));
        // 10 + 1 + 900 × 0.05 + 500 × 0.01
        assert_eq!(c.amount(1500.0), m("61"));
    }

    #[test]
    fn volume_prices_every_unit_at_the_reached_tier() {
        let c = Charge::Volume { tiers: tiers() };
        assert_eq!(c.amount(0.0), m("0"));
        assert_eq!(c.amount(100.0), m("10"));
        assert_eq!(c.amount(150.0), m("8.5"));
        assert_eq!(c.amount(1500.0), m("15"));
    }

    #[test]
    fn packages_are_charged_when_started() {
        let c = Charge::Package { package_size: 1000.0, price: m("2.50"), free_units: 500.0 };
        assert_eq!(c.amount(500.0), m("0"));
        assert_eq!(c.amount(501.0), m("2.5"));
        assert_eq!(c.amount(1500.0), m("2.5"));
        assert_eq!(c.amount(1501.0), m("5"));
    }

    #[test]
    fn nonsense_terms_are_refused() {
        let bad_tiers = |tiers| Charge::Graduated { tiers }.check().is_err();
        assert!(bad_tiers(vec![]));
        assert!(bad_tiers(vec![Tier { up_to: Some(5.0), unit_price: m("1"), flat_fee: m("0") }]));
        let mut t = tiers();
        t.swap(0, 1);
        assert!(bad_tiers(t));
        assert!(Charge::Package { package_size: 0.0, price: m("1"), free_units: 0.0 }.check().is_err());
        assert!(Charge::Graduated { tiers: tiers() }.check().is_ok());
        let parsed: Charge = serde_json::from_str(r#"{"model":"package","package_size":100,"price":"1.5"}"#).unwrap();
        assert_eq!(parsed, Charge::Package { package_size: 100.0, price: m("1.5"), free_units: 0.0 });
        assert!(serde_json::from_str::<Charge>(r#"{"model":"magic"}"#).is_err());
    }
}
