//! Tolerant decoding of PVE's loosely typed JSON (FACTS §1.9).
//!
//! PVE is written in Perl and its JSON shows it: numbers sometimes arrive as strings
//! (`/cluster/nextid` returns `"100"`, container `vmid`s and storage content `size`
//! are strings), booleans are `0`/`1` (sometimes `"1"`, sometimes JSON `true`), fields
//! are omitted rather than null, `memory` is a property string in 8.x, and `pid` is
//! `null` for templates. The helpers here are meant for
//! `#[serde(default, deserialize_with = "...")]` on response fields; the `opt_*`
//! variants map `null`, an absent field and an empty string to `None`.
//!
//! A number that does not fit its field (a negative `mem` in a `u64`, a `maxcpu` beyond
//! `u32`) makes an optional field `None` rather than failing the whole response: one
//! odd value must not hide a whole node, guest or storage listing. Required fields (ids)
//! stay strict, since a guessed id is worse than an error.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// An integer from a JSON number (integral or not: fractions are truncated), a numeric
/// string, or a boolean (`true` = 1).
/// A value out of `T`'s range is an error.
pub fn int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    let v = d.deserialize_any(IntVisitor)?.ok_or_else(|| de::Error::custom("expected an integer, got null"))?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("integer {v} out of range")))
}

/// Like [`int`], with `null`, absent and `""` as `None`; so is a value out of `T`'s
/// range (see the module documentation).
pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    Ok(d.deserialize_any(IntVisitor)?.and_then(|v| {
        let narrowed = T::try_from(v).ok();
        if narrowed.is_none() {
            tracing::debug!(value = %v, "proxmox field out of range, read as absent");
        }
        narrowed
    }))
}

/// A float from a JSON number or a numeric string.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)?.ok_or_else(|| de::Error::custom("expected a number, got null"))
}

/// Like [`float`], with `null`, absent and `""` as `None`.
pub fn opt_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(FloatVisitor)
}

/// A boolean from `true`/`false`, any integer (non-zero = true), or the strings PVE's
/// property parser accepts (`1`/`0`, `on`/`off`, `yes`/`no`, `true`/`false`).
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)?.ok_or_else(|| de::Error::custom("expected a boolean, got null"))
}

/// Like [`bool()`], with `null`, absent and `""` as `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(BoolVisitor)
}

/// A string from a JSON string, number or boolean (for fields such as qemu `memory`,
/// which 8.x returns as a property string where older versions returned a number).
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(StringVisitor)?.ok_or_else(|| de::Error::custom("expected a string, got null"))
}

/// Like [`string`], with `null` and absent as `None` (an empty string stays `Some("")`).
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(StringVisitor)
}

/// The `null`/absent arms every visitor here shares: `null` is `None`, `Some(x)` is `x`.
macro_rules! null_is_none {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    };
}

/// Reads any integer-like value as `i128`; the caller narrows it to the field's type.
/// Values beyond `i128` saturate, which no field type accepts.
struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Option<i128>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer, a numeric string or null")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Ok(Some(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if !v.is_finite() {
            return Err(E::custom(format!("not an integer: {v}")));
        }
        // Truncation is intended: a counter reported as 1234.0 or 1234.5 is 1234 (and
        // `as` saturates beyond i128).
        Ok(Some(v.trunc() as i128))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(i128::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Ok(i) = t.parse::<i128>() {
            return Ok(Some(i));
        }
        match t.parse::<f64>() {
            Ok(f) => self.visit_f64(f),
            Err(_) => Err(E::custom(format!("not an integer: '{v}'"))),
        }
    }
    null_is_none!();
}

struct FloatVisitor;

