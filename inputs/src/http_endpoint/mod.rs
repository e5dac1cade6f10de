//! The `http_endpoint` input: an HTTP(S) listener that receives JSON or
//! NDJSON records pushed by a sender (a webhook, ThreatStream's integrator).
//!
//! Option names and answers follow Filebeat's input of the same name. The
//! guarantee is stronger: a request is answered 2xx only once every record
//! it carried is durable in the pipeline's queue (`Publisher::publish`
//! returned), so a sender that retries everything not acknowledged loses
//! nothing. A request is all or nothing: it is authenticated, read and
//! decoded completely before any record is published. See
//! `docs/inputs/http_endpoint.md`.

pub mod auth;
pub mod body;
pub mod listener;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use threatbeat_core::{
    Batch, BuildContext, ConfigError, Event, Input, InputContext, InputError, PluginConfig, PublishError,
    Publisher,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::auth::{HmacConfig, SecretConfig};
use self::body::{decode_records, gunzip, BodyError};
use self::listener::{EndpointListener, Remote, ServerTlsSettings};
use crate::metrics::{unix_now, InputMetrics};

/// How long requests already being handled may take to finish once the
/// input is asked to stop; new ones are answered 503 meanwhile.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The `http_endpoint` input config (Filebeat's names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpointConfig {
    /// Address to bind (an IP or a host name). Default `127.0.0.1`.
    #[serde(default = "default_listen_address")]
    pub listen_address: String,
    /// Port to bind. Default `8000`; `0` picks a free port (tests).
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// The path records are posted to. Default `/`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The field each record is stored under. Default `json`; `""` puts
    /// the record's fields at the root of the event.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The `Content-Type` requests must have (media type, parameters
    /// ignored). Default `application/json`; `""` accepts any.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The status of a successful answer (2xx). Default 200.
    #[serde(default = "default_response_code")]
    pub response_code: u16,
    /// The body of a successful answer. Default `{"message": "success"}`.
    #[serde(default = "default_response_body")]
    pub response_body: String,
    /// A header that must hold a shared secret.
    #[serde(default)]
    pub secret: Option<SecretConfig>,
    /// An HMAC signature of the body that must match.
    #[serde(default)]
    pub hmac: Option<HmacConfig>,
    /// Serve HTTPS (`ssl.certificate`, `ssl.key`, ...).
    #[serde(default)]
    pub ssl: Option<ServerTlsSettings>,
    /// Largest body accepted, compressed or not; larger ones get 413.
    /// Default 10 MiB. (threatbeat's; Filebeat has no such limit.)
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Keep each record's JSON text in `event.original`.
    #[serde(default)]
    pub preserve_original_event: bool,
}

fn default_listen_address() -> String {
    "127.0.0.1".to_owned()
}
fn default_listen_port() -> u16 {
    8000
}
fn default_url() -> String {
    "/".to_owned()
}
fn default_prefix() -> String {
    "json".to_owned()
}
fn default_content_type() -> String {
    "application/json".to_owned()
}
fn default_response_code() -> u16 {
    200
}
fn default_response_body() -> String {
    r#"{"message": "success"}"#.to_owned()
}
fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

/// Media types whose bodies are read line by line.
const NDJSON_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
];

/// What every request is checked against, built once.
#[derive(Debug)]
struct Endpoint {
    path: String,
    prefix: Option<String>,
    content_type: Option<String>,
    response_code: StatusCode,
    response_body: Bytes,
    secret: Option<SecretConfig>,
    hmac: Option<HmacConfig>,
    max_body_bytes: usize,
    preserve_original_event: bool,
}

/// The built input.
pub struct HttpEndpointInput {
    listen_address: String,
    listen_port: u16,
    tls: Option<TlsAcceptor>,
    endpoint: Arc<Endpoint>,
}

/// Registry factory for `type: http_endpoint`.
pub fn build(config: &PluginConfig, context: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(HttpEndpointInput::build(config, context)?))
}

