//! `threatintel/otx_pulses` end to end: the real binary, the fileset's own
//! httpjson input, and the OTX simulator's subscribed pulses
//! (`threatbeat_test_support::otx`) on loopback.
//!
//! * pulses written in OTX's documented shape, served over several pages
//!   (`next` links), give the ECS documents written by hand beside them
//!   (`test-support/data/otx_pulses/`), one per pulse indicator;
//! * a restart asks `modified_since` = the newest pulse `modified` of the last
//!   poll: nothing lost, and only the boundary pulse read again (same `_id`s);
//! * a bad key (403) fails the poll loudly, publishes nothing, moves no cursor;
//! * a truncated or HTML answer, on the first page or a later one, is logged
//!   with the fileset and the URL, the cursor stays, and the next run recovers;
//! * the current state holds one document per valid indicator: none for
//!   expired, ended (`is_active: 0`) or past-`expiration` ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::data::fixture;
use threatbeat_test_support::golden::{compare_unordered, history_documents, FILEBEAT_HARNESS_FIELDS};
use threatbeat_test_support::otx::{parse_time, Fault, OtxSimulator, API_KEY, AUTH_REQUIRED, PULSES_PATH};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

const PIPELINE: &str = "threatintel/otx_pulses";
const HISTORY: &str = "logs-ti_threatbeat.otx_pulses-default";
const LATEST: &str = "logs-ti_threatbeat_latest.otx_pulses";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `seconds` as OTX writes a time: `2023-08-22T09:43:18.855000` (UTC).
fn otx_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_default()
}

fn epoch(text: &str) -> i64 {
    parse_time(text).unwrap_or_else(|| panic!("not a time: {text}"))
}

/// A home whose only pipeline is `threatintel/otx_pulses` against `otx`;
/// `extra` lines go under the fileset.
fn home(otx: &OtxSimulator, key: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    otx_pulses:
      var.url: {url}
      var.api_token: {key}
      var.limit: 2
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
"#,
            url = otx.url(PULSES_PATH),
        ),
    );
    home
}

/// Pulse `number`, modified at `modified`, with two IPv4 indicators
/// (`198.51.<number>.1` and `.2`, ids `number * 10 + 1` and `+ 2`).
fn pulse(number: u32, modified: i64) -> Value {
    let indicator = |last: u32| {
        json!({
            "id": number * 10 + last,
            "indicator": format!("198.51.{number}.{last}"),
            "type": "IPv4",
            "created": otx_time(modified),
            "content": "",
            "title": "",
            "description": "",
            "expiration": null,
            "is_active": 1,
            "role": null,
        })
    };
    json!({
        "id": format!("{number:024x}"),
        "name": format!("Pulse {number}"),
        "description": "",
        "author_name": "tester",
        "created": otx_time(modified),
        "modified": otx_time(modified),
        "revision": 1,
        "tlp": "green",
        "public": 1,
        "adversary": "",
        "tags": ["test"],
        "targeted_countries": [],
        "malware_families": [],
        "attack_ids": [],
        "references": [],
        "indicators": [indicator(1), indicator(2)],
    })
}

fn ips(pulses: impl IntoIterator<Item = u32>) -> Vec<String> {
    pulses
        .into_iter()
        .flat_map(|number| [format!("198.51.{number}.1"), format!("198.51.{number}.2")])
        .collect()
}

