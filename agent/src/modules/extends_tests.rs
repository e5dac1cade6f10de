//! `extends:` in manifests: merge semantics, where the processors come from,
//! and the errors for unknown parents and loops.

use serde_json::{json, Value};

use super::*;
use crate::modules::{resolve, ResolvedFileset};

const PARENT: &str = r#"
module: intel
fileset: api
description: the parent
var:
  input: httpjson
  url: https://localhost/api
  token: ""
  tags: [api]
  limit: 10
input:
  httpjson:
    interval: 1h
    request:
      url: "{{ var.url }}"
      method: POST
      transforms:
        - set: {target: body.limit, value: "{{ var.limit }}"}
    auth: {api_key: {header: Authorization, value: "{{ var.token }}"}}
  file:
    paths: [a]
index: "logs-{{ module }}.{{ fileset }}"
current_state:
  index: latest-api
  id_fields: [uuid]
"#;

const PARENT_PROCESSORS: &str = r#"
- add_fields:
    target: ""
    fields:
      event.dataset: "{{ module }}.{{ fileset }}"
      tags: "{{ var.tags }}"
"#;

const CHILD: &str = r#"
module: legacy
fileset: feed
extends: intel/api
var:
  tags: [legacy]
  key: ""
input:
  httpjson:
    request:
      transforms:
        - set: {target: body.max, value: "{{ var.limit }}"}
    auth: {api_key: {value: "{{ var.key }}"}}
current_state:
  fields: {event.module: intel}
"#;

fn write(root: &Path, module: &str, fileset: &str, manifest: &str, processors: Option<&str>) {
    let folder = root.join(BUILTIN_DEFINITIONS_DIR).join(module).join(fileset);
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("manifest.yml"), manifest).unwrap();
    if let Some(processors) = processors {
        fs::write(folder.join("processors.yml"), processors).unwrap();
    }
}

fn family(child: &str, child_processors: Option<&str>) -> (tempfile::TempDir, Definitions) {
    let config = tempfile::tempdir().unwrap();
    write(config.path(), "intel", "api", PARENT, Some(PARENT_PROCESSORS));
    write(config.path(), "legacy", "feed", child, child_processors);
    let definitions = Definitions::load(config.path()).unwrap();
    (config, definitions)
}

/// The error loading `legacy/feed` (the [`CHILD`]) when it extends `parent` instead.
fn refused_child_extending(parent: &str) -> ConfigError {
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "legacy",
        "feed",
        &CHILD.replace("intel/api", parent),
        None,
    );
    Definitions::load(config.path()).unwrap_err()
}

fn resolved(definitions: &Definitions, module: &str, fileset: &str, vars: Value) -> ResolvedFileset {
    let definition = definitions.get(module, fileset).unwrap();
    resolve(definition, vars.as_object().unwrap(), &Origin::named("test")).unwrap()
}

#[test]
fn maps_merge_key_by_key_and_everything_else_is_replaced() {
    let (_config, definitions) = family(CHILD, None);
    let child = definitions.get("legacy", "feed").unwrap();
    assert_eq!(child.module, "legacy");
    assert_eq!(child.manifest.module, "legacy");
    assert_eq!(child.manifest.fileset, "feed");
    assert_eq!(child.manifest.description, "", "the description is not inherited");
    // The parent's vars, the child's defaults over them, and the child's own.
    assert_eq!(
        Value::Object(child.manifest.var.clone()),
        json!({"input": "httpjson", "url": "https://localhost/api", "token": "", "tags": ["legacy"], "limit": 10, "key": ""})
    );
    assert!(
        child.manifest_origin.file.ends_with("(extends intel/api)"),
        "{:?}",
        child.manifest_origin
    );

    let fileset = resolved(
        &definitions,
        "legacy",
        "feed",
        json!({"var.key": "K", "var.limit": 5}),
    );
    assert_eq!(
        fileset.input.settings,
        json!({
            "interval": "1h",
            "request": {
                "url": "https://localhost/api",
                "method": "POST",
                // A list: the child's replaces the parent's.
                "transforms": [{"set": {"target": "body.max", "value": 5}}]
            },
            "auth": {"api_key": {"header": "Authorization", "value": "K"}}
        })
    );
    // Inherited templates see the child's names.
    assert_eq!(fileset.index.as_deref(), Some("logs-legacy.feed"));
    assert_eq!(
        fileset.current_state,
        json!({"index": "latest-api", "id_fields": ["uuid"], "fields": {"event.module": "intel"}})
    );
    // The other inputs come along.
    let file = resolved(&definitions, "legacy", "feed", json!({"var.input": "file"}));
    assert_eq!(file.input.settings, json!({"paths": ["a"]}));

    // The parent is unchanged.
    let parent = resolved(&definitions, "intel", "api", json!({}));
    assert_eq!(parent.index.as_deref(), Some("logs-intel.api"));
    assert_eq!(
        parent.input.settings["request"]["transforms"],
        json!([{"set": {"target": "body.limit", "value": 10}}])
    );
    assert_eq!(parent.current_state.get("fields"), None);
}

