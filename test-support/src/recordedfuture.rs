//! A Recorded Future API simulator: the risk lists
//! (`GET /v2/{entity}/risklist?format=csv/splunk&gzip=false&list=…`) of
//! Filebeat 8's `threatintel/recordedfuture` and the search API
//! (`GET /v2/{entity}/search?limit=…&from=…&lastSeen=[…,]`) of Filebeat 7.x,
//! with a request log and injectable faults.
//!
//! What the real API does, and what is served here:
//!
//! * the token travels in `X-RFToken`; a missing or wrong one is `401`
//!   with `{"error": {"status": 401, "message": "…", "reference": "…"}}`;
//! * a risk list is CSV with a header row (`"Name","Risk","RiskString",
//!   "EvidenceDetails"`, `"Name","Algorithm",…` for hashes), every cell
//!   quoted, `EvidenceDetails` a JSON document; the whole list every time;
//! * search answers `{"data": {"results": [...]}, "counts": {"returned",
//!   "total"}}`, results ordered by `timestamps.lastSeen` ascending,
//!   `lastSeen=[from,]` keeping those seen at or after `from`, `from` (an
//!   offset) and `limit` paging.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::recordedfuture::{RecordedFutureSimulator, TOKEN};
//! let rf = RecordedFutureSimulator::start().await;
//! rf.set_risk_list("ip", "\"Name\",\"Risk\",\"RiskString\",\"EvidenceDetails\"\n");
//! let url = rf.url("/v2");
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};

use axum::body::Body;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use crate::server::{lock, Shared, SimServer};

/// The token the simulator accepts.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A misbehaviour injected into the next risk-list or search answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 200 with an HTML page (a maintenance page).
    HtmlPage,
    /// 200 with the JSON answer cut in half (search).
    TruncatedJson,
    /// 502 with an HTML page from a proxy.
    BadGatewayHtml,
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The path, without query.
    pub path: String,
    /// Query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
    /// The token was right.
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
    /// Rows or results returned.
    pub items: usize,
}

impl RequestRecord {
    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct State {
    /// entity → risk-list CSV text.
    risk_lists: BTreeMap<String, String>,
    /// entity → search results.
    entities: BTreeMap<String, Vec<Value>>,
    faults: VecDeque<Fault>,
    log: Vec<RequestRecord>,
}

/// A running simulator. Stops when dropped.
pub struct RecordedFutureSimulator {
    server: SimServer<State>,
}

impl RecordedFutureSimulator {
    /// An empty simulator accepting [`TOKEN`].
    pub async fn start() -> Self {
        let state = State::default();
        Self {
            server: SimServer::start(state, |state| Router::new().fallback(handle).with_state(state)).await,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The CSV served as `entity`'s risk list (any `list`).
    pub fn set_risk_list(&self, entity: &str, csv: &str) {
        self.server
            .state()
            .risk_lists
            .insert(entity.to_owned(), csv.to_owned());
    }

    /// Adds search results for `entity` (each with `timestamps.lastSeen`).
    pub fn add_entities(&self, entity: &str, results: Vec<Value>) {
        let mut state = self.server.state();
        let list = state.entities.entry(entity.to_owned()).or_default();
        list.extend(results);
        list.sort_by(|a, b| last_seen(a).cmp(last_seen(b)));
    }

    /// Queues faults for the next requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.server.state().faults.extend(faults);
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.state().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.server.state().log.clear();
    }
}

fn last_seen(result: &Value) -> &str {
    result
        .pointer("/timestamps/lastSeen")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert("content-type", value);
    }
    response
}

fn rf_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"status": status.as_u16(), "message": message, "reference": "https://api.recordedfuture.com/v2/"}});
    respond(status, "application/json", body.to_string())
}

async fn handle(
    AxumState(state): AxumState<Shared<State>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut state = lock(&state);
    let mut record = RequestRecord {
        path: uri.path().to_owned(),
        params,
        authorized: headers.get("x-rftoken").and_then(|value| value.to_str().ok()) == Some(TOKEN),
        status: 0,
        items: 0,
    };
    let (response, items) = answer(&mut state, &record);
    record.status = response.status().as_u16();
    record.items = items;
    state.log.push(record);
    response
}

fn answer(state: &mut State, record: &RequestRecord) -> (Response, usize) {
    let segments: Vec<&str> = record.path.trim_matches('/').split('/').collect();
    let (entity, endpoint) = match segments.as_slice() {
        ["v2", entity, endpoint] => (*entity, *endpoint),
        _ => return (rf_error(StatusCode::NOT_FOUND, "Not found"), 0),
    };
    if !record.authorized {
        return (
            rf_error(StatusCode::UNAUTHORIZED, "Missing or invalid token (X-RFToken)"),
            0,
        );
    }
    if let Some(fault) = state.faults.pop_front() {
        return (fault_response(state, entity, &fault), 0);
    }
    match endpoint {
        "risklist" => match state.risk_lists.get(entity) {
            Some(csv) => {
                let rows = csv.lines().count().saturating_sub(1);
                (
                    respond(StatusCode::OK, "text/csv; charset=utf-8", csv.clone()),
                    rows,
                )
            }
            None => (rf_error(StatusCode::NOT_FOUND, "Unknown entity type"), 0),
        },
        "search" => {
            let (page, total) = search(state, entity, record);
            let returned = page.len();
            let body = json!({"data": {"results": page}, "counts": {"returned": returned, "total": total}});
            (
                respond(StatusCode::OK, "application/json", body.to_string()),
                returned,
            )
        }
        _ => (rf_error(StatusCode::NOT_FOUND, "Not found"), 0),
    }
}

/// The page of results `record` asks for, and the total matching.
fn search(state: &State, entity: &str, record: &RequestRecord) -> (Vec<Value>, usize) {
    let from_time = record
        .param("lastSeen")
        .and_then(|range| range.trim().strip_prefix('['))
        .and_then(|range| range.split(',').next())
        .map(|from| from.trim().to_owned())
        .filter(|from| !from.is_empty());
    let matching: Vec<&Value> = state
        .entities
        .get(entity)
        .map(|results| {
            results
                .iter()
                .filter(|result| from_time.as_deref().is_none_or(|from| last_seen(result) >= from))
                .collect()
        })
        .unwrap_or_default();
    let offset: usize = record
        .param("from")
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let limit: usize = record
        .param("limit")
        .and_then(|text| text.parse().ok())
        .unwrap_or(10);
    let page = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|result| (*result).clone())
        .collect();
    (page, matching.len())
}

fn fault_response(state: &State, entity: &str, fault: &Fault) -> Response {
    match fault {
        Fault::HtmlPage => respond(
            StatusCode::OK,
            "text/html",
            "<!DOCTYPE html><html><head><title>Recorded Future - Maintenance</title></head><body>Back soon.</body></html>",
        ),
        Fault::BadGatewayHtml => respond(
            StatusCode::BAD_GATEWAY,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        Fault::TruncatedJson => {
            let results = state.entities.get(entity).cloned().unwrap_or_default();
            let full = json!({"data": {"results": results}, "counts": {"returned": 0, "total": 0}}).to_string();
            respond(
                StatusCode::OK,
                "application/json",
                full.as_bytes()[..full.len() / 2].to_vec(),
            )
        }
    }
}
