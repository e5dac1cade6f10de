//! The `file` input: reads JSON, NDJSON and MISP feed folders through the
//! same decode and split code as httpjson, and remembers what it read.
//!
//! The cursor maps each file's path to its size and modification time; a
//! file is read again only when one of them changes (documents carry stable
//! ids, so a re-read overwrites instead of duplicating). One batch per file.
//! See `docs/inputs/file.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use threatbeat_core::{
    Batch, BuildContext, ConfigError, Event, Input, InputContext, InputError, PluginConfig,
};

use crate::csv::{decode_csv, CsvConfig, RowError};
use crate::dead_letter::DeadLetter;
use crate::decode::{decode_json, decode_ndjson, DecodeError};
use crate::lines::{decode_lines, LinesConfig};
use crate::metrics::{unix_now, InputMetrics};
use crate::split::{Split, SplitConfig};
use threatbeat_core::duration;

/// How file contents are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON document, or NDJSON when the file holds several; MISP
    /// `{"Event": ...}` files are read as one-event restSearch answers.
    #[default]
    Auto,
    /// One JSON document per file.
    Json,
    /// One JSON document per line.
    Ndjson,
    /// MISP event files (`{"Event": {...}}`), as in a feed folder.
    MispFeed,
    /// CSV: one record per row (see [`crate::csv`]).
    Csv,
    /// One value per line: one `{"message": …}` record per line (see [`crate::lines`]).
    Lines,
}

/// The `file` input config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Files, folders or glob patterns; relative ones are under `path.config`.
    pub paths: Vec<String>,
    /// How contents are read.
    #[serde(default)]
    pub format: Format,
    /// How one document becomes records (same as httpjson's `response.split`).
    #[serde(default)]
    pub split: Option<SplitConfig>,
    /// CSV settings (`format: csv`, or `auto` on a `.csv` file).
    #[serde(default)]
    pub csv: CsvConfig,
    /// Line settings (`format: lines`).
    #[serde(default)]
    pub lines: LinesConfig,
    /// The largest file read, in bytes (default 100 MiB).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// How often the paths are scanned for new or changed files. Default 10s.
    #[serde(
        default = "default_scan_frequency",
        deserialize_with = "duration::deserialize"
    )]
    pub scan_frequency: Duration,
}

fn default_max_file_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_scan_frequency() -> Duration {
    Duration::from_secs(10)
}

/// The built input.
pub struct FileInput {
    patterns: Vec<String>,
    format: Format,
    csv: CsvConfig,
    lines: LinesConfig,
    max_file_bytes: u64,
    split: Option<Split>,
    dead_letter: DeadLetter,
    scan_frequency: Duration,
}

/// Registry factory for `type: file`.
pub fn build(config: &PluginConfig, context: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let parsed: FileConfig = config.parse()?;
    if parsed.paths.is_empty() {
        return Err(config
            .origin
            .child("paths")
            .error("list at least one file, folder or glob pattern"));
    }
    let mut patterns = Vec::new();
    for (index, raw) in parsed.paths.iter().enumerate() {
        let path = context.config_path.join(raw);
        let text = path.to_string_lossy().into_owned();
        glob::Pattern::new(&text).map_err(|error| {
            config
                .origin
                .child("paths")
                .child(index)
                .error(format!("invalid pattern `{raw}`: {error}"))
        })?;
        patterns.push(text);
    }
    let split = match &parsed.split {
        Some(split) => Some(Split::build(split, &config.origin.child("split"))?),
        None => None,
    };
    Ok(Box::new(FileInput {
        patterns,
        format: parsed.format,
        csv: parsed.csv,
        lines: parsed.lines,
        max_file_bytes: parsed.max_file_bytes,
        split,
        dead_letter: DeadLetter::new(&context.data_path, &context.pipeline_id),
        scan_frequency: parsed.scan_frequency,
    }))
}

/// A file's identity in the cursor.
fn stamp(path: &Path) -> std::io::Result<Value> {
    let metadata = std::fs::metadata(path)?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |duration| duration.as_nanos() as u64);
    Ok(json!({"size": metadata.len(), "mtime_ns": modified}))
}

