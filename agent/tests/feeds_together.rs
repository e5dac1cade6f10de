//! The five newer threat-intel filesets at once, end to end: one real agent
//! runs `threatintel/taxii`, `threatfox`, `otx_pulses`, `misp_feed` and
//! `blocklist` against their simulators, delivers through the disk queue to
//! the Elasticsearch simulator, and is killed with SIGKILL at random moments
//! of the first sync and restarted each time; the blocklist changes between
//! two restarts. After a last run and a graceful stop, per fileset, the
//! history data stream holds every expected document exactly once, the
//! current-state index exactly the valid indicators, and the queue nothing.
//!
//! The expectations are computed from the data served, by the rules each
//! fileset documents (docs/modules/threatintel.md, docs/detection.md), not
//! by the agent's code. `THREATBEAT_E2E_SEED=<n>` replays the kill moments.

// The end-to-end helpers are shared with end_to_end.rs; this file uses a part.
#[allow(dead_code)]
mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use e2e::{chrono_now, fresh_events, wait_for, Random, PATIENCE};
use serde_json::{json, Value};
use threatbeat_outputs::queue::{Compression, DiskQueue, DiskSettings, FsyncPolicy, QueueStore};
use threatbeat_test_support::abusech::{threatfox_format, AbusechSimulator};
use threatbeat_test_support::agent::{stderr_text, AgentHome};
use threatbeat_test_support::blocklist::BlocklistSimulator;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::generate_events;
use threatbeat_test_support::misp_feed::MispFeedSimulator;
use threatbeat_test_support::otx::{self, OtxSimulator, PULSES_PATH};
use threatbeat_test_support::taxii21::{self, Taxii21Simulator, COLLECTION_PATH};

const DAY: i64 = 86_400;
const QUEUE_MAX_SIZE: u64 = 4 * 1024 * 1024;
const QUEUE_SEGMENT_SIZE: u64 = 256 * 1024;
/// The ThreatFox key the simulator requires.
const THREATFOX_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const LIST_PATH: &str = "/downloads/ipblocklist.txt";
/// How many times the agent is killed during the first sync.
const KILLS: usize = 4;

/// Where a fileset writes, and what names one indicator in its documents.
struct Fileset {
    name: &'static str,
    history: &'static str,
    latest: &'static str,
    /// The identity of one history document (an indicator version).
    history_key: fn(&Value) -> Option<String>,
    /// The identity of one indicator in the current state.
    state_key: fn(&Value) -> Option<String>,
}

/// What one fileset must hold in the end.
struct Expected {
    fileset: Fileset,
    history: BTreeSet<String>,
    current: BTreeSet<String>,
}

/// A field by dotted path, whether the document nests objects or keeps dotted keys.
fn field<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(found) = document.get(path) {
        return Some(found);
    }
    let mut split = path.match_indices('.');
    loop {
        let (at, _) = split.next()?;
        if let Some(inner) = document.get(&path[..at]) {
            if let Some(found) = field(inner, &path[at + 1..]) {
                return Some(found);
            }
        }
    }
}

/// A string or number field as text.
fn text(document: &Value, path: &str) -> Option<String> {
    match field(document, path)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn pair(document: &Value, first: &str, second: &str) -> Option<String> {
    Some(format!("{}/{}", text(document, first)?, text(document, second)?))
}

/// `seconds` as STIX writes a timestamp (milliseconds, `Z`).
fn stix_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn stix_seconds(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text}: {error}"))
        .timestamp()
}

/// `seconds` as OTX writes a time: `2023-08-22T09:43:18.855000` (UTC).
fn otx_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_default()
}

