//! `threatintel/anomali` end to end: the real binary, the fileset's own
//! httpjson input and the TAXII 2.0 simulator (`threatbeat_test_support::taxii`)
//! on loopback.
//!
//! * Elastic's golden records served as a collection give Elastic's golden
//!   documents, paging with `Range`/`Content-Range` and stopping at the total;
//! * a restart asks `added_after` = the stored `X-TAXII-Date-Added-Last`,
//!   nothing lost or repeated;
//! * a bad password (401, TAXII's error body) fails the poll loudly, publishes
//!   nothing, moves no cursor;
//! * a truncated or HTML answer is logged with the fileset and the URL, the
//!   cursor stays, and the next run recovers;
//! * beside the history (`logs-ti_threatbeat.anomali-default`, marked for the
//!   rules to skip), the current state (`logs-ti_threatbeat_latest.anomali`)
//!   holds one document per valid STIX indicator: none of Elastic's 2020
//!   records (expired), every recent one, once.

use std::path::Path;

use serde_json::{json, Value};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::data::filebeat_threatintel;
use threatbeat_test_support::golden::{compare_unordered, filebeat_ignored, golden_pair, history_documents};
use threatbeat_test_support::taxii::{timestamp_ago, Fault, TaxiiSimulator, COLLECTION_PATH};

/// The cursor file of the pipeline `threatintel/anomali`.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

/// The history data stream and the current-state index of the fileset.
const HISTORY: &str = "logs-ti_threatbeat.anomali-default";
const LATEST: &str = "logs-ti_threatbeat_latest.anomali";

/// The current state holds one document per STIX id of `valid`, nothing else.
fn assert_current_state(documents: &[Value], valid: &[String]) {
    shared_assert_current_state(
        documents,
        HISTORY,
        LATEST,
        |document| {
            document["anomali"]["limo"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        },
        valid,
    );
}

/// The STIX id of [`indicator`] `number`.
fn stix_id(number: usize) -> String {
    format!("indicator--00000000-0000-4000-8000-{number:012}")
}

/// `minutes` ago, as a TAXII timestamp.
fn ago(minutes: i64) -> String {
    timestamp_ago(minutes * 60)
}

/// A home whose only pipeline is `threatintel/anomali` against `taxii`.
fn home(taxii: &TaxiiSimulator, password: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    anomali:
      var.url: {url}
      var.password: {password}
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
"#,
            url = taxii.url(COLLECTION_PATH),
        ),
    );
    home
}

