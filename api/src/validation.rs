//! Validation of what clients send, as small pure functions: DNS-safe names, sizes in range,
//! OpenSSH public keys. Each returns every problem it finds, so a client fixes its request in
//! one round trip.

use base64::Engine;

use crate::error::FieldError;

/// Cores a guest may have.
pub const CORES: std::ops::RangeInclusive<u32> = 1..=64;
/// Memory a guest may have, MiB.
pub const MEMORY_MIB: std::ops::RangeInclusive<u64> = 256..=262_144;
/// Disk a guest may have, GiB.
pub const DISK_GIB: std::ops::RangeInclusive<u64> = 1..=4_096;
/// SSH keys per guest.
pub const MAX_SSH_KEYS: usize = 20;

/// Whether `name` is a DNS label Nimbus accepts as a guest name (it becomes the hostname): 1-63
/// of `a-z`, `0-9`, `-`, not starting or ending with `-` (RFC 1123; lowercase only, like the
/// `instances_name_check` constraint).
pub fn dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1-63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("may contain only lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-'");
    }
    Ok(())
}

/// Key types OpenSSH writes in `authorized_keys`.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Whether `key` looks like an OpenSSH public key line: `TYPE BASE64 [comment]` on one line,
/// where the base64 blob decodes and starts with the same type (RFC 4253 §6.6: the blob begins
/// with the key type as a length-prefixed string).
pub fn ssh_public_key(key: &str) -> Result<(), &'static str> {
    if key.len() > 16_384 || key.contains(['\n', '\r', '\0']) {
        return Err("must be a single line of at most 16 KiB");
    }
    let mut parts = key.split_ascii_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("must look like 'ssh-ed25519 AAAA... comment'");
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err("unsupported key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, sk-*)");
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|_| "the key data is not base64")?;
    let declared = decoded
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| decoded.get(4..4 + n))
        .ok_or("the key data is truncated")?;
    if declared != kind.as_bytes() {
        return Err("the key data does not match its type");
    }
    Ok(())
}

/// Checks that `value` lies in `range`, naming the range in the error.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
    unit: &str,
    errors: &mut Vec<FieldError>,
) {
    if !range.contains(&value) {
        errors.push(FieldError::new(field, format!("must be between {} and {}{unit}", range.start(), range.end())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key.
    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

    #[test]
    fn dns_labels() {
        assert!(dns_label("web-1").is_ok());
        assert!(dns_label("a").is_ok());
        assert!(dns_label(&"a".repeat(63)).is_ok());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_label("").is_err());
        assert!(dns_label("Web").is_err());
        assert!(dns_label("-web").is_err());
        assert!(dns_label("web-").is_err());
        assert!(dns_label("web_1").is_err());
        assert!(dns_label("web.example").is_err());
    }

    #[test]
    fn ssh_keys() {
        assert_eq!(ssh_public_key(ED25519), Ok(()));
        assert_eq!(ssh_public_key(ED25519.rsplit_once(' ').unwrap().0), Ok(()), "the comment is optional");
        assert!(ssh_public_key("ssh-ed25519").is_err());
        assert!(ssh_public_key("ssh-dss AAAAB3NzaC1kc3M= x").is_err());
        assert!(ssh_public_key("ssh-ed25519 !!!notbase64 x").is_err());
        // A valid ed25519 blob declared as RSA.
        let lie = ED25519.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert_eq!(ssh_public_key(&lie), Err("the key data does not match its type"));
        assert!(ssh_public_key(&format!("{ED25519}\nssh-ed25519 AAAA")).is_err());
        assert!(ssh_public_key("ssh-ed25519 AAAA x").is_err(), "truncated blob");
    }

    #[test]
    fn ranges_name_their_bounds() {
        let mut errors = Vec::new();
        in_range("cores", 0, &CORES, "", &mut errors);
        in_range("cores", 4, &CORES, "", &mut errors);
        in_range("memory", 128, &MEMORY_MIB, " MiB", &mut errors);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0], FieldError::new("cores", "must be between 1 and 64"));
        assert_eq!(errors[1].message, "must be between 256 and 262144 MiB");
    }
}
