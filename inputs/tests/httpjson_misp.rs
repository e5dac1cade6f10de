//! The MISP filesets end to end against the MISP simulator: paging, cursor,
//! restarts. Each Filebeat bug of reference §7 that concerns the input has a
//! test named after it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::{json, Value};
use threatbeat_core::{InputContext, Publisher};
use threatbeat_test_support::misp::{generate_events, Edit, MispSimulator, API_KEY};
use tokio_util::sync::CancellationToken;

fn misp_vars(misp: &MispSimulator, extra: Value) -> Value {
    let mut vars = json!({"url": misp.url("/events/restSearch"), "api_token": API_KEY, "limit": 7});
    for (key, value) in extra.as_object().unwrap() {
        vars[key] = value.clone();
    }
    vars
}

fn counts(events: &[threatbeat_core::Event]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events {
        *counts.entry(attribute_uuid(event)).or_insert(0) += 1;
    }
    counts
}

/// 60 events x 5 attributes, stamped over the last hour.
fn recent_events() -> Vec<Value> {
    generate_events(60, 5, Utc::now().timestamp() - 3600)
}

#[tokio::test]
async fn many_pages_fetch_every_attribute_exactly_once_with_short_pages_mid_run() {
    let misp = MispSimulator::start(recent_events()).await;
    // MISP drops blocked items after cutting a page: pages 2 and 5 come back short.
    let stored = misp.events();
    let hidden: Vec<String> = [9, 10, 30]
        .iter()
        .map(|i| stored[*i]["uuid"].as_str().unwrap().to_owned())
        .collect();
    misp.hide_events_after_paging(hidden.clone());
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({})));
    run_once(&config, &pipeline).await.unwrap();

    let expected: Vec<String> = stored
        .iter()
        .filter(|event| !hidden.contains(&event["uuid"].as_str().unwrap().to_owned()))
        .flat_map(|event| all_attribute_uuids(std::slice::from_ref(event)))
        .collect();
    let seen = counts(&pipeline.events());
    assert_eq!(seen.len(), expected.len(), "every visible attribute arrives");
    assert!(
        seen.values().all(|count| *count == 1),
        "no attribute twice: {seen:?}"
    );
    assert!(expected.iter().all(|uuid| seen.contains_key(uuid)));

    let searches = misp.searches();
    let pages: Vec<u64> = searches
        .iter()
        .map(|r| r.body["page"].as_u64().unwrap())
        .collect();
    assert_eq!(
        pages,
        (1..=10).collect::<Vec<_>>(),
        "60 events / 7 = 9 pages, then one empty page"
    );
    let timestamps: HashSet<String> = searches.iter().map(|r| r.body["timestamp"].to_string()).collect();
    assert_eq!(
        timestamps.len(),
        1,
        "the same timestamp on every page: {timestamps:?}"
    );
    assert!(
        searches[1].items < 7 && searches[4].items < 7,
        "short pages mid-run did not stop paging"
    );
    assert_eq!(
        searches.last().unwrap().items,
        0,
        "the first empty page ends the poll"
    );
    assert_eq!(searches[0].body["order"], "Event.timestamp asc");
}

#[tokio::test]
async fn filebeat_bug_1_paging_stops_at_the_first_empty_page() {
    let misp = MispSimulator::start(generate_events(3, 2, Utc::now().timestamp() - 60)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"limit": 2})));
    run_once(&config, &pipeline).await.unwrap();
    let items: Vec<usize> = misp.searches().iter().map(|r| r.items).collect();
    assert_eq!(
        items,
        vec![2, 1, 0],
        "page 2 is short, page 3 is empty and the last one asked"
    );
}

#[tokio::test]
async fn filebeat_bug_2_attributes_stream_stops_on_an_empty_attribute_list() {
    let misp = MispSimulator::start(generate_events(4, 5, Utc::now().timestamp() - 60)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp_attributes", None);
    let vars = json!({"url": misp.url("/attributes/restSearch"), "api_token": API_KEY, "limit": 6});
    let config = manifest_input("threatintel/misp_attributes", vars);
    run_once(&config, &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), 20);
    let searches = misp.searches();
    assert_eq!(
        searches.len(),
        5,
        "4 pages of attributes and one empty page, no endless loop"
    );
    assert_eq!(searches[0].body["order"], "Attribute.timestamp asc");
    assert!(counts(&pipeline.events()).values().all(|count| *count == 1));
}

