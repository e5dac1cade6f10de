//! `export config`: the effective configuration with secrets redacted.

use serde_json::Value;
use threatbeat_core::REDACTED;

use super::expand::looks_secret;

/// `value` with every secret-looking key's value, and every occurrence of a
/// known secret value, replaced by [`REDACTED`].
pub fn redacted(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| {
                    let item = if looks_secret(key) && !item.is_null() {
                        Value::String(REDACTED.to_owned())
                    } else {
                        redacted(item, secrets)
                    };
                    (key.clone(), item)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| redacted(item, secrets)).collect()),
        Value::String(text) => Value::String(redact_text(text, secrets)),
        other => other.clone(),
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
}
