//! `threatintel/taxii` end to end: the real binary, the fileset's own httpjson
//! input and the TAXII 2.1 simulator (`threatbeat_test_support::taxii21`) on
//! loopback; `var.version: "2.0"` against the TAXII 2.0 simulator.
//!
//! * a hand-written collection of 80 STIX 2.1 objects (52 indicators of every
//!   mapped observable type, compounds, unmappable patterns, markings,
//!   confidences, revoked and expired ones, 28 other objects) served in pages
//!   of 7 with `next` gives, field by field, the hand-written ECS documents
//!   (`test-support/data/taxii21/`), and the current state holds one document
//!   per valid indicator;
//! * a second poll asks `added_after` = the last `X-TAXII-Date-Added-Last`,
//!   byte for byte (microseconds), nothing lost or repeated;
//! * 401 (password, API key), 406 and a broken `next` fail the poll with the
//!   fileset and the URL, leave the cursor after the delivered data only, and
//!   the next run recovers; so does a truncated or HTML answer.

use std::path::Path;

use serde_json::{json, Map, Value};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::data::fixture;
use threatbeat_test_support::golden::{compare_unordered, history_documents};
use threatbeat_test_support::taxii::{timestamp_ago, TaxiiSimulator, COLLECTION_PATH as COLLECTION_PATH_20};
use threatbeat_test_support::taxii21::{
    micros_ago, Fault, Taxii21Simulator, API_KEY, COLLECTION_PATH, PASSWORD, USER,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

const PIPELINE: &str = "threatintel/taxii";
const HISTORY: &str = "logs-ti_threatbeat.taxii-default";
const LATEST: &str = "logs-ti_threatbeat_latest.taxii";

/// Fields the agent or the run decides, not the mapping: the file output's
/// metadata, ingest times, the agent's identity, and the served object kept
/// under `taxii.indicator` (checked against the collection separately).
const IGNORED: &[&str] = &[
    "@metadata.*",
    "event.created",
    "event.ingested",
    "agent.*",
    "host.name",
    "input.type",
    "taxii.indicator.*",
];

/// The current state holds one document per STIX id of `valid`, nothing
/// else; its documents.
fn assert_current_state(documents: &[Value], valid: &[String]) -> Vec<Value> {
    shared_assert_current_state(
        documents,
        HISTORY,
        LATEST,
        |document| {
            document["taxii"]["indicator"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        },
        valid,
    )
}

/// A home whose only pipeline is `threatintel/taxii` at `url`.
fn home_at(url: &str, vars: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    write_config(&home, url, vars);
    home
}

fn write_config(home: &AgentHome, url: &str, vars: &str) {
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    taxii:
      var.url: {url}
{vars}
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
output.file: {{path: out, filename: docs}}
"#
        ),
    );
}

fn basic(password: &str) -> String {
    format!("      var.username: {USER}\n      var.password: \"{password}\"")
}

fn stix_id(number: usize) -> String {
    format!("indicator--b0000000-0000-4000-8000-{number:012}")
}

/// A valid STIX 2.1 indicator (valid for 90 days from now: modified now).
fn indicator(number: usize) -> Value {
    let now = micros_ago(0);
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": stix_id(number),
        "created": now,
        "modified": now,
        "valid_from": now,
        "name": format!("node {number}"),
        "pattern": format!("[ipv4-addr:value = '198.51.100.{number}']"),
        "pattern_type": "stix",
    })
}

