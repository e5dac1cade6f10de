//! The abuse.ch filesets of the `threatintel` module (`abuseurl`,
//! `abusemalware`, `malwarebazaar`) through the real binary and their own
//! httpjson input, against the abuse.ch simulator
//! (`threatbeat_test_support::abusech`) on loopback.
//!
//! These feeds have no cursor and no paging: every poll is one request for
//! the whole "recent" list, and re-reading the same records must overwrite
//! (same `_id`), never duplicate.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use threatbeat_test_support::abusech::{AbusechSimulator, Endpoint, Fault, RequestRecord};
use threatbeat_test_support::agent::{document_ids, stderr_text, AgentHome};
use threatbeat_test_support::data::filebeat_threatintel;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::golden::{compare_unordered, filebeat_ignored};

/// A key the simulator accepts when keys are required.
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// One abuse.ch fileset and where its golden pair and API live.
#[derive(Clone, Copy)]
struct Feed {
    fileset: &'static str,
    log: &'static str,
    path: &'static str,
    endpoint: Endpoint,
}

const URLS: Feed = Feed {
    fileset: "abuseurl",
    log: "abusechurl.ndjson.log",
    path: "/v1/urls/recent/",
    endpoint: Endpoint::RecentUrls,
};
const PAYLOADS: Feed = Feed {
    fileset: "abusemalware",
    log: "abusechmalware.ndjson.log",
    path: "/v1/payloads/recent/",
    endpoint: Endpoint::RecentPayloads,
};
const BAZAAR: Feed = Feed {
    fileset: "malwarebazaar",
    log: "malwarebazaar.ndjson.log",
    path: "/api/v1/",
    endpoint: Endpoint::Bazaar,
};

impl Feed {
    /// The golden records with an expectation: complete lines only (the
    /// harness skips an unterminated last one), at most the first 100.
    fn records(&self) -> Vec<Value> {
        let path = filebeat_threatintel(self.fileset).join(self.log);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n') && !line.trim().is_empty())
            .take(100)
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            })
            .collect()
    }

    fn expected(&self) -> Vec<Value> {
        let path = filebeat_threatintel(self.fileset).join(format!("{}-expected.json", self.log));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    fn serve(&self, sim: &AbusechSimulator, records: Vec<Value>) {
        match self.endpoint {
            Endpoint::RecentUrls => sim.set_urls(records),
            Endpoint::RecentPayloads => sim.set_payloads(records),
            _ => sim.set_samples(records),
        }
    }

    fn index(&self) -> String {
        format!("logs-ti_threatbeat.{}-default", self.fileset)
    }

    /// The current-state index (docs/detection.md).
    fn latest(&self) -> String {
        format!("logs-ti_threatbeat_latest.{}", self.fileset)
    }

    fn pipeline(&self) -> String {
        format!("threatintel/{}", self.fileset)
    }
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

/// A home polling `feed` on `sim` every second; `extra` lines go under the
/// fileset (indented by the caller's 6 spaces), `output` is the output block.
fn home(feed: Feed, sim: &AbusechSimulator, extra: &str, output: &str) -> AgentHome {
    let home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
logging.level: info
threatbeat.modules:
  - module: threatintel
    {fileset}:
      var.url: {url}
      var.interval: 1s
{extra}
{output}
",
            fileset = feed.fileset,
            url = sim.url(feed.path),
        ),
    );
    home
}

const FILE_OUTPUT: &str = "output.file: {path: out, filename: docs}";

fn feed_requests(sim: &AbusechSimulator) -> Vec<RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|request| request.endpoint != Endpoint::Unknown)
        .collect()
}

