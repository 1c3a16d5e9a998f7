//! The `Upid` type: PVE's unique task id, parsed and printed back exactly.
//!
//! Layout (pve-common `PVE::UPID`):
//! `UPID:<node>:<pid 8 hex>:<pstart 8-9 hex>:<starttime 8 hex>:<type>:<id>:<user>:`.
//! `id` may be empty (uploads: `...:imgcopy::root@pam:`) and `user` may be an API
//! token id (`root@pam!ci`). The string is kept verbatim so that `Display` returns
//! exactly what PVE sent, whatever the case of its hex digits.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// PVE's own parse regex (pve-common `src/PVE/UPID.pm`), unchanged.
static UPID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$",
    )
    .expect("static UPID regex")
});

/// A parsed task id (cheap to clone). Equality and hashing use the exact string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid(Arc<Parts>);

#[derive(PartialEq, Eq, Hash)]
struct Parts {
    raw: String,
    node: String,
    pid: u32,
    pstart: u64,
    starttime: u32,
    task_type: String,
    id: String,
    user: String,
}

/// Why a string is not a UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse worker upid '{0}'")]
pub struct UpidParseError(pub String);

impl Upid {
    /// Parses a UPID with PVE's regex.
    pub fn parse(s: &str) -> Result<Self, UpidParseError> {
        let err = || UpidParseError(s.to_string());
        let c = UPID_RE.captures(s).ok_or_else(err)?;
        let hex32 = |i: usize| u32::from_str_radix(&c[i], 16).map_err(|_| err());
        Ok(Self(Arc::new(Parts {
            raw: s.to_string(),
            node: c[1].to_string(),
            pid: hex32(3)?,
            pstart: u64::from_str_radix(&c[4], 16).map_err(|_| err())?,
            starttime: hex32(5)?,
            task_type: c[6].to_string(),
            id: c[7].to_string(),
            user: c[8].to_string(),
        })))
    }

    /// Builds a UPID the way PVE's `upid_encode` does (uppercase `%08X`).
    pub fn new(
        node: &str,
        pid: u32,
        pstart: u64,
        starttime: u32,
        task_type: &str,
        id: &str,
        user: &str,
    ) -> Result<Self, UpidParseError> {
        Self::parse(&format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{id}:{user}:"))
    }

    /// The node that runs the task; its status is read from this node.
    pub fn node(&self) -> &str {
        &self.0.node
    }
    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }
    /// The worker's process start time in clock ticks since boot.
    pub fn pstart(&self) -> u64 {
        self.0.pstart
    }
    /// Task start, unix epoch seconds.
    pub fn starttime(&self) -> u32 {
        self.0.starttime
    }
    /// The task type, e.g. `qmstart`, `vzdump`, `imgcopy`.
    pub fn task_type(&self) -> &str {
        &self.0.task_type
    }
    /// The task's object id (usually a vmid); may be empty.
    pub fn id(&self) -> &str {
        &self.0.id
    }
    /// The user or API token id that started the task.
    pub fn user(&self) -> &str {
        &self.0.user
    }
    /// The exact string.
    pub fn as_str(&self) -> &str {
        &self.0.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.raw)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.0.raw)
    }
}

impl FromStr for Upid {
    type Err = UpidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.raw)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_facts_example() {
        let s = "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:";
        let u = Upid::parse(s).unwrap();
        assert_eq!(u.node(), "pve1");
        assert_eq!(u.pid(), 0x000F_F1FD);
        assert_eq!(u.pstart(), 0x10F9_374C);
        assert_eq!(u.starttime(), 0x630D_702C);
        assert_eq!(u.task_type(), "vzdump");
        assert_eq!(u.id(), "110");
        assert_eq!(u.user(), "root@pam");
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn accepts_nine_digit_pstart_empty_id_and_token_user() {
        let s = "UPID:pve-node-2:0000A1B2:1ABCDEF01:65F0A0B0:imgcopy::root@pam!nimbus:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(u.pstart(), 0x1_ABCD_EF01);
        assert_eq!(u.id(), "");
        assert_eq!(u.user(), "root@pam!nimbus");
        assert_eq!(u.node(), "pve-node-2");
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn display_keeps_lowercase_hex_verbatim() {
        let s = "UPID:pve1:000ff1fd:10f9374c:630d702c:qmstart:100:root@pam:";
        assert_eq!(Upid::parse(s).unwrap().to_string(), s);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam", // no trailing colon
            "UPID:pve1:FF1FD:10F9374C:630D702C:vzdump:110:root@pam:",   // short pid
            "UPID:pve1:000FF1FD:10F9374:630D702C:vzdump:110:root@pam:", // 7-digit pstart
            "UPID:pve1:000FF1FD:10F9374C0A:630D702C:vzdump:110:root@pam:", // 10-digit pstart
            "UPID:-pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:", // node starts with '-'
            "UPID:pve1:000FF1FD:10F9374C:630D702C::110:root@pam:",      // empty type
            "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110::",        // empty user
            "UPID:pve1:000FF1FD:10F9374C:630D702C:vz dump:110:root@pam:", // whitespace
            "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:1/0:root@pam:", // slash in id
            "",
        ] {
            assert!(Upid::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn new_formats_uppercase_padded() {
        let u = Upid::new("pve1", 0x1f, 0xabc, 0x6000_0000, "qmstart", "100", "a@pve!t").unwrap();
        assert_eq!(u.as_str(), "UPID:pve1:0000001F:00000ABC:60000000:qmstart:100:a@pve!t:");
    }

    #[test]
    fn serde_roundtrip_as_string() {
        let s = "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:";
        let u: Upid = serde_json::from_str(&format!("\"{s}\"")).unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), format!("\"{s}\""));
        assert!(serde_json::from_str::<Upid>("\"nope\"").is_err());
    }
}
