//! An abuse.ch simulator: URLhaus (`GET /v1/urls/recent/`,
//! `GET /v1/payloads/recent/`, with or without `limit/<n>/`), MalwareBazaar
//! (`POST /api/v1/` with the form `query=get_recent&selector=time`) and
//! ThreatFox (`POST /api/v1/` with the JSON body `{"query": "get_iocs",
//! "days": N}`), on one loopback port, with a request log, `Auth-Key`
//! checking and injectable faults. MalwareBazaar and ThreatFox share the
//! path (they live on different hosts, `mb-api.abuse.ch` and
//! `threatfox-api.abuse.ch`): a JSON body is ThreatFox's, anything else
//! MalwareBazaar's.
//!
//! What the real services answer, and what is served here:
//!
//! * an answer is `{"query_status": "ok", "urls"|"payloads"|"data": [...]}`;
//!   nothing recent is `{"query_status": "no_results"}` (HTTP 200, no list);
//! * since mid-2025 every API asks for an `Auth-Key` header: none gives
//!   `401 {"error": "Unauthorized"}`, an unknown one
//!   `403 {"query_status": "unknown_auth_key"}` (observed answers quoted by
//!   several client projects; abuse.ch's blog post "community first");
//! * the wrong method on a URLhaus endpoint gives
//!   `405 {"query_status": "http_get_expected"}`, on MalwareBazaar
//!   `405 {"query_status": "http_post_expected"}`;
//! * MalwareBazaar's `get_recent` wants `selector` `time` (the last 60 minutes)
//!   or `100`; another selector is `{"query_status": "unknown_selector"}`, no
//!   selector `{"query_status": "no_selector"}`, another query
//!   `{"query_status": "illegal_query"}` (the simulator's word for it).
//!   Filebeat sends `query` and `selector` in the URL query of an empty form
//!   POST, so they are read from the URL too (the log says where they came from);
//! * ThreatFox's `get_iocs` returns the IOCs whose `first_seen` lies within
//!   the last `days` days (documented: min 1, max 7, default 3), newest
//!   first, as `{"query_status": "ok", "data": [...]}`; none is
//!   `{"query_status": "no_result", "data": "Your search did not yield any
//!   results"}` (HTTP 200, `data` a string). A `days` outside 1..=7 or not a
//!   number is `{"query_status": "illegal_days"}`, another query
//!   `{"query_status": "unknown_query"}`, a body that is not JSON
//!   `{"query_status": "illegal_json"}` (HTTP 200; undocumented, the
//!   simulator's words). The clock of the `days` window is the machine's,
//!   or the one [`AbusechSimulator::set_threatfox_now`] pins (sample data
//!   from the vendor's documentation is years old);
//! * abuse.ch's rate limit answer is not documented: [`Fault::RateLimited`]
//!   serves `429 Too Many Requests` with a plain-text body and, when given,
//!   `Retry-After`.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::abusech::AbusechSimulator;
//! let sim = AbusechSimulator::start().await;
//! sim.set_urls(vec![serde_json::json!({"id": "1", "url": "http://x.example/a"})]);
//! let url = sim.url("/v1/urls/recent/");
//! # }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use crate::server::{lock, Shared, SimServer};

/// ThreatFox's `data` when nothing matched (`query_status: no_result`).
pub const NO_RESULT: &str = "Your search did not yield any results";

/// A misbehaviour injected into the next answer of a feed endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 Too Many Requests; `Some(seconds)` adds `Retry-After`.
    RateLimited(Option<u64>),
    /// 500 with an HTML error page.
    InternalError,
    /// 502 with an HTML page from a reverse proxy.
    BadGatewayHtml,
    /// 200 with the real answer cut in half.
    TruncatedJson,
    /// 200 with an HTML page instead of JSON (a captive portal, a maintenance page).
    HtmlPage,
    /// 200 with no body.
    EmptyBody,
    /// The connection is dropped in the middle of the body.
    ConnectionReset,
    /// The answer comes after this delay (client timeouts).
    Slow(Duration),
    /// 200 with `{"query_status": <this>}` and no records: an answer the
    /// request did not deserve (`illegal_days` to a valid `days`, ...).
    QueryStatus(&'static str),
}

