//! The agent's Prometheus metrics. Other crates register theirs in
//! `prometheus::default_registry()`, which `/metrics` serves with no wiring;
//! the pipelines' metrics are read from their telemetry (the counters
//! `/`, `/healthz` and the run summary read too) when `/metrics` is
//! scraped, so nothing is counted twice. Every metric is listed in
//! `docs/operations.md`.

use std::sync::OnceLock;

use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::running::Status;

/// The metrics the agent keeps itself (not per pipeline).
pub struct AgentMetrics {
    /// `threatbeat_config_reloads_total{result}`: modules.d reloads, by result.
    pub reloads: IntCounterVec,
}

/// The agent's metrics, registered on first use.
pub fn agent() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let reloads = IntCounterVec::new(
            Opts::new(
                "threatbeat_config_reloads_total",
                "Reloads of modules.d that changed something, by result (success, error).",
            ),
            &["result"],
        )
        .expect("a valid metric definition");
        // Registration fails only for a duplicate name, which `OnceLock` rules out;
        // the metric still counts, it is just not exported then.
        if let Err(error) = prometheus::default_registry().register(Box::new(reloads.clone())) {
            tracing::warn!(%error, "a metric could not be registered");
        }
        AgentMetrics { reloads }
    })
}

/// Everything in the default registry and the pipelines' metrics of
/// `status`, in the Prometheus text format.
pub fn render(status: &Status) -> String {
    let mut families = prometheus::default_registry().gather();
    families.extend(pipeline_families(status));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|error| format!("# encoding the metrics failed: {error}\n"))
}

/// The pipelines' series, labelled by `pipeline` (`module/fileset`): every
/// running pipeline has all of them, at zero before anything happened, and
/// a pipeline a reload stopped keeps its counts (added to those of the one
/// started again under its id) with `up` at 0.
fn pipeline_families(status: &Status) -> Vec<MetricFamily> {
    let registry = Registry::new();
    let label = &["pipeline"];
    let counter = |name: &str, help: &str| {
        let counter = IntCounterVec::new(Opts::new(name, help), label).expect("a valid metric definition");
        let _ = registry.register(Box::new(counter.clone()));
        counter
    };
    let published = counter(
        "threatbeat_pipeline_events_published_total",
        "Events the output or the queue accepted.",
    );
    let dropped = counter(
        "threatbeat_pipeline_events_dropped_total",
        "Events dropped by processors (drop_event, expiry policy).",
    );
    let failed = counter(
        "threatbeat_pipeline_batches_failed_total",
        "Batches not written (refused by the output or queue, or their state or cursor not stored); their cursor did not move.",
    );
    let cursor_commits = counter(
        "threatbeat_pipeline_cursor_commits_total",
        "Cursors stored after their batch was durable.",
    );
    let panics = counter(
        "threatbeat_pipeline_panics_total",
        "Panics caught in the pipeline's input (restarted after a backoff) or processors (the event is set aside).",
    );
    let last_publish = GaugeVec::new(
        Opts::new(
            "threatbeat_pipeline_last_publish_timestamp_seconds",
            "Unix time of the last batch the output accepted.",
        ),
        label,
    )
    .expect("a valid metric definition");
    let _ = registry.register(Box::new(last_publish.clone()));
    let up = IntGaugeVec::new(
        Opts::new(
            "threatbeat_pipeline_up",
            "1 while the pipeline's input runs, else 0.",
        ),
        label,
    )
    .expect("a valid metric definition");
    let _ = registry.register(Box::new(up.clone()));

    let running = status.pipelines();
    let mut stopped = status.stopped();
    let ids: std::collections::BTreeSet<String> = running.keys().chain(stopped.keys()).cloned().collect();
    for id in ids {
        let earlier = stopped.remove(&id).unwrap_or_default();
        let telemetry = running.get(&id);
        let counts = telemetry.map_or(earlier.counts, |telemetry| {
            earlier.counts.plus(telemetry.counts())
        });
        let label = [id.as_str()];
        published.with_label_values(&label).inc_by(counts.published);
        dropped.with_label_values(&label).inc_by(counts.dropped);
        failed.with_label_values(&label).inc_by(counts.failed_batches);
        cursor_commits
            .with_label_values(&label)
            .inc_by(counts.cursor_commits);
        panics.with_label_values(&label).inc_by(counts.panics);
        up.with_label_values(&label).set(i64::from(
            telemetry.is_some_and(|telemetry| telemetry.input_running()),
        ));
        let last = telemetry
            .and_then(|telemetry| telemetry.last_publish())
            .or(earlier.last_publish);
        last_publish
            .with_label_values(&label)
            .set(last.map_or(0.0, |seconds| seconds as f64));
    }
    registry.gather()
}

/// The value of the sample `series` (name and labels, as the text format
/// writes them) in `text`, if it is there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::{PipelineEvent, PipelineTelemetry};

    #[test]
    fn pipeline_metrics_are_read_from_their_telemetry() {
        let status = Status::new("test output".into());
        let telemetry = std::sync::Arc::new(PipelineTelemetry::new("unit/test"));
        status.insert_for_tests("unit/test", std::sync::Arc::clone(&telemetry));
        let text = render(&status);
        // Every series exists at zero before anything happened.
        let series = |name: &str| format!("{name}{{pipeline=\"unit/test\"}}");
        assert_eq!(
            sample(&text, &series("threatbeat_pipeline_events_published_total")),
            Some(0.0),
            "{text}"
        );
        assert_eq!(sample(&text, &series("threatbeat_pipeline_up")), Some(0.0));

        telemetry.record(PipelineEvent::InputRunning { restarted: false });
        telemetry.record(PipelineEvent::BatchWritten {
            received: 4,
            published: 3,
            cursor_stored: true,
            duration: Duration::ZERO,
        });
        let text = render(&status);
        assert_eq!(
            sample(&text, &series("threatbeat_pipeline_events_published_total")),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &series("threatbeat_pipeline_events_dropped_total")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &series("threatbeat_pipeline_cursor_commits_total")),
            Some(1.0)
        );
        assert_eq!(sample(&text, &series("threatbeat_pipeline_up")), Some(1.0));

        // Stopped by a reload and started again: the counters go on from there.
        status.remove_for_tests("unit/test");
        let text = render(&status);
        assert_eq!(
            sample(&text, &series("threatbeat_pipeline_events_published_total")),
            Some(3.0)
        );
        assert_eq!(sample(&text, &series("threatbeat_pipeline_up")), Some(0.0));
        let again = std::sync::Arc::new(PipelineTelemetry::new("unit/test"));
        again.record(PipelineEvent::BatchWritten {
            received: 2,
            published: 2,
            cursor_stored: false,
            duration: Duration::ZERO,
        });
        status.insert_for_tests("unit/test", again);
        let text = render(&status);
        assert_eq!(
            sample(&text, &series("threatbeat_pipeline_events_published_total")),
            Some(5.0)
        );
    }
}
