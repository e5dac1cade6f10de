//! Layering and error tests on temporary config files.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde_json::json;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(main: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("threatbeat.yml"), main).unwrap();
        Self { dir }
    }

    fn options(&self, overrides: &[&str], env: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            config_file: None,
            overrides: overrides.iter().map(|flag| flag.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            cwd: self.dir.path().to_path_buf(),
        }
    }

    fn file(&self) -> String {
        self.dir.path().join("threatbeat.yml").display().to_string()
    }
}

const MAIN: &str = "
logging.level: warning
output.file:
  path: ${OUT_DIR:/tmp/out}
  filename: events
path:
  data: state
";

#[test]
fn file_env_and_flags_layer_in_order() {
    let fixture = Fixture::new(MAIN);
    let loaded = load(&fixture.options(&[], &[])).unwrap();
    assert_eq!(loaded.settings.logging.level, LogLevel::Warning);
    assert_eq!(
        loaded.merged["output"]["file"],
        json!({"path": "/tmp/out", "filename": "events"})
    );
    assert_eq!(loaded.paths.config, fixture.dir.path());
    assert_eq!(loaded.paths.home, fixture.dir.path());
    assert_eq!(loaded.paths.data, fixture.dir.path().join("state"));
    assert_eq!(loaded.paths.logs, fixture.dir.path().join("logs"));

    let env = [
        ("THREATBEAT_LOGGING__LEVEL", "debug"),
        ("THREATBEAT_OUTPUT__FILE__FILENAME", "from-env"),
    ];
    let loaded = load(&fixture.options(&[], &env)).unwrap();
    assert_eq!(loaded.settings.logging.level, LogLevel::Debug);
    assert_eq!(loaded.merged["output"]["file"]["filename"], json!("from-env"));
    assert_eq!(loaded.merged["output"]["file"]["path"], json!("/tmp/out"));

    let flags = [
        "logging.level=error",
        "output.file.rotate_every_kb=64",
        "logging.json=true",
    ];
    let loaded = load(&fixture.options(&flags, &env)).unwrap();
    assert_eq!(loaded.settings.logging.level, LogLevel::Error);
    assert!(loaded.settings.logging.json);
    assert_eq!(loaded.merged["output"]["file"]["rotate_every_kb"], json!(64));
    assert_eq!(loaded.merged["output"]["file"]["filename"], json!("from-env"));

    let loaded = load(&fixture.options(&["path.home=/opt/tb"], &[("OUT_DIR", "/var/out")])).unwrap();
    assert_eq!(loaded.paths.home, PathBuf::from("/opt/tb"));
    assert_eq!(loaded.paths.data, PathBuf::from("/opt/tb/state"));
    assert_eq!(loaded.merged["output"]["file"]["path"], json!("/var/out"));
}

#[test]
fn errors_name_the_source_and_key() {
    let fixture = Fixture::new("logging:\n  levle: debug\n");
    let error = load(&fixture.options(&[], &[])).unwrap_err();
    assert_eq!(
        (error.file.as_str(), error.key.as_str()),
        (fixture.file().as_str(), "logging.levle")
    );
    assert!(error.reason.contains("unknown field"), "{}", error.reason);

    let fixture = Fixture::new("logging.json: 12\n");
    let error = load(&fixture.options(&[], &[])).unwrap_err();
    assert_eq!(error.key, "logging.json");
    assert!(error.reason.contains("invalid type"), "{}", error.reason);

    let fixture = Fixture::new("threatbeat.config.modules.pth: x\n");
    let error = load(&fixture.options(&[], &[])).unwrap_err();
    assert_eq!(error.key, "threatbeat.config.modules.pth");

    let fixture = Fixture::new("logging.level: info\n");
    let error = load(&fixture.options(&["logging.level=loud"], &[])).unwrap_err();
    assert_eq!(
        (error.file.as_str(), error.key.as_str()),
        ("-E logging.level=loud", "logging.level")
    );
    let error = load(&fixture.options(&[], &[("THREATBEAT_LOGGING__COLOUR", "x")])).unwrap_err();
    assert_eq!(error.file, "environment variable THREATBEAT_LOGGING__COLOUR");
    assert_eq!(error.key, "logging.colour");

    let fixture = Fixture::new("output.file.path: ${NOT_SET_ANYWHERE}\n");
    let error = load(&fixture.options(&[], &[])).unwrap_err();
    assert_eq!(
        (error.file.as_str(), error.key.as_str()),
        (fixture.file().as_str(), "output.file.path")
    );

    let fixture = Fixture::new("logging:\n  level: [debug\n");
    let error = load(&fixture.options(&[], &[])).unwrap_err();
    assert_eq!(error.file, fixture.file());
    assert!(
        error.reason.starts_with("invalid YAML at line"),
        "{}",
        error.reason
    );
}

#[test]
fn discovery_prefers_the_flag_then_the_working_directory() {
    let fixture = Fixture::new("logging.level: debug\n");
    let mut options = fixture.options(&[], &[]);
    assert_eq!(
        discover(&options).unwrap(),
        fixture.dir.path().join("threatbeat.yml")
    );
    options.config_file = Some("missing.yml".into());
    let error = discover(&options).unwrap_err();
    assert!(error.file.ends_with("missing.yml"), "{}", error.file);
}

#[test]
fn module_entries_come_inline_aliased_and_from_modules_d() {
    let fixture = Fixture::new("threatbeat.modules:\n  - module: a\nfilebeat.modules:\n  - module: b\n");
    let modules_d = fixture.dir.path().join("modules.d");
    fs::create_dir_all(&modules_d).unwrap();
    fs::write(
        modules_d.join("c.yml"),
        "- module: c\n  feed:\n    var.key: ${C_KEY:none}\n",
    )
    .unwrap();
    fs::write(modules_d.join("d.yml.disabled"), "- module: d\n").unwrap();
    let loaded = load(&fixture.options(&[], &[])).unwrap();
    let entries = loaded.module_entries().unwrap();
    let names: Vec<_> = entries.iter().map(|entry| entry.module.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(entries[2].filesets[0].vars["key"], json!("none"));
    assert!(entries[2].origin.file.ends_with("modules.d/c.yml"));

    fs::write(
        modules_d.join("c.yml"),
        "- module: c\n  feed:\n    var.key: ${C_KEY}\n",
    )
    .unwrap();
    let error = loaded.module_entries().unwrap_err();
    assert!(error.file.ends_with("modules.d/c.yml"));
    assert_eq!(error.key, "0.feed.var.key");
}

#[test]
fn dotted_keys_nest_and_merge_but_not_inside_lists() {
    let value = json!({
        "output.file.path": "/x",
        "output": {"file": {"filename": "y"}},
        "logging": null,
        "threatbeat.modules": [{"module": "m", "feed": {"var.url": "u"}}]
    });
    assert_eq!(
        nest_dotted_keys(value),
        json!({
            "output": {"file": {"path": "/x", "filename": "y"}},
            "threatbeat": {"modules": [{"module": "m", "feed": {"var.url": "u"}}]}
        })
    );
}

#[test]
fn errors_never_quote_secrets() {
    let fixture = Fixture::new("logging.json: ${MISP_API_KEY}\n");
    let error = load(&fixture.options(&[], &[("MISP_API_KEY", "hunter2-key")])).unwrap_err();
    assert_eq!(error.key, "logging.json");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}
