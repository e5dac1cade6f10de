//! What the output logs: a refusal reason once (not once per document), a
//! clear credential error, and never a secret.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use threatbeat_core::Output;
use threatbeat_test_support::elasticsearch::{Credential, ElasticsearchSimulator, MappingRule};

use common::{eventually, indicator_events, output};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

// A current-thread runtime keeps every task on this thread, under the capture.
#[tokio::test(flavor = "current_thread")]
async fn a_refusal_reason_is_logged_once() {
    let (logs, _guard) = capture();
    let cluster = ElasticsearchSimulator::start().await;
    cluster.add_mapping_rule(MappingRule::IpField("threat.indicator.ip".into()));
    let mut events = indicator_events("once", 20);
    for event in &mut events[..8] {
        event.fields["threat"]["indicator"]["ip"] = json!("10.0.0.0/8");
    }
    let mut output = output(json!({"hosts": [cluster.url()], "index": "threatbeat-logs"}));
    output.publish_events(events).await.unwrap();
    assert_eq!(output.stats().snapshot().dropped, 8);
    let text = logs.text();
    assert_eq!(
        text.matches("Elasticsearch refused a document").count(),
        1,
        "{text}"
    );
    assert!(text.contains("mapper_parsing_exception"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn credential_errors_are_clear_and_never_show_the_secret() {
    let (logs, _guard) = capture();
    let cluster = ElasticsearchSimulator::start_with_credentials(vec![Credential::Basic {
        username: "elastic".into(),
        password: "right-password".into(),
        can_write: true,
    }])
    .await;
    let mut output = output(json!({"hosts": [cluster.url()], "index": "threatbeat-logs",
        "username": "elastic", "password": "s3cr3t-wrong"}));
    let stats = output.stats();
    let delivery = tokio::spawn(async move { output.publish_events(indicator_events("cred", 3)).await });
    eventually("a rejected request", Duration::from_secs(30), || {
        stats.snapshot().failed_requests >= 2
    })
    .await;
    delivery.abort();
    let text = logs.text();
    assert!(text.contains("rejected the credentials"), "{text}");
    assert!(!text.contains("s3cr3t-wrong"), "{text}");
    let encoded = base64::engine::general_purpose::STANDARD.encode("elastic:s3cr3t-wrong");
    assert!(!text.contains(&encoded), "{text}");

    let with_key = common::output(json!({"hosts": [cluster.url()], "api_key": "kid:k3y-s3cr3t"}));
    let printed = format!("{with_key:?}");
    assert!(!printed.contains("k3y-s3cr3t"), "{printed}");
}
