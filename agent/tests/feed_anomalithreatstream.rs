//! threatintel/anomalithreatstream through the real binary and its
//! `http_endpoint` input, posted to the way ThreatStream's integrator does
//! (NDJSON, `X-Filebeat-Signature: sha256=<hex HMAC>`):
//!
//! - the golden records posted give the same documents as through the file
//!   input (and Elastic's goldens); refused requests (bad signature, bad
//!   JSON, too large) write nothing;
//! - 10 000 records in NDJSON batches with a `kill -9` of the agent in the
//!   middle and a restart: every record the sender got a 2xx for is indexed
//!   exactly once (unanswered batches are resent, as the SDK does).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threatbeat_inputs::http_endpoint::auth::{to_hex, HmacConfig};
use threatbeat_test_support::agent::{read_ndjson, wait_until, AgentHome};
use threatbeat_test_support::data::filebeat_threatintel;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::golden::{compare_unordered, filebeat_ignored};

const SECRET: &str = "integrator-shared-secret";
const INDEX: &str = "logs-ti_threatbeat.anomalithreatstream-default";
const PATIENCE: Duration = Duration::from_secs(120);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threatbeat"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `sha256=<hex HMAC-SHA256(body)>` keyed by `key`, as the integrator signs.
fn signature(key: &str, body: &[u8]) -> String {
    let config: HmacConfig = serde_json::from_value(json!({
        "header": "X-Filebeat-Signature", "key": key, "type": "sha256", "prefix": "sha256="
    }))
    .expect("an hmac config");
    format!("sha256={}", to_hex(&config.sign(body)))
}

