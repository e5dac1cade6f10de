//! One agent per data folder: an exclusive OS lock (`flock`) on
//! `path.data/threatbeat.lock`, held for the process's life, as Filebeat's
//! "data path already locked by another beat". The kernel releases it when
//! the process ends, however it ends, so there is no stale lock to guess
//! about (no PID, which also fails when the agent is PID 1 in a container).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name under `path.data`.
pub const FILE_NAME: &str = "threatbeat.lock";

/// Why the data folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataLockError {
    /// Another process holds the lock.
    #[error("data path {0} is already locked by another threatbeat process; stop it, or give this one its own path.data")]
    Locked(PathBuf),
    /// The folder or the lock file cannot be created or locked.
    #[error("cannot lock the data path {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Creates `data` (0700 under the agent's umask) and takes its lock.
    pub fn acquire(data: &Path) -> Result<Self, DataLockError> {
        let path = data.join(FILE_NAME);
        let io = |source| DataLockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(DataLockError::Locked(data.to_owned())),
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // For a reader (`cat`), never for the decision: who holds it.
        let _ = file
            .set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_is_gone() {
        let folder = tempfile::tempdir().unwrap();
        let data = folder.path().join("data");
        let first = DataLock::acquire(&data).unwrap();
        let error = DataLock::acquire(&data).unwrap_err();
        assert!(matches!(error, DataLockError::Locked(_)), "{error}");
        assert!(error.to_string().contains(&data.display().to_string()));
        drop(first);
        DataLock::acquire(&data).unwrap();
    }
}
