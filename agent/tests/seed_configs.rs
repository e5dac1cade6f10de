//! The module blocks users already have in their `filebeat.yml` load with no
//! edit: Filebeat's `threatintel` module (`misp` fileset, as in Elastic's
//! docs and the seed articles) and the older 7.x `misp` module with
//! `var.api_key` and `var.json_objects_array`. Checked with the real binary's
//! `test config` and `export config`.

use std::fs;
use std::process::Command;

const FILEBEAT_BLOCKS: &str = r#"
filebeat.modules:
  - module: threatintel
    misp:
      enabled: true
      var.input: httpjson
      var.url: https://${MISP_HOST}/events/restSearch
      var.api_token: ${MISP_API_KEY}
      var.first_interval: 300h
      var.interval: 5m
      var.ssl:
        verification_mode: none
      var.filters:
        type: ["md5", "sha256", "url", "ip-src", "ip-dst", "domain"]
        tags: ['workflow:state="complete"', "!tlp:red"]
      var.http_client_timeout: 60s
  - module: misp
    threat:
      enabled: true
      var.api_key: ${MISP_API_KEY}
      var.json_objects_array: "response.Attribute"
      var.url: "https://${MISP_HOST}/attributes/restSearch"
output.console:
  enabled: true
"#;

fn threatbeat(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_threatbeat"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MISP_HOST", "misp.example.org")
        .env("MISP_API_KEY", "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789AbCd")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn filebeat_threatintel_and_legacy_misp_blocks_load_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("threatbeat.yml"), FILEBEAT_BLOCKS).unwrap();

    let checked = threatbeat(dir.path(), &["-c", "threatbeat.yml", "test", "config"]);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success(),
        "test config failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Config OK"), "{stdout}");

    let exported = threatbeat(dir.path(), &["-c", "threatbeat.yml", "export", "config"]);
    let text = String::from_utf8_lossy(&exported.stdout);
    assert!(exported.status.success(), "{text}");
    assert!(
        text.contains("misp.example.org"),
        "the ${{MISP_HOST}} expansion is exported:\n{text}"
    );
    assert!(
        !text.contains("aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789AbCd"),
        "the API key must be redacted:\n{text}"
    );
}

#[test]
fn a_misspelt_var_in_a_filebeat_block_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = FILEBEAT_BLOCKS.replace("var.json_objects_array", "var.json_object_array");
    fs::write(dir.path().join("threatbeat.yml"), config).unwrap();
    let checked = threatbeat(dir.path(), &["-c", "threatbeat.yml", "test", "config"]);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(!checked.status.success(), "{output}");
    assert!(output.contains("threatbeat.yml"), "{output}");
    assert!(output.contains("json_object_array"), "{output}");
}

/// Filebeat's own `modules.d/threatintel.yml.disabled`, all nine filesets.
fn filebeat_module_file() -> String {
    let path = threatbeat_test_support::data::fixture("filebeat/threatintel.yml.disabled");
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn test_config_with_module_file(module_file: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("threatbeat.yml"), "output.console: {}\n").unwrap();
    fs::create_dir_all(dir.path().join("modules.d")).unwrap();
    fs::write(dir.path().join("modules.d/threatintel.yml"), module_file).unwrap();
    let checked = threatbeat(dir.path(), &["-c", "threatbeat.yml", "test", "config"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    (checked.status.success() && text.contains("Config OK"), text)
}

#[test]
fn filebeats_shipped_threatintel_module_file_loads_unchanged() {
    let (ok, text) = test_config_with_module_file(&filebeat_module_file());
    assert!(ok, "as shipped (every fileset disabled):\n{text}");
}

/// Every fileset enabled, with the placeholders a user fills in (a server
/// name, a secret): nine pipelines, each validated in full.
#[test]
fn filebeats_threatintel_module_file_with_every_fileset_enabled_loads() {
    let filled = filebeat_module_file()
        .replace("enabled: false", "enabled: true")
        .replace("https://SERVER/", "https://misp.example.org/")
        .replace("<Add your secret here>", "s3cret-for-the-sdk")
        .replace("var.listen_port: 8080", "var.listen_port: 18080");
    assert_eq!(filled.matches("enabled: true").count(), 9);
    let (ok, text) = test_config_with_module_file(&filled);
    assert!(ok, "every fileset enabled:\n{text}");
}
