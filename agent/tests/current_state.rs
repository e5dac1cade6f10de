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
    feed_home(
        cluster,
        &format!(
            "  - module: threatintel
    misp:
      var.url: {url}
      var.api_token: {API_KEY}
      var.first_interval: 5000h
      var.interval: {interval}
      var.limit: 20
{extra}",
            url = misp.url("/events/restSearch"),
        ),
    )
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
    let seen = seen_by(&cluster, "misp.attribute.uuid");
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

    // A second run adds no duplicate and keeps what the rules see; the
    // re-read of the cursor's newest event (MISP's inclusive filter) does not
    // write its unchanged indicators again.
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(seen_by(&cluster, "misp.attribute.uuid"), seen);
    assert_eq!(cluster.document_count(LATEST), all_valid);
    let newest_event = misp
        .events()
        .last()
        .and_then(|event| event["uuid"].as_str().map(str::to_owned));
    let reread: Vec<String> = cluster
        .documents(LATEST)
        .into_iter()
        .filter(|document| document.source["misp"]["uuid"].as_str() == newest_event.as_deref())
        .map(|document| document.id)
        .collect();
    assert_eq!(reread.len(), 20);
    assert!(
        reread.iter().all(|id| cluster.document_version(LATEST, id) == 1),
        "written once"
    );
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
    assert!(!seen_by(&cluster, "misp.attribute.uuid").is_empty());

    // Within one interval of the expiry, nothing is left for the rules.
    let gone = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 0).await;
    assert!(gone, "{}", agent.log_tail());
    assert!(now() >= start + 6, "not before the expiry");
    assert!(seen_by(&cluster, "misp.attribute.uuid").is_empty());
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
    assert_eq!(seen_by(&cluster, "misp.attribute.uuid").get(&edited), Some(&1));

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
    assert_eq!(seen_by(&cluster, "misp.attribute.uuid").get(&deleted), Some(&1));
    assert_eq!(seen_by(&cluster, "misp.attribute.uuid").get(&not_ids), Some(&1));
    misp.edit(Edit::DeleteAttribute(deleted.clone(), now() + 5));
    misp.edit(Edit::SetToIds(not_ids.clone(), false, now() + 6));

    let gone = wait_until_async(PATIENCE, || cluster.document_count(LATEST) == 6).await;
    assert!(gone, "{}", agent.log_tail());
    let seen = seen_by(&cluster, "misp.attribute.uuid");
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
      var.current_state: ${CURRENT_STATE}
output.file: {path: out, filename: documents}
",
    );
    // Set from the environment, as a deployment would: `${VAR}` expands to
    // text, which the switch reads as Beats does.
    let output = home
        .command()
        .env("CURRENT_STATE", "false")
        .args(["run", "--once"])
        .output()
        .unwrap();
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

// ---------------------------------------------------------------------------
// The other filesets with a current state: each through the binary and its
// feed's simulator into the Elasticsearch simulator, judged by the rules'
// evaluator: a valid indicator is in the current state once and seen by the
// rules once, an expired, revoked or deleted one is not there at all.

/// The home of an agent running `entry` (a module entry, indented under
/// `threatbeat.modules:`) into `cluster`.
fn feed_home(cluster: &ElasticsearchSimulator, entry: &str) -> AgentHome {
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
{entry}",
            es = cluster.url(),
        ),
    );
    home
}

/// Runs `home` once; the run must succeed.
async fn run_once(home: &AgentHome) {
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
}

