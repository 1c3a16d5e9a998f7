//! Fault injection: error rates and added latency per request pattern, nodes that are down,
//! and the next task of a type failing. Shared by the library API, the CLI flags and the
//! `/_sim/faults` control endpoint.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// An error injected into matching requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorFault {
    pub pattern: String,
    pub rate: f64,
    pub status: u16,
    pub message: String,
}

/// Latency added to matching requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyFault {
    pub pattern: String,
    pub latency_ms: u64,
}

#[derive(Default)]
struct State {
    errors: Vec<(Regex, ErrorFault)>,
    latencies: Vec<(Regex, LatencyFault)>,
    down: BTreeSet<String>,
    fail_next: HashMap<String, VecDeque<String>>,
    rng: u64,
}

/// In-process fault injection (cheap to clone; all clones share the faults).
#[derive(Clone, Default)]
pub struct FaultControl {
    state: Arc<RwLock<State>>,
    /// Fast path: false while no error or latency fault is configured.
    active: Arc<AtomicBool>,
}

/// A snapshot of the configured faults (the `GET /_sim/faults` answer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultSnapshot {
    pub errors: Vec<ErrorFault>,
    pub latencies: Vec<LatencyFault>,
    pub nodes_down: Vec<String>,
    pub fail_next_task: HashMap<String, Vec<String>>,
}

/// What an injected error turns a request into.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedError {
    pub status: u16,
    pub message: String,
}

fn compile(pattern: &str) -> Regex {
    // An invalid regex is taken literally so a typo never panics the simulator.
    Regex::new(pattern).unwrap_or_else(|_| Regex::new(&regex::escape(pattern)).expect("escaped regex"))
}

impl FaultControl {
    /// Requests whose `"METHOD /api2/json/path"` matches `path_pattern` (a regex) fail with
    /// `status` and `message` at probability `rate` (0..=1).
    pub fn add_error(&self, path_pattern: &str, rate: f64, status: u16, message: &str) {
        let fault =
            ErrorFault { pattern: path_pattern.into(), rate: rate.clamp(0.0, 1.0), status, message: message.into() };
        self.state.write().errors.push((compile(path_pattern), fault));
        self.active.store(true, Ordering::Release);
    }

    /// Adds `latency` to matching requests.
    pub fn add_latency(&self, path_pattern: &str, latency: Duration) {
        let fault = LatencyFault { pattern: path_pattern.into(), latency_ms: latency.as_millis() as u64 };
        self.state.write().latencies.push((compile(path_pattern), fault));
        self.active.store(true, Ordering::Release);
    }

    /// Takes a node down (595 on `/nodes/<node>/...`, offline in lists) or brings it back.
    pub fn set_node_down(&self, node: &str, down: bool) {
        let mut s = self.state.write();
        if down {
            s.down.insert(node.to_string());
        } else {
            s.down.remove(node);
        }
    }

    /// The next task of `task_type` ends with `TASK ERROR: <message>`.
    pub fn fail_next_task(&self, task_type: &str, message: &str) {
        self.state.write().fail_next.entry(task_type.to_string()).or_default().push_back(message.to_string());
    }

    /// Removes every fault.
    pub fn clear(&self) {
        let mut s = self.state.write();
        let rng = s.rng;
        *s = State { rng, ..State::default() };
        self.active.store(false, Ordering::Release);
    }

    /// Whether a node is down.
    pub fn is_node_down(&self, node: &str) -> bool {
        let s = self.state.read();
        !s.down.is_empty() && s.down.contains(node)
    }

    /// The configured faults.
    pub fn snapshot(&self) -> FaultSnapshot {
        let s = self.state.read();
        FaultSnapshot {
            errors: s.errors.iter().map(|(_, f)| f.clone()).collect(),
            latencies: s.latencies.iter().map(|(_, f)| f.clone()).collect(),
            nodes_down: s.down.iter().cloned().collect(),
            fail_next_task: s.fail_next.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect(),
        }
    }

    pub(crate) fn seed_rng(&self, seed: u64) {
        self.state.write().rng = seed | 1;
    }

    pub(crate) fn take_task_failure(&self, task_type: &str) -> Option<String> {
        let mut s = self.state.write();
        let q = s.fail_next.get_mut(task_type)?;
        let msg = q.pop_front();
        if q.is_empty() {
            s.fail_next.remove(task_type);
        }
        msg
    }

    /// Latency and error for one request line (`"GET /api2/json/version"`).
    pub(crate) fn on_request(&self, line: &str) -> (Duration, Option<InjectedError>) {
        if !self.active.load(Ordering::Acquire) {
            return (Duration::ZERO, None);
        }
        let mut s = self.state.write();
        let latency: u64 = s.latencies.iter().filter(|(re, _)| re.is_match(line)).map(|(_, f)| f.latency_ms).sum();
        let mut injected = None;
        let matching: Vec<ErrorFault> =
            s.errors.iter().filter(|(re, _)| re.is_match(line)).map(|(_, f)| f.clone()).collect();
        for f in matching {
            // xorshift64: deterministic per seed, cheap, no lock on a global RNG.
            let mut x = s.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.rng = x;
            let draw = (x >> 11) as f64 / (1u64 << 53) as f64;
            if draw < f.rate {
                injected = Some(InjectedError { status: f.status, message: f.message });
                break;
            }
        }
        (Duration::from_millis(latency), injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_latency_down_and_task_failures() {
        let f = FaultControl::default();
        f.seed_rng(7);
        assert_eq!(f.on_request("GET /api2/json/version"), (Duration::ZERO, None));
        f.add_error("^POST .*/clone$", 1.0, 500, "boom");
        f.add_latency("version", Duration::from_millis(20));
        let (lat, err) = f.on_request("POST /api2/json/nodes/pve1/qemu/9000/clone");
        assert_eq!(lat, Duration::ZERO);
        assert_eq!(err.unwrap().message, "boom");
        assert_eq!(f.on_request("GET /api2/json/version").0, Duration::from_millis(20));
        f.set_node_down("pve2", true);
        assert!(f.is_node_down("pve2") && !f.is_node_down("pve1"));
        f.fail_next_task("qmclone", "nope");
        assert_eq!(f.take_task_failure("qmclone").as_deref(), Some("nope"));
        assert_eq!(f.take_task_failure("qmclone"), None);
        f.clear();
        assert!(f.snapshot().errors.is_empty() && !f.is_node_down("pve2"));
    }

    #[test]
    fn rates_are_respected_roughly() {
        let f = FaultControl::default();
        f.seed_rng(99);
        f.add_error("GET", 0.3, 503, "x");
        let hits = (0..10_000).filter(|_| f.on_request("GET /api2/json/x").1.is_some()).count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
    }
}
