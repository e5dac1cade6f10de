//! Prometheus metrics of the Elasticsearch output and the queue, registered in
//! `prometheus::default_registry()` (the agent's `/metrics` serves that registry).
//! What their `stats()` also report is counted once, by the output and the
//! queue, and read into the registry when it is gathered ([`LiveCounters`]).
//! Every metric is listed in `docs/operations.md`.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts};

use crate::elasticsearch::OutputStats;

/// One object's counts, per series: its label values and its count.
pub(crate) type ReadCounts<T> = fn(&T) -> Vec<(Vec<&'static str>, u64)>;

/// Counters kept once, by the objects that count them (an output's or a
/// queue's stats), and exported by reading them when the registry is
/// gathered: each series is the sum over the live objects. An object that
/// is dropped takes its counts with it (the output and the queue live as
/// long as the agent).
pub(crate) struct LiveCounters<T: Send + Sync + 'static> {
    shared: Arc<LiveShared<T>>,
}

struct LiveShared<T> {
    opts: Opts,
    labels: &'static [&'static str],
    template: IntCounterVec,
    objects: Mutex<Vec<Weak<T>>>,
    read: ReadCounts<T>,
}

impl<T: Send + Sync + 'static> LiveCounters<T> {
    /// Registers the counter family `name` (`labels` named) in the default
    /// registry, read from the objects [`Self::watch`] is given with `read`.
    pub(crate) fn register(
        name: &str,
        help: &str,
        labels: &'static [&'static str],
        read: ReadCounts<T>,
    ) -> Self {
        let opts = Opts::new(name, help);
        let template = IntCounterVec::new(opts.clone(), labels).expect("a valid metric definition");
        let shared = Arc::new(LiveShared {
            opts,
            labels,
            template,
            objects: Mutex::new(Vec::new()),
            read,
        });
        let counters = Self { shared };
        register(counters.clone());
        counters
    }

    /// Counts `object`'s counters in the family from now on.
    pub(crate) fn watch(&self, object: &Arc<T>) {
        self.shared
            .objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::downgrade(object));
    }
}

impl<T: Send + Sync + 'static> Clone for LiveCounters<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Send + Sync + 'static> Collector for LiveCounters<T> {
    fn desc(&self) -> Vec<&Desc> {
        self.shared.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let shared = &self.shared;
        let series =
            IntCounterVec::new(shared.opts.clone(), shared.labels).expect("a valid metric definition");
        let mut objects = shared
            .objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        objects.retain(|object| object.strong_count() > 0);
        for object in objects.iter().filter_map(Weak::upgrade) {
            for (labels, count) in (shared.read)(&object) {
                series.with_label_values(&labels).inc_by(count);
            }
        }
        series.collect()
    }
}

/// Metrics of the Elasticsearch output.
pub struct OutputMetrics {
    /// `threatbeat_output_bulk_requests_total{status}`: HTTP status, or `error`.
    pub bulk_requests: IntCounterVec,
    /// `threatbeat_output_bulk_duration_seconds`: one observation per bulk request.
    pub bulk_duration: Histogram,
    /// `threatbeat_output_events_total{result}` and
    /// `threatbeat_output_write_bytes_total`, read from the outputs' stats.
    events: LiveCounters<OutputStats>,
    write_bytes: LiveCounters<OutputStats>,
}

impl OutputMetrics {
    /// Exports `stats` (an output's counters) in the output's series.
    pub fn watch(&self, stats: &Arc<OutputStats>) {
        self.events.watch(stats);
        self.write_bytes.watch(stats);
    }
}

/// The output's metrics, registered on first use.
pub fn output() -> &'static OutputMetrics {
    static METRICS: OnceLock<OutputMetrics> = OnceLock::new();
    METRICS.get_or_init(|| OutputMetrics {
        bulk_requests: counter_vec(
            "threatbeat_output_bulk_requests_total",
            "Bulk requests sent to Elasticsearch, by HTTP status (or error when no answer came).",
            &["status"],
        ),
        bulk_duration: register(
            Histogram::with_opts(HistogramOpts::new(
                "threatbeat_output_bulk_duration_seconds",
                "Duration of bulk requests, from sending to the whole answer read.",
            ))
            .expect("a valid metric definition"),
        ),
        events: LiveCounters::register(
            "threatbeat_output_events_total",
            "Event send attempts by result (acked, duplicate, already_deleted, update_missing, retried, dead_lettered, dropped).",
            &["result"],
            |stats| {
                let counts = stats.snapshot();
                [
                    ("acked", counts.acked),
                    ("duplicate", counts.duplicates),
                    ("already_deleted", counts.already_deleted),
                    ("update_missing", counts.update_missing),
                    ("retried", counts.retried),
                    ("dead_lettered", counts.dead_lettered),
                    ("dropped", counts.dropped),
                ]
                .into_iter()
                .map(|(result, count)| (vec![result], count))
                .collect()
            },
        ),
        write_bytes: LiveCounters::register(
            "threatbeat_output_write_bytes_total",
            "Request body bytes sent to Elasticsearch (after compression).",
            &[],
            |stats| vec![(Vec::new(), stats.snapshot().bytes_written)],
        ),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn value(name: &str) -> Option<u64> {
        prometheus::default_registry()
            .gather()
            .into_iter()
            .find(|family| family.name() == name)
            .and_then(|family| {
                family
                    .get_metric()
                    .first()
                    .map(|metric| metric.get_counter().get_value() as u64)
            })
    }

    #[test]
    fn live_counters_sum_the_objects_that_count_and_forget_dropped_ones() {
        let counters = LiveCounters::register(
            "threatbeat_unit_live_counters_total",
            "A unit test's counter.",
            &["kind"],
            |count: &AtomicU64| vec![(vec!["one"], count.load(Ordering::Relaxed))],
        );
        let first = Arc::new(AtomicU64::new(2));
        let second = Arc::new(AtomicU64::new(3));
        counters.watch(&first);
        counters.watch(&second);
        assert_eq!(value("threatbeat_unit_live_counters_total"), Some(5));
        first.fetch_add(10, Ordering::Relaxed);
        assert_eq!(value("threatbeat_unit_live_counters_total"), Some(15));
        drop(second);
        assert_eq!(value("threatbeat_unit_live_counters_total"), Some(12));
    }
}
