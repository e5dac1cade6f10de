//! A MISP feed simulator: the static folder a MISP instance (or PyMISP's
//! feed generator) publishes and other MISPs, or `threatintel/misp_feed`,
//! fetch over HTTP(S), as CIRCL's OSINT feed does:
//!
//! * `GET <base>/manifest.json`: an object keyed by event uuid, each value
//!   the event's `Orgc` (`name`, `uuid`), `Tag` (`name`, `colour`), `info`,
//!   `date`, `analysis`, `threat_level_id` and `timestamp` (epoch seconds as
//!   text), built from the events held;
//! * `GET <base>/<uuid>.json`: `{"Event": {...}}`, the event with its
//!   `Attribute` and `Object` lists; an unknown file is `404`;
//! * optional HTTP basic auth (a private feed behind a web server): a
//!   missing or wrong password is `401` with `WWW-Authenticate` and the
//!   server's HTML page;
//! * faults per file (a 500 HTML page, JSON cut in half, a 200 HTML page),
//!   until cleared, and a log of every request.
//!
//! A test changes an event (a new timestamp, a new attribute) and the
//! manifest follows, as a feed regenerated after an edit does.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::misp_feed::MispFeedSimulator;
//! let feed = MispFeedSimulator::start(Vec::new()).await;
//! let base = feed.base_url();
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::misp::store::unwrap_events;
use crate::server::{lock, Shared, SimServer};

/// The folder the feed is served under.
pub const FEED_PATH: &str = "/feeds/osint";

/// A misbehaviour of one file, served until cleared.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 500 with the web server's HTML error page.
    InternalError,
    /// 200 with the real JSON cut in half.
    TruncatedJson,
    /// 200 with an HTML page (a maintenance or login page).
    HtmlPage,
}

/// Which file a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeedFile {
    /// `manifest.json`.
    Manifest,
    /// `<uuid>.json`.
    Event(String),
}

/// One request the simulator saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The file asked for, when the path is one of the feed's.
    pub file: Option<FeedFile>,
    /// The path, without query.
    pub path: String,
    /// The credentials were right (or none are required).
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
}

struct State {
    /// Bare events by uuid.
    events: BTreeMap<String, Value>,
    credentials: Option<(String, String)>,
    faults: BTreeMap<FeedFile, Fault>,
    log: Vec<RequestRecord>,
}

/// A running feed server. Stops when dropped.
pub struct MispFeedSimulator {
    server: SimServer<State>,
}

/// The manifest entry of `event`, as MISP's feed generator writes it.
fn manifest_entry(event: &Value) -> Value {
    let text = |key: &str| event.get(key).cloned().unwrap_or(Value::Null);
    let orgc = event.get("Orgc").map(|orgc| {
        json!({"name": orgc.get("name").cloned().unwrap_or(Value::Null), "uuid": orgc.get("uuid").cloned().unwrap_or(Value::Null)})
    });
    let tags: Vec<Value> = event
        .get("Tag")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .map(|tag| json!({"name": tag.get("name").cloned().unwrap_or(Value::Null), "colour": tag.get("colour").cloned().unwrap_or(Value::Null)}))
                .collect()
        })
        .unwrap_or_default();
    let mut entry = Map::new();
    if let Some(orgc) = orgc {
        entry.insert("Orgc".into(), orgc);
    }
    entry.insert("Tag".into(), Value::Array(tags));
    for key in ["info", "date", "analysis", "threat_level_id", "timestamp"] {
        entry.insert(key.into(), text(key));
    }
    Value::Object(entry)
}

impl MispFeedSimulator {
    /// A public feed (no auth) holding `events` (bare or wrapped, as
    /// [`unwrap_events`] accepts them; each needs a `uuid`).
    pub async fn start(events: Vec<Value>) -> Self {
        let state = State {
            events: BTreeMap::new(),
            credentials: None,
            faults: BTreeMap::new(),
            log: Vec::new(),
        };
        let simulator = Self {
            server: SimServer::start(state, |state| Router::new().fallback(handle).with_state(state)).await,
        };
        simulator.add_events(events);
        simulator
    }

    /// The feed's base URL (what `var.url` names).
    pub fn base_url(&self) -> String {
        self.server.url(FEED_PATH)
    }

    /// The URL of `file` in the feed.
    pub fn file_url(&self, file: &FeedFile) -> String {
        match file {
            FeedFile::Manifest => format!("{}/manifest.json", self.base_url()),
            FeedFile::Event(uuid) => format!("{}/{uuid}.json", self.base_url()),
        }
    }

    /// Adds (or replaces, by uuid) events.
    pub fn add_events(&self, events: Vec<Value>) {
        let mut state = self.server.state();
        for event in events.into_iter().flat_map(unwrap_events) {
            let uuid = event["uuid"]
                .as_str()
                .expect("a feed event has a uuid")
                .to_owned();
            state.events.insert(uuid, event);
        }
    }

    /// The uuids of the events held, sorted.
    pub fn uuids(&self) -> Vec<String> {
        self.server.state().events.keys().cloned().collect()
    }