#[test]
fn a_child_without_processors_runs_the_parents_templated_with_its_own_names_and_vars() {
    let (_config, definitions) = family(CHILD, None);
    let expected = |dataset: &str, tags: Value| json!([{"add_fields": {"target": "", "fields": {"event.dataset": dataset, "tags": tags}}}]);
    let child = resolved(&definitions, "legacy", "feed", json!({}));
    assert_eq!(child.processors, expected("legacy.feed", json!(["legacy"])));
    assert!(
        child.processors_origin.file.contains("intel/api/processors.yml")
            && child
                .processors_origin
                .file
                .ends_with("(extended by legacy/feed)"),
        "{:?}",
        child.processors_origin
    );
    let parent = resolved(&definitions, "intel", "api", json!({}));
    assert_eq!(parent.processors, expected("intel.api", json!(["api"])));

    // Its own processors.yml replaces the parent's.
    let (_config, definitions) = family(CHILD, Some("- drop_fields: {fields: [a]}\n"));
    let child = resolved(&definitions, "legacy", "feed", json!({}));
    assert_eq!(child.processors, json!([{"drop_fields": {"fields": ["a"]}}]));
    assert!(child
        .processors_origin
        .file
        .ends_with("legacy/feed/processors.yml"));

    // So does a processors_from of its own.
    let config = tempfile::tempdir().unwrap();
    write(config.path(), "intel", "api", PARENT, Some(PARENT_PROCESSORS));
    write(
        config.path(),
        "intel",
        "other",
        "module: intel\nfileset: other\ninput: {file: {}}\n",
        Some("- drop_event: {}\n"),
    );
    write(
        config.path(),
        "legacy",
        "feed",
        &format!("{CHILD}processors_from: intel/other\n"),
        None,
    );
    let definitions = Definitions::load(config.path()).unwrap();
    let child = resolved(&definitions, "legacy", "feed", json!({}));
    assert_eq!(child.processors, json!([{"drop_event": {}}]));
    assert!(child
        .processors_origin
        .file
        .contains("processors_from of legacy/feed"));
}

#[test]
fn a_parents_processors_from_is_inherited_and_a_childs_processors_yml_overrides_it() {
    let config = tempfile::tempdir().unwrap();
    write(config.path(), "intel", "api", PARENT, Some(PARENT_PROCESSORS));
    write(
        config.path(),
        "intel",
        "mirror",
        "module: intel\nfileset: mirror\nprocessors_from: intel/api\nvar: {tags: [mirror]}\ninput: {file: {}}\n",
        None,
    );
    write(
        config.path(),
        "legacy",
        "feed",
        "module: legacy\nfileset: feed\nextends: intel/mirror\n",
        None,
    );
    write(
        config.path(),
        "legacy",
        "own",
        "module: legacy\nfileset: own\nextends: intel/mirror\n",
        Some("- drop_event: {}\n"),
    );
    let definitions = Definitions::load(config.path()).unwrap();
    let feed = resolved(&definitions, "legacy", "feed", json!({}));
    assert_eq!(
        feed.processors,
        json!([{"add_fields": {"target": "", "fields": {"event.dataset": "legacy.feed", "tags": ["mirror"]}}}])
    );
    let own = definitions.get("legacy", "own").unwrap();
    assert_eq!(own.manifest.processors_from, None);
    assert_eq!(own.processors, json!([{"drop_event": {}}]));
}

