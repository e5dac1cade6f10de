//! The typed main configuration. Every section rejects unknown keys; the
//! sections other parts of threatbeat own (`output.*`, `queue`, `http`,
//! `setup`) are kept as raw maps and checked by whoever builds them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The whole main configuration file, after layering.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `path.*`: where the agent finds its config and keeps its state.
    #[serde(default)]
    pub path: PathSettings,
    /// `logging.*`.
    #[serde(default)]
    pub logging: LoggingSettings,
    /// `threatbeat.*`: module loading.
    #[serde(default)]
    pub threatbeat: AgentSettings,
    /// `filebeat.*`: only `filebeat.modules`, an alias of `threatbeat.modules`.
    #[serde(default)]
    pub filebeat: FilebeatAlias,
    /// `output.<type>`: raw settings per output type, built by the output registry.
    #[serde(default)]
    pub output: Map<String, Value>,
    /// Processors run on every event after the module's own.
    #[serde(default)]
    pub processors: Value,
    /// `queue.*` (built by the queue).
    #[serde(default)]
    pub queue: Map<String, Value>,
    /// `http.*` (metrics and health endpoint).
    #[serde(default)]
    pub http: HttpSettings,
    /// `setup.*` (index templates, ILM).
    #[serde(default)]
    pub setup: Map<String, Value>,
}

/// `path.*`. Unset paths get defaults from the main file's location.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathSettings {
    /// Base for the other paths; default: the main file's folder.
    pub home: Option<PathBuf>,
    /// Where `modules.d/` and user module definitions live; default: the main file's folder.
    pub config: Option<PathBuf>,
    /// Cursors and queues; default `${path.home}/data`.
    pub data: Option<PathBuf>,
    /// Log files; default `${path.home}/logs`.
    pub logs: Option<PathBuf>,
}

/// The log level names `logging.level` accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    #[serde(alias = "warn")]
    Warning,
    /// The default.
    #[default]
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `logging.*`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    /// `error`, `warning`, `info` (default), `debug`, `trace`.
    #[serde(default)]
    pub level: LogLevel,
    /// One JSON object per log line.
    #[serde(default)]
    pub json: bool,
    /// Log to stderr instead of `${path.logs}/threatbeat.log` (same as `-e`).
    #[serde(default)]
    pub to_stderr: bool,
    /// `logging.files.*`: rotation of the log file.
    #[serde(default)]
    pub files: LogFileSettings,
    /// `logging.metrics.*`: the periodic progress lines of the pipelines.
    #[serde(default)]
    pub metrics: LogMetricsSettings,
}

/// `logging.metrics.*` (Beats' names and defaults): every `period`, a
/// progress line per pipeline that did something since the last one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogMetricsSettings {
    /// Log the progress lines; default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often; default 30s (at least 1s is used).
    #[serde(default = "default_metrics_period")]
    pub period: DurationSetting,
}

impl Default for LogMetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            period: default_metrics_period(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_metrics_period() -> DurationSetting {
    DurationSetting(Duration::from_secs(30))
}

/// `logging.files.*` (Beats' names).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogFileSettings {
    /// Rotate the log file when it would grow past this many bytes (default 10 MiB).
    #[serde(default = "default_rotate_every_bytes")]
    pub rotateeverybytes: u64,
    /// How many rotated files to keep, `threatbeat.log.1` … (default 7).
    #[serde(default = "default_keep_files")]
    pub keepfiles: u32,
}

impl Default for LogFileSettings {
    fn default() -> Self {
        Self {
            rotateeverybytes: default_rotate_every_bytes(),
            keepfiles: default_keep_files(),
        }
    }
}

fn default_rotate_every_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_keep_files() -> u32 {
    7
}

