//! Logging through tracing, as `logging.*` and `-e` ask.

use std::fs::{self, OpenOptions};
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::LoadedConfig;

/// Installs the global subscriber: stderr with `-e`/`logging.to_stderr`,
/// else `${path.logs}/threatbeat.log`; JSON lines with `logging.json`.
/// Returns where logs go, for a startup message.
pub fn init(config: &LoadedConfig, force_stderr: bool) -> String {
    let logging = &config.settings.logging;
    let filter = EnvFilter::new(logging.level.directive());
    let mut destination = "stderr".to_owned();
    let file = if force_stderr || logging.to_stderr {
        None
    } else {
        let path = config.paths.logs.join("threatbeat.log");
        let opened = fs::create_dir_all(&config.paths.logs)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
        match opened {
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
        (Some(file), true) => builder.json().with_writer(Mutex::new(file)).try_init(),
        (Some(file), false) => builder.with_ansi(false).with_writer(Mutex::new(file)).try_init(),
        (None, true) => builder.json().with_writer(std::io::stderr).try_init(),
        (None, false) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    if installed.is_err() {
        destination = "the subscriber installed earlier".to_owned();
    }
    destination
}
