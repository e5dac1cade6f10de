//! A TAXII 2.1 server simulator: one collection's Get Objects endpoint
//! (`GET /api1/collections/<id>/objects/`), with a request log and
//! injectable faults. The TAXII 2.0 simulator is [`crate::taxii`].
//!
//! What TAXII 2.1 (OASIS, taxii-v2.1-os: §1.6.8 media types, §3.4 error
//! message, §3.6 pagination, §5.4 Get Objects) says, and what is served:
//!
//! * HTTP basic auth or a bearer token (an API key); missing or wrong
//!   credentials are `401` with a TAXII error message (`{"title",
//!   "description", "http_status"}` as a string) in
//!   `application/taxii+json;version=2.1` and a `WWW-Authenticate` header;
//! * the client must accept `application/taxii+json;version=2.1` (or
//!   `application/taxii+json`, the latest version), otherwise `406`;
//! * the answer is an envelope `{"more", "next", "objects"}`; nothing to
//!   return is an empty envelope `{}`;
//! * `added_after` (objects added strictly later), `match[type]`
//!   (comma-separated STIX types) and `limit` (a positive integer; the
//!   server may serve fewer, see [`Taxii21Simulator::set_max_page`]) filter
//!   and cut the objects, kept in the order they were added;
//! * a page with more to come says `"more": true` and a `next` token, valid
//!   with the same filters; an unknown or mangled `next` is `400` with an
//!   error message, as are a bad `limit` or `added_after`;
//! * every answer with objects carries `X-TAXII-Date-Added-First` and
//!   `X-TAXII-Date-Added-Last`, in microseconds as servers (OASIS' medallion)
//!   write them.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::taxii21::{Taxii21Simulator, COLLECTION_PATH};
//! let taxii = Taxii21Simulator::start().await;
//! taxii.add_objects(vec![serde_json::json!({"type": "indicator", "id": "indicator--1"})], "2024-05-20T10:00:00.123456Z");
//! let url = taxii.url(COLLECTION_PATH);
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};

use axum::body::Body;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::server::{lock, Shared, SimServer};
use crate::taxii::{header, normalise};

/// The collection's objects path (the collection id of the specification's examples).
pub const COLLECTION_PATH: &str = "/api1/collections/91a7b528-80eb-42ed-a74d-c6fbd5a26116/objects/";
/// TAXII 2.1's media type, of envelopes and error messages alike.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// The basic-auth user.
pub const USER: &str = "taxii-reader";
/// Its password.
pub const PASSWORD: &str = "correct horse battery staple";
/// The API key accepted as `Authorization: Bearer <key>`.
pub const API_KEY: &str = "tk_3f1c2a9b7e6d5c4b";

/// A misbehaviour injected into the next objects answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 200 with the real envelope cut in half.
    TruncatedJson,
    /// 200 with an HTML page (a maintenance page).
    HtmlPage,
    /// 503 with an HTML page from a load balancer.
    Unavailable,
    /// The next page's `next` token is replaced by one the server never issued.
    BrokenNext,
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The path, without query.
    pub path: String,
    /// The query string exactly as sent (still percent-encoded).
    pub raw_query: String,
    /// Query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    /// The `Range` header, if any (TAXII 2.0 clients send one).
    pub range: Option<String>,
    /// The authorization scheme used (`Basic`, `Bearer`), never the secret.
    pub auth_scheme: Option<String>,
    /// The credentials were right.
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
    /// Objects returned.
    pub items: usize,
    /// The `next` token answered, if any.
    pub next: Option<String>,
    /// The `X-TAXII-Date-Added-Last` header answered, if any.
    pub date_added_last: Option<String>,
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

/// What a `next` token stands for: the filters it was issued under and
/// where the following page starts.
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    added_after: Option<String>,
    types: Option<String>,
    offset: usize,
}

struct State {
    /// (date added, object), in the order added.
    objects: Vec<(String, Value)>,
    password: String,
    api_key: String,
    max_page: usize,
    faults: VecDeque<Fault>,
    tokens: BTreeMap<String, Cursor>,
    issued: usize,
    log: Vec<RequestRecord>,
}

/// A running simulator. Stops when dropped.
pub struct Taxii21Simulator {
    server: SimServer<State>,
}