/// `threatbeat.*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// `threatbeat.config.*`.
    #[serde(default)]
    pub config: AgentConfigSettings,
    /// Module entries written inline in the main file.
    #[serde(default)]
    pub modules: Value,
    /// How long pipelines get, after SIGTERM/SIGINT, to flush in-flight batches; default 30s.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: DurationSetting,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            config: AgentConfigSettings::default(),
            modules: Value::Null,
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_shutdown_timeout() -> DurationSetting {
    DurationSetting(Duration::from_secs(30))
}

/// A duration written as users write them (`30s`, `1m`, `500ms`) or as seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        threatbeat_core::duration::deserialize(deserializer).map(DurationSetting)
    }
}

impl Serialize for DurationSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

/// `http.*`: the metrics and health endpoint (Beats' names and defaults).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Serve `/`, `/metrics` and `/healthz`; default false.
    #[serde(default)]
    pub enabled: bool,
    /// The address to listen on; default `localhost`.
    #[serde(default = "default_http_host")]
    pub host: String,
    /// The port; default 5066.
    #[serde(default = "default_http_port")]
    pub port: u16,
    /// `/healthz` answers 503 once the oldest event waiting in the queue is
    /// older than this (the output has been failing that long); default 15m.
    #[serde(default = "default_max_queue_age")]
    pub max_queue_age: DurationSetting,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            host: default_http_host(),
            port: default_http_port(),
            max_queue_age: default_max_queue_age(),
        }
    }
}

fn default_max_queue_age() -> DurationSetting {
    DurationSetting(Duration::from_secs(15 * 60))
}

fn default_http_host() -> String {
    "localhost".to_owned()
}

fn default_http_port() -> u16 {
    5066
}

/// `threatbeat.config.modules.reload.*`: hot reload of modules.d (Beats' names).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSettings {
    /// Watch modules.d and apply changes while running; default false.
    #[serde(default)]
    pub enabled: bool,
    /// How often modules.d is rescanned, besides file-system notifications; default 10s.
    #[serde(default = "default_reload_period")]
    pub period: DurationSetting,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            period: default_reload_period(),
        }
    }
}

fn default_reload_period() -> DurationSetting {
    DurationSetting(Duration::from_secs(10))
}

/// `threatbeat.config.*`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfigSettings {
    /// `threatbeat.config.modules.*`.
    #[serde(default)]
    pub modules: ModulesDirSettings,
}

/// `threatbeat.config.modules.*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesDirSettings {
    /// A glob of enabled module files; default `${path.config}/modules.d/*.yml`.
    #[serde(default = "default_modules_path")]
    pub path: String,
    /// `threatbeat.config.modules.reload.*`.
    #[serde(default)]
    pub reload: ReloadSettings,
}

impl Default for ModulesDirSettings {
    fn default() -> Self {
        Self {
            path: default_modules_path(),
            reload: ReloadSettings::default(),
        }
    }
}

fn default_modules_path() -> String {
    "${path.config}/modules.d/*.yml".to_owned()
}

/// `filebeat.*`: accepted so a Filebeat module block loads unchanged.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilebeatAlias {
    /// Same as `threatbeat.modules`.
    #[serde(default)]
    pub modules: Value,
}

/// The resolved, absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `path.home`.
    pub home: PathBuf,
    /// `path.config`.
    pub config: PathBuf,
    /// `path.data`.
    pub data: PathBuf,
    /// `path.logs`.
    pub logs: PathBuf,
}

impl Paths {
    /// Replaces `${path.home}`, `${path.config}`, `${path.data}`, `${path.logs}` in `text`.
    pub fn substitute(&self, text: &str) -> String {
        text.replace("${path.home}", &self.home.display().to_string())
            .replace("${path.config}", &self.config.display().to_string())
            .replace("${path.data}", &self.data.display().to_string())
            .replace("${path.logs}", &self.logs.display().to_string())
    }

    /// `path` made absolute against `path.home`, after substitution.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let substituted = PathBuf::from(self.substitute(path));
        if substituted.is_absolute() {
            substituted
        } else {
            self.home.join(substituted)
        }
    }
}