/// (a) Elastic's golden records, served as the API serves them, give
/// Elastic's golden documents through each fileset's own httpjson input, in
/// exactly one request shaped as Filebeat sends it (plus the Auth-Key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_records_served_by_the_api_give_the_golden_documents() {
    for feed in [URLS, PAYLOADS, BAZAAR] {
        let sim = AbusechSimulator::start().await;
        sim.require_auth_keys(&[KEY]);
        feed.serve(&sim, feed.records());
        let home = home(feed, &sim, &format!("      var.auth_key: {KEY}"), FILE_OUTPUT);
        let output = home.run_once_async().await;
        assert!(
            output.status.success(),
            "{}: {}",
            feed.fileset,
            stderr_text(&output)
        );

        // The golden records are years old: all expired, so the history is
        // all there is (no current-state copy), marked for the rules to skip.
        let documents = home.documents();
        assert!(
            documents.iter().all(|document| {
                document["@metadata"]["index"] == feed.index().as_str()
                    && document["labels"]["is_ioc_transform_source"] == "true"
            }),
            "{}: history only",
            feed.fileset
        );
        let report = compare_unordered(
            feed.log,
            &documents,
            &feed.expected(),
            &filebeat_ignored(feed.fileset),
        );
        assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
        println!("{}", report.summary());

        let requests = feed_requests(&sim);
        assert_eq!(
            requests.len(),
            1,
            "{}: one request per poll: {requests:?}",
            feed.fileset
        );
        let request = &requests[0];
        assert_eq!(request.status, 200);
        assert_eq!(request.auth_key.as_deref(), Some(KEY));
        if feed.endpoint == Endpoint::Bazaar {
            assert_eq!(request.method, "POST");
            assert_eq!(
                request.content_type.as_deref(),
                Some("application/x-www-form-urlencoded")
            );
            let mut form = request.form.clone();
            form.sort();
            assert_eq!(
                form,
                vec![
                    ("query".to_owned(), "get_recent".to_owned()),
                    ("selector".to_owned(), "time".to_owned())
                ]
            );
        } else {
            assert_eq!(request.method, "GET");
        }
    }
}

/// (b)/(c) No paging, no cursor: a second poll of the same data is again
/// one request and overwrites the same documents in Elasticsearch (same
/// `_id`), so the index holds each record once; `no_results` publishes
/// nothing and ends the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_poll_of_the_same_data_overwrites_instead_of_duplicating() {
    for feed in [URLS, PAYLOADS, BAZAAR] {
        let sim = AbusechSimulator::start().await;
        let cluster = ElasticsearchSimulator::start().await;
        let records = feed.records();
        feed.serve(&sim, records.clone());
        let output_block = format!(
            "output.elasticsearch:\n  hosts: [\"{}\"]\n  backoff.init: 100ms\n  backoff.max: 1s",
            cluster.url()
        );
        let home = home(feed, &sim, "", &output_block);

        let first = home.run_once_async().await;
        assert!(first.status.success(), "{}", stderr_text(&first));
        let after_first = cluster.ids(&feed.index());
        assert_eq!(
            after_first.len(),
            records.len(),
            "{}: one document per record",
            feed.fileset
        );

        let second = home.run_once_async().await;
        assert!(second.status.success(), "{}", stderr_text(&second));
        assert_eq!(
            cluster.document_count(&feed.index()),
            records.len(),
            "{}: the second poll added nothing",
            feed.fileset
        );
        assert_eq!(cluster.ids(&feed.index()), after_first, "the same _ids");
        // Years-old golden records are expired: no current-state copy.
        assert_eq!(cluster.document_count(&feed.latest()), 0, "{}", feed.fileset);

        // Nothing recent: `{"query_status": "no_results"}` is no document and no error.
        feed.serve(&sim, Vec::new());
        let third = home.run_once_async().await;
        assert!(third.status.success(), "{}", stderr_text(&third));
        assert_eq!(cluster.document_count(&feed.index()), records.len());

        let requests = feed_requests(&sim);
        assert_eq!(
            requests.len(),
            3,
            "{}: exactly one request per poll: {requests:?}",
            feed.fileset
        );
        assert!(requests.iter().all(|request| request.status == 200));
        assert_eq!(requests[2].items, 0);
        // Without `var.auth_key` no Auth-Key header is sent (Filebeat's request).
        assert!(requests.iter().all(|request| request.auth_key.is_none()));
    }
}

/// The same record read twice (two polls into a file output) carries the
/// same `_id`, which is Elastic's own fingerprint of the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_stable_across_polls_and_equal_to_elastics() {
    let sim = AbusechSimulator::start().await;
    let records = PAYLOADS.records();
    PAYLOADS.serve(&sim, records.clone());
    let home = home(PAYLOADS, &sim, "", FILE_OUTPUT);
    let first = home.run_once_async().await;
    assert!(first.status.success(), "{}", stderr_text(&first));
    let first_ids = document_ids(&home.documents());
    let second = home.run_once_async().await;
    assert!(second.status.success(), "{}", stderr_text(&second));
    let all = document_ids(&home.documents());
    assert_eq!(all.len(), 2 * records.len());
    assert_eq!(
        &all[records.len()..],
        &first_ids[..],
        "same records, same ids, same order"
    );
    let distinct: std::collections::BTreeSet<&String> = first_ids.iter().collect();
    assert_eq!(distinct.len(), records.len(), "one id per payload");
    // Elasticsearch's fingerprint (SHA-1, base64) of `0x00 md5 0x00 sha256`,
    // computed independently for the first golden record
    // (7871286a…, 48a6aee1…): the ids Filebeat's pipeline gives.
    assert_eq!(first_ids[0], "1K3qM0jYs0N2vFzpUr18+d6EVTs=");
}

