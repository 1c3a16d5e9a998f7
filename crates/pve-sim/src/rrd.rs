//! Deterministic rrddata in PVE 8's layout (pve-cluster `RRD.pm` on stable-bookworm): a fixed
//! step per timeframe (hour 60 s, day 30 min, week 3 h, month 12 h, year 7 d) and 70 points,
//! `AVERAGE` or `MAX` consolidation, and the node and guest data-source lists. The same seed,
//! source and time always give the same values.

use serde_json::{Map, Value, json};

use crate::model::{Guest, Node, PowerState};
use crate::util;

/// Points per timeframe in PVE 8.
pub const POINTS: i64 = 70;

/// A timeframe of the `timeframe` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeframe {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Timeframe {
    /// Parses `hour|day|week|month|year`.
    pub fn parse(s: &str) -> Option<Timeframe> {
        Some(match s {
            "hour" => Timeframe::Hour,
            "day" => Timeframe::Day,
            "week" => Timeframe::Week,
            "month" => Timeframe::Month,
            "year" => Timeframe::Year,
            _ => return None,
        })
    }
    /// The step in seconds.
    pub fn step(self) -> i64 {
        match self {
            Timeframe::Hour => 60,
            Timeframe::Day => 1800,
            Timeframe::Week => 10_800,
            Timeframe::Month => 43_200,
            Timeframe::Year => 604_800,
        }
    }
}

/// How a data source's value is produced.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Always this value (maxcpu, maxmem, totals).
    Const(f64),
    /// A level between `lo` and `hi` that drifts over time.
    Gauge { lo: f64, hi: f64 },
    /// A rate (bytes per second) around `mean`.
    Rate { mean: f64 },
}

/// One data source.
#[derive(Debug, Clone, Copy)]
pub struct Ds {
    pub name: &'static str,
    pub source: Source,
}

/// The bucket times of a timeframe ending at `now` (oldest first).
pub fn times(tf: Timeframe, now: i64) -> Vec<i64> {
    let step = tf.step();
    let last = (now / step) * step;
    (0..POINTS).map(|i| last - (POINTS - 1 - i) * step).collect()
}

fn value(seed: u64, key: &[u8], ds: &Ds, t: i64, step: i64, max: bool) -> f64 {
    let name = ds.name.as_bytes();
    let base = util::unit(seed, &[b"rrd-base", key, name]);
    // A slow wave (daily rhythm) plus per-bucket noise; MAX adds the bucket's peak.
    let phase = util::unit(seed, &[b"rrd-phase", key, name]) * std::f64::consts::TAU;
    let wave = 0.5 + 0.5 * ((t as f64 / 86_400.0) * std::f64::consts::TAU + phase).sin();
    let noise = util::unit(seed, &[b"rrd-noise", key, name, &t.to_be_bytes(), &step.to_be_bytes()]);
    let level = (0.5 * base + 0.3 * wave + 0.2 * noise).clamp(0.0, 1.0);
    let peak = if max { 1.0 + 0.5 * util::unit(seed, &[b"rrd-max", key, name, &t.to_be_bytes()]) } else { 1.0 };
    match ds.source {
        Source::Const(v) => v,
        Source::Gauge { lo, hi } => (lo + (hi - lo) * (level * peak).min(1.0)).min(hi),
        Source::Rate { mean } => mean * 2.0 * level * peak,
    }
}

/// The rows of an rrddata answer for data sources `ds` of the object `key`.
/// `active(t)` says whether the object produced data at bucket `t` (gauges and rates are 0
/// otherwise; constants stay).
pub fn generate(
    seed: u64,
    key: &[u8],
    tf: Timeframe,
    max: bool,
    now: i64,
    ds: &[Ds],
    active: impl Fn(i64) -> bool,
) -> Vec<Value> {
    let step = tf.step();
    times(tf, now)
        .into_iter()
        .map(|t| {
            let on = active(t);
            let mut row = Map::with_capacity(ds.len() + 1);
            row.insert("time".into(), json!(t));
            for d in ds {
                let v = match d.source {
                    Source::Const(c) => c,
                    _ if !on => 0.0,
                    _ => value(seed, key, d, t, step, max),
                };
                row.insert(d.name.into(), json!(round(v)));
            }
            Value::Object(row)
        })
        .collect()
}

fn round(v: f64) -> f64 {
    if v.abs() >= 1000.0 { v.round() } else { (v * 1e6).round() / 1e6 }
}

