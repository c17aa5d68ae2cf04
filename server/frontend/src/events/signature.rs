//! Webhook signatures as the [Standard Webhooks] specification (1.0.0) says,
//! so that a receiver can check with any of its libraries that a delivery
//! came from this server and was not altered or replayed late.
//!
//! A secret is `whsec_` followed by the base64 of 24 to 64 random bytes
//! (the specification's bounds: at least 192 bits, at most 512). The
//! signature of one attempt is `v1,` + base64(HMAC-SHA256(secret,
//! "{id}.{timestamp}.{body}")); with several secrets (while rotating one)
//! `webhook-signature` carries one such signature per secret, separated by
//! spaces, and a receiver accepts the delivery when any of them matches.
//!
//! Secrets are key material: nothing here formats one, [`Secret`]'s `Debug`
//! shows only that it exists, and errors name the line of the file, never
//! its text.
//!
//! [Standard Webhooks]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

use std::fmt;
use std::path::Path;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a secret starts with, so that it is recognisable wherever it is
/// pasted, and told apart from the asymmetric `whsk_` keys.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest and longest secret, in bytes, per the specification.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Secrets are written with or without base64 padding (the reference
/// libraries accept both), so decoding does not insist on either.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a secret file cannot be used. The message is the problem alone: the
/// caller names the file (and the flag that gave it).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("no secret in it (expected a line `whsec_` + base64)")]
    Empty,
    #[error("line {line} is not a Standard Webhooks secret: {why}")]
    Malformed { line: usize, why: MalformedSecret },
}

/// What is wrong with one secret. Says nothing of its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSecret {
    #[error("it does not start with `whsec_`")]
    NoPrefix,
    #[error("the part after `whsec_` is not base64")]
    NotBase64,
    #[error("it decodes to {0} bytes; a secret is 24 to 64 random bytes")]
    Length(usize),
}

/// One HMAC-SHA256 key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Secret, MalformedSecret> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(MalformedSecret::NoPrefix)?;
        let key = LENIENT
            .decode(b64)
            .map_err(|_| MalformedSecret::NotBase64)?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err(MalformedSecret::Length(key.len()));
        }
        Ok(Secret(key))
    }

    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The secrets of one webhook subscription; every delivery is signed with
/// each of them.
#[derive(Debug, Clone)]
pub struct Signer {
    secrets: Vec<Secret>,
}

impl Signer {
    /// Reads a secret file: one `whsec_` secret per line (more than one
    /// while rotating: the new one and the one the receiver still checks);
    /// blank lines and lines starting with `#` are ignored, so the file can
    /// say what it is for.
    pub fn from_file(path: &Path) -> Result<Signer, SecretError> {
        let text = std::fs::read_to_string(path).map_err(SecretError::Read)?;
        Signer::parse(&text)
    }

    /// [`Signer::from_file`] on text already read.
    pub fn parse(text: &str) -> Result<Signer, SecretError> {
        let mut secrets = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let secret =
                Secret::parse(line).map_err(|why| SecretError::Malformed { line: i + 1, why })?;
            secrets.push(secret);
        }
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Signer { secrets })
    }

    /// How many secrets sign each delivery.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The `webhook-signature` value of one attempt of message `id` sent at
    /// `timestamp` (Unix seconds) with exactly `body`.
    ///
    /// `id` must hold no `.`: the signed content is `.`-delimited, and an id
    /// with one could make two different (id, timestamp) pairs sign alike.
    /// The event bus makes ids of hex digits, digits and `-` only.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        debug_assert!(!id.contains('.'), "a webhook id holds no '.': {id}");
        let sigs: Vec<String> = self
            .secrets
            .iter()
            .map(|s| s.sign(id, timestamp, body))
            .collect();
        sigs.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference libraries' own test vector (standard-webhooks,
    /// libraries/*/tests): this secret, id, timestamp and payload sign to
    /// exactly this.
    #[test]
    fn signs_the_reference_test_vector() {
        let s = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn each_secret_of_a_rotation_signs_space_separated() {
        let one = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let two = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let s = Signer::parse(&format!("# hook A, rotating\n{two}\n\n  {one}  \n")).unwrap();
        assert_eq!(s.len(), 2);
        let sig = s.sign("a-1", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], Signer::parse(&two).unwrap().sign("a-1", 1, b"{}"));
        assert_eq!(parts[1], Signer::parse(one).unwrap().sign("a-1", 1, b"{}"));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn padding_is_optional() {
        // 32 bytes: 43 base64 characters and one `=`.
        let padded = format!("whsec_{}", STANDARD.encode([9u8; 32]));
        assert!(padded.ends_with('='));
        let bare = padded.trim_end_matches('=');
        let a = Signer::parse(&padded).unwrap().sign("x", 2, b"b");
        let b = Signer::parse(bare).unwrap().sign("x", 2, b"b");
        assert_eq!(a, b);
    }

    #[test]
    fn malformed_secrets_are_named_by_line_never_quoted() {
        let short = format!("whsec_{}", STANDARD.encode([1u8; 16]));
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        let cases: [(&str, &str); 5] = [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "line 1 is not a Standard Webhooks secret: it does not start with `whsec_`"),
            ("# c\nwhsec_not*base64!!", "line 2 is not a Standard Webhooks secret: the part after `whsec_` is not base64"),
            (&short, "line 1 is not a Standard Webhooks secret: it decodes to 16 bytes; a secret is 24 to 64 random bytes"),
            (&long, "it decodes to 65 bytes"),
            ("\n# only a comment\n", "no secret in it"),
        ];
        for (text, want) in cases {
            let e = Signer::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            for line in text.lines().filter(|l| l.len() > 8) {
                assert!(!e.contains(line.trim()), "the error quotes the secret: {e}");
            }
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let s = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("MfKQ"), "{d}");
        assert!(d.contains("Secret(..)"), "{d}");
    }
}
