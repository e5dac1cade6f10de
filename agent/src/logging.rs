//! Logging through tracing, as `logging.*` and `-e` ask. Every line passes
//! through [`Redacting`] before it is written, and the log file rotates by
//! size (`logging.files.rotateeverybytes`, `keepfiles`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{redact_text, LoadedConfig};

/// Installs the global subscriber: stderr with `-e`/`logging.to_stderr`,
/// else `${path.logs}/threatbeat.log`; JSON lines with `logging.json`.
/// Returns where logs go, for a startup message.
pub fn init(config: &LoadedConfig, force_stderr: bool) -> String {
    let logging = &config.settings.logging;
    let filter = EnvFilter::new(logging.level.directive());
    let secrets = Arc::new(config.known_secrets());
    let mut destination = "stderr".to_owned();
    let file = if force_stderr || logging.to_stderr {
        None
    } else {
        let path = config.paths.logs.join("threatbeat.log");
        match RotatingFile::open(&path, logging.files.rotateeverybytes, logging.files.keepfiles) {
            Ok(file) => {
                destination = path.display().to_string();
                Some(file)
            }
            Err(error) => {
                eprintln!(
                    "threatbeat: cannot open {} ({error}); logging to stderr",
                    path.display()
                );
                None
            }
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let installed = match (file, logging.json) {
        (Some(file), json) => {
            let writer = Redacting::new(Mutex::new(file), secrets);
            match json {
                true => builder.json().with_writer(writer).try_init(),
                false => builder.with_ansi(false).with_writer(writer).try_init(),
            }
        }
        (None, true) => builder
            .json()
            .with_writer(Redacting::new(io::stderr, secrets))
            .try_init(),
        (None, false) => builder
            .with_ansi(io::stderr().is_terminal())
            .with_writer(Redacting::new(io::stderr, secrets))
            .try_init(),
    };
    if installed.is_err() {
        destination = "the subscriber installed earlier".to_owned();
    }
    destination
}

/// A writer maker whose lines have every known secret value and every URL's
/// credentials replaced by `[REDACTED]`: a secret that reaches a log
/// message by any path (a URL with `user:password@`, an error quoting a
/// config value) is masked at the one place all lines pass.
pub struct Redacting<M> {
    inner: M,
    secrets: Arc<Vec<String>>,
}

impl<M> Redacting<M> {
    /// Wraps `inner`, masking `secrets`.
    pub fn new(inner: M, secrets: Arc<Vec<String>>) -> Self {
        Self { inner, secrets }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine {
            buffer: Vec::new(),
            inner: self.inner.make_writer(),
            secrets: Arc::clone(&self.secrets),
        }
    }
}

/// One log event, collected whole and written redacted when dropped.
pub struct RedactedLine<W: Write> {
    buffer: Vec<u8>,
    inner: W,
    secrets: Arc<Vec<String>>,
}

impl<W: Write> Write for RedactedLine<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return self.inner.flush();
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let text = redact_text(&threatbeat_core::redact_userinfo(&text), &self.secrets);
        self.buffer.clear();
        self.inner.write_all(text.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactedLine<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The log file, renamed to `<name>.1` (and older ones shifted up to
/// `<name>.<keep>`) before a line would take it past `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating its folder.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the current file: a full
            // disk must not also lose the log.
            let _ = self.rotate();
        }
        let written = self.file.write(bytes)?;
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redacted_and_the_file_rotates_by_size() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("logs/threatbeat.log");
        let file = RotatingFile::open(&path, 100, 2).unwrap();
        let writer = Redacting::new(Mutex::new(file), Arc::new(vec!["k3y-value".to_owned()]));
        for n in 0..10 {
            let mut line = writer.make_writer();
            writeln!(
                line,
                "line {n}: url=https://user:hunter2@misp.example/x token k3y-value"
            )
            .unwrap();
        }
        let current = fs::read_to_string(&path).unwrap();
        let first = fs::read_to_string(folder.path().join("logs/threatbeat.log.1")).unwrap();
        assert!(current.contains("line 9"), "{current}");
        assert!(first.contains("line 8"), "{first}");
        assert!(!folder.path().join("logs/threatbeat.log.3").exists());
        for text in [&current, &first] {
            assert!(!text.contains("hunter2") && !text.contains("k3y-value"), "{text}");
            assert!(
                text.contains("https://user:[REDACTED]@misp.example/x token [REDACTED]"),
                "{text}"
            );
        }
    }
}
