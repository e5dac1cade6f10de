//! `index`, `update` and `delete` through the Elasticsearch output into the
//! simulator: the final state, the per-item outcomes and their counters,
//! per-document order under 429s and concurrent workers, and the same
//! events through the disk queue.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Event, OpType, Origin, Output};
use threatbeat_outputs::elasticsearch::StatsSnapshot;
use threatbeat_outputs::queue::build_queued_output;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;

use common::output;

const LATEST: &str = "logs-ti_threatbeat_latest.misp";

fn op(op: OpType, id: &str, fields: Value) -> Event {
    let mut event = Event::from_value(fields);
    event.set_id(id);
    event.set_index(LATEST);
    event.set_op_type(op);
    event
}

fn indicator(n: usize, timestamp: &str) -> Value {
    json!({
        "@timestamp": timestamp,
        "event": {"kind": "enrichment", "category": ["threat"], "type": ["indicator"], "module": "threatintel"},
        "threat": {"indicator": {"type": "ipv4-addr", "ip": format!("10.0.{}.{}", n / 256, n % 256)}},
        "misp": {"attribute": {"uuid": format!("uuid-{n}")}}
    })
}

fn refresh(timestamp: &str) -> Value {
    json!({"@timestamp": timestamp})
}

#[tokio::test]
async fn index_update_delete_leave_the_final_state() {
    let cluster = ElasticsearchSimulator::start().await;
    let mut output = output(json!({"hosts": [cluster.url()]}));
    output
        .publish_events(vec![
            op(OpType::Index, "a", indicator(1, "2026-01-01T00:00:00Z")),
            op(OpType::Index, "b", indicator(2, "2026-01-01T00:00:00Z")),
            op(OpType::Index, "c", indicator(3, "2026-01-01T00:00:00Z")),
        ])
        .await
        .unwrap();
    // One batch: a replacement, a refresh, a delete, on distinct documents.
    let mut replaced = indicator(1, "2026-01-05T00:00:00Z");
    replaced["threat"]["indicator"]["ip"] = json!("192.0.2.1");
    output
        .publish_events(vec![
            op(OpType::Index, "a", replaced.clone()),
            op(OpType::Update, "b", refresh("2026-01-20T00:00:00Z")),
            op(OpType::Delete, "c", json!({})),
        ])
        .await
        .unwrap();
    assert_eq!(cluster.document(LATEST, "a"), Some(replaced));
    let mut refreshed = indicator(2, "2026-01-20T00:00:00Z");
    refreshed["@timestamp"] = json!("2026-01-20T00:00:00Z");
    assert_eq!(
        cluster.document(LATEST, "b"),
        Some(refreshed),
        "the update merged only @timestamp"
    );
    assert_eq!(cluster.document(LATEST, "c"), None);
    assert_eq!(cluster.document_count(LATEST), 2);
    assert_eq!(
        (
            cluster.document_version(LATEST, "a"),
            cluster.document_version(LATEST, "b"),
            cluster.document_version(LATEST, "c")
        ),
        (2, 2, 2)
    );
    let stats = output.stats().snapshot();
    assert_eq!(
        stats,
        StatsSnapshot {
            acked: 6,
            bulk_requests: 2,
            bytes_written: stats.bytes_written,
            ..StatsSnapshot::default()
        }
    );
}

#[tokio::test]
async fn deleting_what_is_gone_is_done_and_counted_apart() {
    let cluster = ElasticsearchSimulator::start().await;
    let mut output = output(json!({"hosts": [cluster.url()]}));
    // The index does not exist yet (a delete never creates it), then the
    // document does not: both are "already gone".
    output
        .publish_events(vec![op(OpType::Delete, "x", json!({}))])
        .await
        .unwrap();
    assert!(!cluster.indices().contains(&LATEST.to_owned()));
    output
        .publish_events(vec![
            op(OpType::Index, "a", indicator(1, "2026-01-01T00:00:00Z")),
            op(OpType::Delete, "a", json!({})),
            op(OpType::Delete, "a", json!({})),
            op(OpType::Delete, "never", json!({})),
        ])
        .await
        .unwrap();
    let stats = output.stats().snapshot();
    assert_eq!(
        (stats.acked, stats.already_deleted, stats.dropped, stats.retried),
        (2, 3, 0, 0),
        "{stats:?}"
    );
    assert_eq!(cluster.document_count(LATEST), 0);
}

