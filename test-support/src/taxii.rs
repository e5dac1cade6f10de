//! A TAXII 2.0 server simulator: one collection's objects endpoint
//! (`GET /api/v1/taxii2/feeds/collections/41/objects`, Anomali Limo's layout),
//! as Filebeat's `threatintel/anomali` fileset polls it, with a request log
//! and injectable faults.
//!
//! What TAXII 2.0 (OASIS, §3.4, §3.6, §5.3) and Limo do, and what is served here:
//!
//! * HTTP basic auth; a missing or wrong password is `401` with a TAXII error
//!   message (`{"title", "description", "http_status"}`, media type
//!   `application/vnd.oasis.taxii+json; version=2.0`) and `WWW-Authenticate`;
//! * the client must accept `application/vnd.oasis.stix+json; version=2.0`
//!   (the objects endpoint answers a STIX bundle), otherwise `406`;
//! * `added_after` (a timestamp; objects added strictly later) and
//!   `match[type]` (comma-separated STIX types) filter the objects, kept in
//!   the order they were added;
//! * `Range: items a-b` asks for a slice: `206` with `Content-Range: items
//!   a-b'/total`; a start beyond the total is `416`; no `Range` is `200` with
//!   everything (pages of [`TaxiiSimulator::set_max_page`] at most, as a
//!   server may cap a page: then `206` too);
//! * every answer with objects carries `X-TAXII-Date-Added-First` and
//!   `X-TAXII-Date-Added-Last` (when the first / last object of the page was
//!   added); an answer without objects is a bundle without `objects`.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::taxii::{TaxiiSimulator, COLLECTION_PATH};
//! let taxii = TaxiiSimulator::start().await;
//! taxii.add_objects(vec![serde_json::json!({"type": "indicator", "id": "indicator--1"})], "2024-05-20T10:00:00.000Z");
//! let url = taxii.url(COLLECTION_PATH);
//! # }
//! ```

use std::collections::VecDeque;

use axum::body::Body;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::server::{lock, Shared, SimServer};

/// Limo's collection 41 objects path.
pub const COLLECTION_PATH: &str = "/api/v1/taxii2/feeds/collections/41/objects";
/// The STIX 2.0 bundle media type the objects endpoint answers with.
pub const STIX_MEDIA_TYPE: &str = "application/vnd.oasis.stix+json; version=2.0";
/// The TAXII 2.0 media type of error messages.
pub const TAXII_MEDIA_TYPE: &str = "application/vnd.oasis.taxii+json; version=2.0";
/// Limo's public guest account.
pub const USER: &str = "guest";
/// Its password.
pub const PASSWORD: &str = "guest";

/// A misbehaviour injected into the next objects answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 200 with the real bundle cut in half.
    TruncatedJson,
    /// 200 with an HTML page (a maintenance page).
    HtmlPage,
    /// 503 with an HTML page from a load balancer.
    Unavailable,
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The path, without query.
    pub path: String,
    /// Query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    /// The credentials were right.
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
    /// Objects returned.
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

struct State {
    /// (date added, object), in the order added.
    objects: Vec<(String, Value)>,
    password: String,
    max_page: usize,
    faults: VecDeque<Fault>,
    log: Vec<RequestRecord>,
}

/// A running simulator. Stops when dropped.
pub struct TaxiiSimulator {
    server: SimServer<State>,
}