impl Taxii21Simulator {
    /// An empty collection accepting [`USER`]/[`PASSWORD`] and [`API_KEY`],
    /// pages of at most 1,000 objects.
    pub async fn start() -> Self {
        let state = State {
            objects: Vec::new(),
            password: PASSWORD.to_owned(),
            api_key: API_KEY.to_owned(),
            max_page: 1_000,
            faults: VecDeque::new(),
            tokens: BTreeMap::new(),
            issued: 0,
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
    /// (`2024-05-20T10:00:00.123456Z`; later calls must not go back in time).
    pub fn add_objects(&self, objects: Vec<Value>, date_added: &str) {
        let mut state = self.server.state();
        state
            .objects
            .extend(objects.into_iter().map(|object| (date_added.to_owned(), object)));
    }

    /// Adds objects one after the other, the first at `first_added`, each
    /// next one `step_micros` later, so that every page ends on its own date.
    pub fn add_objects_spaced(&self, objects: Vec<Value>, first_added: &str, step_micros: i64) {
        let start = chrono::DateTime::parse_from_rfc3339(first_added)
            .unwrap_or_else(|error| panic!("{first_added}: {error}"))
            .with_timezone(&chrono::Utc);
        let mut state = self.server.state();
        for (position, object) in objects.into_iter().enumerate() {
            let added = start + chrono::Duration::microseconds(step_micros * position as i64);
            state.objects.push((micros(added), object));
        }
    }

    /// The largest page served, whatever `limit` asks.
    pub fn set_max_page(&self, size: usize) {
        self.server.state().max_page = size.max(1);
    }

    /// Changes the basic-auth password.
    pub fn set_password(&self, password: &str) {
        self.server.state().password = password.to_owned();
    }

    /// Changes the accepted API key.
    pub fn set_api_key(&self, key: &str) {
        self.server.state().api_key = key.to_owned();
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

/// A time as TAXII 2.1 servers write it: UTC, microseconds, `Z`.
pub fn micros(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `seconds_ago` before now, in microseconds (`2024-05-20T10:00:00.123456Z`).
pub fn micros_ago(seconds_ago: i64) -> String {
    micros(chrono::Utc::now() - chrono::Duration::seconds(seconds_ago))
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

/// Whether an `Accept` header accepts TAXII 2.1 envelopes: one of its media
/// ranges is `application/taxii+json` with `version=2.1` or no version.
fn accepts_taxii21(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        if !media.eq_ignore_ascii_case("application/taxii+json") {
            return false;
        }
        let version = parts.find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("version")
                .then(|| value.trim().trim_matches('"').to_owned())
        });
        version.is_none_or(|version| version == "2.1")
    })
}

fn authorization(headers: &HeaderMap, state: &State) -> (Option<String>, bool) {
    let Some(value) = header(headers, "authorization") else {
        return (None, false);
    };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value.as_str(), ""));
    let authorized = if scheme.eq_ignore_ascii_case("basic") {
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{}", state.password));
        credentials.trim() == expected
    } else if scheme.eq_ignore_ascii_case("bearer") {
        credentials.trim() == state.api_key
    } else {
        false
    };
    (Some(scheme.to_owned()), authorized)
}

async fn handle(
    AxumState(state): AxumState<Shared<State>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut state = lock(&state);
    let (auth_scheme, authorized) = authorization(&headers, &state);
    let mut record = RequestRecord {
        path: uri.path().to_owned(),
        raw_query: uri.query().unwrap_or_default().to_owned(),
        params,
        accept: header(&headers, "accept"),
        range: header(&headers, "range"),
        auth_scheme,
        authorized,
        status: 0,
        items: 0,
        next: None,
        date_added_last: None,
    };
    let (response, items, next) = answer(&mut state, &record);
    record.status = response.status().as_u16();
    record.items = items;
    record.next = next;
    record.date_added_last = header(response.headers(), "x-taxii-date-added-last");
    state.log.push(record);
    response
}

fn bad_request(description: &str) -> (Response, usize, Option<String>) {
    (
        taxii_error(StatusCode::BAD_REQUEST, "Bad Request", description),
        0,
        None,
    )
}

