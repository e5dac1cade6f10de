//! The built binary: every config error named in issue 2 exits non-zero with
//! the file and key; layering through env and -E; modules enable/list/disable;
//! export config redacts secrets; --help lists the commands.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEFINITION: &str = r#"
module: intel
fileset: feed
description: a test feed polled over HTTP
var:
  url: http://127.0.0.1:9/events/restSearch
  api_token: ""
  interval: 1m
input:
  httpjson:
    interval: "{{ var.interval }}"
    request:
      url: "{{ var.url }}"
index: threatbeat-intel.feed
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(main: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let definition = dir.path().join("modules.d/definitions/intel/feed");
        fs::create_dir_all(&definition).unwrap();
        fs::write(definition.join("manifest.yml"), DEFINITION).unwrap();
        fs::write(dir.path().join("threatbeat.yml"), main).unwrap();
        Self { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_threatbeat"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(self.dir.path())
            .args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn main_file(setup: &Setup) -> String {
    setup.path("threatbeat.yml").display().to_string()
}

/// Runs `test config` and expects failure naming `file` and `key`.
fn assert_config_error(setup: &Setup, file: &Path, key: &str, reason: &str) {
    let output = setup.run(&["test", "config"], &[]);
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure, stdout: {}",
        text(&output.stdout)
    );
    assert!(
        stderr.contains(&file.display().to_string()),
        "file missing in: {stderr}"
    );
    assert!(
        stderr.contains(&format!("key `{key}`")),
        "key `{key}` missing in: {stderr}"
    );
    assert!(stderr.contains(reason), "`{reason}` missing in: {stderr}");
}

const GOOD: &str =
    "output.console: {}\nthreatbeat.modules:\n  - module: intel\n    feed:\n      var.interval: 5m\n";

#[test]
fn help_lists_the_commands() {
    let setup = Setup::new(GOOD);
    let output = setup.run(&["--help"], &[]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for command in ["run", "test", "modules", "export", "version", "-E", "--path.data"] {
        assert!(help.contains(command), "{command} missing in {help}");
    }
    let version = setup.run(&["version"], &[]);
    assert!(text(&version.stdout).starts_with("threatbeat 0."));
}

#[test]
fn a_valid_config_passes_test_config() {
    let setup = Setup::new(GOOD);
    let output = setup.run(&["test", "config"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("Config OK (1 pipelines, output stdout)"));
}

#[test]
fn a_typo_in_a_key_names_file_and_key() {
    let setup = Setup::new("output.console: {}\nlogging:\n  levl: debug\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "logging.levl",
        "unknown field",
    );
    let setup = Setup::new("output.console:\n  prety: true\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "output.console.prety",
        "unknown field",
    );
    let setup = Setup::new(GOOD);
    setup.write(
        "modules.d/intel.yml",
        "- module: intel\n  feed:\n    var.urll: http://x\n",
    );
    assert_config_error(
        &setup,
        &setup.path("modules.d/intel.yml"),
        "0.feed.var.urll",
        "unknown variable",
    );
}

#[test]
fn a_wrong_type_names_file_and_key() {
    let setup = Setup::new("output.console: {}\nlogging.json: maybe\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "logging.json",
        "invalid type",
    );
    let setup = Setup::new("output.file:\n  rotate_every_kb: lots\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "output.file.rotate_every_kb",
        "invalid type",
    );
}

#[test]
fn an_unknown_processor_or_input_names_file_and_key() {
    let setup = Setup::new(GOOD);
    setup.write(
        "modules.d/intel.yml",
        "- module: intel\n  feed:\n    processors:\n      - no_such_processor: {}\n",
    );
    // The inline entry enables intel/feed too; keep only the modules.d one.
    setup.write("threatbeat.yml", "output.console: {}\n");
    assert_config_error(
        &setup,
        &setup.path("modules.d/intel.yml"),
        "0.feed.processors.0.no_such_processor",
        "unknown processor type `no_such_processor`",
    );

    let setup = Setup::new("output.console: {}\nprocessors:\n  - not_a_processor: {}\n");
    setup.write("modules.d/intel.yml", "- module: intel\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "processors.0.not_a_processor",
        "unknown processor",
    );

    let setup = Setup::new(GOOD);
    let manifest = setup.path("modules.d/definitions/intel/feed/manifest.yml");
    fs::write(&manifest, DEFINITION.replace("  httpjson:", "  htttpjson:")).unwrap();
    assert_config_error(
        &setup,
        &manifest,
        "input.htttpjson",
        "unknown input type `htttpjson`",
    );

    let setup = Setup::new("output.consol: {}\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "output.consol",
        "unknown output type `consol`",
    );
}

#[test]
fn an_unset_variable_names_file_and_key() {
    let setup = Setup::new("output.console: {}\nthreatbeat.modules:\n  - module: intel\n    feed:\n      var.url: ${MISP_HOST}\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "threatbeat.modules.0.feed.var.url",
        "`MISP_HOST` is not set",
    );
    let output = setup.run(&["test", "config"], &[("MISP_HOST", "http://127.0.0.1:9/x")]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let setup = Setup::new("output.console: {}\n");
    setup.write(
        "modules.d/intel.yml",
        "- module: intel\n  feed:\n    var.api_token: ${MISP_API_KEY}\n",
    );
    assert_config_error(
        &setup,
        &setup.path("modules.d/intel.yml"),
        "0.feed.var.api_token",
        "MISP_API_KEY",
    );
}

#[test]
fn invalid_yaml_names_the_file_and_line() {
    let setup = Setup::new("output.console: {}\nlogging:\n  level: [info\n");
    let output = setup.run(&["test", "config"], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&main_file(&setup)), "{stderr}");
    assert!(stderr.contains("invalid YAML at line"), "{stderr}");

    let setup = Setup::new(GOOD);
    setup.write("modules.d/broken.yml", "- module: intel\n  feed: {var.url: \n");
    let output = setup.run(&["test", "config"], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("modules.d/broken.yml"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn zero_or_two_outputs_are_rejected() {
    let setup = Setup::new("logging.level: info\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "output",
        "no output is enabled",
    );
    let setup = Setup::new("output.console: {}\noutput.file: {path: out}\n");
    assert_config_error(
        &setup,
        &setup.path("threatbeat.yml"),
        "output",
        "several outputs are enabled (console, file)",
    );
    let setup = Setup::new("output.console: {}\noutput.file: {path: out, enabled: false}\n");
    assert!(setup.run(&["test", "config"], &[]).status.success());
}

#[test]
fn env_and_flags_layer_over_the_file() {
    let setup = Setup::new("output.file:\n  path: out\n  filename: from-file\nlogging.level: info\n");
    let export = |env: &[(&str, &str)], args: &[&str]| {
        let mut all = vec!["export", "config"];
        all.extend_from_slice(args);
        let output = setup.run(&all, env);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_yaml::from_slice::<serde_yaml::Value>(&output.stdout).unwrap()
    };
    let exported = export(&[], &[]);
    assert_eq!(exported["output"]["file"]["filename"], "from-file");
    assert_eq!(exported["logging"]["level"], "info");

    let env = [
        ("THREATBEAT_OUTPUT__FILE__FILENAME", "from-env"),
        ("THREATBEAT_LOGGING__LEVEL", "debug"),
    ];
    let exported = export(&env, &[]);
    assert_eq!(exported["output"]["file"]["filename"], "from-env");
    assert_eq!(exported["logging"]["level"], "debug");

    let exported = export(
        &env,
        &["-E", "output.file.filename=from-flag", "--path.data", "/srv/tb"],
    );
    assert_eq!(exported["output"]["file"]["filename"], "from-flag");
    assert_eq!(exported["logging"]["level"], "debug");
    assert_eq!(exported["path"]["data"], "/srv/tb");

    let output = setup.run(&["test", "config", "-E", "logging.level=chatty"], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("-E logging.level=chatty: key `logging.level`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn export_config_redacts_secrets() {
    let setup = Setup::new(
        "output.console: {}\nsetup.password: hunter2\nthreatbeat.modules:\n  - module: intel\n    feed:\n      var.url: http://u:${MISP_API_KEY}@127.0.0.1:9/\n",
    );
    setup.write("modules.d/intel2.yml.disabled", "[]\n");
    let output = setup.run(&["export", "config"], &[("MISP_API_KEY", "s3cr3t-value")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!stdout.contains("s3cr3t-value"), "{stdout}");
    assert!(stdout.contains("[REDACTED]"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9"), "{stdout}");
}

#[test]
fn modules_enable_list_disable_round_trip() {
    let setup = Setup::new("output.console: {}\n");
    setup.write("modules.d/misp.yml.disabled", "- module: intel\n  feed: {}\n");
    let list = |setup: &Setup| text(&setup.run(&["modules", "list"], &[]).stdout);
    assert_eq!(list(&setup), "Enabled:\n\nDisabled:\nmisp\n");

    let output = setup.run(&["modules", "enable", "misp"], &[]);
    assert!(output.status.success());
    assert_eq!(text(&output.stdout), "Enabled misp\n");
    assert_eq!(list(&setup), "Enabled:\nmisp\n\nDisabled:\n");
    assert!(setup.path("modules.d/misp.yml").is_file());
    // Enabled modules are loaded.
    assert!(text(&setup.run(&["test", "config"], &[]).stdout).starts_with("Config OK (1 pipelines"));

    let output = setup.run(&["modules", "disable", "misp"], &[]);
    assert_eq!(text(&output.stdout), "Disabled misp\n");
    assert_eq!(list(&setup), "Enabled:\n\nDisabled:\nmisp\n");

    let output = setup.run(&["modules", "enable", "nosuch"], &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("module `nosuch` not found"));
}

#[test]
fn the_shipped_module_files_load_once_enabled() {
    let setup = Setup::new("output.console: {}\n");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../modules.d");
    let mut names = Vec::new();
    for entry in fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".yml.disabled") {
            fs::copy(&path, setup.path(&format!("modules.d/{file}"))).unwrap();
            names.push(name.to_owned());
        }
    }
    assert!(names.len() >= 2, "{names:?}");
    let mut args = vec!["modules", "enable"];
    args.extend(names.iter().map(String::as_str));
    assert!(setup.run(&args, &[]).status.success());
    // The stubs read the key from the environment, as the README tells users to.
    let output = setup.run(&["test", "config"], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("MISP_API_KEY"),
        "{}",
        text(&output.stderr)
    );
    let output = setup.run(&["test", "config"], &[("MISP_API_KEY", "k")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("Config OK"),
        "{}",
        text(&output.stdout)
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_a_running_agent_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let setup = Setup::new(GOOD);
    let mut child = Command::new(env!("CARGO_BIN_EXE_threatbeat"))
        .env_clear()
        .current_dir(setup.dir.path())
        .args(["run", "-e"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (started_sender, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("pipeline started") {
                let _ = started_sender.send(());
            }
        }
    });
    started
        .recv_timeout(Duration::from_secs(60))
        .expect("the pipeline starts");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "threatbeat did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn plugin_errors_do_not_quote_secret_values() {
    let setup = Setup::new("output.file:\n  permissions: ${MISP_API_KEY}\n");
    let output = setup.run(&["test", "config"], &[("MISP_API_KEY", "hunter2-key")]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("key `output.file.permissions`"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("[REDACTED]"), "{stderr}");
}
