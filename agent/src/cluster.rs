//! The commands that talk to the configured Elasticsearch: `setup` (index
//! template, ILM policy, data streams) and `test output` (version and write
//! access). Both need `output.elasticsearch` to be the enabled output.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use threatbeat_core::{BuildContext, Origin, PluginConfig};
use threatbeat_outputs::elasticsearch::{self, SetupAction, SetupSettings, WriteAccess};

use crate::config::{self, LoadedConfig};
use crate::supervisor;

/// The index part of `threatbeat setup`: installs what the output writes
/// into, idempotently (a second run changes nothing). The Kibana part
/// (`--dashboards`, `setup.dashboards.enabled`) is `crate::kibana`'s.
pub fn setup(config: &LoadedConfig) -> Result<ExitCode> {
    let output = elasticsearch_output(config)?;
    let origin = Origin::file(&config.file).child("setup");
    let settings = SetupSettings::parse(&Value::Object(config.settings.setup.clone()), &origin)
        .context("invalid configuration")?;
    let report = block_on(elasticsearch::setup(&output, &context(config), &settings))
        .map_err(|error| redacted(config, &error))
        .context("setup failed")?;
    for (what, action) in &report.steps {
        let done = match action {
            SetupAction::Installed => "installed",
            SetupAction::Unchanged => "already up to date",
        };
        println!("{what}: {done}");
    }
    println!("Index setup finished.");
    Ok(ExitCode::SUCCESS)
}

/// `threatbeat test output`: connects, prints the cluster version and whether
/// the credentials may write; exits non-zero when they may not.
pub fn test_output(config: &LoadedConfig) -> Result<ExitCode> {
    let output = elasticsearch_output(config)?;
    let report = block_on(elasticsearch::check_connection(&output, &context(config)))
        .map_err(|error| redacted(config, &error))
        .context("the output test failed")?;
    println!("{report}");
    Ok(match report.write_access {
        WriteAccess::Allowed | WriteAccess::SecurityDisabled => ExitCode::SUCCESS,
        WriteAccess::Denied(_) => ExitCode::FAILURE,
    })
}

fn elasticsearch_output(config: &LoadedConfig) -> Result<PluginConfig> {
    let output = supervisor::select_output(config).context("invalid configuration")?;
    if output.type_name != "elasticsearch" {
        bail!(
            "{}: this command talks to Elasticsearch, but the enabled output is `output.{}`; \
             enable `output.elasticsearch`",
            config.file.display(),
            output.type_name
        );
    }
    Ok(output)
}

fn context(config: &LoadedConfig) -> BuildContext {
    BuildContext {
        data_path: config.paths.data.clone(),
        config_path: config.paths.config.clone(),
        pipeline_id: "output".to_owned(),
    }
}

/// Cluster errors may echo request details; known secrets are masked.
fn redacted(config: &LoadedConfig, error: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(config::redact_text(&error.to_string(), &config.known_secrets()))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(future)
}