/// Which API a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// URLhaus `/v1/urls/recent/`.
    RecentUrls,
    /// URLhaus `/v1/payloads/recent/`.
    RecentPayloads,
    /// MalwareBazaar `/api/v1/` (a form or an empty body).
    Bazaar,
    /// ThreatFox `/api/v1/` (a JSON body).
    ThreatFox,
    /// Anything else (404).
    Unknown,
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// `GET` / `POST`.
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The URL query, if any.
    pub query: Option<String>,
    /// The endpoint it was routed to.
    pub endpoint: Endpoint,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// The form fields of the body (MalwareBazaar), in order.
    pub form: Vec<(String, String)>,
    /// The JSON body (ThreatFox), when it parsed.
    pub json: Option<Value>,
    /// The `Auth-Key` header, if sent.
    pub auth_key: Option<String>,
    /// The status answered; 0 while unanswered (or when the client gave up first).
    pub status: u16,
    /// Records in the answer.
    pub items: usize,
}

#[derive(Default)]
struct State {
    urls: Vec<Value>,
    payloads: Vec<Value>,
    samples: Vec<Value>,
    /// ThreatFox IOC records.
    iocs: Vec<Value>,
    /// The time (Unix seconds) ThreatFox's `days` window ends at; `None`: now.
    threatfox_now: Option<i64>,
    /// `None`: no key needed (the API before mid-2025).
    auth_keys: Option<Vec<String>>,
    faults: VecDeque<Fault>,
    log: Vec<RequestRecord>,
}

/// A running abuse.ch simulator. Stops when dropped.
pub struct AbusechSimulator {
    server: SimServer<State>,
}

impl AbusechSimulator {
    /// A simulator with no data (every feed answers `no_results`) and no key required.
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

    /// Replaces the records of `/v1/urls/recent/`.
    pub fn set_urls(&self, urls: Vec<Value>) {
        self.server.state().urls = urls;
    }

    /// Replaces the records of `/v1/payloads/recent/`.
    pub fn set_payloads(&self, payloads: Vec<Value>) {
        self.server.state().payloads = payloads;
    }

    /// Replaces the records of MalwareBazaar's `get_recent`.
    pub fn set_samples(&self, samples: Vec<Value>) {
        self.server.state().samples = samples;
    }

    /// Replaces the IOC records of ThreatFox's `get_iocs` (each with a
    /// `first_seen` of the form `2022-08-05 11:40:15 UTC`).
    pub fn set_iocs(&self, iocs: Vec<Value>) {
        self.server.state().iocs = iocs;
    }

    /// Adds IOC records to ThreatFox's `get_iocs`.
    pub fn add_iocs(&self, iocs: Vec<Value>) {
        self.server.state().iocs.extend(iocs);
    }

    /// Pins the end of ThreatFox's `days` window to `now` (Unix seconds),
    /// so that dated sample records fall inside it.
    pub fn set_threatfox_now(&self, now: i64) {
        self.server.state().threatfox_now = Some(now);
    }

    /// The ThreatFox requests seen so far.
    pub fn threatfox_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|request| request.endpoint == Endpoint::ThreatFox)
            .collect()
    }

    /// Requires `Auth-Key` to be one of `keys` from now on.
    pub fn require_auth_keys(&self, keys: &[&str]) {
        self.server.state().auth_keys = Some(keys.iter().map(|key| (*key).to_owned()).collect());
    }

    /// Queues faults for the next feed requests, one each.
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

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn html_response(status: StatusCode, html: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/html; charset=UTF-8")
        .body(Body::from(html))
        .unwrap_or_default()
}