#[test]
fn chains_apply_every_level_nearest_last() {
    let config = tempfile::tempdir().unwrap();
    write(config.path(), "intel", "api", PARENT, Some(PARENT_PROCESSORS));
    write(config.path(), "legacy", "feed", CHILD, None);
    write(
        config.path(),
        "legacy",
        "grandchild",
        "module: legacy\nfileset: grandchild\nextends: legacy/feed\nvar: {limit: 1}\nindex: fixed\n",
        None,
    );
    let definitions = Definitions::load(config.path()).unwrap();
    let fileset = resolved(&definitions, "legacy", "grandchild", json!({"var.key": "K"}));
    assert_eq!(
        fileset.input.settings["request"]["transforms"],
        json!([{"set": {"target": "body.max", "value": 1}}])
    );
    assert_eq!(fileset.input.settings["auth"]["api_key"]["value"], json!("K"));
    assert_eq!(fileset.index.as_deref(), Some("fixed"));
    assert_eq!(
        fileset.processors[0]["add_fields"]["fields"]["tags"],
        json!(["legacy"])
    );
    let origin = &definitions.get("legacy", "grandchild").unwrap().manifest_origin;
    assert!(
        origin.file.ends_with("(extends legacy/feed, intel/api)"),
        "{origin:?}"
    );
}

#[test]
fn unknown_parents_and_loops_are_errors_naming_the_manifest_and_key() {
    let error = refused_child_extending("intel/nothing");
    assert!(error.file.ends_with("legacy/feed/manifest.yml"), "{error}");
    assert_eq!(error.key, "extends");
    assert!(
        error
            .reason
            .contains("names `intel/nothing`, which is not a known fileset"),
        "{error}"
    );

    // A missing grandparent: the chain is named.
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "legacy",
        "feed",
        &CHILD.replace("intel/api", "intel/nothing"),
        None,
    );
    write(
        config.path(),
        "legacy",
        "grandchild",
        "module: legacy\nfileset: grandchild\nextends: legacy/feed\n",
        None,
    );
    let error = Definitions::load(config.path()).unwrap_err();
    assert_eq!(error.key, "extends");
    assert!(error.reason.contains("`intel/nothing`"), "{error}");

    let error = refused_child_extending("api");
    assert_eq!(error.key, "extends");
    assert!(error.reason.contains("not a `module/fileset` name"), "{error}");

    // Itself, and a loop through another.
    let error = refused_child_extending("legacy/feed");
    assert!(error.file.ends_with("legacy/feed/manifest.yml"), "{error}");
    assert_eq!(error.key, "extends");
    assert!(
        error.reason.contains("loops (legacy/feed extends legacy/feed)"),
        "{error}"
    );

    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "legacy",
        "feed",
        &CHILD.replace("intel/api", "legacy/back"),
        None,
    );
    write(
        config.path(),
        "legacy",
        "back",
        "module: legacy\nfileset: back\nextends: legacy/feed\n",
        None,
    );
    let error = Definitions::load(config.path()).unwrap_err();
    assert_eq!(error.key, "extends");
    assert!(
        error
            .reason
            .contains("legacy/back extends legacy/feed extends legacy/back"),
        "{error}"
    );

    // A child that sets no input is fine; a fileset that extends nothing needs one.
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "legacy",
        "feed",
        "module: legacy\nfileset: feed\n",
        None,
    );
    let error = Definitions::load(config.path()).unwrap_err();
    assert_eq!(error.key, "input");
}

