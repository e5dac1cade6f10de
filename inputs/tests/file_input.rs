//! The file input: MISP feed folders, restSearch exports, NDJSON, and what
//! it remembers across restarts.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Origin, PluginConfig};

fn fixtures() -> PathBuf {
    threatbeat_test_support::data::data_dir()
}

fn attribute_total(event: &Value) -> usize {
    let plain = event["Attribute"].as_array().map_or(0, Vec::len);
    let in_objects: usize = event["Object"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|object| object["Attribute"].as_array().map_or(0, Vec::len))
        .sum();
    plain + in_objects
}

/// A feed folder with three real events stored as `<uuid>.json` and a `manifest.json`.
fn write_feed(folder: &Path) -> (usize, Vec<String>) {
    let sources = [
        "misp/events/eset/sshdoor/misp-events/abafar.json",
        "misp/events/eset/sshdoor/misp-events/endor.json",
        "misp/events/pymisp/tests/reportlab_testfiles/mainly_objects_1.json",
    ];
    let mut manifest = serde_json::Map::new();
    let mut total = 0;
    let mut uuids = Vec::new();
    for source in sources {
        let document: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join(source)).unwrap()).unwrap();
        let uuid = document["Event"]["uuid"].as_str().unwrap().to_owned();
        total += attribute_total(&document["Event"]);
        std::fs::write(
            folder.join(format!("{uuid}.json")),
            serde_json::to_vec(&document).unwrap(),
        )
        .unwrap();
        manifest.insert(
            uuid.clone(),
            json!({"info": document["Event"]["info"], "timestamp": document["Event"]["timestamp"]}),
        );
        uuids.push(uuid);
    }
    std::fs::write(
        folder.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    (total, uuids)
}

#[tokio::test]
async fn misp_feed_folder_is_read_once_and_only_changes_are_read_again() {
    let feed = tempfile::tempdir().unwrap();
    let (total, uuids) = write_feed(feed.path());
    let config = manifest_input(
        "threatintel/misp",
        json!({"input": "file", "paths": [feed.path()]}),
    );
    let data = tempfile::tempdir().unwrap();
    {
        let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
        run_once(&config, &pipeline).await.unwrap();
        assert_eq!(
            pipeline.event_count(),
            total,
            "one record per attribute, plain or in an object"
        );
        assert!(pipeline.events().iter().all(|e| e.fields["Event"].is_object()));
    }
    {
        let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
        run_once(&config, &pipeline).await.unwrap();
        assert_eq!(pipeline.event_count(), 0, "a restart does not re-read");
    }
    // One event file changes: only it is read again.
    let changed = feed.path().join(format!("{}.json", uuids[0]));
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&changed, bytes).unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    run_once(&config, &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), 10, "abafar.json holds 10 attributes");
}

#[tokio::test]
async fn a_rest_search_export_goes_through_the_same_split() {
    let path = fixtures().join("misp/events/eset/windigo/ebury.misp.json");
    let document: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let expected = attribute_total(&document["response"][0]["Event"]);
    let config = manifest_input("threatintel/misp", json!({"input": "file", "paths": [path]}));
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    run_once(&config, &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), expected);
    assert_eq!(
        expected, 420,
        "1 attribute + 419 object attributes, no cross product"
    );
}

#[tokio::test]
async fn ndjson_lines_become_events() {
    let path = fixtures().join("filebeat-threatintel/misp/misp_sample.ndjson.log");
    let config = PluginConfig {
        type_name: "file".into(),
        settings: json!({"paths": [path], "format": "ndjson"}),
        origin: Origin::named("test"),
    };
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "golden", None);
    run_once(&config, &pipeline).await.unwrap();
    let events = pipeline.events();
    assert_eq!(events.len(), 15);
    assert!(events.iter().all(|e| e.fields["Event"]["Attribute"].is_object()));
}

#[tokio::test]
async fn a_broken_file_is_reported_by_name_and_the_others_are_still_read() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("good.ndjson"), b"{\"a\": 1}\n{\"a\": 2}\n").unwrap();
    std::fs::write(folder.path().join("bad.json"), b"{\"response\": [{\"Event\": ").unwrap();
    let config = PluginConfig {
        type_name: "file".into(),
        settings: json!({"paths": [folder.path()]}),
        origin: Origin::named("test"),
    };
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "files", None);
    let error = run_once(&config, &pipeline).await.unwrap_err().to_string();
    assert!(
        error.contains("bad.json") && error.contains("truncated JSON"),
        "{error}"
    );
    assert_eq!(pipeline.event_count(), 2);
    let cursor = pipeline.stored_cursor().unwrap();
    let remembered: Vec<&String> = cursor.as_object().unwrap().keys().collect();
    assert!(
        remembered.iter().all(|key| !key.ends_with("bad.json")),
        "the bad file is retried later: {remembered:?}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let config = PluginConfig {
        type_name: "file".into(),
        settings: json!({"paths": [], "format": "json"}),
        origin: Origin::named("modules.d/x.yml").child("input.file"),
    };
    let error = threatbeat_inputs::registry()
        .build(&config, &BuildContext::default())
        .err()
        .unwrap();
    assert_eq!(error.key, "input.file.paths");
    let config = PluginConfig {
        type_name: "file".into(),
        settings: json!({"paths": ["a"], "format": "xml"}),
        origin: Origin::named("modules.d/x.yml").child("input.file"),
    };
    let error = threatbeat_inputs::registry()
        .build(&config, &BuildContext::default())
        .err()
        .unwrap();
    assert_eq!(error.key, "input.file.format");
}

/// A feed manifest whose keys climb out of the folder (`../../x`, an
/// absolute path, `a/b`) or name a symbolic link reads none of those files;
/// the real events are read.
#[tokio::test]
async fn a_feed_manifest_cannot_read_outside_its_folder() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.json"),
        serde_json::to_vec(
            &json!({"Event": {"uuid": "secret", "Attribute": [{"uuid": "s1", "value": "leak"}]}}),
        )
        .unwrap(),
    )
    .unwrap();
    let feed = tempfile::tempdir().unwrap();
    let (total, _) = write_feed(feed.path());
    let manifest_path = feed.path().join("manifest.json");
    let mut manifest: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let escaping = outside.path().join("secret");
    let relative = format!(
        "../{}/secret",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    for key in [escaping.display().to_string(), relative, "linked".to_owned()] {
        manifest.insert(key, json!({"timestamp": "1"}));
    }
    std::os::unix::fs::symlink(
        outside.path().join("secret.json"),
        feed.path().join("linked.json"),
    )
    .unwrap();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let config = manifest_input(
        "threatintel/misp",
        json!({"input": "file", "paths": [feed.path()]}),
    );
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    run_once(&config, &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), total);
    assert!(pipeline
        .events()
        .iter()
        .all(|event| event.fields["Event"]["uuid"] != "secret"));
}
