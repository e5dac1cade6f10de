//! `threatintel/misp_feed` end to end: the real binary, the fileset's
//! httpjson input with its request chain (manifest → one request per changed
//! event) and the MISP feed simulator (`threatbeat_test_support::misp_feed`)
//! on loopback.
//!
//! * the real MISP events served as a feed give, per attribute, the very
//!   documents `threatintel/misp` makes of the same events (read from the
//!   same feed on disk by its file input), ids included;
//! * a restart fetches only the event whose manifest timestamp changed, and
//!   its new attribute arrives; nothing is repeated under a new id;
//! * a 401, a truncated or HTML manifest, or one event file failing fail the
//!   poll with the fileset and the URL; the cursor stays on the last event
//!   delivered and the next run fetches exactly what was missed;
//! * the current state holds one document per valid attribute.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use serde_json::{json, Value};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::data::misp_events_dir;
use threatbeat_test_support::golden::{compare, history_documents};
use threatbeat_test_support::misp::{generate_events, load_events};
use threatbeat_test_support::misp_feed::{Fault, FeedFile, MispFeedSimulator};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

const PIPELINE: &str = "threatintel/misp_feed";
const HISTORY: &str = "logs-ti_threatbeat.misp_feed-default";
const LATEST: &str = "logs-ti_threatbeat_latest.misp_feed";

/// The bundled real feed (`examples/misp-feed`: eight ESET events).
fn example_events() -> Vec<Value> {
    load_events(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/misp-feed")).unwrap()
}

/// A home whose only pipeline is `threatintel/misp_feed` on `feed`, looking
/// back far enough for every event; `extra` lines go into the fileset entry.
fn home(feed: &MispFeedSimulator, extra: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    misp_feed:
      var.url: {url}
      var.first_interval: 20000d
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
"#,
            url = feed.base_url(),
        ),
    );
    home
}

