//! Scenarios asserted against the simulator in every test run and against
//! a real cluster in the opt-in suite (`ELASTICSEARCH_URL`).

#![allow(dead_code)]

use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Output};
use threatbeat_outputs::elasticsearch::{check_connection, setup, SetupAction, SetupSettings, WriteAccess};

use super::{indicator_events, output, output_config, Probe};

/// N events → N documents with N distinct ids; the same events again → N
/// duplicates counted, still N documents.
pub async fn exactly_once(connection: Value, probe: &Probe, index: &str) {
    const N: usize = 300;
    let mut settings = connection.clone();
    settings["index"] = json!(index);
    settings["bulk_max_size"] = json!(128);
    let mut first = output(settings.clone());
    first.publish_events(indicator_events(index, N)).await.unwrap();
    let stats = first.stats().snapshot();
    assert_eq!(stats.acked, N as u64, "{stats:?}");
    assert!(
        stats.bulk_requests >= 3,
        "300 events at bulk_max_size 128: {stats:?}"
    );
    assert_eq!(probe.count(index).await, N as u64);
    assert_eq!(probe.ids(index, 10_000).await.len(), N);

    let mut again = output(settings);
    again.publish_events(indicator_events(index, N)).await.unwrap();
    let stats = again.stats().snapshot();
    assert_eq!((stats.acked, stats.duplicates), (0, N as u64), "{stats:?}");
    assert_eq!(probe.count(index).await, N as u64);
}

/// `setup` twice: the second run changes nothing; `test output` reports a
/// version and write access.
pub async fn setup_is_idempotent(connection: Value, template_name: &str, pattern: &str) {
    let config = output_config(connection);
    let mut settings = SetupSettings::default();
    settings.template.name = template_name.to_owned();
    settings.template.patterns = vec![pattern.to_owned()];
    settings.ilm.policy_name = template_name.to_owned();
    settings.latest_template.name = format!("{template_name}-latest");
    settings.latest_template.patterns = vec![format!("{template_name}_latest.*")];
    let context = BuildContext::default();
    let first = setup(&config, &context, &settings).await.unwrap();
    assert!(
        first
            .steps
            .iter()
            .all(|(_, action)| *action == SetupAction::Installed),
        "{first:?}"
    );
    let second = setup(&config, &context, &settings).await.unwrap();
    assert!(
        !second.changed_anything(),
        "second setup changed something: {second:?}"
    );
    assert_eq!(second.steps.len(), 3);

    let report = check_connection(&config, &context).await.unwrap();
    assert!(
        report.version.starts_with(|c: char| c.is_ascii_digit()),
        "{report:?}"
    );
    assert!(
        matches!(
            report.write_access,
            WriteAccess::Allowed | WriteAccess::SecurityDisabled
        ),
        "{report:?}"
    );
}

/// A CIDR in `threat.indicator.ip` (mapped `ip` by our template) is refused
/// and lands in the dead-letter index with its reason; the rest is indexed.
pub async fn mapping_error_is_dead_lettered(
    connection: Value,
    probe: &Probe,
    index: &str,
    dead_letter: &str,
) {
    let mut settings = connection;
    settings["index"] = json!(index);
    settings["non_indexable_policy"] = json!({"dead_letter_index": {"index": dead_letter}});
    let mut events = indicator_events(index, 10);
    events[3].fields["threat"]["indicator"]["ip"] = json!("10.0.0.0/8");
    let mut output = output(settings);
    output.publish_events(events).await.unwrap();
    let stats = output.stats().snapshot();
    assert_eq!(
        (stats.acked, stats.dead_lettered, stats.dropped),
        (9, 1, 0),
        "{stats:?}"
    );
    assert_eq!(probe.count(index).await, 9);
    let records = probe.documents(dead_letter, 10).await;
    assert_eq!(records.len(), 1);
    let (id, record) = &records[0];
    assert_eq!(id, &format!("{index}-3"));
    let error_type = record["error"]["type"].as_str().unwrap();
    assert!(
        error_type == "mapper_parsing_exception" || error_type == "document_parsing_exception",
        "{record}"
    );
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.0.0.0/8"),
        "{record}"
    );
    let original: Value = serde_json::from_str(record["message"].as_str().unwrap()).unwrap();
    assert_eq!(original["threat"]["indicator"]["ip"], "10.0.0.0/8");
}
