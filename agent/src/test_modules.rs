//! `threatbeat test modules`: one request per enabled fileset — the first
//! request of its httpjson input, built as the first poll builds it from the
//! stored cursor — reporting per fileset whether the server is reachable, its
//! HTTP status and whether the credentials were accepted, as Filebeat's
//! `test output` does for the output. `test config` cannot tell a wrong MISP
//! key; this can. Nothing is published and no cursor moves.

use std::process::ExitCode;

use anyhow::Context;
use threatbeat_core::{BuildContext, CursorStore};
use threatbeat_inputs::httpjson::fetch::ProbeAnswer;
use threatbeat_inputs::httpjson::{probe, ProbeReport};

use crate::cli::Cli;
use crate::config::{self, LoadOptions, LoadedConfig};
use crate::modules::ResolvedFileset;

/// The verdict on one fileset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `module/fileset`, or `module/fileset/id`.
    pub pipeline: String,
    /// The lines printed under the pipeline's name.
    pub lines: Vec<String>,
    /// Whether the fileset passes.
    pub ok: bool,
}

/// Judges one probe: a 2xx answer passes; 401 and 403 mean the credentials
/// were refused; any other answer or none fails.
pub fn judge(pipeline: &str, report: &ProbeReport) -> Verdict {
    let mut lines = vec![format!("request: {} {}", report.method, report.url)];
    let ok = match &report.answer {
        ProbeAnswer::NotSent(reason) => {
            lines.push(format!("request... ERROR {reason}"));
            false
        }
        ProbeAnswer::Unreachable(reason) => {
            lines.push(format!("reachable... ERROR {reason}"));
            false
        }
        ProbeAnswer::Answered {
            status,
            reason,
            detail,
        } => {
            lines.push("reachable... OK".to_owned());
            let success = (200..300).contains(status);
            let status_line = format!("HTTP status... {status} {reason}");
            lines.push(match (success, detail) {
                (true, _) | (false, None) => status_line,
                (false, Some(detail)) => format!("{status_line}: {detail}"),
            });
            lines.push(
                match status {
                    401 | 403 => "auth... REJECTED (check the key or user and password of this fileset)",
                    _ if success => "auth... OK",
                    _ => "auth... not known (the server did not answer with the data)",
                }
                .to_owned(),
            );
            success
        }
    };
    Verdict {
        pipeline: pipeline.to_owned(),
        lines,
        ok,
    }
}

/// Probes every enabled fileset of `config`; filesets whose input makes no
/// request (`file`, `http_endpoint`) are listed as skipped and pass.
pub async fn probe_all(config: &LoadedConfig) -> anyhow::Result<Vec<Verdict>> {
    let filesets = crate::supervisor::resolve_filesets(config)
        .map_err(|error| anyhow::anyhow!(config::redact_text(&error.to_string(), &config.known_secrets())))
        .context("invalid configuration")?;
    let cursors = CursorStore::new(&config.paths.data);
    let mut verdicts = Vec::with_capacity(filesets.len());
    for fileset in filesets {
        verdicts.push(probe_one(config, &cursors, fileset).await?);
    }
    Ok(verdicts)
}

async fn probe_one(
    config: &LoadedConfig,
    cursors: &CursorStore,
    fileset: ResolvedFileset,
) -> anyhow::Result<Verdict> {
    if fileset.input.type_name != "httpjson" {
        return Ok(Verdict {
            lines: vec![format!(
                "skipped: the `{}` input sends no request to test",
                fileset.input.type_name
            )],
            pipeline: fileset.id,
            ok: true,
        });
    }
    let context = BuildContext {
        data_path: config.paths.data.clone(),
        config_path: config.paths.config.clone(),
        pipeline_id: fileset.id.clone(),
    };
    // The first poll starts from the stored cursor; an unreadable one is
    // what the agent would also ignore (it starts without).
    let cursor = cursors.load(&fileset.id).unwrap_or(None);
    let report = probe(&fileset.input, &context, cursor.as_ref())
        .await
        .map_err(|error| fileset.attribute_input_error(error))
        .map_err(|error| anyhow::anyhow!(config::redact_text(&error.to_string(), &config.known_secrets())))
        .context("invalid configuration")?;
    Ok(judge(&fileset.id, &report))
}

/// The `test modules` command: prints one block per fileset; exit 1 when one fails.
pub fn command(cli: &Cli) -> anyhow::Result<ExitCode> {
    // The output is not contacted: its secrets need not resolve.
    let options = LoadOptions::from_process(cli.config.clone(), cli.all_overrides());
    let config = config::load_without_output(&options).context("invalid configuration")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let verdicts = runtime.block_on(probe_all(&config))?;
    if verdicts.is_empty() {
        eprintln!("threatbeat: no module is enabled; enable one with `threatbeat modules enable NAME`");
        return Ok(ExitCode::FAILURE);
    }
    let secrets = config.known_secrets();
    for verdict in &verdicts {
        println!("{}", verdict.pipeline);
        for line in &verdict.lines {
            println!("  {}", config::redact_text(line, &secrets));
        }
        println!("  result... {}", if verdict.ok { "OK" } else { "FAILED" });
    }
    let failed = verdicts.iter().filter(|verdict| !verdict.ok).count();
    if failed > 0 {
        eprintln!(
            "threatbeat: {failed} of {} filesets failed the test",
            verdicts.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(answer: ProbeAnswer) -> ProbeReport {
        ProbeReport {
            url: "https://misp.lab/events/restSearch".to_owned(),
            method: "POST",
            answer,
        }
    }

    #[test]
    fn statuses_become_verdicts() {
        let answered = |status: u16, detail: Option<&str>| {
            judge(
                "threatintel/misp",
                &report(ProbeAnswer::Answered {
                    status,
                    reason: "R".to_owned(),
                    detail: detail.map(str::to_owned),
                }),
            )
        };
        let ok = answered(200, None);
        assert!(ok.ok);
        assert!(ok.lines.contains(&"auth... OK".to_owned()), "{:?}", ok.lines);
        let refused = answered(403, Some("Authentication failed."));
        assert!(!refused.ok);
        assert!(refused
            .lines
            .contains(&"HTTP status... 403 R: Authentication failed.".to_owned()));
        assert!(refused
            .lines
            .iter()
            .any(|line| line.starts_with("auth... REJECTED")));
        let broken = answered(500, None);
        assert!(!broken.ok);
        assert!(broken
            .lines
            .iter()
            .any(|line| line.starts_with("auth... not known")));
        let down = judge(
            "x/y",
            &report(ProbeAnswer::Unreachable("connection refused".to_owned())),
        );
        assert!(!down.ok);
        assert_eq!(down.lines[1], "reachable... ERROR connection refused");
    }
}