fn query_status(status: StatusCode, name: &str) -> Response {
    json_response(status, &json!({ "query_status": name }))
}

/// `/v1/urls/recent/`, `/v1/urls/recent/limit/3/` (and the same without the
/// trailing slash) → the endpoint and the optional limit.
fn route(path: &str) -> (Endpoint, Option<usize>) {
    let trimmed = path.trim_end_matches('/');
    let (base, limit) = match trimmed.rsplit_once("/limit/") {
        Some((base, limit)) => (base, limit.parse::<usize>().ok()),
        None => (trimmed, None),
    };
    let endpoint = match base {
        "/v1/urls/recent" => Endpoint::RecentUrls,
        "/v1/payloads/recent" => Endpoint::RecentPayloads,
        "/api/v1" => Endpoint::Bazaar,
        _ => Endpoint::Unknown,
    };
    (endpoint, limit)
}

/// `a=1&b=x+y` → pairs, `+` and `%XX` decoded.
fn parse_form(text: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'+' => out.push(b' '),
                b'%' if index + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                    match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                        Some(byte) => {
                            out.push(byte);
                            index += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            index += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (decode(key), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let (mut endpoint, limit) = route(&path);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let is_form = content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        parse_form(&String::from_utf8_lossy(&body))
    } else {
        Vec::new()
    };
    let is_json = content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("application/json"))
        || body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
    if endpoint == Endpoint::Bazaar && is_json {
        endpoint = Endpoint::ThreatFox;
    }
    let json = if endpoint == Endpoint::ThreatFox {
        serde_json::from_slice::<Value>(&body).ok()
    } else {
        None
    };
    let auth_key = header("auth-key");
    // Logged on arrival (status 0 until answered), so that a request whose
    // client gave up still shows.
    let index = {
        let mut state = lock(&state);
        state.log.push(RequestRecord {
            method: method.to_string(),
            path: path.clone(),
            query: uri.query().map(str::to_owned),
            endpoint,
            content_type,
            form: form.clone(),
            json: json.clone(),
            auth_key: auth_key.clone(),
            status: 0,
            items: 0,
        });
        state.log.len() - 1
    };
    let (response, items) = if endpoint == Endpoint::ThreatFox {
        threatfox_answer(&state, &method, json.as_ref(), auth_key.as_deref()).await
    } else {
        answer(&state, &method, &uri, endpoint, limit, &form, auth_key.as_deref()).await
    };
    if let Some(record) = lock(&state).log.get_mut(index) {
        record.status = response.status().as_u16();
        record.items = items;
    }
    response
}