/// The values of `field` in the current-state index `latest`, each once.
fn current_values(cluster: &ElasticsearchSimulator, latest: &str, field: &str) -> BTreeSet<String> {
    let documents = cluster.documents(latest);
    let values: BTreeSet<String> = documents
        .iter()
        .map(|document| {
            field
                .split('.')
                .fold(&document.source, |value, key| &value[key])
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(values.len(), documents.len(), "one document per indicator");
    values
}

/// Every document of `history` is marked for the rules to skip, and none of
/// `latest` is.
fn assert_marks(cluster: &ElasticsearchSimulator, history: &str, latest: &str) {
    assert!(cluster.document_count(history) > 0, "a history in {history}");
    assert!(cluster
        .documents(history)
        .iter()
        .all(|document| document.source["labels"]["is_ioc_transform_source"] == "true"));
    assert!(cluster
        .documents(latest)
        .iter()
        .all(|document| document.source.get("labels").is_none()));
}

fn set_of(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

/// Two MISP events of 4 attributes (ip-dst, domain, sha256, url): the first
/// last active an hour ago, its sha256 deleted in MISP and its url not for
/// IDS; the second last active 100 days ago (expired under the default 90).
/// Returns the events and the uuids of the first event's attributes.
fn attribute_events() -> (Vec<Value>, Vec<String>) {
    let start = now();
    let mut events = spread_events(2, 4, start, 2 * 100 * DAY);
    events[0]["timestamp"] = json!((start - 100 * DAY).to_string());
    for attribute in events[0]["Attribute"].as_array_mut().into_iter().flatten() {
        attribute["timestamp"] = json!((start - 100 * DAY).to_string());
    }
    events[1]["timestamp"] = json!((start - 3600).to_string());
    for attribute in events[1]["Attribute"].as_array_mut().into_iter().flatten() {
        attribute["timestamp"] = json!((start - 3600).to_string());
    }
    events[1]["Attribute"][2]["deleted"] = json!(true);
    events[1]["Attribute"][3]["to_ids"] = json!(false);
    // MISP's decay models (served when the request asks for them): two of
    // three say the recent domain has decayed, one says the ip-dst has.
    let model = |decayed: bool| json!({"score": if decayed { 10.0 } else { 80.0 }, "decayed": decayed, "DecayingModel": {"id": "1", "name": "NIDS Simple Decaying Model"}});
    events[1]["Attribute"][0]["decay_score"] = json!([model(false), model(false), model(true)]);
    events[1]["Attribute"][1]["decay_score"] = json!([model(true), model(true), model(false)]);
    let recent = events[1]["Attribute"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|attribute| attribute["uuid"].as_str().unwrap_or_default().to_owned())
        .collect();
    (events, recent)
}

/// Runs the attributes-API fileset `entry` against a MISP simulator holding
/// [`attribute_events`]; checks the request, the history and the current
/// state; returns the cluster and the recent event's attribute uuids.
async fn attributes_fileset(
    entry: &str,
    history: &str,
    latest: &str,
) -> (ElasticsearchSimulator, Vec<String>) {
    let (events, recent) = attribute_events();
    let misp = MispSimulator::start(events).await;
    let cluster = ElasticsearchSimulator::start().await;
    let entry = entry
        .replace("URL", &misp.url("/attributes/restSearch"))
        .replace("KEY", API_KEY);
    run_once(&feed_home(&cluster, &entry)).await;

    // Soft-deleted attributes are asked for, so that their documents go.
    let searches = misp.searches();
    assert!(!searches.is_empty());
    assert!(searches
        .iter()
        .all(|search| search.body["deleted"] == json!([0, 1])));
    // And MISP's decay scores.
    assert!(searches
        .iter()
        .all(|search| search.body["includeDecayScore"] == json!(true)));
    // The history: every attribute but the deleted one, marked.
    assert_eq!(cluster.document_count(history), 7);
    assert_marks(&cluster, history, latest);
    // The current state: the recent ip-dst; not the domain MISP's decay
    // models call decayed, the deleted sha256, the url no longer for IDS,
    // nor any attribute of the old event.
    assert_eq!(
        current_values(&cluster, latest, "misp.attribute.uuid"),
        set_of(&[&recent[0]])
    );
    let document = &cluster.documents(latest)[0];
    assert!(document.source["misp"]["attribute"]["decayed_at"].is_string());
    assert!(document.source["misp"]["event"]["uuid"].is_string());
    (cluster, recent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misp_attributes_keeps_a_current_state_read_by_the_rules() {
    let (cluster, recent) = attributes_fileset(
        "  - module: threatintel
    misp_attributes:
      var.url: URL
      var.api_token: KEY
      var.first_interval: 5000h
",
        "logs-ti_threatbeat.misp_attributes-default",
        "logs-ti_threatbeat_latest.misp_attributes",
    )
    .await;
    // Of the current ones, a rule reads the ip-dst (no rule reads a domain):
    // seen once, and nothing else is.
    let seen = seen_by(&cluster, "misp.attribute.uuid");
    assert_eq!(seen, BTreeMap::from([(recent[0].clone(), 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_misp_threat_fileset_keeps_the_same_current_state() {
    let (cluster, recent) = attributes_fileset(
        "  - module: misp
    threat:
      var.url: URL
      var.api_key: KEY
      var.first_interval: 5000h
",
        "logs-ti_threatbeat.misp_threat-default",
        "logs-ti_threatbeat_latest.misp_threat",
    )
    .await;
    // Filebeat's `misp` module says `event.module: misp`, which the rules'
    // `event.module:(threatintel or ti_*)` does not read: the history keeps
    // it, the current-state copies say `threatintel`, and the rules see the
    // valid ip-dst once (the domain has no rule).
    assert_eq!(
        seen_by(&cluster, "misp.attribute.uuid"),
        once_each(&set_of(&[&recent[0]]))
    );
    let history = cluster.documents("logs-ti_threatbeat.misp_threat-default");
    assert!(history
        .iter()
        .all(|document| document.source["event"]["module"] == "misp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomali_keeps_a_current_state_from_stix_validity() {
    use threatbeat_test_support::taxii::{timestamp_ago, TaxiiSimulator, COLLECTION_PATH};
    let taxii = TaxiiSimulator::start().await;
    let indicator = |name: &str, modified_ago: i64, extra: Value| {
        let mut object = json!({
            "type": "indicator",
            "id": format!("indicator--{name}"),
            "created": timestamp_ago(modified_ago),
            "modified": timestamp_ago(modified_ago),
            "valid_from": timestamp_ago(modified_ago),
            "labels": ["malicious-activity"],
            "pattern": format!("[ipv4-addr:value = '198.51.100.{}']", name.len()),
            "description": "TS ID: 1; iType: mal_ip; Source: Simulator",
        });
        if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
            object.extend(extra);
        }
        object
    };
    taxii.add_objects(
        vec![
            // Changed an hour ago: valid for 90 days.
            indicator("a", 3600, json!({})),
            // Changed 100 days ago: expired.
            indicator("bb", 100 * DAY, json!({})),
            // Old, but STIX says valid for 5 more days.
            indicator("ccc", 100 * DAY, json!({"valid_until": timestamp_ago(-5 * DAY)})),
            // Recent, but its validity ended yesterday.
            indicator("dddd", 3600, json!({"valid_until": timestamp_ago(DAY)})),
            // Recent, but revoked.
            indicator("eeeee", 3600, json!({"revoked": true})),
        ],
        &timestamp_ago(60),
    );
    let cluster = ElasticsearchSimulator::start().await;
    let home = feed_home(
        &cluster,
        &format!(
            "  - module: threatintel
    anomali:
      var.url: {}
",
            taxii.url(COLLECTION_PATH)
        ),
    );
    run_once(&home).await;

    let history = "logs-ti_threatbeat.anomali-default";
    let latest = "logs-ti_threatbeat_latest.anomali";
    assert_eq!(cluster.document_count(history), 5);
    assert_marks(&cluster, history, latest);
    let valid = set_of(&["indicator--a", "indicator--ccc"]);
    assert_eq!(current_values(&cluster, latest, "anomali.limo.id"), valid);
    let seen = visibility_counts(&visible_indicators(&cluster, at(now())), "anomali.limo.id");
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), valid);
    assert!(seen.values().all(|count| *count == 1), "{seen:?}");

    // Polled again (nothing new): still once each.
    run_once(&home).await;
    assert_eq!(current_values(&cluster, latest, "anomali.limo.id"), valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otx_keeps_a_current_state_from_the_export_expiration_or_the_read_time() {
    use threatbeat_test_support::otx::{OtxSimulator, API_KEY as OTX_KEY, EXPORT_PATH};
    let otx_time = |seconds_from_now: i64| {
        at(now() + seconds_from_now)
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let otx = OtxSimulator::start().await;
    otx.add_indicators(
        vec![
            // No time of its own: valid from when it was read.
            json!({"id": 1, "indicator": "192.0.2.1", "type": "IPv4"}),
            // Created 100 days ago: expired.
            json!({"id": 2, "indicator": "192.0.2.2", "type": "IPv4", "created": otx_time(-100 * DAY)}),
            // Old, but OTX says it expires in 3 days.
            json!({"id": 3, "indicator": "192.0.2.3", "type": "IPv4",
                   "created": otx_time(-100 * DAY), "expiration": otx_time(3 * DAY)}),
            // Expired 3 days ago by OTX's word.
            json!({"id": 4, "indicator": "192.0.2.4", "type": "IPv4", "expiration": otx_time(-3 * DAY)}),
            // Recent but no longer active.
            json!({"id": 5, "indicator": "192.0.2.5", "type": "IPv4", "created": otx_time(-60), "is_active": 0}),
        ],
        now() - 60,
    );
    let entry = |duration: &str| {
        format!(
            "  - module: threatintel
    otx:
      var.url: {}
      var.api_token: {OTX_KEY}
      var.types: \"\"
      var.ioc_expiration_duration: {duration}
",
            otx.url(EXPORT_PATH)
        )
    };
    let history = "logs-ti_threatbeat.otx-default";
    let latest = "logs-ti_threatbeat_latest.otx";

    let cluster = ElasticsearchSimulator::start().await;
    run_once(&feed_home(&cluster, &entry("90d"))).await;
    assert_eq!(cluster.document_count(history), 5);
    assert_marks(&cluster, history, latest);
    let valid = set_of(&["192.0.2.1", "192.0.2.3"]);
    assert_eq!(current_values(&cluster, latest, "threat.indicator.ip"), valid);
    let seen = visibility_counts(&visible_indicators(&cluster, at(now())), "threat.indicator.ip");
    assert_eq!(seen, valid.iter().map(|ip| (ip.clone(), 1)).collect());

    // A validity of 0 after the read time: only OTX's own expiration keeps one.
    let cluster = ElasticsearchSimulator::start().await;
    run_once(&feed_home(&cluster, &entry("0m"))).await;
    assert_eq!(cluster.document_count(history), 5);
    assert_eq!(
        current_values(&cluster, latest, "threat.indicator.ip"),
        set_of(&["192.0.2.3"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threatq_keeps_a_current_state_from_its_expiry_and_status() {
    use threatbeat_test_support::threatq::{ThreatqSimulator, CLIENT_ID, CLIENT_SECRET, COLLECTION};
    let tq_time = |seconds_from_now: i64| {
        at(now() + seconds_from_now)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let indicator = |id: i64, status: &str, updated: i64, extra: Value| {
        let mut record = json!({
            "id": id, "value": format!("203.0.113.{id}"), "score": 45,
            "type": {"id": 15, "name": "IP Address", "class": "network"},
            "status": {"id": 1, "name": status},
            "created_at": tq_time(-200 * DAY), "updated_at": tq_time(updated),
        });
        if let (Some(record), Value::Object(extra)) = (record.as_object_mut(), extra) {
            record.extend(extra);
        }
        record
    };
    let tq = ThreatqSimulator::start().await;
    tq.add_indicators(vec![
        // Updated an hour ago, active: valid for 90 days.
        indicator(1, "Active", -3600, json!({})),
        // ThreatQ says it expired.
        indicator(2, "Expired", -3500, json!({})),
        // Not updated for 100 days: expired by the default duration.
        indicator(3, "Active", -100 * DAY, json!({})),
        // Old, but ThreatQ expires it in 5 days.
        indicator(
            4,
            "Active",
            -100 * DAY + 1,
            json!({"expires_at": tq_time(5 * DAY)}),
        ),
        // Recent, but ThreatQ expired it yesterday.
        indicator(5, "Active", -3400, json!({"expired_at": tq_time(-DAY)})),
    ]);
    let cluster = ElasticsearchSimulator::start().await;
    let home = feed_home(
        &cluster,
        &format!(
            "  - module: threatintel
    threatq:
      var.host: {host}
      var.token_url: {token}
      var.client_id: {CLIENT_ID}
      var.client_secret: {CLIENT_SECRET}
      var.data_collection_id: {COLLECTION}
",
            host = tq.url("/"),
            token = tq.url("/api/token"),
        ),
    );
    run_once(&home).await;

    let history = "logs-ti_threatbeat.threatq-default";
    let latest = "logs-ti_threatbeat_latest.threatq";
    assert_eq!(cluster.document_count(history), 5);
    assert_marks(&cluster, history, latest);
    let valid = set_of(&["203.0.113.1", "203.0.113.4"]);
    assert_eq!(current_values(&cluster, latest, "threat.indicator.ip"), valid);
    let seen = visibility_counts(&visible_indicators(&cluster, at(now())), "threat.indicator.ip");
    assert_eq!(seen, valid.iter().map(|ip| (ip.clone(), 1)).collect());

    // Indicator 1 expired in ThreatQ: the next poll reads the update and its
    // document goes.
    tq.update_indicator(indicator(1, "Expired", -60, json!({})));
    run_once(&home).await;
    assert_eq!(
        current_values(&cluster, latest, "threat.indicator.ip"),
        set_of(&["203.0.113.4"])
    );
    assert!(!seen_by(&cluster, "threat.indicator.ip")
        .into_keys()
        .collect::<BTreeSet<_>>()
        .contains("203.0.113.1"));
}

#[test]
fn misp_attributes_without_a_current_state_marks_its_history_as_ti_misp_does() {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    let attributes: Vec<Value> = spread_events(1, 2, now(), 1)[0]["Attribute"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut attribute| {
            attribute["Event"] = json!({"uuid": fake_uuid(0x7a, 0), "id": "1", "org_id": "1"});
            attribute
        })
        .collect();
    home.write(
        "export.json",
        &json!({ "response": { "Attribute": attributes } }).to_string(),
    );
    home.write(
        "threatbeat.yml",
        "path.data: data
threatbeat.modules:
  - module: threatintel
    misp_attributes:
      var.input: file
      var.paths: [export.json]
      var.current_state: ${CURRENT_STATE}
output.file: {path: out, filename: documents}
",
    );
    // Set from the environment, as a deployment would: `${VAR}` expands to
    // text, which the switch reads as Beats does.
    let output = home
        .command()
        .env("CURRENT_STATE", "false")
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_text(&output));
    let documents = home.documents();
    assert_eq!(documents.len(), 2);
    assert!(documents.iter().all(|document| {
        document["@metadata"]["index"] == "logs-ti_threatbeat.misp_attributes-default"
            && document["labels"]["is_ioc_transform_source"] == "true"
    }));
}

/// A time `seconds_from_now` away in abuse.ch's layout (`2021-01-14 21:19:13`).
fn abusech_time(seconds_from_now: i64) -> String {
    at(now() + seconds_from_now)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Runs the abuse.ch fileset `fileset` once against a simulator serving
/// `records` at `path`; checks the history and returns the cluster.
async fn abusech_fileset(fileset: &str, path: &str, records: Vec<Value>) -> ElasticsearchSimulator {
    use threatbeat_test_support::abusech::AbusechSimulator;
    let abusech = AbusechSimulator::start().await;
    let count = records.len();
    match fileset {
        "abuseurl" => abusech.set_urls(records),
        "abusemalware" => abusech.set_payloads(records),
        _ => abusech.set_samples(records),
    }
    let cluster = ElasticsearchSimulator::start().await;
    let home = feed_home(
        &cluster,
        &format!(
            "  - module: threatintel
    {fileset}:
      var.url: {}
",
            abusech.url(path)
        ),
    );
    run_once(&home).await;
    let history = format!("logs-ti_threatbeat.{fileset}-default");
    let latest = format!("logs-ti_threatbeat_latest.{fileset}");
    assert_eq!(cluster.document_count(&history), count);
    assert_marks(&cluster, &history, &latest);
    // Polled again (the same list): still one copy each.
    let before = cluster.ids(&latest);
    run_once(&home).await;
    assert_eq!(cluster.ids(&latest), before);
    cluster
}

/// The values of `field` the rules see now, and how often.
fn seen_by(cluster: &ElasticsearchSimulator, field: &str) -> BTreeMap<String, usize> {
    visibility_counts(&visible_indicators(cluster, at(now())), field)
}

fn once_each(values: &BTreeSet<String>) -> BTreeMap<String, usize> {
    values.iter().map(|value| (value.clone(), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuseurl_keeps_a_current_state_from_the_last_time_online() {
    let url = |id: &str, added: i64, extra: Value| {
        let mut record = json!({
            "id": id, "url": format!("http://198.51.100.{id}/bin.sh"), "url_status": "online",
            "host": format!("198.51.100.{id}"), "date_added": format!("{} UTC", abusech_time(added)),
            "threat": "malware_download", "reporter": "tester", "larted": "false",
            "urlhaus_reference": format!("https://urlhaus.abuse.ch/url/{id}/"),
        });
        if let (Some(record), Value::Object(extra)) = (record.as_object_mut(), extra) {
            record.extend(extra);
        }
        record
    };
    let cluster = abusech_fileset(
        "abuseurl",
        "/v1/urls/recent/",
        vec![
            // Added an hour ago: valid for 30 days.
            url("1", -3600, json!({})),
            // Added 40 days ago, never seen online since: expired.
            url("2", -40 * DAY, json!({})),
            // Added 40 days ago, but online yesterday: valid.
            url(
                "3",
                -40 * DAY,
                json!({"last_online": format!("{} UTC", abusech_time(-DAY))}),
            ),
            // Recent and offline: offline URLs come back, still valid.
            url("4", -3600, json!({"url_status": "offline"})),
        ],
    )
    .await;
    let latest = "logs-ti_threatbeat_latest.abuseurl";
    let valid = set_of(&[
        "http://198.51.100.1/bin.sh",
        "http://198.51.100.3/bin.sh",
        "http://198.51.100.4/bin.sh",
    ]);
    assert_eq!(
        current_values(&cluster, latest, "threat.indicator.url.full"),
        valid
    );
    assert_eq!(seen_by(&cluster, "threat.indicator.url.full"), once_each(&valid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusemalware_keeps_a_current_state_from_first_seen() {
    let payload = |digit: char, first_seen: i64| {
        json!({
            "md5_hash": digit.to_string().repeat(32), "sha256_hash": digit.to_string().repeat(64),
            "file_type": "exe", "file_size": "1024", "firstseen": abusech_time(first_seen),
        })
    };
    let cluster = abusech_fileset(
        "abusemalware",
        "/v1/payloads/recent/",
        vec![
            // First seen an hour ago: valid for 90 days.
            payload('a', -3600),
            // First seen 100 days ago: expired.
            payload('b', -100 * DAY),
            // 89 days ago: valid for one more day.
            payload('c', -89 * DAY),
        ],
    )
    .await;
    let latest = "logs-ti_threatbeat_latest.abusemalware";
    let valid = set_of(&[&"a".repeat(64), &"c".repeat(64)]);
    assert_eq!(
        current_values(&cluster, latest, "threat.indicator.file.hash.sha256"),
        valid
    );
    assert_eq!(
        seen_by(&cluster, "threat.indicator.file.hash.sha256"),
        once_each(&valid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malwarebazaar_keeps_a_current_state_from_last_then_first_seen() {
    let sample = |digit: char, first_seen: i64, last_seen: Option<i64>| {
        json!({
            "md5_hash": digit.to_string().repeat(32), "sha256_hash": digit.to_string().repeat(64),
            "sha1_hash": digit.to_string().repeat(40), "file_name": "sample.exe", "file_size": 1024,
            "file_type": "exe", "file_type_mime": "application/x-dosexec",
            "first_seen": abusech_time(first_seen), "last_seen": last_seen.map(abusech_time),
        })
    };
    let cluster = abusech_fileset(
        "malwarebazaar",
        "/api/v1/",
        vec![
            // First seen an hour ago, never since: valid.
            sample('a', -3600, None),
            // First seen 100 days ago, never since: expired.
            sample('b', -100 * DAY, None),
            // First seen 100 days ago, seen again yesterday: valid.
            sample('c', -100 * DAY, Some(-DAY)),
            // Last seen 95 days ago: expired.
            sample('d', -120 * DAY, Some(-95 * DAY)),
        ],
    )
    .await;
    let latest = "logs-ti_threatbeat_latest.malwarebazaar";
    let valid = set_of(&[&"a".repeat(64), &"c".repeat(64)]);
    assert_eq!(
        current_values(&cluster, latest, "threat.indicator.file.hash.sha256"),
        valid
    );
    assert_eq!(
        seen_by(&cluster, "threat.indicator.file.hash.sha256"),
        once_each(&valid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalithreatstream_keeps_a_current_state_from_its_expiry_and_status() {
    let ts_time = |seconds_from_now: i64| {
        at(now() + seconds_from_now)
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let record = |id: u64, first: i64, extra: Value| {
        let mut record = json!({
            "id": id, "itype": "mal_ip", "srcip": format!("203.0.113.{id}"), "severity": "high",
            "confidence": 80, "classification": "private", "source": "Simulator", "state": "active",
            "date_first": ts_time(first), "date_last": ts_time(first),
        });
        if let (Some(record), Value::Object(extra)) = (record.as_object_mut(), extra) {
            record.extend(extra);
        }
        record.to_string()
    };
    let lines = [
        // First seen an hour ago: valid for 90 days.
        record(1, -3600, json!({})),
        // First seen 100 days ago: expired.
        record(2, -100 * DAY, json!({})),
        // First seen 100 days ago, modified yesterday: valid.
        record(3, -100 * DAY, json!({"modified_ts": ts_time(-DAY)})),
        // Old, but ThreatStream says it expires in 5 days.
        record(4, -100 * DAY, json!({"expiration_ts": ts_time(5 * DAY)})),
        // Recent, but its expiry was yesterday.
        record(5, -3600, json!({"expiration_ts": ts_time(-DAY)})),
        // Recent, but inactive or a false positive.
        record(6, -3600, json!({"status": "inactive"})),
        record(7, -3600, json!({"state": "falsepos"})),
    ];
    let cluster = ElasticsearchSimulator::start().await;
    let home = feed_home(
        &cluster,
        "  - module: threatintel
    anomalithreatstream:
      var.input: file
      var.paths: [indicators.ndjson]
",
    );
    home.write("indicators.ndjson", &(lines.join("\n") + "\n"));
    run_once(&home).await;

    let history = "logs-ti_threatbeat.anomalithreatstream-default";
    let latest = "logs-ti_threatbeat_latest.anomalithreatstream";
    assert_eq!(cluster.document_count(history), 7);
    assert_marks(&cluster, history, latest);
    let valid = set_of(&["203.0.113.1", "203.0.113.3", "203.0.113.4"]);
    assert_eq!(current_values(&cluster, latest, "threat.indicator.ip"), valid);
    assert_eq!(seen_by(&cluster, "threat.indicator.ip"), once_each(&valid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordedfuture_keeps_a_current_state_of_the_risk_list_and_search_results() {
    use threatbeat_test_support::recordedfuture::{RecordedFutureSimulator, TOKEN};
    let history = "logs-ti_threatbeat.recordedfuture-default";
    let latest = "logs-ti_threatbeat_latest.recordedfuture";
    let rf = RecordedFutureSimulator::start().await;
    let list = |names: &[&str]| {
        let rows: String = names
            .iter()
            .map(|name| format!("\"{name}\",\"90\",\"1/50\",\"{{}}\"\n"))
            .collect();
        format!("\"Name\",\"Risk\",\"RiskString\",\"EvidenceDetails\"\n{rows}")
    };

    // A risk list has no dates: each listed entity is valid for the duration
    // after the download (3 s here), so one dropped from the list leaves soon.
    rf.set_risk_list("ip", &list(&["198.51.100.1", "198.51.100.2"]));
    let cluster = ElasticsearchSimulator::start().await;
    let home = feed_home(
        &cluster,
        &format!(
            "  - module: threatintel
    recordedfuture:
      var.api_token: {TOKEN}
      var.endpoint: {}
      var.entity: ip
      var.ioc_expiration_duration: 3s
",
            rf.url("/v2")
        ),
    );
    run_once(&home).await;
    assert_eq!(cluster.document_count(history), 2);
    assert_marks(&cluster, history, latest);
    let both = set_of(&["198.51.100.1", "198.51.100.2"]);
    assert_eq!(current_values(&cluster, latest, "threat.indicator.ip"), both);
    assert_eq!(seen_by(&cluster, "threat.indicator.ip"), once_each(&both));

    // .2 dropped from the list: gone once its validity passed; .1, listed
    // again, stays.
    rf.set_risk_list("ip", &list(&["198.51.100.1"]));
    tokio::time::sleep(Duration::from_secs(4)).await;
    run_once(&home).await;
    let one = set_of(&["198.51.100.1"]);
    assert_eq!(current_values(&cluster, latest, "threat.indicator.ip"), one);
    assert_eq!(seen_by(&cluster, "threat.indicator.ip"), once_each(&one));

    // The search API: `timestamps.lastSeen` + the duration (default 90d).
    let result = |number: u8, last_seen: i64| {
        json!({
            "entity": {"id": format!("ip:192.0.2.{number}"), "name": format!("192.0.2.{number}"), "type": "IpAddress"},
            "timestamps": {"firstSeen": "2021-01-01T00:00:00.000Z",
                           "lastSeen": at(now() + last_seen).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()},
            "risk": {"score": 75, "riskString": "3/64"},
        })
    };
    rf.add_entities("ip", vec![result(1, -100 * DAY), result(2, -3600)]);
    let cluster = ElasticsearchSimulator::start().await;
    let home = feed_home(
        &cluster,
        &format!(
            "  - module: threatintel
    recordedfuture:
      var.api_token: {TOKEN}
      var.url: \"{}?limit=10&fields=entity,timestamps,risk&metadata=false\"
      var.first_interval: 5000h
",
            rf.url("/v2/ip/search")
        ),
    );
    run_once(&home).await;
    assert_eq!(cluster.document_count(history), 2);
    assert_marks(&cluster, history, latest);
    let recent = set_of(&["192.0.2.2"]);
    assert_eq!(current_values(&cluster, latest, "threat.indicator.ip"), recent);
    assert_eq!(seen_by(&cluster, "threat.indicator.ip"), once_each(&recent));
}
