//! A MISP server simulator (misp-api.md): `POST /events/restSearch` and
//! `/attributes/restSearch` (with or without `.json`) over real events from
//! `test-support/data/misp/events`, or generated ones, plus the three GETs
//! PyMISP makes when it connects, an OAuth2 token endpoint for auth tests,
//! fault injection and a request log.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::misp::MispSimulator;
//! let misp = MispSimulator::start_with_fixtures().await;
//! let url = misp.url("/events/restSearch");
//! # }
//! ```

mod filters;
pub mod large;
mod search;
mod server;
pub mod store;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::filters::{like, resolve_time};
pub use self::store::{fake_uuid, fixtures_dir, generate_events, load_events, Store};

/// The API key the simulator accepts by default (40 alphanumerics, as MISP requires).
pub const API_KEY: &str = "SimulatorKey0123456789abcdefABCDEF012345";

/// A misbehaviour injected into a `restSearch` answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 500 with MISP's JSON error.
    InternalError,
    /// 502 with an HTML page from a reverse proxy.
    BadGatewayHtml,
    /// 503 with an HTML page from a reverse proxy (MISP restarting or in
    /// maintenance behind it).
    ServiceUnavailableHtml,
    /// 200 with an HTML login page.
    LoginPageHtml,
    /// 200 with the real answer cut in half.
    TruncatedJson,
    /// 200 with no body.
    EmptyBody,
    /// 200 whose body contains invalid UTF-8.
    InvalidUtf8,
    /// 200 with a MISP error object instead of results.
    ErrorObject,
    /// The connection is dropped in the middle of the body.
    ConnectionReset,
    /// The answer comes after this delay (client timeouts).
    Slow(Duration),
    /// 429 with `X-Rate-Limit-Reset: <seconds>`.
    RateLimited(u64),
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// `GET` / `POST`.
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The parsed filter object (after unwrapping `{"request": ...}`), or null.
    pub body: Value,
    /// The status answered; 0 while unanswered or when the client went away
    /// first (a timeout). A connection reset mid-body is logged as 200.
    pub status: u16,
    /// Number of items returned (events or attributes).
    pub items: usize,
    /// The `Authorization` header was present.
    pub authorized_header: bool,
}

/// An exact failure share: `failing` of every `block` restSearch requests
/// fail, at positions shuffled from `seed` block by block.
pub(crate) struct ExactFailures {
    pub failing: u64,
    pub block: u64,
    pub kinds: Vec<Fault>,
    pub seed: u64,
    /// What the rest of the current block does (`true`: fail).
    pub pending: VecDeque<bool>,
}

/// Everything the handlers share.
#[derive(Default)]
pub(crate) struct State {
    pub store: Store,
    pub api_keys: Vec<String>,
    pub log: Vec<RequestRecord>,
    pub faults: VecDeque<Fault>,
    pub failure_rate: Option<(u32, Vec<Fault>, u64)>,
    pub injected: Vec<Fault>,
    pub exact_failures: Option<ExactFailures>,
    pub delay: Option<Duration>,
    pub warninglisted: HashSet<String>,
    pub always_enforce_warninglist: bool,
    pub hidden_events: HashSet<String>,
    pub edits: Vec<(usize, Edit)>,
    pub search_count: usize,
    pub oauth_tokens_issued: usize,
    pub oauth_token_lifetime: u64,
    pub now_override: Option<i64>,
}

/// A change applied to the data between two requests.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Give the attribute `uuid` (and its event) this timestamp.
    TouchAttribute(String, i64),
    /// Give the event `uuid` this timestamp.
    TouchEvent(String, i64),
    /// Soft-delete the attribute `uuid` at this time (MISP stamps the
    /// attribute and its event, and keeps it with `deleted: true`).
    DeleteAttribute(String, i64),
    /// Set the attribute's `to_ids` at this time.
    SetToIds(String, bool, i64),
}

