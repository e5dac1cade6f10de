//! The monitoring endpoint and secrets, end to end: the real binary polls the
//! MISP simulator with an API key from the keystore and writes to the
//! Elasticsearch simulator with a password from the environment, with debug
//! logging. `/metrics`, `/` and `/healthz` are scraped during the run and
//! checked against what the simulators saw; then every log, file and the
//! exported config are searched for the secrets.

mod ops_support;

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ops_support::Home;
use serde_json::Value;
use threatbeat::metrics::sample;
use threatbeat_test_support::elasticsearch::{Credential, ElasticsearchSimulator};
use threatbeat_test_support::misp::{generate_events, MispSimulator};

const MISP_KEY: &str = "KeystoreMispKey0123456789abcdefABCDEF000";
const ES_PASSWORD: &str = "EnvEsPassw0rd-93ad7f";

/// `GET path` on `address`; the status code and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` in a Prometheus text page.
/// Documents in every index (the fileset picks the index or data stream).
fn indexed(es: &ElasticsearchSimulator) -> usize {
    es.indices().iter().map(|index| es.document_count(index)).sum()
}

fn files_under(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_match_the_simulators_and_no_secret_reaches_a_log() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let misp = MispSimulator::start(generate_events(12, 3, now - 3600)).await;
    misp.add_api_key(MISP_KEY);
    let es = ElasticsearchSimulator::start_with_credentials(vec![Credential::Basic {
        username: "elastic".into(),
        password: ES_PASSWORD.into(),
        can_write: true,
    }])
    .await;
    let home = Home::new(&format!(
        "
path.data: data
path.logs: logs
logging.level: debug
http.enabled: true
http.host: 127.0.0.1
http.port: 0
output.elasticsearch:
  hosts: [\"{}\"]
  username: elastic
  password: ${{ES_PASSWORD}}
  backoff.init: 100ms
  backoff.max: 1s
",
        es.url()
    ));
    home.write(
        "modules.d/threatintel.yml",
        &format!(
            "- module: threatintel\n  misp:\n    var.url: {}\n    var.api_token: ${{MISP_KEY}}\n    var.interval: 1h\n    var.first_interval: 24h\n    var.limit: 5\n",
            misp.url("/events/restSearch")
        ),
    );

    // The MISP key goes into the keystore, from stdin.
    let created = home
        .command(&[])
        .args(["keystore", "create", "-c", "threatbeat.yml"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut add = home
        .command(&[])
        .args(["keystore", "add", "MISP_KEY", "--stdin", "-c", "threatbeat.yml"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{MISP_KEY}\n").as_bytes())
        .unwrap();
    let added = add.wait_with_output().unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let env = [("ES_PASSWORD", ES_PASSWORD)];
    let mut agent = tokio::task::block_in_place(|| home.start(&[], &env));
    let expected = misp.attribute_count();
    // Every attribute is recent, so valid: a history document and a
    // current-state document each.
    let documents = 2 * expected;
    let address = tokio::task::block_in_place(|| {
        agent.wait_for("the endpoint", |agent| {
            agent.logs().contains("monitoring endpoint listening")
        });
        agent.wait_for("every attribute indexed", |_| indexed(&es) == documents);
        let logs = agent.logs();
        let line = logs
            .lines()
            .find(|line| line.contains("monitoring endpoint listening"))
            .unwrap();
        line.split("address=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    });

    let pipeline = "{pipeline=\"threatintel/misp\"}";
    // The crates' counters settle once the poll completed (its last, empty page)
    // and the output read Elasticsearch's answer to the last bulk request.
    let settled = |page: &str| {
        let last_poll = sample(
            page,
            &format!("threatbeat_input_last_success_timestamp_seconds{pipeline}"),
        );
        last_poll.is_some_and(|at| at >= now as f64)
            && sample(page, "threatbeat_output_events_total{result=\"acked\"}") == Some(indexed(&es) as f64)
            && sample(page, "threatbeat_queue_events{queue=\"disk\"}") == Some(0.0)
    };
    tokio::task::block_in_place(|| {
        agent.wait_for("the input, queue and output metrics to settle", |_| {
            settled(&get(&address, "/metrics").1)
        })
    });
    let (status, page) = tokio::task::block_in_place(|| get(&address, "/metrics"));
    assert_eq!(status, 200, "{page}");
    assert!(settled(&page), "{page}");
    let searches = misp.searches();
    let answered = searches.iter().filter(|search| search.status == 200).count();
    let requests_ok = sample(
        &page,
        "threatbeat_input_requests_total{pipeline=\"threatintel/misp\",status=\"200\"}",
    );
    assert_eq!(requests_ok, Some(answered as f64), "{page}");
    let requests_all: f64 = page
        .lines()
        .filter(|line| line.starts_with("threatbeat_input_requests_total{pipeline=\"threatintel/misp\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(requests_all, searches.len() as f64, "{page}");
    assert_eq!(
        sample(&page, &format!("threatbeat_input_pages_total{pipeline}")),
        Some(answered as f64),
        "{page}"
    );
    assert_eq!(
        sample(&page, &format!("threatbeat_input_events_total{pipeline}")),
        Some(expected as f64),
        "{page}"
    );
    let lag = sample(&page, &format!("threatbeat_input_cursor_lag_seconds{pipeline}")).unwrap();
    assert!((0.0..=3.0 * 3600.0).contains(&lag), "cursor lag {lag}\n{page}");
    for (series, value) in [
        ("threatbeat_output_events_total{result=\"duplicate\"}", 0.0),
        ("threatbeat_output_events_total{result=\"dropped\"}", 0.0),
        ("threatbeat_output_events_total{result=\"dead_lettered\"}", 0.0),
        ("threatbeat_queue_oldest_event_age_seconds{queue=\"disk\"}", 0.0),
        ("threatbeat_queue_bytes{queue=\"disk\"}", 0.0),
    ] {
        assert_eq!(sample(&page, series), Some(value), "{series}\n{page}");
    }
    assert_eq!(
        sample(&page, "threatbeat_queue_events_added_total{queue=\"disk\"}"),
        Some(documents as f64),
        "{page}"
    );
    assert_eq!(
        sample(&page, "threatbeat_queue_events_acked_total{queue=\"disk\"}"),
        Some(documents as f64),
        "{page}"
    );
    let bulk_ok = sample(&page, "threatbeat_output_bulk_requests_total{status=\"200\"}").unwrap();
    assert!(bulk_ok >= 1.0, "{page}");
    assert_eq!(
        sample(&page, "threatbeat_output_bulk_duration_seconds_count"),
        Some(bulk_ok),
        "{page}"
    );
    assert!(
        sample(&page, "threatbeat_output_write_bytes_total").unwrap() > 0.0,
        "{page}"
    );
    let published = sample(
        &page,
        &format!("threatbeat_pipeline_events_published_total{pipeline}"),
    );
    // The pipeline counts the feed's documents; the current-state copies are
    // the other half of what was indexed.
    assert_eq!(published, Some(expected as f64), "{page}");
    assert!(expected > 0);
    assert_eq!(
        sample(&page, &format!("threatbeat_pipeline_up{pipeline}")),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            &format!("threatbeat_pipeline_batches_failed_total{pipeline}")
        ),
        Some(0.0)
    );
    let commits = sample(
        &page,
        &format!("threatbeat_pipeline_cursor_commits_total{pipeline}"),
    )
    .unwrap();
    assert!(commits >= 1.0, "{page}");
    let last = sample(
        &page,
        &format!("threatbeat_pipeline_last_publish_timestamp_seconds{pipeline}"),
    )
    .unwrap();
    assert!(last >= now as f64, "{page}");
    // At most one cursor commit per page MISP answered (an empty last page may add none).
    let pages = misp
        .searches()
        .iter()
        .filter(|search| search.status == 200)
        .count();
    assert!((commits as usize) <= pages && pages >= 2, "{pages} pages\n{page}");

    let (status, health) = tokio::task::block_in_place(|| get(&address, "/healthz"));
    assert_eq!(status, 200, "{health}");
    let (status, summary) = tokio::task::block_in_place(|| get(&address, "/"));
    assert_eq!(status, 200);
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        summary["pipelines"]["threatintel/misp"]["events"]["published"], expected as u64,
        "{summary}"
    );
    assert_eq!(summary["pipelines"]["threatintel/misp"]["running"], true);

    agent.signal("TERM");
    let status = tokio::task::block_in_place(|| agent.wait_exit());
    assert!(status.success(), "{status}\n{}", agent.logs());
    let logs = agent.logs();
    assert!(logs.contains("DEBUG"), "debug logging was on");
    assert!(logs.contains("batch published"), "{logs}");

    // No secret in any file the run left (logs, queue, cursors, output), nor in stderr, nor in /metrics.
    let exported = home
        .command(&env)
        .args(["export", "config", "-c", "threatbeat.yml"])
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let mut files = Vec::new();
    files_under(home.dir.path(), &mut files);
    let keystore = home.path("data/threatbeat.keystore");
    assert!(keystore.is_file());
    let mut searched = vec![
        ("/metrics".to_owned(), page.into_bytes()),
        ("export config".to_owned(), exported.stdout),
        ("export config stderr".to_owned(), exported.stderr),
    ];
    for file in files.into_iter().filter(|file| *file != keystore) {
        searched.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    for (name, content) in &searched {
        let text = String::from_utf8_lossy(content);
        for secret in [MISP_KEY, ES_PASSWORD] {
            assert!(!text.contains(secret), "{name} holds a secret:\n{text}");
        }
    }
    assert!(searched.len() > 4, "logs and data files were searched");
}