async fn answer(
    state: &Shared<State>,
    method: &Method,
    uri: &Uri,
    endpoint: Endpoint,
    limit: Option<usize>,
    form: &[(String, String)],
    auth_key: Option<&str>,
) -> (Response, usize) {
    if endpoint == Endpoint::Unknown {
        return (
            html_response(
                StatusCode::NOT_FOUND,
                "<html><body><h1>404 Not Found</h1></body></html>\n",
            ),
            0,
        );
    }
    if let Some(refused) = check_auth_key(state, auth_key) {
        return (refused, 0);
    }
    let key = match endpoint {
        Endpoint::RecentUrls | Endpoint::RecentPayloads if method != Method::GET => {
            return (
                query_status(StatusCode::METHOD_NOT_ALLOWED, "http_get_expected"),
                0,
            )
        }
        Endpoint::Bazaar if method != Method::POST => {
            return (
                query_status(StatusCode::METHOD_NOT_ALLOWED, "http_post_expected"),
                0,
            )
        }
        Endpoint::RecentUrls => "urls",
        Endpoint::RecentPayloads => "payloads",
        _ => "data",
    };
    if endpoint == Endpoint::Bazaar {
        // The form body, else the URL query (Filebeat's way).
        let url_params = uri.query().map(parse_form).unwrap_or_default();
        let field = |name: &str| {
            form.iter()
                .chain(url_params.iter())
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if field("query").as_deref() != Some("get_recent") {
            return (query_status(StatusCode::OK, "illegal_query"), 0);
        }
        match field("selector").as_deref() {
            None | Some("") => return (query_status(StatusCode::OK, "no_selector"), 0),
            Some("time") | Some("100") => {}
            Some(_) => return (query_status(StatusCode::OK, "unknown_selector"), 0),
        }
    }
    let (fault, mut records) = {
        let mut guard = lock(state);
        let records = match endpoint {
            Endpoint::RecentUrls => guard.urls.clone(),
            Endpoint::RecentPayloads => guard.payloads.clone(),
            _ => guard.samples.clone(),
        };
        (guard.faults.pop_front(), records)
    };
    if let Some(limit) = limit {
        records.truncate(limit);
    }
    let items = records.len();
    let body = if records.is_empty() {
        json!({"query_status": "no_results"})
    } else {
        json!({"query_status": "ok", key: records})
    };
    match fault {
        None => (json_response(StatusCode::OK, &body), items),
        Some(fault) => {
            let (response, complete) = fault_response(fault, &body).await;
            (response, if complete { items } else { 0 })
        }
    }
}

/// `None` when the key is accepted (or none is required); otherwise
/// abuse.ch's refusal: `401 {"error": "Unauthorized"}` without a key,
/// `403 {"query_status": "unknown_auth_key"}` with an unknown one. The key is
/// checked before anything else, as the real front end does.
fn check_auth_key(state: &Shared<State>, auth_key: Option<&str>) -> Option<Response> {
    let guard = lock(state);
    let keys = guard.auth_keys.as_ref()?;
    match auth_key {
        None | Some("") => Some(json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "Unauthorized"}),
        )),
        Some(key) if !keys.iter().any(|known| known == key) => {
            Some(query_status(StatusCode::FORBIDDEN, "unknown_auth_key"))
        }
        Some(_) => None,
    }
}

/// The answer `fault` turns `body` into, and whether it still delivers the
/// whole body (only a slow answer does).
async fn fault_response(fault: Fault, body: &Value) -> (Response, bool) {
    let text = body.to_string();
    let response = match fault {
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            return (json_response(StatusCode::OK, body), true);
        }
        Fault::RateLimited(retry_after) => {
            let mut builder = Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("Content-Type", "text/plain; charset=UTF-8");
            if let Some(seconds) = retry_after {
                builder = builder.header("Retry-After", seconds.to_string());
            }
            builder.body(Body::from("Too Many Requests\n")).unwrap_or_default()
        }
        Fault::InternalError => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>\n",
        ),
        Fault::BadGatewayHtml => html_response(
            StatusCode::BAD_GATEWAY,
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n",
        ),
        Fault::TruncatedJson => Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "application/json")
            .body(Body::from(text.as_bytes()[..text.len() / 2].to_vec()))
            .unwrap_or_default(),
        Fault::HtmlPage => html_response(
            StatusCode::OK,
            "<!DOCTYPE html>\n<html><head><title>abuse.ch | Maintenance</title></head><body><p>We are currently performing maintenance.</p></body></html>\n",
        ),
        Fault::QueryStatus(status) => query_status(StatusCode::OK, status),
        Fault::EmptyBody => Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "application/json")
            .body(Body::empty())
            .unwrap_or_default(),
        Fault::ConnectionReset => {
            let head = text.as_bytes()[..text.len().min(64)].to_vec();
            let stream = futures::stream::iter(vec![
                Ok::<Bytes, std::io::Error>(Bytes::from(head)),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated connection reset")),
            ]);
            Response::builder()
                .status(StatusCode::OK)
                .header("Content-Type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_default()
        }
    };
    (response, false)
}