/// One POST over a fresh connection, the minimum of HTTP/1.1 the agent
/// needs; an answer is (status, body). I/O errors (agent down, connection
/// cut by a kill) are returned for the caller to retry.
fn post(port: u16, body: &[u8], signature: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(signature) = signature {
        head.push_str(&format!("X-Filebeat-Signature: {signature}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server that refuses early (413) may close before the body is sent:
    // its answer is still there to read.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

/// Waits until the agent's listener takes connections.
fn wait_listening(port: u16) -> bool {
    wait_until(PATIENCE, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

fn module(port: u16, extra: &str) -> String {
    format!(
        "threatbeat.modules:
  - module: threatintel
    anomalithreatstream:
      var.listen_address: 127.0.0.1
      var.listen_port: {port}
      var.secret: {SECRET}
{extra}"
    )
}

/// Comparable documents: without `@timestamp` (the time of reading).
fn canonical(documents: &[Value]) -> BTreeSet<String> {
    documents
        .iter()
        .map(|document| {
            let mut document = document.clone();
            if let Some(object) = document.as_object_mut() {
                object.remove("@timestamp");
            }
            sort_tags(&mut document);
            document.to_string()
        })
        .collect()
}

fn sort_tags(document: &mut Value) {
    if let Some(Value::Array(tags)) = document.get_mut("tags") {
        tags.sort_by_key(Value::to_string);
    }
}

#[test]
fn golden_records_posted_give_the_file_input_documents() {
    let log = filebeat_threatintel("anomalithreatstream").join("generated.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 100);

    // Through the file input.
    let by_file = AgentHome::new(binary());
    by_file.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
threatbeat.modules:
  - module: threatintel
    anomalithreatstream:
      var.input: file
      var.paths: [{}]
output.file: {{path: out, filename: documents}}
",
            log.display()
        ),
    );
    let output = by_file.run_once();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file_documents = read_ndjson(&by_file.path("out"));
    assert_eq!(file_documents.len(), 100);
    // The golden records are from 2020: all expired, so no current-state
    // copy, only the history, marked for the rules to skip.
    assert!(file_documents.iter().all(|document| {
        document["@metadata"]["index"] == "logs-ti_threatbeat.anomalithreatstream-default"
            && document["labels"]["is_ioc_transform_source"] == "true"
    }));

    // Through the listener, in four signed NDJSON requests, after three
    // refused ones.
    let port = free_port();
    let mut pushed = AgentHome::new(binary());
    pushed.write(
        "threatbeat.yml",
        &format!(
            "path.data: data\n{}output.file: {{path: out, filename: documents}}\n",
            module(port, "      var.max_body_bytes: 65536\n")
        ),
    );
    let mut agent = pushed.spawn();
    assert!(
        wait_listening(port),
        "the listener never came up:\n{}",
        agent.log()
    );

    let batch = lines[..25].join("\n") + "\n";
    let (status, body) = post(
        port,
        batch.as_bytes(),
        Some(&signature("wrong key", batch.as_bytes())),
    )
    .unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("X-Filebeat-Signature"), "{body}");
    let (status, _) = post(port, batch.as_bytes(), None).unwrap();
    assert_eq!(status, 401);
    let broken = format!("{}\n{{\"id\": 1,\n{}\n", lines[0], lines[1]);
    let (status, body) = post(
        port,
        broken.as_bytes(),
        Some(&signature(SECRET, broken.as_bytes())),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 2"), "{body}");
    let huge = format!("{}\n", lines.join("\n")).repeat(3);
    let (status, _) = post(port, huge.as_bytes(), Some(&signature(SECRET, huge.as_bytes()))).unwrap();
    assert_eq!(status, 413);

    for chunk in lines.chunks(25) {
        let body = chunk.join("\n") + "\n";
        let (status, answer) =
            post(port, body.as_bytes(), Some(&signature(SECRET, body.as_bytes()))).unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    let out = pushed.path("out");
    assert!(
        wait_until(PATIENCE, || out.exists() && read_ndjson(&out).len() >= 100),
        "the 100 acknowledged records were not written:\n{}",
        agent.log()
    );
    let status = agent.terminate();
    assert!(status.success(), "{status}\n{}", agent.log());
    assert!(!agent.log().contains(SECRET), "the secret reached the log");
    let pushed_documents = read_ndjson(&out);
    assert_eq!(
        pushed_documents.len(),
        100,
        "refused requests wrote nothing, accepted ones once"
    );
    assert_eq!(canonical(&pushed_documents), canonical(&file_documents));

    // And both are Elastic's documents.
    let expected: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(log.with_extension("log-expected.json")).unwrap())
            .unwrap();
    let ignored = filebeat_ignored("anomalithreatstream");
    let report = compare_unordered("generated.log (posted)", &pushed_documents, &expected, &ignored);
    println!("{}", report.summary());
    assert!(report.passed(), "{}\n{}", report.summary(), report.diff());
}

/// `count` ThreatStream-like records with distinct ids.
fn records(count: usize) -> Vec<String> {
    (0..count)
        .map(|number| {
            json!({
                "id": 5_000_000_000u64 + number as u64,
                "itype": if number % 2 == 0 { "mal_ip" } else { "phish_url" },
                "srcip": format!("198.51.{}.{}", number / 250, number % 250),
                "url": format!("https://bad{number}.example.net/login"),
                "severity": "high",
                "confidence": 70,
                "classification": "private",
                "source": "Default Organization",
                "date_first": "2024-01-02T03:04:05",
                "date_last": "2024-01-03T03:04:05",
                "detail": "phishing,campaign-x",
                "trusted_circle_ids": ",7,",
            })
            .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_survive_a_kill_9_exactly_once() {
    const RECORDS: usize = 10_000;
    const PER_REQUEST: usize = 200;
    let cluster = ElasticsearchSimulator::start().await;
    // A slow cluster keeps acknowledged records in the disk queue when the
    // agent is killed: only the queue can bring them back.
    cluster.set_delay(Some(Duration::from_millis(150)));
    let port = free_port();
    let mut home = AgentHome::new(binary());
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
logging.level: info
output.elasticsearch:
  hosts: [\"{}\"]
  bulk_max_size: 500
  backoff.init: 100ms
  backoff.max: 1s
queue.disk:
  flush.min_events: 200
  flush.timeout: 50ms
{}",
            cluster.url(),
            module(port, "")
        ),
    );
    let mut agent = home.spawn();
    assert!(
        wait_listening(port),
        "the listener never came up:\n{}",
        agent.log()
    );

    let batches: Vec<String> = records(RECORDS)
        .chunks(PER_REQUEST)
        .map(|chunk| chunk.join("\n") + "\n")
        .collect();
    let total = batches.len();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    // The sender: each batch until it gets a 2xx; anything else (refused
    // connection, cut connection, 503) is resent after a pause.
    let sender = std::thread::spawn({
        let acknowledged = Arc::clone(&acknowledged);
        let retries = Arc::clone(&retries);
        move || {
            let deadline = Instant::now() + PATIENCE * 2;
            for batch in &batches {
                let signature = signature(SECRET, batch.as_bytes());
                loop {
                    assert!(Instant::now() < deadline, "the sender gave up");
                    match post(port, batch.as_bytes(), Some(&signature)) {
                        Ok((status, _)) if (200..300).contains(&status) => break,
                        Ok((status, body)) => {
                            assert!(status == 503, "unexpected answer {status}: {body}");
                        }
                        Err(_) => {}
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // Kill the agent once a good part of the batches is acknowledged.
    assert!(
        wait_until(PATIENCE, || acknowledged.load(Ordering::Relaxed) >= total / 3),
        "no progress before the kill:\n{}",
        agent.log()
    );
    agent.kill_9();
    let at_kill = acknowledged.load(Ordering::Relaxed);
    let indexed_at_kill = cluster.document_count(INDEX);
    assert!(at_kill < total, "the kill came after the last batch");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut agent = home.spawn();
    assert!(
        wait_listening(port),
        "the listener never came back:\n{}",
        agent.log()
    );

    tokio::task::spawn_blocking(move || sender.join())
        .await
        .unwrap()
        .expect("the sender finished");
    assert_eq!(acknowledged.load(Ordering::Relaxed), total);
    let complete = wait_until(PATIENCE, || cluster.document_count(INDEX) >= RECORDS);
    assert!(
        complete,
        "{} of {RECORDS} documents indexed:\n{}",
        cluster.document_count(INDEX),
        agent.log()
    );
    let status = agent.terminate();
    assert!(status.success(), "{status}");
    eprintln!(
        "acknowledged at the kill: {at_kill}/{total} batches; indexed then: {indexed_at_kill}; resends: {}",
        retries.load(Ordering::Relaxed)
    );

    // Exactly once: N documents, N distinct _ids, and the same N ThreatStream ids.
    assert_eq!(cluster.document_count(INDEX), RECORDS);
    assert_eq!(cluster.ids(INDEX).len(), RECORDS);
    let ids: BTreeSet<String> = cluster
        .documents(INDEX)
        .iter()
        .filter_map(|document| {
            document.source["anomali"]["threatstream"]["id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let expected: BTreeSet<String> = (0..RECORDS)
        .map(|number| (5_000_000_000u64 + number as u64).to_string())
        .collect();
    assert_eq!(ids, expected);
    // Nor to the current state: `date_first` 2024 + 90 days is long past.
    assert_eq!(cluster.indices(), [INDEX], "nothing went to a dead-letter index");
}
