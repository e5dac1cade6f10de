//! Prometheus metrics of the inputs, registered in `prometheus::default_registry()`
//! (the agent's `/metrics` serves that registry), labelled by `pipeline`
//! (`InputContext.id`). Every metric is listed in `docs/operations.md`.

use std::sync::OnceLock;

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

struct Families {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    pages: IntCounterVec,
    events: IntCounterVec,
    rejected: IntCounterVec,
    last_success: GaugeVec,
    cursor_lag: GaugeVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let pipeline = &["pipeline"];
        Families {
            requests: register(
                IntCounterVec::new(
                    Opts::new(
                        "threatbeat_input_requests_total",
                        "HTTP requests of the input, by status code (or error when no answer came).",
                    ),
                    &["pipeline", "status"],
                )
                .expect("a valid metric definition"),
            ),
            request_duration: register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "threatbeat_input_request_duration_seconds",
                        "Duration of the input's HTTP requests, until the whole body is read.",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            pages: register(
                IntCounterVec::new(
                    Opts::new(
                        "threatbeat_input_pages_total",
                        "Pages (successful responses) fetched.",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            events: register(
                IntCounterVec::new(
                    Opts::new(
                        "threatbeat_input_events_total",
                        "Events the input published (before processors).",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            rejected: register(
                IntCounterVec::new(
                    Opts::new(
                        "threatbeat_input_records_rejected_total",
                        "Records set aside in the dead-letter file (a nested split could not cut them).",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            last_success: register(
                GaugeVec::new(
                    Opts::new(
                        "threatbeat_input_last_success_timestamp_seconds",
                        "Unix time at which the last poll completed.",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            cursor_lag: register(
                GaugeVec::new(
                    Opts::new(
                        "threatbeat_input_cursor_lag_seconds",
                        "Now minus the unix timestamp the cursor holds (set when it holds one).",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
        }
    })
}

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    // Registration fails only for a duplicate name, which `OnceLock` rules out;
    // the metric still counts, it is just not exported then.
    if let Err(error) = prometheus::default_registry().register(Box::new(metric.clone())) {
        tracing::warn!(%error, "a metric could not be registered");
    }
    metric
}

/// The rejected-records counter of `pipeline`.
pub fn records_rejected(pipeline: &str) -> IntCounter {
    families().rejected.with_label_values(&[pipeline])
}

/// Now as unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// One pipeline's input metrics, with the labelled handles resolved once.
#[derive(Clone)]
pub struct InputMetrics {
    pipeline: String,
    request_duration: Histogram,
    pages: IntCounter,
    events: IntCounter,
    last_success: Gauge,
    cursor_lag: Gauge,
}

impl std::fmt::Debug for InputMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputMetrics")
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl InputMetrics {
    /// The handles of `pipeline`; its counters show `0` from now on.
    pub fn new(pipeline: &str) -> Self {
        let families = families();
        let label = [pipeline];
        Self {
            pipeline: pipeline.to_owned(),
            request_duration: families.request_duration.with_label_values(&label),
            pages: families.pages.with_label_values(&label),
            events: families.events.with_label_values(&label),
            last_success: families.last_success.with_label_values(&label),
            cursor_lag: families.cursor_lag.with_label_values(&label),
        }
    }

    /// One HTTP answer with `status` (`None`: no answer, a transport error).
    pub fn record_request(&self, status: Option<u16>, seconds: f64) {
        let status = status.map_or_else(|| "error".to_owned(), |code| code.to_string());
        families()
            .requests
            .with_label_values(&[self.pipeline.as_str(), status.as_str()])
            .inc();
        self.request_duration.observe(seconds);
    }

    /// One page fetched.
    pub fn record_page(&self) {
        self.pages.inc();
    }

    /// `count` events published.
    pub fn record_events(&self, count: usize) {
        self.events.inc_by(count as u64);
    }

    /// A poll completed at `now` (unix seconds); `cursor_timestamp` is the
    /// unix timestamp the cursor holds, if any.
    pub fn record_poll_success(&self, now: f64, cursor_timestamp: Option<i64>) {
        self.last_success.set(now);
        if let Some(timestamp) = cursor_timestamp {
            self.cursor_lag.set((now - timestamp as f64).max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_under_their_pipeline_label() {
        let metrics = InputMetrics::new("unit/inputs");
        metrics.record_request(Some(200), 0.01);
        metrics.record_request(None, 0.02);
        metrics.record_page();
        metrics.record_events(5);
        metrics.record_poll_success(1_000.0, Some(900));
        let requests = &families().requests;
        assert_eq!(requests.with_label_values(&["unit/inputs", "200"]).get(), 1);
        assert_eq!(requests.with_label_values(&["unit/inputs", "error"]).get(), 1);
        assert_eq!(metrics.pages.get(), 1);
        assert_eq!(metrics.events.get(), 5);
        assert_eq!(metrics.last_success.get(), 1_000.0);
        assert_eq!(metrics.cursor_lag.get(), 100.0);
    }
}