/// `2022-08-05 11:40:15 UTC` (ThreatFox's `first_seen`) as Unix seconds.
pub fn threatfox_time(text: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(text.trim_end_matches(" UTC"), "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|time| time.and_utc().timestamp())
}

/// Unix seconds as ThreatFox writes a time: `2022-08-05 11:40:15 UTC`.
pub fn threatfox_format(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// ThreatFox's `POST /api/v1/` with a JSON body.
async fn threatfox_answer(
    state: &Shared<State>,
    method: &Method,
    body: Option<&Value>,
    auth_key: Option<&str>,
) -> (Response, usize) {
    if let Some(refused) = check_auth_key(state, auth_key) {
        return (refused, 0);
    }
    if method != Method::POST {
        return (
            query_status(StatusCode::METHOD_NOT_ALLOWED, "http_post_expected"),
            0,
        );
    }
    let Some(body) = body.filter(|body| body.is_object()) else {
        return (query_status(StatusCode::OK, "illegal_json"), 0);
    };
    if body["query"] != "get_iocs" {
        return (query_status(StatusCode::OK, "unknown_query"), 0);
    }
    // `days` may come as a number or as a numeric string; absent means 3.
    let days = match &body["days"] {
        Value::Null => Some(3),
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse::<i64>().ok(),
        _ => None,
    };
    let Some(days) = days.filter(|days| (1..=7).contains(days)) else {
        return (query_status(StatusCode::OK, "illegal_days"), 0);
    };
    let (fault, mut records) = {
        let mut guard = lock(state);
        let now = guard
            .threatfox_now
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let since = now - days * 86_400;
        let records: Vec<Value> = guard
            .iocs
            .iter()
            .filter(|ioc| {
                ioc["first_seen"]
                    .as_str()
                    .and_then(threatfox_time)
                    .is_some_and(|seen| seen >= since && seen <= now)
            })
            .cloned()
            .collect();
        (guard.faults.pop_front(), records)
    };
    // Newest first, as the API answers.
    records.sort_by_key(|ioc| {
        std::cmp::Reverse(ioc["first_seen"].as_str().and_then(threatfox_time).unwrap_or(0))
    });
    let items = records.len();
    let answer = if records.is_empty() {
        json!({"query_status": "no_result", "data": NO_RESULT})
    } else {
        json!({"query_status": "ok", "data": records})
    };
    match fault {
        None => (json_response(StatusCode::OK, &answer), items),
        Some(fault) => {
            let (response, complete) = fault_response(fault, &answer).await;
            (response, if complete { items } else { 0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threatfox_times() {
        assert_eq!(threatfox_time("2020-12-08 13:36:27 UTC"), Some(1_607_434_587));
        assert_eq!(threatfox_format(1_607_434_587), "2020-12-08 13:36:27 UTC");
        assert_eq!(threatfox_time("yesterday"), None);
    }

    #[test]
    fn routes_and_forms() {
        assert_eq!(route("/v1/urls/recent/"), (Endpoint::RecentUrls, None));
        assert_eq!(route("/v1/urls/recent/limit/3/"), (Endpoint::RecentUrls, Some(3)));
        assert_eq!(route("/v1/payloads/recent"), (Endpoint::RecentPayloads, None));
        assert_eq!(route("/api/v1/"), (Endpoint::Bazaar, None));
        assert_eq!(route("/v1/url/"), (Endpoint::Unknown, None));
        assert_eq!(
            parse_form("query=get_recent&selector=time&x=a+b%2Fc&flag"),
            vec![
                ("query".to_owned(), "get_recent".to_owned()),
                ("selector".to_owned(), "time".to_owned()),
                ("x".to_owned(), "a b/c".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(
            parse_form("a=%zz&b=%4"),
            vec![
                ("a".to_owned(), "%zz".to_owned()),
                ("b".to_owned(), "%4".to_owned())
            ]
        );
    }
}
