//! The IOC lifecycle through the real binary: MISP simulator → threatbeat →
//! Elasticsearch simulator, judged by the project's evaluator of Kibana's
//! prebuilt Indicator Match rules (`test-support/src/rules.rs`): every valid
//! indicator seen exactly once, no expired one, edits replacing, expiry and
//! refresh while the agent runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use threatbeat_test_support::agent::{stderr_text, wait_until_async, AgentHome, PATIENCE};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{fake_uuid, generate_events, Edit, MispSimulator, API_KEY};
use threatbeat_test_support::rules::{visibility_counts, visible_indicators};

const HISTORY: &str = "logs-ti_threatbeat.misp-default";
const LATEST: &str = "logs-ti_threatbeat_latest.misp";
const DAY: i64 = 86_400;

fn now() -> i64 {
    Utc::now().timestamp()
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_default()
}

/// `count` events of `per_event` attributes whose last activity is spread
/// evenly over the `span` seconds before `end` (event `i` is the oldest).
/// Types alternate ip-dst, domain, sha256, url.
fn spread_events(count: usize, per_event: usize, end: i64, span: i64) -> Vec<Value> {
    let mut events = generate_events(count, per_event, 0);
    for (number, event) in events.iter_mut().enumerate() {
        let stamp = end - span + span * number as i64 / count.max(1) as i64;
        event["timestamp"] = json!(stamp.to_string());
        event["publish_timestamp"] = json!(stamp.to_string());
        for attribute in event["Attribute"].as_array_mut().into_iter().flatten() {
            attribute["timestamp"] = json!(stamp.to_string());
        }
    }
    events
}

/// The home of an agent polling `misp` into `cluster`, every `interval`.
fn home(misp: &MispSimulator, cluster: &ElasticsearchSimulator, interval: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
output.elasticsearch:
  hosts: [\"{es}\"]
  backoff.init: 100ms
  backoff.max: 1s
threatbeat.modules:
  - module: threatintel
    misp:
      var.url: {url}
      var.api_token: {API_KEY}
      var.first_interval: 5000h
      var.interval: {interval}
      var.limit: 20
{extra}",
            es = cluster.url(),
            url = misp.url("/events/restSearch"),
        ),
    );
    home
}

/// For every attribute of `misp` by uuid: (type, last activity).
fn attributes(misp: &MispSimulator) -> BTreeMap<String, (String, i64)> {
    let mut attributes = BTreeMap::new();
    for event in misp.events() {
        for attribute in event["Attribute"].as_array().into_iter().flatten() {
            let stamp = attribute["timestamp"]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            attributes.insert(
                attribute["uuid"].as_str().unwrap_or_default().to_owned(),
                (attribute["type"].as_str().unwrap_or_default().to_owned(), stamp),
            );
        }
    }
    attributes
}

/// The attributes a prebuilt rule reads (ip, hash and URL rules: the
/// generated `domain` attributes have no rule) that are valid at `now`.
fn valid_for_rules(misp: &MispSimulator, now: i64, validity: i64) -> BTreeSet<String> {
    attributes(misp)
        .into_iter()
        .filter(|(_, (kind, stamp))| kind != "domain" && stamp + validity > now)
        .map(|(uuid, _)| uuid)
        .collect()
}

