//! `export config`: the effective configuration with secrets redacted.

use serde_json::Value;
use threatbeat_core::REDACTED;

use super::expand::looks_secret;

/// `value` with secrets replaced by [`REDACTED`]: the value of every
/// secret-looking key (`password`, `*token*`, `*secret*`, and any scalar
/// under a key naming an `auth` or a `key`), every value of a `headers` map
/// (`Authorization: Bearer …`), every inline PEM private key, the
/// credentials of every URL (`user:password@`, proxies included), and every
/// occurrence of a known secret value.
pub fn redacted(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| {
                    let item = if is_headers(key) {
                        redact_all_scalars(item)
                    } else if !item.is_null()
                        && (looks_secret(key) || (names_a_credential(key) && is_scalar(item)))
                    {
                        Value::String(REDACTED.to_owned())
                    } else {
                        redacted(item, secrets)
                    };
                    (key.clone(), item)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| redacted(item, secrets)).collect()),
        Value::String(text) if text.contains("PRIVATE KEY-----") => Value::String(REDACTED.to_owned()),
        Value::String(text) => Value::String(redact_text(&threatbeat_core::redact_userinfo(text), secrets)),
        other => other.clone(),
    }
}

/// `headers`, `request.headers`, `var.headers`, `response.header`….
fn is_headers(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.rsplit('.')
        .next()
        .is_some_and(|last| last == "headers" || last == "header")
}

/// A key whose scalar value is a credential: `auth_key`, `var.auth_key`,
/// `Authorization`, `api-key`, `key`, `private_key`….
fn names_a_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("auth")
        || key
            .rsplit(['.', '_', '-'])
            .next()
            .is_some_and(|last| last == "key")
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

/// `value` with every scalar inside replaced by [`REDACTED`].
fn redact_all_scalars(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), redact_all_scalars(item)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_all_scalars).collect()),
        Value::Null => Value::Null,
        _ => Value::String(REDACTED.to_owned()),
    }
}

/// `text` with every occurrence of a known secret value replaced by [`REDACTED`].
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret.as_str(), REDACTED);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_secret_keys_and_expanded_secret_values() {
        let value = json!({
            "output": {"elasticsearch": {"api_key": "id:key", "password": "p", "hosts": ["https://es:9200"]}},
            "threatbeat": {"modules": [{"module": "threatintel", "misp": {"var.api_token": "t0k",
                                        "var.url": "https://user:hunter2@misp/events"}}]}
        });
        let out = redacted(&value, &["hunter2".to_owned()]);
        let printed = out.to_string();
        for secret in ["id:key", "\"p\"", "t0k", "hunter2"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert_eq!(
            out["output"]["elasticsearch"]["hosts"],
            json!(["https://es:9200"])
        );
        assert_eq!(
            out["threatbeat"]["modules"][0]["misp"]["var.url"],
            json!("https://user:[REDACTED]@misp/events")
        );
    }

    #[test]
    fn redacts_headers_auth_keys_proxies_and_pem_keys_written_inline() {
        let value = json!({
            "input": {"request": {
                "url": "http://user:literal-pass@misp:8080/events",
                "proxy_url": "http://proxyuser:proxy-pass@proxy:3128",
                "headers": {"Authorization": "Bearer inline-bearer", "X-Custom": "custom-secret"},
                "ssl": {"key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "certificate": "/etc/cert.pem"}
            }},
            "var.auth_key": "abusech-key",
            "var.headers": {"X-Api-Key": "list-key"},
            "keyset": {"sort_field": "timestamp"}
        });
        let printed = redacted(&value, &[]).to_string();
        for secret in [
            "literal-pass",
            "proxy-pass",
            "inline-bearer",
            "custom-secret",
            "MIIE",
            "abusech-key",
            "list-key",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        for kept in [
            "http://user:[REDACTED]@misp:8080/events",
            "/etc/cert.pem",
            "timestamp",
            "X-Custom",
        ] {
            assert!(printed.contains(kept), "{kept} lost: {printed}");
        }
    }
}
