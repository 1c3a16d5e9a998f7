//! Rate limits (issue #4 item 6, DESIGN §6): a budget of requests per minute per caller, shared
//! by every API replica through Redis.
//!
//! * The caller is the user, whichever credential they present: all of a user's API keys,
//!   sessions and provider JWTs spend one budget, so making more keys buys no more requests.
//!   Anonymous requests spend the client's address's ([`client_ip`]: `X-Forwarded-For` is
//!   believed only when the peer is a configured trusted proxy).
//! * Failed authentication has a budget of its own per client address
//!   ([`RateLimitSettings::auth_failures_per_minute`]), checked before the credential is looked
//!   up: once it is spent, a presented credential is answered 429 without touching PostgreSQL or
//!   the session store ([`crate::auth::authenticate`]).
//! * The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket kept as one
//!   "theoretical arrival time" per caller): a burst of up to `limit` requests, then one every
//!   `60 s / limit`. One Lua script does the whole decision in one atomic round trip (`EVALSHA`,
//!   falling back to loading the script when Redis lost it), timed by Redis's own clock so
//!   replicas with skewed clocks agree.
//! * Every answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//!   (seconds until the full budget is back); over the limit it is 429 `RATE_LIMITED` with
//!   `Retry-After` (seconds until the next request is allowed).
//! * `/healthz` and `/readyz` are exempt (probes must not be throttled).
//! * Redis down or slow fails open: the request passes without the headers, a warning is logged
//!   at most once per [`WARN_INTERVAL`], and Redis is not tried again for [`RETRY_AFTER_FAILURE`]
//!   so an outage costs requests nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use redis::aio::MultiplexedConnection;

use crate::auth::{AuthUser, Credential};
use crate::error::ApiError;
use crate::state::AppState;

/// How often a failing Redis is reported in the log, at most.
pub const WARN_INTERVAL: Duration = Duration::from_secs(30);
/// How long requests skip Redis after it failed.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Routes that are never limited.
const EXEMPT: &[&str] = &["/healthz", "/readyz"];

/// GCRA in one step. KEYS[1]: the caller's bucket; ARGV[1]: requests per period; ARGV[2]: the
/// period in microseconds; ARGV[3]: 1 to spend a request, 0 to only look whether one is left.
/// The bucket holds the theoretical arrival time (TAT) in microseconds of Redis's clock and
/// expires when it is in the past. Returns {allowed, remaining, retry_after_us, reset_us}.
const GCRA: &str = r"
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat + interval - now
if ahead > period then
  return {0, 0, math.ceil(ahead - period), math.ceil(tat - now)}
end
if ARGV[3] == '0' then
  return {1, math.floor((period - (tat - now)) / interval), 0, math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((period - ahead) / interval), 0, math.ceil(ahead)}
";

/// A set of addresses and networks (`10.0.0.0/8`, `192.168.1.7`, `::1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// An entry of `TRUSTED_PROXIES` that is neither an address nor a network.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not an IP address or a CIDR network")]
pub struct BadProxy(String);

impl FromStr for TrustedProxies {
    type Err = BadProxy;

    /// A comma- or space-separated list; empty means none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split([',', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>().or_else(|_| p.parse::<IpAddr>().map(IpNet::from)).map_err(|_| BadProxy(p.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left
/// were written by the client and prove nothing). A malformed entry stops the walk at the hop
/// that wrote it.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = peer.map(|p| p.to_canonical())?;
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return Some(ip),
            None => break,
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip())).map(|ip| ip.to_canonical())
}

/// The tunables (`RATE_LIMIT_PER_MINUTE`, `AUTH_FAILURES_PER_MINUTE`, `TRUSTED_PROXIES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per minute per caller (also the burst).
    pub per_minute: u32,
    /// Failed authentications per minute per client address (also the burst).
    pub auth_failures_per_minute: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// How long the Redis round trip may take before the request passes unlimited.
    pub timeout: Duration,
}

impl RateLimitSettings {
    /// The default budget (DESIGN §6, issue #4).
    pub const DEFAULT_PER_MINUTE: u32 = 300;
    /// The default budget of failed authentications: a person mistyping a key never reaches
    /// it; a token guesser is held to one try every two seconds.
    pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 30;
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            per_minute: Self::DEFAULT_PER_MINUTE,
            auth_failures_per_minute: Self::DEFAULT_AUTH_FAILURES_PER_MINUTE,
            trusted_proxies: TrustedProxies::default(),
            timeout: Duration::from_millis(250),
        }
    }
}

/// Whose budget a request spends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// A user, with every credential they hold (API keys, sessions, provider JWTs).
    User(String),
    /// An anonymous client.
    Ip(Option<IpAddr>),
    /// The failed authentications of a client address.
    AuthFailures(Option<IpAddr>),
}

impl Bucket {
    /// The bucket of `caller`, or of the client's address when anonymous.
    pub fn of(caller: Option<&AuthUser>, ip: Option<IpAddr>) -> Bucket {
        match caller {
            Some(caller) => Bucket::of_caller(caller),
            None => Bucket::Ip(ip),
        }
    }

