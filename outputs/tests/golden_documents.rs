//! Elastic's own MISP documents (the golden files) index cleanly under the
//! template `setup` installs, into a data stream, with `create` and `_id`.

mod common;

use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Event, Output};
use threatbeat_outputs::elasticsearch::{setup, SetupSettings};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;

use common::{output, output_config};

fn golden_events() -> Vec<Event> {
    let mut events = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(threatbeat_test_support::data::filebeat_threatintel("misp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with("-expected.json"))
        .collect();
    files.sort();
    for file in files {
        let documents: Vec<Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for document in documents {
            let id = format!(
                "{}-{}",
                document["misp.attribute.uuid"].as_str().unwrap_or("none"),
                document["misp.context.attribute.uuid"].as_str().unwrap_or("")
            );
            let mut event = Event::from_value(document);
            event.set_id(id);
            events.push(event);
        }
    }
    events
}

#[tokio::test]
async fn golden_misp_documents_index_under_the_setup_template() {
    let cluster = ElasticsearchSimulator::start().await;
    let context = BuildContext::default();
    setup(
        &output_config(json!({"hosts": [cluster.url()]})),
        &context,
        &SetupSettings::default(),
    )
    .await
    .unwrap();
    let events = golden_events();
    assert!(events.len() >= 16, "{} golden documents", events.len());
    let ids: std::collections::BTreeSet<String> = events
        .iter()
        .map(|event| event.id().unwrap().to_owned())
        .collect();
    let mut output = output(json!({"hosts": [cluster.url()], "index": "threatbeat-threatintel.misp"}));
    output.publish_events(events).await.unwrap();
    let stats = output.stats().snapshot();
    assert_eq!((stats.dropped, stats.dead_lettered), (0, 0), "{stats:?}");
    assert!(cluster.is_data_stream("threatbeat-threatintel.misp"));
    assert_eq!(cluster.ids("threatbeat-threatintel.misp"), ids);
}
