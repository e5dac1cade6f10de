//! Module loader tests on small definitions written to a temporary `path.config`.

use std::fs;
use std::path::Path;

use serde_json::{json, Map, Value};
use threatbeat_core::Origin;

use super::*;

const MANIFEST: &str = r#"
module: intel
fileset: feed
description: a test feed
var:
  input: httpjson
  url: https://localhost/events/restSearch
  api_token: ""
  interval: 60m
  filters: null
  tags: [intel-feed, forwarded]
  paths: []
input:
  httpjson:
    interval: "{{ var.interval }}"
    request: { url: "{{ var.url }}", method: POST, body: "{{ var.filters }}" }
    headers: { Authorization: "{{ var.api_token }}" }
    cursor: { timestamp: { value: "[[ .last_event.timestamp ]]" } }
    tags: "{{ var.tags }}"
  file:
    paths: "{{ var.paths }}"
index: "threatbeat-{{ var.interval }}"
"#;

const PROCESSORS: &str = r#"
- rename: { fields: [{ from: a, to: b }] }
- add_tags: { tags: "{{ var.tags }}" }
"#;

fn write_definition(config: &Path, module: &str, fileset: &str, manifest: &str, processors: Option<&str>) {
    let folder = config.join("modules.d/definitions").join(module).join(fileset);
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("manifest.yml"), manifest).unwrap();
    if let Some(processors) = processors {
        fs::write(folder.join("processors.yml"), processors).unwrap();
    }
}

fn definitions() -> (tempfile::TempDir, Definitions) {
    let config = tempfile::tempdir().unwrap();
    write_definition(config.path(), "intel", "feed", MANIFEST, Some(PROCESSORS));
    let definitions = Definitions::load(config.path()).unwrap();
    (config, definitions)
}

