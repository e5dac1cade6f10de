//! Golden-file comparison in the manner of Filebeat's module test harness
//! (`filebeat/tests/system/test_modules.py`): documents are flattened to
//! dotted keys, every array is sorted, a documented list of harness-only
//! fields is ignored, and the rest is compared field by field, types
//! included (`2` and `"2"` differ). Reusable by any feed: give it the actual
//! and expected documents and the fields to ignore.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Fields the golden files of Filebeat's module tests hold that only
/// Filebeat's harness, its `log` input or Elasticsearch's ingest node
/// produce, plus what the harness strips itself (reference §1.1), and the
/// metadata our file output writes beside each document. Nothing else is
/// ignored.
pub const FILEBEAT_HARNESS_FIELDS: &[&str] = &[
    // Added by Filebeat's `log` input and module framework in the test run.
    "input.type",
    "log.offset",
    "log.file.path",
    "fileset.name",
    "service.type",
    // `add_locale` on the test machine (`-02:00`): host-dependent.
    "event.timezone",
    // Ingest time: never reproducible.
    "event.ingested",
    "event.created",
    // Removed by the Filebeat harness before writing the golden files.
    "ecs.version",
    "agent.*",
    "host.name",
    // The document id and index, which the file output writes beside the
    // document (Elasticsearch stores them as `_id`/`_index`, not in `_source`).
    "@metadata.*",
];

/// The documents of a fileset's history stream, what Elastic's goldens
/// hold: the current-state copies (`logs-ti_threatbeat_latest.*`, the agent's
/// own) are left out.
pub fn history_documents(documents: Vec<Value>) -> Vec<Value> {
    documents
        .into_iter()
        .filter(|document| {
            !document["@metadata"]["index"]
                .as_str()
                .is_some_and(|index| index.starts_with("logs-ti_threatbeat_latest."))
        })
        .collect()
}

/// The datasets whose `@timestamp` Filebeat's harness deletes before writing
/// the golden files; it is kept (and compared) for `misp` and `threatq`.
const TIMESTAMP_DELETED: &[&str] = &[
    "otx",
    "abuseurl",
    "abusemalware",
    "anomali",
    "anomalithreatstream",
    "malwarebazaar",
    "recordedfuture",
];

/// Filebeat's harness reads back at most this many documents, so the
/// expected files of the long fixtures cover their first lines only.
pub const HARNESS_DOCUMENTS: usize = 100;

/// The fields not compared in the golden files of `fileset`: the harness's,
/// `@timestamp` where the harness deleted it, and the mark the history
/// documents of a fileset with a current state carry so that the prebuilt
/// rules read the current-state index instead (docs/detection.md): Filebeat
/// has no current state to mark them against.
pub fn filebeat_ignored(fileset: &str) -> Vec<&'static str> {
    let mut ignored = FILEBEAT_HARNESS_FIELDS.to_vec();
    ignored.push("labels.is_ioc_transform_source");
    if TIMESTAMP_DELETED.contains(&fileset) {
        ignored.push("@timestamp");
    }
    ignored
}

/// The lines of a golden `.log` file that Filebeat's harness read: its `log`
/// input does not read a last line without a newline, blank lines are no
/// records, and only the first [`HARNESS_DOCUMENTS`] have expectations.
pub fn harness_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|error| panic!("{}: {error}", log.display()));
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(HARNESS_DOCUMENTS)
        .map(str::to_owned)
        .collect()
}