#[tokio::test]
async fn filebeat_bug_3_pages_keep_the_poll_timestamp_and_the_cursor_takes_the_newest_event() {
    let start = Utc::now().timestamp() - 600;
    let misp = MispSimulator::start(generate_events(10, 1, start)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"limit": 3})));
    run_once(&config, &pipeline).await.unwrap();
    let searches = misp.searches();
    assert!(searches
        .windows(2)
        .all(|pair| pair[0].body["timestamp"] == pair[1].body["timestamp"]));
    assert_eq!(
        pipeline.stored_cursor(),
        Some(json!({"timestamp": start + 9})),
        "newest Event.timestamp"
    );
    // The cursor moved page by page, each time after the page was durable
    // (the empty last page only says the poll ended: `Batch::ends_poll`).
    let cursors: Vec<i64> = pipeline
        .collected
        .lock()
        .unwrap()
        .batches
        .iter()
        .filter_map(|(_, cursor)| cursor.as_ref())
        .map(|cursor| cursor["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(cursors, vec![start + 2, start + 5, start + 8, start + 9]);
}

#[tokio::test]
async fn a_page_larger_than_a_slice_is_published_in_slices_with_the_cursor_on_the_last() {
    let start = Utc::now().timestamp() - 600;
    // One page of 120 events x 10 attributes = 1 200 records: slices of 500, 500, 200.
    let misp = MispSimulator::start(generate_events(120, 10, start)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"limit": 500})));
    run_once(&config, &pipeline).await.unwrap();
    let batches = pipeline.collected.lock().unwrap().batches.clone();
    let sizes: Vec<usize> = batches.iter().map(|(events, _)| *events).collect();
    // Then the empty last page, which only says the poll ended (`Batch::ends_poll`).
    assert_eq!(sizes, [500, 500, 200, 0]);
    assert!(batches[..2].iter().all(|(_, cursor)| cursor.is_none()));
    assert_eq!(batches[2].1, Some(json!({"timestamp": start + 119})));
    assert_eq!(batches[3].1, None);
    // The early slices may wait for the last one to be made durable: the
    // page is fetched again until its cursor is stored.
    let fetched_again = pipeline.collected.lock().unwrap().fetched_again.clone();
    assert_eq!(fetched_again, [true, true, false, false]);
    assert_eq!(pipeline.event_count(), 1200);
}

#[tokio::test]
async fn filebeat_bug_4_the_first_timestamp_is_epoch_seconds_from_first_interval() {
    let misp = MispSimulator::start(Vec::new()).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input(
        "threatintel/misp",
        misp_vars(&misp, json!({"first_interval": "48h"})),
    );
    run_once(&config, &pipeline).await.unwrap();
    let sent = misp.searches()[0].body["timestamp"]
        .as_i64()
        .expect("an integer, not UnixDate text");
    let expected = Utc::now().timestamp() - 48 * 3600;
    assert!(
        (sent - expected).abs() < 30,
        "sent {sent}, expected about {expected}"
    );
}

#[tokio::test]
async fn filebeat_bug_5_page_one_is_requested_once() {
    let misp = MispSimulator::start(generate_events(5, 1, Utc::now().timestamp() - 60)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"limit": 2})));
    run_once(&config, &pipeline).await.unwrap();
    let pages: Vec<u64> = misp
        .searches()
        .iter()
        .map(|r| r.body["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn filebeat_bug_6_first_interval_zero_still_ingests_later_events() {
    // Old events only: with first_interval 0 the first poll finds nothing.
    let misp = MispSimulator::start(generate_events(3, 1, 1_600_000_000)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = manifest_input(
        "threatintel/misp",
        misp_vars(&misp, json!({"first_interval": "0", "interval": "200ms"})),
    );
    fast_retries(&mut config, 2);
    let shutdown = CancellationToken::new();
    let input = build_input(&config);
    let task = tokio::spawn(input.run(pipeline.context(false, shutdown.clone())));
    assert!(wait_until(20, || misp.searches().len() >= 2).await);
    assert_eq!(pipeline.event_count(), 0);
    let first_window = misp.searches()[0].body["timestamp"].as_i64().unwrap();
    assert!(
        pipeline.stored_cursor().is_some(),
        "an empty poll stores its window start"
    );
    // Not "now" again on every poll: the window start stays put until data arrives.
    assert_eq!(
        misp.searches()[1].body["timestamp"].as_i64().unwrap(),
        first_window
    );
    misp.add_events(vec![json!({"Event": {"uuid": "new-event", "info": "fresh", "timestamp": (first_window + 1).to_string(),
        "Attribute": [{"uuid": "fresh-attribute", "type": "ip-dst", "value": "203.0.113.9", "to_ids": true}]}})]);
    assert!(
        wait_until(20, || pipeline.event_count() == 1).await,
        "the new event is ingested"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(attribute_uuid(&pipeline.events()[0]), "fresh-attribute");
}

#[tokio::test]
async fn filebeat_bug_7_the_empty_final_page_emits_no_document() {
    let misp = MispSimulator::start(generate_events(2, 1, Utc::now().timestamp() - 60)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({})));
    run_once(&config, &pipeline).await.unwrap();
    let events = pipeline.events();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|event| event.fields.contains_key("Event") && !event.fields.contains_key("response")));
}

