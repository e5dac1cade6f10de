//! `threatintel/recordedfuture` end to end: the real binary, the fileset's own
//! httpjson input and the Recorded Future simulator
//! (`threatbeat_test_support::recordedfuture`) on loopback, for both of
//! Filebeat's generations.
//!
//! * Elastic's golden risk lists (CSV) served by the simulator give Elastic's
//!   golden documents, one request per poll;
//! * a bad CSV row is logged and skipped, the rows around it are kept;
//! * the 7.x search API pages with `from` until the total and a restart asks
//!   `lastSeen` from the stored cursor;
//! * a bad token (401, RF's error body) fails the poll loudly, publishes nothing;
//! * an HTML answer is logged with the fileset and the URL, and the next run recovers.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use threatbeat_test_support::agent::{in_index, stderr_text, unique_ids, AgentHome};
use threatbeat_test_support::data::filebeat_threatintel;
use threatbeat_test_support::golden::{compare_unordered, filebeat_ignored};
use threatbeat_test_support::recordedfuture::{Fault, RecordedFutureSimulator, TOKEN};

const HEADER: &str = "\"Name\",\"Risk\",\"RiskString\",\"EvidenceDetails\"\n";
const HISTORY: &str = "logs-ti_threatbeat.recordedfuture-default";
/// The current-state copies (docs/detection.md): one per valid entity.
const LATEST: &str = "logs-ti_threatbeat_latest.recordedfuture";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

/// A home whose only pipeline is `threatintel/recordedfuture` with `vars`.
fn home(token: &str, vars: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    recordedfuture:
      var.api_token: {token}
      # Fail fast: the tests look at one attempt at a time.
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{vars}
output.file: {{path: out, filename: docs}}
"#
        ),
    );
    home
}

fn risk_list_vars(rf: &RecordedFutureSimulator, entity: &str) -> String {
    format!(
        "      var.endpoint: {}\n      var.entity: {entity}\n      var.list: default",
        rf.url("/v2")
    )
}

