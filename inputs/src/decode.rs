//! Turning bytes (an HTTP body, a file) into JSON, with errors that say what
//! arrived instead: nothing, HTML, invalid UTF-8, a truncated document.

use serde_json::Value;

/// Why a body is not usable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes, or only whitespace.
    #[error("empty body (expected JSON)")]
    Empty,
    /// Bytes that are not UTF-8 at `offset`.
    #[error("body is not valid UTF-8 (first bad byte at offset {offset}); expected JSON")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// An HTML page (a login page, a proxy error page).
    #[error("body is HTML, not JSON (a login page or a proxy error?): {snippet}")]
    Html {
        /// The first characters of the body.
        snippet: String,
    },
    /// The JSON ends early (a cut connection, a proxy limit).
    #[error("body is truncated JSON ({reason}); {length} bytes received")]
    Truncated {
        /// The parser's message.
        reason: String,
        /// How many bytes arrived.
        length: usize,
    },
    /// Anything else that is not JSON.
    #[error("body is not valid JSON ({reason}): {snippet}")]
    Invalid {
        /// The parser's message.
        reason: String,
        /// The first characters of the body.
        snippet: String,
    },
}

/// The first characters of `text`, for error messages (never the whole body).
pub fn snippet(text: &str) -> String {
    const MAX: usize = 120;
    let trimmed = text.trim();
    let mut cut: String = trimmed.chars().take(MAX).collect();
    if trimmed.chars().count() > MAX {
        cut.push('…');
    }
    cut.replace(['\n', '\r'], " ")
}

/// Decodes one JSON document.
pub fn decode_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|error| DecodeError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(DecodeError::Empty);
    }
    if trimmed.starts_with('<') {
        return Err(DecodeError::Html {
            snippet: snippet(trimmed),
        });
    }
    serde_json::from_str(trimmed).map_err(|error| {
        if error.classify() == serde_json::error::Category::Eof {
            DecodeError::Truncated {
                reason: error.to_string(),
                length: bytes.len(),
            }
        } else {
            DecodeError::Invalid {
                reason: error.to_string(),
                snippet: snippet(trimmed),
            }
        }
    })
}

/// Decodes newline-delimited JSON: one document per non-blank line. An error
/// names the 1-based line.
pub fn decode_ndjson(bytes: &[u8]) -> Result<Vec<Value>, (usize, DecodeError)> {
    let mut values = Vec::new();
    for (index, line) in bytes.split(|byte| *byte == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        values.push(decode_json(line).map_err(|error| (index + 1, error))?);
    }
    Ok(values)
}

/// A MISP error object (`{"name", "message", "url"}`, section 9 of the MISP
/// reference) returns its message.
pub fn misp_error_message(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    if object.contains_key("response") {
        return None;
    }
    let name = object.get("name")?.as_str()?;
    let message = object.get("message").and_then(Value::as_str).unwrap_or(name);
    object.get("url")?;
    Some(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tells_apart_what_arrived() {
        assert_eq!(decode_json(b"").unwrap_err(), DecodeError::Empty);
        assert_eq!(decode_json(b"  \n").unwrap_err(), DecodeError::Empty);
        assert!(matches!(
            decode_json(b"<!DOCTYPE html><title>Login</title>"),
            Err(DecodeError::Html { .. })
        ));
        assert!(matches!(
            decode_json(b"{\"response\": [{\"Ev"),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            decode_json(b"{\"a\": \"\xff\"}").unwrap_err(),
            DecodeError::NotUtf8 { offset: 7 }
        );
        assert!(matches!(
            decode_json(b"{\"a\": nope}"),
            Err(DecodeError::Invalid { .. })
        ));
        assert_eq!(decode_json(b"{\"a\": 1}\n").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn ndjson_names_the_bad_line() {
        assert_eq!(decode_ndjson(b"{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        assert_eq!(decode_ndjson(b"{\"a\":1}\n{\"a\":\n").unwrap_err().0, 2);
    }

    #[test]
    fn recognises_misp_error_objects() {
        let error = json!({"name": "Authentication failed.", "message": "Authentication failed.", "url": "/events/restSearch"});
        assert_eq!(
            misp_error_message(&error).as_deref(),
            Some("Authentication failed.")
        );
        assert_eq!(misp_error_message(&json!({"response": []})), None);
        assert_eq!(misp_error_message(&json!({"name": "x"})), None);
    }
}
