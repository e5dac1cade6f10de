//! `threatintel/threatq` end to end: the real binary, the fileset's own
//! httpjson input (OAuth2 client credentials) and the ThreatQ simulator
//! (`threatbeat_test_support::threatq`) on loopback.
//!
//! * Elastic's golden records served by a data collection give Elastic's golden documents;
//! * paging follows `nextCursorMark` and stops on the empty page;
//! * a restart asks from the stored mark; an update comes back as a new version;
//! * bad client credentials (401) fail the poll loudly, publish nothing, move no cursor;
//! * a truncated or HTML answer is logged with the fileset and the URL, the cursor
//!   stays, and the next run recovers;
//! * beside the history (`logs-ti_threatbeat.threatq-default`, marked for the
//!   rules to skip), the current state (`logs-ti_threatbeat_latest.threatq`)
//!   holds one document per valid indicator (ThreatQ id): none of Elastic's
//!   `Expired` records, an indicator turned `Expired` leaves it.

use std::path::Path;

use serde_json::{json, Value};
use threatbeat_test_support::agent::{
    assert_current_state as shared_assert_current_state, in_index, stderr_text, unique_ids, AgentHome,
};
use threatbeat_test_support::golden::{compare_unordered, filebeat_ignored, golden_pair, history_documents};
use threatbeat_test_support::threatq::{Fault, ThreatqSimulator, CLIENT_ID, CLIENT_SECRET, COLLECTION};

/// The cursor file of the pipeline `threatintel/threatq`.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

/// The history data stream and the current-state index of the fileset.
const HISTORY: &str = "logs-ti_threatbeat.threatq-default";
const LATEST: &str = "logs-ti_threatbeat_latest.threatq";

/// The current state holds one document per address of `valid`, nothing else.
fn assert_current_state(documents: &[Value], valid: &[&str]) {
    shared_assert_current_state(
        documents,
        HISTORY,
        LATEST,
        |document| {
            document["threat"]["indicator"]["ip"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        },
        valid,
    );
}

/// `seconds` ago in ThreatQ's layout (`yyyy-MM-dd HH:mm:ss`, UTC).
fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A ThreatQ time as the mapping writes `@timestamp`.
fn as_timestamp(threatq_time: &str) -> String {
    chrono::NaiveDateTime::parse_from_str(threatq_time, "%Y-%m-%d %H:%M:%S")
        .map(|time| time.format("%Y-%m-%dT%H:%M:%S.000Z").to_string())
        .unwrap_or_default()
}

fn export_url(tq: &ThreatqSimulator) -> String {
    tq.url(&format!("/api/indicators/query/hash/{COLLECTION}"))
}

/// A home whose only pipeline is `threatintel/threatq` against `tq` (host with
/// a trailing `/`, as Filebeat wants it), writing NDJSON to `out/`.
fn home(tq: &ThreatqSimulator, secret: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    threatq:
      var.host: {host}
      var.token_url: {token_url}
      var.client_id: {CLIENT_ID}
      var.client_secret: {secret}
      var.data_collection_id: {COLLECTION}
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
"#,
            host = tq.url("/"),
            token_url = tq.url("/api/token"),
        ),
    );
    home
}