impl<'de> Visitor<'de> for FloatVisitor {
    type Value = Option<f64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a numeric string or null")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.parse::<f64>().map(Some).map_err(|_| E::custom(format!("not a number: '{v}'")))
    }
    null_is_none!();
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Option<bool>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean, 0/1, \"0\"/\"1\" or null")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v != 0))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v != 0))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v != 0.0))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "1" | "on" | "yes" | "true" => Ok(Some(true)),
            "0" | "off" | "no" | "false" => Ok(Some(false)),
            _ => Err(E::custom(format!("not a boolean: '{v}'"))),
        }
    }
    null_is_none!();
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a number or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(if v { "1" } else { "0" }.to_string()))
    }
    null_is_none!();
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Sample {
        #[serde(deserialize_with = "super::int")]
        vmid: u32,
        #[serde(default, deserialize_with = "super::opt_int")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "super::opt_int")]
        pid: Option<u32>,
        #[serde(default, deserialize_with = "super::opt_bool")]
        template: Option<bool>,
        #[serde(default, deserialize_with = "super::opt_float")]
        cpu: Option<f64>,
        #[serde(default, deserialize_with = "super::opt_string")]
        memory: Option<String>,
    }

    fn parse(json: &str) -> Sample {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn integers_as_numbers_or_strings() {
        assert_eq!(parse(r#"{"vmid":100}"#).vmid, 100);
        assert_eq!(parse(r#"{"vmid":"100"}"#).vmid, 100);
        assert_eq!(parse(r#"{"vmid":" 101 "}"#).vmid, 101);
        assert_eq!(parse(r#"{"vmid":102.0}"#).vmid, 102);
        assert_eq!(parse(r#"{"vmid":1,"size":"34359738368"}"#).size, Some(34_359_738_368));
        assert_eq!(parse(r#"{"vmid":1,"size":"1.5e3"}"#).size, Some(1500));
    }

    #[test]
    fn integer_errors() {
        assert!(serde_json::from_str::<Sample>(r#"{"vmid":"abc"}"#).is_err());
        assert!(serde_json::from_str::<Sample>(r#"{"vmid":-1}"#).is_err());
        assert!(serde_json::from_str::<Sample>(r#"{"vmid":null}"#).is_err());
        assert!(serde_json::from_str::<Sample>(r#"{"vmid":4294967296}"#).is_err());
        assert!(serde_json::from_str::<Sample>(r#"{"vmid":1,"size":"lots"}"#).is_err());
    }

    #[test]
    fn optional_integers_out_of_range_are_absent() {
        let s = parse(r#"{"vmid":7,"pid":5000000000,"size":-1,"cpu":0.5,"memory":"512"}"#);
        assert_eq!((s.pid, s.size), (None, None));
        assert_eq!((s.vmid, s.cpu, s.memory.as_deref()), (7, Some(0.5), Some("512")), "the rest of the item stays");
        assert_eq!(parse(r#"{"vmid":1,"size":"-5"}"#).size, None);
        assert_eq!(parse(r#"{"vmid":1,"size":-2.5e40}"#).size, None);
        assert_eq!(parse(r#"{"vmid":1,"size":"340282366920938463463374607431768211456"}"#).size, None);
        assert_eq!(parse(r#"{"vmid":1,"size":18446744073709551615}"#).size, Some(u64::MAX));
    }

    #[test]
    fn optional_fields_null_absent_or_empty() {
        let s = parse(r#"{"vmid":1,"pid":null,"size":""}"#);
        assert_eq!(s.pid, None);
        assert_eq!(s.size, None);
        assert_eq!(s.template, None);
        assert_eq!(s.memory, None);
        assert_eq!(parse(r#"{"vmid":1,"pid":4242}"#).pid, Some(4242));
    }

    #[test]
    fn booleans_in_every_spelling() {
        for (json, want) in [
            ("1", true),
            ("0", false),
            ("true", true),
            ("false", false),
            (r#""1""#, true),
            (r#""0""#, false),
            (r#""on""#, true),
            (r#""no""#, false),
            ("2", true),
        ] {
            let s = parse(&format!(r#"{{"vmid":1,"template":{json}}}"#));
            assert_eq!(s.template, Some(want), "{json}");
        }
        assert!(serde_json::from_str::<Sample>(r#"{"vmid":1,"template":"maybe"}"#).is_err());
    }

    #[test]
    fn floats_and_strings() {
        assert_eq!(parse(r#"{"vmid":1,"cpu":"0.25"}"#).cpu, Some(0.25));
        assert_eq!(parse(r#"{"vmid":1,"cpu":3}"#).cpu, Some(3.0));
        assert_eq!(parse(r#"{"vmid":1,"memory":2048}"#).memory.as_deref(), Some("2048"));
        assert_eq!(parse(r#"{"vmid":1,"memory":"current=2048"}"#).memory.as_deref(), Some("current=2048"));
    }
}