/// The documents of a golden `.log` file's `-expected.json`.
pub fn expected_documents(log: &Path) -> Vec<Value> {
    let path = PathBuf::from(format!("{}-expected.json", log.display()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One golden pair of Filebeat's threatintel module: the records of
/// `test-support/data/filebeat-threatintel/<fileset>/<log>` that the harness
/// read (see [`harness_lines`]), parsed, and the expected documents.
pub fn golden_pair(fileset: &str, log: &str) -> (Vec<Value>, Vec<Value>) {
    let path = crate::data::filebeat_threatintel(fileset).join(log);
    let records = harness_lines(&path)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{}: {error}", path.display())))
        .collect();
    (records, expected_documents(&path))
}

/// A document as dotted keys (`threat.indicator.ip`) to leaf values.
pub type Flat = BTreeMap<String, Value>;

/// Flattens nested objects into dotted keys, as the Filebeat harness does:
/// objects are walked, lists and scalars are leaves, empty objects vanish.
pub fn flatten(document: &Map<String, Value>) -> Flat {
    let mut flat = Flat::new();
    flatten_into(document, "", &mut flat);
    flat
}

fn flatten_into(map: &Map<String, Value>, prefix: &str, flat: &mut Flat) {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) => flatten_into(inner, &name, flat),
            leaf => {
                flat.insert(name, leaf.clone());
            }
        }
    }
}

/// Sorts every array (recursively), by string value for strings and by the
/// JSON text otherwise: array order is not compared, as in Filebeat's harness.
pub fn sort_arrays(value: &mut Value) {
    match value {
        Value::Array(items) => {
            items.iter_mut().for_each(sort_arrays);
            items.sort_by_key(sort_key);
        }
        Value::Object(map) => map.values_mut().for_each(sort_arrays),
        _ => {}
    }
}

fn sort_key(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Flattens and normalises one document (object or already flat) for comparison.
pub fn normalise(document: &Value, ignore: &[&str]) -> Flat {
    let mut flat = match document {
        Value::Object(map) => flatten(map),
        other => Flat::from([("".to_owned(), other.clone())]),
    };
    flat.retain(|key, _| !is_ignored(key, ignore));
    flat.values_mut().for_each(sort_arrays);
    flat
}

/// Whether `key` is ignored: listed exactly, or under a listed `prefix.*`.
fn is_ignored(key: &str, ignore: &[&str]) -> bool {
    ignore.iter().any(|pattern| match pattern.strip_suffix(".*") {
        Some(prefix) => key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')),
        None => key == *pattern,
    })
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Zero-based document position.
    pub document: usize,
    /// The dotted key.
    pub field: String,
    /// What we produced (`None`: missing).
    pub actual: Option<Value>,
    /// What the golden file holds (`None`: not expected).
    pub expected: Option<Value>,
}

/// The result of comparing one golden file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The golden file's name, for the summary line.
    pub name: String,
    /// Documents produced.
    pub actual_documents: usize,
    /// Documents expected.
    pub expected_documents: usize,
    /// Documents whose every field matched.
    pub documents_matched: usize,
    /// Fields compared (the union of both sides' keys, per document).
    pub fields_compared: usize,
    /// Every difference.
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    /// Whether everything matched.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.actual_documents == self.expected_documents
    }

    /// `name: documents matched 15/15, fields compared 780, mismatches 0`.
    pub fn summary(&self) -> String {
        format!(
            "{}: documents matched {}/{}, fields compared {}, mismatches {}{}",
            self.name,
            self.documents_matched,
            self.expected_documents,
            self.fields_compared,
            self.mismatches.len(),
            if self.actual_documents == self.expected_documents {
                String::new()
            } else {
                format!(" (produced {} documents)", self.actual_documents)
            }
        )
    }

    /// A readable diff: one line per differing field, grouped by document.
    pub fn diff(&self) -> String {
        let mut out = String::new();
        let mut current = None;
        for mismatch in &self.mismatches {
            if current != Some(mismatch.document) {
                current = Some(mismatch.document);
                let _ = writeln!(out, "document {}:", mismatch.document);
            }
            let show = |value: &Option<Value>| match value {
                Some(value) => value.to_string(),
                None => "(absent)".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {}: ours {} | expected {}",
                mismatch.field,
                show(&mismatch.actual),
                show(&mismatch.expected)
            );
        }
        out
    }
}