#[test]
fn a_users_override_of_the_parent_applies_to_the_builtin_child() {
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "threatintel",
        "misp_attributes",
        "module: threatintel\nfileset: misp_attributes\nvar: {api_token: \"\", input: file, namespace: default}\ninput:\n  file: {paths: [x]}\nindex: \"user-{{ fileset }}\"\n",
        Some("- drop_event: {}\n"),
    );
    let definitions = Definitions::load(config.path()).unwrap();
    let threat = resolved(&definitions, "misp", "threat", json!({}));
    assert_eq!(threat.processors, json!([{"drop_event": {}}]));
    // The child's own index and input keys still apply over the user's parent.
    assert_eq!(
        threat.index.as_deref(),
        Some("logs-ti_threatbeat.misp_threat-default")
    );
    assert_eq!(threat.input.type_name, "file");
    assert_eq!(
        threat.input.settings,
        json!({"paths": ["x"], "split": {"target": "body.response.Attribute"}})
    );

    // And a user's definition may extend a built-in one.
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "corp",
        "attributes",
        "module: corp\nfileset: attributes\nextends: threatintel/misp_attributes\nvar: {url: https://misp.corp/attributes/restSearch}\n",
        None,
    );
    let definitions = Definitions::load(config.path()).unwrap();
    let corp = resolved(&definitions, "corp", "attributes", json!({}));
    assert_eq!(
        corp.input.settings["request"]["url"],
        json!("https://misp.corp/attributes/restSearch")
    );
    let dataset = corp
        .processors
        .as_array()
        .unwrap()
        .iter()
        .find_map(|processor| processor["add_fields"]["fields"].get("event.dataset").cloned());
    assert_eq!(dataset, Some(json!("corp.attributes")));
}

#[test]
fn the_legacy_misp_threat_fileset_is_misp_attributes_under_its_own_names() {
    let definitions = Definitions::builtin().unwrap();
    let threat = definitions.get("misp", "threat").unwrap();
    let attributes = definitions.get("threatintel", "misp_attributes").unwrap();
    assert_eq!(threat.processors, attributes.processors);
    let vars = |name: &str| json!({name: "KEY", "var.first_interval": "5000h"});
    for input in [
        json!({}),
        json!({"var.input": "file", "var.paths": ["/x"]}),
        json!({"var.paging": "keyset"}),
    ] {
        let with = |fileset: &ResolvedFileset| fileset.input.settings.clone();
        let mut threat_vars = vars("var.api_key");
        let mut attribute_vars = vars("var.api_token");
        for (key, value) in input.as_object().unwrap() {
            threat_vars[key] = value.clone();
            attribute_vars[key] = value.clone();
        }
        let threat = resolved(&definitions, "misp", "threat", threat_vars);
        let attributes = resolved(&definitions, "threatintel", "misp_attributes", attribute_vars);
        assert_eq!(with(&threat), with(&attributes), "{input}");
    }
    // misp_attributes' `api_token` works too when `api_key` is empty.
    let threat = resolved(&definitions, "misp", "threat", json!({"var.api_token": "TOKEN"}));
    assert_eq!(threat.input.settings["auth"]["api_key"]["value"], json!("TOKEN"));
    // The 7.x module's `json_objects_array` moves every place that reads the list.
    let threat = resolved(
        &definitions,
        "misp",
        "threat",
        json!({"var.json_objects_array": "response.Items"}),
    );
    let settings = &threat.input.settings;
    assert_eq!(
        settings["response"]["split"]["target"],
        json!("body.response.Items")
    );
    assert!(settings["response"]["pagination"][0]["set"]["value"]
        .as_str()
        .is_some_and(|value| value.contains("last_response.body.response.Items|length")));
    assert_eq!(settings["keyset"]["items"], json!("body.response.Items"));

    let threat = resolved(&definitions, "misp", "threat", json!({}));
    let attributes = resolved(&definitions, "threatintel", "misp_attributes", json!({}));
    assert_eq!(
        threat.index.as_deref(),
        Some("logs-ti_threatbeat.misp_threat-default")
    );
    assert_eq!(
        threat.current_state["index"],
        json!("logs-ti_threatbeat_latest.misp_threat")
    );
    assert_eq!(
        threat.current_state["fields"],
        json!({"event.module": "threatintel"})
    );
    assert_eq!(threat.vars["tags"], json!(["misp-threat", "forwarded"]));
    let dataset = |fileset: &ResolvedFileset| {
        fileset
            .processors
            .as_array()
            .unwrap()
            .iter()
            .find_map(|processor| {
                let fields = &processor["add_fields"]["fields"];
                fields
                    .get("event.dataset")
                    .map(|dataset| (fields["event.module"].clone(), dataset.clone()))
            })
    };
    assert_eq!(dataset(&threat), Some((json!("misp"), json!("misp.threat"))));
    assert_eq!(
        dataset(&attributes),
        Some((json!("threatintel"), json!("threatintel.misp_attributes")))
    );
}
