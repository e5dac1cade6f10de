//! Running the real `threatbeat` binary in tests: a temporary home folder
//! (`path.config` and `path.data`), a child-process guard that kills the
//! agent when a test fails, reading the file output, and polling waits.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_threatbeat")`
//! in the agent crate's tests), since only Cargo knows where it was built.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: the machines have two noisy cores.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A temporary agent home: `threatbeat.yml`, `modules.d/`, `data/`, logs.
pub struct AgentHome {
    dir: tempfile::TempDir,
    binary: PathBuf,
    runs: usize,
}

impl AgentHome {
    /// An empty home for `binary`; write `threatbeat.yml` with [`AgentHome::write`].
    pub fn new(binary: &Path) -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
            binary: binary.to_owned(),
            runs: 0,
        }
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the home folder.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `text` to `relative`, creating its folders.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|error| panic!("{}: {error}", parent.display()));
        }
        fs::write(&path, text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }

    /// The binary with `-e -c <home>/threatbeat.yml`, run from the home folder,
    /// without the caller's `RUST_LOG`.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(self.dir.path())
            .args(["-e", "-c"])
            .arg(self.path("threatbeat.yml"))
            .env_remove("RUST_LOG")
            // The tests' own seed is no agent setting (`THREATBEAT_*` are).
            .env_remove("THREATBEAT_E2E_SEED")
            .stdin(Stdio::null());
        command
    }

    /// `run --once`, waited for, with stdout and stderr captured.
    pub fn run_once(&self) -> Output {
        self.command()
            .args(["run", "--once"])
            .output()
            .unwrap_or_else(|error| panic!("{}: {error}", self.binary.display()))
    }

    /// [`AgentHome::run_once`] off the async runtime, so that simulators
    /// running on it keep answering.
    pub async fn run_once_async(&self) -> Output {
        let mut command = self.command();
        command.args(["run", "--once"]);
        tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
            .await
            .expect("the blocking task finishes")
    }

    /// The documents the file output wrote under `out/` (the tests' convention:
    /// `output.file: {path: out}`); none when nothing was written.
    pub fn documents(&self) -> Vec<Value> {
        read_ndjson(&self.path("out"))
    }

    /// The cursor `pipeline_id` stored under `data/` (the tests' `path.data`).
    pub fn cursor(&self, pipeline_id: &str) -> Option<Value> {
        threatbeat_core::CursorStore::new(&self.path("data"))
            .load(pipeline_id)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts `run` (the daemon), its output going to `run-<n>.log`.
    pub fn spawn(&mut self) -> AgentProcess {
        self.spawn_with(&["run"])
    }

    /// Starts the binary with `args`, its output going to `run-<n>.log`.
    pub fn spawn_with(&mut self, args: &[&str]) -> AgentProcess {
        self.runs += 1;
        let log = self.path(&format!("run-{}.log", self.runs));
        let mut command = self.command();
        command.args(args);
        AgentProcess::spawn(command, log)
    }
}

/// A running agent; killed (SIGKILL) when dropped, so a failing test leaves
/// no process behind, and its log printed if the test is failing.
pub struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `command` with its stdout and stderr going to the file `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = File::create(&log).unwrap_or_else(|error| panic!("{}: {error}", log.display()));
        let stdout = file.try_clone().expect("a second handle on the log file");
        let child = command
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|error| panic!("{:?}: {error}", command.get_program()));
        Self {
            child: Some(child),
            log,
        }
    }

    /// The operating system's process id, while the process is running.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        if let Some(id) = self.id() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(id.to_string())
                .status()
                .expect("kill(1) runs");
            assert!(status.success(), "kill -{signal} {id} failed");
        }
    }

    /// SIGTERM (a graceful stop), then wait up to [`PATIENCE`] for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Waits up to [`PATIENCE`] for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let child = self.child.as_mut().expect("the agent was already reaped");
            if let Some(status) = child.try_wait().expect("the child can be waited for") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit in time:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// The agent's whole output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the agent's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("agent output ({}):\n{}", self.log.display(), self.log_tail());
        }
        self.kill_9();
    }
}

/// Checks what the rules will see of a fileset after the documents written
/// so far: every document of the history `history` is marked for the rules
/// to skip, no document of the current state `latest` is, and the current
/// state holds exactly one document per value of `valid` (each document's
/// value given by `key`), nothing else. Returns the current-state documents.
pub fn assert_current_state<S: AsRef<str>>(
    documents: &[Value],
    history: &str,
    latest: &str,
    key: impl Fn(&Value) -> String,
    valid: impl IntoIterator<Item = S>,
) -> Vec<Value> {
    assert!(
        in_index(documents, history)
            .iter()
            .all(|document| document["labels"]["is_ioc_transform_source"] == "true"),
        "every history document is marked for the rules to skip"
    );
    let state = replay_current_state(documents, latest);
    assert!(state.values().all(|document| document.get("labels").is_none()));
    let mut values: Vec<String> = state.values().map(key).collect();
    values.sort();
    let mut valid: Vec<String> = valid.into_iter().map(|value| value.as_ref().to_owned()).collect();
    valid.sort();
    assert_eq!(values, valid, "one current-state document per valid indicator");
    state.into_values().collect()
}

/// The text a finished command wrote to stderr.
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `@metadata._id` of every document, in order.
///
/// # Panics
/// When a document has none: every indicator must have a stable id.
pub fn document_ids(documents: &[Value]) -> Vec<String> {
    documents
        .iter()
        .map(|document| {
            document["@metadata"]["_id"]
                .as_str()
                .unwrap_or_else(|| panic!("a document without _id: {document}"))
                .to_owned()
        })
        .collect()
}

/// How many distinct `@metadata._id`s `documents` hold.
pub fn unique_ids(documents: &[Value]) -> usize {
    document_ids(documents)
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// The documents the file output wrote for `index` (its `@metadata.index`).
pub fn in_index(documents: &[Value], index: &str) -> Vec<Value> {
    documents
        .iter()
        .filter(|document| document["@metadata"]["index"] == index)
        .cloned()
        .collect()
}

/// The state the file output's writes to the current-state index `index`
/// leave, replayed in order (`index` writes, `delete` removes): by `_id`,
/// its document. Any other write there is a failure.
pub fn replay_current_state(documents: &[Value], index: &str) -> std::collections::BTreeMap<String, Value> {
    let mut state = std::collections::BTreeMap::new();
    for document in in_index(documents, index) {
        let id = document["@metadata"]["_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match document["@metadata"]["op_type"].as_str() {
            Some("delete") => {
                state.remove(&id);
            }
            Some("index") => {
                state.insert(id, document);
            }
            other => panic!("unexpected current-state write {other:?}: {document}"),
        }
    }
    state
}

/// Every JSON line of `path` (a file, or every file of a folder such as the
/// file output's, rotations included, in name order). Lines that are not
/// JSON are skipped: a file being written may end in half a line.
pub fn read_ndjson(path: &Path) -> Vec<Value> {
    let mut files = Vec::new();
    if path.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            files.extend(entries.filter_map(Result::ok).map(|entry| entry.path()));
        }
        files.retain(|file| file.is_file());
        files.sort();
    } else if path.is_file() {
        files.push(path.to_owned());
    }
    files
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// [`wait_until`] for async tests: sleeps on the runtime between polls, so
/// simulators on the same runtime keep serving.
pub async fn wait_until_async(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
