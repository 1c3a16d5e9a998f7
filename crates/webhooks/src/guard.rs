//! The SSRF guard (DESIGN §11): a webhook's URL is its owner's to choose, so a delivery must not
//! reach into the provider's own network. Every attempt resolves the host and refuses private,
//! loopback, link-local, CGNAT, multicast, reserved and documentation addresses (IPv6 ULA and
//! link-local too; IPv4-mapped and embedded IPv4 addresses are judged as the IPv4 address they
//! carry), unless the operator's allow-list names the network.
//!
//! The check runs where the connection is made: [`GuardedResolver`] is the HTTP client's
//! resolver, so the address checked is the address connected to and a DNS answer that changes
//! between a check and the connect (rebinding) cannot slip through. A URL whose host is an
//! address literal is never resolved, so [`Guard::check_url`] judges it before the request.
//! Redirects are never followed (a 3xx is a failed attempt), so no other host is reached.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address may not be connected to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address is in a range deliveries may not reach.
    #[error("refused: {address} is {range}")]
    Address {
        /// The address (IPv4-mapped ones as the IPv4 address).
        address: IpAddr,
        /// The range's name (`loopback`, `private`, …).
        range: &'static str,
    },
    /// The host has no address.
    #[error("refused: {0} has no address")]
    NoAddress(String),
    /// The host could not be resolved.
    #[error("refused: {host} could not be resolved ({reason})")]
    Unresolved {
        /// The host.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// The URL is not one a delivery may use.
    #[error("refused: {0}")]
    Url(String),
}

/// One network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4 network never holds an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    /// `10.0.0.0/8`, `::1/128`, or a bare address (a network of one).
    fn from_str(s: &str) -> Result<Self, String> {
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| format!("'{s}' is not an address or network"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("'{s}' has a bad prefix"))?
            }
            None => max,
        };
        Ok(Network { address, prefix })
    }
}

/// The networks an operator lets deliveries reach although the guard would refuse them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Network>);

impl AllowList {
    /// Parses a comma-separated list of networks (empty: nothing allowed).
    pub fn parse(s: &str) -> Result<AllowList, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Network::from_str)
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    /// Whether `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The ranges deliveries may not reach, by name.
const V4_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved (6to4 relay)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];
const V6_RANGES: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("100::/64", "reserved (discard)"),
    ("2001::/23", "reserved (IETF protocol assignments)"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// The IPv4 address an IPv6 address carries and should be judged as: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

/// The guard: the fixed ranges and the operator's allow-list.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: AllowList,
}

impl Guard {
    /// A guard that lets `allow` through.
    pub fn new(allow: AllowList) -> Guard {
        Guard { allow }
    }

    /// Whether a delivery may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let judged = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allow.allows(ip) || self.allow.allows(judged) {
            return Ok(());
        }
        let ranges = if judged.is_ipv4() { V4_RANGES } else { V6_RANGES };
        for (net, range) in ranges {
            let net: Network = net.parse().expect("the ranges are well formed");
            if net.contains(judged) {
                return Err(Refusal::Address { address: judged, range });
            }
        }
        Ok(())
    }

    /// Checks a URL before a request: its scheme, and its host when that is an address literal
    /// (a name is checked by [`GuardedResolver`] when the connection is made).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Url(format!("the scheme '{}' is not http or https", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Url("a URL with credentials".into()));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refusal::Url("a URL without a host".into())),
        }
    }

    /// The addresses of `candidates` a delivery may connect to; the first refusal when none.
    pub fn filter(&self, host: &str, candidates: Vec<IpAddr>) -> Result<Vec<IpAddr>, Refusal> {
        let mut first_refusal = None;
        let allowed: Vec<IpAddr> = candidates
            .into_iter()
            .filter(|ip| match self.check(*ip) {
                Ok(()) => true,
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(refusal)) => Err(refusal),
            (true, None) => Err(Refusal::NoAddress(host.to_owned())),
        }
    }
}

/// Looks a host's addresses up (the system's resolver in production, a table in tests).
pub trait Lookup: Send + Sync + 'static {
    /// The addresses of `host`.
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system's resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The HTTP client's resolver: resolves with `lookup` and hands the client only the addresses
/// the guard allows, so the client connects to nothing else.
#[derive(Clone)]
pub struct GuardedResolver {
    guard: Guard,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    /// A resolver judging `lookup`'s answers by `guard`.
    pub fn new(guard: Guard, lookup: Arc<dyn Lookup>) -> GuardedResolver {
        GuardedResolver { guard, lookup }
    }

