//! The `http_endpoint` input on loopback: answers only once records are
//! durable, all-or-nothing requests, secret and HMAC checks, limits, TLS,
//! and the anomalithreatstream manifest's rendering of it.

mod common;

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use threatbeat_core::{
    BuildContext, Input, InputContext, InputError, Origin, PluginConfig, PublishError, PublishRequest,
    Publisher,
};
use threatbeat_inputs::http_endpoint::auth::{hmac, to_hex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "ts-integrator-secret";

/// A port free right now (the input binds it a moment later).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

struct Running {
    port: u16,
    requests: mpsc::Receiver<PublishRequest>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), InputError>>,
}

impl Running {
    /// Waits until the port answers.
    async fn ready(&self, scheme: &str) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{scheme} endpoint on port {} never came up", self.port);
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://localhost:{}/", self.port)
    }

    /// The next batch handed to the pipeline, if one comes soon.
    async fn next_batch(&mut self) -> Option<PublishRequest> {
        tokio::time::timeout(Duration::from_millis(300), self.requests.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn start(type_name: &str, settings: Value) -> Running {
    let port = free_port();
    let mut settings = settings;
    settings["listen_port"] = json!(port);
    let config = PluginConfig {
        type_name: type_name.to_owned(),
        settings,
        origin: Origin::named("test.yml").child("input"),
    };
    start_config(config, port).await
}

async fn start_config(config: PluginConfig, port: u16) -> Running {
    let context = BuildContext {
        config_path: Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
        ..BuildContext::default()
    };
    let input: Box<dyn Input> = threatbeat_inputs::registry()
        .build(&config, &context)
        .unwrap_or_else(|error| panic!("{error}"));
    let (publisher, requests) = Publisher::channel(4);
    let shutdown = CancellationToken::new();
    let input_context = InputContext {
        id: "test/http_endpoint".into(),
        publisher,
        cursor: None,
        shutdown: shutdown.clone(),
        run_once: false,
    };
    let task = tokio::spawn(input.run(input_context));
    Running {
        port,
        requests,
        shutdown,
        task,
    }
}

fn sign(body: &[u8]) -> String {
    format!(
        "sha256={}",
        to_hex(&hmac::<sha2::Sha256>(SECRET.as_bytes(), body))
    )
}

fn ndjson(ids: std::ops::Range<u64>) -> String {
    ids.map(|id| json!({"id": id, "itype": "mal_ip", "srcip": "203.0.113.7"}).to_string() + "\n")
        .collect()
}

fn threatstream_settings() -> Value {
    json!({
        "listen_address": "127.0.0.1",
        "content_type": "application/x-ndjson",
        "hmac": {"header": "X-Filebeat-Signature", "key": SECRET, "type": "sha256", "prefix": "sha256="},
        "max_body_bytes": 4096,
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/x-ndjson")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("X-Filebeat-Signature", signature);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn answers_only_once_the_batch_is_durable() {
    let mut endpoint = start("http_endpoint", threatstream_settings()).await;
    endpoint.ready("http").await;
    let client = reqwest::Client::new();
    let body = ndjson(0..3);
    let url = endpoint.url("http");
    let signature = sign(body.as_bytes());
    let sent = tokio::spawn({
        let client = client.clone();
        let body = body.clone();
        async move { post(&client, &url, &body, Some(signature)).await }
    });
    let request = endpoint
        .next_batch()
        .await
        .expect("the records reach the pipeline");
    let records: Vec<Value> = request
        .batch
        .events
        .iter()
        .map(|event| Value::Object(event.fields.clone()))
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["json"]["id"], json!(0));
    assert_eq!(request.batch.cursor, None);
    // Not durable yet: the sender must still be waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sent.is_finished(), "answered before the batch was durable");
    request.ack.send(Ok(())).unwrap();
    let (status, answer) = sent.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"message": "success"}));

    // The pipeline fails or is closing: 503, so the sender retries.
    let url = endpoint.url("http");
    let signature = sign(body.as_bytes());
    let sent = tokio::spawn({
        let client = client.clone();
        let body = body.clone();
        async move { post(&client, &url, &body, Some(signature)).await }
    });
    let request = endpoint.next_batch().await.unwrap();
    request
        .ack
        .send(Err(PublishError::Failed("disk full".into())))
        .unwrap();
    let (status, answer) = sent.await.unwrap();
    assert_eq!(status, 503);
    assert!(answer["message"].as_str().unwrap().contains("retry"), "{answer}");

    endpoint.shutdown.cancel();
    assert!(endpoint.task.await.unwrap().is_ok());
}