impl FileInput {
    /// The files to read, in a stable order: plain files as matched; for a
    /// folder with `manifest.json` (a MISP feed) the `<uuid>.json` files it
    /// lists; for another folder its `*.json`, `*.ndjson` and `*.jsonl` files.
    fn files(&self) -> (Vec<(PathBuf, Format)>, Vec<String>) {
        let mut files = BTreeMap::new();
        let mut problems = Vec::new();
        for pattern in &self.patterns {
            let matches: Vec<PathBuf> = match glob::glob(pattern) {
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(error) => {
                    problems.push(format!("{pattern}: {error}"));
                    continue;
                }
            };
            if matches.is_empty() {
                tracing::warn!(pattern, "no file matches this path yet");
            }
            for path in matches {
                if path.is_dir() {
                    let manifest = path.join("manifest.json");
                    if manifest.is_file() {
                        match feed_files(&path, &manifest) {
                            Ok(listed) => {
                                files.extend(listed.into_iter().map(|file| (file, Format::MispFeed)))
                            }
                            Err(problem) => problems.push(problem),
                        }
                    } else if let Ok(entries) = std::fs::read_dir(&path) {
                        for entry in entries.filter_map(Result::ok) {
                            let file = entry.path();
                            let wanted = file
                                .extension()
                                .and_then(|ext| ext.to_str())
                                .is_some_and(|ext| matches!(ext, "json" | "ndjson" | "jsonl" | "csv"));
                            if wanted && file.is_file() {
                                files.entry(file).or_insert(self.format);
                            }
                        }
                    }
                } else if path.is_file() {
                    files.entry(path).or_insert(self.format);
                }
            }
        }
        (files.into_iter().collect(), problems)
    }

    /// Reads one file into records.
    fn read(&self, path: &Path, format: Format, input: &str) -> Result<Vec<Value>, String> {
        let size = std::fs::metadata(path)
            .map_err(|error| format!("cannot read: {error}"))?
            .len();
        if size > self.max_file_bytes {
            return Err(format!(
                "{size} bytes, more than max_file_bytes ({}); raise it if the file is genuine",
                self.max_file_bytes
            ));
        }
        let bytes = std::fs::read(path).map_err(|error| format!("cannot read: {error}"))?;
        let format = if format == Format::Auto && is_csv_name(path) {
            Format::Csv
        } else {
            format
        };
        let documents = match format {
            Format::Csv => {
                let rows = decode_csv(&bytes, &self.csv).map_err(|error| error.to_string())?;
                log_skipped_rows(input, &path.display().to_string(), "CSV row", &rows.errors);
                // Each row is a document of its own, so a `split` meant for
                // saved API answers passes rows through unchanged.
                rows.records
            }
            Format::Lines => {
                let lines = decode_lines(&bytes, &self.lines).map_err(|error| error.to_string())?;
                log_skipped_rows(input, &path.display().to_string(), "line", &lines.errors);
                lines.records
            }
            Format::Json | Format::MispFeed => vec![decode_json(&bytes).map_err(|error| error.to_string())?],
            Format::Ndjson => {
                decode_ndjson(&bytes).map_err(|(line, error)| format!("line {line}: {error}"))?
            }
            Format::Auto => match decode_json(&bytes) {
                Ok(document) => vec![document],
                Err(DecodeError::Invalid { .. }) => {
                    decode_ndjson(&bytes).map_err(|(line, error)| format!("line {line}: {error}"))?
                }
                Err(error) => return Err(error.to_string()),
            },
        };
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for document in documents {
            let document = if !matches!(format, Format::Ndjson | Format::Lines | Format::Csv) {
                as_rest_search(document)
            } else {
                document
            };
            match &self.split {
                Some(split) => split
                    .apply(&document, &mut records, &mut rejected)
                    .map_err(|error| error.to_string())?,
                None => match document {
                    Value::Array(items) => records.extend(items),
                    other => records.push(other),
                },
            }
        }
        self.dead_letter.record(&path.display().to_string(), rejected);
        Ok(records)
    }

    /// One scan: every new or changed file is read and published with the
    /// cursor that records it. Returns the files that failed. A scan that
    /// reads every file it matched is a whole listing of the source: its
    /// first batch starts a poll and its last ends it (see [`Batch::ends_poll`]).
    async fn scan(
        &self,
        cursor: &mut Map<String, Value>,
        context: &InputContext,
        metrics: &InputMetrics,
    ) -> Result<Vec<String>, InputError> {
        let (files, mut failures) = self.files();
        let matched = files.len();
        // Files that are gone leave the cursor, so it does not grow with
        // every file ever seen (their state goes with the next stored batch).
        let present: std::collections::HashSet<String> = files
            .iter()
            .map(|(path, _)| path.to_string_lossy().into_owned())
            .collect();
        cursor.retain(|key, _| present.contains(key));
        let mut changed = Vec::new();
        for (path, format) in files {
            let key = path.to_string_lossy().into_owned();
            match stamp(&path) {
                Ok(current) if cursor.get(&key) == Some(&current) => {}
                Ok(current) => changed.push((path, format, key, current)),
                Err(error) => failures.push(format!("{key}: {error}")),
            }
        }
        let whole_listing = changed.len() == matched && failures.is_empty();
        let last_index = changed.len().saturating_sub(1);
        for (index, (path, format, key, current)) in changed.into_iter().enumerate() {
            let records = match self.read(&path, format, &context.id) {
                Ok(records) => records,
                Err(reason) => {
                    tracing::error!(input = %context.id, file = %key, error = %reason, "file skipped; it is tried again at the next scan");
                    failures.push(format!("{key}: {reason}"));
                    continue;
                }
            };
            let mut next = cursor.clone();
            next.insert(key.clone(), current);
            let count = records.len();
            let batch = Batch {
                events: records.into_iter().map(Event::from_value).collect(),
                cursor: Some(Value::Object(next.clone())),
                starts_poll: whole_listing && index == 0,
                ends_poll: whole_listing && index == last_index && failures.is_empty(),
                fetched_again_until_cursor: false,
            };
            let published = tokio::select! {
                result = context.publisher.publish(batch) => result,
                _ = context.shutdown.cancelled() => return Ok(failures),
            };
            match published {
                Ok(()) => {
                    *cursor = next;
                    metrics.record_events(count);
                    tracing::info!(input = %context.id, file = %key, events = count, "file read");
                }
                Err(error) => {
                    tracing::error!(input = %context.id, file = %key, %error, "publishing failed; the file is read again at the next scan");
                    failures.push(format!("{key}: publishing failed: {error}"));
                    return Ok(failures);
                }
            }
        }
        Ok(failures)
    }
}

