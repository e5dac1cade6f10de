//! `threatbeat registry reset MODULE/FILESET`: forgets the stored cursor of
//! one pipeline, so that its next poll starts from the definition's first
//! window again (`var.first_interval`) — the way to apply a raised
//! `first_interval` after a run stored a cursor.
//!
//! The cursor file is only ever written by the agent that holds the data
//! folder's lock; the command takes that lock for its whole duration, so it
//! cannot remove a cursor under a running agent, which would write it back
//! with its next page anyway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use threatbeat_core::{state_name, CursorError, CursorStore};

use crate::cli::{Cli, RegistryCommand};
use crate::config::LoadOptions;
use crate::data_lock::{DataLock, DataLockError};

/// Why a cursor could not be reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The argument is not a pipeline id.
    #[error("`{0}` is not a pipeline id; write MODULE/FILESET (threatintel/misp), or MODULE/FILESET/ID for one of several instances")]
    NotAnId(String),
    /// An agent runs on this data folder, or the lock cannot be taken.
    #[error("{0}; the cursor is kept (stop the agent, then run the command again)")]
    Lock(#[from] DataLockError),
    /// No cursor is stored for the pipeline.
    #[error("no stored cursor for {id} in {directory}; stored: {stored}")]
    NoCursor {
        /// The pipeline asked for.
        id: String,
        /// The registry folder looked in.
        directory: PathBuf,
        /// The pipelines with a stored cursor, as their file names say them.
        stored: String,
    },
    /// The cursor file could not be removed.
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

/// The `registry` command. Only the paths are read from the config: unset
/// `${VAR}`s (an output key not in the keystore yet) do not stop it.
pub fn command(cli: &Cli, action: &RegistryCommand) -> anyhow::Result<ExitCode> {
    let options = LoadOptions::from_process(cli.config.clone(), cli.all_overrides());
    let paths = crate::config::load_paths(&options).context("invalid configuration")?;
    match action {
        RegistryCommand::Reset { pipeline } => {
            let removed = reset(&paths.data, pipeline)?;
            println!(
                "Removed the cursor of {pipeline} ({}); its next poll starts from the first window",
                removed.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes the stored cursor of `pipeline_id` under `data` (`path.data`),
/// holding the data folder's lock meanwhile; the removed file's path.
pub fn reset(data: &Path, pipeline_id: &str) -> Result<PathBuf, ResetError> {
    let parts: Vec<&str> = pipeline_id.split('/').collect();
    let is_name = |part: &&str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(is_name) {
        return Err(ResetError::NotAnId(pipeline_id.to_owned()));
    }
    let _lock = DataLock::acquire(data)?;
    let store = CursorStore::new(data);
    let file = store.file_for(pipeline_id);
    if !file.exists() {
        let directory = file.parent().map(Path::to_path_buf).unwrap_or_default();
        return Err(ResetError::NoCursor {
            id: pipeline_id.to_owned(),
            stored: stored_names(&directory),
            directory,
        });
    }
    store.remove(pipeline_id)?;
    Ok(file)
}

/// The state names of the stored cursors (`threatintel_misp`), or `none`.
fn stored_names(directory: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_suffix(".json"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The message logged at the start of an input that found a stored cursor:
/// settings of the first window no longer apply, and how to make them.
pub fn stored_cursor_hint(pipeline_id: &str) -> String {
    format!(
        "a stored cursor decides where {pipeline_id} resumes; the first poll's window (such as var.first_interval) applies only without one: to start over, stop the agent and run `threatbeat registry reset {pipeline_id}` (state file registry/{}.json)",
        state_name(pipeline_id)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn removes_only_the_named_cursor_and_refuses_under_a_running_agent() {
        let folder = tempfile::tempdir().unwrap();
        let data = folder.path().join("data");
        let store = CursorStore::new(&data);
        store.store("threatintel/misp", &json!({"timestamp": 1})).unwrap();
        store.store("threatintel/otx", &json!({"since": 2})).unwrap();

        let agent = DataLock::acquire(&data).unwrap();
        let error = reset(&data, "threatintel/misp").unwrap_err();
        assert!(
            matches!(error, ResetError::Lock(DataLockError::Locked(_))),
            "{error}"
        );
        assert!(
            store.load("threatintel/misp").unwrap().is_some(),
            "kept while locked"
        );
        drop(agent);

        let removed = reset(&data, "threatintel/misp").unwrap();
        assert_eq!(removed, store.file_for("threatintel/misp"));
        assert_eq!(store.load("threatintel/misp").unwrap(), None);
        assert_eq!(store.load("threatintel/otx").unwrap(), Some(json!({"since": 2})));

        let error = reset(&data, "threatintel/misp").unwrap_err().to_string();
        assert!(error.contains("no stored cursor for threatintel/misp"), "{error}");
        assert!(error.contains("stored: threatintel_otx"), "{error}");
        for bad in ["misp", "a/b/c/d", "threatintel/", "../x"] {
            assert!(matches!(reset(&data, bad), Err(ResetError::NotAnId(_))), "{bad}");
        }
    }
}