fn collection() -> Vec<Value> {
    let path = fixture("taxii21/collection.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The expected history documents: each document over the common fields (a
/// null removes a common field).
fn expected_documents() -> Vec<Value> {
    let path = fixture("taxii21/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let file: Value =
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let common = file["common"].as_object().cloned().unwrap_or_default();
    file["documents"]
        .as_array()
        .map(|documents| {
            documents
                .iter()
                .map(|document| {
                    let mut merged: Map<String, Value> = common.clone();
                    for (key, value) in document.as_object().into_iter().flatten() {
                        if value.is_null() {
                            merged.remove(key);
                        } else {
                            merged.insert(key.clone(), value.clone());
                        }
                    }
                    Value::Object(merged)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_collection_maps_to_the_hand_written_documents_and_the_current_state() {
    let taxii = Taxii21Simulator::start().await;
    let objects = collection();
    assert_eq!(objects.len(), 80);
    taxii.add_objects_spaced(objects.clone(), &micros_ago(3600), 1_234_567);
    let home = home_at(
        &taxii.url(COLLECTION_PATH),
        &format!("{}\n      var.limit: 7\n      var.types: null", basic(PASSWORD)),
    );

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = history_documents(all.clone());
    let expected = expected_documents();
    let report = compare_unordered("taxii21/expected.json", &documents, &expected, IGNORED);
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(report.documents_matched, 50);
    assert_eq!(
        unique_ids(&documents),
        50,
        "one history document per indicator version"
    );
    assert!(
        documents.iter().all(|document| document.get("error").is_none()),
        "no document is marked with an error"
    );

    // The object is kept as served under `taxii.indicator`.
    for document in &documents {
        let kept = &document["taxii"]["indicator"];
        let served = objects
            .iter()
            .find(|object| object["id"] == kept["id"] && object["modified"] == kept["modified"])
            .unwrap_or_else(|| panic!("not served: {kept}"));
        assert_eq!(kept, served);
    }

    // Valid: every indicator id but the revoked (45, 46) and expired (47,
    // 48) ones; indicator 1 once, as its later version.
    let valid: Vec<String> = (1..=52)
        .filter(|number| ![45, 46, 47, 48, 51].contains(number))
        .map(|number| format!("indicator--a0000000-0000-4000-8000-{number:012}"))
        .collect();
    let state = assert_current_state(&all, &valid);
    assert_eq!(state.len(), 47);
    let first = state
        .iter()
        .find(|document| document["taxii"]["indicator"]["id"] == valid[0])
        .unwrap();
    assert_eq!(
        first["threat"]["indicator"]["name"],
        "C2 server 198.51.100.1 (v2)"
    );
    assert!(
        !all.iter().any(|document| document["threat"]["indicator"]["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("Revoked"))
            && document["@metadata"]["op_type"] != "delete"),
        "a revoked indicator is neither history nor current state"
    );

    // 80 objects in pages of 7: 12 requests, following `next`, the same
    // filters on every page.
    let requests = taxii.requests();
    assert_eq!(requests.len(), 12, "{requests:#?}");
    assert_eq!(requests.iter().map(|request| request.items).sum::<usize>(), 80);
    for (position, request) in requests.iter().enumerate() {
        assert_eq!(request.status, 200, "{request:?}");
        assert_eq!(
            request.accept.as_deref(),
            Some("application/taxii+json;version=2.1")
        );
        assert_eq!(request.auth_scheme.as_deref(), Some("Basic"));
        assert_eq!(request.param("limit"), Some("7"));
        assert_eq!(request.param("match[type]"), None);
        assert_eq!(request.param("added_after"), requests[0].param("added_after"));
        let expected_next = position
            .checked_sub(1)
            .and_then(|previous| requests[previous].next.clone());
        assert_eq!(request.param("next").map(str::to_owned), expected_next);
    }
    assert!(requests[11].next.is_none(), "the last page says no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_poll_asks_added_after_the_last_date_added_byte_for_byte() {
    let taxii = Taxii21Simulator::start().await;
    taxii.add_objects_spaced((1..=10).map(indicator).collect(), &micros_ago(1800), 1_000_001);
    let home = home_at(
        &taxii.url(COLLECTION_PATH),
        &format!("{}\n      var.limit: 4", basic(PASSWORD)),
    );
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(in_index(&home.documents(), HISTORY).len(), 10);
    let requests = taxii.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].param("match[type]"), Some("indicator"));
    let first = requests[0].param("added_after").unwrap().to_owned();
    assert!(first.ends_with(".000Z"), "{first}");
    // The cursor is the last page's `X-TAXII-Date-Added-Last` as the server
    // wrote it (microseconds: the tenth object's date added).
    let last_added = requests[2]
        .date_added_last
        .clone()
        .expect("the last page's header");
    assert_eq!(
        last_added.len(),
        "2024-05-20T10:00:00.123456Z".len(),
        "{last_added}"
    );
    assert_eq!(home.cursor(PIPELINE), Some(json!({"timestamp": last_added})));

    taxii.add_objects_spaced((11..=13).map(indicator).collect(), &micros_ago(60), 7);
    taxii.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = taxii.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        requests[0].param("added_after"),
        Some(last_added.as_str()),
        "byte for byte"
    );
    assert_eq!(requests[0].items, 3);
    let all = home.documents();
    let history = in_index(&all, HISTORY);
    assert_eq!(history.len(), 13, "10 from the first poll, 3 from the second");
    assert_eq!(unique_ids(&history), 13);
    assert_current_state(&all, &(1..=13).map(stix_id).collect::<Vec<_>>());
    let after_second = home.cursor(PIPELINE).expect("a cursor");
    assert_ne!(after_second["timestamp"], json!(last_added));

    // Nothing new: `{}`, the cursor stays.
    taxii.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(taxii.requests()[0].items, 0);
    assert_eq!(in_index(&home.documents(), HISTORY).len(), 13);
    assert_eq!(home.cursor(PIPELINE), Some(after_second));
}

/// The poll failed loudly: the fileset, the URL, the status and the server's
/// words in the log, no secret.
fn assert_failed(output: &std::process::Output, url: &str, status: &str, words: &str) {
    let log = stderr_text(output);
    assert!(
        !output.status.success(),
        "a failed poll fails `run --once`:\n{log}"
    );
    assert!(log.contains(PIPELINE), "{log}");
    assert!(log.contains(url), "{log}");
    assert!(log.contains(status), "{log}");
    assert!(log.contains(words), "{log}");
    for secret in [PASSWORD, API_KEY, "not-the-password", "not-the-key"] {
        assert!(!log.contains(secret), "a secret was logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_a_refused_media_type_fail_keep_the_cursor_and_recover() {
    let taxii = Taxii21Simulator::start().await;
    let url = taxii.url(COLLECTION_PATH);
    taxii.add_objects((1..=3).map(indicator).collect(), &micros_ago(600));

    // Basic auth, wrong password.
    let home = home_at(&url, &basic("not-the-password"));
    let output = home.run_once_async().await;
    assert_failed(&output, &url, "401", "missing or invalid credentials");
    assert!(home.documents().is_empty());
    assert!(home.cursor(PIPELINE).is_none());
    assert_eq!(taxii.requests().len(), 1, "a 401 is not retried");
    write_config(&home, &url, &basic(PASSWORD));
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(in_index(&home.documents(), HISTORY).len(), 3);
    let cursor = home.cursor(PIPELINE).expect("a cursor after recovery");

    // Bearer, wrong key: nothing more delivered, the cursor stays.
    taxii.add_objects((4..=5).map(indicator).collect(), &micros_ago(300));
    taxii.clear_log();
    write_config(&home, &url, "      var.api_key: not-the-key");
    let output = home.run_once_async().await;
    assert_failed(&output, &url, "401", "missing or invalid credentials");
    assert_eq!(taxii.requests()[0].auth_scheme.as_deref(), Some("Bearer"));
    assert_eq!(home.cursor(PIPELINE), Some(cursor.clone()));
    assert_eq!(in_index(&home.documents(), HISTORY).len(), 3);

    // A client speaking TAXII 2.0 to a 2.1 server: 406.
    write_config(
        &home,
        &url,
        &format!("      var.api_key: {API_KEY}\n      var.version: \"2.0\""),
    );
    let output = home.run_once_async().await;
    assert_failed(&output, &url, "406", "application/taxii+json;version=2.1");
    assert_eq!(home.cursor(PIPELINE), Some(cursor.clone()));

    // The right key: the two new indicators, from where the cursor was.
    taxii.clear_log();
    write_config(&home, &url, &format!("      var.api_key: {API_KEY}"));
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = taxii.requests();
    assert_eq!(requests[0].auth_scheme.as_deref(), Some("Bearer"));
    assert_eq!(requests[0].param("added_after"), cursor["timestamp"].as_str());
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 5);
    assert_eq!(unique_ids(&in_index(&all, HISTORY)), 5);
    assert_current_state(&all, &(1..=5).map(stix_id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_next_token_fails_after_the_delivered_page_and_the_next_run_resumes() {
    let taxii = Taxii21Simulator::start().await;
    let url = taxii.url(COLLECTION_PATH);
    taxii.add_objects_spaced((1..=10).map(indicator).collect(), &micros_ago(900), 1_000_003);
    let home = home_at(&url, &format!("{}\n      var.limit: 4", basic(PASSWORD)));

    // The first page (1-4) comes with a token the server does not know.
    taxii.push_faults([Fault::BrokenNext]);
    let output = home.run_once_async().await;
    assert_failed(&output, &url, "400", "The next token is unknown or has expired");
    let requests = taxii.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[1].status, 400);
    let cursor = home
        .cursor(PIPELINE)
        .expect("the delivered page moved the cursor");
    let history = in_index(&home.documents(), HISTORY);
    assert_eq!(history.len(), 4, "the first page only");
    // Exactly up to what was delivered: the first page's last date added.
    assert_eq!(requests[0].items, 4);
    let delivered = requests[0]
        .date_added_last
        .clone()
        .expect("the first page's header");
    assert_eq!(cursor, json!({"timestamp": delivered}));

    taxii.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = taxii.requests();
    assert_eq!(requests[0].param("added_after"), cursor["timestamp"].as_str());
    assert_eq!(requests.iter().map(|request| request.items).sum::<usize>(), 6);
    let all = home.documents();
    let history = in_index(&all, HISTORY);
    assert_eq!(history.len(), 10, "nothing lost");
    assert_eq!(unique_ids(&history), 10, "nothing repeated");
    assert_current_state(&all, &(1..=10).map(stix_id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_0_speaks_taxii_2_0_with_range_paging() {
    let taxii = TaxiiSimulator::start().await;
    let added = timestamp_ago(600);
    let objects: Vec<Value> = (1..=10)
        .map(|number| {
            let mut object = indicator(number);
            // STIX 2.0: no spec_version, labels required.
            if let Some(map) = object.as_object_mut() {
                map.remove("spec_version");
                map.remove("pattern_type");
                map.insert("labels".to_owned(), json!(["malicious-activity"]));
            }
            object
        })
        .collect();
    taxii.add_objects(objects, &added);
    let home = home_at(
        &taxii.url(COLLECTION_PATH_20),
        "      var.version: \"2.0\"\n      var.username: guest\n      var.password: guest\n      var.limit: 4",
    );
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = taxii.requests();
    let ranges: Vec<Option<&str>> = requests.iter().map(|request| request.range.as_deref()).collect();
    assert_eq!(
        ranges,
        [Some("items 0-3"), Some("items 4-7"), Some("items 8-11")],
        "{requests:#?}"
    );
    for request in &requests {
        assert_eq!(
            request.accept.as_deref(),
            Some("application/vnd.oasis.stix+json; version=2.0")
        );
        assert_eq!(request.param("limit"), None);
        assert_eq!(request.param("added_after"), requests[0].param("added_after"));
    }
    let all = home.documents();
    let history = in_index(&all, HISTORY);
    assert_eq!(history.len(), 10);
    assert!(history
        .iter()
        .all(|document| document["threat"]["indicator"]["type"] == "ipv4-addr"
            && document["tags"]
                .as_array()
                .is_some_and(|tags| tags.contains(&json!("malicious-activity")))));
    assert_current_state(&all, &(1..=10).map(stix_id).collect::<Vec<_>>());
    assert_eq!(home.cursor(PIPELINE), Some(json!({"timestamp": added})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_logged_keeps_the_cursor_and_the_next_run_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage] {
        let taxii = Taxii21Simulator::start().await;
        let url = taxii.url(COLLECTION_PATH);
        taxii.add_objects((1..=5).map(indicator).collect(), &micros_ago(600));
        let home = home_at(&url, &basic(PASSWORD));
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let cursor = home.cursor(PIPELINE).expect("a cursor");
        taxii.add_objects((6..=7).map(indicator).collect(), &micros_ago(60));

        taxii.push_faults([fault.clone()]);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains(PIPELINE) && log.contains(&url), "{fault:?}:\n{log}");
        assert_eq!(home.cursor(PIPELINE), Some(cursor.clone()), "{fault:?}");
        assert_eq!(in_index(&home.documents(), HISTORY).len(), 5, "{fault:?}");

        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let all = home.documents();
        let history = in_index(&all, HISTORY);
        assert_eq!(history.len(), 7, "{fault:?}");
        assert_eq!(unique_ids(&history), 7, "{fault:?}");
        assert_current_state(&all, &(1..=7).map(stix_id).collect::<Vec<_>>());
    }
}