/// 260 STIX 2.1 indicators, then a second version of 40 of them (half
/// revoked): expired ones by `valid_until` and by age (`modified` 100 days
/// ago, no `valid_until`), as TAXII serves them in the order added.
fn taxii_objects(now: i64) -> Vec<Value> {
    let mut objects: Vec<Value> = (1..=260u32)
        .map(|number| {
            let old = number % 17 == 0;
            let created = if old { now - 100 * DAY } else { now - 10 * DAY };
            let modified = if old { created } else { now - 3600 };
            let mut object = json!({
                "type": "indicator",
                "spec_version": "2.1",
                "id": format!("indicator--c0000000-0000-4000-8000-{number:012}"),
                "created": stix_time(created),
                "modified": stix_time(modified),
                "valid_from": stix_time(created),
                "name": format!("together {number}"),
                "pattern": format!("[ipv4-addr:value = '10.{}.{}.1']", number / 250, number % 250),
                "pattern_type": "stix",
            });
            if number % 13 == 0 {
                object["valid_until"] = json!(stix_time(now - DAY));
            }
            object
        })
        .collect();
    let versions: Vec<Value> = objects[..40]
        .iter()
        .enumerate()
        .map(|(position, first)| {
            let mut next = first.clone();
            if position % 2 == 0 {
                next["modified"] = json!(stix_time(now - 1800));
            } else {
                next["modified"] = json!(stix_time(now - 1200));
                next["revoked"] = json!(true);
            }
            next
        })
        .collect();
    objects.extend(versions);
    objects
}

/// TAXII: every version of an indicator is a history document, a revoked
/// one none; the current state holds each id whose last version is neither
/// revoked nor expired (`valid_until` passed, else `modified` + 90 days).
fn taxii_expected(objects: &[Value], now: i64) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut history = BTreeSet::new();
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for object in objects {
        let id = object["id"].as_str().unwrap().to_owned();
        if object["revoked"] != true {
            history.insert(format!("{id}/{}", object["modified"].as_str().unwrap()));
        }
        last.insert(id, object);
    }
    let current = last
        .into_iter()
        .filter(|(_, object)| {
            let expires = match object["valid_until"].as_str() {
                Some(until) => stix_seconds(until),
                None => stix_seconds(object["modified"].as_str().unwrap()) + 90 * DAY,
            };
            object["revoked"] != true && expires > now
        })
        .map(|(id, _)| id)
        .collect();
    (history, current)
}

/// 300 ThreatFox IOCs first seen over the last 6.5 days, some seen again later.
fn threatfox_iocs(now: i64) -> Vec<Value> {
    (1..=300u32)
        .map(|number| {
            let hours = |count: i64| count * 3600;
            let (first_seen, last_seen) = match number % 6 {
                0 => (now - hours(12), None),
                1 => (now - hours(36), Some(now - hours(2))),
                2 => (now - hours(60), None),
                3 => (now - hours(108), None),
                4 => (now - hours(132), Some(now - hours(1))),
                _ => (now - hours(156), Some(now - hours(96))),
            };
            let id = 900_000 + number;
            json!({
                "id": id.to_string(),
                "ioc": format!("tf-{id}.example"),
                "threat_type": "botnet_cc",
                "threat_type_desc": "Indicator that identifies a botnet command&control server (C&C)",
                "ioc_type": "domain",
                "ioc_type_desc": "Domain that is used for botnet Command&control (C&C)",
                "malware": "win.dridex",
                "malware_printable": "Dridex",
                "malware_alias": null,
                "malware_malpedia": "https://malpedia.caad.fkie.fraunhofer.de/details/win.dridex",
                "confidence_level": 75,
                "first_seen": threatfox_format(first_seen),
                "last_seen": last_seen.map(threatfox_format),
                "reporter": "abuse_ch",
                "reference": null,
                "tags": ["dridex"],
            })
        })
        .collect()
}

/// The validity ThreatFox IOCs get here (`var.ioc_expiration_duration`).
const THREATFOX_VALIDITY: i64 = 3 * DAY;