#[tokio::test]
async fn an_update_of_a_missing_document_fails_for_good_unless_upserted() {
    let cluster = ElasticsearchSimulator::start().await;
    // Even with a dead-letter index, a lone partial document is not kept.
    let mut output = output(json!({
        "hosts": [cluster.url()],
        "non_indexable_policy": {"dead_letter_index": {"index": "threatbeat-dead-letter"}}
    }));
    output
        .publish_events(vec![op(
            OpType::Index,
            "other",
            indicator(0, "2026-01-01T00:00:00Z"),
        )])
        .await
        .unwrap();
    let mut upsert = op(OpType::Update, "upserted", indicator(7, "2026-01-03T00:00:00Z"));
    upsert.metadata.insert("doc_as_upsert".into(), json!(true));
    output
        .publish_events(vec![
            op(OpType::Update, "missing", refresh("2026-01-03T00:00:00Z")),
            upsert,
        ])
        .await
        .unwrap();
    let stats = output.stats().snapshot();
    assert_eq!(
        (
            stats.acked,
            stats.update_missing,
            stats.dead_lettered,
            stats.dropped,
            stats.retried
        ),
        (2, 1, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(cluster.document(LATEST, "missing"), None);
    assert_eq!(
        cluster.document(LATEST, "upserted"),
        Some(indicator(7, "2026-01-03T00:00:00Z"))
    );
    assert_eq!(cluster.document_count("threatbeat-dead-letter"), 0);
}

/// Per document: index v1, update, and for every third one a delete, all in
/// one publish, through two workers, small batches and 30 % per-item 429s.
/// Order per document must hold, or a retried `index` would land after its
/// `update` (losing the refresh) or after its `delete` (resurrecting it).
fn interleaved_lifecycle(count: usize) -> (Vec<Event>, Vec<(String, Option<Value>)>) {
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for n in 0..count {
        events.push(op(
            OpType::Index,
            &format!("d{n}"),
            indicator(n, "2026-01-01T00:00:00Z"),
        ));
    }
    for n in 0..count {
        events.push(op(
            OpType::Update,
            &format!("d{n}"),
            refresh("2026-01-25T00:00:00Z"),
        ));
        if n % 3 == 0 {
            events.push(op(OpType::Delete, &format!("d{n}"), json!({})));
        }
    }
    for n in 0..count {
        let state = (n % 3 != 0).then(|| indicator(n, "2026-01-25T00:00:00Z"));
        expected.push((format!("d{n}"), state));
    }
    (events, expected)
}

#[tokio::test]
async fn per_document_order_holds_under_429s_and_concurrent_workers() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_item_rejection_rate(0.3);
    let mut output = output(json!({"hosts": [cluster.url()], "bulk_max_size": 7, "worker": 2}));
    let (events, expected) = interleaved_lifecycle(60);
    output.publish_events(events).await.unwrap();
    for (id, state) in expected {
        assert_eq!(cluster.document(LATEST, &id), state, "{id}");
    }
    let stats = output.stats().snapshot();
    assert!(stats.too_many > 10, "{stats:?}");
    assert_eq!(
        (
            stats.acked,
            stats.update_missing,
            stats.already_deleted,
            stats.dropped
        ),
        (60 + 60 + 20, 0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn lifecycle_events_through_the_disk_queue() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_item_rejection_rate(0.2);
    let directory = tempfile::tempdir().unwrap();
    let context = BuildContext {
        data_path: directory.path().to_path_buf(),
        config_path: directory.path().to_path_buf(),
        ..BuildContext::default()
    };
    let inner = output(json!({"hosts": [cluster.url()], "bulk_max_size": 10}));
    // Small reads: the events reach the output in several batches, in order.
    let mut queued = build_queued_output(
        &json!({"disk": {"path": directory.path().join("q"), "max_size": "1MB", "segment_size": "64KB",
            "flush": {"timeout": "20ms", "max_events": 16}}}),
        &Origin::named("t").child("queue"),
        Box::new(inner),
        &context,
    )
    .unwrap();
    let (events, expected) = interleaved_lifecycle(30);
    let mut upsert = op(OpType::Update, "u", indicator(99, "2026-01-02T00:00:00Z"));
    upsert.metadata.insert("doc_as_upsert".into(), json!(true));
    for chunk in events.chunks(25) {
        queued.publish_events(chunk.to_vec()).await.unwrap();
    }
    queued.publish_events(vec![upsert]).await.unwrap();
    assert!(queued.wait_until_empty(Duration::from_secs(60)).await);
    for (id, state) in expected {
        assert_eq!(cluster.document(LATEST, &id), state, "{id}");
    }
    assert_eq!(
        cluster.document(LATEST, "u"),
        Some(indicator(99, "2026-01-02T00:00:00Z"))
    );
}

/// The rules' view of the final state: a refreshed indicator stays in the
/// 30-day window, a stale one drops out, a deleted one is gone.
#[tokio::test]
async fn the_rules_see_the_final_state() {
    use chrono::TimeZone;
    use threatbeat_test_support::rules::{visibility_counts, visible_indicators, Rule};
    let cluster = ElasticsearchSimulator::start().await;
    let mut output = output(json!({"hosts": [cluster.url()]}));
    let old = "2026-01-01T00:00:00Z";
    output
        .publish_events(
            (0..3)
                .map(|n| op(OpType::Index, &format!("d{n}"), indicator(n, old)))
                .collect(),
        )
        .await
        .unwrap();
    output
        .publish_events(vec![
            op(OpType::Update, "d0", refresh("2026-02-10T00:00:00Z")),
            op(OpType::Delete, "d2", json!({})),
        ])
        .await
        .unwrap();
    let now = chrono::Utc.with_ymd_and_hms(2026, 2, 15, 12, 0, 0).unwrap();
    let visible = visible_indicators(&cluster, now);
    assert_eq!(
        visible
            .iter()
            .map(|item| (item.index.as_str(), item.id.as_str(), item.rule))
            .collect::<Vec<_>>(),
        [(LATEST, "d0", Rule::Ip)]
    );
    assert_eq!(
        visibility_counts(&visible, "misp.attribute.uuid"),
        [("uuid-0".to_owned(), 1)].into()
    );
}

/// `setup` installs the current-state template once: regular indices (they
/// take `index`/`update`/`delete`), `threat.indicator.ip` as `ip` that
/// ignores malformed values, with a keyword sub-field; a batch holding a
/// CIDR is indexed whole there, and in the data streams too (kept in the
/// keyword sub-field, invisible to the IP rule).
#[tokio::test]
async fn setup_installs_the_current_state_template_and_a_cidr_fails_nothing() {
    use threatbeat_outputs::elasticsearch::{setup, SetupAction, SetupSettings};
    use threatbeat_test_support::rules::{visible_indicators, Rule};
    let cluster = ElasticsearchSimulator::start().await;
    let config = common::output_config(json!({"hosts": [cluster.url()]}));
    let settings = SetupSettings::default();
    let first = setup(&config, &BuildContext::default(), &settings).await.unwrap();
    assert!(
        first.steps.contains(&(
            "index template threatbeat-latest".to_owned(),
            SetupAction::Installed
        )),
        "{first:?}"
    );
    let second = setup(&config, &BuildContext::default(), &settings).await.unwrap();
    assert!(!second.changed_anything(), "{second:?}");
    assert_eq!(cluster.request_count("PUT _index_template"), 2);

    let template = cluster.index_template("threatbeat-latest").unwrap();
    assert_eq!(template["index_patterns"], json!(["logs-ti_threatbeat_latest.*"]));
    assert!(template.get("data_stream").is_none());
    assert!(template["template"]["settings"]["index"]
        .get("lifecycle")
        .is_none());
    let mapped =
        &template["template"]["mappings"]["properties"]["threat"]["properties"]["indicator"]["properties"];
    assert_eq!(
        mapped["ip"],
        json!({"type": "ip", "ignore_malformed": true, "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}})
    );
    assert_eq!(mapped["url"]["properties"]["full"]["type"], "wildcard");
    assert_eq!(mapped["last_seen"]["type"], "date");

    let mut output = output(json!({"hosts": [cluster.url()]}));
    let mut events: Vec<Event> = (0..5)
        .map(|n| {
            op(
                OpType::Index,
                &format!("d{n}"),
                indicator(n, "2026-02-01T00:00:00Z"),
            )
        })
        .collect();
    events[2].fields["threat"]["indicator"]["ip"] = json!("198.51.100.0/24");
    let mut history = events[2].clone();
    history.set_op_type(OpType::Create);
    history.set_index("logs-ti_threatbeat.misp-default");
    events.push(op(OpType::Update, "d2", refresh("2026-02-02T00:00:00Z")));
    output.publish_events(events).await.unwrap();
    assert!(!cluster.is_data_stream(LATEST));
    assert_eq!(
        cluster.document_count(LATEST),
        5,
        "the CIDR document is indexed too"
    );
    assert_eq!(
        cluster.document(LATEST, "d2").unwrap()["@timestamp"],
        "2026-02-02T00:00:00Z",
        "and its update applies"
    );
    let stats = output.stats().snapshot();
    assert_eq!((stats.acked, stats.dropped), (6, 0), "{stats:?}");

    output.publish_events(vec![history]).await.unwrap();
    assert_eq!(
        cluster.document_count("logs-ti_threatbeat.misp-default"),
        1,
        "the data streams keep a CIDR document too"
    );
    assert_eq!(output.stats().snapshot().dropped, 0);

    // The IP rule cannot read a CIDR: four of the five are visible.
    let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 2, 10, 0, 0, 0).unwrap();
    let visible = visible_indicators(&cluster, now);
    assert_eq!(visible.len(), 4);
    assert!(visible
        .iter()
        .all(|item| item.rule == Rule::Ip && item.id != "d2"));
}
