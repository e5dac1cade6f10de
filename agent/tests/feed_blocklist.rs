//! `threatintel/blocklist` end to end: the real binary, the fileset's httpjson
//! (or file) input and the blocklist download simulator
//! (`threatbeat_test_support::blocklist`) on loopback.
//!
//! * every form a list holds (IPv4/IPv6 addresses and networks, ip:port,
//!   URLs, domain names, MD5/SHA-1/SHA-256) maps to the ECS fields the
//!   prebuilt rules read, field by field against documents written by hand;
//!   Spamhaus DROP (`;` comments and notes) and CSV lists (a column by
//!   number, or by its header's name) too;
//! * each pull is the whole list: an indicator the next complete pull no
//!   longer lists leaves the current state, one that is added joins it; a
//!   pull that fails (500, an HTML page) or answers nothing ends nothing;
//! * a private list without its key is a clear error naming the fileset and
//!   the URL, and works with `var.headers`.

use std::path::Path;

use serde_json::{json, Value};
use threatbeat_test_support::agent::{in_index, replay_current_state, stderr_text, AgentHome};
use threatbeat_test_support::blocklist::{BlocklistSimulator, Fault};
use threatbeat_test_support::golden::compare_unordered;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

const HISTORY: &str = "logs-ti_threatbeat.blocklist-default";
const LATEST: &str = "logs-ti_threatbeat_latest.blocklist";
const LIST_PATH: &str = "/downloads/ipblocklist.txt";

/// Fail fast: the tests look at one attempt at a time.
const ONE_ATTEMPT: &str = "      input.request.retry: {max_attempts: 1, wait_min: 10ms, wait_max: 10ms}";

/// A home whose pipelines are `threatintel/blocklist` with `vars` (and the
/// entries after it).
fn home(vars: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            r#"path.data: data
threatbeat.modules:
  - module: threatintel
    blocklist:
{vars}
output.file: {{path: out, filename: docs}}
"#
        ),
    );
    home
}