/// ThreatFox: every IOC once in the history; current while its last sighting
/// (`last_seen`, else `first_seen`) is younger than the validity.
fn threatfox_expected(iocs: &[Value], now: i64) -> (BTreeSet<String>, BTreeSet<String>) {
    let seconds = |value: &Value| {
        value.as_str().map(|text| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S UTC")
                .unwrap_or_else(|error| panic!("{text}: {error}"))
                .and_utc()
                .timestamp()
        })
    };
    let history = iocs
        .iter()
        .map(|ioc| ioc["id"].as_str().unwrap().to_owned())
        .collect();
    let current = iocs
        .iter()
        .filter(|ioc| {
            let seen = seconds(&ioc["last_seen"])
                .or_else(|| seconds(&ioc["first_seen"]))
                .unwrap();
            seen + THREATFOX_VALIDITY > now
        })
        .map(|ioc| ioc["id"].as_str().unwrap().to_owned())
        .collect();
    (history, current)
}

/// 40 subscribed pulses of six IPv4 indicators; five pulses were last
/// modified 100 days ago; some indicators are inactive, past or before
/// their `expiration`.
fn otx_pulses(now: i64) -> Vec<Value> {
    (1..=40u32)
        .map(|number| {
            let modified = if number <= 5 {
                now - 100 * DAY
            } else {
                now - i64::from(number) * 60
            };
            let indicators: Vec<Value> = (1..=6u32)
                .map(|last| {
                    let expiration = match last {
                        4 if number % 3 == 0 => json!(otx_time(now - DAY)),
                        5 => json!(otx_time(now + 30 * DAY)),
                        _ => Value::Null,
                    };
                    let active = if last == 3 && number % 4 == 0 { 0 } else { 1 };
                    json!({
                        "id": number * 100 + last,
                        "indicator": format!("10.200.{number}.{last}"),
                        "type": "IPv4",
                        "created": otx_time(modified),
                        "content": "",
                        "title": "",
                        "description": "",
                        "expiration": expiration,
                        "is_active": active,
                        "role": null,
                    })
                })
                .collect();
            json!({
                "id": format!("{:024x}", 0xabc000 + number),
                "name": format!("Together pulse {number}"),
                "description": "",
                "author_name": "tester",
                "created": otx_time(modified),
                "modified": otx_time(modified),
                "revision": 1,
                "tlp": "green",
                "public": 1,
                "adversary": "",
                "tags": ["together"],
                "targeted_countries": [],
                "malware_families": [],
                "attack_ids": [],
                "references": [],
                "indicators": indicators,
            })
        })
        .collect()
}

/// OTX: every (pulse, indicator) once in the history; current while active
/// and before its `expiration`, or without one, within 90 days of the
/// pulse's `modified`.
fn otx_expected(pulses: &[Value], now: i64) -> (BTreeSet<String>, BTreeSet<String>) {
    let seconds = |value: &Value| value.as_str().and_then(otx::parse_time);
    let mut history = BTreeSet::new();
    let mut current = BTreeSet::new();
    for pulse in pulses {
        let modified = seconds(&pulse["modified"]).unwrap();
        for indicator in pulse["indicators"].as_array().unwrap() {
            let key = format!("{}/{}", pulse["id"].as_str().unwrap(), indicator["id"]);
            let expires = seconds(&indicator["expiration"]).unwrap_or(modified + 90 * DAY);
            if indicator["is_active"] != 0 && expires > now {
                current.insert(key.clone());
            }
            history.insert(key);
        }
    }
    (history, current)
}

/// 36 recent MISP events and 12 from 100 days ago, five attributes each;
/// some attributes not for detection (`to_ids: false`), some deleted.
fn misp_events(now: i64) -> Vec<Value> {
    let mut events = generate_events(36, 5, now - 3600);
    for (number, event) in events.iter_mut().enumerate() {
        if number % 3 == 0 {
            event["Attribute"][1]["to_ids"] = json!(false);
        }
        if number % 4 == 0 {
            event["Attribute"][2]["deleted"] = json!(true);
        }
    }
    events.extend(fresh_events(12, 5, now - 100 * DAY, 7));
    events
}