    /// Whose budget `caller`'s request spends: the credential's owner. Under impersonation that
    /// is the administrator (their key, or their session), never the user acted as.
    fn of_caller(caller: &AuthUser) -> Bucket {
        let owner = match &caller.credential {
            Credential::ApiKey(key) => key.user_id,
            _ => caller.impersonator.as_ref().map_or(caller.user.id, |admin| admin.id),
        };
        Bucket::User(owner.to_string())
    }

    fn key(&self, prefix: &str) -> String {
        let ip = |ip: &Option<IpAddr>| ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        match self {
            Bucket::User(id) => format!("{prefix}rl:user:{id}"),
            // Only a router served without connection info has no address: one shared budget.
            Bucket::Ip(addr) => format!("{prefix}rl:ip:{}", ip(addr)),
            Bucket::AuthFailures(addr) => format!("{prefix}rl:authfail:{}", ip(addr)),
        }
    }
}

/// What the limiter decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The budget per minute.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u64,
    /// Until the next request is allowed (zero when allowed).
    pub retry_after: Duration,
    /// Until the whole budget is back.
    pub reset: Duration,
}

impl Decision {
    /// Writes the `RateLimit-*` headers (and `Retry-After` when refused).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from(ceil_secs(self.reset)));
        if !self.allowed {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(ceil_secs(self.retry_after).max(1)));
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

/// Redis's state of health as the limiter last saw it.
#[derive(Default)]
struct Health {
    /// Requests skip Redis until then.
    skip_until: Option<Instant>,
    /// When the last warning was logged.
    warned_at: Option<Instant>,
}

/// The limiter: a lazily connected Redis connection and the script.
pub struct RateLimiter {
    client: redis::Client,
    key_prefix: String,
    settings: RateLimitSettings,
    script: redis::Script,
    /// The shared multiplexed connection; `None` until connected or after it broke.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    health: Mutex<Health>,
    /// Addresses that failed to authenticate here, and when they last did.
    recent_failures: Mutex<HashMap<Option<IpAddr>, Instant>>,
}

/// The most addresses [`RateLimiter::auth_failed`] remembers (memory stays bounded under a
/// flood of addresses; past it the list starts over, and each address is held again from its
/// next failure).
const RECENT_FAILURES_CAPACITY: usize = 100_000;

impl RateLimiter {
    /// A limiter on the Redis at `url` (nothing connects until the first request), with buckets
    /// under `key_prefix`.
    pub fn new(url: &str, key_prefix: impl Into<String>, settings: RateLimitSettings) -> redis::RedisResult<Self> {
        Ok(RateLimiter {
            client: redis::Client::open(url)?,
            key_prefix: key_prefix.into(),
            settings,
            script: redis::Script::new(GCRA),
            conn: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
            recent_failures: Mutex::new(HashMap::new()),
        })
    }

    /// The tunables.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Spends one request of `bucket`'s budget. `None` when Redis could not decide (the
    /// request then passes: failing open keeps the API answering through a Redis outage).
    pub async fn check(&self, bucket: &Bucket) -> Option<Decision> {
        self.decide(bucket, self.settings.per_minute, true).await
    }

    /// Whether the client at `ip` may still fail to authenticate (spends nothing). Only
    /// addresses that failed here within the last minute are looked up in Redis: the others
    /// cannot be over budget in this process's view, and a request with a good credential
    /// should not pay a round trip for the check (another replica's failures count from the
    /// first one this replica sees).
    pub async fn auth_failures_left(&self, ip: Option<IpAddr>) -> Option<Decision> {
        let failed_recently =
            self.recent_failures.lock().ok()?.get(&ip).is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if !failed_recently {
            return None;
        }
        self.decide(&Bucket::AuthFailures(ip), self.settings.auth_failures_per_minute, false).await
    }

    /// Spends one failed authentication of the client at `ip`.
    pub async fn auth_failed(&self, ip: Option<IpAddr>) -> Option<Decision> {
        if let Ok(mut recent) = self.recent_failures.lock() {
            if recent.len() >= RECENT_FAILURES_CAPACITY {
                recent.retain(|_, at| at.elapsed() < Duration::from_secs(60));
                if recent.len() >= RECENT_FAILURES_CAPACITY {
                    recent.clear();
                }
            }
            recent.insert(ip, Instant::now());
        }
        self.decide(&Bucket::AuthFailures(ip), self.settings.auth_failures_per_minute, true).await
    }

    async fn decide(&self, bucket: &Bucket, per_minute: u32, spend: bool) -> Option<Decision> {
        if self.health.lock().ok()?.skip_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let key = bucket.key(&self.key_prefix);
        let per_minute = per_minute.max(1);
        match tokio::time::timeout(self.settings.timeout, self.run(&key, per_minute, spend)).await {
            Ok(Ok(reply)) => {
                if let Ok(mut h) = self.health.lock() {
                    h.skip_until = None;
                }
                Some(decision(per_minute, reply))
            }
            Ok(Err(e)) => {
                // A broken connection is replaced on the next attempt.
                *self.conn.lock().await = None;
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("timed out");
                None
            }
        }
    }