/// The values of the current state after every write so far.
fn current_values(home: &AgentHome) -> Vec<String> {
    let mut values: Vec<String> = replay_current_state(&home.documents(), LATEST)
        .values()
        .map(|document| {
            document["blocklist"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    values.sort();
    values
}

/// What every history document of a list at `source` holds besides its own fields.
fn expected(source: &str, value: &str, indicator: Value) -> Value {
    let mut document = json!({
        "blocklist": {"source": source, "value": value},
        "event": {
            "kind": "enrichment",
            "category": "threat",
            "type": "indicator",
            "module": "threatintel",
            "dataset": "threatintel.blocklist",
        },
        "threat": {"feed": {"name": "Blocklist"}, "indicator": indicator},
        "tags": ["threatintel-blocklist", "forwarded"],
        "labels": {"is_ioc_transform_source": "true"},
    });
    if document["threat"]["indicator"].is_null() {
        document["threat"]
            .as_object_mut()
            .expect("an object")
            .remove("indicator");
    }
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_value_maps_to_the_fields_the_rules_read() {
    let lists = BlocklistSimulator::start().await;
    lists.set_list(
        LIST_PATH,
        concat!(
            "################################################################\n",
            "# abuse.ch Feodo Tracker Botnet C2 IP Blocklist                #\n",
            "################################################################\n",
            "#\n",
            "# DstIP\n",
            "192.0.2.1\r\n",
            "\n",
            "   198.51.100.0/24   \n",
            "203.0.113.5:443\n",
            "2001:db8::1\n",
            "2001:db8:10::/48\n",
            "http://evil.example/gate.php?id=1\n",
            "Bad-Domain.Example.COM\n",
            "D41D8CD98F00B204E9800998ECF8427E\n",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709\n",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
            "not/a value\n",
            "# last line\n",
        ),
    );
    let url = lists.url(LIST_PATH);
    let home = home(&format!("      var.url: {url}\n{ONE_ATTEMPT}"));
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    let history = in_index(&home.documents(), HISTORY);
    let wanted = vec![
        expected(&url, "192.0.2.1", json!({"type": "ipv4-addr", "ip": "192.0.2.1"})),
        expected(
            &url,
            "198.51.100.0/24",
            json!({"type": "ipv4-addr", "ip": "198.51.100.0/24"}),
        ),
        expected(
            &url,
            "203.0.113.5:443",
            json!({"type": "ipv4-addr", "ip": "203.0.113.5", "port": 443}),
        ),
        expected(
            &url,
            "2001:db8::1",
            json!({"type": "ipv6-addr", "ip": "2001:db8::1"}),
        ),
        expected(
            &url,
            "2001:db8:10::/48",
            json!({"type": "ipv6-addr", "ip": "2001:db8:10::/48"}),
        ),
        expected(
            &url,
            "http://evil.example/gate.php?id=1",
            json!({"type": "url", "url": {
                "original": "http://evil.example/gate.php?id=1",
                "full": "http://evil.example/gate.php?id=1",
                "scheme": "http",
                "domain": "evil.example",
                "path": "/gate.php",
                "query": "id=1",
                "extension": "php",
            }}),
        ),
        expected(
            &url,
            "Bad-Domain.Example.COM",
            json!({"type": "domain-name", "url": {"domain": "bad-domain.example.com"}}),
        ),
        expected(
            &url,
            "D41D8CD98F00B204E9800998ECF8427E",
            json!({"type": "file", "file": {"hash": {"md5": "d41d8cd98f00b204e9800998ecf8427e"}}}),
        ),
        expected(
            &url,
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            json!({"type": "file", "file": {"hash": {"sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}}}),
        ),
        expected(
            &url,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            json!({"type": "file", "file": {"hash": {"sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}),
        ),
        {
            let mut unknown = expected(&url, "not/a", Value::Null);
            unknown["blocklist"]["note"] = json!("value");
            unknown["error"] = json!({"message": "blocklist entry is not an IP address or network, ip:port, URL, domain name or MD5/SHA-1/SHA-256 hash"});
            unknown
        },
    ];
    let report = compare_unordered("blocklist", &history, &wanted, &["@timestamp", "@metadata.*"]);
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());

    // Every recognised value is one current-state document, unmarked; the
    // unrecognised line is none.
    let state = replay_current_state(&home.documents(), LATEST);
    assert_eq!(state.len(), 10);
    assert!(state.values().all(|document| document.get("labels").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spamhaus_drop_and_csv_columns() {
    let lists = BlocklistSimulator::start().await;
    // Spamhaus DROP: `;` comments, a note after each network.
    lists.set_list(
        "/drop.txt",
        "; Spamhaus DROP List 2026/12/04 - (c) 2026 The Spamhaus Project\n; Last-Modified: Fri, 04 Dec 2026 10:00:00 GMT\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n",
    );
    // Feodo Tracker's CSV: its header is a comment; the IP is column 2.
    lists.set_list(
        "/ipblocklist.csv",
        "################\n# \"first_seen_utc\",\"dst_ip\",\"dst_port\",\"c2_status\",\"last_online\",\"malware\"\n\"2021-01-17 07:44:46\",\"192.0.2.77\",\"443\",\"online\",\"2026-12-03\",\"Dridex\"\n\"2021-01-18 08:00:00\",\"192.0.2.78\",\"8080\",\"offline\",\"2026-11-30\",\"QakBot\"\n",
    );
    // A vendor CSV with a header row: the column by name.
    lists.set_list(
        "/export.csv",
        "indicator,kind\nevil.example.net,domain\nhttps://evil.example.net/x,url\n",
    );
    let home = home(&format!(
        r#"      var.url: {drop}
      var.comment_prefixes: [";"]
      var.feed_name: Spamhaus DROP
  - module: threatintel
    blocklist:
      id: feodo-csv
      var.url: {feodo}
      var.format: csv
      var.column: 2
      var.indicator_type: ipv4-addr
  - module: threatintel
    blocklist:
      id: vendor-csv
      var.url: {vendor}
      var.format: csv
      var.csv_header: true
      var.column: indicator"#,
        drop = lists.url("/drop.txt"),
        feodo = lists.url("/ipblocklist.csv"),
        vendor = lists.url("/export.csv"),
    ));
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let history = in_index(&home.documents(), HISTORY);
    let by_value = |value: &str| {
        history
            .iter()
            .find(|document| document["blocklist"]["value"] == value)
            .unwrap_or_else(|| panic!("no document for {value}: {history:#?}"))
            .clone()
    };
    let drop = by_value("1.10.16.0/20");
    assert_eq!(drop["threat"]["indicator"]["ip"], "1.10.16.0/20");
    assert_eq!(drop["blocklist"]["note"], "; SBL256894");
    assert_eq!(drop["threat"]["feed"]["name"], "Spamhaus DROP");
    let feodo = by_value("192.0.2.78");
    assert_eq!(feodo["threat"]["indicator"]["type"], "ipv4-addr");
    assert_eq!(feodo["blocklist"]["row"]["column6"], "QakBot");
    let vendor = by_value("https://evil.example.net/x");
    assert_eq!(
        vendor["threat"]["indicator"]["url"]["full"],
        "https://evil.example.net/x"
    );
    assert_eq!(
        by_value("evil.example.net")["threat"]["indicator"]["url"]["domain"],
        "evil.example.net"
    );
    assert_eq!(history.len(), 6, "{history:#?}");
    assert_eq!(replay_current_state(&home.documents(), LATEST).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_list_drops_leaves_the_current_state_and_failed_pulls_end_nothing() {
    let lists = BlocklistSimulator::start().await;
    lists.set_list(LIST_PATH, "# v1\n192.0.2.1\n192.0.2.2\n192.0.2.3\n");
    let home = home(&format!("      var.url: {}\n{ONE_ATTEMPT}", lists.url(LIST_PATH)));
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(current_values(&home), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);

    // .2 leaves the list, .4 joins it.
    lists.set_list(LIST_PATH, "# v2\n192.0.2.1\n192.0.2.3\n192.0.2.4\n");
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(current_values(&home), ["192.0.2.1", "192.0.2.3", "192.0.2.4"]);
    assert!(stderr_text(&output).contains("indicators no longer listed deleted"));

    // A failed pull, an HTML page and an empty answer end nothing.
    lists.set_list(LIST_PATH, "# v3\n192.0.2.9\n");
    for fault in [Fault::ServerError, Fault::HtmlPage] {
        lists.inject(fault.clone());
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(!output.status.success(), "{fault:?}: {log}");
        assert!(
            log.contains("threatintel/blocklist") && log.contains(LIST_PATH),
            "{fault:?}: {log}"
        );
        assert_eq!(
            current_values(&home),
            ["192.0.2.1", "192.0.2.3", "192.0.2.4"],
            "{fault:?}"
        );
    }
    lists.inject(Fault::EmptyBody);
    let output = home.run_once_async().await;
    assert!(
        stderr_text(&output).contains("listed no indicator"),
        "{}",
        stderr_text(&output)
    );
    assert_eq!(current_values(&home), ["192.0.2.1", "192.0.2.3", "192.0.2.4"]);

    // The next good pull is the list again.
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(current_values(&home), ["192.0.2.9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_file_read_again_ends_what_it_dropped() {
    let home =
        home("      var.input: file\n      var.paths: [lists/drop.txt]\n      var.comment_prefixes: [\";\"]");
    std::fs::create_dir_all(home.path("lists")).expect("lists folder");
    std::fs::write(
        home.path("lists/drop.txt"),
        "1.10.16.0/20 ; SBL1\n2.56.192.0/22 ; SBL2\n",
    )
    .expect("list");
    let output = home.run_once();
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(current_values(&home), ["1.10.16.0/20", "2.56.192.0/22"]);

    std::fs::write(
        home.path("lists/drop.txt"),
        "2.56.192.0/22 ; SBL2\n5.188.10.0/23 ; SBL3\n",
    )
    .expect("list");
    let output = home.run_once();
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(current_values(&home), ["2.56.192.0/22", "5.188.10.0/23"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_list_needs_its_key_and_the_refusal_is_clear() {
    let lists = BlocklistSimulator::start().await;
    lists.set_list(LIST_PATH, "192.0.2.1\n");
    lists.require_header("X-Api-Key", "s3cr3t-list-key");
    let url = lists.url(LIST_PATH);

    let without = home(&format!("      var.url: {url}\n{ONE_ATTEMPT}"));
    let output = without.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("401") && log.contains("threatintel/blocklist") && log.contains(LIST_PATH),
        "{log}"
    );
    assert!(without.documents().is_empty());

    let with = home(&format!(
        "      var.url: {url}\n      var.headers: {{X-Api-Key: s3cr3t-list-key}}\n{ONE_ATTEMPT}"
    ));
    let output = with.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    assert!(!log.contains("s3cr3t-list-key"), "the key is in the log: {log}");
    assert_eq!(current_values(&with), ["192.0.2.1"]);
}
