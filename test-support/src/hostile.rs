//! A hostile HTTP server: answers each path with whatever a test sets
//! (compression bombs, broken records, far-future timestamps, links to
//! elsewhere) and records every request with its headers, so a test can see
//! what a credential reached.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::hostile::{gzip_bomb, Canned, HostileServer};
//! let server = HostileServer::start().await;
//! server.answer("/events/restSearch", Canned::json(serde_json::json!({"response": []})));
//! server.answer("/bomb", Canned::gzip(gzip_bomb(64 << 20)));
//! # }
//! ```

use std::collections::BTreeMap;
use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use serde_json::Value;

use crate::server::{lock, Shared, SimServer};

/// One canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    /// The status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body, as sent.
    pub body: Vec<u8>,
    /// Sent in this many pieces with this pause before each but the first
    /// (a slow server, or with a long pause one that stalls mid-body).
    pub paced: Option<(usize, std::time::Duration)>,
}

impl Canned {
    /// `200` with `value` as JSON.
    pub fn json(value: Value) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: value.to_string().into_bytes(),
            paced: None,
        }
    }

    /// This answer sent in `pieces` pieces, `pause` before each but the first.
    pub fn paced(mut self, pieces: usize, pause: std::time::Duration) -> Self {
        self.paced = Some((pieces.max(1), pause));
        self
    }

    /// `200`, JSON, with `compressed` sent as `Content-Encoding: gzip`.
    pub fn gzip(compressed: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("content-encoding".to_owned(), "gzip".to_owned()),
            ],
            body: compressed,
            paced: None,
        }
    }

    /// A redirect (`status` 301/302/307/308) to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self {
            status,
            headers: vec![("location".to_owned(), location.to_owned())],
            body: Vec::new(),
            paced: None,
        }
    }
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string, undecoded.
    pub query: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct State {
    /// Per path, the answers in order; the last one repeats.
    answers: BTreeMap<String, Vec<Canned>>,
    log: Vec<SeenRequest>,
}

/// A running hostile server. Stops when dropped.
pub struct HostileServer {
    server: SimServer<State>,
}

impl HostileServer {
    /// A server that answers `404` until told otherwise.
    pub async fn start() -> Self {
        Self {
            server: SimServer::start(State::default(), |state| {
                Router::new().fallback(handle).with_state(state)
            })
            .await,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Answers every request for `path` with `canned` from now on.
    pub fn answer(&self, path: &str, canned: Canned) {
        self.answer_in_turn(path, vec![canned]);
    }

    /// Answers the requests for `path` with `answers` in turn, the last one
    /// repeating (page 1, then an empty page 2 …).
    pub fn answer_in_turn(&self, path: &str, answers: Vec<Canned>) {
        self.server.state().answers.insert(path.to_owned(), answers);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.server.state().log.clone()
    }
}

async fn handle(
    AxumState(state): AxumState<Shared<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    state.log.push(SeenRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let canned = match state.answers.get_mut(uri.path()) {
        Some(answers) if answers.len() > 1 => answers.remove(0),
        Some(answers) if !answers.is_empty() => answers[0].clone(),
        _ => Canned {
            status: 404,
            headers: Vec::new(),
            body: b"not found".to_vec(),
            paced: None,
        },
    };
    let body = match canned.paced {
        None => Body::from(canned.body),
        Some((pieces, pause)) => {
            let size = canned.body.len().div_ceil(pieces).max(1);
            let pieces: Vec<Vec<u8>> = canned.body.chunks(size).map(<[u8]>::to_vec).collect();
            let stream = futures::stream::iter(pieces.into_iter().enumerate()).then(
                move |(index, piece)| async move {
                    if index > 0 {
                        tokio::time::sleep(pause).await;
                    }
                    Ok::<Bytes, std::io::Error>(Bytes::from(piece))
                },
            );
            Body::from_stream(stream)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in canned.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A gzip stream of `inflated` bytes, the start of a MISP page and then
/// spaces: a few hundred kilobytes that decompress to `inflated`.
pub fn gzip_bomb(inflated: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // The start of a MISP page, so that a parser reading as it inflates
    // finds nothing wrong until the limit: only the size stops it.
    let start = br#"{"response": ["#;
    encoder.write_all(start).expect("writing to memory");
    let block = vec![b' '; 1 << 20];
    let mut left = inflated.saturating_sub(start.len());
    while left > 0 {
        let take = left.min(block.len());
        encoder.write_all(&block[..take]).expect("writing to memory");
        left -= take;
    }
    encoder.finish().expect("finishing in memory")
}