impl HttpEndpointInput {
    /// Checks the config and loads the TLS material (nothing is bound yet:
    /// `test config` must not take the port).
    pub fn build(raw: &PluginConfig, context: &BuildContext) -> Result<Self, ConfigError> {
        let config: HttpEndpointConfig = raw.parse()?;
        let origin = &raw.origin;
        if config.listen_address.trim().is_empty() {
            return Err(origin.child("listen_address").error("must not be empty"));
        }
        if !config.url.starts_with('/') {
            return Err(origin
                .child("url")
                .error(format!("`{}` must be a path starting with `/`", config.url)));
        }
        let response_code = StatusCode::from_u16(config.response_code)
            .ok()
            .filter(StatusCode::is_success)
            .ok_or_else(|| {
                origin
                    .child("response_code")
                    .error("must be a 2xx status: senders retry anything else, and the records were stored")
            })?;
        if config.max_body_bytes == 0 {
            return Err(origin.child("max_body_bytes").error("must be greater than zero"));
        }
        if let Some(secret) = &config.secret {
            check_header_name(&secret.header, &origin.child("secret.header"))?;
            if secret.value.is_empty() {
                return Err(origin.child("secret.value").error("must not be empty"));
            }
        }
        if let Some(hmac) = &config.hmac {
            check_header_name(&hmac.header, &origin.child("hmac.header"))?;
            if hmac.key.is_empty() {
                return Err(origin.child("hmac.key").error("must not be empty"));
            }
        }
        let tls = match &config.ssl {
            Some(settings) => settings.load(&context.config_path, &origin.child("ssl"))?,
            None => None,
        };
        let content_type = Some(media_type(&config.content_type)).filter(|media| !media.is_empty());
        let prefix = Some(config.prefix.clone()).filter(|prefix| !prefix.is_empty());
        Ok(Self {
            listen_address: config.listen_address,
            listen_port: config.listen_port,
            tls,
            endpoint: Arc::new(Endpoint {
                path: config.url,
                prefix,
                content_type,
                response_code,
                response_body: Bytes::from(config.response_body),
                secret: config.secret,
                hmac: config.hmac,
                max_body_bytes: config.max_body_bytes,
                preserve_original_event: config.preserve_original_event,
            }),
        })
    }
}

fn check_header_name(name: &str, origin: &threatbeat_core::Origin) -> Result<(), ConfigError> {
    header::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| origin.error(format!("`{name}` is not a valid header name")))
}

/// `application/json; charset=utf-8` -> `application/json`.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// What the request handler shares.
struct Shared {
    id: String,
    endpoint: Arc<Endpoint>,
    publisher: Publisher,
    shutdown: CancellationToken,
    metrics: InputMetrics,
}

#[async_trait]
impl Input for HttpEndpointInput {
    async fn run(self: Box<Self>, context: InputContext) -> Result<(), InputError> {
        if context.run_once {
            // A push input has no "one pass": it would have to guess when the
            // sender is done. Say so instead of blocking `--once`.
            tracing::warn!(input = %context.id, "http_endpoint receives pushed records; `run --once` does not start it");
            return Ok(());
        }
        let address = (self.listen_address.as_str(), self.listen_port);
        let socket = tokio::net::TcpListener::bind(address).await.map_err(|error| {
            InputError::Fatal(format!(
                "{}: cannot listen on {}:{}: {error}",
                context.id, self.listen_address, self.listen_port
            ))
        })?;
        let listener = EndpointListener::start(socket, self.tls.clone(), context.id.clone())
            .map_err(|error| InputError::Fatal(format!("{}: {error}", context.id)))?;
        let local = axum::serve::Listener::local_addr(&listener)
            .map_err(|error| InputError::Fatal(format!("{}: {error}", context.id)))?;
        tracing::info!(
            input = %context.id,
            address = %local,
            path = %self.endpoint.path,
            tls = self.tls.is_some(),
            "http_endpoint listening"
        );
        let shared = Arc::new(Shared {
            id: context.id.clone(),
            endpoint: Arc::clone(&self.endpoint),
            publisher: context.publisher.clone(),
            shutdown: context.shutdown.clone(),
            metrics: InputMetrics::new(&context.id),
        });
        let router = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        // Once shutdown starts, the server stops accepting and closes idle
        // connections; requests in flight finish (their batches are being
        // made durable and deserve their answer) for up to SHUTDOWN_GRACE.
        let shutdown = context.shutdown.clone();
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<Remote>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        let outcome = tokio::select! {
            outcome = server.into_future() => Some(outcome),
            () = async {
                context.shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => None,
        };
        drop(shared);
        match outcome {
            Some(Ok(())) => {
                tracing::info!(input = %context.id, "http_endpoint stopped");
                Ok(())
            }
            Some(Err(error)) => Err(InputError::Fatal(format!(
                "{}: server failed: {error}",
                context.id
            ))),
            None => {
                tracing::warn!(input = %context.id, "http_endpoint stopped with requests still in flight; their senders got no answer and will resend");
                Ok(())
            }
        }
    }
}

/// An answer with a JSON `{"message": ...}` body.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "message": message.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(Remote(peer)): ConnectInfo<Remote>,
    request: Request<Body>,
) -> Response {
    let started = Instant::now();
    let response = answer(&shared, peer, request).await;
    shared
        .metrics
        .record_request(Some(response.status().as_u16()), started.elapsed().as_secs_f64());
    response
}