fn answer(state: &mut State, record: &RequestRecord) -> (Response, usize, Option<String>) {
    if record.path != COLLECTION_PATH {
        return (
            taxii_error(
                StatusCode::NOT_FOUND,
                "Not Found",
                "The collection does not exist.",
            ),
            0,
            None,
        );
    }
    if !record.authorized {
        let mut response = taxii_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The client needs to authenticate: missing or invalid credentials.",
        );
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"TAXII\", Bearer realm=\"TAXII\""),
        );
        return (response, 0, None);
    }
    if !record.accept.as_deref().is_some_and(accepts_taxii21) {
        return (
            taxii_error(
                StatusCode::NOT_ACCEPTABLE,
                "Not Acceptable",
                "The media type in the Accept header is not supported: use application/taxii+json;version=2.1.",
            ),
            0,
            None,
        );
    }
    let fault = state.faults.pop_front();
    if let Some(fault) = fault.as_ref().filter(|fault| **fault != Fault::BrokenNext) {
        return (fault_response(state, fault), 0, None);
    }
    let added_after = match record.param("added_after") {
        Some(text) if chrono::DateTime::parse_from_rfc3339(text.trim()).is_err() => {
            return bad_request("added_after is not an RFC 3339 timestamp.")
        }
        other => other.map(str::to_owned),
    };
    let types = record.param("match[type]").map(str::to_owned);
    let limit = match record.param("limit") {
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if limit > 0 => limit,
            _ => return bad_request("limit must be a positive integer."),
        },
        None => state.max_page,
    };
    let offset = match record.param("next") {
        Some(token) => match state.tokens.get(token) {
            Some(cursor) if cursor.added_after == added_after && cursor.types == types => cursor.offset,
            Some(_) => return bad_request("The next token was issued for other filters."),
            None => return bad_request("The next token is unknown or has expired."),
        },
        None => 0,
    };
    let after = added_after.as_deref().map(normalise);
    let wanted: Option<Vec<&str>> = types
        .as_deref()
        .map(|text| text.split(',').map(str::trim).collect());
    let matching: Vec<&(String, Value)> = state
        .objects
        .iter()
        .filter(|(added, _)| {
            after
                .as_deref()
                .is_none_or(|after| normalise(added).as_str() > after)
        })
        .filter(|(_, object)| {
            wanted.as_ref().is_none_or(|wanted| {
                object
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| wanted.contains(&kind))
            })
        })
        .collect();
    let size = limit.min(state.max_page);
    let page: Vec<(String, Value)> = matching
        .iter()
        .skip(offset)
        .take(size)
        .map(|pair| (*pair).clone())
        .collect();
    let more = offset + page.len() < matching.len();
    let mut envelope = Map::new();
    let mut next = None;
    if !page.is_empty() {
        envelope.insert("more".to_owned(), Value::Bool(more));
        if more {
            state.issued += 1;
            let token = format!("{:016x}", 0x5EED_0000_0000u64 + state.issued as u64 * 7919);
            state.tokens.insert(
                token.clone(),
                Cursor {
                    added_after: added_after.clone(),
                    types: types.clone(),
                    offset: offset + page.len(),
                },
            );
            let sent = if fault == Some(Fault::BrokenNext) {
                format!("{token}-gone")
            } else {
                token
            };
            envelope.insert("next".to_owned(), Value::String(sent.clone()));
            next = Some(sent);
        }
        envelope.insert(
            "objects".to_owned(),
            Value::Array(page.iter().map(|(_, object)| object.clone()).collect()),
        );
    }
    let mut response = Response::new(Body::from(Value::Object(envelope).to_string()));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(TAXII_MEDIA_TYPE));
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        if let Ok(value) = HeaderValue::from_str(&first.0) {
            headers.insert("x-taxii-date-added-first", value);
        }
        if let Ok(value) = HeaderValue::from_str(&last.0) {
            headers.insert("x-taxii-date-added-last", value);
        }
    }
    (response, page.len(), next)
}

fn fault_response(state: &State, fault: &Fault) -> Response {
    let (status, content_type, body): (StatusCode, &str, Vec<u8>) = match fault {
        Fault::TruncatedJson => {
            let objects: Vec<Value> = state.objects.iter().map(|(_, object)| object.clone()).collect();
            let full = json!({"more": false, "objects": objects}).to_string();
            (StatusCode::OK, TAXII_MEDIA_TYPE, full.as_bytes()[..full.len() / 2].to_vec())
        }
        Fault::HtmlPage => (
            StatusCode::OK,
            "text/html",
            b"<!DOCTYPE html><html><head><title>Down for maintenance</title></head><body>Back soon.</body></html>".to_vec(),
        ),
        Fault::Unavailable | Fault::BrokenNext => (
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(accepts_taxii21("application/taxii+json;version=2.1"));
        assert!(accepts_taxii21(
            "application/json, application/taxii+json; version=\"2.1\""
        ));
        assert!(accepts_taxii21("application/taxii+json"));
        assert!(!accepts_taxii21("application/taxii+json;version=2.0"));
        assert!(!accepts_taxii21("application/json"));
        assert!(!accepts_taxii21("application/vnd.oasis.stix+json; version=2.0"));
    }
}
