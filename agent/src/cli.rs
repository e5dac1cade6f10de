//! The command line: global flags and one enum variant per command, so
//! later commands (`setup`, `test output`, `keystore`) are one variant each.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// threatbeat ships threat intelligence (MISP and other feeds) to Elasticsearch.
#[derive(Debug, Parser)]
#[command(name = "threatbeat", version, about, propagate_version = true)]
pub struct Cli {
    /// The main config file (default: ./threatbeat.yml, then /etc/threatbeat/threatbeat.yml).
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Overrides one config key, e.g. -E output.file.path=/tmp/out (repeatable; the value is read as YAML).
    #[arg(short = 'E', value_name = "KEY=VALUE", action = ArgAction::Append, global = true)]
    pub overrides: Vec<String>,
    /// Logs to stderr instead of ${path.logs}/threatbeat.log.
    #[arg(short = 'e', global = true)]
    pub log_to_stderr: bool,
    /// Sets path.config (where modules.d/ lives).
    #[arg(long = "path.config", value_name = "DIR", global = true)]
    pub path_config: Option<PathBuf>,
    /// Sets path.data (cursors and queues).
    #[arg(long = "path.data", value_name = "DIR", global = true)]
    pub path_data: Option<PathBuf>,
    /// Sets path.home (base of relative paths).
    #[arg(long = "path.home", value_name = "DIR", global = true)]
    pub path_home: Option<PathBuf>,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs every enabled module until stopped (the default).
    Run(RunArgs),
    /// Checks the configuration, or the connection to the output.
    #[command(subcommand)]
    Test(TestCommand),
    /// Installs the index template, ILM policy and data streams in Elasticsearch, and the
    /// Kibana dashboards (idempotent).
    Setup(SetupArgs),
    /// Lists, enables or disables the module files in modules.d/.
    #[command(subcommand)]
    Modules(ModulesCommand),
    /// Prints the effective configuration.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Manages the secrets keystore (${path.data}/threatbeat.keystore), referenced as ${KEY}.
    #[command(subcommand)]
    Keystore(KeystoreCommand),
    /// Manages the stored cursors under ${path.data}/registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Prints the version.
    Version,
    /// Prints a completion script for SHELL (e.g. `threatbeat completion bash > /etc/bash_completion.d/threatbeat`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints the man page threatbeat(1) as roff; with DIR, writes it and one page per command there.
    Manpage {
        /// The folder to write threatbeat.1 and threatbeat-COMMAND.1 into.
        dir: Option<PathBuf>,
    },
}

/// `run` options.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Runs one pass of every pipeline, prints a summary and exits.
    #[arg(long)]
    pub once: bool,
}

/// `setup` options.
#[derive(Debug, Default, Args)]
pub struct SetupArgs {
    /// Only index management (template, ILM policy, data streams). Plain `setup`
    /// does it too, and loads the dashboards when `setup.dashboards.enabled` is true.
    #[arg(long = "index-management")]
    pub index_management: bool,
    /// Only the Kibana dashboards (through `setup.kibana`), whatever `setup.dashboards.enabled` says.
    #[arg(long = "dashboards")]
    pub dashboards: bool,
}

/// `test` subcommands.
#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// Validates the main file and every enabled module; prints `Config OK` or the errors.
    Config,
    /// Connects to Elasticsearch; prints its version and whether the credentials can write.
    Output,
    /// Sends the first request of every enabled fileset once; prints per fileset whether the
    /// server is reachable, its HTTP status and whether the credentials were accepted.
    Modules,
    /// Asks the running agent's /healthz (http.host, http.port); exit 0 only when it answers 200.
    /// A health probe for containers and scripts.
    Health(HealthArgs),
}

/// `test health` options.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to ask instead of the one http.host and http.port give (the config is then not read).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How long to wait for the answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,
}

/// `modules` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModulesCommand {
    /// Lists enabled and disabled module files.
    List,
    /// Enables modules (renames modules.d/NAME.yml.disabled to NAME.yml).
    Enable {
        /// Module file names, without extension.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Disables modules (renames modules.d/NAME.yml to NAME.yml.disabled).
    Disable {
        /// Module file names, without extension.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `keystore` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeystoreCommand {
    /// Creates an empty keystore (mode 0600).
    Create {
        /// Replaces an existing keystore (its secrets are lost).
        #[arg(long)]
        force: bool,
    },
    /// Adds a secret; the value is read from stdin with --stdin, else prompted for.
    Add {
        /// The key, referenced from the config as ${KEY}.
        key: String,
        /// Reads the value from standard input (up to the end or the first newline).
        #[arg(long)]
        stdin: bool,
        /// Replaces an existing value.
        #[arg(long)]
        force: bool,
    },
    /// Lists the keys (never the values).
    List,
    /// Removes a secret.
    Remove {
        /// The key.
        key: String,
    },
}

/// `registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Removes the stored cursor of one pipeline, so that its next poll starts from the
    /// first window again (var.first_interval). Refused while an agent runs on the data folder.
    Reset {
        /// The pipeline: MODULE/FILESET (threatintel/misp), or MODULE/FILESET/ID for one instance.
        #[arg(value_name = "MODULE/FILESET")]
        pipeline: String,
    },
}

/// `export` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The merged configuration (file, environment, -E, modules), secrets redacted, as YAML.
    Config,
}

impl Cli {
    /// The `-E` overrides, with the `--path.*` flags appended (they win).
    pub fn all_overrides(&self) -> Vec<String> {
        let mut overrides = self.overrides.clone();
        for (key, value) in [
            ("path.home", &self.path_home),
            ("path.config", &self.path_config),
            ("path.data", &self.path_data),
        ] {
            if let Some(value) = value {
                overrides.push(format!("{key}={}", value.display()));
            }
        }
        overrides
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed_and_flags_are_global() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "threatbeat",
            "run",
            "--once",
            "-c",
            "x.yml",
            "-E",
            "a=1",
            "-E",
            "b=2",
            "--path.data",
            "/d",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Run(RunArgs { once: true }))));
        assert_eq!(cli.all_overrides(), ["a=1", "b=2", "path.data=/d"]);
        let cli = Cli::try_parse_from(["threatbeat", "modules", "enable", "misp", "threatintel"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Modules(ModulesCommand::Enable { names })) if names.len() == 2)
        );
        let cli = Cli::try_parse_from(["threatbeat", "completion", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Completion {
                shell: clap_complete::Shell::Zsh
            })
        ));
        assert!(Cli::try_parse_from(["threatbeat", "completion", "tcsh"]).is_err());
        let cli = Cli::try_parse_from(["threatbeat", "test", "health"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Test(TestCommand::Health(HealthArgs {
                url: None,
                timeout: 5
            })))
        ));
    }
}
