//! Records an input could not make into events (a MISP event whose `Object`
//! is not a list): each is logged with the pipeline and the URL or file it
//! came from, counted (`threatbeat_input_records_rejected_total`), and kept
//! with its error in `path.data/dead_letter/<pipeline>.ndjson`, while the
//! records around it are published and the cursor moves past it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::metrics::records_rejected;
use crate::split::Rejected;

/// The largest record kept whole in the dead-letter file; longer ones keep
/// their first bytes.
const MAX_RECORD_BYTES: usize = 64 * 1024;
/// The dead-letter file is renamed to `.1` (replacing the last one) past this size.
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// How many rejected records of one answer are logged one by one.
const LOGGED: usize = 10;

/// One pipeline's dead-letter file.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pipeline: String,
    path: PathBuf,
}

impl DeadLetter {
    /// The dead-letter file of `pipeline` under `data_path`.
    pub fn new(data_path: &Path, pipeline: &str) -> Self {
        let name = threatbeat_core::state_name(pipeline);
        Self {
            pipeline: pipeline.to_owned(),
            path: data_path.join("dead_letter").join(format!("{name}.ndjson")),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs, counts and keeps `rejected`, which came from `source` (a URL,
    /// whose credentials are not written, or a file).
    pub fn record(&self, source: &str, rejected: Vec<Rejected>) {
        if rejected.is_empty() {
            return;
        }
        let source = threatbeat_core::redact_userinfo(source);
        records_rejected(&self.pipeline).inc_by(rejected.len() as u64);
        for item in rejected.iter().take(LOGGED) {
            tracing::warn!(input = %self.pipeline, source = %source, error = %item.error, dead_letter = %self.path.display(), "a record could not be split and was set aside; the others are published");
        }
        if rejected.len() > LOGGED {
            tracing::warn!(input = %self.pipeline, source = %source, rejected = rejected.len(), "records set aside in all (only the first {LOGGED} are logged)");
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut lines = Vec::new();
        for item in rejected {
            let text = item.record.to_string();
            let record = if text.len() <= MAX_RECORD_BYTES {
                item.record
            } else {
                let mut cut = MAX_RECORD_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                json!({"truncated": true, "bytes": text.len(), "text": &text[..cut]})
            };
            let line = json!({
                "@timestamp": now,
                "pipeline": self.pipeline,
                "source": source,
                "error": item.error,
                "record": record,
            });
            lines.push(line);
        }
        if let Err(error) = self.append(&lines) {
            tracing::error!(input = %self.pipeline, path = %self.path.display(), %error, "the dead-letter file could not be written; the rejected records are only in this log");
        }
    }

    fn append(&self, lines: &[Value]) -> std::io::Result<()> {
        if let Some(folder) = self.path.parent() {
            fs::create_dir_all(folder)?;
        }
        if fs::metadata(&self.path).is_ok_and(|metadata| metadata.len() > MAX_FILE_BYTES) {
            fs::rename(&self.path, self.path.with_extension("ndjson.1"))?;
        }
        let mut text = String::new();
        for line in lines {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_records_are_kept_with_their_error() {
        let folder = tempfile::tempdir().unwrap();
        let dead = DeadLetter::new(folder.path(), "threatintel/misp");
        let error = "split on `body.Event.Object`: expected an array, found string".to_owned();
        dead.record(
            "https://user:pw@misp.example/events/restSearch",
            vec![
                Rejected {
                    record: json!({"Event": {"uuid": "e1", "Object": "not-a-list"}}),
                    error: error.clone(),
                },
                Rejected {
                    record: json!({"big": "x".repeat(MAX_RECORD_BYTES + 10)}),
                    error,
                },
            ],
        );
        let text = fs::read_to_string(dead.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["record"]["Event"]["uuid"], "e1");
        assert_eq!(lines[0]["pipeline"], "threatintel/misp");
        assert!(lines[0]["error"].as_str().unwrap().contains("body.Event.Object"));
        assert_eq!(
            lines[0]["source"],
            "https://user:[REDACTED]@misp.example/events/restSearch"
        );
        assert_eq!(lines[1]["record"]["truncated"], true);
        assert!(dead.path().ends_with("dead_letter/threatintel_misp.ndjson"));
    }
}
