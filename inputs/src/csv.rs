//! CSV with a header row (RFC 4180) into JSON objects: one object per row,
//! keyed by the header's names, every value a string — the shape Filebeat's
//! httpjson gives `decode_as: text/csv` bodies. Used by httpjson
//! (`response.decode_as: text/csv`) and the file input (`format: csv`).
//!
//! Quoted cells may hold commas, doubled quotes and line breaks (Recorded
//! Future's risk lists put whole JSON documents in one cell). A row that is
//! malformed (an unterminated quote, a stray quote, the wrong number of
//! cells, longer than `max_row_bytes`) is reported and skipped; decoding
//! starts again on the next line, so the rows around it are kept.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::decode::snippet;

/// CSV decoding settings (`response.csv` in httpjson, `csv` in the file input).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The longest row accepted, in bytes (quoted line breaks included).
    /// Bounds the damage of an unterminated quote. Default 1 MiB.
    #[serde(default = "default_max_row_bytes")]
    pub max_row_bytes: usize,
    /// Whether the first row names the columns (default true). Without a
    /// header the cells are named `column1`, `column2`, … and rows may have
    /// any number of cells.
    #[serde(default = "default_header")]
    pub header: bool,
    /// A line starting with one of these is a comment, skipped before the
    /// header and between rows (abuse.ch's CSV exports open with `#` lines,
    /// their column names included). Default none.
    #[serde(default)]
    pub comment_prefixes: Vec<String>,
}

impl Default for CsvConfig {
    fn default() -> Self {
        Self {
            max_row_bytes: default_max_row_bytes(),
            header: default_header(),
            comment_prefixes: Vec::new(),
        }
    }
}

fn default_header() -> bool {
    true
}

fn default_max_row_bytes() -> usize {
    1024 * 1024
}

/// Why a whole document is not usable CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// Zero bytes, or only whitespace: not even a header row.
    #[error("empty body (expected CSV with a header row)")]
    Empty,
    /// Bytes that are not UTF-8.
    #[error("body is not valid UTF-8 (first bad byte at offset {offset}); expected CSV")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// An HTML page (a login page, a proxy error page).
    #[error("body is HTML, not CSV (a login page or a proxy error?): {snippet}")]
    Html {
        /// The first characters of the body.
        snippet: String,
    },
    /// The first row cannot be read.
    #[error("the header row (line {line}) is not valid CSV: {reason}")]
    Header {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A row that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line where the row starts.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "line {}: {}", self.line, self.reason)
    }
}

/// The rows decoded and the rows skipped.
#[derive(Debug, Default)]
pub struct CsvRows {
    /// One object per good row.
    pub records: Vec<Value>,
    /// Skipped rows, in order.
    pub errors: Vec<RowError>,
}

/// Decodes `bytes` (a header row, then data rows).
pub fn decode_csv(bytes: &[u8], config: &CsvConfig) -> Result<CsvRows, CsvError> {
    let text = std::str::from_utf8(bytes).map_err(|error| CsvError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(CsvError::Empty);
    }
    if trimmed.starts_with('<') {
        return Err(CsvError::Html {
            snippet: snippet(trimmed),
        });
    }
    let mut reader = Reader {
        text,
        position: 0,
        line: 1,
        max: config.max_row_bytes,
        comments: &config.comment_prefixes,
    };
    if !config.header {
        return Ok(headless_rows(&mut reader));
    }
    let header = loop {
        let Some((line, row)) = reader.next_row() else {
            return Err(CsvError::Empty);
        };
        match row {
            Ok(cells) if cells.len() == 1 && cells[0].is_empty() => continue,
            Ok(cells) => break cells,
            Err(reason) => return Err(CsvError::Header { line, reason }),
        }
    };
    let mut rows = CsvRows::default();
    while let Some((line, row)) = reader.next_row() {
        match row {
            // A blank line (often the last one) is no record.
            Ok(cells) if cells.len() == 1 && cells[0].is_empty() => {}
            Ok(cells) if cells.len() != header.len() => rows.errors.push(RowError {
                line,
                reason: format!("{} cells, the header has {}", cells.len(), header.len()),
            }),
            Ok(cells) => {
                let record: Map<String, Value> = header
                    .iter()
                    .cloned()
                    .zip(cells.into_iter().map(Value::String))
                    .collect();
                rows.records.push(Value::Object(record));
            }
            Err(reason) => rows.errors.push(RowError { line, reason }),
        }
    }
    Ok(rows)
}

