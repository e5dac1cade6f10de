//! `output.file`: NDJSON files rotated by size, as Filebeat's file output.
//!
//! The current file is `<path>/<filename>.ndjson`; when the next write would
//! pass `rotate_every_kb`, it becomes `<filename>.1.ndjson`, the older ones
//! shift up (`.2`, `.3`, …) and those beyond `number_of_files` are deleted.
//! Each document is the event's fields plus `@metadata` holding only `_id`
//! and `index` (enough to re-ingest with stable ids), and for any action but
//! the default `create` also `op_type` and `doc_as_upsert`, so a reader can
//! replay the lines into the final state: an `update` line holds the partial
//! document, a `delete` line no fields at all. `publish` returns only
//! once the batch is flushed and fsynced: only then may the queue free the
//! events (or, without a queue, the pipeline move the cursor).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, EncodedEvent, OpType, Output, OutputError, PluginConfig};

/// The settings under `output.file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The folder; relative paths are relative to `path.config`. Default: `path.data`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The base name of the files (default `threatbeat`).
    #[serde(default = "default_filename")]
    pub filename: String,
    /// Rotate once the current file would pass this size (default 10240 KiB).
    #[serde(default = "default_rotate_every_kb")]
    pub rotate_every_kb: u64,
    /// How many files to keep, the current one included (default 7, 2 to 1024).
    #[serde(default = "default_number_of_files")]
    pub number_of_files: u32,
    /// File mode, octal as in Filebeat (`0600`, written as a number or a string).
    #[serde(default = "default_permissions")]
    pub permissions: Value,
}

fn default_filename() -> String {
    "threatbeat".to_owned()
}
fn default_rotate_every_kb() -> u64 {
    10 * 1024
}
fn default_number_of_files() -> u32 {
    7
}
fn default_permissions() -> Value {
    Value::String("0600".to_owned())
}

/// Reads `0600`, `"0600"` or `"0o600"` as the octal mode 0o600.
fn parse_permissions(value: &Value) -> Option<u32> {
    let digits = match value {
        Value::Number(number) => number.as_u64()?.to_string(),
        Value::String(text) => text.trim_start_matches("0o").to_owned(),
        _ => return None,
    };
    u32::from_str_radix(&digits, 8).ok().filter(|mode| *mode <= 0o777)
}

/// The file output's runtime state.
pub struct FileOutput {
    directory: PathBuf,
    filename: String,
    rotate_bytes: u64,
    number_of_files: u32,
    permissions: u32,
    current: Option<BufWriter<File>>,
    current_size: u64,
}

/// Builds `output.file`.
pub fn build(config: &PluginConfig, context: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let parsed: FileConfig = config.parse()?;
    let origin = &config.origin;
    if parsed.filename.is_empty() || parsed.filename.contains('/') {
        return Err(origin
            .child("filename")
            .error("must be a plain file name, without `/`"));
    }
    if parsed.rotate_every_kb == 0 {
        return Err(origin.child("rotate_every_kb").error("must be at least 1"));
    }
    if !(2..=1024).contains(&parsed.number_of_files) {
        return Err(origin
            .child("number_of_files")
            .error("must be between 2 and 1024"));
    }
    let permissions = parse_permissions(&parsed.permissions).ok_or_else(|| {
        origin.child("permissions").error(format!(
            "expected an octal file mode such as 0600, found {}",
            parsed.permissions
        ))
    })?;
    let directory = match parsed.path {
        Some(path) if path.is_absolute() => path,
        Some(path) => context.config_path.join(path),
        None => context.data_path.clone(),
    };
    Ok(Box::new(FileOutput {
        directory,
        filename: parsed.filename,
        rotate_bytes: parsed.rotate_every_kb * 1024,
        number_of_files: parsed.number_of_files,
        permissions,
        current: None,
        current_size: 0,
    }))
}

impl FileOutput {
    /// The file currently written (`threatbeat.ndjson`) or rotated number `n` (`threatbeat.n.ndjson`).
    pub fn file_path(&self, rotation: u32) -> PathBuf {
        file_path(&self.directory, &self.filename, rotation)
    }

