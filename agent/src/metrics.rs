//! The agent's Prometheus metrics, registered in `prometheus::default_registry()`
//! so other crates can add theirs there and `/metrics` serves them with no wiring.
//! Every metric is listed in `docs/operations.md`.

use std::sync::OnceLock;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

/// The metrics the agent itself produces, labelled by `pipeline` (`module/fileset`).
pub struct AgentMetrics {
    /// `threatbeat_pipeline_events_published_total`: events the output (or queue) accepted.
    pub events_published: IntCounterVec,
    /// `threatbeat_pipeline_events_dropped_total`: events dropped by processors.
    pub events_dropped: IntCounterVec,
    /// `threatbeat_pipeline_batches_failed_total`: batches the output refused.
    pub batches_failed: IntCounterVec,
    /// `threatbeat_pipeline_cursor_commits_total`: cursors stored.
    pub cursor_commits: IntCounterVec,
    /// `threatbeat_pipeline_panics_total`: inputs and processors that panicked.
    pub panics: IntCounterVec,
    /// `threatbeat_pipeline_last_publish_timestamp_seconds`: when a batch last went out.
    pub last_publish: GaugeVec,
    /// `threatbeat_pipeline_up`: 1 while the pipeline's input runs.
    pub pipeline_up: IntGaugeVec,
    /// `threatbeat_config_reloads_total{result}`: modules.d reloads, by result.
    pub reloads: IntCounterVec,
}

impl AgentMetrics {
    /// Creates every series of `pipeline` at zero, so dashboards and alerts see
    /// `0` rather than no data before the first failure.
    pub fn init_pipeline(&self, pipeline: &str) {
        let label = [pipeline];
        for counter in [
            &self.events_published,
            &self.events_dropped,
            &self.batches_failed,
            &self.cursor_commits,
            &self.panics,
        ] {
            counter.with_label_values(&label);
        }
        self.last_publish.with_label_values(&label);
    }
}

/// The agent's metrics, registered on first use.
pub fn agent() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let pipeline = &["pipeline"];
        AgentMetrics {
            events_published: counter(
                "threatbeat_pipeline_events_published_total",
                "Events the output or the queue accepted.",
                pipeline,
            ),
            events_dropped: counter(
                "threatbeat_pipeline_events_dropped_total",
                "Events dropped by processors (drop_event, expiry policy).",
                pipeline,
            ),
            batches_failed: counter(
                "threatbeat_pipeline_batches_failed_total",
                "Batches the output refused; their cursor did not move.",
                pipeline,
            ),
            cursor_commits: counter(
                "threatbeat_pipeline_cursor_commits_total",
                "Cursors stored after their batch was durable.",
                pipeline,
            ),
            panics: counter(
                "threatbeat_pipeline_panics_total",
                "Panics caught in the pipeline's input (restarted after a backoff) or processors (the event is set aside).",
                pipeline,
            ),
            last_publish: register(
                GaugeVec::new(
                    Opts::new(
                        "threatbeat_pipeline_last_publish_timestamp_seconds",
                        "Unix time of the last batch the output accepted.",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            pipeline_up: register(
                IntGaugeVec::new(
                    Opts::new(
                        "threatbeat_pipeline_up",
                        "1 while the pipeline's input runs, else 0.",
                    ),
                    pipeline,
                )
                .expect("a valid metric definition"),
            ),
            reloads: counter(
                "threatbeat_config_reloads_total",
                "Reloads of modules.d that changed something, by result (success, error).",
                &["result"],
            ),
        }
    })
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition"))
}

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    // Registration fails only for a duplicate name, which `OnceLock` rules out;
    // the metric still counts, it is just not exported then.
    if let Err(error) = prometheus::default_registry().register(Box::new(metric.clone())) {
        tracing::warn!(%error, "a metric could not be registered");
    }
    metric
}

/// Everything in the default registry, in the Prometheus text format.
pub fn render() -> String {
    let families = prometheus::default_registry().gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|error| format!("# encoding the metrics failed: {error}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_metrics_render_with_labels() {
        agent()
            .events_published
            .with_label_values(&["unit/test"])
            .inc_by(3);
        agent().pipeline_up.with_label_values(&["unit/test"]).set(1);
        let text = render();
        assert!(
            text.contains("threatbeat_pipeline_events_published_total{pipeline=\"unit/test\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("threatbeat_pipeline_up{pipeline=\"unit/test\"} 1"),
            "{text}"
        );
    }
}