fn row(name: &str, risk: u32) -> String {
    format!(
        "\"{name}\",\"{risk}\",\"1/50\",\"{{\"\"EvidenceDetails\"\": [{{\"\"Rule\"\": \"\"Recent C&C Server\"\", \"\"Criticality\"\": 4.0}}]}}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_risk_lists_served_as_csv_give_the_golden_documents() {
    let rf = RecordedFutureSimulator::start().await;
    let folder = filebeat_threatintel("recordedfuture");
    for entity in ["domain", "hash", "ip", "url"] {
        let name = format!("rf_{entity}_default.csv.log");
        rf.set_risk_list(entity, &fs::read_to_string(folder.join(&name)).unwrap());
        let expected: Vec<Value> =
            serde_json::from_str(&fs::read_to_string(folder.join(format!("{name}-expected.json"))).unwrap())
                .unwrap();
        let home = home(TOKEN, &risk_list_vars(&rf, entity));
        rf.clear_log();
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{entity}: {}", stderr_text(&output));
        let all = home.documents();
        let documents = in_index(&all, HISTORY);
        let report = compare_unordered(&name, &documents, &expected, &filebeat_ignored("recordedfuture"));
        assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
        assert_eq!(documents.len(), 9, "{entity}: the header row is no document");
        assert_eq!(unique_ids(&documents), 9);
        // A risk-list row has no date: every listed entity is current (valid
        // from the download), one copy each, and nothing else was written.
        let latest = in_index(&all, LATEST);
        assert_eq!(latest.len(), 9, "{entity}");
        assert_eq!(unique_ids(&latest), 9, "{entity}");
        assert_eq!(all.len(), 18, "{entity}: only the history and the current state");

        // The whole list in one request; no paging, no cursor.
        let requests = rf.requests();
        assert_eq!(requests.len(), 1, "{entity}: {requests:#?}");
        assert_eq!(requests[0].path, format!("/v2/{entity}/risklist"));
        assert_eq!(requests[0].param("format"), Some("csv/splunk"));
        assert_eq!(requests[0].param("gzip"), Some("false"));
        assert_eq!(requests[0].param("list"), Some("default"));
        assert!(
            home.cursor("threatintel/recordedfuture")
                .is_none_or(|cursor| cursor == json!({})),
            "{entity}"
        );

        // Downloading the same list again gives the same ids.
        let output = home.run_once_async().await;
        assert!(output.status.success(), "{entity}: {}", stderr_text(&output));
        let all = home.documents();
        assert_eq!(
            unique_ids(&in_index(&all, HISTORY)),
            9,
            "{entity}: same ids on a re-read"
        );
        assert_eq!(
            unique_ids(&in_index(&all, LATEST)),
            9,
            "{entity}: same current-state ids on a re-read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_csv_row_is_logged_and_the_rows_around_it_are_kept() {
    let rf = RecordedFutureSimulator::start().await;
    let csv = format!(
        "{HEADER}{}\"203.0.113.9\",\"50\"\n{}\"unterminated,\"1\",\"1/1\",\"{{}}\"\n{}",
        row("198.51.100.1", 90),
        row("198.51.100.2", 80),
        row("198.51.100.3", 70)
    );
    rf.set_risk_list("ip", &csv);
    let home = home(TOKEN, &risk_list_vars(&rf, "ip"));
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    let all = home.documents();
    for index in [HISTORY, LATEST] {
        let mut ips: Vec<String> = in_index(&all, index)
            .iter()
            .map(|document| document["threat"]["indicator"]["ip"].as_str().unwrap().to_owned())
            .collect();
        ips.sort();
        assert_eq!(ips, ["198.51.100.1", "198.51.100.2", "198.51.100.3"], "{index}");
    }
    assert_eq!(all.len(), 6);
    assert!(log.contains("CSV row skipped"), "{log}");
    assert!(log.contains("2 cells, the header has 4"), "{log}");
    assert!(log.contains("/v2/ip/risklist"), "{log}");
}

fn result(number: usize, last_seen: &str) -> Value {
    json!({
        "entity": {"id": format!("ip:198.51.100.{number}"), "name": format!("198.51.100.{number}"), "type": "IpAddress"},
        "timestamps": {"firstSeen": "2021-01-01T00:00:00.000Z", "lastSeen": last_seen},
        "risk": {"score": 75, "riskString": "3/64", "criticalityLabel": "Malicious", "evidenceDetails": [{"rule": "Recent C&C Server"}]},
        "intelCard": format!("https://app.recordedfuture.com/live/sc/entity/ip%3A198.51.100.{number}"),
        "location": {"asn": "AS64500", "organization": "Example Net", "location": {"city": "Oslo", "country": "Norway", "continent": "Europe"}},
    })
}

/// An RFC 3339 time `seconds` ago (RF's layout).
fn ago(seconds: i64) -> String {
    threatbeat_test_support::taxii::timestamp_ago(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_api_pages_until_the_total_and_a_restart_asks_from_the_cursor() {
    let rf = RecordedFutureSimulator::start().await;
    let first_seen: Vec<String> = (1..=25).map(|number| ago(3600 - number as i64)).collect();
    rf.add_entities(
        "ip",
        (1..=25)
            .map(|number| result(number, &first_seen[number - 1]))
            .collect(),
    );
    let vars = format!(
        "      var.url: \"{}?limit=10&fields=entity,timestamps,risk,intelCard,location&metadata=false\"",
        rf.url("/v2/ip/search")
    );
    let home = home(TOKEN, &vars);
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let requests = rf.requests();
    let offsets: Vec<Option<&str>> = requests.iter().map(|request| request.param("from")).collect();
    assert_eq!(offsets, [None, Some("10"), Some("20")], "{requests:#?}");
    for request in &requests {
        assert_eq!(request.param("orderby"), Some("lastSeen"));
        assert_eq!(request.param("direction"), Some("asc"));
        assert_eq!(request.param("lastSeen"), requests[0].param("lastSeen"));
        assert!(request.param("lastSeen").unwrap().starts_with('['));
    }
    let everything = home.documents();
    // Seen an hour ago: all 25 are current (lastSeen + 90d), one copy each.
    assert_eq!(unique_ids(&in_index(&everything, LATEST)), 25);
    assert_eq!(in_index(&everything, LATEST).len(), 25);
    let all = in_index(&everything, HISTORY);
    assert_eq!(all.len(), 25);
    assert_eq!(everything.len(), 50);
    let first = all
        .iter()
        .find(|document| document["threat"]["indicator"]["ip"] == "198.51.100.1")
        .unwrap();
    assert_eq!(first["threat"]["indicator"]["type"], "ipv4-addr");
    assert_eq!(first["threat"]["indicator"]["as"]["number"], 64500);
    assert_eq!(first["threat"]["indicator"]["geo"]["city_name"], "Oslo");
    assert_eq!(first["event"]["risk_score"], 75.0);
    assert_eq!(first["recordedfuture"]["risk_string"], "3/64");
    assert_eq!(
        home.cursor("threatintel/recordedfuture"),
        Some(json!({"timestamp": first_seen[24]}))
    );

    // Seen again while the agent was down: the next run asks from the cursor.
    rf.add_entities(
        "ip",
        (26..=28)
            .map(|number| result(number, &ago(10 - number as i64 + 26)))
            .collect(),
    );
    rf.clear_log();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let requests = rf.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        requests[0].param("lastSeen"),
        Some(format!("[{},]", first_seen[24]).as_str())
    );
    let everything = home.documents();
    // RF's bound is inclusive: the boundary entity comes again, with the same id.
    assert_eq!(
        unique_ids(&in_index(&everything, HISTORY)),
        28,
        "nothing lost, no new id for the boundary entity"
    );
    assert_eq!(unique_ids(&in_index(&everything, LATEST)), 28);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_the_poll_with_the_fileset_and_url_and_publishes_nothing() {
    let rf = RecordedFutureSimulator::start().await;
    rf.set_risk_list("ip", &format!("{HEADER}{}", row("198.51.100.1", 90)));
    let home = home("not-the-token", &risk_list_vars(&rf, "ip"));
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("threatintel/recordedfuture"), "{log}");
    assert!(log.contains(&rf.url("/v2/ip/risklist")), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains("Missing or invalid token"),
        "RF's own message:\n{log}"
    );
    assert!(
        !log.contains("not-the-token"),
        "the token is never logged:\n{log}"
    );
    assert!(home.documents().is_empty());
    assert_eq!(rf.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_answer_is_logged_and_the_next_run_recovers() {
    let rf = RecordedFutureSimulator::start().await;
    rf.set_risk_list(
        "ip",
        &format!("{HEADER}{}{}", row("198.51.100.1", 90), row("198.51.100.2", 80)),
    );
    let home = home(TOKEN, &risk_list_vars(&rf, "ip"));
    rf.push_faults([Fault::HtmlPage]);
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("threatintel/recordedfuture"), "{log}");
    assert!(log.contains(&rf.url("/v2/ip/risklist")), "{log}");
    assert!(log.contains("HTML"), "{log}");
    assert!(home.documents().is_empty());

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let all = home.documents();
    assert_eq!(in_index(&all, HISTORY).len(), 2);
    assert_eq!(in_index(&all, LATEST).len(), 2);
    assert_eq!(all.len(), 4);
}