/// MISP feed: every attribute but the deleted ones once in the history;
/// current when for detection and active within 90 days.
fn misp_expected(events: &[Value], now: i64) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut history = BTreeSet::new();
    let mut current = BTreeSet::new();
    for event in events {
        for attribute in event["Attribute"].as_array().unwrap() {
            if attribute["deleted"] == true {
                continue;
            }
            let key = format!(
                "{}/{}",
                event["uuid"].as_str().unwrap(),
                attribute["uuid"].as_str().unwrap()
            );
            let stamp: i64 = attribute["timestamp"].as_str().unwrap().parse().unwrap();
            if attribute["to_ids"] == true && stamp + 90 * DAY > now {
                current.insert(key.clone());
            }
            history.insert(key);
        }
    }
    (history, current)
}

/// A Feodo-style list of 2,000 lines: comments, addresses, domain names and
/// a few lines that are no indicator.
fn blocklist_values() -> Vec<String> {
    let mut values: Vec<String> = (1..=1800u32)
        .map(|number| format!("172.16.{}.{}", number / 250, number % 250))
        .collect();
    values.extend((1..=190u32).map(|number| format!("bl-{number}.example.net")));
    values.extend((1..=5u32).map(|number| format!("not/an-indicator-{number}")));
    values
}

fn blocklist_text(values: &[String]) -> String {
    let mut text = String::from("# Together blocklist\n# DstIP\n");
    for value in values {
        text.push_str(value);
        text.push('\n');
    }
    text.push_str("# END 2000 lines\n");
    text
}

/// Every value ever listed is one history document; the current state is
/// the last list's indicators.
fn blocklist_expected(lists: &[&[String]]) -> (BTreeSet<String>, BTreeSet<String>) {
    let history = lists.iter().flat_map(|list| list.iter().cloned()).collect();
    let current = lists
        .last()
        .into_iter()
        .flat_map(|list| list.iter())
        .filter(|value| !value.starts_with("not/"))
        .cloned()
        .collect();
    (history, current)
}

/// Checks one fileset against what it must hold; the problems found.
fn problems(cluster: &ElasticsearchSimulator, expected: &Expected) -> Vec<String> {
    let fileset = &expected.fileset;
    let mut found = Vec::new();
    for (index, key_of, want, history) in [
        (fileset.history, fileset.history_key, &expected.history, true),
        (fileset.latest, fileset.state_key, &expected.current, false),
    ] {
        let documents = cluster.documents(index);
        let mut keys: BTreeMap<String, usize> = BTreeMap::new();
        for document in &documents {
            match key_of(&document.source) {
                Some(key) => *keys.entry(key).or_insert(0) += 1,
                None => found.push(format!(
                    "{}: {index}: a document without its key: {}",
                    fileset.name, document.source
                )),
            }
            let marked = text(&document.source, "labels.is_ioc_transform_source");
            if history != (marked.as_deref() == Some("true")) {
                found.push(format!(
                    "{}: {index}: {} marked {marked:?}",
                    fileset.name, document.id
                ));
            }
        }
        let twice: Vec<_> = keys.iter().filter(|(_, count)| **count > 1).take(5).collect();
        if !twice.is_empty() {
            found.push(format!(
                "{}: {index}: documents more than once (first 5): {twice:?}",
                fileset.name
            ));
        }
        let held: BTreeSet<String> = keys.into_keys().collect();
        let missing: Vec<_> = want.difference(&held).take(5).collect();
        let unexpected: Vec<_> = held.difference(want).take(5).collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            found.push(format!(
                "{}: {index}: {} documents for {} expected; missing (first 5) {missing:?}; not expected (first 5) {unexpected:?}",
                fileset.name,
                documents.len(),
                want.len()
            ));
        }
    }
    found
}

/// History documents delivered so far, all filesets together.
fn delivered(cluster: &ElasticsearchSimulator, expected: &[Expected]) -> usize {
    expected
        .iter()
        .map(|fileset| cluster.document_count(fileset.fileset.history))
        .sum()
}

