//! `output.elasticsearch`: bulk writes with per-item classification,
//! retries, 413 splitting and a dead-letter policy; `setup` and
//! `check_connection` for the CLI. The client goes straight through reqwest
//! (see `docs/outputs/elasticsearch.md` for why not the `elasticsearch` crate).

mod backoff;
mod bulk;
pub mod classify;
mod client;
pub mod config;
mod hosts;
pub mod index_format;
mod output;
pub(crate) mod settings_util;
mod setup;
pub mod stats;
mod template;

use threatbeat_core::{BuildContext, ConfigError, Output, PluginConfig};

pub use client::TransportError;
pub use config::{ElasticsearchConfig, NonIndexablePolicy, ResolvedSettings};
pub use hosts::decode_cloud_id;
pub use output::ElasticsearchOutput;
pub use setup::{
    check_connection, setup, ConnectionReport, IlmSettings, LatestTemplateSettings, SetupAction, SetupError,
    SetupReport, SetupSettings, TemplateSettings, WriteAccess,
};
pub use stats::{OutputStats, StatsSnapshot};

/// Builds the output from its raw config (the registry's factory).
pub fn build(config: &PluginConfig, context: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    Ok(Box::new(build_output(config, context)?))
}

/// Builds the concrete output (tests and the agent use it to reach [`ElasticsearchOutput::stats`]).
pub fn build_output(
    config: &PluginConfig,
    context: &BuildContext,
) -> Result<ElasticsearchOutput, ConfigError> {
    let parsed = ElasticsearchConfig::parse(&config.settings, &config.origin)?;
    let settings = parsed.resolve(&config.origin, &context.config_path)?;
    ElasticsearchOutput::new(settings).map_err(|error| config.origin.child("ssl").error(error.to_string()))
}