#[tokio::test]
async fn refused_requests_publish_nothing() {
    let mut endpoint = start("http_endpoint", threatstream_settings()).await;
    endpoint.ready("http").await;
    let client = reqwest::Client::new();
    let url = endpoint.url("http");
    let body = ndjson(0..2);

    // Wrong key, missing header, unprefixed signature: 401 with a JSON message
    // that names the header but never a secret.
    let wrong = format!(
        "sha256={}",
        to_hex(&hmac::<sha2::Sha256>(b"another secret", body.as_bytes()))
    );
    for signature in [Some(wrong), None, Some(to_hex(b"abc"))] {
        let (status, answer) = post(&client, &url, &body, signature).await;
        assert_eq!(status, 401, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("X-Filebeat-Signature"), "{message}");
        assert!(!message.contains(SECRET));
    }
    // A body changed after signing.
    let (status, _) = post(&client, &url, &ndjson(0..3), Some(sign(body.as_bytes()))).await;
    assert_eq!(status, 401);

    // One malformed line: 400 naming the line, and none of the good lines is kept.
    let broken = format!("{}{{\"id\": 9,\n{}", ndjson(0..2), ndjson(2..4));
    let (status, answer) = post(&client, &url, &broken, Some(sign(broken.as_bytes()))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("line 3"), "{answer}");
    // A line that is JSON but not an object.
    let scalar = "{\"id\": 1}\n42\n";
    let (status, _) = post(&client, &url, scalar, Some(sign(scalar.as_bytes()))).await;
    assert_eq!(status, 400);

    // Over max_body_bytes (4096): 413, announced or chunked.
    let big = ndjson(0..200);
    let (status, answer) = post(&client, &url, &big, Some(sign(big.as_bytes()))).await;
    assert_eq!(status, 413, "{answer}");
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.clone())];
    let response = client
        .post(&url)
        .header("Content-Type", "application/x-ndjson")
        .header("X-Filebeat-Signature", sign(big.as_bytes()))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);

    // Wrong method, wrong path, wrong content type, empty body.
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let response = client
        .post(format!("http://127.0.0.1:{}/other", endpoint.port))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = client
        .post(&url)
        .header("Content-Type", "text/plain")
        .header("X-Filebeat-Signature", sign(body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let (status, _) = post(&client, &url, "", Some(sign(b""))).await;
    assert_eq!(status, 406);

    assert!(
        endpoint.next_batch().await.is_none(),
        "a refused request reached the pipeline"
    );
    endpoint.shutdown.cancel();
    endpoint.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn json_bodies_secret_header_prefix_and_gzip() {
    let mut endpoint = start(
        "http_endpoint",
        json!({
            "secret": {"header": "X-Secret", "value": "s3cr3t"},
            "preserve_original_event": true,
        }),
    )
    .await;
    endpoint.ready("http").await;
    let client = reqwest::Client::new();
    let url = endpoint.url("http");

    let response = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-Secret", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // An array: one event per element, under `json`, with event.original.
    let sent = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(&url)
                .header("Content-Type", "application/json; charset=utf-8")
                .header("X-Secret", "s3cr3t")
                .body(r#"[{"a": 1}, {"a": 2}]"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let request = endpoint.next_batch().await.unwrap();
    let fields: Vec<Value> = request
        .batch
        .events
        .iter()
        .map(|event| Value::Object(event.fields.clone()))
        .collect();
    assert_eq!(
        fields,
        vec![
            json!({"json": {"a": 1}, "event": {"original": "{\"a\":1}"}}),
            json!({"json": {"a": 2}, "event": {"original": "{\"a\":2}"}}),
        ]
    );
    request.ack.send(Ok(())).unwrap();
    assert_eq!(sent.await.unwrap(), 200);

    // gzip'd body.
    let compressed = gzip(br#"{"a": 3}"#);
    let sent = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        let body = compressed.clone();
        async move {
            client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .header("X-Secret", "s3cr3t")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let request = endpoint.next_batch().await.unwrap();
    assert_eq!(request.batch.events[0].fields["json"], json!({"a": 3}));
    request.ack.send(Ok(())).unwrap();
    assert_eq!(sent.await.unwrap(), 200);

    endpoint.shutdown.cancel();
    endpoint.task.await.unwrap().unwrap();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let tls = threatbeat_test_support::tls::tls_dir();
    let mut settings = threatstream_settings();
    settings["ssl"] = json!({
        "certificate": tls.join("localhost.pem").display().to_string(),
        "key": tls.join("localhost.key").display().to_string(),
    });
    let mut endpoint = start("http_endpoint", settings).await;
    endpoint.ready("https").await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let body = ndjson(0..2);
    let url = endpoint.url("https");
    let signature = sign(body.as_bytes());
    let sent = tokio::spawn({
        let client = client.clone();
        let body = body.clone();
        async move { post(&client, &url, &body, Some(signature)).await }
    });
    let request = endpoint.next_batch().await.expect("records over TLS");
    assert_eq!(request.batch.events.len(), 2);
    request.ack.send(Ok(())).unwrap();
    assert_eq!(sent.await.unwrap().0, 200);

    // Plain HTTP on the TLS port gets no answer; neither does a client that
    // does not trust the certificate.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/", endpoint.port))
        .body(body.clone())
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|response| !response.status().is_success()));
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .post(endpoint.url("https"))
        .body(body)
        .send()
        .await
        .is_err());

    endpoint.shutdown.cancel();
    endpoint.task.await.unwrap().unwrap();
}

#[test]
fn config_errors_name_the_key() {
    let context = BuildContext::default();
    let build = |settings: Value| {
        let config = PluginConfig {
            type_name: "http_endpoint".into(),
            settings,
            origin: Origin::named("test.yml").child("input"),
        };
        threatbeat_inputs::registry().build(&config, &context).err()
    };
    let error = build(json!({"ssl": {"certificate": "missing.pem", "key": "missing.key"}})).unwrap();
    assert_eq!(error.key, "input.ssl.certificate");
    let error = build(json!({"ssl": {"certificate": "x.pem"}})).unwrap();
    assert_eq!(error.key, "input.ssl.key");
    let error = build(json!({"response_code": 500})).unwrap();
    assert_eq!(error.key, "input.response_code");
    let error = build(json!({"hmac": {"header": "X-Sig", "key": ""}})).unwrap();
    assert_eq!(error.key, "input.hmac.key");
    let error = build(json!({"basic_auth": true})).unwrap();
    assert!(error.reason.contains("basic_auth"), "{error}");
    let error = build(json!({"hmac": {"header": "X-Sig", "key": "k", "type": "md5"}})).unwrap();
    assert_eq!(error.key, "input.hmac.type");
    // The secret never shows in an error or in Debug output.
    let error = build(json!({"secret": {"header": "bad header", "value": "hunter2"}})).unwrap();
    assert!(!error.to_string().contains("hunter2"));
    assert!(build(json!({})).is_none());
}

#[tokio::test]
async fn the_threatstream_manifest_configures_hmac_and_ndjson() {
    let port = free_port();
    let config = common::manifest_input(
        "threatintel/anomalithreatstream",
        json!({"listen_address": "127.0.0.1", "listen_port": port, "secret": SECRET}),
    );
    assert_eq!(config.type_name, "http_endpoint");
    assert_eq!(config.settings["hmac"]["prefix"], "sha256=");
    let mut endpoint = start_config(config, port).await;
    endpoint.ready("http").await;
    let client = reqwest::Client::new();
    let url = endpoint.url("http");
    let body = ndjson(5..7);
    let (status, _) = post(&client, &url, &body, None).await;
    assert_eq!(status, 401);
    let signature = sign(body.as_bytes());
    let sent = tokio::spawn({
        let client = client.clone();
        let body = body.clone();
        async move { post(&client, &url, &body, Some(signature)).await }
    });
    let request = endpoint.next_batch().await.unwrap();
    // `prefix: ""`: records at the root, as the file input gives them.
    assert_eq!(request.batch.events[0].fields["id"], json!(5));
    request.ack.send(Ok(())).unwrap();
    assert_eq!(sent.await.unwrap().0, 200);
    endpoint.shutdown.cancel();
    endpoint.task.await.unwrap().unwrap();

    // Without a secret, no hmac block at all; with a certificate, ssl.
    let tls = threatbeat_test_support::tls::tls_dir();
    let config = common::manifest_input(
        "threatintel/anomalithreatstream",
        json!({
            "ssl_certificate": tls.join("localhost.pem").display().to_string(),
            "ssl_key": tls.join("localhost.key").display().to_string(),
        }),
    );
    assert!(config.settings.get("hmac").is_none(), "{}", config.settings);
    assert!(config.settings["ssl"]["certificate"].is_string());
    assert_eq!(config.settings["listen_port"], json!(8080));
}
