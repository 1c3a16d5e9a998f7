//! RRD metrics (`.../rrddata`): timeframes, consolidation functions and data points.
//!
//! Points are `{time, <ds>: float, ...}`; a data source with no value in a bucket is
//! omitted (FACTS §5.26), so values live in a map. Guest `netin`/`netout`/`diskread`/
//! `diskwrite` are bytes per second averaged over the step, not counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::params::Params;

/// The `timeframe` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timeframe {
    /// 70 points of 60 s (PVE 8).
    Hour,
    /// 70 points of 30 min.
    Day,
    /// 70 points of 3 h.
    Week,
    /// 70 points of 12 h.
    Month,
    /// 70 points of 7 days.
    Year,
}

impl Timeframe {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::Hour => "hour",
            Timeframe::Day => "day",
            Timeframe::Week => "week",
            Timeframe::Month => "month",
            Timeframe::Year => "year",
        }
    }
}

/// The `cf` parameter (consolidation function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cf {
    /// Mean over the step (PVE's default; use it for billing traffic).
    #[serde(rename = "AVERAGE")]
    Average,
    /// Maximum over the step.
    #[serde(rename = "MAX")]
    Max,
}

impl Cf {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cf::Average => "AVERAGE",
            Cf::Max => "MAX",
        }
    }
}

/// The query of an `rrddata` call.
pub(crate) fn rrd_query(timeframe: Timeframe, cf: Option<Cf>) -> Params {
    Params::new().with("timeframe", timeframe.as_str()).with_opt("cf", cf.map(Cf::as_str))
}

/// One RRD bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RrdPoint {
    /// Bucket start, epoch seconds.
    pub time: i64,
    /// Data sources present in this bucket.
    pub values: BTreeMap<String, f64>,
}

impl RrdPoint {
    /// The value of data source `ds`, when present.
    pub fn get(&self, ds: &str) -> Option<f64> {
        self.values.get(ds).copied()
    }
}

impl<'de> Deserialize<'de> for RrdPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Value>::deserialize(d)?;
        let mut time = None;
        let mut values = BTreeMap::new();
        for (k, v) in map {
            let num = match &v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            if k == "time" {
                time = num.map(|t| t as i64);
            } else if let Some(n) = num {
                values.insert(k, n);
            }
        }
        let time = time.ok_or_else(|| serde::de::Error::missing_field("time"))?;
        Ok(RrdPoint { time, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_with_omitted_and_string_values() {
        let pts: Vec<RrdPoint> = serde_json::from_str(
            r#"[{"time":1700000000,"cpu":0.05,"maxmem":"2147483648","netin":12.5},{"time":"1700000060"},{"time":1700000120,"cpu":null}]"#,
        )
        .unwrap();
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[0].get("cpu"), Some(0.05));
        assert_eq!(pts[0].get("maxmem"), Some(2_147_483_648.0));
        assert_eq!(pts[1].time, 1_700_000_060);
        assert!(pts[1].values.is_empty());
        assert_eq!(pts[2].get("cpu"), None);
        assert!(serde_json::from_str::<Vec<RrdPoint>>(r#"[{"cpu":1}]"#).is_err());
    }

    #[test]
    fn rrd_query_encoding() {
        let p = rrd_query(Timeframe::Hour, Some(Cf::Max));
        assert_eq!(p.to_form(), "timeframe=hour&cf=MAX");
        assert_eq!(rrd_query(Timeframe::Day, None).to_form(), "timeframe=day");
    }

    #[test]
    fn parameter_spellings() {
        assert_eq!(Timeframe::Week.as_str(), "week");
        assert_eq!(Cf::Max.as_str(), "MAX");
        assert_eq!(serde_json::to_string(&Cf::Average).unwrap(), "\"AVERAGE\"");
    }
}
