//! Authentication like pveproxy: `PVEAPIToken=` headers (extraction regex, URL-unescape, split
//! at the last `=`), `PVEAuthCookie` tickets with CSRF prevention tokens, and the signatures
//! behind them (HMAC-SHA256 with the cluster's key).

use std::sync::LazyLock;

use base64::Engine;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::model::Cluster;

/// Ticket and CSRF token lifetime (2 h), as in pve-access-control.
pub const TICKET_LIFETIME: i64 = 7200;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// `user@realm`.
    pub userid: String,
    /// Token name when authenticated with an API token.
    pub tokenid: Option<String>,
    /// True when authenticated with a ticket (cookie or `Authorization: PVEAuthCookie=`).
    pub ticket: bool,
}

impl AuthUser {
    /// The effective user as PVE's RPC environment sees it: `user@realm!token` for tokens.
    pub fn user(&self) -> String {
        match &self.tokenid {
            Some(t) => format!("{}!{t}", self.userid),
            None => self.userid.clone(),
        }
    }
    /// Whether the caller is `root@pam` itself (not a token of it): the `skiplock` rule.
    pub fn is_root(&self) -> bool {
        self.tokenid.is_none() && self.userid == "root@pam"
    }
}

/// `extract_auth_value`: `/(?:^|\s)KEY(?:=| )([^;]*)/`, then URL-unescaped.
pub fn extract_auth_value(header: &str, key: &str) -> Option<String> {
    static TOKEN: LazyLock<Regex> = LazyLock::new(|| auth_value_re("PVEAPIToken"));
    static COOKIE: LazyLock<Regex> = LazyLock::new(|| auth_value_re("PVEAuthCookie"));
    let other;
    let re = match key {
        "PVEAPIToken" => &*TOKEN,
        "PVEAuthCookie" => &*COOKIE,
        _ => {
            other = auth_value_re(key);
            &other
        }
    };
    let raw = re.captures(header)?.get(1)?.as_str();
    if raw.is_empty() {
        return None;
    }
    Some(percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

fn auth_value_re(key: &str) -> Regex {
    Regex::new(&format!(r"(?:^|\s){}(?:=| )([^;]*)", regex::escape(key))).expect("escaped key")
}

static TOKENID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+)!([A-Za-z][A-Za-z0-9.\-_]+)$").expect("static regex")
});

/// Splits `user@realm!name=secret` at the last `=` and checks the token id shape.
/// Returns (userid, token name, secret).
pub fn split_token(value: &str) -> Option<(String, String, String)> {
    let (id, secret) = value.rsplit_once('=')?;
    let c = TOKENID_RE.captures(id)?;
    Some((c[1].to_string(), c[2].to_string(), secret.to_string()))
}

/// `verify_token`: user enabled, token exists, not expired, secret matches.
pub fn verify_token(st: &Cluster, value: &str, now: i64) -> Option<AuthUser> {
    let (userid, name, secret) = split_token(value)?;
    let user = st.users.get(&userid)?;
    if !user.enable || (user.expire > 0 && user.expire < now) {
        return None;
    }
    let token = st.tokens.get(&format!("{userid}!{name}"))?;
    if token.expire > 0 && token.expire < now {
        return None;
    }
    if !constant_time_eq(token.secret.as_bytes(), secret.as_bytes()) {
        return None;
    }
    Some(AuthUser { userid, tokenid: Some(name), ticket: false })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>());
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>());
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// A ticket `PVE:<userid>:<8 hex time>::<base64 signature>`.
pub fn make_ticket(key: &str, userid: &str, now: i64) -> String {
    let data = format!("PVE:{userid}:{now:08X}");
    let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(key.as_bytes(), data.as_bytes()));
    format!("{data}::{sig}")
}

/// Verifies a ticket; returns the userid when valid and not older than 2 h.
pub fn verify_ticket(key: &str, ticket: &str, now: i64) -> Option<String> {
    let (data, sig) = ticket.split_once("::")?;
    let rest = data.strip_prefix("PVE:")?;
    let (userid, time) = rest.rsplit_once(':')?;
    let t = i64::from_str_radix(time, 16).ok()?;
    let age = now - t;
    if !(-300..TICKET_LIFETIME).contains(&age) {
        return None;
    }
    let want = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(key.as_bytes(), data.as_bytes()));
    constant_time_eq(want.as_bytes(), sig.as_bytes()).then(|| userid.to_string())
}

/// A CSRF prevention token `<8 hex time>:<base64 HMAC-SHA256("time:userid")>` (unpadded).
pub fn make_csrf(key: &str, userid: &str, now: i64) -> String {
    let ts = format!("{now:08X}");
    let sig = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(hmac_sha256(key.as_bytes(), format!("{ts}:{userid}").as_bytes()));
    format!("{ts}:{sig}")
}

/// Verifies a CSRF prevention token for `userid`.
pub fn verify_csrf(key: &str, userid: &str, token: &str, now: i64) -> bool {
    let Some((ts, _)) = token.split_once(':') else { return false };
    let Ok(t) = i64::from_str_radix(ts, 16) else { return false };
    let age = now - t;
    if !(-300..TICKET_LIFETIME).contains(&age) {
        return false;
    }
    constant_time_eq(make_csrf(key, userid, t).as_bytes(), token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_header_is_parsed_like_pve() {
        let v = extract_auth_value("PVEAPIToken=root@pam!ci=0b1c-uuid", "PVEAPIToken").unwrap();
        assert_eq!(v, "root@pam!ci=0b1c-uuid");
        let v = extract_auth_value("PVEAPIToken root%40pam!ci=a%3Db", "PVEAPIToken").unwrap();
        assert_eq!(v, "root@pam!ci=a=b");
        // The split is at the last `=`, so the token name would be `ci=a`: not a valid name.
        assert!(split_token(&v).is_none());
        let (u, t, s) = split_token("root@pam!ci=s3cr3t").unwrap();
        assert_eq!((u.as_str(), t.as_str(), s.as_str()), ("root@pam", "ci", "s3cr3t"));
        assert!(split_token("root@pam!ci=x").is_some());
        assert!(split_token("root@pam=x").is_none());
        assert_eq!(extract_auth_value("Bearer x", "PVEAPIToken"), None);
        assert_eq!(extract_auth_value("a=b; PVEAuthCookie=PVE%3Aroot; c=d", "PVEAuthCookie").unwrap(), "PVE:root");
    }

    #[test]
    fn tickets_and_csrf_verify_and_expire() {
        let t = make_ticket("k", "root@pam", 1_700_000_000);
        assert!(t.starts_with("PVE:root@pam:6553F100::"));
        assert_eq!(verify_ticket("k", &t, 1_700_000_100).as_deref(), Some("root@pam"));
        assert_eq!(verify_ticket("other", &t, 1_700_000_100), None);
        assert_eq!(verify_ticket("k", &t, 1_700_000_000 + TICKET_LIFETIME + 1), None);
        let c = make_csrf("k", "root@pam", 1_700_000_000);
        assert!(verify_csrf("k", "root@pam", &c, 1_700_000_010));
        assert!(!verify_csrf("k", "bob@pve", &c, 1_700_000_010));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
