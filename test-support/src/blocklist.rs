//! A blocklist download server: plain-text and CSV lists over HTTP as
//! abuse.ch (Feodo Tracker, URLhaus), Spamhaus and vendors publish them, with
//! a request log and injectable faults.
//!
//! What such servers do, and what is served here:
//!
//! * `GET <path>` answers the whole list every time, `200` with
//!   `Content-Type: text/plain; charset=utf-8` (`text/csv` for a `.csv`
//!   path); an unknown path is `404` with a plain-text body;
//! * a private list wants a key header ([`BlocklistSimulator::require_header`]):
//!   without it, `401` with a plain-text body;
//! * faults: a `500`, a `200` HTML maintenance page, a `200` empty body.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::blocklist::BlocklistSimulator;
//! let lists = BlocklistSimulator::start().await;
//! lists.set_list("/downloads/ipblocklist.txt", "# Feodo Tracker\n192.0.2.1\n");
//! let url = lists.url("/downloads/ipblocklist.txt");
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;

use crate::server::{lock, Shared, SimServer};

/// A misbehaviour injected into the next answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `500 Internal Server Error`.
    ServerError,
    /// `200` with an HTML maintenance page instead of the list.
    HtmlPage,
    /// `200` with an empty body.
    EmptyBody,
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    lists: BTreeMap<String, String>,
    required_header: Option<(String, String)>,
    faults: VecDeque<Fault>,
    log: Vec<RequestRecord>,
}

/// A running simulator. Stops when dropped.
pub struct BlocklistSimulator {
    server: SimServer<State>,
}

impl BlocklistSimulator {
    /// A server with no list yet and no key required.
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

    /// Serves `text` at `path` from now on (the whole list, replacing the last).
    pub fn set_list(&self, path: &str, text: &str) {
        self.server.state().lists.insert(path.to_owned(), text.to_owned());
    }

    /// Answers `401` unless a request carries header `name: value`.
    pub fn require_header(&self, name: &str, value: &str) {
        self.server.state().required_header = Some((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// Queues `fault` for the next request.
    pub fn inject(&self, fault: Fault) {
        self.server.state().faults.push_back(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.state().log.clone()
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

async fn handle(AxumState(state): AxumState<Shared<State>>, uri: Uri, headers: HeaderMap) -> Response {
    let mut state = lock(&state);
    let path = uri.path().to_owned();
    let authorized = match &state.required_header {
        Some((name, value)) => headers
            .get(name.as_str())
            .and_then(|given| given.to_str().ok())
            .is_some_and(|given| given == value),
        None => true,
    };
    let response = if !authorized {
        text(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "401 Unauthorized: a valid API key is required\n".to_owned(),
        )
    } else {
        match state.faults.pop_front() {
            Some(Fault::ServerError) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "500 Internal Server Error\n".to_owned(),
            ),
            Some(Fault::HtmlPage) => text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                "<!DOCTYPE html><html><head><title>Maintenance</title></head><body>Back soon</body></html>"
                    .to_owned(),
            ),
            Some(Fault::EmptyBody) => text(StatusCode::OK, "text/plain; charset=utf-8", String::new()),
            None => match state.lists.get(&path) {
                Some(list) => {
                    let content_type = if path.ends_with(".csv") {
                        "text/csv; charset=utf-8"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    text(StatusCode::OK, content_type, list.clone())
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "404 Not Found\n".to_owned(),
                ),
            },
        }
    };
    state.log.push(RequestRecord {
        path,
        status: response.status().as_u16(),
    });
    response
}