/// Guest rrddata (PVE 8 DS list: maxcpu, cpu, maxmem, mem, maxdisk, disk, netin, netout,
/// diskread, diskwrite; the last four in bytes per second). Zero while the guest was not running.
pub fn guest(seed: u64, g: &Guest, tf: Timeframe, max: bool, now: i64) -> Vec<Value> {
    let maxmem = g.maxmem() as f64;
    let maxdisk = g.maxdisk() as f64;
    let ds = [
        Ds { name: "maxcpu", source: Source::Const(g.maxcpu() as f64) },
        Ds { name: "cpu", source: Source::Gauge { lo: 0.01, hi: 0.6 } },
        Ds { name: "maxmem", source: Source::Const(maxmem) },
        Ds { name: "mem", source: Source::Gauge { lo: 0.2 * maxmem, hi: 0.85 * maxmem } },
        Ds { name: "maxdisk", source: Source::Const(maxdisk) },
        Ds { name: "disk", source: Source::Gauge { lo: 0.0, hi: 0.0 } },
        Ds { name: "netin", source: Source::Rate { mean: 20_000.0 } },
        Ds { name: "netout", source: Source::Rate { mean: 8_000.0 } },
        Ds { name: "diskread", source: Source::Rate { mean: 50_000.0 } },
        Ds { name: "diskwrite", source: Source::Rate { mean: 30_000.0 } },
    ];
    let started = match g.state {
        PowerState::Stopped => None,
        _ => g.started_ms.map(|ms| ms / 1000),
    };
    generate(seed, &g.vmid.to_be_bytes(), tf, max, now, &ds, |t| started.is_some_and(|s| t >= s))
}

/// Node rrddata (PVE 8 DS list: loadavg, maxcpu, cpu, iowait, memtotal, memused, swaptotal,
/// swapused, roottotal, rootused, netin, netout). `used_mem` is the memory of running guests.
pub fn node(seed: u64, n: &Node, used_mem: u64, tf: Timeframe, max: bool, now: i64, online: bool) -> Vec<Value> {
    let memtotal = n.maxmem as f64;
    let base_mem = (used_mem as f64 + 2.5 * 1024.0 * 1024.0 * 1024.0).min(memtotal);
    let ds = [
        Ds { name: "loadavg", source: Source::Gauge { lo: 0.05, hi: n.maxcpu as f64 * 0.5 } },
        Ds { name: "maxcpu", source: Source::Const(n.maxcpu as f64) },
        Ds { name: "cpu", source: Source::Gauge { lo: 0.01, hi: 0.45 } },
        Ds { name: "iowait", source: Source::Gauge { lo: 0.0, hi: 0.05 } },
        Ds { name: "memtotal", source: Source::Const(memtotal) },
        Ds { name: "memused", source: Source::Gauge { lo: base_mem * 0.9, hi: base_mem } },
        Ds { name: "swaptotal", source: Source::Const(n.swap_total as f64) },
        Ds { name: "swapused", source: Source::Gauge { lo: 0.0, hi: n.swap_total as f64 * 0.05 } },
        Ds { name: "roottotal", source: Source::Const(n.rootfs_total as f64) },
        Ds {
            name: "rootused",
            source: Source::Gauge { lo: n.rootfs_total as f64 * 0.1, hi: n.rootfs_total as f64 * 0.2 },
        },
        Ds { name: "netin", source: Source::Rate { mean: 150_000.0 } },
        Ds { name: "netout", source: Source::Rate { mean: 90_000.0 } },
    ];
    let boot = n.boot_time;
    generate(seed, n.name.as_bytes(), tf, max, now, &ds, |t| online && t >= boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_determinism() {
        for (tf, step) in [(Timeframe::Hour, 60), (Timeframe::Day, 1800), (Timeframe::Year, 604_800)] {
            let t = times(tf, 1_700_000_123);
            assert_eq!(t.len(), 70);
            assert_eq!(t[1] - t[0], step);
            assert_eq!(t[69] % step, 0);
        }
        let ds = [
            Ds { name: "cpu", source: Source::Gauge { lo: 0.0, hi: 1.0 } },
            Ds { name: "maxcpu", source: Source::Const(4.0) },
        ];
        let a = generate(1, b"x", Timeframe::Hour, false, 1_700_000_000, &ds, |_| true);
        assert_eq!(a, generate(1, b"x", Timeframe::Hour, false, 1_700_000_000, &ds, |_| true));
        assert_ne!(a, generate(2, b"x", Timeframe::Hour, false, 1_700_000_000, &ds, |_| true));
        let m = generate(1, b"x", Timeframe::Hour, true, 1_700_000_000, &ds, |_| true);
        for (avg, max) in a.iter().zip(&m) {
            assert!(max["cpu"].as_f64().unwrap() >= avg["cpu"].as_f64().unwrap());
            assert_eq!(avg["maxcpu"], 4.0);
        }
        let off = generate(1, b"x", Timeframe::Hour, false, 1_700_000_000, &ds, |_| false);
        assert_eq!(off[0]["cpu"], 0.0);
    }
}
