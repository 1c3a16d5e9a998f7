//! The cluster connection as the processes that talk to Proxmox read it from their environment:
//! `PVE_URL`, `PVE_TOKEN`, and at most one of `PVE_FINGERPRINT`, `PVE_CA_FILE`, `PVE_INSECURE`.
//! One reader, so the API and the workers accept exactly the same settings.

use std::fmt;
use std::path::PathBuf;

use crate::config::{ApiToken, TlsMode};

/// Where the cluster is and how to trust and authenticate to it.
#[derive(Debug, Clone)]
pub struct PveEnv {
    /// `PVE_URL`, e.g. `https://pve.example.net:8006`.
    pub url: String,
    /// `PVE_TOKEN`, `user@realm!tokenid=secret`.
    pub token: ApiToken,
    /// From `PVE_FINGERPRINT`, `PVE_CA_FILE` or `PVE_INSECURE`; the public CAs when none is set.
    pub tls: TlsMode,
}

/// A variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for EnvError {}

impl PveEnv {
    /// Reads the variables through `get` (the environment, or a map in tests); blank values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<PveEnv, EnvError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let err = |var: &'static str, problem: &str| EnvError { var, problem: problem.into() };
        let url = get("PVE_URL").ok_or_else(|| err("PVE_URL", "is required"))?;
        let token = get("PVE_TOKEN").ok_or_else(|| err("PVE_TOKEN", "is required"))?;
        let token = ApiToken::parse(&token).map_err(|_| err("PVE_TOKEN", "must be user@realm!tokenid=secret"))?;
        let insecure = match get("PVE_INSECURE").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no") => false,
            Some(_) => return Err(err("PVE_INSECURE", "must be true or false")),
        };
        let tls = match [get("PVE_FINGERPRINT"), get("PVE_CA_FILE"), insecure.then(String::new)] {
            [Some(fp), None, None] => TlsMode::Fingerprint(fp),
            [None, Some(ca), None] => TlsMode::CaFile(PathBuf::from(ca)),
            [None, None, Some(_)] => TlsMode::Insecure,
            [None, None, None] => TlsMode::System,
            _ => return Err(err("PVE_FINGERPRINT", "set only one of PVE_FINGERPRINT, PVE_CA_FILE, PVE_INSECURE")),
        };
        Ok(PveEnv { url, token, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<PveEnv, EnvError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PveEnv::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    const BASE: &[(&str, &str)] = &[("PVE_URL", "https://pve:8006"), ("PVE_TOKEN", "root@pam!nimbus=secret")];

    #[test]
    fn trust_comes_from_at_most_one_variable() {
        assert_eq!(read(BASE).unwrap().tls, TlsMode::System);
        let fp = [BASE, &[("PVE_FINGERPRINT", "AB:CD")]].concat();
        assert_eq!(read(&fp).unwrap().tls, TlsMode::Fingerprint("AB:CD".into()));
        let ca = [BASE, &[("PVE_CA_FILE", "/etc/pve.pem"), ("PVE_FINGERPRINT", " ")]].concat();
        assert_eq!(read(&ca).unwrap().tls, TlsMode::CaFile("/etc/pve.pem".into()));
        let insecure = [BASE, &[("PVE_INSECURE", "yes")]].concat();
        assert_eq!(read(&insecure).unwrap().tls, TlsMode::Insecure);
        let both = [BASE, &[("PVE_FINGERPRINT", "AB"), ("PVE_INSECURE", "1")]].concat();
        assert_eq!(read(&both).unwrap_err().var, "PVE_FINGERPRINT");
        let bad = [BASE, &[("PVE_INSECURE", "maybe")]].concat();
        assert_eq!(read(&bad).unwrap_err().var, "PVE_INSECURE");
    }

    #[test]
    fn url_and_token_are_required_and_checked() {
        assert_eq!(read(&[("PVE_TOKEN", "root@pam!n=s")]).unwrap_err().var, "PVE_URL");
        assert_eq!(read(&[("PVE_URL", "https://pve:8006")]).unwrap_err().var, "PVE_TOKEN");
        let bad = [("PVE_URL", "https://pve:8006"), ("PVE_TOKEN", "not-a-token")];
        assert_eq!(read(&bad).unwrap_err().var, "PVE_TOKEN");
    }
}
