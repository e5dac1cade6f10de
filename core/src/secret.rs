//! A string that never prints: API keys, passwords, tokens.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints as, in logs, errors and `export config`.
pub const REDACTED: &str = "[REDACTED]";

/// A secret value. `Debug`, `Display` and `Serialize` all print
/// [`REDACTED`]; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (not configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// `text` with the credentials of every URL in it replaced by [`REDACTED`]:
/// the password of `scheme://user:password@host` (or the whole userinfo of
/// `scheme://token@host`). Wherever a URL is logged or exported, it goes
/// through here, so a `var.url` with credentials written inline never shows
/// them.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let authority_start = found + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let authority_len = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(REDACTED),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_redacted_wherever_they_appear() {
        assert_eq!(
            redact_userinfo("GET http://user:hunter2@misp.example:8443/events?x=1 failed"),
            "GET http://user:[REDACTED]@misp.example:8443/events?x=1 failed"
        );
        assert_eq!(
            redact_userinfo(r#"proxy_url="https://t0ken@proxy:3128" and ftp://a:b@c"#),
            r#"proxy_url="https://[REDACTED]@proxy:3128" and ftp://a:[REDACTED]@c"#
        );
        // An `@` after the authority is no credential.
        assert_eq!(redact_userinfo("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact_userinfo("no url: a@b"), "no url: a@b");
        assert_eq!(redact_userinfo("trailing ://"), "trailing ://");
    }

    #[test]
    fn never_prints_its_value() {
        let secret: Secret = serde_json::from_str("\"s3cr3t-key\"").unwrap();
        assert_eq!(secret.expose(), "s3cr3t-key");
        for printed in [
            format!("{secret}"),
            format!("{secret:?}"),
            serde_json::to_string(&secret).unwrap(),
        ] {
            assert!(!printed.contains("s3cr3t"), "{printed}");
        }
    }
}
