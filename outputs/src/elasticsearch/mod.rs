//! `output.elasticsearch`: bulk writes with per-item classification,
//! retries, 413 splitting and a dead-letter policy; `setup` and
//! `check_connection` for the CLI. The client goes straight through reqwest
//! (see `docs/outputs/elasticsearch.md` for why not the `elasticsearch` crate).

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

/// Says so, once at start, when the connection to the cluster is weaker
/// than it looks: a certificate that is not checked, or credentials that
/// travel in clear text.
fn warn_about_transport(parsed: &ElasticsearchConfig, settings: &ResolvedSettings) {
    if parsed.ssl.verification_mode == threatbeat_core::tls::VerificationMode::None {
        tracing::warn!("output.elasticsearch.ssl.verification_mode is `none`: the cluster's certificate is NOT verified; anyone on the path can read and change what is sent, credentials included");
    }
    if settings.authorization.is_some() {
        for host in settings.hosts.iter().filter(|host| host.scheme() == "http") {
            let host = threatbeat_core::redact_userinfo(host.as_str()).into_owned();
            tracing::warn!(%host, "output.elasticsearch sends its credentials over plain http://; use https:// so they cannot be read on the way");
        }
    }
}

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
    warn_about_transport(&parsed, &settings);
    ElasticsearchOutput::new(settings).map_err(|error| config.origin.child("ssl").error(error.to_string()))
}
