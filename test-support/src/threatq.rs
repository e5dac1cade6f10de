//! A ThreatQuotient (ThreatQ) simulator: the OAuth2 token endpoint
//! (`POST /api/token`) and a data collection's export
//! (`GET /api/indicators/query/hash/<hash>`) that Filebeat's
//! `threatintel/threatq` fileset polls, with a request log and injectable
//! faults.
//!
//! What the real service does, and what is served here:
//!
//! * `POST /api/token` takes the client-credentials grant
//!   (`grant_type=client_credentials`, `client_id`, `client_secret` in the
//!   form, or the client in a `Basic` header, as RFC 6749 allows) and answers
//!   `{"access_token", "token_type": "Bearer", "expires_in"}`. ThreatQ's API
//!   is built on league/oauth2-server: an unknown client is
//!   `401 {"error": "invalid_client", "error_description": "Client
//!   authentication failed", "message": "Client authentication failed"}`; a
//!   missing, unknown or revoked bearer token on the API is
//!   `401 {"error": "access_denied", ...}`;
//! * the export pages with Solr-style cursors: `sort=updated_at`, `limit`,
//!   `cursorMark` (`*` starts at the oldest update). The answer is
//!   `{"total", "data": [...], "nextCursorMark", "limit"}`; the mark points
//!   just after the last indicator of the page, so a later request with it
//!   returns what was updated since. At the end `nextCursorMark` equals the
//!   mark sent (Solr's rule); [`ThreatqSimulator::set_empty_data_as_object`]
//!   answers an empty page with `"data": {}` instead, as Elastic's own mock
//!   of the API does;
//! * an indicator is a ThreatQ record (`id`, `value`, `type.name`,
//!   `updated_at` as `yyyy-MM-dd HH:mm:ss` UTC, `score`, `status`,
//!   `attributes`, `sources`, `adversaries`, ...), served as stored.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::threatq::ThreatqSimulator;
//! let tq = ThreatqSimulator::start().await;
//! let url = tq.url("/api/indicators/query/hash/");
//! # }
//! ```

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::server::{lock, Shared, SimServer};

/// The client id the simulator accepts.
pub const CLIENT_ID: &str = "threatbeat-client";
/// Its secret.
pub const CLIENT_SECRET: &str = "tq-secret-0123456789";
/// The data collection hash the simulator serves.
pub const COLLECTION: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// A misbehaviour injected into the next export answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 200 with the real answer cut in half.
    TruncatedJson,
    /// 200 with an HTML page instead of JSON (ThreatQ's login page).
    HtmlPage,
    /// 401 `access_denied`, as for an expired or revoked token.
    TokenRejected,
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
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Number of indicators returned.
    pub items: usize,
    /// The `nextCursorMark` answered.
    pub next_cursor_mark: Option<String>,
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
    indicators: Vec<Value>,
    tokens: Vec<String>,
    token_lifetime: Value,
    empty_data_as_object: bool,
    faults: VecDeque<Fault>,
    log: Vec<RequestRecord>,
}

/// A running simulator. Stops when dropped.
pub struct ThreatqSimulator {
    server: SimServer<State>,
}

impl ThreatqSimulator {
    /// An empty simulator for [`CLIENT_ID`] / [`CLIENT_SECRET`] and [`COLLECTION`].
    pub async fn start() -> Self {
        let state = State {
            token_lifetime: json!(3600),
            ..State::default()
        };
        Self {
            server: SimServer::start(state, |state| Router::new().fallback(handle).with_state(state)).await,
        }
    }

    /// The `expires_in` of the tokens issued from now on (default `3600`):
    /// any JSON, e.g. Azure AD v1's string `"3599"` or an absurd number.
    pub fn set_token_lifetime(&self, expires_in: Value) {
        self.server.state().token_lifetime = expires_in;
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Adds indicator records (each needs `id` and `updated_at`).
    pub fn add_indicators(&self, records: Vec<Value>) {
        self.server.state().indicators.extend(records);
    }

    /// Replaces the record with the same `id` (an update in ThreatQ).
    pub fn update_indicator(&self, record: Value) {
        let mut state = self.server.state();
        match state.indicators.iter_mut().find(|old| old["id"] == record["id"]) {
            Some(old) => *old = record,
            None => state.indicators.push(record),
        }
    }

    /// Answers an empty page with `"data": {}` (as Elastic's mock does).
    pub fn set_empty_data_as_object(&self, on: bool) {
        self.server.state().empty_data_as_object = on;
    }

    /// Queues faults for the next export requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.server.state().faults.extend(faults);
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.server.state().tokens.len()
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.state().log.clone()
    }

    /// The export requests seen so far.
    pub fn exports(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|record| record.path.starts_with("/api/indicators/query/hash/"))
            .collect()
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    json_text(status, body.to_string())
}

fn json_text(status: StatusCode, text: String) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("Content-Type", "application/json");
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header("WWW-Authenticate", "Bearer");
    }
    builder.body(Body::from(text)).unwrap_or_default()
}

fn invalid_client() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({
            "error": "invalid_client",
            "error_description": "Client authentication failed",
            "message": "Client authentication failed",
        }),
    )
}