/// (d) abuse.ch answers 401 without a key and 403 `unknown_auth_key` for a
/// wrong one: the poll fails at once (no retry), the error names the
/// fileset, the URL and the status, and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unknown_auth_key_fails_the_poll_clearly() {
    for (feed, key_line, status, body) in [
        (URLS, "", 401, "Unauthorized"),
        (
            BAZAAR,
            "      var.auth_key: not-a-registered-key",
            403,
            "unknown_auth_key",
        ),
        (
            PAYLOADS,
            "      var.auth_key: not-a-registered-key",
            403,
            "unknown_auth_key",
        ),
    ] {
        let sim = AbusechSimulator::start().await;
        sim.require_auth_keys(&[KEY]);
        feed.serve(&sim, feed.records());
        let home = home(feed, &sim, key_line, FILE_OUTPUT);
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(
            !output.status.success(),
            "{}: the run reports the failure\n{log}",
            feed.fileset
        );
        assert!(log.contains(&feed.pipeline()), "names the fileset:\n{log}");
        assert!(log.contains(&sim.url(feed.path)), "names the URL:\n{log}");
        assert!(log.contains(&status.to_string()), "names the status:\n{log}");
        assert!(log.contains(body), "shows the API's answer:\n{log}");
        assert!(
            !log.contains("not-a-registered-key"),
            "the key is a secret:\n{log}"
        );
        assert!(home.documents().is_empty(), "nothing published");
        let requests = feed_requests(&sim);
        assert_eq!(requests.len(), 1, "an auth failure is not retried: {requests:?}");
        assert_eq!(requests[0].status, status);
    }
}

/// (e) A truncated JSON answer and an HTML page: each attempt is logged with
/// the fileset and the URL; when the attempts run out the poll fails with
/// nothing published, and the next poll recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_logged_and_the_next_poll_recovers() {
    for fault in [Fault::TruncatedJson, Fault::HtmlPage] {
        let sim = AbusechSimulator::start().await;
        let records = URLS.records();
        URLS.serve(&sim, records.clone());
        sim.push_faults([fault.clone(), fault.clone()]);
        let home = home(
            URLS,
            &sim,
            "      input.request.retry: {max_attempts: 2, wait_min: 10ms, wait_max: 20ms}",
            FILE_OUTPUT,
        );
        let failed = home.run_once_async().await;
        let log = stderr_text(&failed);
        assert!(!failed.status.success(), "{fault:?}: the poll fails\n{log}");
        assert!(log.contains("threatintel/abuseurl"), "{log}");
        assert!(log.contains(&sim.url(URLS.path)), "{log}");
        assert!(log.contains("request failed, retrying"), "{log}");
        assert!(home.documents().is_empty(), "nothing published");
        assert_eq!(feed_requests(&sim).len(), 2);

        let recovered = home.run_once_async().await;
        assert!(recovered.status.success(), "{}", stderr_text(&recovered));
        assert_eq!(home.documents().len(), records.len());
        assert_eq!(feed_requests(&sim).len(), 3);
    }
}

/// URLhaus rate-limits with 429: the input waits what `Retry-After` says and
/// asks again within the same poll; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_within_the_poll() {
    let sim = AbusechSimulator::start().await;
    let records = URLS.records();
    URLS.serve(&sim, records.clone());
    sim.push_faults([Fault::RateLimited(Some(1))]);
    let home = home(URLS, &sim, "", FILE_OUTPUT);
    let started = std::time::Instant::now();
    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let requests = feed_requests(&sim);
    assert_eq!(
        requests.iter().map(|request| request.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let documents = home.documents();
    assert_eq!(documents.len(), records.len());
    assert!(stderr_text(&output).contains("429"), "the wait is logged");
}