#[tokio::test]
async fn restart_after_a_completed_poll_asks_only_for_what_changed() {
    let start = Utc::now().timestamp() - 600;
    let misp = MispSimulator::start(generate_events(5, 2, start)).await;
    let data = tempfile::tempdir().unwrap();
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({})));
    {
        let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
        run_once(&config, &pipeline).await.unwrap();
        assert_eq!(pipeline.event_count(), 10);
    }
    misp.clear_log();
    let mut newer = generate_events(7, 2, start + 100);
    newer.drain(..5); // keep 2 new events (uuids 5 and 6), stamped start+105 and start+106
    misp.add_events(newer);
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    assert_eq!(pipeline.stored_cursor(), Some(json!({"timestamp": start + 4})));
    run_once(&config, &pipeline).await.unwrap();
    let searches = misp.searches();
    assert_eq!(
        searches[0].body["timestamp"],
        json!(start + 4),
        "asks from the persisted cursor"
    );
    // The boundary event (timestamp == cursor) comes again (MISP bounds are inclusive; ids dedupe it), plus the 2 new ones.
    assert_eq!(pipeline.event_count(), 6);
    assert_eq!(pipeline.stored_cursor(), Some(json!({"timestamp": start + 106})));
}

#[tokio::test]
async fn stopping_mid_pagination_and_restarting_from_the_stored_cursor_loses_nothing() {
    let misp = MispSimulator::start(recent_events()).await;
    let all: HashSet<String> = all_attribute_uuids(&misp.events()).into_iter().collect();
    let data = tempfile::tempdir().unwrap();
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({})));
    let mut delivered: HashSet<String> = HashSet::new();
    {
        // The pipeline accepts 3 pages, then refuses: the input's task is then aborted mid-pagination.
        let pipeline = TestPipeline::new(data.path(), "threatintel/misp", Some(3));
        let input = build_input(&config);
        let task = tokio::spawn(input.run(pipeline.context(false, CancellationToken::new())));
        assert!(wait_until(20, || pipeline.collected.lock().unwrap().batches.len() == 3).await);
        task.abort();
        let _ = task.await;
        delivered.extend(pipeline.events().iter().map(attribute_uuid));
        assert!(delivered.len() < all.len(), "stopped before the end");
    }
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    run_once(&config, &pipeline).await.unwrap();
    delivered.extend(pipeline.events().iter().map(attribute_uuid));
    assert_eq!(delivered, all, "nothing lost across the stop");
}

#[tokio::test]
async fn misp_filters_var_reaches_the_request_body() {
    let mut events = generate_events(4, 4, Utc::now().timestamp() - 60);
    events[1]["Tag"] = json!([{"name": "tlp:red"}]);
    let misp = MispSimulator::start(events).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp_attributes", None);
    let vars = json!({"url": misp.url("/attributes/restSearch"), "api_token": API_KEY,
        "filters": {"type": ["ip-dst", "domain"], "tags": ["!tlp:red"], "to_ids": 1}});
    run_once(&manifest_input("threatintel/misp_attributes", vars), &pipeline)
        .await
        .unwrap();
    let body = &misp.searches()[0].body;
    assert_eq!(body["type"], json!(["ip-dst", "domain"]));
    assert_eq!(body["tags"], json!(["!tlp:red"]));
    let events = pipeline.events();
    assert_eq!(events.len(), 6, "3 events not tagged tlp:red x 2 matching types");
    assert!(events
        .iter()
        .all(|e| matches!(e.fields["type"].as_str(), Some("ip-dst" | "domain"))));
}

