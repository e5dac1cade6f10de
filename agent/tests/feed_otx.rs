//! `threatintel/otx` end to end: the real binary, the fileset's own httpjson
//! input, and the OTX simulator (`threatbeat_test_support::otx`) on loopback.
//!
//! * Elastic's golden records served as an export give Elastic's golden documents;
//! * paging follows `next` and stops on the last page;
//! * a restart asks from the stored cursor (`modified_since`), nothing lost or repeated;
//! * a bad key (403) fails the poll loudly, publishes nothing, moves no cursor;
//! * a truncated or HTML answer is logged with the fileset and the URL, the cursor
//!   stays, and the next run recovers;
//! * a 429 waits `Retry-After` and goes on;
//! * beside the history (`logs-ti_threatbeat.otx-default`, marked for the rules
//!   to skip), the current state (`logs-ti_threatbeat_latest.otx`) holds one
//!   document per valid indicator (OTX id): the export's records carry no time,
//!   so each is valid from when it was read.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::golden::{compare_unordered, filebeat_ignored, golden_pair, history_documents};
use threatbeat_test_support::otx::{parse_time, Fault, OtxSimulator, API_KEY, AUTH_REQUIRED, EXPORT_PATH};

/// The cursor file of the pipeline `threatintel/otx`.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The history data stream and the current-state index of the fileset.
const HISTORY: &str = "logs-ti_threatbeat.otx-default";
const LATEST: &str = "logs-ti_threatbeat_latest.otx";

/// The current state holds one document per indicator of `valid`, nothing else.
fn assert_current_state(documents: &[Value], valid: &[String]) {
    shared_assert_current_state(documents, HISTORY, LATEST, indicator_value, valid);
}

/// The indicator a document holds, wherever its type put it.
fn indicator_value(document: &Value) -> String {
    let indicator = &document["threat"]["indicator"];
    [
        &indicator["ip"],
        &indicator["url"]["domain"],
        &indicator["url"]["original"],
        &indicator["file"]["hash"]["md5"],
        &indicator["file"]["hash"]["sha256"],
        &document["otx"]["indicator"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .unwrap_or_default()
    .to_owned()
}

fn epoch(rfc3339: &str) -> i64 {
    parse_time(rfc3339).unwrap_or_else(|| panic!("not RFC 3339: {rfc3339}"))
}

/// A home whose only pipeline is `threatintel/otx` against `otx`, writing
/// NDJSON to `out/`; `extra` is appended to the fileset's settings.
fn home(otx: &OtxSimulator, key: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    otx:
      var.url: {url}
      var.api_token: {key}
{types}      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
"#,
            url = otx.url(EXPORT_PATH),
            // Every type unless the test asks for some.
            types = if extra.contains("var.types") {
                ""
            } else {
                "      var.types: \"\"\n"
            },
        ),
    );
    home
}

