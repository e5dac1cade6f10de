//! Real MISP events (`test-support/data/misp/events`) through the fileset's
//! own input split and its mapping, as the agent runs them.

use std::fs;

use serde_json::{json, Map, Value};
use threatbeat::modules::{builtin_definition, resolve};
use threatbeat_core::{BuildContext, Event, FieldPath, Origin};
use threatbeat_inputs::split::{Split, SplitConfig};
use threatbeat_processors::Chain;

fn get<'a>(event: &'a Event, path: &str) -> Option<&'a Value> {
    event.get(&FieldPath::parse(path).unwrap())
}

/// The `threatintel/misp` split (from its manifest) and chain.
fn split_and_chain() -> (Split, Chain) {
    let definition = builtin_definition("threatintel", "misp").unwrap();
    let resolved = resolve(&definition, &Map::new(), &Origin::named("test")).unwrap();
    let config: SplitConfig =
        serde_json::from_value(resolved.input.settings["response"]["split"].clone()).unwrap();
    let split = Split::build(&config, &Origin::named("test")).unwrap();
    let chain = Chain::build(
        &resolved.processors,
        &resolved.processors_origin,
        &BuildContext::default(),
    )
    .unwrap();
    (split, chain)
}

/// A real event holding plain attributes and objects, split as the fileset's
/// input splits it and mapped: the union of attributes and object
/// attributes (no cross product), each an indicator with its own id.
#[test]
fn a_real_event_with_objects_gives_one_document_per_attribute() {
    let path = threatbeat_test_support::data::fixture(
        "misp/events/dcso/samples/5bf26acf-d95c-4892-a05d-4db5950d210f.json",
    );
    // A restSearch answer: {"response": [{"Event": {...}}]}.
    let body: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let event = &body["response"][0];
    let plain: Vec<String> = event["Event"]["Attribute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attribute| attribute["uuid"].as_str().unwrap().to_owned())
        .collect();
    let in_objects: Vec<String> = event["Event"]["Object"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|object| object["Attribute"].as_array().unwrap().iter())
        .map(|attribute| attribute["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((plain.len(), in_objects.len()), (2, 24));

    let (split, chain) = split_and_chain();
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    split.apply(&body, &mut records, &mut rejected).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(records.len(), 2 + 24, "the union, not 2 x 24");

    let documents: Vec<Event> = records
        .into_iter()
        .filter_map(|record| chain.run(Event::from_value(record)))
        .collect();
    let mut ids: Vec<&str> = documents.iter().map(|document| document.id().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 26, "every document has its own id");
    let mut uuids: Vec<String> = documents
        .iter()
        .map(|document| {
            get(document, "misp.attribute.uuid")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    uuids.sort();
    let mut all: Vec<String> = plain.into_iter().chain(in_objects).collect();
    all.sort();
    assert_eq!(
        uuids, all,
        "every attribute is the primary indicator of exactly one document"
    );
    for document in &documents {
        assert!(get(document, "threat.indicator.type").is_some());
        assert_eq!(
            get(document, "misp.context.attribute"),
            None,
            "no cross product context"
        );
        assert_eq!(get(document, "error.message"), None, "{:?}", document.fields);
    }
}

/// Every real MISP event in the fixtures (three export wrappers) through the
/// split and the mapping: nothing panics, every document gets an id and an
/// indicator type, and only genuinely bad values are marked.
#[test]
fn every_real_fixture_event_maps_cleanly() {
    let (split, chain) = split_and_chain();
    let root = threatbeat_test_support::data::misp_events_dir();
    let mut files = Vec::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                files.push(path);
            }
        }
    }
    let (mut documents, mut marked) = (0, Vec::new());
    for file in &files {
        let Ok(parsed) = serde_json::from_str::<Value>(&fs::read_to_string(file).unwrap()) else {
            continue;
        };
        // Three wrappers: a restSearch answer, {"Event": {...}}, or a bare event.
        let body = match &parsed {
            Value::Object(map) if map.contains_key("response") => parsed.clone(),
            Value::Object(map) if map.contains_key("Event") => json!({"response": [parsed]}),
            Value::Object(map) if map.contains_key("Attribute") || map.contains_key("Object") => {
                json!({"response": [{"Event": parsed}]})
            }
            _ => continue,
        };
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        split.apply(&body, &mut records, &mut rejected).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        for record in records {
            let Some(document) = chain.run(Event::from_value(record)) else {
                continue;
            };
            documents += 1;
            assert!(
                get(&document, "threat.indicator.type").is_some(),
                "{}",
                file.display()
            );
            if let Some(message) = get(&document, "error.message") {
                marked.push(format!("{}: {message}", file.display()));
            }
        }
    }
    println!(
        "{} files, {documents} documents, {} marked",
        files.len(),
        marked.len()
    );
    assert!(documents > 1000, "{documents}");
    // Elastic marks exactly these: AS values that are not numbers, domain|ip without an IP.
    for message in &marked {
        assert!(
            message.contains("to long") || message.contains("not an IP"),
            "unexpected failure: {message}\n{}",
            marked.join("\n")
        );
    }
}
