//! Turning a request body into records, all or nothing.
//!
//! The body is a stream of JSON values separated by whitespace: one object
//! (`application/json`), an array of objects (one record each), or one
//! object per line (`application/x-ndjson`, what ThreatStream's integrator
//! posts). This is what Filebeat's decoder accepts too. Any value that is not
//! an object (or an array of objects), or any line that is not JSON, rejects
//! the whole request: the sender gets 400 and retries or fixes the batch, and
//! no record of it is published -- a half-written request would leave the
//! sender unable to tell which lines to send again.

use std::io::Read;

use serde_json::{Map, Value};

/// Why a body was refused. Texts are sent back to the client: they point at
/// the place (line, value number) without quoting the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// No bytes, or only whitespace.
    #[error("body cannot be empty")]
    Empty,
    /// Not UTF-8 / not JSON at some line.
    #[error("malformed JSON at line {line}, column {column}: {reason}")]
    Malformed {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message, without the input.
        reason: String,
    },
    /// A value that is not an object (a string, a number, `null`...).
    #[error("value {index} is {kind}; expected a JSON object or an array of objects")]
    NotAnObject {
        /// 1-based position of the value in the body.
        index: usize,
        /// What it is (`a string`, `an array holding a number`...).
        kind: &'static str,
    },
    /// The gzip stream is broken.
    #[error("cannot decompress the gzip body: {0}")]
    Gzip(String),
    /// The body (or, gzip'd, its decompressed form) is over the limit.
    #[error("body is larger than the {0} bytes allowed (max_body_bytes)")]
    TooLarge(usize),
}

/// Decompresses a gzip body, refusing to grow beyond `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut decoded = Vec::new();
    let reader = flate2::read::GzDecoder::new(body);
    // One byte more than allowed tells "exactly at the limit" from "over".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| BodyError::Gzip(error.to_string()))?;
    if decoded.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(decoded)
}

/// Every record in `body`, in order. With `ndjson` each non-blank line is
/// one value (so an error names the line the sender wrote, and a broken line
/// cannot swallow the next ones); otherwise the body is read as a stream of
/// values, pretty-printed or not.
pub fn decode_records(body: &[u8], ndjson: bool) -> Result<Vec<Map<String, Value>>, BodyError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let mut records = Vec::new();
    if ndjson {
        let mut index = 0;
        for (number, line) in body.split(|byte| *byte == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            index += 1;
            let value: Value = serde_json::from_slice(line).map_err(|error| BodyError::Malformed {
                line: number + 1,
                column: error.column(),
                reason: parser_reason(&error),
            })?;
            push_records(value, index, &mut records)?;
        }
    } else {
        let stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
        for (number, value) in stream.enumerate() {
            let value = value.map_err(|error| BodyError::Malformed {
                line: error.line(),
                column: error.column(),
                reason: parser_reason(&error),
            })?;
            push_records(value, number + 1, &mut records)?;
        }
    }
    Ok(records)
}

/// An object is one record, an array of objects one per element.
fn push_records(value: Value, index: usize, records: &mut Vec<Map<String, Value>>) -> Result<(), BodyError> {
    match value {
        Value::Object(record) => records.push(record),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(record) => records.push(record),
                    other => {
                        return Err(BodyError::NotAnObject {
                            index,
                            kind: array_of(&other),
                        })
                    }
                }
            }
        }
        other => {
            return Err(BodyError::NotAnObject {
                index,
                kind: kind(&other),
            })
        }
    }
    Ok(())
}

/// serde_json's message without its " at line X column Y" tail (we report
/// those separately).
fn parser_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn array_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "an array holding null",
        Value::Bool(_) => "an array holding a boolean",
        Value::Number(_) => "an array holding a number",
        Value::String(_) => "an array holding a string",
        Value::Array(_) => "an array holding an array",
        Value::Object(_) => "an array holding an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn objects_arrays_and_ndjson() {
        for ndjson in [false, true] {
            assert_eq!(decode_records(br#"{"a":1}"#, ndjson).unwrap().len(), 1);
            assert_eq!(decode_records(br#"[{"a":1},{"a":2}]"#, ndjson).unwrap().len(), 2);
            let lines = b"{\"a\":1}\n{\"a\":2}\r\n\n{\"a\":3}\n";
            assert_eq!(decode_records(lines, ndjson).unwrap().len(), 3);
            assert_eq!(decode_records(b"\xef\xbb\xbf{\"a\":1}", ndjson).unwrap().len(), 1);
            assert_eq!(decode_records(b"[]", ndjson).unwrap().len(), 0);
        }
        // Pretty-printed JSON is one value over several lines.
        assert_eq!(decode_records(b"{\n  \"a\": 1\n}\n", false).unwrap().len(), 1);
    }

    #[test]
    fn one_bad_line_rejects_the_whole_body() {
        let error = decode_records(b"{\"a\":1}\n{\"a\":\n{\"a\":3}\n", true).unwrap_err();
        assert!(matches!(error, BodyError::Malformed { line: 2, .. }), "{error}");
        let error = decode_records(b"{\"a\":1}\n{\"a\":2} x\n", true).unwrap_err();
        assert!(matches!(error, BodyError::Malformed { line: 2, .. }), "{error}");
        let error = decode_records(b"{\"a\":1}\n\"text\"\n", true).unwrap_err();
        assert_eq!(
            error,
            BodyError::NotAnObject {
                index: 2,
                kind: "a string"
            }
        );
        assert!(matches!(
            decode_records(br#"[{"a":1}, 2]"#, false),
            Err(BodyError::NotAnObject { index: 1, .. })
        ));
        assert_eq!(decode_records(b" \n", true).unwrap_err(), BodyError::Empty);
        assert!(matches!(
            decode_records(b"<html>", false),
            Err(BodyError::Malformed { line: 1, .. })
        ));
        let secretish = decode_records(b"{\"password\": \"hunter2\"", false).unwrap_err();
        assert!(!secretish.to_string().contains("hunter2"), "{secretish}");
    }

    #[test]
    fn gzip_is_bounded() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&[b' '; 1000]).unwrap();
        let compressed = encoder.finish().unwrap();
        assert_eq!(gunzip(&compressed, 1000).unwrap().len(), 1000);
        assert_eq!(gunzip(&compressed, 999).unwrap_err(), BodyError::TooLarge(999));
        assert!(matches!(gunzip(b"not gzip", 10), Err(BodyError::Gzip(_))));
    }
}