#[tokio::test]
async fn real_fixture_events_split_into_one_record_per_attribute() {
    let misp = MispSimulator::start_with_fixtures().await;
    let expected = misp.attribute_count();
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    // Fixture events are years old: ask from the beginning.
    let mut config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"limit": 10})));
    override_setting(&mut config, "request.transforms.4.set.default", json!("1"));
    run_once(&config, &pipeline).await.unwrap();
    let events = pipeline.events();
    assert_eq!(events.len(), expected, "5,389 attributes, no cross product");
    let object_records = events
        .iter()
        .filter(|e| e.fields["Event"].get("Object").is_some())
        .count();
    assert_eq!(
        object_records, 1554,
        "attributes inside objects carry their object"
    );
    assert!(events
        .iter()
        .all(|e| e.fields["Event"].get("Attribute").is_none_or(Value::is_object)));
}

#[tokio::test]
async fn offset_paging_can_skip_an_item_edited_mid_pass_and_keyset_paging_does_not() {
    let start = Utc::now().timestamp() - 600;
    let events = generate_events(12, 1, start);
    let edited_uuid = "00000001-0000-4000-8000-000000000001".to_owned(); // event 1, on page 1
    for paging in ["offset", "keyset"] {
        let misp = MispSimulator::start(events.clone()).await;
        // Right after page 1 is answered, event 1 is edited: its timestamp jumps to the end.
        misp.edit_after_request(1, Edit::TouchEvent(edited_uuid.clone(), start + 500));
        let data = tempfile::tempdir().unwrap();
        let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
        let config = manifest_input(
            "threatintel/misp",
            misp_vars(&misp, json!({"limit": 4, "paging": paging})),
        );
        run_once(&config, &pipeline).await.unwrap();
        let seen: HashSet<String> = pipeline
            .events()
            .iter()
            .map(|e| e.fields["Event"]["uuid"].as_str().unwrap().to_owned())
            .collect();
        if paging == "offset" {
            // Offsets shifted by one: event 4 (unchanged, timestamp below the cursor) is never seen.
            assert!(
                !seen.contains("00000001-0000-4000-8000-000000000004"),
                "offset paging skips: {seen:?}"
            );
        } else {
            assert_eq!(seen.len(), 12, "keyset paging sees every event: {seen:?}");
            let searches = misp.searches();
            assert!(
                searches.iter().all(|r| r.body["timestamp"].is_array()),
                "[lower, upper] ranges"
            );
            let uppers: HashSet<String> = searches
                .iter()
                .map(|r| r.body["timestamp"][1].to_string())
                .collect();
            assert_eq!(uppers.len(), 1, "one upper bound for the whole pass");
        }
    }
}

#[tokio::test]
async fn keyset_paging_pages_within_one_timestamp_and_drops_boundary_duplicates() {
    // 9 events sharing one timestamp, then 3 more: page is only used inside the shared second.
    let start = Utc::now().timestamp() - 600;
    let mut events = generate_events(12, 1, start);
    for event in events.iter_mut().take(9) {
        event["timestamp"] = json!(start.to_string());
    }
    let misp = MispSimulator::start(events).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input(
        "threatintel/misp",
        misp_vars(
            &misp,
            json!({"limit": 4, "paging": "keyset", "first_interval": "1h"}),
        ),
    );
    run_once(&config, &pipeline).await.unwrap();
    let seen = counts(&pipeline.events());
    assert_eq!(seen.len(), 12);
    assert!(
        seen.values().all(|count| *count == 1),
        "boundary duplicates dropped: {seen:?}"
    );
    let upper = misp.searches()[0].body["timestamp"][1].as_i64().unwrap();
    assert_eq!(
        pipeline.stored_cursor(),
        Some(json!({"timestamp": upper})),
        "next pass starts at this pass's upper bound"
    );
}

#[tokio::test]
async fn wrong_api_key_is_a_clear_error_without_the_key() {
    let misp = MispSimulator::start(generate_events(1, 1, Utc::now().timestamp())).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let wrong = "WrongKey0123456789abcdefABCDEF0123456789";
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"api_token": wrong})));
    let error = run_once(&config, &pipeline).await.unwrap_err().to_string();
    assert!(
        error.contains("403") && error.contains("Authentication failed"),
        "{error}"
    );
    assert!(!error.contains(wrong));
    assert_eq!(misp.searches().len(), 1, "a 403 is not retried");
}

#[tokio::test]
async fn stop_is_prompt_even_while_waiting_for_the_next_interval() {
    let misp = MispSimulator::start(Vec::new()).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let config = manifest_input("threatintel/misp", misp_vars(&misp, json!({"interval": "1h"})));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(build_input(&config).run(pipeline.context(false, shutdown.clone())));
    assert!(wait_until(20, || !misp.searches().is_empty()).await);
    shutdown.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(finished.is_ok(), "the input stops without waiting an hour");
}