fn map(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn defaults_are_templated_with_types_kept() {
    let (_config, definitions) = definitions();
    let definition = definitions.get("intel", "feed").unwrap();
    let resolved = resolve(definition, &Map::new(), &Origin::named("threatbeat.yml")).unwrap();
    assert_eq!(resolved.id, "intel/feed");
    assert_eq!(resolved.input.type_name, "httpjson");
    assert_eq!(
        resolved.input.settings,
        json!({
            "interval": "60m",
            "request": {"url": "https://localhost/events/restSearch", "method": "POST"},
            "headers": {"Authorization": ""},
            "cursor": {"timestamp": {"value": "[[ .last_event.timestamp ]]"}},
            "tags": ["intel-feed", "forwarded"]
        })
    );
    assert_eq!(
        resolved.processors[1],
        json!({"add_tags": {"tags": ["intel-feed", "forwarded"]}})
    );
    assert_eq!(resolved.index.as_deref(), Some("threatbeat-60m"));
    assert!(resolved.input.origin.file.ends_with("intel/feed/manifest.yml"));
    assert_eq!(resolved.input.origin.key, "input.httpjson");
    assert!(resolved
        .processors_origin
        .file
        .ends_with("intel/feed/processors.yml"));
}

#[test]
fn overrides_in_every_spelling_pick_the_input_and_fill_templates() {
    let (_config, definitions) = definitions();
    let definition = definitions.get("intel", "feed").unwrap();
    for overrides in [
        json!({"var.input": "file", "var.paths": ["/feeds/a"]}),
        json!({"var": {"input": "file", "paths": ["/feeds/a"]}}),
        json!({"input": "file", "paths": ["/feeds/a"]}),
    ] {
        let resolved = resolve(definition, &map(overrides), &Origin::named("x")).unwrap();
        assert_eq!(resolved.input.type_name, "file");
        assert_eq!(resolved.input.settings, json!({"paths": ["/feeds/a"]}));
        assert_eq!(resolved.vars["paths"], json!(["/feeds/a"]));
    }
}

#[test]
fn unknown_variable_and_input_name_the_key() {
    let (_config, definitions) = definitions();
    let definition = definitions.get("intel", "feed").unwrap();
    let origin = Origin::named("modules.d/intel.yml").child(0).child("feed");
    let error = resolve(definition, &map(json!({"var.urll": "x"})), &origin).unwrap_err();
    assert_eq!(error.file, "modules.d/intel.yml");
    assert_eq!(error.key, "0.feed.var.urll");
    assert!(
        error.reason.contains("unknown variable `urll`"),
        "{}",
        error.reason
    );
    assert!(error.reason.contains("url"), "{}", error.reason);

    let error = resolve(definition, &map(json!({"var.input": "kafka"})), &origin).unwrap_err();
    assert_eq!(error.key, "0.feed.var.input");
    assert!(error.reason.contains("file, httpjson"), "{}", error.reason);
}

#[test]
fn module_entries_from_yaml_resolve_and_reject_typos() {
    let (_config, definitions) = definitions();
    let origin = Origin::named("modules.d/intel.yml");
    let yaml = r#"
- module: intel
  feed:
    enabled: true
    var.url: https://misp.example/events/restSearch
    var:
      interval: 5m
    input.request.timeout: 30s
    processors:
      - drop_event: {}
"#;
    let entries = parse_module_list(&parse_yaml(yaml, &origin).unwrap(), &origin).unwrap();
    let resolved = resolve_entries(&entries, &definitions).unwrap();
    assert_eq!(resolved.len(), 1);
    let feed = &resolved[0];
    assert_eq!(
        feed.input.settings["request"]["url"],
        json!("https://misp.example/events/restSearch")
    );
    assert_eq!(feed.input.settings["request"]["timeout"], json!("30s"));
    assert_eq!(feed.input.settings["interval"], json!("5m"));
    assert_eq!(feed.user_processors, json!([{"drop_event": {}}]));
    assert_eq!(feed.user_processors_origin.key, "0.feed.processors");

    let cases = [
        (
            "- module: intell\n  feed: {}\n",
            "0.module",
            "unknown module `intell`; known modules: intel",
        ),
        (
            "- module: intel\n  fed: {}\n",
            "0.fed",
            "module `intel` has no fileset `fed`; known filesets: feed",
        ),
        (
            "- module: intel\n  feed:\n    enabeld: true\n",
            "0.feed.enabeld",
            "unknown fileset setting",
        ),
        (
            "- module: intel\n  feed:\n    enabled: yes please\n",
            "0.feed.enabled",
            "expected true or false",
        ),
        (
            "- module: intel\n  feed: {}\n- module: intel\n  feed: {}\n",
            "1.feed",
            "enabled twice",
        ),
    ];
    for (yaml, key, reason) in cases {
        let value = parse_yaml(yaml, &origin).unwrap();
        let error = parse_module_list(&value, &origin)
            .and_then(|entries| resolve_entries(&entries, &definitions))
            .unwrap_err();
        assert_eq!(
            (error.file.as_str(), error.key.as_str()),
            ("modules.d/intel.yml", key),
            "{yaml}"
        );
        assert!(error.reason.contains(reason), "{yaml}: {}", error.reason);
    }
}

#[test]
fn disabled_filesets_and_modules_are_skipped_and_bare_modules_enable_all() {
    let (_config, definitions) = definitions();
    let origin = Origin::named("m.yml");
    let resolve_yaml = |yaml: &str| {
        let entries = parse_module_list(&parse_yaml(yaml, &origin).unwrap(), &origin).unwrap();
        resolve_entries(&entries, &definitions).unwrap()
    };
    assert!(resolve_yaml("- module: intel\n  feed.enabled: false\n").is_empty());
    assert!(resolve_yaml("- module: intel\n  enabled: false\n  feed: {}\n").is_empty());
    assert_eq!(resolve_yaml("- module: intel\n").len(), 1);
}

#[test]
fn user_definitions_replace_builtins_and_bad_ones_name_their_file() {
    let config = tempfile::tempdir().unwrap();
    write_definition(
        config.path(),
        "intel",
        "feed",
        "module: intel\nfileset: wrong\ninput: {file: {}}\n",
        None,
    );
    let error = Definitions::load(config.path()).unwrap_err();
    assert!(error.file.ends_with("intel/feed/manifest.yml"), "{}", error.file);
    assert_eq!(error.key, "fileset");

    write_definition(
        config.path(),
        "intel",
        "feed",
        "module: intel\nfileset: feed\ninputs: {}\n",
        None,
    );
    let error = Definitions::load(config.path()).unwrap_err();
    assert_eq!(error.key, "inputs");

    write_definition(
        config.path(),
        "intel",
        "feed",
        "module: intel\n  fileset: [\n",
        None,
    );
    let error = Definitions::load(config.path()).unwrap_err();
    assert!(
        error.reason.starts_with("invalid YAML at line"),
        "{}",
        error.reason
    );
}

#[test]
fn every_builtin_definition_parses_and_resolves_with_defaults() {
    let definitions = Definitions::builtin().unwrap();
    for definition in definitions.iter() {
        assert!(definition.builtin);
        assert_eq!(
            builtin_definition(&definition.module, &definition.fileset).as_ref(),
            Some(definition)
        );
        // Filesets with several inputs need `var.input`; the manifest's default must be valid.
        resolve(definition, &Map::new(), &Origin::named("test")).unwrap();
    }
}

/// Pipeline ids of `yaml`'s enabled filesets, or the error.
fn pipeline_ids(definitions: &Definitions, yaml: &str) -> Result<Vec<String>, threatbeat_core::ConfigError> {
    let origin = Origin::named("modules.d/intel.yml");
    let entries = parse_module_list(&parse_yaml(yaml, &origin).unwrap(), &origin)?;
    Ok(resolve_entries(&entries, definitions)?
        .into_iter()
        .map(|fileset| fileset.id)
        .collect())
}

#[test]
fn a_fileset_configured_once_keeps_its_plain_pipeline_id() {
    let (_config, definitions) = definitions();
    let ids = pipeline_ids(
        &definitions,
        "- module: intel\n  feed:\n    var.url: https://a.example/x\n",
    )
    .unwrap();
    assert_eq!(ids, ["intel/feed"]);
    let named = pipeline_ids(&definitions, "- module: intel\n  feed:\n    id: prod\n").unwrap();
    assert_eq!(named, ["intel/feed/prod"]);
}

#[test]
fn several_instances_are_told_apart_by_their_id_or_their_source() {
    let (_config, definitions) = definitions();
    let two_servers = "- module: intel\n  feed:\n    var.url: https://a.example/x\n- module: intel\n  feed:\n    var.url: https://b.example/x\n";
    let ids = pipeline_ids(&definitions, two_servers).unwrap();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    assert!(ids
        .iter()
        .all(|id| id.starts_with("intel/feed/") && id.len() == "intel/feed/".len() + 8));

    // Settings that do not name the source leave the ids alone: editing
    // them, or a rotated key, keeps each instance's cursor.
    let edited = "- module: intel\n  feed:\n    var.url: https://a.example/x\n    var.interval: 5m\n    var.api_token: new\n- module: intel\n  feed:\n    var.tags: [x]\n    var.url: https://b.example/x\n";
    assert_eq!(pipeline_ids(&definitions, edited).unwrap(), ids);

    let named = "- module: intel\n  feed:\n    id: a\n- module: intel\n  feed:\n    id: b\n";
    assert_eq!(
        pipeline_ids(&definitions, named).unwrap(),
        ["intel/feed/a", "intel/feed/b"]
    );
}

#[test]
fn instances_that_cannot_be_told_apart_are_an_error_naming_both_entries() {
    let (_config, definitions) = definitions();
    let same_source = "- module: intel\n  feed:\n    var.url: https://a.example/x\n- module: intel\n  feed:\n    var.url: https://a.example/x\n    var.api_token: other\n";
    let error = pipeline_ids(&definitions, same_source).unwrap_err();
    assert_eq!(
        (error.file.as_str(), error.key.as_str()),
        ("modules.d/intel.yml", "1.feed")
    );
    assert!(
        error.reason.contains(
            "enabled twice with the same source (var.input: httpjson, var.url: https://a.example/x"
        ),
        "{}",
        error.reason
    );
    assert!(
        error.reason.contains("also in modules.d/intel.yml key `0.feed`"),
        "{}",
        error.reason
    );
    assert!(
        error.reason.contains("give each entry its own `id:`"),
        "{}",
        error.reason
    );

    let same_id = "- module: intel\n  feed:\n    id: a\n- module: intel\n  feed:\n    id: a\n    var.url: https://b.example/x\n";
    let error = pipeline_ids(&definitions, same_id).unwrap_err();
    assert!(error.reason.contains("the same `id: a`"), "{}", error.reason);

    let bad_id = pipeline_ids(&definitions, "- module: intel\n  feed:\n    id: \"a/b\"\n").unwrap_err();
    assert_eq!(bad_id.key, "0.feed.id");
}

#[test]
fn text_from_the_environment_takes_the_type_of_the_default() {
    let (_config, definitions) = definitions();
    let definition = definitions.get("intel", "feed").unwrap();
    let mut manifest = definition.clone();
    manifest.manifest.var.insert("enabled_thing".into(), json!(true));
    manifest.manifest.var.insert("limit".into(), json!(10));
    let overrides = map(json!({"enabled_thing": "false", "limit": "25", "url": "123"}));
    let resolved = resolve(&manifest, &overrides, &Origin::named("m.yml")).unwrap();
    assert_eq!(resolved.vars["enabled_thing"], json!(false));
    assert_eq!(resolved.vars["limit"], json!(25));
    // Text variables stay text, whatever they look like.
    assert_eq!(resolved.vars["url"], json!("123"));
}
