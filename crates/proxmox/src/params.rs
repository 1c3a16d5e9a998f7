//! Request parameter encoding: PVE's form bodies, query strings and `sshkeys`.
//!
//! PVE reads `application/x-www-form-urlencoded` POST/PUT bodies where booleans must
//! be the exact strings `1` and `0` (`true` fails the type check), and refuses any body
//! on GET and DELETE, whose parameters therefore go in the query string (FACTS §1.8,
//! §1.9). [`Params`] is the ordered name/value list for both; it is built from any
//! `Serialize` request struct, mapping JSON booleans to `1`/`0`, numbers to their
//! decimal text, dropping `null`s (unset `Option`s) and repeating the key for arrays.
//!
//! qemu's `sshkeys` is special: its schema format `urlencoded` only accepts
//! `[-%a-zA-Z0-9_.!~*'()]`, so the keys are percent-encoded once by
//! [`encode_sshkeys`] (space as `%20`, never `+`) and then form-encoded like any value.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Serialize;
use serde_json::Value;

use crate::error::{PveError, Result};

/// Ordered request parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one parameter.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((name.into(), value.into()));
        self
    }

    /// Appends one parameter (by value, for chaining).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }

    /// Appends a parameter if `value` is `Some`.
    pub fn with_opt(self, name: impl Into<String>, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.with(name, v.to_string()),
            None => self,
        }
    }

    /// Appends a boolean as PVE's `1`/`0`.
    pub fn with_bool(self, name: impl Into<String>, value: bool) -> Self {
        self.with(name, pve_bool(value))
    }

    /// Appends every parameter of `other`.
    pub fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    /// Encodes a request struct (or any JSON object) as parameters.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let json = serde_json::to_value(value)
            .map_err(|e| PveError::InvalidRequest(format!("cannot encode parameters: {e}")))?;
        Self::from_json(&json)
    }

    /// Encodes a JSON object as parameters; `null` means no parameters.
    pub fn from_json(value: &Value) -> Result<Self> {
        let mut out = Params::new();
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::Array(items) => {
                            for item in items {
                                if let Some(s) = scalar(k, item)? {
                                    out.push(k.clone(), s);
                                }
                            }
                        }
                        _ => {
                            if let Some(s) = scalar(k, v)? {
                                out.push(k.clone(), s);
                            }
                        }
                    }
                }
            }
            other => {
                return Err(PveError::InvalidRequest(format!("parameters must be a JSON object, got {other}")));
            }
        }
        Ok(out)
    }

    /// The value of the first parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name/value pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `application/x-www-form-urlencoded` text (also used as the query string).
    pub fn to_form(&self) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            ser.append_pair(k, v);
        }
        ser.finish()
    }
}

fn scalar(key: &str, v: &Value) -> Result<Option<String>> {
    Ok(match v {
        Value::Null => None,
        Value::Bool(b) => Some(pve_bool(*b).to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            return Err(PveError::InvalidRequest(format!("parameter '{key}' is nested; PVE form parameters are flat")));
        }
    })
}

/// PVE's boolean text.
pub fn pve_bool(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Characters left unescaped in qemu `sshkeys`: `[-a-zA-Z0-9_.!~*'()]`, which is what
/// PVE's `urlencoded` format accepts besides `%` (and what JavaScript's
/// `encodeURIComponent` leaves alone, as the PVE GUI uses it).
const SSHKEYS_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Encodes OpenSSH public keys (one per line) for qemu's `sshkeys` parameter.
pub fn encode_sshkeys<S: AsRef<str>>(keys: &[S]) -> String {
    let joined: Vec<&str> = keys.iter().map(|k| k.as_ref().trim()).collect();
    utf8_percent_encode(&joined.join("\n"), SSHKEYS_SET).to_string()
}

/// Decodes qemu's `sshkeys` as GET config returns it (still percent-encoded) into keys.
pub fn decode_sshkeys(encoded: &str) -> Vec<String> {
    percent_decode_str(encoded)
        .decode_utf8_lossy()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

    #[test]
    fn sshkeys_single_encoding() {
        let enc = encode_sshkeys(&[KEY]);
        assert_eq!(
            enc,
            "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS%2BgqAj3%2F2gOtI6dRPT%2BR%20test%40host"
        );
        // Only PVE's `urlencoded` alphabet remains.
        assert!(enc.chars().all(|c| c.is_ascii_alphanumeric() || "-%_.!~*'()".contains(c)));
    }

    #[test]
    fn sshkeys_multiple_keys_newline_and_equals() {
        let enc = encode_sshkeys(&["ssh-rsa AAA= a@b", "ssh-ed25519 BBB c"]);
        assert_eq!(enc, "ssh-rsa%20AAA%3D%20a%40b%0Assh-ed25519%20BBB%20c");
        assert_eq!(decode_sshkeys(&enc), vec!["ssh-rsa AAA= a@b", "ssh-ed25519 BBB c"]);
    }

    #[test]
    fn sshkeys_double_encoding_in_form_body() {
        let form = Params::new().with("sshkeys", encode_sshkeys(&[KEY])).to_form();
        // `%` itself is form-encoded: the server form-decodes, then un-escapes.
        assert!(form.starts_with("sshkeys=ssh-ed25519%2520AAAAC3"), "{form}");
        assert!(form.contains("%252B"));
        assert!(!form.contains('+'));
    }

    #[test]
    fn booleans_numbers_nulls_arrays() {
        #[derive(Serialize)]
        struct Req {
            full: Option<bool>,
            start: bool,
            newid: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<String>,
            pool: Option<String>,
            #[serde(rename = "exclude-path")]
            exclude_path: Vec<String>,
            cpulimit: f64,
        }
        let p = Params::from_serialize(&Req {
            full: Some(true),
            start: false,
            newid: 123,
            name: None,
            pool: None,
            exclude_path: vec!["/tmp".into(), "/var/cache".into()],
            cpulimit: 1.5,
        })
        .unwrap();
        assert_eq!(p.get("full"), Some("1"));
        assert_eq!(p.get("start"), Some("0"));
        assert_eq!(p.get("newid"), Some("123"));
        assert_eq!(p.get("name"), None);
        assert_eq!(p.get("pool"), None);
        assert_eq!(p.get("cpulimit"), Some("1.5"));
        let paths: Vec<_> = p.iter().filter(|(k, _)| *k == "exclude-path").collect();
        assert_eq!(paths.len(), 2);
    }

    #[test]
    fn form_encoding_of_property_strings() {
        let p = Params::new().with("net0", "virtio,bridge=vmbr0,firewall=1").with("description", "a b&c");
        assert_eq!(p.to_form(), "net0=virtio%2Cbridge%3Dvmbr0%2Cfirewall%3D1&description=a+b%26c");
    }

    #[test]
    fn rejects_nested_and_non_objects() {
        assert!(Params::from_json(&serde_json::json!({"a": {"b": 1}})).is_err());
        assert!(Params::from_json(&serde_json::json!([1, 2])).is_err());
        assert!(Params::from_json(&Value::Null).unwrap().is_empty());
    }
}
