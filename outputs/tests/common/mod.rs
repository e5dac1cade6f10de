//! Helpers shared by the output and queue tests: events with stable ids,
//! output configs, and a small HTTP probe that reads counts and ids from any
//! cluster (the simulator or, in the opt-in suite, a real one).

#![allow(dead_code)]

pub mod scenarios;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Event, Origin, PluginConfig};
use threatbeat_outputs::elasticsearch::{build_output, ElasticsearchOutput};

/// `count` indicator events with ids `<prefix>-0..`, one per `n`.
pub fn indicator_events(prefix: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|n| {
            let mut event = Event::from_value(json!({
                "@timestamp": "2026-01-02T03:04:05Z",
                "event": {"kind": "enrichment", "category": ["threat"], "type": ["indicator"], "module": "threatintel", "dataset": "threatintel.misp"},
                "threat": {"indicator": {"type": "ipv4-addr", "ip": format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256)}},
                "tags": ["threatintel-misp"],
                "n": n
            }));
            event.set_id(format!("{prefix}-{n}"));
            event
        })
        .collect()
}

/// A plugin config for `output.elasticsearch` with fast backoff for tests.
pub fn output_config(settings: Value) -> PluginConfig {
    let mut base = json!({"backoff": {"init": "10ms", "max": "100ms"}, "timeout": "10s"});
    if let (Some(target), Value::Object(extra)) = (base.as_object_mut(), settings) {
        target.extend(extra);
    }
    PluginConfig {
        type_name: "elasticsearch".into(),
        settings: base,
        origin: Origin::named("test.yml").child("output.elasticsearch"),
    }
}

/// Builds the concrete output.
pub fn output(settings: Value) -> ElasticsearchOutput {
    build_output(&output_config(settings), &BuildContext::default()).expect("valid test output config")
}

/// Polls `condition` every 20 ms for up to `timeout`; panics with `what` otherwise.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a cluster over HTTP (`_refresh`, `_count`, `_search`, `DELETE`).
pub struct Probe {
    pub url: String,
    client: reqwest::Client,
    authorization: Option<String>,
}

impl Probe {
    pub fn new(url: &str, authorization: Option<String>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            authorization,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}/{path}", self.url));
        match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    /// Documents in `index` after a refresh (0 when it does not exist).
    pub async fn count(&self, index: &str) -> u64 {
        let _ = self
            .request(reqwest::Method::POST, &format!("{index}/_refresh"))
            .send()
            .await;
        let response = self
            .request(reqwest::Method::GET, &format!("{index}/_count"))
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            return 0;
        }
        let body: Value = response.json().await.unwrap();
        body["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("unexpected _count answer {body}"))
    }

    /// Documents of `index` matching `query` after a refresh.
    pub async fn count_matching(&self, index: &str, query: &Value) -> u64 {
        let _ = self
            .request(reqwest::Method::POST, &format!("{index}/_refresh"))
            .send()
            .await;
        let body: Value = self
            .request(reqwest::Method::POST, &format!("{index}/_count"))
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("unexpected _count answer {body}"))
    }

    /// The `_id`s and sources of up to `size` documents of `index`.
    pub async fn documents(&self, index: &str, size: usize) -> Vec<(String, Value)> {
        let _ = self
            .request(reqwest::Method::POST, &format!("{index}/_refresh"))
            .send()
            .await;
        let body: Value = self
            .request(reqwest::Method::POST, &format!("{index}/_search"))
            .json(&json!({"size": size, "query": {"match_all": {}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|hit| {
                (
                    hit["_id"].as_str().unwrap_or_default().to_owned(),
                    hit["_source"].clone(),
                )
            })
            .collect()
    }

    /// Distinct `_id`s in `index`.
    pub async fn ids(&self, index: &str, size: usize) -> BTreeSet<String> {
        self.documents(index, size)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Deletes an index, data stream, template or policy path (ignoring 404).
    pub async fn delete(&self, path: &str) {
        let _ = self.request(reqwest::Method::DELETE, path).send().await;
    }
}
