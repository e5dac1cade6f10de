//! An AlienVault OTX simulator: the indicators export
//! (`GET /api/v1/indicators/export`) that Filebeat's `threatintel/otx`
//! fileset polls and the subscribed pulses (`GET /api/v1/pulses/subscribed`)
//! that `threatintel/otx_pulses` polls, with a request log, key checking and
//! injectable faults.
//!
//! What the real service does, and what is served here:
//!
//! * the key travels in `X-OTX-API-KEY`; OTX is a Django REST Framework
//!   service: a missing or unknown key is `403 {"detail": "Authentication
//!   required"}`, a throttled client `429 {"detail": "Request was throttled.
//!   Expected available in N seconds."}` with `Retry-After: N`;
//! * `types` (comma-separated OTX types, matched without regard to case:
//!   Filebeat's default asks for `url` while the records say `URL`) and
//!   `modified_since` (RFC 3339; an indicator counts from its last
//!   modification) filter the indicators; `limit` sizes a page, `page`
//!   (1-based) picks one;
//! * an answer is DRF's paginated envelope `{"count", "next", "previous",
//!   "results"}`; `next` is the complete URL of the next page (the query of
//!   this one with `page` + 1), null on the last page;
//! * a record is `{"id", "indicator", "type", "title", "description",
//!   "content"}` (the export has no dates; the simulator keeps each record's
//!   modification time beside it);
//! * `/api/v1/pulses/subscribed` answers the same envelope with whole pulses
//!   in `results` (`{"id", "name", "modified", "tlp", "tags", ...,
//!   "indicators": [...]}`); `modified_since` keeps the pulses whose
//!   `modified` (`2023-08-22T09:43:18.855000`, UTC) is at or after it, to
//!   the second (inclusive: a pulse modified in the second of the bound is
//!   answered again), the most recently modified first; `limit` and `page`
//!   as above.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::otx::OtxSimulator;
//! let otx = OtxSimulator::start().await;
//! otx.add_indicators(vec![serde_json::json!({"id": 1, "indicator": "198.51.100.7", "type": "IPv4"})], 0);
//! let url = otx.url("/api/v1/indicators/export");
//! # }
//! ```

use std::collections::VecDeque;

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::server::{lock, Shared, SimServer};

/// The API key the simulator accepts (64 hex digits, as OTX keys are).
pub const API_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The export endpoint's path.
pub const EXPORT_PATH: &str = "/api/v1/indicators/export";

/// The subscribed pulses endpoint's path.
pub const PULSES_PATH: &str = "/api/v1/pulses/subscribed";

/// OTX's answer to a missing or unknown key (HTTP 403).
pub const AUTH_REQUIRED: &str = "Authentication required";

/// A misbehaviour injected into the next export answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>` and DRF's throttling message.
    RateLimited(u64),
    /// 200 with the real answer cut in half.
    TruncatedJson,
    /// 200 with an HTML page instead of JSON (a maintenance page).
    HtmlPage,
    /// 502 with an HTML page from a reverse proxy.
    BadGatewayHtml,
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
    /// The `X-OTX-API-KEY` header, if any.
    pub api_key: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Number of records returned (export records, or pulses).
    pub items: usize,
    /// The `next` link answered (None on the last page or on an error).
    pub next: Option<String>,
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
    /// (modified, record), in insertion order.
    indicators: Vec<(i64, Value)>,
    /// Subscribed pulses, in insertion order.
    pulses: Vec<Value>,
    api_keys: Vec<String>,
    page_size: usize,
    /// One entry per coming request: `None` answers it normally.
    faults: VecDeque<Option<Fault>>,
    log: Vec<RequestRecord>,
}

/// A running simulator. Stops when dropped.
pub struct OtxSimulator {
    server: SimServer<State>,
}

