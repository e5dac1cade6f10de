//! `threatintel/threatfox` end to end: the real binary, the fileset's own
//! httpjson input, and the abuse.ch simulator's ThreatFox API
//! (`threatbeat_test_support::abusech`) on loopback.
//!
//! * a `get_iocs` answer written from ThreatFox's documented example gives
//!   the ECS documents written by hand beside it
//!   (`test-support/data/threatfox/`), field by field;
//! * the first poll asks `days` from `var.first_interval` (capped at 7); a
//!   restart asks the whole days since the stored cursor (at least 1, at
//!   most 7), so nothing is lost, and re-read IOCs keep their `_id`;
//! * `no_result` is an empty, successful poll;
//! * a missing or unknown Auth-Key (401 / 403) fails the poll loudly,
//!   publishes nothing, stores no cursor;
//! * a truncated or HTML answer is logged with the fileset and the URL, the
//!   cursor stays, and the next run recovers;
//! * the current state holds one document per valid IOC, none for expired ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use threatbeat_core::CursorStore;
use threatbeat_test_support::abusech::{threatfox_format, AbusechSimulator, Fault};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::data::fixture;
use threatbeat_test_support::golden::{compare_unordered, history_documents, FILEBEAT_HARNESS_FIELDS};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

const PIPELINE: &str = "threatintel/threatfox";
const HISTORY: &str = "logs-ti_threatbeat.threatfox-default";
const LATEST: &str = "logs-ti_threatbeat_latest.threatfox";
const PATH: &str = "/api/v1/";
/// A key the simulator accepts.
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const DAY: i64 = 86_400;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A home whose only pipeline is `threatintel/threatfox` against `sim`;
/// `extra` lines go under the fileset.
fn home(sim: &AbusechSimulator, key: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    threatfox:
      var.url: {url}
      var.auth_key: {key}
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
"#,
            url = sim.url(PATH),
        ),
    );
    home
}

async fn simulator() -> AbusechSimulator {
    let sim = AbusechSimulator::start().await;
    sim.require_auth_keys(&[KEY]);
    sim
}

