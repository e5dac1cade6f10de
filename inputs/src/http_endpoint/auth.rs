//! Request authentication of the `http_endpoint` input: a shared secret in a
//! header (`secret.header`/`secret.value`) and an HMAC signature of the body
//! (`hmac.*`, as GitHub webhooks and Anomali's ThreatStream integrator send).
//!
//! Both comparisons run in constant time, and neither the configured secret
//! nor what a client sent is ever logged or echoed back.

use base64::Engine;
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, KeyInit};
use hmac::{Mac, SimpleHmac};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use threatbeat_core::secret::Secret;

/// `secret.*`: the request must carry `header: value`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// The header name (case-insensitive).
    pub header: String,
    /// The value it must hold.
    pub value: Secret,
}

/// The hash of `hmac.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacType {
    /// HMAC-SHA256 (the default).
    #[default]
    Sha256,
    /// HMAC-SHA1 (older webhooks).
    Sha1,
}

/// `hmac.*`: the header holds `prefix` + the HMAC of the raw body keyed by `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The header carrying the signature (case-insensitive).
    pub header: String,
    /// The shared key.
    pub key: Secret,
    /// `sha256` (default) or `sha1`.
    #[serde(rename = "type", default)]
    pub kind: HmacType,
    /// Text before the signature in the header (`sha256=`); may be empty.
    #[serde(default)]
    pub prefix: String,
}

/// Why a request is not authenticated. The text is safe to send back and
/// to log: it names the header, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The secret header is absent.
    #[error("missing header {0}")]
    MissingHeader(String),
    /// The secret header holds another value.
    #[error("incorrect secret in header {0}")]
    WrongSecret(String),
    /// The signature header is absent or not `prefix` + hex/base64.
    #[error("malformed signature in header {0}")]
    MalformedSignature(String),
    /// The signature does not match the body.
    #[error("invalid HMAC signature in header {0}")]
    BadSignature(String),
}

impl SecretConfig {
    /// Checks the header value the request carried.
    pub fn check(&self, sent: Option<&[u8]>) -> Result<(), AuthError> {
        let sent = sent.ok_or_else(|| AuthError::MissingHeader(self.header.clone()))?;
        if constant_time_eq(sent, self.value.expose().as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::WrongSecret(self.header.clone()))
        }
    }
}

impl HmacConfig {
    /// Checks the signature header against the HMAC of `body`.
    pub fn check(&self, sent: Option<&[u8]>, body: &[u8]) -> Result<(), AuthError> {
        let sent = sent.ok_or_else(|| AuthError::MissingHeader(self.header.clone()))?;
        let malformed = || AuthError::MalformedSignature(self.header.clone());
        let text = std::str::from_utf8(sent).map_err(|_| malformed())?.trim();
        let signature = text.strip_prefix(self.prefix.as_str()).ok_or_else(malformed)?;
        let expected = self.sign(body);
        // Hex (what GitHub-style senders use) first, then base64.
        let decoded = decode_hex(signature)
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(signature).ok())
            .ok_or_else(malformed)?;
        if constant_time_eq(&decoded, &expected) {
            Ok(())
        } else {
            Err(AuthError::BadSignature(self.header.clone()))
        }
    }

    /// The HMAC of `body` with the configured key and hash.
    pub fn sign(&self, body: &[u8]) -> Vec<u8> {
        let key = self.key.expose().as_bytes();
        match self.kind {
            HmacType::Sha256 => hmac::<sha2::Sha256>(key, body),
            HmacType::Sha1 => hmac::<sha1::Sha1>(key, body),
        }
    }
}

/// HMAC (RFC 2104) of `message` keyed by `key`, over any block hash.
pub fn hmac<D: Digest + BlockSizeUser>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <SimpleHmac<D> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length (longer ones are hashed first)");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Bytes from hex text (either case); `None` when it is not hex.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect()
}

/// Equality whose time depends only on the lengths, not on where the first
/// difference is: a client cannot find the secret byte by byte by timing
/// answers. (The length of a signature is public anyway.)
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.ct_eq(right).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_config(prefix: &str) -> HmacConfig {
        HmacConfig {
            header: "X-Filebeat-Signature".into(),
            key: Secret::new("key"),
            kind: HmacType::Sha256,
            prefix: prefix.into(),
        }
    }

    #[test]
    fn hmac_matches_the_rfc_vectors() {
        // The `hmac` crate computes them; these pin the key handling we rely on.
        // RFC 4231 test case 2.
        assert_eq!(
            to_hex(&hmac::<sha2::Sha256>(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 4231 test case 6: a key longer than the block is hashed first.
        assert_eq!(
            to_hex(&hmac::<sha2::Sha256>(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // RFC 2202 test case 2.
        assert_eq!(
            to_hex(&hmac::<sha1::Sha1>(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn signatures_are_checked_with_their_prefix() {
        let config = hmac_config("sha256=");
        let body = br#"{"id": 1}"#;
        let good = format!("sha256={}", to_hex(&config.sign(body)));
        assert_eq!(config.check(Some(good.as_bytes()), body), Ok(()));
        let upper = format!("sha256={}", to_hex(&config.sign(body)).to_uppercase());
        assert_eq!(config.check(Some(upper.as_bytes()), body), Ok(()));
        let base64 = format!(
            "sha256={}",
            base64::engine::general_purpose::STANDARD.encode(config.sign(body))
        );
        assert_eq!(config.check(Some(base64.as_bytes()), body), Ok(()));
        assert!(matches!(
            config.check(Some(good.as_bytes()), b"{\"id\": 2}"),
            Err(AuthError::BadSignature(_))
        ));
        let unprefixed = to_hex(&config.sign(body));
        assert!(matches!(
            config.check(Some(unprefixed.as_bytes()), body),
            Err(AuthError::MalformedSignature(_))
        ));
        assert!(matches!(
            config.check(None, body),
            Err(AuthError::MissingHeader(_))
        ));
    }

    #[test]
    fn secrets_compare_whole_values_and_never_print() {
        let config = SecretConfig {
            header: "X-Secret".into(),
            value: Secret::new("s3cr3t"),
        };
        assert_eq!(config.check(Some(b"s3cr3t")), Ok(()));
        for wrong in [&b"s3cr3"[..], b"s3cr3t!", b"S3CR3T", b""] {
            let error = config.check(Some(wrong)).unwrap_err();
            assert!(!error.to_string().contains("s3cr3"), "{error}");
        }
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b"b"));
    }
}