    /// The addresses `host` may be reached at.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, Refusal> {
        let addresses = self
            .lookup
            .lookup(host.to_owned())
            .await
            .map_err(|e| Refusal::Unresolved { host: host.to_owned(), reason: e.to_string() })?;
        self.guard.filter(host, addresses)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let allowed = this.resolve_host(name.as_str()).await?;
            let addrs: Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The guard's refusal in `error`'s chain of sources, if that is why a request failed.
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn refused(guard: &Guard, ip: &str) -> Option<&'static str> {
        match guard.check(ip.parse().unwrap()) {
            Err(Refusal::Address { range, .. }) => Some(range),
            Err(other) => panic!("{other}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn private_and_special_addresses_are_refused_public_ones_allowed() {
        let guard = Guard::default();
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.0.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "reserved"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            // IPv4-mapped, NAT64 and 6to4 forms are judged as the IPv4 address they carry.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("2002:a00:1::", "private"),
        ] {
            assert_eq!(refused(&guard, ip), Some(range), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "172.32.0.1"] {
            assert_eq!(refused(&guard, ip), None, "{ip}");
        }
        let mapped = guard.check("::ffff:10.1.2.3".parse().unwrap()).unwrap_err();
        assert_eq!(mapped.to_string(), "refused: 10.1.2.3 is private", "canonicalised to IPv4");
    }

    #[test]
    fn the_allow_list_lets_its_networks_through_and_nothing_else() {
        let guard = Guard::new(AllowList::parse("127.0.0.0/8, ::1/128,10.1.0.0/16").unwrap());
        assert_eq!(refused(&guard, "127.0.0.1"), None);
        assert_eq!(refused(&guard, "::ffff:127.0.0.1"), None);
        assert_eq!(refused(&guard, "::1"), None);
        assert_eq!(refused(&guard, "10.1.200.3"), None);
        assert_eq!(refused(&guard, "10.2.0.1"), Some("private"));
        assert_eq!(refused(&guard, "169.254.169.254"), Some("link-local"));
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("nonsense").is_err());
        assert!(AllowList::parse("").unwrap().is_empty());
    }

    #[test]
    fn literal_urls_are_judged_before_any_request() {
        let guard = Guard::default();
        let check = |u: &str| guard.check_url(&reqwest::Url::parse(u).unwrap());
        assert!(matches!(check("http://169.254.169.254/latest/meta-data"), Err(Refusal::Address { .. })));
        assert!(matches!(check("http://[::ffff:a00:1]/"), Err(Refusal::Address { .. })));
        assert!(matches!(check("ftp://example.com/"), Err(Refusal::Url(_))));
        assert!(matches!(check("https://user:pw@example.com/"), Err(Refusal::Url(_))));
        assert!(check("https://hooks.example.com/x").is_ok(), "names are judged when resolved");
    }

    /// A resolver answering from a table, so no test looks up or connects to a real address.
    struct Table(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for Table {
        fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let answer = self.0.get(host.as_str()).cloned().ok_or_else(|| std::io::Error::other("NXDOMAIN"));
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_and_mixed_answers_keep_the_public_ones() {
        let table = Table(HashMap::from([
            ("internal.example", vec!["10.0.0.7".parse().unwrap()]),
            ("metadata.example", vec!["169.254.169.254".parse().unwrap(), "fd00::2".parse().unwrap()]),
            ("mixed.example", vec!["192.168.0.4".parse().unwrap(), "93.184.216.34".parse().unwrap()]),
        ]));
        let resolver = GuardedResolver::new(Guard::default(), Arc::new(table));
        assert_eq!(
            resolver.resolve_host("internal.example").await,
            Err(Refusal::Address { address: "10.0.0.7".parse().unwrap(), range: "private" })
        );
        assert!(matches!(
            resolver.resolve_host("metadata.example").await,
            Err(Refusal::Address { range: "link-local", .. })
        ));
        assert_eq!(
            resolver.resolve_host("mixed.example").await.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        assert!(matches!(resolver.resolve_host("nowhere.example").await, Err(Refusal::Unresolved { .. })));
    }

    #[tokio::test]
    async fn the_clients_resolver_refuses_and_the_reason_survives_in_the_error() {
        // Called as the HTTP client calls it, without a client: no connection is ever attempted,
        // whatever the guard decides.
        let table = Table(HashMap::from([("rebind.example", vec!["10.9.9.9".parse().unwrap()])]));
        let resolver = GuardedResolver::new(Guard::default(), Arc::new(table));
        let error = match Resolve::resolve(&resolver, Name::from_str("rebind.example").unwrap()).await {
            Ok(_) => panic!("a private address was handed to the client"),
            Err(e) => e,
        };
        assert_eq!(
            refusal_in(&*error),
            Some(Refusal::Address { address: "10.9.9.9".parse().unwrap(), range: "private" })
        );
    }
}