fn indicator(number: usize) -> Value {
    json!({
        "type": "indicator",
        "id": stix_id(number),
        // Created an hour ago: valid (the default 90 days).
        "created": ago(60),
        "modified": ago(60),
        "valid_from": ago(60),
        "labels": ["malicious-activity"],
        "name": format!("mal_ip: 198.51.100.{number}"),
        "description": "TS ID: 1; iType: mal_ip; Source: Simulator",
        "pattern": format!("[ipv4-addr:value = '198.51.100.{number}']"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_records_served_by_taxii_give_the_golden_documents_and_range_paging_ends() {
    let taxii = TaxiiSimulator::start().await;
    let (records, expected) = golden_pair("anomali", "anomali_limo.ndjson.log");
    taxii.add_objects(records, &ago(60));
    let home = home(&taxii, "guest", "      var.page_size: 40");

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = history_documents(all.clone());
    let report = compare_unordered(
        "anomali_limo.ndjson.log",
        &documents,
        &expected,
        &filebeat_ignored("anomali"),
    );
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(report.documents_matched, 100);
    assert_eq!(documents.len(), 100);
    assert_eq!(unique_ids(&documents), 100);
    // Elastic's records were modified in 2020: long expired, none is current.
    assert_eq!(all.len(), 100);
    assert_current_state(&all, &[]);

    // 100 objects in ranges of 40: three requests, the last answered
    // `items 80-99/100`, then no more.
    let requests = taxii.requests();
    let ranges: Vec<Option<&str>> = requests.iter().map(|request| request.range.as_deref()).collect();
    assert_eq!(
        ranges,
        [Some("items 0-39"), Some("items 40-79"), Some("items 80-119")],
        "{requests:#?}"
    );
    for request in &requests {
        assert_eq!(request.status, 206);
        assert_eq!(
            request.accept.as_deref(),
            Some("application/vnd.oasis.stix+json; version=2.0")
        );
        assert_eq!(request.param("match[type]"), Some("indicator"));
        // The same window on every page.
        assert_eq!(request.param("added_after"), requests[0].param("added_after"));
    }
    assert_eq!(requests.iter().map(|request| request.items).sum::<usize>(), 100);

    // Elastic's id: SHA-1 of the STIX id, base64.
    let first = &documents
        .iter()
        .find(|document| {
            document["anomali"]["limo"]["id"] == "indicator--44c85d4f-45ca-4977-b693-c810bbfb7a28"
        })
        .unwrap();
    assert_eq!(first["@metadata"]["index"], "logs-ti_threatbeat.anomali-default");
    assert_eq!(first["@timestamp"], "2020-01-22T02:58:57.431Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_asks_from_the_stored_taxii_date_and_loses_or_repeats_nothing() {
    let taxii = TaxiiSimulator::start().await;
    let first_added = ago(30);
    taxii.add_objects((1..=25).map(indicator).collect(), &first_added);
    // Added before the first look-back window (24 h): never asked for.
    let home = home(&taxii, "guest", "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 25);
    assert_eq!(all.len(), 50, "the history and one current-state copy each");
    assert_current_state(&all, &(1..=25).map(stix_id).collect::<Vec<_>>());
    let first_request = &taxii.requests()[0];
    assert_eq!(first_request.range.as_deref(), Some("items 0-9999"));
    assert!(first_request.param("added_after").unwrap().ends_with(".000Z"));
    assert_eq!(
        home.cursor("threatintel/anomali"),
        Some(json!({"timestamp": first_added}))
    );

    // Objects added while the agent is down.
    let second_added = ago(1);
    taxii.add_objects((26..=32).map(indicator).collect(), &second_added);
    taxii.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = taxii.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].param("added_after"), Some(first_added.as_str()));
    assert_eq!(requests[0].items, 7);
    let all = home.documents();
    let history = in_index(&all, HISTORY);
    assert_eq!(history.len(), 32, "25 from the first run, 7 from the second");
    assert_eq!(unique_ids(&history), 32, "no document twice");
    assert_eq!(in_index(&all, LATEST).len(), 32, "each indicator written once");
    assert_current_state(&all, &(1..=32).map(stix_id).collect::<Vec<_>>());
    assert_eq!(
        home.cursor("threatintel/anomali"),
        Some(json!({"timestamp": second_added}))
    );

    // Nothing new: an empty bundle, the cursor stays.
    taxii.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(taxii.requests()[0].items, 0);
    assert_eq!(home.documents().len(), 64);
    assert_eq!(
        home.cursor("threatintel/anomali"),
        Some(json!({"timestamp": second_added}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_password_fails_the_poll_with_the_fileset_and_url_and_publishes_nothing() {
    let taxii = TaxiiSimulator::start().await;
    taxii.add_objects((1..=3).map(indicator).collect(), &ago(5));
    let home = home(&taxii, "not-the-password", "");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(
        !output.status.success(),
        "a failed poll fails `run --once`:\n{log}"
    );
    assert!(log.contains("threatintel/anomali"), "{log}");
    assert!(log.contains(&taxii.url(COLLECTION_PATH)), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains("invalid username or password"),
        "TAXII's own message:\n{log}"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password is never logged:\n{log}"
    );
    assert!(home.documents().is_empty());
    assert!(home.cursor("threatintel/anomali").is_none());
    assert_eq!(taxii.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_logged_keeps_the_cursor_and_the_next_run_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage] {
        let taxii = TaxiiSimulator::start().await;
        let first_added = ago(10);
        taxii.add_objects((1..=15).map(indicator).collect(), &first_added);
        let home = home(&taxii, "guest", "");
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{}", stderr_text(&output));
        taxii.add_objects((16..=18).map(indicator).collect(), &ago(1));

        taxii.push_faults([fault.clone()]);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains("threatintel/anomali"), "{fault:?}:\n{log}");
        assert!(log.contains(&taxii.url(COLLECTION_PATH)), "{fault:?}:\n{log}");
        assert_eq!(
            home.cursor("threatintel/anomali"),
            Some(json!({"timestamp": first_added})),
            "{fault:?}"
        );
        assert_eq!(
            in_index(&home.documents(), HISTORY).len(),
            15,
            "{fault:?}: nothing from the bad answer"
        );
        assert_eq!(home.documents().len(), 30, "{fault:?}: nor its current state");

        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let all = home.documents();
        let history = in_index(&all, HISTORY);
        assert_eq!(history.len(), 18, "{fault:?}");
        assert_eq!(unique_ids(&history), 18, "{fault:?}");
        assert_eq!(all.len(), 36, "{fault:?}");
        assert_current_state(&all, &(1..=18).map(stix_id).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_input_reads_the_golden_sample_into_the_golden_documents() {
    let folder = filebeat_threatintel("anomali");
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data\nthreatbeat.modules:\n  - module: threatintel\n    anomali:\n      var.input: file\n      var.paths: [\"{}\"]\noutput.file: {{path: out, filename: docs}}\n",
            folder.join("anomali_limo.ndjson.log").display()
        ),
    );
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    let documents = in_index(&all, HISTORY);
    assert_eq!(documents.len(), 642);
    assert_eq!(unique_ids(&documents), 642);
    // Modified in 2020: expired, so no current-state copy.
    assert_eq!(all.len(), 642);
    assert_current_state(&all, &[]);
    let (_, expected) = golden_pair("anomali", "anomali_limo.ndjson.log");
    let report = compare_unordered(
        "anomali_limo.ndjson.log",
        &documents,
        &expected,
        &filebeat_ignored("anomali"),
    );
    assert_eq!(
        report.documents_matched,
        100,
        "{}\n{}",
        report.summary(),
        report.diff()
    );
    assert!(
        documents.iter().all(|document| document.get("error").is_none()),
        "no document is marked with an error"
    );
}
