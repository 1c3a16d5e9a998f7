//! Standard Webhooks v1: a secret is `whsec_` and the base64 of 24 to 64 random bytes; a
//! delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`,
//! a space-separated list of `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//! secret in force (two while a secret is being rotated).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of every secret.
pub const PREFIX: &str = "whsec_";
/// The random bytes in a new secret.
const SECRET_BYTES: usize = 32;

/// A signing secret (its key bytes; `Debug` never shows them).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A string that is not a secret of this form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a webhook secret is 'whsec_' and the base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl Secret {
    /// A new random secret.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Secret(key)
    }

    /// Reads `whsec_…`.
    pub fn parse(s: &str) -> Result<Secret, BadSecret> {
        let key = STANDARD.decode(s.strip_prefix(PREFIX).ok_or(BadSecret)?).map_err(|_| BadSecret)?;
        if (24..=64).contains(&key.len()) { Ok(Secret(key)) } else { Err(BadSecret) }
    }

    /// `whsec_…`, as stored and shown to the endpoint's owner once.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<signature>` of one message.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret in `secrets`, space-separated.
pub fn sign(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.signature(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks specification (spec/standard-webhooks.md).
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("the spec's secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let secret = Secret::generate();
        let encoded = secret.encode();
        assert!(encoded.starts_with("whsec_"));
        assert_eq!(Secret::parse(&encoded).unwrap(), secret);
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(BadSecret), "5 bytes is too short");
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(BadSecret), "no prefix");
        assert!(!format!("{secret:?}").contains(&encoded[6..]), "Debug hides the key");
    }

    #[test]
    fn a_rotation_sends_both_signatures() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let header = sign(&[&new, &old], "msg_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [new.signature("msg_1", 1, b"{}"), old.signature("msg_1", 1, b"{}")]);
        assert_ne!(parts[0], parts[1]);
    }
}