fn attribute_uuid(document: &Value) -> String {
    document["misp"]["attribute"]["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn ids(documents: &[Value]) -> BTreeSet<String> {
    documents
        .iter()
        .map(|document| {
            document["@metadata"]["_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Every attribute uuid of `events` (plain and inside objects).
fn attribute_uuids(events: &[Value]) -> BTreeSet<String> {
    let mut uuids = BTreeSet::new();
    for event in events {
        let plain = event["Attribute"].as_array().into_iter().flatten();
        let in_objects = event["Object"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|object| object["Attribute"].as_array().into_iter().flatten());
        for attribute in plain.chain(in_objects) {
            uuids.insert(attribute["uuid"].as_str().unwrap().to_owned());
        }
    }
    uuids
}

/// The (manifest timestamp, uuid) cursor of `event`.
fn cursor_of(event: &Value) -> Value {
    json!({"timestamp": event["timestamp"].as_str().unwrap().parse::<i64>().unwrap(), "uuid": event["uuid"]})
}

/// The cursor after every event of `events` was delivered: the newest by
/// (timestamp, uuid).
fn newest(events: &[Value]) -> Value {
    let event = events
        .iter()
        .max_by_key(|event| {
            (
                event["timestamp"].as_str().unwrap().parse::<i64>().unwrap(),
                event["uuid"].as_str().unwrap().to_owned(),
            )
        })
        .unwrap();
    cursor_of(event)
}

/// The current state holds one document per attribute of `valid`, nothing else.
fn assert_current_state(documents: &[Value], valid: &BTreeSet<String>) {
    shared_assert_current_state(documents, HISTORY, LATEST, attribute_uuid, valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_events_served_as_a_feed_give_the_documents_threatintel_misp_gives() {
    let mut events = load_events(&misp_events_dir()).unwrap();
    events.extend(example_events());
    let feed = MispFeedSimulator::start(events.clone()).await;
    let home = home(&feed, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let ours = history_documents(home.documents());

    // The reference: threatintel/misp's file input over the same feed on disk.
    let reference_home = AgentHome::new(binary());
    let folder = reference_home.path("feed");
    feed.write_folder(&folder).unwrap();
    reference_home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data\nthreatbeat.modules:\n  - module: threatintel\n    misp:\n      var.input: file\n      var.paths: [\"{}\"]\noutput.file: {{path: out, filename: docs}}\n",
            folder.display()
        ),
    );
    let output = reference_home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let reference = history_documents(reference_home.documents());

    let held: Vec<Value> = feed.uuids().iter().filter_map(|uuid| feed.event(uuid)).collect();
    // The bundled ESET events are among the 73 real ones (`eset/sshdoor`).
    let distinct: BTreeSet<&str> = events.iter().filter_map(|event| event["uuid"].as_str()).collect();
    assert_eq!((held.len(), distinct.len()), (73, 73));
    assert_eq!(feed.event_requests().len(), 73, "one request per event file");
    assert!(!reference.is_empty());
    assert_eq!(ours.len(), reference.len(), "one document per attribute, as misp");
    assert_eq!(ids(&ours), ids(&reference), "the same document ids");
    assert_eq!(unique_ids(&ours), ours.len(), "no document twice");
    let delivered: BTreeSet<String> = ours.iter().map(attribute_uuid).collect();
    assert_eq!(
        delivered,
        attribute_uuids(&held),
        "every attribute of every event"
    );
    // Same mapping; only the index (the fileset's own data stream) differs.
    // The ids are equal, so both sides sorted by id pair up document by document.
    let by_id = |documents: &[Value]| {
        let mut sorted = documents.to_vec();
        sorted.sort_by(|a, b| {
            a["@metadata"]["_id"]
                .to_string()
                .cmp(&b["@metadata"]["_id"].to_string())
        });
        sorted
    };
    let report = compare(
        "misp_feed vs misp",
        &by_id(&ours),
        &by_id(&reference),
        &["@metadata.index"],
    );
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert!(in_index(&ours, HISTORY).len() == ours.len());
    assert!(ours
        .iter()
        .all(|document| document["event"]["dataset"] == "threatintel.misp"));
    assert_eq!(home.cursor(PIPELINE), Some(newest(&held)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fetches_only_the_changed_event_and_repeats_nothing() {
    let events = example_events();
    let feed = MispFeedSimulator::start(events.clone()).await;
    let home = home(&feed, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let first = in_index(&home.documents(), HISTORY);
    assert_eq!(first.len(), attribute_uuids(&events).len());
    assert_eq!(feed.event_requests().len(), 8);
    assert_eq!(home.cursor(PIPELINE), Some(newest(&events)));

    // A new attribute in one event: MISP stamps the event, the manifest follows.
    let changed = events[2]["uuid"].as_str().unwrap().to_owned();
    let now = Utc::now().timestamp();
    feed.add_attribute(
        &changed,
        json!({"uuid": "5bbe0000-0000-4000-8000-00000000a001", "type": "ip-dst", "category": "Network activity",
               "to_ids": true, "value": "203.0.113.77", "comment": "", "deleted": false, "distribution": "5",
               "object_relation": null, "disable_correlation": false, "sharing_group_id": "0"}),
        now,
    );
    feed.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(
        feed.event_requests(),
        std::slice::from_ref(&changed),
        "only the changed event is fetched"
    );
    let all = home.documents();
    let history = in_index(&all, HISTORY);
    let second = &history[first.len()..];
    let changed_event = feed.event(&changed).unwrap();
    assert_eq!(
        second.len(),
        attribute_uuids(std::slice::from_ref(&changed_event)).len()
    );
    assert!(second
        .iter()
        .any(|document| document["threat"]["indicator"]["ip"] == "203.0.113.77"));
    // The event's old attributes come again with the ids they had: nothing new in Elasticsearch.
    assert_eq!(
        ids(&history).len(),
        first.len() + 1,
        "one new document, nothing else"
    );
    assert_eq!(
        home.cursor(PIPELINE),
        Some(json!({"timestamp": now, "uuid": changed}))
    );
    // Only the new attribute is recent enough to be a current indicator.
    assert_current_state(
        &all,
        &BTreeSet::from(["5bbe0000-0000-4000-8000-00000000a001".to_owned()]),
    );

    // Nothing changed: the manifest only.
    feed.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(feed.event_requests().is_empty());
    assert_eq!(feed.requests().len(), 1);
    assert_eq!(home.documents().len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_feed_with_a_wrong_password_fails_with_the_fileset_and_url() {
    let events = example_events();
    let feed = MispFeedSimulator::start(events.clone()).await;
    feed.require_basic_auth("reader", "s3cret-feed-pass");
    let wrong = home(
        &feed,
        "      var.username: reader\n      var.password: not-the-password",
    );
    let output = wrong.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains(PIPELINE), "{log}");
    assert!(log.contains(&feed.file_url(&FeedFile::Manifest)), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password is never logged:\n{log}"
    );
    assert!(wrong.documents().is_empty());
    assert!(wrong.cursor(PIPELINE).is_none());
    assert_eq!(feed.requests().len(), 1, "a 401 is not retried");

    let right = home(
        &feed,
        "      var.username: reader\n      var.password: s3cret-feed-pass",
    );
    let output = right.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(
        in_index(&right.documents(), HISTORY).len(),
        attribute_uuids(&events).len()
    );
    assert!(feed.requests().iter().skip(1).all(|request| request.authorized));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_manifest_keeps_the_cursor_and_the_next_run_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage, Fault::InternalError] {
        let events = example_events();
        let feed = MispFeedSimulator::start(events.clone()).await;
        let home = home(&feed, "");
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let before = home.cursor(PIPELINE);
        let delivered = home.documents().len();
        let now = Utc::now().timestamp();
        let touched = events[5]["uuid"].as_str().unwrap().to_owned();
        feed.touch_event(&touched, now);

        feed.set_fault(FeedFile::Manifest, fault.clone());
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains(PIPELINE), "{fault:?}:\n{log}");
        assert!(
            log.contains(&feed.file_url(&FeedFile::Manifest)),
            "{fault:?}:\n{log}"
        );
        assert_eq!(home.cursor(PIPELINE), before, "{fault:?}");
        assert_eq!(home.documents().len(), delivered, "{fault:?}");

        feed.clear_faults();
        feed.clear_log();
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        assert_eq!(feed.event_requests(), std::slice::from_ref(&touched), "{fault:?}");
        assert_eq!(
            home.cursor(PIPELINE),
            Some(json!({"timestamp": now, "uuid": touched}))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_file_failing_midway_keeps_the_cursor_on_the_last_delivered_event() {
    for fault in [Fault::InternalError, Fault::TruncatedJson, Fault::HtmlPage] {
        let events = example_events();
        let feed = MispFeedSimulator::start(events.clone()).await;
        let home = home(&feed, "");
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let first = in_index(&home.documents(), HISTORY);

        // Three events change, one second apart; the middle one's file fails.
        let now = Utc::now().timestamp();
        let changed: Vec<String> = [1, 4, 6]
            .iter()
            .map(|index| events[*index]["uuid"].as_str().unwrap().to_owned())
            .collect();
        for (offset, uuid) in changed.iter().enumerate() {
            feed.touch_event(uuid, now + offset as i64);
        }
        feed.set_fault(FeedFile::Event(changed[1].clone()), fault.clone());
        feed.clear_log();
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}:\n{log}");
        assert!(log.contains(PIPELINE), "{fault:?}:\n{log}");
        let failing_url = feed.file_url(&FeedFile::Event(changed[1].clone()));
        assert!(
            log.contains(&failing_url),
            "{fault:?}: names the event file:\n{log}"
        );
        assert_eq!(
            home.cursor(PIPELINE),
            Some(json!({"timestamp": now, "uuid": changed[0]})),
            "{fault:?}: the cursor stays on the last event delivered"
        );
        let after_failure = in_index(&home.documents(), HISTORY);
        let first_changed = feed.event(&changed[0]).unwrap();
        assert_eq!(
            after_failure.len() - first.len(),
            attribute_uuids(&[first_changed]).len(),
            "{fault:?}: the event before the failure was delivered"
        );

        feed.clear_faults();
        feed.clear_log();
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        assert_eq!(
            feed.event_requests(),
            changed[1..],
            "{fault:?}: what was missed, nothing more"
        );
        let history = in_index(&home.documents(), HISTORY);
        let rest: Vec<Value> = changed[1..].iter().filter_map(|uuid| feed.event(uuid)).collect();
        assert_eq!(
            history.len() - after_failure.len(),
            attribute_uuids(&rest).len(),
            "{fault:?}"
        );
        assert_eq!(
            ids(&history),
            ids(&first),
            "{fault:?}: unchanged attributes keep their ids"
        );
        assert_eq!(
            home.cursor(PIPELINE),
            Some(json!({"timestamp": now + 2, "uuid": changed[2]}))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_state_holds_one_document_per_valid_attribute() {
    let start = Utc::now().timestamp() - 600;
    let mut fresh = generate_events(3, 4, start);
    // Per event: the 2nd attribute is not for detection, the 3rd was deleted.
    for event in &mut fresh {
        event["Attribute"][1]["to_ids"] = json!(false);
        event["Attribute"][2]["deleted"] = json!(true);
    }
    let valid: BTreeSet<String> = fresh
        .iter()
        .flat_map(|event| event["Attribute"].as_array().unwrap().iter())
        .filter(|attribute| attribute["to_ids"] == true && attribute["deleted"] == false)
        .map(|attribute| attribute["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(valid.len(), 6);
    let mut events = example_events();
    events.extend(fresh.clone());
    let feed = MispFeedSimulator::start(events).await;
    let home = home(&feed, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    // The bundled events are from 2018: expired, history only.
    assert_current_state(&all, &valid);
    assert_eq!(
        in_index(&all, LATEST).len(),
        6,
        "each valid attribute written once"
    );
}