async fn answer(shared: &Shared, peer: SocketAddr, request: Request<Body>) -> Response {
    let endpoint = &shared.endpoint;
    if request.uri().path() != endpoint.path {
        return error(
            StatusCode::NOT_FOUND,
            format!("no endpoint at {}", request.uri().path()),
        );
    }
    if request.method() != Method::POST {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("only POST is accepted, not {}", request.method()),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if shared.shutdown.is_cancelled() {
        return unavailable("the agent is shutting down; retry later");
    }
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if let Some(secret) = &endpoint.secret {
        let sent = headers.get(secret.header.as_str()).map(HeaderValue::as_bytes);
        if let Err(reason) = secret.check(sent) {
            tracing::warn!(input = %shared.id, %peer, %reason, "request refused");
            return error(StatusCode::UNAUTHORIZED, reason.to_string());
        }
    }
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(media_type)
        .unwrap_or_default();
    let ndjson = NDJSON_TYPES.contains(&sent_type.as_str());
    if let Some(expected) = &endpoint.content_type {
        if &sent_type != expected {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("wrong Content-Type header, expecting {expected}"),
            );
        }
    }
    let Some(gzipped) = content_encoding(headers) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Encoding; only gzip is accepted",
        );
    };
    let limit = endpoint.max_body_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return too_large(shared, peer, limit);
    }
    // Chunked bodies have no length: the read stops at the first chunk past the limit.
    let raw = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(ReadError::TooLarge) => return too_large(shared, peer, limit),
        Err(ReadError::Io(failure)) => {
            tracing::warn!(input = %shared.id, %peer, error = %failure, "reading a request body failed");
            return error(StatusCode::BAD_REQUEST, "the request body could not be read");
        }
    };
    if let Some(hmac) = &endpoint.hmac {
        let sent = headers.get(hmac.header.as_str()).map(HeaderValue::as_bytes);
        // The signature covers the body as sent (compressed, if it was).
        if let Err(reason) = hmac.check(sent, &raw) {
            tracing::warn!(input = %shared.id, %peer, %reason, "request refused");
            return error(StatusCode::UNAUTHORIZED, reason.to_string());
        }
    }
    let decoded = if gzipped {
        match gunzip(&raw, limit) {
            Ok(bytes) => Bytes::from(bytes),
            Err(BodyError::TooLarge(_)) => return too_large(shared, peer, limit),
            Err(failure) => return error(StatusCode::BAD_REQUEST, failure.to_string()),
        }
    } else {
        raw
    };
    let records = match decode_records(&decoded, ndjson) {
        Ok(records) => records,
        Err(BodyError::Empty) => return error(StatusCode::NOT_ACCEPTABLE, BodyError::Empty.to_string()),
        Err(failure) => {
            tracing::warn!(input = %shared.id, %peer, error = %failure, "request refused: nothing from it was published");
            return error(StatusCode::BAD_REQUEST, failure.to_string());
        }
    };
    let count = records.len();
    let events: Vec<Event> = records
        .into_iter()
        .map(|record| to_event(endpoint, record))
        .collect();
    if events.is_empty() {
        return success(endpoint);
    }
    match publish(shared, events).await {
        Ok(()) => {
            shared.metrics.record_events(count);
            shared.metrics.record_poll_success(unix_now(), None);
            tracing::debug!(input = %shared.id, %peer, events = count, "records stored");
            success(endpoint)
        }
        Err(PublishError::Closed) => unavailable("the agent is shutting down; retry later"),
        Err(PublishError::Failed(reason)) => {
            tracing::error!(input = %shared.id, %peer, error = %reason, "records could not be stored; the sender is told to retry");
            unavailable("the records could not be stored; retry later")
        }
    }
}

enum ReadError {
    TooLarge,
    Io(axum::Error),
}

/// The whole body, refused as soon as it grows past `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Io)?;
        if buffer.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Hands the batch to the pipeline and waits until it is durable.
async fn publish(shared: &Shared, events: Vec<Event>) -> Result<(), PublishError> {
    shared
        .publisher
        .publish(Batch {
            events,
            ..Batch::default()
        })
        .await
}

/// One record as an event: under `prefix`, with `event.original` when asked.
fn to_event(endpoint: &Endpoint, record: Map<String, Value>) -> Event {
    let original = endpoint
        .preserve_original_event
        .then(|| Value::Object(record.clone()).to_string());
    let mut fields = match &endpoint.prefix {
        Some(prefix) => {
            let mut fields = Map::new();
            fields.insert(prefix.clone(), Value::Object(record));
            fields
        }
        None => record,
    };
    if let Some(original) = original {
        let event = fields.entry("event").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(event) = event {
            event.insert("original".to_owned(), Value::String(original));
        }
    }
    Event::new(fields)
}

/// Whether the body is gzip'd; `None` for anything but gzip or identity.
fn content_encoding(headers: &HeaderMap) -> Option<bool> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Some(false),
        Some(value) => match value.to_str().map(|text| text.trim().to_ascii_lowercase()) {
            Ok(encoding) if encoding == "gzip" || encoding == "x-gzip" => Some(true),
            Ok(encoding) if encoding.is_empty() || encoding == "identity" => Some(false),
            _ => None,
        },
    }
}

fn success(endpoint: &Endpoint) -> Response {
    (
        endpoint.response_code,
        [(header::CONTENT_TYPE, "application/json")],
        endpoint.response_body.clone(),
    )
        .into_response()
}

fn unavailable(message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn too_large(shared: &Shared, peer: SocketAddr, limit: usize) -> Response {
    tracing::warn!(input = %shared.id, %peer, limit, "request refused: body over max_body_bytes");
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::TooLarge(limit).to_string(),
    )
}
