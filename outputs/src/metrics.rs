//! Prometheus metrics of the Elasticsearch output and the queue, registered in
//! `prometheus::default_registry()` (the agent's `/metrics` serves that registry).
//! They are updated where the `stats()` counters are, so both always agree.
//! Every metric is listed in `docs/operations.md`.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// Metrics of the Elasticsearch output. Per-result handles are resolved once.
pub struct OutputMetrics {
    /// `threatbeat_output_bulk_requests_total{status}`: HTTP status, or `error`.
    pub bulk_requests: IntCounterVec,
    /// `threatbeat_output_events_total{result="acked"}`.
    pub events_acked: IntCounter,
    /// `threatbeat_output_events_total{result="duplicate"}` (409 on create).
    pub events_duplicate: IntCounter,
    /// `threatbeat_output_events_total{result="already_deleted"}` (404 on delete).
    pub events_already_deleted: IntCounter,
    /// `threatbeat_output_events_total{result="update_missing"}` (404 on update).
    pub events_update_missing: IntCounter,
    /// `threatbeat_output_events_total{result="retried"}`.
    pub events_retried: IntCounter,
    /// `threatbeat_output_events_total{result="dead_lettered"}`.
    pub events_dead_lettered: IntCounter,
    /// `threatbeat_output_events_total{result="dropped"}`.
    pub events_dropped: IntCounter,
    /// `threatbeat_output_bulk_duration_seconds`: one observation per bulk request.
    pub bulk_duration: Histogram,
    /// `threatbeat_output_write_bytes_total`: request body bytes sent (after compression).
    pub write_bytes: IntCounter,
}

/// The output's metrics, registered on first use.
pub fn output() -> &'static OutputMetrics {
    static METRICS: OnceLock<OutputMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let events = counter_vec(
            "threatbeat_output_events_total",
            "Event send attempts by result (acked, duplicate, already_deleted, update_missing, retried, dead_lettered, dropped).",
            &["result"],
        );
        let result = |name: &str| events.with_label_values(&[name]);
        OutputMetrics {
            bulk_requests: counter_vec(
                "threatbeat_output_bulk_requests_total",
                "Bulk requests sent to Elasticsearch, by HTTP status (or error when no answer came).",
                &["status"],
            ),
            events_acked: result("acked"),
            events_duplicate: result("duplicate"),
            events_already_deleted: result("already_deleted"),
            events_update_missing: result("update_missing"),
            events_retried: result("retried"),
            events_dead_lettered: result("dead_lettered"),
            events_dropped: result("dropped"),
            bulk_duration: register(
                Histogram::with_opts(HistogramOpts::new(
                    "threatbeat_output_bulk_duration_seconds",
                    "Duration of bulk requests, from sending to the whole answer read.",
                ))
                .expect("a valid metric definition"),
            ),
            write_bytes: register(
                IntCounter::new(
                    "threatbeat_output_write_bytes_total",
                    "Request body bytes sent to Elasticsearch (after compression).",
                )
                .expect("a valid metric definition"),
            ),
        }
    })
}

/// Metrics of the queue, labelled by `queue` (`disk` or `mem`).
pub struct QueueMetrics {
    /// `threatbeat_queue_events`: events pushed and not yet acknowledged.
    pub events: IntGaugeVec,
    /// `threatbeat_queue_bytes`: bytes of those events on disk.
    pub bytes: IntGaugeVec,
    /// `threatbeat_queue_oldest_event_age_seconds`: 0 when empty.
    pub oldest_event_age: IntGaugeVec,
    /// `threatbeat_queue_events_added_total`.
    pub added: IntCounterVec,
    /// `threatbeat_queue_events_acked_total`.
    pub acked: IntCounterVec,
}

/// The events every queue holds un-acknowledged: the backlog an output
/// logs when it recovers. Reads the existing series only.
pub fn queue_pending_events() -> u64 {
    use prometheus::core::Collector;
    queue()
        .events
        .collect()
        .iter()
        .flat_map(|family| {
            family
                .get_metric()
                .iter()
                .map(|metric| metric.get_gauge().get_value().max(0.0) as u64)
        })
        .sum()
}

/// The queue's metrics, registered on first use.
pub fn queue() -> &'static QueueMetrics {
    static METRICS: OnceLock<QueueMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let labels = &["queue"];
        QueueMetrics {
            events: gauge_vec(
                "threatbeat_queue_events",
                "Events in the queue not yet acknowledged.",
                labels,
            ),
            bytes: gauge_vec(
                "threatbeat_queue_bytes",
                "Bytes on disk of the events not yet acknowledged (0 for the memory queue).",
                labels,
            ),
            oldest_event_age: gauge_vec(
                "threatbeat_queue_oldest_event_age_seconds",
                "Age of the oldest unacknowledged event (0 when the queue is empty).",
                labels,
            ),
            added: counter_vec(
                "threatbeat_queue_events_added_total",
                "Events made durable in the queue.",
                labels,
            ),
            acked: counter_vec(
                "threatbeat_queue_events_acked_total",
                "Events freed from the queue after the output accepted them.",
                labels,
            ),
        }
    })
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition"))
}

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    // Registration fails only for a duplicate name, which `OnceLock` rules out;
    // the metric still counts, it is just not exported then.
    if let Err(error) = prometheus::default_registry().register(Box::new(metric.clone())) {
        tracing::warn!(%error, "a metric could not be registered");
    }
    metric
}