/// How many distinct documents each attribute is visible in to the rules at `now`.
fn seen_by_rules(cluster: &ElasticsearchSimulator, now: i64) -> BTreeMap<String, usize> {
    visibility_counts(&visible_indicators(cluster, at(now)), "misp.attribute.uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_see_every_valid_indicator_exactly_once_and_no_expired_one() {
    let start = now();
    // 2 000 attributes last active over the past 180 days; the default 90-day
    // validity keeps half of them.
    let misp = MispSimulator::start(spread_events(100, 20, start, 180 * DAY)).await;
    let cluster = ElasticsearchSimulator::start().await;
    let home = home(&misp, &cluster, "60m", "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let checked_at = now();
    let valid = valid_for_rules(&misp, checked_at, 90 * DAY);
    let seen = seen_by_rules(&cluster, checked_at);
    assert!(
        valid.len() > 600,
        "{} valid indicators for the rules",
        valid.len()
    );
    let seen_keys: BTreeSet<String> = seen.keys().cloned().collect();
    let missing: Vec<_> = valid.difference(&seen_keys).take(5).collect();
    let expired: Vec<_> = seen_keys.difference(&valid).take(5).collect();
    assert!(missing.is_empty(), "valid but not seen (first 5): {missing:?}");
    assert!(expired.is_empty(), "seen but expired (first 5): {expired:?}");
    assert!(seen.values().all(|count| *count == 1), "each exactly once");

    // The history keeps every attribute, out of the rules' sight.
    assert_eq!(cluster.document_count(HISTORY), 2000);
    assert!(cluster
        .documents(HISTORY)
        .iter()
        .all(|document| document.source["labels"]["is_ioc_transform_source"] == "true"));
    // The current state holds the valid ones of every type, fresh.
    let all_valid = attributes(&misp)
        .values()
        .filter(|(_, stamp)| stamp + 90 * DAY > checked_at)
        .count();
    assert_eq!(cluster.document_count(LATEST), all_valid);
    let sample = cluster
        .documents(LATEST)
        .into_iter()
        .next()
        .expect("a current-state document");
    assert!(
        sample.source["threat"]["indicator"]["modified"].is_string(),
        "{}",
        sample.source
    );
    assert_ne!(
        sample.source["@timestamp"],
        sample.source["threat"]["indicator"]["modified"]
    );

    // A second run adds no duplicate and keeps what the rules see.
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(seen_by_rules(&cluster, now()), seen);
    assert_eq!(cluster.document_count(LATEST), all_valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_leave_the_rules_view_when_they_expire_while_the_agent_runs() {
    let start = now();
    // Valid for one hour after their last activity, which was 1 h − 6 s ago:
    // they expire 6 s after the start.
    let misp = MispSimulator::start(spread_events(5, 4, start - 3600 + 6, 1)).await;
    let cluster = ElasticsearchSimulator::start().await;
    let mut home = home(&misp, &cluster, "2s", "      var.ioc_expiration_duration: 60m\n");
    let mut agent = home.spawn();

    let written = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 20).await;
    assert!(written, "{}", agent.log_tail());
    assert!(!seen_by_rules(&cluster, now()).is_empty());

    // Within one interval of the expiry, nothing is left for the rules.
    let gone = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 0).await;
    assert!(gone, "{}", agent.log_tail());
    assert!(now() >= start + 6, "not before the expiry");
    assert!(seen_by_rules(&cluster, now()).is_empty());
    assert_eq!(cluster.document_count(HISTORY), 20, "the history stays");
    assert!(
        agent.log().contains("expired indicators deleted"),
        "{}",
        agent.log_tail()
    );
    tokio::task::block_in_place(|| agent.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_replaces_the_indicator_and_valid_ones_are_refreshed() {
    let start = now();
    // Two events, last active 300 s and 200 s ago: each poll reads the
    // newer one again (MISP's `timestamp` filter is inclusive).
    let mut events = spread_events(2, 4, start - 100, 200);
    for (number, event) in events.iter_mut().enumerate() {
        event["uuid"] = json!(fake_uuid(0x77, number as u64));
    }
    let misp = MispSimulator::start(events).await;
    let cluster = ElasticsearchSimulator::start().await;
    // A refresh every 3 s stands for the default 7 days.
    let mut home = home(&misp, &cluster, "1s", "      var.current_state_refresh: 3s\n");
    let mut agent = home.spawn();
    let written = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 8).await;
    assert!(written, "{}", agent.log_tail());

    // Edited in MISP: the next poll replaces its document, still one.
    let edited = misp.events()[0]["Attribute"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let edited_at = now() + 5;
    misp.edit(Edit::TouchAttribute(edited.clone(), edited_at));
    let modified_now = || {
        cluster
            .documents(LATEST)
            .iter()
            .filter(|document| document.source["misp"]["attribute"]["uuid"] == edited.as_str())
            .map(|document| document.source["misp"]["attribute"]["timestamp"].clone())
            .collect::<Vec<_>>()
    };
    let replaced = wait_until_async(PATIENCE, || modified_now() == [json!(edited_at.to_string())]).await;
    assert!(replaced, "{:?}\n{}", modified_now(), agent.log_tail());
    assert_eq!(cluster.document_count(LATEST), 8, "an edit adds no document");
    assert_eq!(seen_by_rules(&cluster, now()).get(&edited), Some(&1));

    // The edited event is now the newest, so the polls no longer read the
    // other one: its documents are refreshed, `@timestamp` moving forward
    // without a poll result.
    let other_event = misp.events()[1]["uuid"].as_str().unwrap().to_owned();
    let first = cluster
        .documents(LATEST)
        .into_iter()
        .find(|document| document.source["misp"]["uuid"] == other_event.as_str())
        .expect("a document of the other event");
    let refreshed = wait_until_async(Duration::from_secs(30), || {
        cluster
            .document(LATEST, &first.id)
            .is_some_and(|source| source["@timestamp"] != first.source["@timestamp"])
    })
    .await;
    assert!(refreshed, "{}", agent.log_tail());
    assert!(
        agent.log().contains("stale ones refreshed"),
        "{}",
        agent.log_tail()
    );
    assert_eq!(cluster.document_count(LATEST), 8);
    tokio::task::block_in_place(|| agent.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_or_the_ids_flag_turned_off_in_misp_leaves_the_rules_view() {
    let start = now();
    let mut events = spread_events(2, 4, start - 100, 200);
    for (number, event) in events.iter_mut().enumerate() {
        event["uuid"] = json!(fake_uuid(0x78, number as u64));
        for (position, attribute) in event["Attribute"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            attribute["uuid"] = json!(fake_uuid(0x79, (number * 4 + position) as u64));
        }
    }
    let misp = MispSimulator::start(events).await;
    let cluster = ElasticsearchSimulator::start().await;
    let mut home = home(&misp, &cluster, "1s", "");
    let mut agent = home.spawn();
    let written = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 8).await;
    assert!(written, "{}", agent.log_tail());
    // The requests ask for soft-deleted attributes too.
    assert!(misp
        .searches()
        .iter()
        .all(|search| search.body["deleted"] == json!([0, 1])));

    // An ip-dst deleted in one event, an sha256 no longer for IDS in the other.
    let deleted = misp.events()[0]["Attribute"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let not_ids = misp.events()[1]["Attribute"][2]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(seen_by_rules(&cluster, now()).get(&deleted), Some(&1));
    assert_eq!(seen_by_rules(&cluster, now()).get(&not_ids), Some(&1));
    misp.edit(Edit::DeleteAttribute(deleted.clone(), now() + 5));
    misp.edit(Edit::SetToIds(not_ids.clone(), false, now() + 6));

    let gone = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 6).await;
    assert!(gone, "{}", agent.log_tail());
    let seen = seen_by_rules(&cluster, now());
    assert!(
        !seen.contains_key(&deleted) && !seen.contains_key(&not_ids),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "the two other ip-dst and sha256 stay: {seen:?}");
    // The deletion is not history; the IDS change is (a new version of the attribute).
    let history = cluster.documents(HISTORY);
    assert!(history
        .iter()
        .all(|document| document.source["misp"]["attribute"]["deleted"] != true));
    assert_eq!(history.len(), 9);
    tokio::task::block_in_place(|| agent.terminate());
}

#[test]
fn switching_the_current_state_off_keeps_the_history_unmarked() {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    let events: Vec<Value> = spread_events(1, 2, now(), 1)
        .into_iter()
        .map(|event| json!({ "Event": event }))
        .collect();
    home.write("export.json", &json!({ "response": events }).to_string());
    home.write(
        "threatbeat.yml",
        "path.data: data
threatbeat.modules:
  - module: threatintel
    misp:
      var.input: file
      var.paths: [export.json]
      var.current_state: false
output.file: {path: out, filename: documents}
",
    );
    let output = home.run_once();
    assert!(output.status.success(), "{}", stderr_text(&output));
    let documents = home.documents();
    assert_eq!(documents.len(), 2);
    assert!(documents
        .iter()
        .all(|document| document["@metadata"]["index"] == HISTORY));
    assert!(documents.iter().all(|document| document.get("labels").is_none()));
}

/// The current-state documents a `run --once` over one event writes, with
/// `extra` vars; its second attribute is not flagged for IDS.
fn current_state_of_an_event_with_a_context_attribute(extra: &str) -> Vec<Value> {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    let mut events = spread_events(1, 2, now(), 1);
    events[0]["Attribute"][1]["to_ids"] = json!(false);
    let events: Vec<Value> = events
        .into_iter()
        .map(|event| json!({ "Event": event }))
        .collect();
    home.write("export.json", &json!({ "response": events }).to_string());
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
threatbeat.modules:
  - module: threatintel
    misp:
      var.input: file
      var.paths: [export.json]
{extra}output.file: {{path: out, filename: documents}}
"
        ),
    );
    let output = home.run_once();
    assert!(output.status.success(), "{}", stderr_text(&output));
    home.documents()
        .into_iter()
        .filter(|document| document["@metadata"]["index"] == LATEST)
        .collect()
}

#[test]
fn only_attributes_flagged_for_ids_are_current_unless_asked_otherwise() {
    let flagged = current_state_of_an_event_with_a_context_attribute("");
    assert_eq!(flagged.len(), 1, "the to_ids attribute only");
    assert_eq!(flagged[0]["misp"]["attribute"]["to_ids"], true);
    let every =
        current_state_of_an_event_with_a_context_attribute("      var.current_state_ids_only: false\n");
    assert_eq!(every.len(), 2);
}