/// The rows of a CSV without a header, each cell named by its column.
fn headless_rows(reader: &mut Reader<'_>) -> CsvRows {
    let mut rows = CsvRows::default();
    while let Some((line, row)) = reader.next_row() {
        match row {
            Ok(cells) if cells.len() == 1 && cells[0].is_empty() => {}
            Ok(cells) => {
                let record: Map<String, Value> = cells
                    .into_iter()
                    .enumerate()
                    .map(|(index, cell)| (format!("column{}", index + 1), Value::String(cell)))
                    .collect();
                rows.records.push(Value::Object(record));
            }
            Err(reason) => rows.errors.push(RowError { line, reason }),
        }
    }
    rows
}

/// Reads rows one at a time.
struct Reader<'a> {
    text: &'a str,
    /// Byte offset of the next row.
    position: usize,
    /// 1-based line of `position`.
    line: usize,
    max: usize,
    comments: &'a [String],
}

impl Reader<'_> {
    /// The next row with the line it starts on, or `None` at the end.
    fn next_row(&mut self) -> Option<(usize, Result<Vec<String>, String>)> {
        while self.at_comment() {
            self.position = self.text[self.position..]
                .find('\n')
                .map_or(self.text.len(), |offset| self.position + offset + 1);
            self.line += 1;
        }
        if self.position >= self.text.len() {
            return None;
        }
        let start = self.position;
        let line = self.line;
        let outcome = self.parse_row(start);
        let end = match &outcome {
            Ok((_, end)) => *end,
            // Start again after the line the bad row began on.
            Err(_) => self.text[start..]
                .find('\n')
                .map_or(self.text.len(), |offset| start + offset + 1),
        };
        self.line += self.text[start..end].matches('\n').count();
        self.position = end;
        Some((line, outcome.map(|(cells, _)| cells)))
    }

    /// Whether the line at the current position is a comment.
    fn at_comment(&self) -> bool {
        let rest = &self.text[self.position..];
        !rest.is_empty()
            && self
                .comments
                .iter()
                .any(|prefix| !prefix.is_empty() && rest.starts_with(prefix.as_str()))
    }

    /// Parses the row at `start`: its cells and where the next row starts.
    fn parse_row(&self, start: usize) -> Result<(Vec<String>, usize), String> {
        let text = self.text;
        let bytes = text.as_bytes();
        let too_long = |at: usize| at - start > self.max;
        let mut cells = Vec::new();
        let mut at = start;
        loop {
            let mut cell = String::new();
            if bytes.get(at) == Some(&b'"') {
                at += 1;
                loop {
                    // Only as far as the row may reach, so a runaway quote
                    // costs at most `max_row_bytes` of scanning.
                    // Saturating: `max_row_bytes` may be as large as usize allows.
                    let limit = start.saturating_add(self.max).saturating_add(1).min(bytes.len());
                    let found = bytes
                        .get(at..limit)
                        .and_then(|window| window.iter().position(|byte| *byte == b'"'));
                    let Some(offset) = found else {
                        if limit < bytes.len() {
                            return Err(format!("row longer than {} bytes (max_row_bytes)", self.max));
                        }
                        return Err("a quoted cell is not closed before the end".to_owned());
                    };
                    let quote = at + offset;
                    if too_long(quote) {
                        return Err(format!("row longer than {} bytes (max_row_bytes)", self.max));
                    }
                    cell.push_str(&text[at..quote]);
                    if bytes.get(quote + 1) == Some(&b'"') {
                        cell.push('"');
                        at = quote + 2;
                    } else {
                        at = quote + 1;
                        break;
                    }
                }
                match bytes.get(at) {
                    None | Some(b',' | b'\n') => {}
                    Some(b'\r') if matches!(bytes.get(at + 1), None | Some(b'\n')) => at += 1,
                    Some(_) => return Err("unexpected text after a closing quote".to_owned()),
                }
            } else {
                let end = text[at..]
                    .find([',', '\n'])
                    .map_or(text.len(), |offset| at + offset);
                let raw = &text[at..end];
                let raw = if bytes.get(end) != Some(&b',') {
                    raw.strip_suffix('\r').unwrap_or(raw)
                } else {
                    raw
                };
                if raw.contains('"') {
                    return Err("a quote inside an unquoted cell".to_owned());
                }
                cell.push_str(raw);
                at = end;
            }
            if too_long(at) {
                return Err(format!("row longer than {} bytes (max_row_bytes)", self.max));
            }
            cells.push(cell);
            match bytes.get(at) {
                Some(b',') => at += 1,
                Some(b'\n') => return Ok((cells, at + 1)),
                _ => return Ok((cells, text.len())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(text: &str) -> CsvRows {
        decode_csv(text.as_bytes(), &CsvConfig::default()).unwrap()
    }

    #[test]
    fn header_quoted_cells_and_json_inside_a_cell() {
        let rows = decode(concat!(
            "\u{feff}\"Name\",\"Risk\",\"EvidenceDetails\"\r\n",
            "\"a.example\",\"96\",\"{\"\"EvidenceDetails\"\": [{\"\"Rule\"\": \"\"x, y\"\"}]}\"\r\n",
            "b.example,5,\"two\nlines\"\n",
            "\n",
        ));
        assert!(rows.errors.is_empty(), "{:?}", rows.errors);
        assert_eq!(
            rows.records,
            vec![
                json!({"Name": "a.example", "Risk": "96", "EvidenceDetails": "{\"EvidenceDetails\": [{\"Rule\": \"x, y\"}]}"}),
                json!({"Name": "b.example", "Risk": "5", "EvidenceDetails": "two\nlines"}),
            ]
        );
    }

    #[test]
    fn a_bad_row_is_reported_and_its_neighbours_kept() {
        let rows = decode(concat!(
            "Name,Risk\n",
            "one,1\n",
            "two,2,extra\n",
            "th\"ree,3\n",
            "\"four\"x,4\n",
            "five,5\n",
            "\"six,6\n",
            "seven,7\n",
        ));
        let names: Vec<&str> = rows.records.iter().map(|r| r["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["one", "five", "seven"]);
        let lines: Vec<usize> = rows.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 7], "{:?}", rows.errors);
        assert!(rows.errors[0].reason.contains("3 cells, the header has 2"));
        assert!(rows.errors[3].reason.contains("not closed"));
    }

    #[test]
    fn the_row_size_limit_bounds_a_runaway_quote() {
        let mut text = String::from("Name,Risk\n\"open,1\n");
        for index in 0..50 {
            text.push_str(&format!("row{index},{index}\n"));
        }
        let config = CsvConfig {
            max_row_bytes: 64,
            ..CsvConfig::default()
        };
        let rows = decode_csv(text.as_bytes(), &config).unwrap();
        assert_eq!(rows.records.len(), 50, "{:?}", rows.errors);
        assert_eq!(rows.errors.len(), 1);
        assert!(rows.errors[0].reason.contains("max_row_bytes"));
    }

    #[test]
    fn comments_and_rows_without_a_header() {
        let text = concat!(
            "################\n",
            "# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)\n",
            "# \"first_seen_utc\",\"dst_ip\",\"dst_port\"\n",
            "\"2021-01-17 07:44:46\",\"192.0.2.5\",\"443\"\n",
            "\"2021-01-18 07:44:46\",\"192.0.2.6\",\"8080\",\"extra\"\n",
            "# end\n",
        );
        let config = CsvConfig {
            header: false,
            comment_prefixes: vec!["#".to_owned()],
            ..CsvConfig::default()
        };
        let rows = decode_csv(text.as_bytes(), &config).unwrap();
        assert!(rows.errors.is_empty(), "{:?}", rows.errors);
        assert_eq!(
            rows.records,
            vec![
                json!({"column1": "2021-01-17 07:44:46", "column2": "192.0.2.5", "column3": "443"}),
                json!({"column1": "2021-01-18 07:44:46", "column2": "192.0.2.6", "column3": "8080", "column4": "extra"}),
            ]
        );
        let with_header = CsvConfig {
            comment_prefixes: vec!["#".to_owned()],
            ..CsvConfig::default()
        };
        let rows = decode_csv("# note\nName,Risk\n# between\na,1\n".as_bytes(), &with_header).unwrap();
        assert_eq!(rows.records, vec![json!({"Name": "a", "Risk": "1"})]);
    }

    #[test]
    fn documents_that_are_not_csv() {
        let config = CsvConfig::default();
        assert_eq!(decode_csv(b" \n", &config).unwrap_err(), CsvError::Empty);
        assert!(matches!(
            decode_csv(b"<html><title>Login</title>", &config),
            Err(CsvError::Html { .. })
        ));
        assert!(matches!(
            decode_csv(b"\"Name,Risk\n", &config),
            Err(CsvError::Header { line: 1, .. })
        ));
        assert_eq!(
            decode_csv(b"a,\xff", &config).unwrap_err(),
            CsvError::NotUtf8 { offset: 2 }
        );
        let rows = decode("Name,Risk\n");
        assert!(rows.records.is_empty() && rows.errors.is_empty());
    }
}
