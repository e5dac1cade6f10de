//! One process, one queue directory: a `lock` file holding the owner's PID.
//! A lock left by a process that no longer runs (after `kill -9`) is taken over.

use std::collections::HashSet;
use std::fs;
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
    file: PathBuf,
}

impl DirectoryLock {
    /// Takes the lock of `directory`, or says who holds it.
    pub fn acquire(directory: &Path) -> Result<Self, QueueError> {
        let directory = directory.canonicalize().unwrap_or_else(|_| directory.to_owned());
        let file = directory.join("lock");
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
        if let Ok(text) = fs::read_to_string(&file) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                if pid != std::process::id() && process_is_a_live_threatbeat(pid) {
                    return Err(release(QueueError::Locked {
                        path: directory.clone(),
                        owner: format!("process {pid}"),
                    }));
                }
            }
        }
        let written = fs::File::create(&file).and_then(|mut handle| write!(handle, "{}", std::process::id()));
        if let Err(source) = written {
            return Err(release(QueueError::Io { path: file, source }));
        }
        Ok(Self { directory, file })
    }
}

/// Whether `pid` runs and is the same program as us. A zombie (killed, not
/// yet reaped) or a reused PID running another program does not hold the lock.
fn process_is_a_live_threatbeat(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z') | Some('X')) {
        return false;
    }
    match (fs::read_link(format!("/proc/{pid}/exe")), std::env::current_exe()) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        // Not allowed to look: assume it is a live owner rather than risk two writers.
        _ => true,
    }
}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
        open_in_this_process()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.directory);
    }
}
