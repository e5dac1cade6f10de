//! One process, one queue directory: an exclusive OS lock (`flock`) on its
//! `lock` file, held while the queue is open. The kernel drops it when the
//! process ends, however it ends (`kill -9` included), so there is no stale
//! lock to take over and no PID to guess about.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::QueueError;

fn open_in_this_process() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Held while a queue is open; released on drop.
#[derive(Debug)]
pub struct DirectoryLock {
    directory: PathBuf,
    _file: File,
}

impl DirectoryLock {
    /// Takes the lock of `directory`, or says who holds it.
    pub fn acquire(directory: &Path) -> Result<Self, QueueError> {
        let directory = directory.canonicalize().unwrap_or_else(|_| directory.to_owned());
        let path = directory.join("lock");
        {
            let mut open = open_in_this_process()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !open.insert(directory.clone()) {
                return Err(QueueError::Locked {
                    path: directory,
                    owner: "this process (another queue uses the same directory)".to_owned(),
                });
            }
        }
        let release = |error| {
            open_in_this_process()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&directory);
            error
        };
        let opened = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path);
        let mut file = match opened {
            Ok(file) => file,
            Err(source) => return Err(release(QueueError::Io { path, source })),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(release(QueueError::Locked {
                    path: directory.clone(),
                    owner: match holder.trim() {
                        "" => "another process".to_owned(),
                        pid => format!("process {pid}"),
                    },
                }));
            }
            Err(TryLockError::Error(source)) => return Err(release(QueueError::Io { path, source })),
        }
        // For a reader, never for the decision: who holds it.
        let _ = file
            .set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(Self {
            directory,
            _file: file,
        })
    }
}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        open_in_this_process()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.directory);
    }
}