/// Compares documents position by position after normalising both sides.
pub fn compare(name: &str, actual: &[Value], expected: &[Value], ignore: &[&str]) -> Report {
    let mut report = Report {
        name: name.to_owned(),
        actual_documents: actual.len(),
        expected_documents: expected.len(),
        ..Report::default()
    };
    for (index, (ours, theirs)) in actual.iter().zip(expected).enumerate() {
        report.add_pair(index, &normalise(ours, ignore), &normalise(theirs, ignore));
    }
    report
}

/// Compares documents whatever their order: each expected document (in
/// order) is paired with the not yet paired produced document that agrees
/// with it on the most fields, as `shared/bench/golden.py` does. An input
/// that delivers records concurrently or in its own order is compared
/// fairly; produced documents left unpaired count in `actual_documents`.
pub fn compare_unordered(name: &str, actual: &[Value], expected: &[Value], ignore: &[&str]) -> Report {
    let mut report = Report {
        name: name.to_owned(),
        actual_documents: actual.len(),
        expected_documents: expected.len(),
        ..Report::default()
    };
    let mut candidates: Vec<Option<Flat>> = actual
        .iter()
        .map(|document| Some(normalise(document, ignore)))
        .collect();
    for (index, theirs) in expected.iter().enumerate() {
        let theirs = normalise(theirs, ignore);
        let best = candidates
            .iter()
            .enumerate()
            .filter_map(|(position, candidate)| {
                candidate
                    .as_ref()
                    .map(|ours| (position, agreement(ours, &theirs)))
            })
            .max_by_key(|&(position, agreeing)| (agreeing, std::cmp::Reverse(position)))
            .map(|(position, _)| position);
        let ours = best
            .and_then(|position| candidates[position].take())
            .unwrap_or_default();
        report.add_pair(index, &ours, &theirs);
    }
    report
}

/// Fields with equal values in both documents.
fn agreement(ours: &Flat, theirs: &Flat) -> usize {
    theirs
        .iter()
        .filter(|(key, value)| ours.get(*key) == Some(*value))
        .count()
}

impl Report {
    /// Compares one produced document with the expected one it is paired with.
    fn add_pair(&mut self, index: usize, ours: &Flat, theirs: &Flat) {
        let mut keys: Vec<&String> = ours.keys().chain(theirs.keys()).collect();
        keys.sort();
        keys.dedup();
        self.fields_compared += keys.len();
        let before = self.mismatches.len();
        for key in keys {
            let (a, e) = (ours.get(key), theirs.get(key));
            if a != e {
                self.mismatches.push(Mismatch {
                    document: index,
                    field: key.clone(),
                    actual: a.cloned(),
                    expected: e.cloned(),
                });
            }
        }
        if self.mismatches.len() == before {
            self.documents_matched += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_sorts_and_ignores() {
        let doc = json!({"a": {"b": 1, "c": {"d": ["y", "x"]}, "e": {}}, "log": {"offset": 5}, "agent": {"id": "1"}});
        let flat = normalise(&doc, &["log.offset", "agent.*"]);
        assert_eq!(
            flat,
            Flat::from([
                ("a.b".to_owned(), json!(1)),
                ("a.c.d".to_owned(), json!(["x", "y"]))
            ])
        );
    }

    #[test]
    fn reports_type_missing_and_extra_fields() {
        let ours = [json!({"n": "2", "only_ours": true, "same": "x"})];
        let theirs = [json!({"n": 2, "only_theirs": 1, "same": "x"})];
        let report = compare("f", &ours, &theirs, &[]);
        assert!(!report.passed());
        assert_eq!(report.fields_compared, 4);
        assert_eq!(report.documents_matched, 0);
        assert_eq!(report.mismatches.len(), 3);
        let diff = report.diff();
        assert!(diff.contains("n: ours \"2\" | expected 2"), "{diff}");
        assert!(diff.contains("only_theirs: ours (absent) | expected 1"), "{diff}");
        let same = compare("f", &theirs, &theirs, &[]);
        assert!(same.passed());
        assert_eq!(
            same.summary(),
            "f: documents matched 1/1, fields compared 3, mismatches 0"
        );
        assert!(
            !compare("f", &[], &theirs, &[]).passed(),
            "a missing document fails"
        );
    }
}
