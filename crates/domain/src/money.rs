//! Money as an exact decimal ([`rust_decimal::Decimal`]), never a float: prices are stored as
//! PostgreSQL `NUMERIC` and serialised as strings so JavaScript clients do not round them.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Mul, Sub};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An amount in the plan's currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "12.50"))]
#[serde(transparent)]
pub struct Money(pub Decimal);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// The amount.
    pub const fn amount(self) -> Decimal {
        self.0
    }

    /// Rounded to `dp` decimal places, half to even (how invoice lines round: no bias over
    /// many lines).
    pub fn round(self, dp: u32) -> Money {
        Money(self.0.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointNearestEven))
    }

    /// Rounded to `currency`'s minor unit.
    pub fn round_to_minor_unit(self, currency: &str) -> Money {
        self.round(minor_units(currency))
    }
}

/// The decimal places of a currency's minor unit (ISO 4217): 0 for the yen and its like, 3 for
/// the dinars, 2 otherwise.
pub fn minor_units(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

impl From<Decimal> for Money {
    fn from(d: Decimal) -> Self {
        Money(d)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl Mul<Decimal> for Money {
    type Output = Money;
    fn mul(self, rhs: Decimal) -> Money {
        Money(self.0 * rhs)
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn money_is_exact_and_serialises_as_a_string() {
        let a = Money(Decimal::from_str("0.1").unwrap());
        let b = Money(Decimal::from_str("0.2").unwrap());
        assert_eq!(a + b, Money(Decimal::from_str("0.3").unwrap()));
        assert_eq!(serde_json::to_string(&(a + b)).unwrap(), "\"0.3\"");
        let parsed: Money = serde_json::from_str("\"12.3450\"").unwrap();
        assert_eq!(parsed.round(2).to_string(), "12.34", "half to even");
        let odd: Money = serde_json::from_str("\"12.3350\"").unwrap();
        assert_eq!(odd.round(2).to_string(), "12.34");
        assert_eq!(odd.round_to_minor_unit("JPY").to_string(), "12");
        assert_eq!(odd.round_to_minor_unit("KWD").to_string(), "12.335");
    }
}
