//! The cluster connection as the processes that talk to Proxmox read it from their environment:
//! `PVE_URL`, `PVE_TOKEN`, at most one of `PVE_FINGERPRINT`, `PVE_CA_FILE`, `PVE_INSECURE`,
//! and `PVE_ALLOW_HTTP` (a lab's plain-HTTP `PVE_URL`; refused without it).
//! One reader, so the API and the workers accept exactly the same settings.

use std::fmt;
use std::path::PathBuf;

use crate::config::{ApiToken, ClientConfig, TlsMode};

/// Where the cluster is and how to trust and authenticate to it.
#[derive(Debug, Clone)]
pub struct PveEnv {
    /// `PVE_URL`, e.g. `https://pve.example.net:8006`.
    pub url: String,
    /// `PVE_TOKEN`, `user@realm!tokenid=secret`.
    pub token: ApiToken,
    /// From `PVE_FINGERPRINT`, `PVE_CA_FILE` or `PVE_INSECURE`; the public CAs when none is set.
    pub tls: TlsMode,
    /// `PVE_ALLOW_HTTP`: an `http://` `PVE_URL` is accepted (labs only; the token travels in clear).
    pub allow_http: bool,
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
        let flag = |var: &'static str| match get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no") => Ok(false),
            Some(_) => Err(err(var, "must be true or false")),
        };
        let insecure = flag("PVE_INSECURE")?;
        let allow_http = flag("PVE_ALLOW_HTTP")?;
        if url.trim().get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) && !allow_http {
            return Err(err(
                "PVE_URL",
                "is http://, which would send the API token in clear: use https://, or set PVE_ALLOW_HTTP=true in a lab",
            ));
        }
        let tls = match [get("PVE_FINGERPRINT"), get("PVE_CA_FILE"), insecure.then(String::new)] {
            [Some(fp), None, None] => TlsMode::Fingerprint(fp),
            [None, Some(ca), None] => TlsMode::CaFile(PathBuf::from(ca)),
            [None, None, Some(_)] => TlsMode::Insecure,
            [None, None, None] => TlsMode::System,
            _ => return Err(err("PVE_FINGERPRINT", "set only one of PVE_FINGERPRINT, PVE_CA_FILE, PVE_INSECURE")),
        };
        Ok(PveEnv { url, token, tls, allow_http })
    }

    /// A [`ClientConfig`] with these settings and the client's defaults for the rest.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(&self.url, self.token.clone(), self.tls.clone()).allow_http(self.allow_http)
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

    #[test]
    fn plain_http_needs_the_lab_allowance() {
        let http = [("PVE_URL", "http://pve-sim:8006"), ("PVE_TOKEN", "root@pam!nimbus=secret")];
        let e = read(&http).unwrap_err();
        assert_eq!(e.var, "PVE_URL");
        assert!(e.problem.contains("PVE_ALLOW_HTTP"), "{e}");
        let upper = [("PVE_URL", " HTTP://pve-sim:8006"), http[1]];
        assert_eq!(read(&upper).unwrap_err().var, "PVE_URL");
        assert_eq!(read(&[http[0], http[1], ("PVE_ALLOW_HTTP", "false")]).unwrap_err().var, "PVE_URL");

        let lab = read(&[http[0], http[1], ("PVE_ALLOW_HTTP", "true")]).unwrap();
        assert!(lab.allow_http);
        assert!(lab.client_config().allow_http);
        assert!(crate::ProxmoxClient::new(lab.client_config()).is_ok());
        assert!(!read(BASE).unwrap().client_config().allow_http);
        let bad = [BASE, &[("PVE_ALLOW_HTTP", "sometimes")]].concat();
        assert_eq!(read(&bad).unwrap_err().var, "PVE_ALLOW_HTTP");
    }
}