/// A ThreatQ indicator record, updated at `updated_at`.
fn indicator(id: i64, value: &str, updated_at: &str, status: &str) -> Value {
    json!({
        "id": id, "value": value, "class": "network", "score": 45,
        "type": {"id": 15, "name": "IP Address", "class": "network"},
        "status": {"id": 1, "name": status, "description": "Poses a threat."},
        "created_at": "2024-01-02 03:04:05", "updated_at": updated_at,
        "published_at": "2024-01-02 03:04:05", "touched_at": updated_at,
        "attributes": [{"name": "Confidence Level", "value": "High"}],
        "sources": [{"name": "Feed A", "tlp_name": "AMBER"}],
        "adversaries": [{"name": "APT Example"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_records_served_by_a_data_collection_give_the_golden_documents() {
    let tq = ThreatqSimulator::start().await;
    let (records, expected) = golden_pair("threatq", "threatq_sample.ndjson.log");
    tq.add_indicators(records);
    let home = home(&tq, CLIENT_SECRET, "      var.limit: 4");

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let all = home.documents();
    let documents = history_documents(all.clone());
    let report = compare_unordered(
        "threatq_sample.ndjson.log",
        &documents,
        &expected,
        &filebeat_ignored("threatq"),
    );
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
    assert_eq!(report.documents_matched, 9);
    assert_eq!(
        documents[0]["@metadata"]["index"],
        "logs-ti_threatbeat.threatq-default"
    );
    assert_eq!(unique_ids(&documents), 9);
    // Every golden record is `Expired` (and its expiry passed in 2020): none is current.
    assert_eq!(all.len(), 9);
    assert_current_state(&all, &[]);

    // One token, then pages of 4 by cursor mark until the empty page: 9 records
    // → 4 + 4 + 1 + an empty page that ends the poll.
    assert_eq!(tq.tokens_issued(), 1);
    let exports = tq.exports();
    let items: Vec<usize> = exports.iter().map(|request| request.items).collect();
    assert_eq!(items, [4, 4, 1, 0], "{exports:#?}");
    assert_eq!(exports[0].param("cursorMark"), Some("*"));
    assert_eq!(exports[0].param("sort"), Some("updated_at"));
    assert_eq!(exports[0].param("limit"), Some("4"));
    assert_eq!(exports[0].authorization.as_deref(), Some("Bearer tq-access-1"));
    for pair in exports.windows(2) {
        assert_eq!(pair[1].param("cursorMark"), pair[0].next_cursor_mark.as_deref());
    }
    // The stored mark is the one after the last indicator read (the empty
    // page's mark is not stored, as Filebeat moves its cursor only with events).
    assert_eq!(
        home.cursor("threatintel/threatq").expect("cursor")["cursor_mark"].as_str(),
        exports[2].next_cursor_mark.as_deref()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_sent_as_an_object_ends_paging_too() {
    let tq = ThreatqSimulator::start().await;
    tq.set_empty_data_as_object(true);
    tq.add_indicators(
        (1..=3)
            .map(|id| indicator(id, &format!("198.51.100.{id}"), &ago(3600), "Active"))
            .collect(),
    );
    let home = home(&tq, CLIENT_SECRET, "      var.limit: 2");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(in_index(&home.documents(), HISTORY).len(), 3);
    assert_eq!(home.documents().len(), 6);
    assert_current_state(
        &home.documents(),
        &["198.51.100.1", "198.51.100.2", "198.51.100.3"],
    );
    let items: Vec<usize> = tq.exports().iter().map(|request| request.items).collect();
    assert_eq!(items, [2, 1, 0]);
    // Nothing new: one request from the stored mark, `data: {}`, no error.
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(tq.exports().len(), 4);
    assert_eq!(home.documents().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_asks_from_the_stored_mark_and_an_update_is_a_new_version() {
    let tq = ThreatqSimulator::start().await;
    tq.add_indicators(
        (1..=5)
            .map(|id| indicator(id, &format!("203.0.113.{id}"), &ago(7200 - id), "Active"))
            .collect(),
    );
    let home = home(&tq, CLIENT_SECRET, "");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(in_index(&home.documents(), HISTORY).len(), 5);
    assert_eq!(home.documents().len(), 10);
    let stored = home.cursor("threatintel/threatq").expect("cursor")["cursor_mark"]
        .as_str()
        .unwrap()
        .to_owned();

    // While the agent is down: indicator 2 expires (an update), 6 is new.
    let expired_at = ago(3600);
    let newest_at = ago(1800);
    tq.update_indicator(indicator(2, "203.0.113.2", &expired_at, "Expired"));
    tq.add_indicators(vec![indicator(6, "203.0.113.6", &newest_at, "Active")]);
    let before = tq.exports().len();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let exports = tq.exports();
    assert_eq!(exports[before].param("cursorMark"), Some(stored.as_str()));
    let all = home.documents();
    let documents = in_index(&all, HISTORY);
    assert_eq!(
        documents.len(),
        7,
        "5, then the update and the new one; nothing twice"
    );
    assert_eq!(
        unique_ids(&documents),
        7,
        "the update is a new version, not a refused duplicate"
    );
    let statuses: Vec<&str> = documents
        .iter()
        .filter(|document| document["threat"]["indicator"]["ip"] == "203.0.113.2")
        .map(|document| document["threatq"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Active", "Expired"]);
    // The indicator ThreatQ expired leaves the current state (a delete), the
    // new one joins it: 5 + 1 written, 1 deleted.
    assert_eq!(in_index(&all, LATEST).len(), 7);
    assert_current_state(
        &all,
        &[
            "203.0.113.1",
            "203.0.113.3",
            "203.0.113.4",
            "203.0.113.5",
            "203.0.113.6",
        ],
    );
    let latest = documents.last().unwrap();
    assert_eq!(latest["@timestamp"], as_timestamp(&newest_at));
    assert_eq!(latest["threat"]["indicator"]["confidence"], "Med");
    assert_eq!(latest["threat"]["indicator"]["provider"], json!(null));
    assert_eq!(latest["threat"]["indicator"]["marking"]["tlp"], json!(["AMBER"]));
    assert_eq!(
        latest["threatq"]["attributes"]["confidence_level"],
        json!(["High"])
    );
    assert_eq!(latest["threatq"]["adversaries"], json!(["APT Example"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_credentials_fail_the_poll_with_the_fileset_and_url_and_publish_nothing() {
    let tq = ThreatqSimulator::start().await;
    tq.add_indicators(vec![indicator(
        1,
        "198.51.100.1",
        "2024-02-01 00:00:00",
        "Active",
    )]);
    let home = home(&tq, "wrong-secret", "");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(
        !output.status.success(),
        "a failed poll fails `run --once`:\n{log}"
    );
    assert!(log.contains("threatintel/threatq"), "{log}");
    assert!(log.contains(&tq.url("/api/token")), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains("Client authentication failed"),
        "ThreatQ's own message:\n{log}"
    );
    assert!(
        !log.contains("wrong-secret"),
        "the secret is never logged:\n{log}"
    );
    assert!(home.documents().is_empty());
    assert!(home.cursor("threatintel/threatq").is_none());
    assert!(tq.exports().is_empty(), "no API call without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_fails_the_poll_naming_the_url() {
    let tq = ThreatqSimulator::start().await;
    tq.add_indicators(vec![indicator(
        1,
        "198.51.100.1",
        "2024-02-01 00:00:00",
        "Active",
    )]);
    tq.push_faults([Fault::TokenRejected, Fault::TokenRejected]);
    let home = home(&tq, CLIENT_SECRET, "");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("threatintel/threatq"), "{log}");
    assert!(log.contains(&export_url(&tq)), "{log}");
    assert!(log.contains("access_denied") || log.contains("401"), "{log}");
    assert!(home.documents().is_empty());
    assert!(home.cursor("threatintel/threatq").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_logged_keeps_the_mark_and_the_next_run_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage] {
        let tq = ThreatqSimulator::start().await;
        tq.add_indicators(
            (1..=3)
                .map(|id| indicator(id, &format!("198.51.100.{id}"), &ago(7200 - id), "Active"))
                .collect(),
        );
        let home = home(&tq, CLIENT_SECRET, "");
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{}", stderr_text(&output));
        let stored = home.cursor("threatintel/threatq").expect("cursor");

        tq.add_indicators(vec![indicator(4, "198.51.100.4", &ago(60), "Active")]);
        tq.push_faults([fault.clone()]);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: the poll fails:\n{log}");
        assert!(log.contains("threatintel/threatq"), "{fault:?}:\n{log}");
        assert!(log.contains(&export_url(&tq)), "{fault:?}:\n{log}");
        assert_eq!(
            home.cursor("threatintel/threatq"),
            Some(stored.clone()),
            "{fault:?}: mark unmoved"
        );
        assert_eq!(in_index(&home.documents(), HISTORY).len(), 3, "{fault:?}");
        assert_eq!(home.documents().len(), 6, "{fault:?}");

        let output = home.run_once_async().await;
        assert!(output.status.success(), "{fault:?}: {}", stderr_text(&output));
        let all = home.documents();
        let documents = in_index(&all, HISTORY);
        assert_eq!(documents.len(), 4, "{fault:?}: the new indicator, once");
        assert_eq!(unique_ids(&documents), 4, "{fault:?}");
        assert_eq!(all.len(), 8, "{fault:?}");
        assert_current_state(
            &all,
            &["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"],
        );
    }
}