fn indicator(id: i64, value: &str, kind: &str) -> Value {
    json!({"id": id, "indicator": value, "type": kind})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_records_served_as_an_export_give_the_golden_documents_and_paging_ends() {
    let otx = OtxSimulator::start().await;
    let (records, expected) = golden_pair("otx", "otx_sample.ndjson.log");
    otx.add_indicators(records.clone(), now() - 3600);
    otx.set_page_size(10);
    let home = home(&otx, API_KEY, "");

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let all = home.documents();
    let documents = history_documents(all.clone());
    let report = compare_unordered(
        "otx_sample.ndjson.log",
        &documents,
        &expected,
        &filebeat_ignored("otx"),
    );
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(report.documents_matched, 83);
    assert_eq!(documents.len(), 83);
    // Read just now, every record is valid: one current-state copy each, by OTX id.
    assert_eq!(all.len(), 166);
    assert_eq!(unique_ids(&in_index(&all, LATEST)), 83);
    assert_current_state(&all, &documents.iter().map(indicator_value).collect::<Vec<_>>());

    // 83 records in pages of 10: 9 requests, following `next`, the last
    // answering `next: null`; no request after it.
    let exports = otx.exports();
    assert_eq!(exports.len(), 9, "{exports:#?}");
    for (number, request) in exports.iter().enumerate() {
        assert_eq!(request.status, 200);
        assert_eq!(request.api_key.as_deref(), Some(API_KEY));
        let page = request.param("page").map_or(1, |page| page.parse().unwrap());
        assert_eq!(page, number + 1);
        // The window start sent on page 1 is carried by every `next` link.
        assert_eq!(
            request.param("modified_since"),
            exports[0].param("modified_since")
        );
    }
    assert!(exports[8].next.is_none());
    assert_eq!(exports.iter().map(|request| request.items).sum::<usize>(), 83);

    // Filebeat's ids: Beats' fingerprint of `json.id` (SHA-256, hex).
    let first = documents
        .iter()
        .find(|document| document["threat"]["indicator"]["ip"] == "86.104.194.30")
        .unwrap();
    assert_eq!(
        first["@metadata"]["_id"],
        "a0bcbe58496a96a6485f146b32ba8b08fbb2ee345fa82782648d878553ec63fc"
    );
    assert_eq!(first["@metadata"]["index"], "logs-ti_threatbeat.otx-default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_poll_looks_back_first_interval_and_sends_filebeats_request() {
    let otx = OtxSimulator::start().await;
    otx.add_indicators(vec![indicator(1, "198.51.100.1", "IPv4")], now() - 3 * 86400);
    otx.add_indicators(vec![indicator(2, "evil.example", "domain")], now() - 3 * 3600);
    let home = home(
        &otx,
        API_KEY,
        "      var.types: \"domain,IPv4\"\n      var.first_interval: 24h",
    );
    let before = now();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let exports = otx.exports();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].param("types"), Some("domain,IPv4"));
    let since = epoch(exports[0].param("modified_since").unwrap());
    assert!(
        (before - 86400 - 5..=now() - 86400 + 5).contains(&since),
        "{since}"
    );
    let all = home.documents();
    let documents = in_index(&all, HISTORY);
    assert_eq!(documents.len(), 1, "only the indicator of the last 24 h");
    assert_eq!(
        documents[0]["threat"]["indicator"]["url"]["domain"],
        "evil.example"
    );
    assert_eq!(all.len(), 2);
    assert_current_state(&all, &["evil.example".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_asks_from_the_stored_cursor_and_loses_or_repeats_nothing() {
    let otx = OtxSimulator::start().await;
    // Modified 3 h ago: inside first_interval (24 h), outside the 2 h lookback.
    otx.add_indicators(
        (1..=25)
            .map(|id| indicator(id, &format!("203.0.113.{id}"), "IPv4"))
            .collect(),
        now() - 3 * 3600,
    );
    let home = home(&otx, API_KEY, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 25);
    assert_eq!(all.len(), 50, "the history and one current-state copy each");

    // Filebeat's cursor: now - lookback_range (2 h), RFC 3339.
    let stored = home
        .cursor("threatintel/otx")
        .expect("a cursor after the first run");
    let stored_since = stored["timestamp"].as_str().expect("cursor.timestamp").to_owned();
    let stored_time = epoch(&stored_since);
    assert!(
        (now() - 7200 - 60..=now() - 7200 + 5).contains(&stored_time),
        "{stored_since}"
    );

    // New indicators while the agent is down, then a second run.
    otx.add_indicators(
        (26..=32)
            .map(|id| indicator(id, &format!("new{id}.example"), "hostname"))
            .collect(),
        now() - 60,
    );
    otx.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let exports = otx.exports();
    assert_eq!(exports[0].param("modified_since"), Some(stored_since.as_str()));
    let all = home.documents();
    let documents = in_index(&all, HISTORY);
    assert_eq!(documents.len(), 32, "25 from the first run, 7 from the second");
    assert_eq!(unique_ids(&documents), 32, "no document twice");
    assert_eq!(in_index(&all, LATEST).len(), 32, "each indicator written once");
    let mut valid: Vec<String> = (1..=25).map(|id| format!("203.0.113.{id}")).collect();
    valid.extend((26..=32).map(|id| format!("new{id}.example")));
    assert_current_state(&all, &valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_fails_the_poll_with_the_fileset_and_url_and_publishes_nothing() {
    let otx = OtxSimulator::start().await;
    otx.add_indicators(vec![indicator(1, "198.51.100.1", "IPv4")], now() - 60);
    let home = home(&otx, "not-the-key", "");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(
        !output.status.success(),
        "a failed poll fails `run --once`:\n{log}"
    );
    assert!(log.contains("threatintel/otx"), "{log}");
    assert!(log.contains(&otx.url(EXPORT_PATH)), "{log}");
    assert!(log.contains("403"), "{log}");
    assert!(log.contains(AUTH_REQUIRED), "OTX's own message is shown:\n{log}");
    assert!(!log.contains("not-the-key"), "the key is never logged:\n{log}");
    assert!(home.documents().is_empty());
    assert!(
        home.cursor("threatintel/otx").is_none(),
        "no cursor: {:?}",
        home.cursor("threatintel/otx")
    );
    // A 403 is not retried.
    assert_eq!(otx.exports().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_logged_keeps_the_cursor_and_the_next_run_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage] {
        let otx = OtxSimulator::start().await;
        otx.add_indicators(
            (1..=15)
                .map(|id| indicator(id, &format!("198.51.100.{id}"), "IPv4"))
                .collect(),
            now() - 60,
        );
        otx.set_page_size(10);
        let home = home(&otx, API_KEY, "");

        let output = home.run_once_async().await;
        assert!(output.status.success(), "{}", stderr_text(&output));
        let after_first = home.cursor("threatintel/otx").expect("cursor");
        otx.add_indicators(
            (16..=18)
                .map(|id| indicator(id, &format!("198.51.100.{id}"), "IPv4"))
                .collect(),
            now(),
        );

        otx.push_faults([fault.clone()]);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains("threatintel/otx"), "{fault:?}:\n{log}");
        assert!(log.contains(&otx.url(EXPORT_PATH)), "{fault:?}:\n{log}");
        assert_eq!(
            home.cursor("threatintel/otx"),
            Some(after_first.clone()),
            "{fault:?}: cursor unmoved"
        );
        assert_eq!(
            in_index(&home.documents(), HISTORY).len(),
            15,
            "{fault:?}: nothing published from the bad answer"
        );
        assert_eq!(home.documents().len(), 30, "{fault:?}: nor its current state");

        // The next run recovers and reads what the bad answer hid.
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let all = home.documents();
        assert_eq!(unique_ids(&in_index(&all, HISTORY)), 18, "{fault:?}");
        assert_current_state(
            &all,
            &(1..=18).map(|id| format!("198.51.100.{id}")).collect::<Vec<_>>(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_request_waits_retry_after_and_goes_on() {
    let otx = OtxSimulator::start().await;
    otx.add_indicators(
        (1..=12)
            .map(|id| indicator(id, &format!("198.51.100.{id}"), "IPv4"))
            .collect(),
        now() - 60,
    );
    otx.set_page_size(10);
    otx.push_faults([Fault::RateLimited(1)]);
    let home = home(&otx, API_KEY, "");
    // Retries on: 429 is retried after the server's Retry-After.
    let config = fs::read_to_string(home.path("threatbeat.yml")).unwrap().replace(
        "{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}",
        "{max_attempts: 3, wait_min: 10ms, wait_max: 10ms}",
    );
    home.write("threatbeat.yml", &config);
    let started = Instant::now();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let statuses: Vec<u16> = otx.exports().iter().map(|request| request.status).collect();
    assert_eq!(statuses, [429, 200, 200]);
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 12);
    assert_eq!(all.len(), 24);
}
