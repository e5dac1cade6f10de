//! Cursors persisted under `path.data/registry/`, one JSON file per pipeline.
//!
//! A write goes to a temporary file that is fsynced and then renamed over
//! the old one, so a crash leaves either the old or the new cursor, never a
//! torn one. A file that cannot be parsed is reported with its path; the
//! caller decides whether to start over (safe: documents have stable ids).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a cursor could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// Reading or writing the file failed.
    #[error("cursor file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds something that is not JSON.
    #[error(
        "cursor file {path} is corrupt ({source}); remove it to restart this input from `first_interval`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Stores one cursor per pipeline id.
#[derive(Debug, Clone)]
pub struct CursorStore {
    directory: PathBuf,
}

/// The name a pipeline's state files take (`threatintel/misp` →
/// `threatintel_misp`): every character but ASCII letters, digits, `-` and
/// `_` becomes `_`. Two ids may share a name (`a/b_c`, `a_b/c`): the agent
/// refuses such a pair when it loads the configuration.
pub fn state_name(pipeline_id: &str) -> String {
    pipeline_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl CursorStore {
    /// A store in `<data_path>/registry`.
    pub fn new(data_path: &Path) -> Self {
        Self {
            directory: data_path.join("registry"),
        }
    }

    /// The file holding the cursor of `pipeline_id`.
    pub fn file_for(&self, pipeline_id: &str) -> PathBuf {
        self.directory.join(format!("{}.json", state_name(pipeline_id)))
    }

    /// The stored cursor, or `None` when nothing was stored yet.
    pub fn load(&self, pipeline_id: &str) -> Result<Option<Value>, CursorError> {
        let path = self.file_for(pipeline_id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CursorError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CursorError::Corrupt { path, source })
    }

    /// Replaces the stored cursor atomically.
    pub fn store(&self, pipeline_id: &str, cursor: &Value) -> Result<(), CursorError> {
        let path = self.file_for(pipeline_id);
        let io_error = |source| CursorError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.directory).map_err(io_error)?;
        let temporary = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(cursor).expect("a JSON value always serializes");
        let mut file = fs::File::create(&temporary).map_err(io_error)?;
        file.write_all(&bytes).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        fs::rename(&temporary, &path).map_err(io_error)?;
        // The rename is durable only once the directory entry is.
        if let Ok(directory) = fs::File::open(&self.directory) {
            let _ = directory.sync_all();
        }
        Ok(())
    }

    /// The source digest recorded for `pipeline_id` by [`CursorStore::record_source`].
    pub fn recorded_source(&self, pipeline_id: &str) -> Option<String> {
        let text = fs::read_to_string(self.file_for(pipeline_id).with_extension("source")).ok()?;
        Some(text.trim().to_owned())
    }

    /// Records which source `pipeline_id`'s cursor belongs to (a digest of
    /// the settings naming the source), so that when the same fileset is
    /// configured a second time, the instance with this source, and only
    /// it, takes over the cursor. Unchanged digests are not written again.
    pub fn record_source(&self, pipeline_id: &str, source_key: &str) -> Result<(), CursorError> {
        if self.recorded_source(pipeline_id).as_deref() == Some(source_key) {
            return Ok(());
        }
        let path = self.file_for(pipeline_id).with_extension("source");
        let io_error = |source| CursorError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.directory).map_err(io_error)?;
        fs::write(&path, source_key).map_err(io_error)
    }

    /// Forgets the cursor of `pipeline_id` (the next run starts from `first_interval`).
    pub fn remove(&self, pipeline_id: &str) -> Result<(), CursorError> {
        let path = self.file_for(pipeline_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CursorError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_overwrites() {
        let directory = tempfile::tempdir().unwrap();
        let store = CursorStore::new(directory.path());
        assert!(store.load("threatintel/misp").unwrap().is_none());
        store
            .store("threatintel/misp", &json!({"timestamp": "1700000000"}))
            .unwrap();
        store
            .store("threatintel/misp", &json!({"timestamp": "1700000100"}))
            .unwrap();
        assert_eq!(
            store.load("threatintel/misp").unwrap(),
            Some(json!({"timestamp": "1700000100"}))
        );
        assert!(store
            .file_for("threatintel/misp")
            .ends_with("registry/threatintel_misp.json"));
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path() {
        let directory = tempfile::tempdir().unwrap();
        let store = CursorStore::new(directory.path());
        let path = store.file_for("a");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"{\"timestamp\": \"17").unwrap();
        let error = store.load("a").unwrap_err();
        assert!(matches!(error, CursorError::Corrupt { .. }));
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn remove_forgets() {
        let directory = tempfile::tempdir().unwrap();
        let store = CursorStore::new(directory.path());
        store.store("a", &json!(1)).unwrap();
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert!(store.load("a").unwrap().is_none());
    }
}
