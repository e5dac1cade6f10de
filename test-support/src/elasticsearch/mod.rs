//! An Elasticsearch 8.x simulator for tests: root info, `_bulk` (NDJSON,
//! gzip, `filter_path`, `create` with 409 on a duplicate `_id`, `index`
//! (replace), `update` (partial document merged as Elasticsearch merges it,
//! `doc_as_upsert`/`upsert`, 404 `document_missing_exception`), `delete`
//! (200 `deleted` / 404 `not_found`), `_version`/`_seq_no`/`result` as
//! Elasticsearch answers them, data streams), index templates, ILM policies, data streams, `_has_privileges`,
//! `_count`/`_search`/`_refresh`, basic and API-key auth, and injected faults
//! (outage by closing the listener, 503, per-item 429, slow answers, 413,
//! mapping errors). Listens on 127.0.0.1 only.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
//! let mut cluster = ElasticsearchSimulator::start().await;
//! let url = cluster.url();
//! // ... point the output at `url`, then:
//! assert_eq!(cluster.document_count("threatbeat-test"), 0);
//! cluster.stop().await; // connections are now refused
//! cluster.restart().await; // same port, same data
//! # }
//! ```

mod bulk;
mod errors;
mod filter_path;
mod handlers;
mod state;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use handlers::SIMULATED_VERSION;
pub(crate) use state::wildcard_match;
pub use state::{Credential, Faults, MappingRule, StoredDocument};

/// State shared by the server task and the test.
pub(crate) struct Shared {
    state: Mutex<state::State>,
}

impl Shared {
    /// The state; a panic in another holder does not hide it from the test.
    pub(crate) fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running (or stopped) simulated cluster.
pub struct ElasticsearchSimulator {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl ElasticsearchSimulator {
    /// A cluster with security disabled, on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with_credentials(Vec::new()).await
    }

    /// A cluster that requires one of `credentials` on every request.
    pub async fn start_with_credentials(credentials: Vec<Credential>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(state::State {
                credentials,
                ..state::State::default()
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the Elasticsearch simulator");
        let address = listener.local_addr().expect("a bound listener has an address");
        let mut simulator = Self {
            shared,
            address,
            server: None,
        };
        simulator.serve(listener);
        simulator
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let router = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(Arc::clone(&self.shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.server = Some((stop, task));
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The listening address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Outage: stops listening; new connections are refused until [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Listens again on the same port, keeping every index.
    pub async fn restart(&mut self) {
        if self.server.is_some() {
            return;
        }
        let mut attempts = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 100 => {
                    attempts += 1;
                    tracing::debug!(%error, "simulator port not free yet, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot listen again on {}: {error}", self.address),
            }
        };
        self.serve(listener);
    }

    /// Answer every request with 503 (`true`) or normally (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.lock().faults.unavailable = unavailable;
    }

    /// Answer this fraction (0.0–1.0) of bulk items with a per-item 429.
    pub fn set_item_rejection_rate(&self, rate: f64) {
        self.shared.lock().faults.item_rejection_rate = rate;
    }

    /// Wait this long before every answer (`None`: answer at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.shared.lock().faults.delay = delay;
    }

    /// Answer `_bulk` with `200` and `body` (`None`: normally), storing
    /// nothing: `{}` or `{"errors": false, "items": []}` as a misbehaving
    /// proxy or an impostor would.
    pub fn set_hollow_bulk_answer(&self, body: Option<Value>) {
        self.shared.lock().faults.hollow_bulk_answer = body;
    }

    /// Answer 413 to request bodies larger than `bytes` (as sent).
    pub fn set_max_content_length(&self, bytes: Option<usize>) {
        self.shared.lock().faults.max_content_length = bytes;
    }

    /// Reject documents breaking `rule` with a 400 mapping error.
    pub fn add_mapping_rule(&self, rule: MappingRule) {
        self.shared.lock().faults.mapping_rules.push(rule);
    }

    /// Replace the accepted credentials (empty: security disabled).
    pub fn set_credentials(&self, credentials: Vec<Credential>) {
        self.shared.lock().credentials = credentials;
    }

    /// Documents in `index` (an index or data stream name); 0 when absent.
    pub fn document_count(&self, index: &str) -> usize {
        self.shared
            .lock()
            .indices
            .get(index)
            .map_or(0, |found| found.documents.len())
    }

    /// The documents of `index`, ordered by `_id`.
    pub fn documents(&self, index: &str) -> Vec<StoredDocument> {
        self.shared
            .lock()
            .indices
            .get(index)
            .map(|found| {
                found
                    .documents
                    .iter()
                    .map(|(id, source)| StoredDocument {
                        id: id.clone(),
                        source: source.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The current `_source` of `id` in `index` (after every index, update
    /// and delete), if it exists.
    pub fn document(&self, index: &str, id: &str) -> Option<Value> {
        self.shared
            .lock()
            .indices
            .get(index)
            .and_then(|found| found.documents.get(id).cloned())
    }

    /// The `_version` of `id` in `index` (counting deletes; 0 if never written).
    pub fn document_version(&self, index: &str, id: &str) -> u64 {
        self.shared
            .lock()
            .indices
            .get(index)
            .map_or(0, |found| found.version(id))
    }

    /// The distinct `_id`s held in `index`.
    pub fn ids(&self, index: &str) -> BTreeSet<String> {
        self.documents(index)
            .into_iter()
            .map(|document| document.id)
            .collect()
    }

    /// The names of every index and data stream, sorted.
    pub fn indices(&self) -> Vec<String> {
        self.shared.lock().indices.keys().cloned().collect()
    }

    /// Whether `name` is a data stream.
    pub fn is_data_stream(&self, name: &str) -> bool {
        self.shared
            .lock()
            .indices
            .get(name)
            .is_some_and(|index| index.data_stream)
    }

    /// Requests received (also while unavailable or unauthenticated) by
    /// method and kind, e.g. `"POST _bulk"`, `"PUT _index_template"`,
    /// `"PUT _ilm/policy"`, `"PUT _data_stream"`, `"GET /"`.
    pub fn request_count(&self, key: &str) -> u64 {
        self.shared.lock().request_counts.get(key).copied().unwrap_or(0)
    }

    /// Bulk requests received, with or without a target in the path.
    pub fn bulk_request_count(&self) -> u64 {
        let state = self.shared.lock();
        state
            .request_counts
            .iter()
            .filter(|(key, _)| key.ends_with(" _bulk"))
            .map(|(_, count)| count)
            .sum()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_concurrent_requests(&self) -> u64 {
        self.shared.lock().max_in_flight
    }

    /// Bulk items answered with a per-item 429 so far.
    pub fn items_rejected_with_429(&self) -> u64 {
        self.shared.lock().items_rejected_429
    }

    /// The stored index template `name`.
    pub fn index_template(&self, name: &str) -> Option<Value> {
        self.shared.lock().index_templates.get(name).cloned()
    }

    /// The stored ILM policy `name` (its `policy` object).
    pub fn ilm_policy(&self, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .ilm_policies
            .get(name)
            .map(|(_, policy)| policy.clone())
    }
}

impl Drop for ElasticsearchSimulator {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}