    fn open(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.current.is_none() {
            fs::create_dir_all(&self.directory)?;
            let path = self.file_path(0);
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, self.permissions);
            let file = options.open(&path)?;
            self.current_size = file.metadata()?.len();
            self.current = Some(BufWriter::with_capacity(256 * 1024, file));
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    fn finish_current(&mut self) -> std::io::Result<()> {
        if let Some(mut writer) = self.current.take() {
            writer.flush()?;
            writer.get_ref().sync_all()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.finish_current()?;
        let oldest = self.number_of_files - 1;
        remove_if_present(&self.file_path(oldest))?;
        for rotation in (1..oldest).rev() {
            rename_if_present(&self.file_path(rotation), &self.file_path(rotation + 1))?;
        }
        rename_if_present(&self.file_path(0), &self.file_path(1))?;
        sync_directory(&self.directory);
        self.current_size = 0;
        Ok(())
    }

    fn write_batch(&mut self, events: &[EncodedEvent]) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(1024);
        for event in events {
            line.clear();
            if let Err(error) = event.write_with_metadata(&written_metadata(event), &mut line) {
                tracing::error!(
                    %error,
                    id = event.id().unwrap_or(""),
                    "file output: skipping a queued event that cannot be read back"
                );
                continue;
            }
            line.push(b'\n');
            let length = line.len() as u64;
            self.open()?;
            if self.current_size > 0 && self.current_size + length > self.rotate_bytes {
                self.rotate()?;
            }
            self.open()?.write_all(&line)?;
            self.current_size += length;
        }
        if let Some(writer) = self.current.as_mut() {
            writer.flush()?;
            writer.get_ref().sync_data()?;
        }
        Ok(())
    }
}

/// The `@metadata` written with a document (whose fields are none for a
/// delete): `_id`, `index` and, unless the action is `create`, `op_type` and
/// `doc_as_upsert`.
fn written_metadata(event: &EncodedEvent) -> Vec<u8> {
    let op = event.op_type();
    let mut metadata = Map::new();
    for (key, value) in [("_id", event.id()), ("index", event.index())] {
        if let Some(value) = value {
            metadata.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    if op != OpType::Create {
        metadata.insert("op_type".to_owned(), Value::String(op.as_str().to_owned()));
    }
    if op == OpType::Update && event.doc_as_upsert() {
        metadata.insert("doc_as_upsert".to_owned(), Value::Bool(true));
    }
    // A map of strings and booleans always serialises.
    serde_json::to_vec(&metadata).unwrap_or_else(|_| b"{}".to_vec())
}

/// `<directory>/<filename>.ndjson`, or `<filename>.<rotation>.ndjson` for rotated files.
pub fn file_path(directory: &Path, filename: &str, rotation: u32) -> PathBuf {
    match rotation {
        0 => directory.join(format!("{filename}.ndjson")),
        n => directory.join(format!("{filename}.{n}.ndjson")),
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn sync_directory(directory: &Path) {
    if let Ok(handle) = File::open(directory) {
        let _ = handle.sync_all();
    }
}

#[async_trait]
impl Output for FileOutput {
    /// The queued document is written as it is, with `@metadata` in front.
    // Blocking file I/O on purpose: the output runs in its own task, one batch
    // at a time, and the fsync must finish before the batch counts as durable.
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        self.write_batch(&events).map_err(|error| {
            // Drop the handle so the next attempt reopens (the folder may be back).
            self.current = None;
            OutputError::Write(format!("file output {}: {error}", self.file_path(0).display()))
        })
    }

    async fn close(&mut self) -> Result<(), OutputError> {
        self.finish_current().map_err(|error| {
            OutputError::Write(format!("file output {}: {error}", self.file_path(0).display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use threatbeat_core::Event;
    use threatbeat_core::Origin;

    fn plugin(settings: Value) -> PluginConfig {
        PluginConfig {
            type_name: "file".into(),
            settings,
            origin: Origin::named("threatbeat.yml").child("output.file"),
        }
    }

    fn event(number: usize) -> Event {
        let mut event = Event::from_value(json!({"n": number, "pad": "x".repeat(100)}));
        event.set_id(format!("id-{number}"));
        event.set_index("threatbeat-test");
        event.metadata.insert("op_type".into(), json!("create"));
        event
    }

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn writes_ndjson_with_id_and_index_only() {
        let dir = tempfile::tempdir().unwrap();
        let context = BuildContext {
            config_path: dir.path().to_path_buf(),
            ..Default::default()
        };
        let mut output = build(&plugin(json!({"path": "out", "filename": "intel"})), &context).unwrap();
        output.publish_events(vec![event(1), event(2)]).await.unwrap();
        output.close().await.unwrap();
        let written = lines(&dir.path().join("out/intel.ndjson"));
        assert_eq!(written.len(), 2);
        assert_eq!(
            written[0]["@metadata"],
            json!({"_id": "id-1", "index": "threatbeat-test"})
        );
        assert_eq!(written[1]["n"], json!(2));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("out/intel.ndjson"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn writes_the_action_so_a_reader_can_replay_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut output = build(&plugin(json!({"path": dir.path()})), &BuildContext::default()).unwrap();
        let with_op = |op: OpType, fields: Value| {
            let mut event = Event::from_value(fields);
            event.set_id("ioc");
            event.set_index("logs-ti_threatbeat_latest.misp");
            event.set_op_type(op);
            event
        };
        let mut upsert = with_op(OpType::Update, json!({"@timestamp": "2026-02-01T00:00:00Z"}));
        upsert.metadata.insert("doc_as_upsert".into(), json!(true));
        let events = vec![
            with_op(
                OpType::Index,
                json!({"@timestamp": "2026-01-01T00:00:00Z", "a": {"b": 1}}),
            ),
            with_op(OpType::Update, json!({"a": {"c": 2}})),
            upsert,
            with_op(OpType::Delete, json!({"left": "over"})),
        ];
        output.publish_events(events).await.unwrap();
        output.close().await.unwrap();
        let written = lines(&dir.path().join("threatbeat.ndjson"));
        let meta = |op: &str| json!({"_id": "ioc", "index": "logs-ti_threatbeat_latest.misp", "op_type": op});
        let mut upsert_meta = meta("update");
        upsert_meta["doc_as_upsert"] = json!(true);
        assert_eq!(
            written,
            [
                json!({"@timestamp": "2026-01-01T00:00:00Z", "a": {"b": 1}, "@metadata": meta("index")}),
                json!({"a": {"c": 2}, "@metadata": meta("update")}),
                json!({"@timestamp": "2026-02-01T00:00:00Z", "@metadata": upsert_meta}),
                json!({"@metadata": meta("delete")}),
            ]
        );
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let settings = json!({"path": dir.path(), "rotate_every_kb": 1, "number_of_files": 3});
        let mut output = build(&plugin(settings), &BuildContext::default()).unwrap();
        // Each line is about 160 bytes: 6 fit in 1 KiB.
        for batch in 0..5 {
            output
                .publish_events((batch * 6..batch * 6 + 6).map(event).collect())
                .await
                .unwrap();
        }
        output.close().await.unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["threatbeat.1.ndjson", "threatbeat.2.ndjson", "threatbeat.ndjson"]
        );
        let newest = lines(&dir.path().join("threatbeat.ndjson"));
        assert_eq!(newest.last().unwrap()["n"], json!(29));
        for name in &names {
            assert!(
                fs::metadata(dir.path().join(name)).unwrap().len() <= 1024,
                "{name}"
            );
        }
        // Nothing is lost between the kept files: they hold the newest events, in order.
        let mut kept: Vec<u64> = Vec::new();
        for name in ["threatbeat.2.ndjson", "threatbeat.1.ndjson", "threatbeat.ndjson"] {
            kept.extend(
                lines(&dir.path().join(name))
                    .iter()
                    .map(|line| line["n"].as_u64().unwrap()),
            );
        }
        let expected: Vec<u64> = (30 - kept.len() as u64..30).collect();
        assert_eq!(kept, expected);
    }

    #[tokio::test]
    async fn a_missing_folder_fails_the_batch_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocked");
        fs::write(&blocker, b"a file where the folder should be").unwrap();
        let mut output = build(&plugin(json!({"path": blocker})), &BuildContext::default()).unwrap();
        assert!(output.publish_events(vec![event(1)]).await.is_err());
        fs::remove_file(&blocker).unwrap();
        output.publish_events(vec![event(2)]).await.unwrap();
        assert_eq!(lines(&blocker.join("threatbeat.ndjson"))[0]["n"], json!(2));
    }

    #[test]
    fn settings_are_checked() {
        for (settings, key) in [
            (json!({"rotate_every_kb": 0}), "output.file.rotate_every_kb"),
            (json!({"number_of_files": 1}), "output.file.number_of_files"),
            (json!({"permissions": "0999"}), "output.file.permissions"),
            (json!({"filename": "a/b"}), "output.file.filename"),
            (json!({"rotate_every": 1}), "output.file.rotate_every"),
        ] {
            let error = build(&plugin(settings), &BuildContext::default()).err().unwrap();
            assert_eq!(error.key, key);
        }
        assert_eq!(parse_permissions(&json!(600)), Some(0o600));
        assert_eq!(parse_permissions(&json!("0640")), Some(0o640));
    }
}
