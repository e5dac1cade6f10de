//! The queue's Prometheus gauges, with what the age gauge needs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use super::settings::QueueKind;
use crate::metrics;

/// The queue's Prometheus gauges (resolved once) and what the age gauge needs:
/// when each push happened, keyed by the running count of pushed events.
pub(super) struct QueueGauges {
    events: IntGauge,
    bytes: IntGauge,
    oldest_age: IntGauge,
    /// `disk` or `mem`, the queue's label in every series.
    pub(super) label: &'static str,
    /// `(pushed events through this push, when)`, oldest first; entries whose
    /// events are all acknowledged are removed on refresh.
    arrivals: Mutex<VecDeque<(u64, Instant)>>,
    pushed_total: AtomicU64,
    /// The age last computed, in seconds, for readers that must not wait.
    oldest_age_seconds: AtomicU64,
}

impl QueueGauges {
    /// The handles of `kind`; `pending_at_open` events were left by a previous run.
    pub(super) fn new(kind: &QueueKind, pending_at_open: u64) -> Self {
        let kind = match kind {
            QueueKind::Disk(_) => "disk",
            QueueKind::Mem(_) => "mem",
        };
        let label = [kind];
        let metrics = metrics::queue();
        let mut arrivals = VecDeque::new();
        if pending_at_open > 0 {
            // Their real age is unknown: count it from the start of this run.
            arrivals.push_back((pending_at_open, Instant::now()));
        }
        Self {
            events: metrics.events.with_label_values(&label),
            bytes: metrics.bytes.with_label_values(&label),
            oldest_age: metrics.oldest_event_age.with_label_values(&label),
            label: kind,
            arrivals: Mutex::new(arrivals),
            pushed_total: AtomicU64::new(pending_at_open),
            oldest_age_seconds: AtomicU64::new(0),
        }
    }

    /// `count` events were made durable now.
    pub(super) fn record_push(&self, count: u64) {
        let mut arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let through = self.pushed_total.fetch_add(count, Ordering::Relaxed) + count;
        arrivals.push_back((through, Instant::now()));
    }

    /// Sets depth and age from the store's pending counts; returns the age set.
    pub(super) fn refresh(&self, pending_events: u64, pending_bytes: u64) -> i64 {
        self.events.set(pending_events as i64);
        self.bytes.set(pending_bytes as i64);
        let mut arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let consumed = self
            .pushed_total
            .load(Ordering::Relaxed)
            .saturating_sub(pending_events);
        while arrivals.front().is_some_and(|(through, _)| *through <= consumed) {
            arrivals.pop_front();
        }
        let age = match arrivals.front() {
            Some((_, at)) if pending_events > 0 => at.elapsed().as_secs() as i64,
            _ => 0,
        };
        self.oldest_age.set(age);
        self.oldest_age_seconds
            .store(age.max(0) as u64, Ordering::Relaxed);
        age
    }

    /// The age [`Self::refresh`] last computed.
    pub(super) fn oldest_event_age(&self) -> Duration {
        Duration::from_secs(self.oldest_age_seconds.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(gauges: &QueueGauges) -> Vec<u64> {
        gauges
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|(through, _)| *through)
            .collect()
    }

    #[test]
    fn the_age_follows_the_oldest_unacknowledged_push() {
        let gauges = QueueGauges::new(&QueueKind::Mem(100), 2);
        gauges.record_push(3);
        gauges.record_push(4);
        assert_eq!(arrivals(&gauges), vec![2, 5, 9]);
        // 9 pushed, 6 pending: 3 consumed, so the second push (events 3..5) is the oldest.
        let age = gauges.refresh(6, 0);
        assert!(age >= 0);
        assert_eq!(gauges.oldest_event_age().as_secs(), age as u64);
        assert_eq!(arrivals(&gauges), vec![5, 9]);
        // 4 pending: the first two pushes are fully acknowledged.
        gauges.refresh(4, 0);
        assert_eq!(arrivals(&gauges), vec![9]);
        assert_eq!(gauges.refresh(0, 0), 0);
        assert_eq!(gauges.oldest_event_age(), Duration::ZERO);
        assert!(arrivals(&gauges).is_empty());
    }
}