/// An IOC record as ThreatFox answers it, first seen at `first_seen`.
fn ioc(id: u32, first_seen: i64, last_seen: Option<i64>) -> Value {
    json!({
        "id": id.to_string(),
        "ioc": format!("c2-{id}.example"),
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
}

fn names(ids: impl IntoIterator<Item = u32>) -> Vec<String> {
    ids.into_iter().map(|id| format!("c2-{id}.example")).collect()
}

/// The current state holds one document per IOC of `valid`, nothing else.
fn assert_current_state(documents: &[Value], valid: &[String]) {
    shared_assert_current_state(
        documents,
        HISTORY,
        LATEST,
        |document| {
            document["threat"]["indicator"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        },
        valid,
    );
}

/// Each history `_id` always holds the same ThreatFox IOC (re-reads
/// overwrite), and there are `expected` of them.
fn assert_one_id_per_ioc(documents: &[Value], expected: usize) {
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for document in in_index(documents, HISTORY) {
        let id = document["@metadata"]["_id"].as_str().expect("an _id").to_owned();
        let ioc = document["event"]["id"].as_str().expect("event.id").to_owned();
        let previous = by_id.insert(id.clone(), ioc.clone());
        assert!(
            previous.as_ref().is_none_or(|previous| *previous == ioc),
            "{id}: {previous:?} and {ioc}"
        );
    }
    assert_eq!(by_id.len(), expected, "{by_id:?}");
}

/// The `days` of every ThreatFox request, in order.
fn days_asked(sim: &AbusechSimulator) -> Vec<Value> {
    sim.threatfox_requests()
        .iter()
        .map(|request| {
            request
                .json
                .as_ref()
                .map_or(Value::Null, |body| body["days"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_answer_gives_the_hand_written_documents() {
    let sim = simulator().await;
    let answer: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("threatfox/get_iocs.json")).expect("the sample answer"),
    )
    .expect("JSON");
    let expected: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("threatfox/get_iocs.json-expected.json"))
            .expect("the expected documents"),
    )
    .expect("JSON");
    sim.set_iocs(answer["data"].as_array().cloned().expect("data"));
    // The sample is from December 2020: ThreatFox's clock then.
    sim.set_threatfox_now(
        chrono::DateTime::parse_from_rfc3339("2020-12-08T23:59:59Z")
            .unwrap()
            .timestamp(),
    );
    let home = home(&sim, KEY, "");

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = history_documents(all.clone());
    // The read time (`@timestamp`) and the mark for the rules are the agent's own.
    let mut ignored = FILEBEAT_HARNESS_FIELDS.to_vec();
    ignored.extend(["@timestamp", "labels.is_ioc_transform_source"]);
    let report = compare_unordered("threatfox/get_iocs.json", &documents, &expected, &ignored);
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(report.documents_matched, 9);
    assert_eq!(unique_ids(&documents), 9);
    assert!(documents.iter().all(|document| document.get("error").is_none()));
    // Seen in 2020: long expired, none is current.
    assert_eq!(all.len(), 9);
    assert_current_state(&all, &[]);

    // One POST, the documented JSON body with the first interval's 7 days,
    // the key in `Auth-Key`.
    let requests = sim.threatfox_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].status, 200);
    assert_eq!(requests[0].items, 9);
    assert_eq!(requests[0].auth_key.as_deref(), Some(KEY));
    assert!(requests[0]
        .content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("application/json")));
    assert_eq!(requests[0].json, Some(json!({"query": "get_iocs", "days": 7})));

    // The id: SHA-1 of the ThreatFox id, the same on every read.
    let gaga = documents
        .iter()
        .find(|document| document["event"]["id"] == "41")
        .expect("IOC 41");
    assert_eq!(gaga["@metadata"]["index"], HISTORY);
    let again = home.run_once_async().await;
    assert!(again.status.success(), "{}", stderr_text(&again));
    // The next poll asks one day: the three IOCs first seen on December 8th
    // again, under the same ids.
    assert_eq!(days_asked(&sim), [json!(7), json!(1)]);
    let reread = home.documents();
    assert_eq!(reread.len(), 12);
    assert_eq!(unique_ids(&reread), 9, "a re-read overwrites");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_asks_the_days_since_the_stored_cursor_and_loses_nothing() {
    let sim = simulator().await;
    let now = now();
    sim.set_iocs(
        (1..=10)
            .map(|id| ioc(id, now - 2 * DAY + i64::from(id) * 60, None))
            .collect(),
    );
    // A first interval of 30 days asks ThreatFox's maximum, 7.
    let home = home(&sim, KEY, "      var.first_interval: 30d");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(days_asked(&sim), [json!(7)]);
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 10);
    assert_current_state(&all, &names(1..=10));
    let cursor = home.cursor(PIPELINE).expect("a cursor after the first run");
    let stored = cursor["last_poll"].as_i64().expect("cursor.last_poll");
    // The poll's time less the request timeout (120 s by default).
    assert!((now - 120 - 5..=now - 120 + 60).contains(&stored), "{cursor}");

    // The agent was down for three days and an hour; IOCs arrived meanwhile.
    let down_since = now - 3 * DAY - 3600;
    CursorStore::new(&home.path("data"))
        .store(PIPELINE, &json!({"last_poll": down_since}))
        .expect("cursor written");
    sim.add_iocs(
        (11..=15)
            .map(|id| ioc(id, now - DAY + i64::from(id) * 60, None))
            .collect(),
    );
    sim.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    // 3 days and 1 hour, rounded up.
    assert_eq!(days_asked(&sim), [json!(4)]);
    let all = home.documents();
    assert_one_id_per_ioc(&all, 15);
    assert_eq!(unique_ids(&in_index(&all, LATEST)), 15);
    assert_current_state(&all, &names(1..=15));
    let moved = home.cursor(PIPELINE).expect("cursor")["last_poll"]
        .as_i64()
        .unwrap();
    assert!(moved > down_since + 3 * DAY, "the cursor moved to this poll");

    // Right after: one day, ThreatFox's minimum.
    sim.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(days_asked(&sim), [json!(1)]);

    // Down for ten days: ThreatFox's maximum, 7.
    CursorStore::new(&home.path("data"))
        .store(PIPELINE, &json!({"last_poll": now - 10 * DAY}))
        .expect("cursor written");
    sim.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(days_asked(&sim), [json!(7)]);
    assert_one_id_per_ioc(&home.documents(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_result_is_an_empty_successful_poll_that_moves_the_cursor() {
    let sim = simulator().await;
    // Seen 10 days ago: outside any window ThreatFox answers.
    sim.set_iocs(vec![ioc(1, now() - 10 * DAY, None)]);
    let home = home(&sim, KEY, "      var.first_interval: 2d");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(days_asked(&sim), [json!(2)]);
    assert_eq!(sim.threatfox_requests()[0].status, 200);
    assert!(home.documents().is_empty());
    assert!(
        home.cursor(PIPELINE)
            .is_some_and(|cursor| cursor["last_poll"].is_i64()),
        "an empty poll records where it looked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unknown_auth_key_fails_the_poll_with_the_fileset_and_url() {
    for (key, status, answer) in [
        ("not-a-registered-key", "403", "unknown_auth_key"),
        ("\"\"", "401", "Unauthorized"),
    ] {
        let sim = simulator().await;
        sim.set_iocs(vec![ioc(1, now() - 3600, None)]);
        let home = home(&sim, key, "");
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(
            !output.status.success(),
            "{key}: a failed poll fails `run --once`:\n{log}"
        );
        assert!(log.contains(PIPELINE), "{key}: names the fileset:\n{log}");
        assert!(log.contains(&sim.url(PATH)), "{key}: names the URL:\n{log}");
        assert!(log.contains(status), "{key}:\n{log}");
        assert!(log.contains(answer), "{key}: abuse.ch's own answer:\n{log}");
        assert!(
            !log.contains("not-a-registered-key"),
            "the key is never logged:\n{log}"
        );
        assert!(home.documents().is_empty(), "{key}");
        assert!(home.cursor(PIPELINE).is_none(), "{key}: no cursor");
        let requests = sim.threatfox_requests();
        assert_eq!(requests.len(), 1, "{key}: a refused key is not retried");
        assert_eq!(requests[0].items, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_logged_keeps_the_cursor_and_the_next_run_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage] {
        let sim = simulator().await;
        let now = now();
        sim.set_iocs((1..=5).map(|id| ioc(id, now - 3600, None)).collect());
        let home = home(&sim, KEY, "");
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{}", stderr_text(&output));
        let after_first = home.cursor(PIPELINE).expect("cursor");
        sim.add_iocs((6..=8).map(|id| ioc(id, now - 60, None)).collect());

        sim.push_faults([fault.clone()]);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains(PIPELINE), "{fault:?}:\n{log}");
        assert!(log.contains(&sim.url(PATH)), "{fault:?}:\n{log}");
        assert_eq!(
            home.cursor(PIPELINE),
            Some(after_first.clone()),
            "{fault:?}: cursor unmoved"
        );
        assert_eq!(
            in_index(&home.documents(), HISTORY).len(),
            5,
            "{fault:?}: nothing published from the bad answer"
        );
        assert_eq!(home.documents().len(), 10, "{fault:?}: nor its current state");

        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let all = home.documents();
        assert_one_id_per_ioc(&all, 8);
        assert_current_state(&all, &names(1..=8));
        assert_ne!(
            home.cursor(PIPELINE),
            Some(after_first),
            "{fault:?}: the cursor moves on"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_neither_ok_nor_no_result_fails_the_poll() {
    let sim = simulator().await;
    sim.set_iocs(vec![ioc(1, now() - 3600, None)]);
    let home = home(&sim, KEY, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let after_first = home.cursor(PIPELINE).expect("cursor");

    sim.push_faults([Fault::QueryStatus("illegal_days")]);
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "the poll fails:\n{log}");
    assert!(log.contains(PIPELINE), "{log}");
    assert!(log.contains(&sim.url(PATH)), "{log}");
    assert!(log.contains("body.data"), "the refused answer is named:\n{log}");
    assert_eq!(home.cursor(PIPELINE), Some(after_first), "cursor unmoved");
    assert_eq!(home.documents().len(), 2, "nothing more published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_state_holds_the_valid_iocs_only() {
    let sim = simulator().await;
    let now = now();
    sim.set_iocs(vec![
        // Seen a day ago: valid for 3 days.
        ioc(1, now - DAY, None),
        // First seen 4 days ago, never again: expired.
        ioc(2, now - 4 * DAY, None),
        // First seen 5 days ago, last seen an hour ago: valid.
        ioc(3, now - 5 * DAY, Some(now - 3600)),
        // Last seen 3 days and an hour ago: expired.
        ioc(4, now - 6 * DAY, Some(now - 3 * DAY - 3600)),
    ]);
    let home = home(&sim, KEY, "      var.ioc_expiration_duration: 3d");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 4, "the history keeps every IOC");
    assert_current_state(&all, &names([1, 3]));
    assert_eq!(
        in_index(&all, LATEST).len(),
        2,
        "nothing written for the expired ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_input_reads_a_saved_answer_into_the_same_documents() {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data\nthreatbeat.modules:\n  - module: threatintel\n    threatfox:\n      var.input: file\n      var.paths: [\"{}\"]\noutput.file: {{path: out, filename: docs}}\n",
            fixture("threatfox/get_iocs.json").display()
        ),
    );
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = in_index(&all, HISTORY);
    let expected: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("threatfox/get_iocs.json-expected.json"))
            .expect("the expected documents"),
    )
    .expect("JSON");
    let mut ignored = FILEBEAT_HARNESS_FIELDS.to_vec();
    ignored.extend(["@timestamp", "labels.is_ioc_transform_source"]);
    let report = compare_unordered("threatfox/get_iocs.json (file)", &documents, &expected, &ignored);
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(unique_ids(&documents), 9);
    // Seen in 2020: expired, no current-state copy.
    assert_eq!(all.len(), 9);
}