#[tokio::test]
async fn warninglisted_attributes_dropped_after_paging_do_not_end_the_attribute_stream() {
    let misp = MispSimulator::start(generate_events(6, 5, Utc::now().timestamp() - 600)).await;
    let all = all_attribute_uuids(&misp.events());
    // Every attribute on the second page of 6 is warninglisted: MISP returns that page empty-looking short.
    let listed: Vec<String> = all[6..11].to_vec();
    misp.warninglist(listed.clone(), true);
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp_attributes", None);
    let vars = json!({"url": misp.url("/attributes/restSearch"), "api_token": API_KEY, "limit": 6});
    run_once(&manifest_input("threatintel/misp_attributes", vars), &pipeline)
        .await
        .unwrap();
    let seen = counts(&pipeline.events());
    assert_eq!(seen.len(), all.len() - listed.len());
    assert!(seen.values().all(|count| *count == 1));
    assert!(listed.iter().all(|uuid| !seen.contains_key(uuid)));
    let items: Vec<usize> = misp.searches().iter().map(|r| r.items).collect();
    assert_eq!(
        items,
        vec![6, 1, 6, 6, 6, 0],
        "a short page (1 of 6) mid-run, then on to the empty page"
    );
}

/// A pipeline that holds its first batch until `ready` says so, then acks
/// every batch; returns whether `ready` became true within 10 s.
fn holding_pipeline(
    ready: impl Fn() -> bool + Send + Sync + 'static,
) -> (Publisher, tokio::task::JoinHandle<bool>) {
    let (publisher, mut receiver) = Publisher::channel(1);
    let task = tokio::spawn(async move {
        let mut held_until_ready = None;
        while let Some(request) = receiver.recv().await {
            if held_until_ready.is_none() {
                held_until_ready = Some(wait_until(10, &ready).await);
            }
            let _ = request.ack.send(Ok(()));
        }
        held_until_ready.unwrap_or(false)
    });
    (publisher, task)
}

#[tokio::test]
async fn the_next_page_is_requested_while_the_previous_one_is_published() {
    for paging in ["offset", "keyset"] {
        let misp = Arc::new(MispSimulator::start(generate_events(6, 2, Utc::now().timestamp() - 600)).await);
        let searches = Arc::clone(&misp);
        let (publisher, pipeline) = holding_pipeline(move || searches.searches().len() >= 2);
        let config = manifest_input(
            "threatintel/misp",
            misp_vars(
                &misp,
                json!({"limit": 2, "paging": paging, "first_interval": "1h"}),
            ),
        );
        let context = InputContext {
            id: "threatintel/misp".into(),
            publisher,
            cursor: None,
            shutdown: CancellationToken::new(),
            run_once: true,
        };
        tokio::time::timeout(Duration::from_secs(60), build_input(&config).run(context))
            .await
            .expect("the pass ends")
            .unwrap();
        assert!(
            pipeline.await.unwrap(),
            "{paging}: page 2 was requested while page 1 waited for its acknowledgement"
        );
    }
}

/// A keyset page where one event lacks its `timestamp`: that event is set
/// aside in the dead-letter file, the others are delivered and the cursor
/// moves (it used to fail the poll on every try).
#[tokio::test]
async fn a_keyset_item_without_its_sort_key_is_set_aside() {
    use threatbeat_test_support::hostile::{Canned, HostileServer};
    let start = Utc::now().timestamp() - 600;
    let mut events = generate_events(3, 1, start);
    events[1].as_object_mut().unwrap().remove("timestamp");
    let page: Vec<Value> = events.iter().map(|event| json!({"Event": event})).collect();
    let server = HostileServer::start().await;
    server.answer_in_turn(
        "/events/restSearch",
        vec![
            Canned::json(json!({"response": page})),
            Canned::json(json!({"response": []})),
        ],
    );
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let vars = json!({"url": server.url("/events/restSearch"), "api_token": API_KEY, "limit": 10, "paging": "keyset", "first_interval": "1h"});
    run_once(&manifest_input("threatintel/misp", vars), &pipeline)
        .await
        .unwrap();
    assert_eq!(counts(&pipeline.events()).len(), 2);
    assert!(pipeline.stored_cursor().is_some());
    let dead = std::fs::read_to_string(data.path().join("dead_letter/threatintel_misp.ndjson")).unwrap();
    assert!(dead.contains("has no numeric"), "{dead}");
}
