//! The main configuration: discovery, layering (figment), `${VAR}`
//! expansion, typed settings and the redacted export.
//! Described for users in `docs/configuration.md`.

mod expand;
mod export;
mod load;
mod settings;

pub use expand::{looks_secret, Expander};
pub use export::{redact_text, redacted};
pub use load::{
    discover, load, load_paths, load_without_output, nest_dotted_keys, normalize, LoadOptions, LoadedConfig,
    DEFAULT_CONFIG_FILES, ENV_PREFIX, ENV_SEPARATOR,
};
pub use settings::{
    AgentConfigSettings, AgentSettings, DurationSetting, FilebeatAlias, HttpSettings, LogLevel,
    LogMetricsSettings, LoggingSettings, ModulesDirSettings, PathSettings, Paths, ReloadSettings, Settings,
};

#[cfg(test)]
mod tests;