/// A running simulator. Stops when dropped.
pub struct MispSimulator {
    state: Arc<Mutex<State>>,
    address: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl MispSimulator {
    /// A simulator holding `events` (bare events or wrapped; ids are assigned).
    pub async fn start(events: Vec<Value>) -> Self {
        let mut store = Store::default();
        store.add(events.into_iter().flat_map(store::unwrap_events).collect());
        Self::serve(store).await
    }

    /// A simulator serving `events` exactly as written, their ids included
    /// (see [`Store::add_verbatim`]).
    pub async fn start_verbatim(events: Vec<Value>) -> Self {
        let mut store = Store::default();
        store.add_verbatim(events.into_iter().flat_map(store::unwrap_events).collect());
        Self::serve(store).await
    }

    async fn serve(store: Store) -> Self {
        let state = State {
            store,
            api_keys: vec![API_KEY.to_owned()],
            oauth_token_lifetime: 3600,
            ..State::default()
        };
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let server = server::spawn(listener, state.clone());
        Self {
            state,
            address,
            server: Some(server),
        }
    }

    /// A simulator holding the 73 real events of `test-support/data/misp/events`.
    pub async fn start_with_fixtures() -> Self {
        let events = load_events(&fixtures_dir()).expect("the MISP fixtures load");
        Self::start(events).await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The listening address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Adds events (ids are assigned as on import).
    pub fn add_events(&self, events: Vec<Value>) {
        self.state()
            .store
            .add(events.into_iter().flat_map(store::unwrap_events).collect());
    }

    /// A copy of the stored events.
    pub fn events(&self) -> Vec<serde_json::Map<String, Value>> {
        self.state().store.events.clone()
    }

    /// Attributes currently held (plain and in objects).
    pub fn attribute_count(&self) -> usize {
        self.state().store.attribute_count()
    }

    /// Edits data now.
    pub fn edit(&self, edit: Edit) {
        server::apply_edit(&mut self.state(), &edit);
    }

    /// Applies `edit` right after the `after`-th restSearch request (1-based) was answered.
    pub fn edit_after_request(&self, after: usize, edit: Edit) {
        self.state().edits.push((after, edit));
    }

    /// Queues faults for the next restSearch requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state().faults.extend(faults);
    }

    /// Makes `percent` % of restSearch requests fail with one of `kinds`
    /// (deterministic pseudo-random sequence from `seed`).
    pub fn set_failure_rate(&self, percent: u32, kinds: Vec<Fault>, seed: u64) {
        self.state().failure_rate = Some((percent.min(100), kinds, seed.max(1)));
    }

    /// Makes exactly `percent` % of restSearch requests fail with one of
    /// `kinds`, unlike [`set_failure_rate`](Self::set_failure_rate) whose
    /// share drifts with luck over a short run: in every block of
    /// `100 / gcd(percent, 100)` requests (10 for 30 %) that share fails, at
    /// positions shuffled from `seed`.
    pub fn set_exact_failure_rate(&self, percent: u32, kinds: Vec<Fault>, seed: u64) {
        let percent = u64::from(percent.min(100));
        let common = gcd(percent, 100);
        self.state().exact_failures = Some(ExactFailures {
            failing: percent / common,
            block: 100 / common,
            kinds,
            seed: seed.max(1),
            pending: VecDeque::new(),
        });
    }

    /// Every fault injected so far (queued and random ones, `Slow` included),
    /// in the order the restSearch requests met them.
    pub fn injected_faults(&self) -> Vec<Fault> {
        self.state().injected.clone()
    }

    /// Answers every restSearch request after `delay` (`None`: at once), on
    /// top of any fault; unlike `Fault::Slow` it takes no share of the
    /// failure rate.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state().delay = delay;
    }

    /// Stops random failures.
    pub fn clear_failures(&self) {
        let mut state = self.state();
        state.failure_rate = None;
        state.exact_failures = None;
        state.faults.clear();
    }

    /// Puts attribute uuids on a warninglist: dropped after paging when the
    /// request asks `enforceWarninglist` (or always, with `always`).
    pub fn warninglist(&self, uuids: impl IntoIterator<Item = String>, always: bool) {
        let mut state = self.state();
        state.warninglisted.extend(uuids);
        state.always_enforce_warninglist = always;
    }

    /// Events dropped from `/events/restSearch` pages after paging (short pages).
    pub fn hide_events_after_paging(&self, uuids: impl IntoIterator<Item = String>) {
        self.state().hidden_events.extend(uuids);
    }

    /// Accepts another API key.
    pub fn add_api_key(&self, key: &str) {
        self.state().api_keys.push(key.to_owned());
    }

    /// Lifetime of OAuth2 tokens issued by `POST /oauth2/token`.
    pub fn set_oauth_token_lifetime(&self, seconds: u64) {
        self.state().oauth_token_lifetime = seconds;
    }

    /// OAuth2 tokens issued so far.
    pub fn oauth_tokens_issued(&self) -> usize {
        self.state().oauth_tokens_issued
    }

    /// Fixes "now" for relative time filters.
    pub fn set_now(&self, now: i64) {
        self.state().now_override = Some(now);
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.clone()
    }

    /// The restSearch requests seen so far.
    pub fn searches(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("restSearch"))
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    /// Stops listening (clients get "connection refused"), keeping the data.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                tracing::warn!("MISP simulator did not stop within 5 s");
            }
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut delay = Duration::from_millis(20);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if delay < Duration::from_secs(5) => {
                    tracing::debug!(%error, "rebinding the MISP simulator");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => panic!("cannot rebind {}: {error}", self.address),
            }
        };
        self.server = Some(server::spawn(listener, self.state.clone()));
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    match b {
        0 => a.max(1),
        _ => gcd(b, a % b),
    }
}

impl Drop for MispSimulator {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}
