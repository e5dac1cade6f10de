//! Plain text with one value per line (blocklists such as Feodo Tracker's
//! IP list, Spamhaus DROP, URLhaus text dumps) into JSON records, one
//! `{"message": "<line>"}` per line, the shape Filebeat gives a log line.
//! Used by httpjson (`response.decode_as: text/plain`) and the file input
//! (`format: lines`).
//!
//! Blank lines and comment lines are no records. A line that is not UTF-8 or
//! longer than `max_line_bytes` is reported and skipped, and the lines around
//! it are kept. A body that is an HTML page (a login or proxy error page) is
//! refused as a whole: read as lines it would turn into "indicators" and,
//! for a feed whose every pull is its whole list, replace the real list.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::csv::RowError;
use crate::decode::snippet;

/// Line decoding settings (`response.lines` in httpjson, `lines` in the file input).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesConfig {
    /// A line whose first non-blank characters are one of these is a
    /// comment. Default `["#"]`.
    #[serde(default = "default_comment_prefixes")]
    pub comment_prefixes: Vec<String>,
    /// The longest line accepted, in bytes. Default 64 KiB.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Default for LinesConfig {
    fn default() -> Self {
        Self {
            comment_prefixes: default_comment_prefixes(),
            max_line_bytes: default_max_line_bytes(),
        }
    }
}

fn default_comment_prefixes() -> Vec<String> {
    vec!["#".to_owned()]
}

fn default_max_line_bytes() -> usize {
    64 * 1024
}

/// Why a whole body is not usable as lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinesError {
    /// An HTML page (a login page, a proxy error page).
    #[error("body is HTML, not a list of lines (a login page or a proxy error?): {snippet}")]
    Html {
        /// The first characters of the body.
        snippet: String,
    },
}

/// The lines decoded and the lines skipped.
#[derive(Debug, Default)]
pub struct Lines {
    /// One `{"message": …}` per line that holds a value.
    pub records: Vec<Value>,
    /// Skipped lines, in order.
    pub errors: Vec<RowError>,
}

/// Decodes `bytes` into one record per value line.
pub fn decode_lines(bytes: &[u8], config: &LinesConfig) -> Result<Lines, LinesError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let start = bytes.iter().position(|byte| !byte.is_ascii_whitespace());
    if let Some(start) = start {
        if bytes[start] == b'<' {
            let head = &bytes[start..bytes.len().min(start + 512)];
            return Err(LinesError::Html {
                snippet: snippet(&String::from_utf8_lossy(head)),
            });
        }
    }
    let mut lines = Lines::default();
    for (index, raw) in bytes.split(|byte| *byte == b'\n').enumerate() {
        let line = index + 1;
        if raw.len() > config.max_line_bytes {
            lines.errors.push(RowError {
                line,
                reason: format!(
                    "line longer than {} bytes (max_line_bytes)",
                    config.max_line_bytes
                ),
            });
            continue;
        }
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text.trim(),
            Err(error) => {
                lines.errors.push(RowError {
                    line,
                    reason: format!(
                        "not valid UTF-8 (first bad byte at column {})",
                        error.valid_up_to() + 1
                    ),
                });
                continue;
            }
        };
        let comment = config
            .comment_prefixes
            .iter()
            .any(|prefix| !prefix.is_empty() && text.starts_with(prefix.as_str()));
        if text.is_empty() || comment {
            continue;
        }
        lines.records.push(json!({ "message": text }));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(lines: &Lines) -> Vec<&str> {
        lines
            .records
            .iter()
            .filter_map(|record| record["message"].as_str())
            .collect()
    }

    #[test]
    fn values_comments_and_blank_lines() {
        let text = "\u{feff}# Feodo Tracker\r\n#\n192.0.2.1\r\n\n  198.51.100.7 ; SBL123\n; not a comment by default\n";
        let lines = decode_lines(text.as_bytes(), &LinesConfig::default()).unwrap();
        assert_eq!(
            messages(&lines),
            ["192.0.2.1", "198.51.100.7 ; SBL123", "; not a comment by default"]
        );
        assert!(lines.errors.is_empty());

        let config = LinesConfig {
            comment_prefixes: vec![";".to_owned(), "#".to_owned()],
            ..LinesConfig::default()
        };
        let lines = decode_lines(text.as_bytes(), &config).unwrap();
        assert_eq!(messages(&lines), ["192.0.2.1", "198.51.100.7 ; SBL123"]);
    }

    #[test]
    fn a_bad_line_is_reported_and_its_neighbours_kept() {
        let mut bytes = b"one\n\xff\xfe\ntwo\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 100));
        bytes.extend(b"\nthree");
        let config = LinesConfig {
            max_line_bytes: 50,
            ..LinesConfig::default()
        };
        let lines = decode_lines(&bytes, &config).unwrap();
        assert_eq!(messages(&lines), ["one", "two", "three"]);
        let skipped: Vec<usize> = lines.errors.iter().map(|error| error.line).collect();
        assert_eq!(skipped, [2, 4]);
        assert!(lines.errors[1].reason.contains("max_line_bytes"));
    }

    #[test]
    fn html_is_refused_and_an_empty_body_is_an_empty_list() {
        let error = decode_lines(
            b"\n  <!DOCTYPE html><title>Sign in</title>",
            &LinesConfig::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("HTML"), "{error}");
        let lines = decode_lines(b"", &LinesConfig::default()).unwrap();
        assert!(lines.records.is_empty() && lines.errors.is_empty());
    }
}