/// The indicator a document holds, wherever its type put it.
fn indicator_value(document: &Value) -> String {
    let indicator = &document["threat"]["indicator"];
    [
        &indicator["ip"],
        &indicator["url"]["domain"],
        &indicator["url"]["original"],
        &indicator["email"]["address"],
        &indicator["file"]["hash"]["md5"],
        &indicator["file"]["hash"]["sha256"],
        &document["otx"]["indicator"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .unwrap_or_default()
    .to_owned()
}

/// The current state holds one document per indicator of `valid`, nothing else.
fn assert_current_state(documents: &[Value], valid: &[String]) {
    shared_assert_current_state(documents, HISTORY, LATEST, indicator_value, valid);
}

/// How many history documents each indicator value has.
fn history_counts(documents: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for document in in_index(documents, HISTORY) {
        *counts.entry(indicator_value(&document)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_pulses_over_several_pages_give_the_hand_written_documents() {
    let otx = OtxSimulator::start().await;
    let pulses: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("otx_pulses/pulses.json")).expect("the sample pulses"),
    )
    .expect("JSON");
    let expected: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("otx_pulses/pulses.json-expected.json"))
            .expect("the expected documents"),
    )
    .expect("JSON");
    otx.add_pulses(pulses);
    // The sample is from August 2023.
    let home = home(&otx, API_KEY, "      var.first_interval: 5000d");

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = history_documents(all.clone());
    let mut ignored = FILEBEAT_HARNESS_FIELDS.to_vec();
    ignored.push("labels.is_ioc_transform_source");
    let report = compare_unordered("otx_pulses/pulses.json", &documents, &expected, &ignored);
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(report.documents_matched, 8);
    assert_eq!(unique_ids(&documents), 8);
    assert!(documents.iter().all(|document| document.get("error").is_none()));
    // Modified in 2023: expired after 90 days, except the indicator whose
    // `expiration` is in 2099; the other one of 2099 is no longer active.
    assert_current_state(&all, &["198.51.100.98".to_owned()]);

    // 5 pulses by 2: three pages, following `next`, the last answering
    // `next: null`, the window the same on every page.
    let requests = otx.pulse_requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for (number, request) in requests.iter().enumerate() {
        assert_eq!(request.status, 200);
        assert_eq!(request.api_key.as_deref(), Some(API_KEY));
        assert_eq!(request.param("limit"), Some("2"));
        let page = request.param("page").map_or(1, |page| page.parse().unwrap());
        assert_eq!(page, number + 1);
        assert_eq!(
            request.param("modified_since"),
            requests[0].param("modified_since")
        );
    }
    assert_eq!(
        requests.iter().map(|request| request.items).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    assert!(requests[2].next.is_none());
    let since = epoch(requests[0].param("modified_since").expect("modified_since"));
    assert!((now() - 5000 * 86_400 - 60..=now() - 5000 * 86_400 + 5).contains(&since));

    // The cursor: the newest pulse `modified` (2023-08-22T09:43:18.855), to the second.
    let cursor = home.cursor(PIPELINE).expect("a cursor");
    assert_eq!(cursor, json!({"modified_since": "2023-08-22T09:43:18Z"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_asks_from_the_newest_modified_and_loses_or_repeats_nothing() {
    let otx = OtxSimulator::start().await;
    let now = now();
    otx.add_pulses(vec![
        pulse(1, now - 3 * 3600),
        pulse(2, now - 2 * 3600),
        pulse(3, now - 3600),
    ]);
    // Modified before the first look-back (24 h): never asked for.
    otx.add_pulses(vec![pulse(9, now - 2 * 86_400)]);
    let home = home(&otx, API_KEY, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 6);
    assert_current_state(&all, &ips(1..=3));
    let first = otx.pulse_requests();
    assert_eq!(first.len(), 2, "3 pulses by 2: {first:#?}");
    let since = epoch(first[0].param("modified_since").expect("modified_since"));
    assert!((now - 86_400 - 5..=now - 86_400 + 60).contains(&since), "{since}");
    let stored = home.cursor(PIPELINE).expect("a cursor after the first run");
    let stored_since = stored["modified_since"]
        .as_str()
        .expect("modified_since")
        .to_owned();
    assert_eq!(epoch(&stored_since), now - 3600, "the newest pulse's `modified`");

    // New and changed pulses while the agent is down.
    otx.add_pulses(vec![pulse(4, now - 600), pulse(5, now - 60)]);
    otx.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = otx.pulse_requests();
    assert_eq!(requests[0].param("modified_since"), Some(stored_since.as_str()));
    // Pulse 3 (modified at the bound, inclusive), 4 and 5.
    assert_eq!(requests.iter().map(|request| request.items).sum::<usize>(), 3);
    let all = home.documents();
    let history = in_index(&all, HISTORY);
    assert_eq!(
        unique_ids(&history),
        10,
        "every indicator of pulses 1 to 5, each under one id"
    );
    let counts = history_counts(&all);
    for value in ips(1..=5) {
        let expected = if value.starts_with("198.51.3.") { 2 } else { 1 };
        assert_eq!(counts.get(&value), Some(&expected), "{value}: {counts:?}");
    }
    assert_current_state(&all, &ips(1..=5));
    assert_eq!(
        epoch(home.cursor(PIPELINE).unwrap()["modified_since"].as_str().unwrap()),
        now - 60
    );

    // Nothing new: the boundary pulse only; the cursor stays.
    otx.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(otx.pulse_requests()[0].items, 1);
    assert_eq!(
        epoch(home.cursor(PIPELINE).unwrap()["modified_since"].as_str().unwrap()),
        now - 60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_fails_the_poll_with_the_fileset_and_url_and_publishes_nothing() {
    let otx = OtxSimulator::start().await;
    otx.add_pulses(vec![pulse(1, now() - 60)]);
    let home = home(&otx, "not-the-key", "");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(
        !output.status.success(),
        "a failed poll fails `run --once`:\n{log}"
    );
    assert!(log.contains(PIPELINE), "{log}");
    assert!(log.contains(&otx.url(PULSES_PATH)), "{log}");
    assert!(log.contains("403"), "{log}");
    assert!(log.contains(AUTH_REQUIRED), "OTX's own message is shown:\n{log}");
    assert!(!log.contains("not-the-key"), "the key is never logged:\n{log}");
    assert!(home.documents().is_empty());
    assert!(home.cursor(PIPELINE).is_none());
    assert_eq!(otx.pulse_requests().len(), 1, "a 403 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_is_logged_keeps_the_cursor_and_the_next_run_recovers() {
    // The first page of the poll, or its second (after a page was published).
    for (fault, normal_pages) in [(Fault::TruncatedJson, 0), (Fault::HtmlPage, 1)] {
        let otx = OtxSimulator::start().await;
        let now = now();
        otx.add_pulses(vec![pulse(1, now - 3 * 3600), pulse(2, now - 2 * 3600)]);
        let home = home(&otx, API_KEY, "");
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{}", stderr_text(&output));
        let after_first = home.cursor(PIPELINE).expect("cursor");
        // Pulse 2 (the bound), 3 and 4: two pages.
        otx.add_pulses(vec![pulse(3, now - 600), pulse(4, now - 60)]);

        otx.push_normal_answers(normal_pages);
        otx.push_faults([fault.clone()]);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains(PIPELINE), "{fault:?}:\n{log}");
        assert!(log.contains(&otx.url(PULSES_PATH)), "{fault:?}:\n{log}");
        assert_eq!(
            home.cursor(PIPELINE),
            Some(after_first.clone()),
            "{fault:?}: cursor unmoved"
        );
        // Only pages answered in full were published.
        let published = in_index(&home.documents(), HISTORY).len();
        assert_eq!(published, 4 + normal_pages * 4, "{fault:?}");

        // The next run reads the whole window again and completes it.
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let all = home.documents();
        assert_eq!(unique_ids(&in_index(&all, HISTORY)), 8, "{fault:?}");
        assert_current_state(&all, &ips(1..=4));
        assert_eq!(
            epoch(home.cursor(PIPELINE).unwrap()["modified_since"].as_str().unwrap()),
            now - 60,
            "{fault:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_state_holds_valid_active_indicators_only() {
    let otx = OtxSimulator::start().await;
    let now = now();
    let mut recent = pulse(1, now - 3600);
    // .1 stays valid (modified an hour ago, 90 days); .2 is no longer active.
    recent["indicators"][1]["is_active"] = json!(0);
    let mut expiring = pulse(2, now - 3600);
    // .1 expired yesterday; .2 expires tomorrow.
    expiring["indicators"][0]["expiration"] = json!(otx_time(now - 86_400));
    expiring["indicators"][1]["expiration"] = json!(otx_time(now + 86_400));
    otx.add_pulses(vec![recent, expiring]);
    let home = home(&otx, API_KEY, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    assert_eq!(
        in_index(&all, HISTORY).len(),
        4,
        "the history keeps every indicator"
    );
    assert_current_state(&all, &["198.51.1.1".to_owned(), "198.51.2.2".to_owned()]);
    assert_eq!(
        in_index(&all, LATEST).len(),
        2,
        "nothing written for the ended ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_input_reads_pulses_into_the_same_documents() {
    let pulses: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("otx_pulses/pulses.json")).expect("the sample pulses"),
    )
    .expect("JSON");
    let home = AgentHome::new(binary());
    // One pulse per line, as a pulse export is usually kept.
    let lines: Vec<String> = pulses.iter().map(Value::to_string).collect();
    home.write("pulses.ndjson", &(lines.join("\n") + "\n"));
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data\nthreatbeat.modules:\n  - module: threatintel\n    otx_pulses:\n      var.input: file\n      var.paths: [\"{}\"]\noutput.file: {{path: out, filename: docs}}\n",
            home.path("pulses.ndjson").display()
        ),
    );
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = in_index(&all, HISTORY);
    let expected: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("otx_pulses/pulses.json-expected.json"))
            .expect("the expected documents"),
    )
    .expect("JSON");
    let mut ignored = FILEBEAT_HARNESS_FIELDS.to_vec();
    ignored.push("labels.is_ioc_transform_source");
    let report = compare_unordered("otx_pulses/pulses.json (file)", &documents, &expected, &ignored);
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_current_state(&all, &["198.51.100.98".to_owned()]);
}