/// The agent's configuration: the five filesets polling every second.
fn config(
    cluster: &str,
    taxii: &str,
    threatfox: &str,
    otx: &str,
    misp_feed: &str,
    blocklist: &str,
) -> String {
    format!(
        r#"path.data: data
logging.level: info
output.elasticsearch:
  hosts: ["{cluster}"]
  bulk_max_size: 50
  timeout: 5s
  backoff.init: 100ms
  backoff.max: 1s
queue.disk:
  path: diskqueue
  max_size: {QUEUE_MAX_SIZE}
  segment_size: {QUEUE_SEGMENT_SIZE}
  flush.min_events: 50
  flush.timeout: 50ms
  shutdown_timeout: 60s
threatbeat.modules:
  - module: threatintel
    taxii:
      var.url: {taxii}
      var.username: {user}
      var.password: "{password}"
      var.interval: 1s
      var.limit: 10
    threatfox:
      var.url: {threatfox}
      var.auth_key: {THREATFOX_KEY}
      var.interval: 1s
      var.ioc_expiration_duration: 3d
    otx_pulses:
      var.url: {otx}
      var.api_token: {otx_key}
      var.interval: 1s
      var.limit: 2
      var.first_interval: 200d
    misp_feed:
      var.url: {misp_feed}
      var.interval: 1s
      var.first_interval: 365d
      var.max_events_per_poll: 4
    blocklist:
      var.url: {blocklist}
      var.interval: 1s
"#,
        user = taxii21::USER,
        password = taxii21::PASSWORD,
        otx_key = otx::API_KEY,
    )
}

/// Unacknowledged events in the disk queue (opens it: only once the agent is gone).
fn queue_pending_events(home: &AgentHome) -> u64 {
    DiskQueue::open(DiskSettings {
        path: home.path("data/diskqueue"),
        max_size: QUEUE_MAX_SIZE,
        segment_size: QUEUE_SEGMENT_SIZE,
        fsync: FsyncPolicy::Batch,
        compression: Compression::None,
    })
    .expect("the disk queue opens")
    .pending_events()
}

