//! The monitoring endpoint (`http.enabled`, `http.host`, `http.port`, as in
//! Beats): `GET /metrics` (Prometheus text), `GET /` (a JSON summary like
//! Beats' stats) and `GET /healthz` (200, or 503 with the reasons).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::HttpSettings;
use crate::running::Status;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (http.host, http.port): {source}")]
pub struct HttpError {
    /// `host:port`.
    pub address: String,
    /// The bind error.
    pub source: std::io::Error,
}

/// Binds `http.host:http.port` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    settings: &HttpSettings,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<std::net::SocketAddr, HttpError> {
    let address = format!("{}:{}", settings.host, settings.port);
    let listener = TcpListener::bind(&address).await.map_err(|source| HttpError {
        address: address.clone(),
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| HttpError {
        address: address.clone(),
        source,
    })?;
    let app = router(status);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the monitoring endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "monitoring endpoint listening (/, /metrics, /healthz)");
    Ok(bound)
}

/// The endpoint's routes.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/", get(summary))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .with_state(status)
}

async fn metrics(State(status): State<Arc<Status>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(&status),
    )
        .into_response()
}

async fn summary(State(status): State<Arc<Status>>) -> Json<Value> {
    let now = SystemTime::now();
    let uptime = now.duration_since(status.started).unwrap_or_default();
    let pipelines: serde_json::Map<String, Value> = status
        .pipelines()
        .into_iter()
        .map(|(id, telemetry)| {
            let counts = telemetry.counts();
            let value = json!({
                "running": telemetry.input_running(),
                "events": {
                    "published": counts.published,
                    "dropped": counts.dropped,
                },
                "batches": {"failed": counts.failed_batches},
                "cursor_commits": counts.cursor_commits,
                "last_publish": telemetry.last_publish(),
                "last_failure": telemetry.last_failure(),
            });
            (id, value)
        })
        .collect();
    Json(json!({
        "beat": {
            "name": "threatbeat",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime": {"ms": uptime.as_millis() as u64},
            "started": status.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        },
        "output": {"description": status.output_description},
        "pipelines": pipelines,
    }))
}

async fn health(State(status): State<Arc<Status>>) -> Response {
    let problems = health_problems(&status);
    let (code, body) = match problems.is_empty() {
        true => (StatusCode::OK, json!({"status": "ok"})),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unhealthy", "reasons": problems}),
        ),
    };
    (code, Json(body)).into_response()
}

/// Why the agent is unhealthy: a pipeline whose input stopped, or whose last
/// batch the output (or queue) refused, or a queue whose oldest event has
/// waited longer than `http.max_queue_age` (the output keeps failing while
/// the queue absorbs it). Empty when healthy.
pub fn health_problems(status: &Status) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(limit) = status.max_queue_age {
        let age = status.oldest_queued_event_age();
        if age > limit {
            problems.push(format!(
                "output: the oldest queued event has waited {}s, longer than http.max_queue_age ({}s); \
                 the output keeps failing (is Elasticsearch reachable, are the credentials valid?)",
                age.as_secs(),
                limit.as_secs()
            ));
        }
    }
    for (id, telemetry) in status.pipelines() {
        if !telemetry.input_running() {
            problems.push(format!("pipeline {id}: its input stopped"));
        }
        if let Some(failure) = telemetry.last_failure() {
            problems.push(format!(
                "pipeline {id}: the last batch was not written: {failure}"
            ));
        }
    }
    problems
}