    /// The bare event `uuid`.
    pub fn event(&self, uuid: &str) -> Option<Value> {
        self.server.state().events.get(uuid).cloned()
    }

    /// `manifest.json` as served now.
    pub fn manifest(&self) -> Value {
        let state = self.server.state();
        Value::Object(
            state
                .events
                .iter()
                .map(|(uuid, event)| (uuid.clone(), manifest_entry(event)))
                .collect(),
        )
    }

    /// Gives event `uuid` a new `timestamp` (its manifest entry follows).
    pub fn touch_event(&self, uuid: &str, timestamp: i64) {
        let mut state = self.server.state();
        let event = state.events.get_mut(uuid).expect("the event is held");
        event["timestamp"] = Value::String(timestamp.to_string());
    }

    /// Adds `attribute` to event `uuid` and stamps both with `timestamp`,
    /// as MISP does when an attribute is added.
    pub fn add_attribute(&self, uuid: &str, mut attribute: Value, timestamp: i64) {
        attribute["timestamp"] = Value::String(timestamp.to_string());
        let mut state = self.server.state();
        let event = state.events.get_mut(uuid).expect("the event is held");
        match event.get_mut("Attribute").and_then(Value::as_array_mut) {
            Some(attributes) => attributes.push(attribute),
            None => event["Attribute"] = json!([attribute]),
        }
        event["timestamp"] = Value::String(timestamp.to_string());
    }

    /// From now on, only `user`/`password` may read the feed.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        self.server.state().credentials = Some((user.to_owned(), password.to_owned()));
    }

    /// Serves `fault` for `file` until [`Self::clear_faults`].
    pub fn set_fault(&self, file: FeedFile, fault: Fault) {
        self.server.state().faults.insert(file, fault);
    }

    /// Serves every file normally again.
    pub fn clear_faults(&self) {
        self.server.state().faults.clear();
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.state().log.clone()
    }

    /// The uuids of the event files requested, in order.
    pub fn event_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|request| match request.file {
                Some(FeedFile::Event(uuid)) => Some(uuid),
                _ => None,
            })
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.server.state().log.clear();
    }

    /// Writes the feed as a folder (`manifest.json` and one `<uuid>.json`
    /// per event), what a feed published on disk holds.
    pub fn write_folder(&self, folder: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(folder)?;
        std::fs::write(folder.join("manifest.json"), self.manifest().to_string())?;
        let state = self.server.state();
        for (uuid, event) in &state.events {
            std::fs::write(
                folder.join(format!("{uuid}.json")),
                json!({"Event": event}).to_string(),
            )?;
        }
        Ok(())
    }
}

fn page(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert("content-type", value);
    }
    response
}

fn authorized(state: &State, headers: &HeaderMap) -> bool {
    let Some((user, password)) = &state.credentials else {
        return true;
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == expected)
}

async fn handle(AxumState(state): AxumState<Shared<State>>, uri: Uri, headers: HeaderMap) -> Response {
    let mut state = lock(&state);
    let path = uri.path().to_owned();
    let file = path
        .strip_prefix(FEED_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|name| match name {
            "manifest.json" => Some(FeedFile::Manifest),
            other => other
                .strip_suffix(".json")
                .filter(|uuid| !uuid.is_empty() && !uuid.contains('/'))
                .map(|uuid| FeedFile::Event(uuid.to_owned())),
        });
    let is_authorized = authorized(&state, &headers);
    let body = match &file {
        _ if !is_authorized => None,
        Some(FeedFile::Manifest) => Some(
            Value::Object(
                state
                    .events
                    .iter()
                    .map(|(uuid, event)| (uuid.clone(), manifest_entry(event)))
                    .collect(),
            )
            .to_string(),
        ),
        Some(FeedFile::Event(uuid)) => state
            .events
            .get(uuid)
            .map(|event| json!({"Event": event}).to_string()),
        None => None,
    };
    let response = if !is_authorized {
        let mut response = page(
            StatusCode::UNAUTHORIZED,
            "text/html",
            b"<html><head><title>401 Authorization Required</title></head><body><h1>Authorization Required</h1></body></html>".to_vec(),
        );
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"MISP feed\""),
        );
        response
    } else {
        match (file.as_ref().and_then(|file| state.faults.get(file)), body) {
            (_, None) => page(
                StatusCode::NOT_FOUND,
                "text/html",
                b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>".to_vec(),
            ),
            (Some(Fault::InternalError), _) => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/html",
                b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>".to_vec(),
            ),
            (Some(Fault::TruncatedJson), Some(body)) => {
                page(StatusCode::OK, "application/json", body.as_bytes()[..body.len() / 2].to_vec())
            }
            (Some(Fault::HtmlPage), Some(_)) => page(
                StatusCode::OK,
                "text/html",
                b"<!DOCTYPE html><html><head><title>Down for maintenance</title></head><body>Back soon.</body></html>".to_vec(),
            ),
            (None, Some(body)) => page(StatusCode::OK, "application/json", body.into_bytes()),
        }
    };
    state.log.push(RequestRecord {
        file,
        path,
        authorized: is_authorized,
        status: response.status().as_u16(),
    });
    response
}