impl OtxSimulator {
    /// An empty simulator accepting [`API_KEY`], pages of 10 records.
    pub async fn start() -> Self {
        let state = State {
            api_keys: vec![API_KEY.to_owned()],
            page_size: 10,
            ..State::default()
        };
        Self {
            server: SimServer::start(state, |state| Router::new().fallback(handle).with_state(state)).await,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Adds export records, all last modified at `modified` (Unix seconds).
    /// A record without `title`, `description` or `content` gets OTX's
    /// `null`, `null`, `""`.
    pub fn add_indicators(&self, records: Vec<Value>, modified: i64) {
        let mut state = self.server.state();
        for mut record in records {
            if let Value::Object(map) = &mut record {
                map.entry("title").or_insert(Value::Null);
                map.entry("description").or_insert(Value::Null);
                map.entry("content").or_insert_with(|| json!(""));
            }
            state.indicators.push((modified, record));
        }
    }

    /// Adds subscribed pulses (each with `id`, `modified` and `indicators`).
    pub fn add_pulses(&self, pulses: Vec<Value>) {
        self.server.state().pulses.extend(pulses);
    }

    /// The subscribed-pulses requests seen so far.
    pub fn pulse_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|record| record.path == PULSES_PATH)
            .collect()
    }

    /// Records per page when the request gives no `limit`.
    pub fn set_page_size(&self, size: usize) {
        self.server.state().page_size = size.max(1);
    }

    /// Queues faults for the next export or pulse requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.server.state().faults.extend(faults.into_iter().map(Some));
    }

    /// Lets the next `count` requests be answered normally before the faults
    /// queued after this call (a fault on page 2 of a poll).
    pub fn push_normal_answers(&self, count: usize) {
        self.server
            .state()
            .faults
            .extend(std::iter::repeat_n(None, count));
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.state().log.clone()
    }

    /// The export requests seen so far.
    pub fn exports(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|record| record.path == EXPORT_PATH)
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.server.state().log.clear();
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("Allow", "GET, HEAD, OPTIONS")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn html_response(status: StatusCode, html: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/html")
        .body(Body::from(html))
        .unwrap_or_default()
}

/// Unix seconds of `2024-05-01T10:00:00Z`, `2024-05-01T10:00:00+00:00` or
/// `2024-05-01T10:00:00` (OTX reads a time without offset as UTC), as
/// `modified_since` is parsed.
pub fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp())
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|time| time.and_utc().timestamp())
        })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(params)| params)
        .unwrap_or_default();
    let api_key = headers
        .get("x-otx-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut record = RequestRecord {
        method: method.to_string(),
        path: uri.path().to_owned(),
        params: params.clone(),
        api_key: api_key.clone(),
        status: 0,
        items: 0,
        next: None,
    };
    // DRF builds absolute links from the request's host.
    let host = headers
        .get("host")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let request = Request {
        method: &method,
        path: uri.path(),
        host: &host,
        params: &params,
        api_key: api_key.as_deref(),
    };
    let mut state = lock(&state);
    let response = answer(&mut state, &request, &mut record);
    record.status = response.status().as_u16();
    state.log.push(record);
    response
}

/// What [`answer`] needs of a request.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    host: &'a str,
    params: &'a [(String, String)],
    api_key: Option<&'a str>,
}

