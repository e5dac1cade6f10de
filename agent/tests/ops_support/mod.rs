//! Runs the real binary in a temporary home for the operations tests: a main
//! file, user module definitions (`test/alpha|beta|gamma`, the `file` input
//! over folders of NDJSON files), module files in modules.d, stderr captured
//! to a file, `output.file` polled.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
pub use threatbeat_test_support::agent::PATIENCE;
use threatbeat_test_support::agent::{wait_until, AgentProcess};

/// A fileset definition reading NDJSON files, labelling every event with `var.label`.
pub const DEFINITION: &str = r#"
module: test
fileset: FILESET
description: NDJSON feed for operations tests
var:
  paths: []
  label: one
input:
  file:
    paths: "{{ var.paths }}"
    format: ndjson
    scan_frequency: 300ms
index: threatbeat-test.FILESET
"#;

/// Labels every event with `var.label`, so a test sees which settings were used.
pub const PROCESSORS: &str = r#"
- set: {field: labels.source, value: "{{ var.label }}"}
"#;

/// A temporary `path.home` / `path.config`.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    /// A home with `main` as threatbeat.yml and definitions test/alpha, test/beta, test/gamma.
    pub fn new(main: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for fileset in ["alpha", "beta", "gamma"] {
            let definition = dir.path().join(format!("modules.d/definitions/test/{fileset}"));
            fs::create_dir_all(&definition).unwrap();
            fs::write(
                definition.join("manifest.yml"),
                DEFINITION.replace("FILESET", fileset),
            )
            .unwrap();
            fs::write(definition.join("processors.yml"), PROCESSORS).unwrap();
        }
        fs::write(dir.path().join("threatbeat.yml"), main).unwrap();
        Self { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes beside and renames, as editors and config management do.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let temporary = path.with_extension("tmp-write");
        fs::write(&temporary, text).unwrap();
        fs::rename(&temporary, &path).unwrap();
    }

    /// Adds the record `{"n": name}` to the feed folder `feed` as a new file
    /// (the file input reads a changed file whole again, so feeds only grow by files).
    pub fn add_record(&self, feed: &str, name: &str) {
        let folder = self.path(feed);
        fs::create_dir_all(&folder).unwrap();
        let temporary = folder.join(format!("{name}.partial"));
        let mut file = File::create(&temporary).unwrap();
        writeln!(file, "{{\"n\": \"{name}\"}}").unwrap();
        file.sync_all().unwrap();
        fs::rename(&temporary, folder.join(format!("{name}.ndjson"))).unwrap();
    }

    /// The binary, run in the home with a clean environment plus `env`.
    pub fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_threatbeat"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(self.dir.path());
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    /// Starts `threatbeat run -e -c threatbeat.yml ARGS`; its output goes to `agent.log`.
    pub fn start(&self, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut command = self.command(env);
        command
            .args(["run", "-e", "-c"])
            .arg(self.path("threatbeat.yml"))
            .args(args);
        Agent {
            process: AgentProcess::spawn(command, self.path("agent.log")),
            output: self.path("out/events.ndjson"),
        }
    }
}

/// A running agent (killed when dropped) and the file its output writes.
pub struct Agent {
    pub process: AgentProcess,
    pub output: PathBuf,
}

impl Agent {
    pub fn logs(&self) -> String {
        self.process.log()
    }

    /// The documents written so far (a line being written is skipped).
    pub fn documents(&self) -> Vec<Value> {
        read_documents(&self.output)
    }

    /// Names (`n`) of the documents written so far, with their label.
    pub fn records(&self) -> Vec<(String, String)> {
        self.documents()
            .iter()
            .filter_map(|document| {
                Some((
                    document.get("n")?.as_str()?.to_owned(),
                    document.pointer("/labels/source")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Polls until `done` holds; panics with the logs if the agent exits
    /// first or after [`PATIENCE`]. Returns how long it took.
    pub fn wait_for(&mut self, what: &str, mut done: impl FnMut(&Agent) -> bool) -> Duration {
        let started = Instant::now();
        let mut exited = false;
        let held = wait_until(PATIENCE, || {
            exited = !self.process.is_running();
            exited || done(self)
        });
        if held && !exited {
            return started.elapsed();
        }
        match exited {
            true => panic!("the agent exited while waiting for {what}:\n{}", self.logs()),
            false => panic!(
                "timed out waiting for {what}; written: {:?}\nlogs:\n{}",
                self.records(),
                self.logs()
            ),
        }
    }

    /// Sends `signal` (`TERM`, `INT`) to the agent.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Waits (generously) for the agent to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.process.wait_exit()
    }
}

/// The NDJSON documents of `path` (an incomplete last line is skipped).
pub fn read_documents(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A module file enabling `test/<fileset>` over the feed folders `feeds` with `label`.
pub fn module_file(fileset: &str, feeds: &[&str], label: &str) -> String {
    let paths: Vec<String> = feeds.iter().map(|feed| format!("\"{feed}/*.ndjson\"")).collect();
    format!(
        "- module: test\n  {fileset}:\n    var.paths: [{}]\n    var.label: {label}\n",
        paths.join(", ")
    )
}
