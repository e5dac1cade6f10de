//! A processor config error in a MISP fileset (a bad regexp in `when`, an
//! unknown field in a `lookup` row) is rejected by `threatbeat test config`
//! with the file and the key, before anything runs.

use std::fs;
use std::path::Path;
use std::process::Command;

fn test_config(dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_threatbeat"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .args(["test", "config"])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn setup(modules_yml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("threatbeat.yml"), "output.console: {}\n").unwrap();
    fs::create_dir_all(dir.path().join("modules.d")).unwrap();
    fs::write(dir.path().join("modules.d/threatintel.yml"), modules_yml).unwrap();
    dir
}

#[test]
fn test_config_rejects_a_bad_regexp_in_when_with_file_and_key() {
    let dir = setup(
        "- module: threatintel\n  misp:\n    enabled: true\n    processors:\n      - drop_event:\n          when:\n            regexp: {misp.attribute.type: \"(unclosed\"}\n",
    );
    let (ok, stderr) = test_config(dir.path());
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("modules.d/threatintel.yml"), "{stderr}");
    assert!(
        stderr.contains("key `0.misp.processors.0.drop_event.when.regexp.misp.attribute.type`"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid regular expression"), "{stderr}");
}

#[test]
fn test_config_rejects_an_unknown_field_in_lookup_with_file_and_key() {
    let dir = setup("- module: threatintel\n  misp:\n    enabled: true\n");
    // A user definition overriding the built-in one, with a typo in a lookup row.
    let folder = dir.path().join("modules.d/definitions/threatintel/misp");
    fs::create_dir_all(&folder).unwrap();
    let builtin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../modules.d/definitions/threatintel/misp"
    );
    fs::copy(format!("{builtin}/manifest.yml"), folder.join("manifest.yml")).unwrap();
    let processors = fs::read_to_string(format!("{builtin}/processors.yml")).unwrap();
    let broken = processors.replacen(
        "md5: {set: {threat.indicator.type: file}, target:",
        "md5: {set: {threat.indicator.type: file}, taget:",
        1,
    );
    assert_ne!(broken, processors);
    fs::write(folder.join("processors.yml"), broken).unwrap();
    let (ok, stderr) = test_config(dir.path());
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&folder.join("processors.yml").display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains(".lookup.table.md5"), "{stderr}");
    assert!(stderr.contains("unknown field `taget`"), "{stderr}");
}