impl TaxiiSimulator {
    /// An empty collection accepting `guest`/`guest`, pages of at most 10,000 objects.
    pub async fn start() -> Self {
        let state = State {
            objects: Vec::new(),
            password: PASSWORD.to_owned(),
            max_page: 10_000,
            faults: VecDeque::new(),
            log: Vec::new(),
        };
        Self {
            server: SimServer::start(state, |state| Router::new().fallback(handle).with_state(state)).await,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Adds objects, all added to the collection at `date_added`
    /// (`2024-05-20T10:00:00.000Z`; later calls must not go back in time).
    pub fn add_objects(&self, objects: Vec<Value>, date_added: &str) {
        let mut state = self.server.state();
        state
            .objects
            .extend(objects.into_iter().map(|object| (date_added.to_owned(), object)));
    }

    /// The largest page served, whatever `Range` asks.
    pub fn set_max_page(&self, size: usize) {
        self.server.state().max_page = size.max(1);
    }

    /// Changes the password of the guest account.
    pub fn set_password(&self, password: &str) {
        self.server.state().password = password.to_owned();
    }

    /// Queues faults for the next objects requests, one each.
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

pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn taxii_error(status: StatusCode, title: &str, description: &str) -> Response {
    let body =
        json!({"title": title, "description": description, "http_status": status.as_u16().to_string()});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(TAXII_MEDIA_TYPE));
    response
}

/// `items a-b` → (a, b).
fn parse_range(value: &str) -> Option<(usize, usize)> {
    let span = value.trim().strip_prefix("items")?.trim();
    let (start, end) = span.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = end.trim().parse().ok()?;
    (end >= start).then_some((start, end))
}

async fn handle(
    AxumState(state): AxumState<Shared<State>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut state = lock(&state);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{}", state.password))
    );
    let mut record = RequestRecord {
        path: uri.path().to_owned(),
        params: params.clone(),
        range: header(&headers, "range"),
        accept: header(&headers, "accept"),
        authorized: header(&headers, "authorization").as_deref() == Some(expected.as_str()),
        status: 0,
        items: 0,
    };
    let (response, items) = answer(&mut state, &record, &params);
    record.status = response.status().as_u16();
    record.items = items;
    state.log.push(record);
    response
}

fn answer(state: &mut State, record: &RequestRecord, params: &[(String, String)]) -> (Response, usize) {
    if record.path != COLLECTION_PATH {
        return (
            taxii_error(
                StatusCode::NOT_FOUND,
                "Not Found",
                "The collection does not exist.",
            ),
            0,
        );
    }
    if !record.authorized {
        let mut response = taxii_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The client needs to authenticate: invalid username or password.",
        );
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"TAXII\""),
        );
        return (response, 0);
    }
    let accepts_stix = record
        .accept
        .as_deref()
        .is_some_and(|accept| accept.contains("application/vnd.oasis.stix+json"));
    if !accepts_stix {
        return (
            taxii_error(
                StatusCode::NOT_ACCEPTABLE,
                "Not Acceptable",
                "The media type in the Accept header is not supported: use application/vnd.oasis.stix+json; version=2.0.",
            ),
            0,
        );
    }
    if let Some(fault) = state.faults.pop_front() {
        return (fault_response(state, &fault), 0);
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.as_str())
    };
    let added_after = param("added_after").map(normalise);
    let types: Option<Vec<&str>> = param("match[type]").map(|text| text.split(',').map(str::trim).collect());
    let matching: Vec<&(String, Value)> = state
        .objects
        .iter()
        .filter(|(added, _)| {
            added_after
                .as_deref()
                .is_none_or(|after| normalise(added).as_str() > after)
        })
        .filter(|(_, object)| {
            types.as_ref().is_none_or(|types| {
                object
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| types.contains(&kind))
            })
        })
        .collect();
    let total = matching.len();
    let (start, requested_end) = match record.range.as_deref() {
        Some(range) => match parse_range(range) {
            Some(span) => span,
            None => {
                return (
                    taxii_error(
                        StatusCode::BAD_REQUEST,
                        "Bad Request",
                        "The Range header is not `items a-b`.",
                    ),
                    0,
                )
            }
        },
        None => (0, usize::MAX - 1),
    };
    if start > 0 && start >= total {
        let mut response = taxii_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "Requested Range Not Satisfiable",
            "The range starts beyond the last object.",
        );
        if let Ok(value) = HeaderValue::from_str(&format!("items */{total}")) {
            response.headers_mut().insert("content-range", value);
        }
        return (response, 0);
    }
    let end = requested_end
        .min(start.saturating_add(state.max_page) - 1)
        .min(total.saturating_sub(1));
    let page: Vec<&(String, Value)> = if total == 0 {
        Vec::new()
    } else {
        matching[start..=end].to_vec()
    };
    let mut bundle = json!({
        "type": "bundle",
        "id": format!("bundle--{:08x}-0000-4000-8000-000000000000", state.log.len()),
        "spec_version": "2.0",
    });
    if !page.is_empty() {
        bundle["objects"] = Value::Array(page.iter().map(|(_, object)| object.clone()).collect());
    }
    let partial = !page.is_empty() && (start > 0 || end + 1 < total || record.range.is_some());
    let mut response = Response::new(Body::from(bundle.to_string()));
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(STIX_MEDIA_TYPE));
    if partial {
        if let Ok(value) = HeaderValue::from_str(&format!("items {start}-{end}/{total}")) {
            headers.insert("content-range", value);
        }
    }
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        if let Ok(value) = HeaderValue::from_str(&first.0) {
            headers.insert("x-taxii-date-added-first", value);
        }
        if let Ok(value) = HeaderValue::from_str(&last.0) {
            headers.insert("x-taxii-date-added-last", value);
        }
    }
    (response, page.len())
}

/// `seconds_ago` before now as a TAXII timestamp (`2024-05-20T10:00:00.000Z`).
pub fn timestamp_ago(seconds_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Timestamps compared as text need one layout: `…:00Z` and `…:00.000Z` are equal.
pub(crate) fn normalise(text: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(text.trim()) {
        Ok(time) => time
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        Err(_) => text.to_owned(),
    }
}

fn fault_response(state: &State, fault: &Fault) -> Response {
    let (status, content_type, body): (StatusCode, &str, Vec<u8>) = match fault {
        Fault::TruncatedJson => {
            let objects: Vec<Value> = state.objects.iter().map(|(_, object)| object.clone()).collect();
            let full = json!({"type": "bundle", "id": "bundle--cut", "spec_version": "2.0", "objects": objects}).to_string();
            let cut = full.as_bytes()[..full.len() / 2].to_vec();
            (StatusCode::OK, STIX_MEDIA_TYPE, cut)
        }
        Fault::HtmlPage => (
            StatusCode::OK,
            "text/html",
            b"<!DOCTYPE html><html><head><title>Down for maintenance</title></head><body>Back soon.</body></html>".to_vec(),
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html",
            b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>".to_vec(),
        ),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert("content-type", value);
    }
    response
}