    async fn run(&self, key: &str, per_minute: u32, spend: bool) -> redis::RedisResult<(i64, i64, i64, i64)> {
        let mut conn = self.connection().await?;
        let period_us: u64 = 60_000_000;
        self.script.key(key).arg(per_minute).arg(period_us).arg(u8::from(spend)).invoke_async(&mut conn).await
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.settings.timeout)
            .set_response_timeout(self.settings.timeout);
        let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn failed(&self, error: &str) {
        let Ok(mut h) = self.health.lock() else { return };
        let now = Instant::now();
        h.skip_until = Some(now + RETRY_AFTER_FAILURE);
        if h.warned_at.is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL) {
            h.warned_at = Some(now);
            tracing::warn!(error, "rate limiting is off: Redis cannot be reached; requests pass unlimited");
        }
    }
}

fn decision(limit: u32, (allowed, remaining, retry_after_us, reset_us): (i64, i64, i64, i64)) -> Decision {
    let us = |v: i64| Duration::from_micros(v.max(0) as u64);
    Decision {
        allowed: allowed == 1,
        limit,
        remaining: remaining.max(0) as u64,
        retry_after: us(retry_after_us),
        reset: us(reset_us),
    }
}

/// The 429 of a refused decision, with its headers.
pub fn refused(decision: &Decision) -> Response {
    let mut response =
        ApiError::RateLimited { retry_after_secs: ceil_secs(decision.retry_after).max(1) }.into_response();
    decision.write_headers(response.headers_mut());
    response
}

/// The layer (install with `axum::middleware::from_fn_with_state`, inside `authenticate`).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let limiter = state.rate_limiter();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = client_ip(peer, request.headers(), &limiter.settings().trusted_proxies);
    let bucket = Bucket::of(request.extensions().get::<AuthUser>(), ip);
    let Some(decision) = limiter.check(&bucket).await else {
        return next.run(request).await;
    };
    if !decision.allowed {
        return refused(&decision);
    }
    let mut response = next.run(request).await;
    decision.write_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_networks() {
        let t: TrustedProxies = "10.0.0.0/8, 192.168.1.7 ::1".parse().unwrap();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped addresses are their IPv4 address");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert_eq!("10.0.0.0/33".parse::<TrustedProxies>().unwrap_err(), BadProxy("10.0.0.0/33".into()));
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let headers = xff(&["203.0.113.9"]);
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(Some(ip("198.51.100.1")), &headers, &trusted), Some(ip("198.51.100.1")));
        // A trusted peer's is believed.
        assert_eq!(client_ip(Some(ip("10.0.0.5")), &headers, &trusted), Some(ip("203.0.113.9")));
        // Without a trusted list, never.
        assert_eq!(client_ip(Some(ip("10.0.0.5")), &headers, &TrustedProxies::default()), Some(ip("10.0.0.5")));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = Some(ip("10.0.0.5"));
        // The client forged the first entry; the proxies appended the real one and themselves.
        let headers = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(client_ip(peer, &headers, &trusted), Some(ip("203.0.113.9")));
        // Ports and brackets are tolerated.
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9:4711"]), &trusted), Some(ip("203.0.113.9")));
        assert_eq!(client_ip(peer, &xff(&["[2001:db8::1]:80"]), &trusted), Some(ip("2001:db8::1")));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9, garbage"]), &trusted), Some(ip("10.0.0.5")));
        assert_eq!(client_ip(peer, &xff(&["10.0.0.8, garbage, 10.0.0.9"]), &trusted), Some(ip("10.0.0.9")));
        // Only proxies: the left-most of them.
        assert_eq!(client_ip(peer, &xff(&["10.0.0.8"]), &trusted), Some(ip("10.0.0.8")));
        // No header: the peer.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
        assert_eq!(client_ip(None, &headers, &trusted), None);
    }

    #[test]
    fn users_addresses_and_failures_have_separate_buckets() {
        // API keys are covered by the integration tests (all of a user's keys share a bucket).
        assert_eq!(Bucket::User("u1".into()).key("p:"), "p:rl:user:u1");
        assert_eq!(Bucket::of(None, Some(ip("::1"))).key("p:"), "p:rl:ip:::1");
        assert_eq!(Bucket::of(None, None).key("p:"), "p:rl:ip:unknown");
        assert_eq!(Bucket::AuthFailures(Some(ip("192.0.2.1"))).key("p:"), "p:rl:authfail:192.0.2.1");
    }

    #[test]
    fn headers_round_up_and_retry_after_is_at_least_one_second() {
        let d = Decision {
            allowed: false,
            limit: 3,
            remaining: 0,
            retry_after: Duration::from_millis(1),
            reset: Duration::from_millis(59_001),
        };
        let mut h = HeaderMap::new();
        d.write_headers(&mut h);
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "60");
        assert_eq!(h["retry-after"], "1");
        let mut h = HeaderMap::new();
        Decision { allowed: true, ..d }.write_headers(&mut h);
        assert!(h.get("retry-after").is_none());
    }
}