fn access_denied(hint: &str) -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({
            "error": "access_denied",
            "error_description": "The resource owner or authorization server denied the request.",
            "hint": hint,
            "message": "The resource owner or authorization server denied the request.",
        }),
    )
}

/// A cursor mark: base64 of `<updated_at>|<id>`, the sort key of the last
/// indicator served (Solr's marks are opaque base64 too).
fn mark_of(indicator: &Value) -> String {
    let key = format!(
        "{}|{}",
        indicator["updated_at"].as_str().unwrap_or(""),
        indicator["id"].as_i64().unwrap_or(0)
    );
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The sort key a mark stands for; `*` is before everything.
fn parse_mark(mark: &str) -> Option<Option<(String, i64)>> {
    if mark == "*" {
        return Some(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(mark).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (updated, id) = text.rsplit_once('|')?;
    Some(Some((updated.to_owned(), id.parse().ok()?)))
}

fn sort_key(indicator: &Value) -> (String, i64) {
    (
        indicator["updated_at"].as_str().unwrap_or("").to_owned(),
        indicator["id"].as_i64().unwrap_or(0),
    )
}

/// The form fields of an `application/x-www-form-urlencoded` body.
fn form(body: &Bytes) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let uri: Uri = match format!("/?{text}").parse() {
        Ok(uri) => uri,
        Err(_) => return Vec::new(),
    };
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs)
        .unwrap_or_default()
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(params)| params)
        .unwrap_or_default();
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut record = RequestRecord {
        method: method.to_string(),
        path: uri.path().to_owned(),
        params: params.clone(),
        authorization: authorization.clone(),
        status: 0,
        items: 0,
        next_cursor_mark: None,
    };
    let mut state = lock(&state);
    let path = uri.path();
    let response = if path == "/api/token" && method == Method::POST {
        token(&mut state, authorization.as_deref(), &body)
    } else if let Some(hash) = path.strip_prefix("/api/indicators/query/hash/") {
        if method != Method::GET {
            json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"message": "The requested method is not allowed."}),
            )
        } else {
            export(&mut state, hash, &params, authorization.as_deref(), &mut record)
        }
    } else {
        json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"}))
    };
    record.status = response.status().as_u16();
    state.log.push(record);
    response
}

fn token(state: &mut State, authorization: Option<&str>, body: &Bytes) -> Response {
    let fields = form(body);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    // The client in a Basic header (RFC 6749 §2.3.1), else in the form.
    let basic = authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.split_once(':')
                .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
        });
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => (
            field("client_id").unwrap_or_default(),
            field("client_secret").unwrap_or_default(),
        ),
    };
    if field("grant_type").as_deref() != Some("client_credentials") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "unsupported_grant_type",
                "error_description": "The authorization grant type is not supported by the authorization server.",
                "message": "The authorization grant type is not supported by the authorization server.",
            }),
        );
    }
    if id != CLIENT_ID || secret != CLIENT_SECRET {
        return invalid_client();
    }
    let token = format!("tq-access-{}", state.tokens.len() + 1);
    state.tokens.push(token.clone());
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": state.token_lifetime, "access_token": token}),
    )
}

fn export(
    state: &mut State,
    hash: &str,
    params: &[(String, String)],
    authorization: Option<&str>,
    record: &mut RequestRecord,
) -> Response {
    let bearer = authorization.and_then(|value| value.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        return access_denied("Missing \"Authorization\" header");
    };
    if !state.tokens.iter().any(|token| token == bearer) {
        return access_denied("Access token could not be verified");
    }
    let fault = state.faults.pop_front();
    if fault == Some(Fault::TokenRejected) {
        return access_denied("Access token has been revoked");
    }
    if hash != COLLECTION {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": "No query results for model [DataCollection]."}),
        );
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let limit = get("limit")
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(100);
    let mark = get("cursorMark").unwrap_or("*");
    let Some(after) = parse_mark(mark) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": format!("Unable to parse 'cursorMark' after totem: value must either be '*' or the 'nextCursorMark' returned by a previous search: {mark}")}),
        );
    };
    let mut sorted: Vec<&Value> = state.indicators.iter().collect();
    sorted.sort_by_key(|indicator| sort_key(indicator));
    let total = sorted.len();
    let page: Vec<Value> = sorted
        .into_iter()
        .filter(|indicator| after.as_ref().is_none_or(|after| sort_key(indicator) > *after))
        .take(limit)
        .cloned()
        .collect();
    let next = page.last().map_or_else(|| mark.to_owned(), mark_of);
    record.items = page.len();
    record.next_cursor_mark = Some(next.clone());
    let data = if page.is_empty() && state.empty_data_as_object {
        json!({})
    } else {
        Value::Array(page)
    };
    let text = json!({"total": total, "data": data, "nextCursorMark": next, "limit": limit}).to_string();
    match fault {
        Some(Fault::TruncatedJson) => json_text(StatusCode::OK, text[..text.len() / 2].to_owned()),
        Some(Fault::HtmlPage) => Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "text/html; charset=UTF-8")
            .body(Body::from(
                "<!DOCTYPE html>\n<html><head><title>ThreatQ | Login</title></head><body><div id=\"app\"></div></body></html>\n",
            ))
            .unwrap_or_default(),
        _ => json_text(StatusCode::OK, text),
    }
}
