//! A MISP that answers with one very large event, written while it is sent:
//! the server never holds the page, so a test of the client's memory
//! measures the client. `POST /events/restSearch` page 1 is one event of
//! `attributes` attributes (with its `Tag` list after them, where MISP puts
//! it), any later page is `{"response": []}`.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::misp::large::LargeEventServer;
//! let misp = LargeEventServer::serve(200_000).await;
//! let url = misp.url("/events/restSearch");
//! # }
//! ```

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::server::{lock, Shared, SimServer};

/// Attributes written per chunk of the body.
const CHUNK_ATTRIBUTES: usize = 500;

/// What the server counts.
#[derive(Debug, Default)]
pub struct LargeEventState {
    /// Attributes in the event.
    pub attributes: usize,
    /// Bytes of the large page, once sent.
    pub page_bytes: usize,
    /// Requests received.
    pub requests: usize,
}

/// The server; stops when dropped.
pub type LargeEventServer = SimServer<LargeEventState>;

impl LargeEventServer {
    /// Serves one event of `attributes` attributes on a free loopback port.
    pub async fn serve(attributes: usize) -> Self {
        let state = LargeEventState {
            attributes,
            ..LargeEventState::default()
        };
        SimServer::start(state, |shared| {
            Router::new()
                .route("/events/restSearch", post(search))
                .with_state(shared)
        })
        .await
    }
}

/// The uuid of attribute `index` (distinct, MISP-shaped).
pub fn attribute_uuid(index: usize) -> String {
    format!("5f0c1a2b-0000-4000-8000-{index:012}")
}

async fn search(State(shared): State<Shared<LargeEventState>>, Json(request): Json<Value>) -> Response {
    let page = request.get("page").and_then(Value::as_u64).unwrap_or(1);
    let attributes = {
        let mut state = lock(&shared);
        state.requests += 1;
        state.attributes
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json");
    if page > 1 {
        return builder
            .body(Body::from(r#"{"response": []}"#))
            .unwrap_or_default();
    }
    let now = chrono::Utc::now().timestamp();
    let head = json!({
        "id": "1", "orgc_id": "1", "org_id": "1", "date": "2026-12-01", "threat_level_id": "2",
        "info": "One very large event", "published": true, "uuid": "5f0c1a2b-1111-4000-8000-000000000001",
        "attribute_count": attributes.to_string(), "analysis": "2", "timestamp": now.to_string(),
        "distribution": "3", "publish_timestamp": now.to_string(), "sharing_group_id": "0",
        "Org": {"id": "1", "name": "ORGNAME", "uuid": "5f0c1a2b-2222-4000-8000-000000000001"},
        "Orgc": {"id": "1", "name": "ORGNAME", "uuid": "5f0c1a2b-2222-4000-8000-000000000001"},
    });
    let mut opening = head.to_string();
    opening.pop();
    let opening = format!(r#"{{"response": [{{"Event": {opening}, "Attribute": ["#);
    let closing = r##"], "Object": [], "Tag": [{"id": "1", "name": "tlp:green", "colour": "#00ff00"}, {"id": "2", "name": "misp-galaxy:threat-actor=\"Large\"", "colour": "#0088cc"}]}}]}"##;
    let chunks = attributes.div_ceil(CHUNK_ATTRIBUTES);
    let counted = shared.clone();
    let body = futures::stream::iter(0..chunks + 2).map(move |chunk| {
        let bytes = if chunk == 0 {
            opening.clone().into_bytes()
        } else if chunk == chunks + 1 {
            closing.as_bytes().to_vec()
        } else {
            let first = (chunk - 1) * CHUNK_ATTRIBUTES;
            let last = (first + CHUNK_ATTRIBUTES).min(attributes);
            let mut text = String::with_capacity(CHUNK_ATTRIBUTES * 420);
            for index in first..last {
                if index > 0 {
                    text.push(',');
                }
                text.push_str(&attribute(index, now));
            }
            text.into_bytes()
        };
        lock(&counted).page_bytes += bytes.len();
        Ok::<Bytes, std::io::Error>(Bytes::from(bytes))
    });
    builder.body(Body::from_stream(body)).unwrap_or_default()
}

/// One attribute in MISP's shape: an IPv4 destination, a domain or a SHA-256.
fn attribute(index: usize, now: i64) -> String {
    let (kind, category, value) = match index % 3 {
        0 => (
            "ip-dst",
            "Network activity",
            format!("10.{}.{}.{}", index >> 16 & 255, index >> 8 & 255, index & 255),
        ),
        1 => ("domain", "Network activity", format!("host-{index}.example.net")),
        _ => ("sha256", "Payload delivery", format!("{index:064x}")),
    };
    json!({
        "id": (index + 1).to_string(), "type": kind, "category": category, "to_ids": true,
        "uuid": attribute_uuid(index), "event_id": "1", "distribution": "5",
        "timestamp": now.to_string(), "comment": "", "sharing_group_id": "0", "deleted": false,
        "disable_correlation": false, "object_id": "0", "object_relation": null,
        "first_seen": null, "last_seen": null, "value": value,
    })
    .to_string()
}