fn answer(state: &mut State, request: &Request<'_>, record: &mut RequestRecord) -> Response {
    let Request {
        method,
        path,
        host,
        params,
        api_key,
    } = *request;
    if path != EXPORT_PATH && path != PULSES_PATH {
        return json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not found."}));
    }
    if *method != Method::GET && *method != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"detail": format!("Method \"{method}\" not allowed.")}),
        );
    }
    if !api_key.is_some_and(|key| state.api_keys.iter().any(|known| known == key)) {
        return json_response(StatusCode::FORBIDDEN, &json!({"detail": AUTH_REQUIRED}));
    }
    let fault = state.faults.pop_front().flatten();
    if let Some(Fault::RateLimited(seconds)) = fault {
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"detail": format!("Request was throttled. Expected available in {seconds} seconds.")}),
        );
        if let Ok(value) = seconds.to_string().parse() {
            response.headers_mut().insert("Retry-After", value);
        }
        return response;
    }
    if fault == Some(Fault::BadGatewayHtml) {
        return html_response(
            StatusCode::BAD_GATEWAY,
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n",
        );
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let since = match get("modified_since").filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => match parse_time(text) {
            Some(time) => Some(time),
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"detail": format!("Invalid modified_since: {text}")}),
                )
            }
        },
    };
    let limit = get("limit")
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(state.page_size);
    let page = get("page")
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|page| *page > 0)
        .unwrap_or(1);
    let (count, results) = if path == PULSES_PATH {
        pulses_matching(state, since, page, limit)
    } else {
        export_matching(state, get("types"), since, page, limit)
    };
    if results.is_empty() && page > 1 {
        return json_response(StatusCode::NOT_FOUND, &json!({"detail": "Invalid page."}));
    }
    let link = |number: usize| {
        let mut query: Vec<String> = params
            .iter()
            .filter(|(key, _)| key != "page")
            .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
            .collect();
        query.push(format!("page={number}"));
        format!("http://{host}{path}?{}", query.join("&"))
    };
    let next = (page * limit < count).then(|| link(page + 1));
    let previous = (page > 1).then(|| link(page - 1));
    record.items = results.len();
    let mut body = Map::new();
    body.insert("count".into(), json!(count));
    body.insert("next".into(), json!(next.clone()));
    body.insert("previous".into(), json!(previous));
    body.insert("results".into(), Value::Array(results));
    record.next = next;
    let text = Value::Object(body).to_string();
    match fault {
        Some(Fault::TruncatedJson) => json_response_text(text[..text.len() / 2].to_owned()),
        Some(Fault::HtmlPage) => html_response(
            StatusCode::OK,
            "<!DOCTYPE html>\n<html><head><title>OTX is down for maintenance</title></head><body><h1>We'll be back soon</h1></body></html>\n",
        ),
        _ => json_response_text(text),
    }
}

/// The export records modified since `since` (of `types`, when given),
/// oldest first: their total and page `page` of `limit`.
fn export_matching(
    state: &State,
    types: Option<&str>,
    since: Option<i64>,
    page: usize,
    limit: usize,
) -> (usize, Vec<Value>) {
    let types: Option<Vec<String>> = types
        .filter(|text| !text.is_empty())
        .map(|text| text.split(',').map(|kind| kind.trim().to_lowercase()).collect());
    // Oldest modification first, then by id: stable pages.
    let mut matching: Vec<&(i64, Value)> = state
        .indicators
        .iter()
        .filter(|(modified, _)| since.is_none_or(|since| *modified >= since))
        .filter(|(_, indicator)| {
            types.as_ref().is_none_or(|types| {
                indicator["type"]
                    .as_str()
                    .is_some_and(|kind| types.contains(&kind.to_lowercase()))
            })
        })
        .collect();
    matching.sort_by_key(|(modified, indicator)| (*modified, indicator["id"].as_i64().unwrap_or(0)));
    let results = matching
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|(_, indicator)| indicator.clone())
        .collect();
    (matching.len(), results)
}

/// The pulses modified since `since` (to the second), the most recently
/// modified first: their total and page `page` of `limit`.
fn pulses_matching(state: &State, since: Option<i64>, page: usize, limit: usize) -> (usize, Vec<Value>) {
    let modified = |pulse: &Value| pulse["modified"].as_str().and_then(parse_time).unwrap_or(0);
    let mut matching: Vec<&Value> = state
        .pulses
        .iter()
        .filter(|pulse| since.is_none_or(|since| modified(pulse) >= since))
        .collect();
    matching.sort_by(|a, b| {
        modified(b)
            .cmp(&modified(a))
            .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
    });
    let results = matching
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|pulse| (*pulse).clone())
        .collect();
    (matching.len(), results)
}

fn json_response_text(text: String) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(Body::from(text))
        .unwrap_or_default()
}
