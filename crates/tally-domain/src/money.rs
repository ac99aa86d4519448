//! Exact money. Amounts are integer nano-units (10⁻⁹ of the currency unit): exact, summable in SQL
//! on both backends, and fine enough for per-token LLM prices.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub const SCALE: u32 = 9;
const NANOS_PER_UNIT: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is not a decimal number")]
    NotANumber,
    #[error("has more than {SCALE} decimal places")]
    TooPrecise,
    #[error("is out of range")]
    OutOfRange,
    #[error("must not be negative")]
    Negative,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_nanos(nanos: i64) -> Self {
        Money(nanos)
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn from_decimal(value: Decimal) -> Result<Self, MoneyError> {
        let normalized = value.normalize();
        if normalized.scale() > SCALE {
            return Err(MoneyError::TooPrecise);
        }
        let nanos = normalized.checked_mul(Decimal::from(NANOS_PER_UNIT)).ok_or(MoneyError::OutOfRange)?;
        i64::try_from(nanos).map(Money).map_err(|_| MoneyError::OutOfRange)
    }

    /// Parses a non-negative amount such as `"0.0042"` or the text of a JSON number.
    pub fn parse_non_negative(text: &str) -> Result<Self, MoneyError> {
        let value = Decimal::from_str(text).or_else(|_| Decimal::from_scientific(text)).map_err(|_| MoneyError::NotANumber)?;
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative);
        }
        Self::from_decimal(value)
    }

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, SCALE).normalize()
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}

crate::schema_from!(
    Money,
    crate::schema::string(
        "An exact amount of money as a decimal string (up to 9 decimal places); requests may also give a JSON number",
        Some(r"^-?[0-9]+(\.[0-9]{1,9})?$"),
        None
    )
);

/// Money travels as a decimal string so no JSON parser rounds it.
impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(serde::de::Error::custom("expected a decimal number or string")),
        };
        Money::parse_non_negative(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(Money::parse_non_negative("0.1").unwrap().nanos(), 100_000_000);
        assert_eq!(Money::parse_non_negative("0.000000001").unwrap().nanos(), 1);
        assert_eq!(Money::parse_non_negative("12").unwrap().nanos(), 12_000_000_000);
        assert_eq!(Money::parse_non_negative("1.50000000000").unwrap().nanos(), 1_500_000_000);
        assert_eq!(Money::parse_non_negative("1e-3").unwrap().nanos(), 1_000_000);
    }

    #[test]
    fn rejects_what_it_cannot_hold() {
        assert_eq!(Money::parse_non_negative("0.0000000001"), Err(MoneyError::TooPrecise));
        assert_eq!(Money::parse_non_negative("-1"), Err(MoneyError::Negative));
        assert_eq!(Money::parse_non_negative("abc"), Err(MoneyError::NotANumber));
        assert_eq!(Money::parse_non_negative("99999999999999"), Err(MoneyError::OutOfRange));
    }

    #[test]
    fn sums_of_tenths_stay_exact() {
        let tenth = Money::parse_non_negative("0.1").unwrap();
        let mut sum = Money::ZERO;
        for _ in 0..10 {
            sum = sum.checked_add(tenth).unwrap();
        }
        assert_eq!(sum.to_string(), "1");
        assert_eq!(Money::from_nanos(4_200_000).to_string(), "0.0042");
    }
}
