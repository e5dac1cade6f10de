//! What each command does. Every command loads and checks the whole
//! configuration first, so a config error stops it before anything starts.

use std::fs;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use serde_json::Value;
use threatbeat_core::Origin;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    Cli, Command, ExportCommand, HealthArgs, KeystoreCommand, ModulesCommand, RunArgs, SetupArgs, TestCommand,
};
use crate::config::{self, Expander, HttpSettings, LoadOptions, LoadedConfig};
use crate::keystore::Keystore;
use crate::modules::parse_yaml;
use crate::modules_dir::ModulesDir;
use crate::reload::Reloader;
use crate::running::Status;
use crate::supervisor::{self, RunOptions, RunSummary, Services};

/// The exit code when a second signal cuts the graceful shutdown short.
const EXIT_INTERRUPTED: i32 = 130;

/// Parses the command line and runs the command; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("threatbeat: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Version) => {
            println!("threatbeat {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Run(args)) => run(cli, args),
        None => run(cli, &RunArgs::default()),
        Some(Command::Test(TestCommand::Config)) => test_config(cli),
        Some(Command::Test(TestCommand::Output)) => crate::cluster::test_output(&load(cli)?),
        Some(Command::Test(TestCommand::Modules)) => crate::test_modules::command(cli),
        Some(Command::Test(TestCommand::Health(args))) => test_health(cli, args),
        Some(Command::Setup(args)) => setup(cli, args),
        Some(Command::Modules(action)) => modules(cli, action),
        Some(Command::Export(ExportCommand::Config)) => export_config(cli),
        Some(Command::Keystore(action)) => keystore(cli, action),
        Some(Command::Registry(action)) => crate::cursor_reset::command(cli, action),
        Some(Command::Completion { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "threatbeat", &mut script);
            write_stdout(&script)
        }
        Some(Command::Manpage { dir: None }) => {
            let command = man_command();
            write_stdout(&man_page(&command).context("cannot render the man page")?)
        }
        Some(Command::Manpage { dir: Some(dir) }) => {
            let written = write_man_pages(&man_command(), dir)
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
            println!("Wrote {} man pages to {}", written, dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The command line as the man pages show it: the `help` command is `--help` there.
fn man_command() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    // Gives nested commands their full display name (threatbeat-test-config).
    command.build();
    command
}

/// The roff of `command`'s page; the top-level page gets [`MAN_PAGE_EXTRA`].
fn man_page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let top_level = command.get_display_name().is_none_or(|name| name == "threatbeat");
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    if top_level {
        page.extend_from_slice(MAN_PAGE_EXTRA.as_bytes());
    }
    Ok(page)
}

/// Writes the page of `command` and of each of its visible commands, recursively,
/// as clap_mangen's `generate_to` does; how many pages were written.
fn write_man_pages(command: &clap::Command, dir: &std::path::Path) -> std::io::Result<usize> {
    fs::create_dir_all(dir)?;
    let mut written = 0;
    for subcommand in command
        .get_subcommands()
        .filter(|subcommand| !subcommand.is_hide_set())
    {
        written += write_man_pages(subcommand, dir)?;
    }
    let name = clap_mangen::Man::new(command.clone()).get_filename();
    fs::write(dir.join(name), man_page(command)?)?;
    Ok(written + 1)
}

/// Sections the man page adds to what clap_mangen derives from the command
/// line: where things live, what the signals do, the exit status.
const MAN_PAGE_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/threatbeat/threatbeat.yml\fR
The main configuration file, looked for after \fB\-c\fR and \fI./threatbeat.yml\fR.
.TP
\fI/etc/threatbeat/modules.d/\fR
Module files: \fINAME.yml\fR is enabled, \fINAME.yml.disabled\fR is not.
.TP
\fI/var/lib/threatbeat/\fR
path.data as installed by the package: cursors, the disk queue, the current\-state store and the keystore \fIthreatbeat.keystore\fR.
.TP
\fI/var/log/threatbeat/threatbeat.log\fR
The log, unless \fB\-e\fR or \fBlogging.to_stderr\fR sends it to standard error.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop polling, write in\-flight batches and their cursors, then exit; a second one exits at once with status 130.
.TP
\fBSIGHUP\fR
Rescan \fImodules.d\fR now and start, restart or stop the pipelines whose files changed, with or without \fBreload.enabled\fR.
.SH EXIT STATUS
0 on success; 1 on an invalid configuration, a failed command, an unhealthy agent (\fBtest health\fR) or a run that did not finish cleanly; 130 after a second stop signal.
.SH SEE ALSO
The documentation in \fIdocs/\fR of the source repository: configuration.md, operations.md, deploy.md.
"#;

/// Writes a generated text to stdout; a closed pipe is an error, not a panic.
fn write_stdout(text: &[u8]) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// `test health`: asks /healthz of the agent that `http.*` describes (or `--url`);
/// success only on 200, so it can serve as a container health check.
fn test_health(cli: &Cli, args: &HealthArgs) -> Result<ExitCode> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => health_url(&load(cli)?.settings.http)?,
    };
    let client = reqwest::Client::builder()
        // A proxy from the environment must not stand between a probe and its own host.
        .no_proxy()
        .timeout(std::time::Duration::from_secs(args.timeout.max(1)))
        .build()
        .context("cannot build the HTTP client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, body) = runtime
        .block_on(async {
            let response = client.get(&url).send().await?;
            let status = response.status();
            anyhow::Ok((status, response.text().await?))
        })
        .with_context(|| format!("no answer from {url}"))?;
    println!("{url}: {} {}", status.as_u16(), body.trim());
    Ok(match status == reqwest::StatusCode::OK {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// The /healthz URL of the endpoint `http` configures, asked on loopback
/// when it listens on every address.
fn health_url(http: &HttpSettings) -> Result<String> {
    if !http.enabled {
        anyhow::bail!("the monitoring endpoint is off (http.enabled is false); enable it, or pass --url");
    }
    if http.port == 0 {
        anyhow::bail!("http.port is 0 (the agent picks a free port and logs it); pass --url");
    }
    let host = match http.host.trim_start_matches('[').trim_end_matches(']') {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        ipv6 if ipv6.contains(':') => format!("[{ipv6}]"),
        host => host.to_owned(),
    };
    Ok(format!("http://{host}:{}/healthz", http.port))
}

fn load(cli: &Cli) -> Result<LoadedConfig> {
    let options = LoadOptions::from_process(cli.config.clone(), cli.all_overrides());
    config::load(&options).context("invalid configuration")
}

/// `setup`: index management and, with `setup.dashboards.enabled`, the Kibana
/// dashboards; `--index-management` or `--dashboards` does only that part (as Filebeat).
fn setup(cli: &Cli, args: &SetupArgs) -> Result<ExitCode> {
    let mut config = load(cli)?;
    let origin = Origin::file(&config.file).child("setup");
    let kibana_setup = crate::kibana::KibanaSetup::parse(&config.settings.setup, &origin)
        .context("invalid configuration")?;
    let only_some = args.index_management || args.dashboards;
    if args.index_management || !only_some {
        // setup.kibana/dashboards are ours; the Elasticsearch setup rejects unknown keys.
        config.settings.setup = crate::kibana::without_kibana_keys(&config.settings.setup);
        crate::cluster::setup(&config)?;
    }
    if args.dashboards || (!only_some && kibana_setup.dashboards.enabled) {
        setup_dashboards(&config, &kibana_setup)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Imports the embedded saved objects into Kibana; any refused object fails the command.
fn setup_dashboards(config: &LoadedConfig, setup: &crate::kibana::KibanaSetup) -> Result<()> {
    let settings = setup.kibana();
    let mut secrets = config.known_secrets();
    secrets.extend(
        [&settings.password, &settings.api_key]
            .into_iter()
            .flatten()
            .map(|secret| secret.expose().to_owned()),
    );
    let redact = |error: crate::kibana::KibanaError| {
        anyhow::anyhow!(config::redact_text(&error.to_string(), &secrets))
    };
    let origin = Origin::file(&config.file).child("setup.kibana");
    let kibana = crate::kibana::Kibana::new(&settings, &config.paths.config, &origin)
        .map_err(redact)
        .context("invalid configuration")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(kibana.import(crate::kibana::SAVED_OBJECTS))
        .map_err(redact)
        .context("loading the Kibana dashboards failed")?;
    println!(
        "Kibana at {}: {} saved objects loaded ({} replaced existing ones)",
        report.url, report.imported, report.overwritten
    );
    println!("Dashboard: {}", report.dashboard_url);
    println!("Loaded dashboards.");
    Ok(())
}

/// Builds every plugin; plugin errors may quote a value, so known secrets are masked.
fn prepare(config: &LoadedConfig) -> Result<supervisor::Plan> {
    supervisor::prepare(config)
        .map_err(|error| anyhow::anyhow!(config::redact_text(&error.to_string(), &config.known_secrets())))
        .context("invalid configuration")
}

fn run(cli: &Cli, args: &RunArgs) -> Result<ExitCode> {
    let config = load(cli)?;
    let log_destination = crate::logging::init(&config, cli.log_to_stderr);
    // Held until `run` returns: nothing else may write this data folder.
    let _data_lock = crate::data_lock::DataLock::acquire(&config.paths.data)?;
    let plan = prepare(&config)?;
    tracing::info!(
        config = %config.file.display(),
        data = %config.paths.data.display(),
        keystore = %Keystore::path_in(&config.paths.data).display(),
        pipelines = plan.pipelines.len(),
        output = %plan.output_description,
        logs = %log_destination,
        "threatbeat starting"
    );
    let reload_enabled = config.settings.threatbeat.config.modules.reload.enabled && !args.once;
    if plan.pipelines.is_empty() && !reload_enabled {
        eprintln!(
            "threatbeat: no module is enabled; enable one with `threatbeat modules enable NAME` \
             or under `threatbeat.modules:` in {}",
            config.file.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown_timeout = config.settings.threatbeat.shutdown_timeout.0;
    let summary = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // The handlers are installed here, before any pipeline starts: a
        // signal that arrives early stops the agent cleanly instead of killing it.
        tokio::spawn(cancel_on_signal(Signals::new(), shutdown.clone()));
        // SIGHUP too: its default action would kill the agent.
        let (rescan_requests, rescans) = tokio::sync::mpsc::channel(1);
        tokio::spawn(rescan_on_hangup((!args.once).then_some(rescan_requests)));
        let status = Arc::new(
            Status::new(plan.output_description.clone())
                .with_max_queue_age(config.settings.http.max_queue_age.0),
        );
        let progress = crate::progress::Reporter::start(
            crate::progress::Display::choose(
                args.once,
                &config.settings.logging.metrics,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                log_destination == "stderr",
            ),
            Arc::clone(&status),
        );
        let endpoint_stop = CancellationToken::new();
        if config.settings.http.enabled {
            crate::http::serve(&config.settings.http, Arc::clone(&status), endpoint_stop.clone())
                .await
                .context("cannot start the monitoring endpoint")?;
        }
        let services = Services {
            // Without reload.enabled the reloader only serves SIGHUP.
            reloader: (!args.once).then(|| {
                Reloader::new(config.clone(), shutdown_timeout)
                    .watching(reload_enabled, Arc::clone(&status))
                    .on_request(rescans)
            }),
            status: Some(status),
        };
        let options = RunOptions {
            once: args.once,
            shutdown,
            shutdown_timeout,
        };
        let summary = supervisor::run_with(plan, options, services).await;
        progress.finish().await;
        endpoint_stop.cancel();
        anyhow::Ok(summary?)
    })?;
    if args.once {
        print_summary(&summary, &config.paths.data.join("registry"));
    }
    tracing::info!(clean = summary.is_clean(), "threatbeat stopped");
    Ok(if summary.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT; a second one exits at once
/// (what was not flushed is still in the queue or re-read from the stored cursor).
async fn cancel_on_signal(mut signals: Signals, shutdown: CancellationToken) {
    signals.next().await;
    tracing::info!("shutdown requested; finishing in-flight batches (a second signal exits at once)");
    shutdown.cancel();
    signals.next().await;
    tracing::warn!("second signal: exiting without waiting for in-flight batches");
    std::process::exit(EXIT_INTERRUPTED);
}

/// Asks for a rescan of modules.d on every SIGHUP (`systemctl reload`);
/// with `run --once` (no `requests`) there is nothing to rescan and it is only logged.
async fn rescan_on_hangup(requests: Option<tokio::sync::mpsc::Sender<()>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, signal = "SIGHUP", "cannot listen for this signal");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match &requests {
                Some(requests) => {
                    tracing::info!("SIGHUP: rescanning modules.d");
                    // A full channel already holds a rescan that has not started yet.
                    let _ = requests.try_send(());
                }
                None => tracing::info!("SIGHUP ignored: run --once does not rescan modules.d"),
            }
        }
    }
    #[cfg(not(unix))]
    drop(requests);
}

/// SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, signal = name, "cannot listen for this signal");
                    None
                }
            };
            Signals {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.terminate) => {}
                () = recv(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_summary(summary: &RunSummary, cursors: &std::path::Path) {
    // With output.console the documents own stdout; the summary goes to stderr.
    let mut out: Box<dyn Write> = if summary.output_description == "stdout" {
        Box::new(std::io::stderr().lock())
    } else {
        Box::new(std::io::stdout().lock())
    };
    let _ = writeln!(
        out,
        "threatbeat run --once: output {}",
        summary.output_description
    );
    for pipeline in &summary.pipelines {
        let _ = writeln!(
            out,
            "  {}: {} events published, {} dropped by processors, {} batches failed",
            pipeline.id, pipeline.published, pipeline.dropped, pipeline.failed_batches
        );
        if !pipeline.samples.is_empty() {
            let _ = writeln!(out, "    indicators: {}", pipeline.samples.join(", "));
        } else if pipeline.published == 0 && pipeline.input_error.is_none() && pipeline.failed_batches == 0 {
            let _ = writeln!(
                out,
                "    nothing new since the stored cursor; delete {} to read everything again",
                cursors.display()
            );
        }
        if let Some(error) = &pipeline.input_error {
            let _ = writeln!(out, "    input stopped: {error}");
        }
    }
    if summary.timed_out {
        let _ = writeln!(
            out,
            "  some pipelines did not finish before the shutdown deadline"
        );
    }
}

fn test_config(cli: &Cli) -> Result<ExitCode> {
    let config = load(cli)?;
    let plan = prepare(&config)?;
    println!(
        "Config OK ({} pipelines, output {})",
        plan.pipelines.len(),
        plan.output_description
    );
    Ok(ExitCode::SUCCESS)
}

fn modules(cli: &Cli, action: &ModulesCommand) -> Result<ExitCode> {
    // The output is not used: its secrets need not resolve yet.
    let options = LoadOptions::from_process(cli.config.clone(), cli.all_overrides());
    let config = config::load_without_output(&options).context("invalid configuration")?;
    let glob = config.modules_glob();
    let directory = glob
        .parent()
        .map(|parent| parent.to_path_buf())
        .unwrap_or_default();
    let modules = ModulesDir::new(directory);
    match action {
        ModulesCommand::List => {
            let listing = modules.list()?;
            println!("Enabled:");
            listing.enabled.iter().for_each(|name| println!("{name}"));
            println!("\nDisabled:");
            listing.disabled.iter().for_each(|name| println!("{name}"));
        }
        ModulesCommand::Enable { names } => {
            for name in names {
                match modules.enable(name)? {
                    true => println!("Enabled {name}"),
                    false => println!("Module {name} is already enabled"),
                }
            }
        }
        ModulesCommand::Disable { names } => {
            for name in names {
                match modules.disable(name)? {
                    true => println!("Disabled {name}"),
                    false => println!("Module {name} is already disabled"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export_config(cli: &Cli) -> Result<ExitCode> {
    let config = load(cli)?;
    let mut merged = config.merged.clone();
    let mut secrets = config.secrets.clone();
    // Gather every module entry where it is effective: inline, alias and modules.d files.
    let mut modules: Vec<Value> = Vec::new();
    for inline in [
        &config.settings.threatbeat.modules,
        &config.settings.filebeat.modules,
    ] {
        if let Value::Array(entries) = inline {
            modules.extend(entries.iter().cloned());
        }
    }
    let env = config.variables();
    for file in config.module_files()? {
        let origin = Origin::file(&file);
        let text = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut value = parse_yaml(&text, &origin)?;
        let mut expander = Expander::new(env);
        expander.expand(&mut value, &origin)?;
        secrets.extend(expander.secrets);
        if let Value::Array(entries) = value {
            modules.extend(entries);
        }
    }
    if let Value::Object(root) = &mut merged {
        root.remove("filebeat");
        let paths = serde_json::json!({
            "home": config.paths.home, "config": config.paths.config,
            "data": config.paths.data, "logs": config.paths.logs,
        });
        root.insert("path".to_owned(), paths);
        let agent = root
            .entry("threatbeat")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(agent) = agent {
            agent.insert("modules".to_owned(), Value::Array(modules));
        }
    }
    let redacted = config::redacted(&merged, &secrets);
    print!(
        "{}",
        serde_yaml::to_string(&redacted).context("cannot print the configuration")?
    );
    Ok(ExitCode::SUCCESS)
}

fn keystore(cli: &Cli, action: &KeystoreCommand) -> Result<ExitCode> {
    // Only the paths are needed, and the config may reference keys not added yet.
    let options = LoadOptions::from_process(cli.config.clone(), cli.all_overrides());
    let paths = config::load_paths(&options).context("invalid configuration")?;
    let path = Keystore::path_in(&paths.data);
    match action {
        KeystoreCommand::Create { force } => {
            Keystore::create(&path, *force)?;
            println!("Created keystore {}", path.display());
        }
        KeystoreCommand::Add { key, stdin, force } => {
            let mut keystore = Keystore::open(&path)?;
            let value = read_secret(key, *stdin)?;
            keystore.add(key, &value, *force)?;
            println!("Added {key} to {}", path.display());
        }
        KeystoreCommand::List => {
            let keystore = Keystore::open(&path)?;
            keystore.keys().for_each(|key| println!("{key}"));
        }
        KeystoreCommand::Remove { key } => {
            let mut keystore = Keystore::open(&path)?;
            keystore.remove(key)?;
            println!("Removed {key} from {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value of a secret: stdin up to its end or first newline with `--stdin`,
/// else a prompt on the terminal with echo turned off.
fn read_secret(key: &str, from_stdin: bool) -> Result<String> {
    use std::io::{BufRead, IsTerminal, Read};
    let stdin = std::io::stdin();
    let mut value = String::new();
    if from_stdin {
        stdin
            .lock()
            .read_to_string(&mut value)
            .context("cannot read the value from stdin")?;
        if let Some(first_line) = value.lines().next() {
            value = first_line.to_owned();
        }
        return Ok(value);
    }
    if !stdin.is_terminal() {
        anyhow::bail!("no terminal to prompt for the value of {key}; pass --stdin and pipe it in");
    }
    eprint!("Enter value for {key}: ");
    let echo_off = std::process::Command::new("stty")
        .arg("-echo")
        .status()
        .is_ok_and(|status| status.success());
    let read = stdin.lock().read_line(&mut value);
    if echo_off {
        let _ = std::process::Command::new("stty").arg("echo").status();
    }
    eprintln!();
    read.context("cannot read the value")?;
    Ok(value.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(enabled: bool, host: &str, port: u16) -> HttpSettings {
        HttpSettings {
            enabled,
            host: host.to_owned(),
            port,
            ..HttpSettings::default()
        }
    }

    #[test]
    fn the_health_url_follows_http_host_and_port() {
        let url = |host: &str| health_url(&http(true, host, 5066)).unwrap();
        assert_eq!(url("localhost"), "http://localhost:5066/healthz");
        assert_eq!(url("0.0.0.0"), "http://127.0.0.1:5066/healthz");
        assert_eq!(url("::"), "http://[::1]:5066/healthz");
        assert_eq!(url("[::]"), "http://[::1]:5066/healthz");
        assert_eq!(url("fd00::7"), "http://[fd00::7]:5066/healthz");
        assert_eq!(url("10.1.2.3"), "http://10.1.2.3:5066/healthz");
        let off = health_url(&http(false, "localhost", 5066)).unwrap_err();
        assert!(off.to_string().contains("http.enabled"), "{off}");
        let any_port = health_url(&http(true, "localhost", 0)).unwrap_err();
        assert!(any_port.to_string().contains("--url"), "{any_port}");
    }
}
