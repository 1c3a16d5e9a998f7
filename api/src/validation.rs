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

/// Whether `text` can be shown as a name (API keys, tenants, users' display names): no control
/// characters, no bidirectional overrides or isolates (which make a name read differently from
/// what it is, "Trojan Source"), and at least one visible character (a name of only spaces,
/// zero-width or filler characters impersonates "nothing", or another name beside it).
pub fn display_text(text: &str) -> Result<(), &'static str> {
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if text.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional control characters");
    }
    if text.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err("must contain a visible character");
    }
    Ok(())
}

/// Unicode's bidirectional formatting characters (UAX #9): marks, embeddings, overrides and
/// isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing: format characters (zero-width spaces and joiners, word
/// joiner, soft hyphen, BOM, invisible operators, tags) and the blank "fillers" that pass for
/// letters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
    ) || is_bidi_control(c)
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
    fn display_text_refuses_controls_bidi_and_invisible_only_names() {
        assert_eq!(display_text("CI deploy key"), Ok(()));
        assert_eq!(display_text("Zoë's café 東京"), Ok(()));
        assert_eq!(display_text("a\u{200B}b"), Ok(()), "a zero-width space between visible letters is harmless");
        assert!(display_text("tab\there").is_err());
        assert!(display_text("admin\u{202E}yek").is_err(), "right-to-left override");
        assert!(display_text("x\u{2066}y\u{2069}").is_err(), "isolates");
        assert!(display_text("\u{200B}\u{200C}").is_err());
        assert!(display_text("\u{3164}").is_err(), "Hangul filler");
        assert!(display_text(" \u{00A0}\u{FEFF}").is_err());
        assert!(display_text("\u{E0041}").is_err(), "tag characters");
    }

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