/// The issue's last "Done when": all five new filesets in one agent, their
/// first sync cut by `kill -9` four times, the blocklist changed between two
/// restarts; in the end every fileset exactly once, and an empty queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_feeds_in_one_agent_are_exactly_once_through_kill_9() {
    let now = chrono_now();
    let cluster = ElasticsearchSimulator::start().await;
    // Slow bulk answers keep events in flight when a kill lands.
    cluster.set_delay(Some(Duration::from_millis(10)));

    let taxii = Taxii21Simulator::start().await;
    let objects = taxii_objects(now);
    taxii.add_objects_spaced(objects.clone(), &taxii21::micros_ago(3600), 1_000);
    let abusech = AbusechSimulator::start().await;
    abusech.require_auth_keys(&[THREATFOX_KEY]);
    let iocs = threatfox_iocs(now);
    abusech.set_iocs(iocs.clone());
    let otx = OtxSimulator::start().await;
    let pulses = otx_pulses(now);
    otx.add_pulses(pulses.clone());
    let events = misp_events(now);
    let feed = MispFeedSimulator::start(events.clone()).await;
    let lists = BlocklistSimulator::start().await;
    let first_list = blocklist_values();
    lists.set_list(LIST_PATH, &blocklist_text(&first_list));
    // Between two restarts the list drops its first address and adds one.
    let removed = first_list[0].clone();
    let added = "192.0.2.250".to_owned();
    let mut second_list: Vec<String> = first_list[1..].to_vec();
    second_list.push(added.clone());

    let (taxii_history, taxii_current) = taxii_expected(&objects, now);
    let (threatfox_history, threatfox_current) = threatfox_expected(&iocs, now);
    let (otx_history, otx_current) = otx_expected(&pulses, now);
    let (misp_history, misp_current) = misp_expected(&events, now);
    let (list_history, list_current) = blocklist_expected(&[&first_list, &second_list]);
    let expected = vec![
        Expected {
            fileset: Fileset {
                name: "taxii",
                history: "logs-ti_threatbeat.taxii-default",
                latest: "logs-ti_threatbeat_latest.taxii",
                history_key: |document| pair(document, "taxii.indicator.id", "taxii.indicator.modified"),
                state_key: |document| text(document, "taxii.indicator.id"),
            },
            history: taxii_history,
            current: taxii_current,
        },
        Expected {
            fileset: Fileset {
                name: "threatfox",
                history: "logs-ti_threatbeat.threatfox-default",
                latest: "logs-ti_threatbeat_latest.threatfox",
                history_key: |document| text(document, "event.id"),
                state_key: |document| text(document, "event.id"),
            },
            history: threatfox_history,
            current: threatfox_current,
        },
        Expected {
            fileset: Fileset {
                name: "otx_pulses",
                history: "logs-ti_threatbeat.otx_pulses-default",
                latest: "logs-ti_threatbeat_latest.otx_pulses",
                history_key: |document| pair(document, "otx.pulse.id", "otx.id"),
                state_key: |document| pair(document, "otx.pulse.id", "otx.id"),
            },
            history: otx_history,
            current: otx_current,
        },
        Expected {
            fileset: Fileset {
                name: "misp_feed",
                history: "logs-ti_threatbeat.misp_feed-default",
                latest: "logs-ti_threatbeat_latest.misp_feed",
                history_key: |document| pair(document, "misp.uuid", "misp.attribute.uuid"),
                state_key: |document| pair(document, "misp.uuid", "misp.attribute.uuid"),
            },
            history: misp_history,
            current: misp_current,
        },
        Expected {
            fileset: Fileset {
                name: "blocklist",
                history: "logs-ti_threatbeat.blocklist-default",
                latest: "logs-ti_threatbeat_latest.blocklist",
                history_key: |document| text(document, "blocklist.value"),
                state_key: |document| text(document, "blocklist.value"),
            },
            history: list_history,
            current: list_current,
        },
    ];
    // The data has every case the test is about: something expired or
    // revoked (history only) and something valid in every fileset.
    for fileset in &expected {
        let only_history = fileset.history.len() - fileset.current.len();
        assert!(
            fileset.current.len() >= 50 && only_history >= 5,
            "{}: {} history, {} current",
            fileset.fileset.name,
            fileset.history.len(),
            fileset.current.len()
        );
    }
    let total: usize = expected.iter().map(|fileset| fileset.history.len()).sum();

    let mut home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write(
        "threatbeat.yml",
        &config(
            &cluster.url(),
            &taxii.url(COLLECTION_PATH),
            &abusech.url("/api/v1/"),
            &otx.url(PULSES_PATH),
            &feed.base_url(),
            &lists.url(LIST_PATH),
        ),
    );

    // As an operator would: the templates first, so that the history indices
    // are data streams (create only: a second write of an `_id` is a 409).
    let mut setup = home.command();
    setup.args(["setup", "--index-management"]);
    let output = tokio::task::spawn_blocking(move || setup.output().expect("the binary runs"))
        .await
        .expect("setup finishes");
    assert!(output.status.success(), "{}", stderr_text(&output));

    let mut random = Random::from_env_or_clock();
    let blocklist_latest = expected[4].fileset.latest;
    let listed = |value: &str| {
        cluster
            .documents(blocklist_latest)
            .iter()
            .any(|document| text(&document.source, "blocklist.value").as_deref() == Some(value))
    };
    let mut at_kills = Vec::new();
    for round in 0..KILLS {
        if round == 2 {
            lists.set_list(LIST_PATH, &blocklist_text(&second_list));
        }
        let bulks_before = cluster.bulk_request_count();
        let mut agent = home.spawn();
        // Kill once this run delivers and a random share of the sync (in its
        // own fifth of it) has arrived, a random moment later.
        let share = random.between(50 + 200 * round as u64, 250 + 200 * round as u64);
        let reached = wait_for(PATIENCE, || {
            cluster.bulk_request_count() > bulks_before
                && delivered(&cluster, &expected) as u64 * 1000 >= share * total as u64
        })
        .await;
        assert!(
            reached,
            "round {round}: {} of {total} history documents, {share}‰ awaited\n{}",
            delivered(&cluster, &expected),
            agent.log_tail()
        );
        if round == 1 {
            // The value the list drops is in the current state before it goes.
            let in_state = wait_for(PATIENCE, || listed(&removed)).await;
            assert!(
                in_state,
                "{removed} never reached the current state\n{}",
                agent.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(random.between(0, 400))).await;
        assert!(
            agent.is_running(),
            "round {round}: the agent stopped by itself\n{}",
            agent.log_tail()
        );
        agent.kill_9();
        let arrived = delivered(&cluster, &expected);
        let queued = queue_pending_events(&home);
        let per_fileset: Vec<String> = expected
            .iter()
            .map(|fileset| {
                let history = cluster.document_count(fileset.fileset.history);
                format!("{} {history}/{}", fileset.fileset.name, fileset.history.len())
            })
            .collect();
        eprintln!(
            "round {round}: killed at {arrived} of {total} history documents ({share}‰ awaited; {}), {queued} events left in the queue",
            per_fileset.join(", ")
        );
        at_kills.push((arrived, queued));
    }
    assert!(
        at_kills.iter().filter(|(arrived, _)| *arrived < total).count() >= 3,
        "at least three kills landed during the sync: {at_kills:?} of {total}"
    );
    assert!(
        at_kills.iter().any(|(_, queued)| *queued > 0),
        "some kill landed with unacknowledged events in the queue: {at_kills:?}"
    );

    // The last run: until everything is there, a few more polls, a graceful stop.
    let mut agent = home.spawn();
    let complete = wait_for(PATIENCE, || {
        expected
            .iter()
            .all(|fileset| problems(&cluster, fileset).is_empty())
    })
    .await;
    let pending: Vec<String> = expected
        .iter()
        .flat_map(|fileset| problems(&cluster, fileset))
        .collect();
    assert!(
        complete,
        "the sync never completed:\n{}\n{}",
        pending.join("\n"),
        agent.log_tail()
    );
    let polls_before = taxii.requests().len();
    let polled = wait_for(PATIENCE, || taxii.requests().len() >= polls_before + 2).await;
    assert!(polled, "{}", agent.log_tail());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = tokio::task::block_in_place(|| agent.terminate());
    assert!(status.success(), "{status}\n{}", agent.log_tail());

    let found: Vec<String> = expected
        .iter()
        .flat_map(|fileset| problems(&cluster, fileset))
        .collect();
    assert!(found.is_empty(), "after the graceful stop:\n{}", found.join("\n"));
    for fileset in &expected {
        let history = fileset.fileset.history;
        assert!(cluster.is_data_stream(history), "{history} is a data stream");
        assert_eq!(
            cluster.document_count(history),
            fileset.history.len(),
            "{history}"
        );
        assert_eq!(
            cluster.document_count(fileset.fileset.latest),
            fileset.current.len(),
            "{}",
            fileset.fileset.latest
        );
    }
    assert!(!listed(&removed), "{removed} left the blocklist's current state");
    assert!(listed(&added), "{added} joined the blocklist's current state");
    let mut indices: Vec<&str> = expected
        .iter()
        .flat_map(|fileset| [fileset.fileset.history, fileset.fileset.latest])
        .collect();
    indices.sort_unstable();
    assert_eq!(
        cluster.indices(),
        indices,
        "nothing went elsewhere (no dead letters)"
    );
    assert_eq!(
        queue_pending_events(&home),
        0,
        "the queue is empty after a graceful stop"
    );
}