/// Whether a file is CSV by its name: one of its extensions is `csv`
/// (`risklist.csv`, and Elastic's `rf_ip_default.csv.log` samples).
fn is_csv_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.split('.').skip(1).any(|ext| ext.eq_ignore_ascii_case("csv")))
}

/// Logs the rows (CSV rows, lines) a decode skipped: the first ten one by
/// one, then a count. `kind` names a row in the messages.
pub(crate) fn log_skipped_rows(input: &str, source: &str, kind: &str, errors: &[RowError]) {
    const LOGGED: usize = 10;
    for error in errors.iter().take(LOGGED) {
        tracing::warn!(input, source, line = error.line, error = %error.reason, "{kind} skipped");
    }
    if errors.len() > LOGGED {
        tracing::warn!(
            input,
            source,
            skipped = errors.len(),
            "{kind}s skipped in all (only the first {LOGGED} are logged)"
        );
    }
}

/// The `<uuid>.json` files a feed `manifest.json` lists (sorted). A key
/// that is not a plain name (`../../etc/x`, `/abs`, `a/b`) would read
/// outside the feed folder and is skipped with a warning, as is a listed
/// file that is a symbolic link.
fn feed_files(folder: &Path, manifest: &Path) -> Result<Vec<PathBuf>, String> {
    let bytes = std::fs::read(manifest).map_err(|error| format!("{}: {error}", manifest.display()))?;
    let listed = decode_json(&bytes).map_err(|error| format!("{}: {error}", manifest.display()))?;
    let Value::Object(entries) = listed else {
        return Err(format!(
            "{}: expected an object of event uuids",
            manifest.display()
        ));
    };
    let mut files = Vec::new();
    for uuid in entries.keys() {
        let plain = !uuid.is_empty()
            && uuid.len() <= 128
            && uuid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !plain {
            tracing::warn!(manifest = %manifest.display(), key = %uuid, "a manifest key that is not an event uuid is skipped (it would name a file outside the feed folder)");
            continue;
        }
        let file = folder.join(format!("{uuid}.json"));
        if std::fs::symlink_metadata(&file).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
            tracing::warn!(file = %file.display(), "a feed file that is a symbolic link is skipped");
            continue;
        }
        files.push(file);
    }
    Ok(files)
}

/// A MISP event file (`{"Event": {...}}` with list-valued `Attribute`/`Object`)
/// as a one-event restSearch answer, so one split config serves both.
fn as_rest_search(document: Value) -> Value {
    let is_event_file = document
        .get("Event")
        .and_then(Value::as_object)
        .is_some_and(|event| !event.get("Attribute").is_some_and(Value::is_object))
        && document.get("response").is_none();
    if is_event_file {
        json!({"response": [document]})
    } else {
        document
    }
}

#[async_trait]
impl Input for FileInput {
    async fn run(self: Box<Self>, context: InputContext) -> Result<(), InputError> {
        let mut cursor = match &context.cursor {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        let metrics = InputMetrics::new(&context.id);
        loop {
            let failures = self.scan(&mut cursor, &context, &metrics).await?;
            if failures.is_empty() {
                metrics.record_poll_success(unix_now(), None);
            }
            if context.run_once {
                if failures.is_empty() {
                    return Ok(());
                }
                return Err(InputError::Fatal(format!(
                    "{}: {} file(s) failed: {}",
                    context.id,
                    failures.len(),
                    failures.join("; ")
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.scan_frequency) => {}
                _ = context.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
