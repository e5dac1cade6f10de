//! One telemetry path for the pipelines (issue 14, step 4): a pipeline and
//! its input report what happens as typed events ([`PipelineEvent`]) to
//! their [`PipelineTelemetry`], which logs each at one place and keeps the
//! one set of counters that `/`, `/healthz`, `/metrics`, the progress lines
//! and the run summary all read. Nothing is counted twice, and health is
//! decided from this state, not from metrics read back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use threatbeat_core::{Event, FieldPath};

/// How many indicator values a pipeline keeps to show in the `--once` summary.
const SAMPLE_SIZE: usize = 5;

/// Indicator fields shown in the summary, in order of preference.
const INDICATOR_FIELDS: [&str; 10] = [
    "threat.indicator.ip",
    "threat.indicator.url.domain",
    "threat.indicator.domain",
    "threat.indicator.url.full",
    "threat.indicator.url.original",
    "threat.indicator.email.address",
    "threat.indicator.file.hash.sha256",
    "threat.indicator.file.hash.sha1",
    "threat.indicator.file.hash.md5",
    "threat.indicator.file.name",
];

/// What happened in a pipeline.
#[derive(Debug)]
pub enum PipelineEvent<'a> {
    /// A batch is durable (in the queue, or accepted by the output without
    /// one) and its cursor, when it carried one, is stored.
    BatchWritten {
        /// Events the input sent.
        received: usize,
        /// Events written (the rest were dropped by processors).
        published: usize,
        /// Whether the batch carried a cursor (now stored).
        cursor_stored: bool,
        /// From the batch's arrival until its cursor was stored.
        duration: Duration,
    },
    /// A batch was not written, or not completely: its cursor did not
    /// move, and the input reads its events again.
    BatchFailed {
        /// Which step failed.
        cause: FailureCause,
        /// What went wrong.
        reason: String,
    },
    /// A processor panicked on one event, which is dropped.
    ProcessorPanicked {
        /// The event's `_id`, when it had one.
        event_id: Option<&'a str>,
        /// What the panic said.
        panic: &'a str,
    },
    /// The input runs: at start, or again after a panic.
    InputRunning {
        /// Whether it is a restart after a panic.
        restarted: bool,
    },
    /// The input ended (returned, failed or panicked).
    InputStopped,
    /// The input panicked.
    InputPanicked {
        /// What the panic said.
        panic: &'a str,
        /// When it runs again; `None` when it is not restarted.
        restart_in: Option<Duration>,
        /// Restarts so far, this one included.
        restarts: u32,
    },
}

/// The step of writing a batch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The queue, or the output without one, refused the events.
    OutputRefused,
    /// The current-state store could not be read or recorded.
    CurrentState,
    /// The indicators a whole-list poll no longer held were not deleted.
    EndListing,
    /// The events are durable but the cursor could not be stored.
    Cursor,
}

/// The counters of one pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Events written.
    pub published: u64,
    /// Events dropped by processors, in written batches.
    pub dropped: u64,
    /// Batches not written (their cursor did not move).
    pub failed_batches: u64,
    /// Cursors stored.
    pub cursor_commits: u64,
    /// Panics caught in the input or the processors.
    pub panics: u64,
}

impl PipelineCounts {
    /// The sum of two counts (a pipeline's earlier runs and its current one).
    pub fn plus(self, other: PipelineCounts) -> PipelineCounts {
        PipelineCounts {
            published: self.published + other.published,
            dropped: self.dropped + other.dropped,
            failed_batches: self.failed_batches + other.failed_batches,
            cursor_commits: self.cursor_commits + other.cursor_commits,
            panics: self.panics + other.panics,
        }
    }
}

/// The telemetry of one pipeline: where its events are recorded and read.
#[derive(Debug)]
pub struct PipelineTelemetry {
    id: String,
    published: AtomicU64,
    dropped: AtomicU64,
    failed_batches: AtomicU64,
    cursor_commits: AtomicU64,
    panics: AtomicU64,
    input_running: AtomicBool,
    /// Unix seconds of the last written batch; 0 before the first.
    last_publish_unix: AtomicU64,
    /// Why the last batch failed; `None` once a batch is written again.
    last_failure: Mutex<Option<String>>,
    samples: Mutex<Vec<(usize, String)>>,
}

impl PipelineTelemetry {
    /// The telemetry of pipeline `id` (`threatintel/misp`), all at zero.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            cursor_commits: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            input_running: AtomicBool::new(false),
            last_publish_unix: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Logs `event` and counts it.
    pub fn record(&self, event: PipelineEvent<'_>) {
        let pipeline = self.id.as_str();
        match event {
            PipelineEvent::BatchWritten {
                received,
                published,
                cursor_stored,
                duration,
            } => {
                let dropped = received.saturating_sub(published);
                self.published.fetch_add(published as u64, Ordering::Relaxed);
                self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                if cursor_stored {
                    self.cursor_commits.fetch_add(1, Ordering::Relaxed);
                }
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                self.last_publish_unix.store(now.as_secs(), Ordering::Relaxed);
                self.set_last_failure(None);
                let (module, fileset) = pipeline.split_once('/').unwrap_or((pipeline, ""));
                tracing::info!(
                    pipeline,
                    module,
                    fileset,
                    events = received,
                    published,
                    dropped,
                    cursor = cursor_stored,
                    duration_ms = duration.as_millis() as u64,
                    "batch published"
                );
            }
            PipelineEvent::BatchFailed { cause, reason } => {
                self.failed_batches.fetch_add(1, Ordering::Relaxed);
                match cause {
                    FailureCause::OutputRefused => {
                        tracing::warn!(pipeline, error = %reason, "the output refused a batch; its cursor is not stored")
                    }
                    FailureCause::CurrentState => {
                        tracing::error!(pipeline, error = %reason, "the current state could not be read or recorded; the batch's cursor is not stored")
                    }
                    FailureCause::EndListing => {
                        tracing::warn!(pipeline, error = %reason, "indicators no longer listed were not deleted; the next poll tries again")
                    }
                    FailureCause::Cursor => {
                        tracing::error!(pipeline, error = %reason, "the events were written but the cursor could not be stored")
                    }
                }
                self.set_last_failure(Some(reason));
            }
            PipelineEvent::ProcessorPanicked { event_id, panic } => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    pipeline,
                    id = event_id.unwrap_or("(none)"),
                    panic,
                    "a processor panicked on this event; the event is dropped, the others go on"
                );
            }
            PipelineEvent::InputRunning { restarted } => {
                self.input_running.store(true, Ordering::Relaxed);
                if restarted {
                    tracing::info!(pipeline, "the input runs again");
                }
            }
            PipelineEvent::InputStopped => self.input_running.store(false, Ordering::Relaxed),
            PipelineEvent::InputPanicked {
                panic,
                restart_in,
                restarts,
            } => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                match restart_in {
                    Some(delay) => {
                        tracing::error!(pipeline, %panic, restart_in = ?delay, restarts, "the input panicked; it is restarted from its stored cursor")
                    }
                    None => tracing::error!(pipeline, %panic, "the input panicked; it is not restarted"),
                }
            }
        }
    }

    /// The counters now.
    pub fn counts(&self) -> PipelineCounts {
        PipelineCounts {
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            cursor_commits: self.cursor_commits.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
        }
    }

    /// Whether the input runs.
    pub fn input_running(&self) -> bool {
        self.input_running.load(Ordering::Relaxed)
    }

    /// Unix seconds of the last written batch, if any.
    pub fn last_publish(&self) -> Option<u64> {
        Some(self.last_publish_unix.load(Ordering::Relaxed)).filter(|seconds| *seconds > 0)
    }

    /// Why the most recent batch failed, when it did.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .map(|failure| failure.clone())
            .unwrap_or(None)
    }

    fn set_last_failure(&self, failure: Option<String>) {
        if let Ok(mut last) = self.last_failure.lock() {
            *last = failure;
        }
    }

    /// A few indicator values that went out, for the summary.
    pub fn samples(&self) -> Vec<String> {
        self.samples
            .lock()
            .map(|samples| samples.iter().map(|(_, value)| value.clone()).collect())
            .unwrap_or_default()
    }

    /// Keeps the most telling indicator values of `events` (network
    /// indicators before hashes), at most two per field so the summary shows
    /// a mix of kinds.
    pub fn record_samples(&self, events: &[Event]) {
        let paths = indicator_paths();
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        for event in events {
            // An event's kind is the first indicator field it has; only the
            // fields of kinds that could still be taken are looked up, none
            // once the samples are settled (most of a run).
            let reach = sample_reach(&samples, paths.len());
            if reach == 0 {
                break;
            }
            let found = paths[..reach]
                .iter()
                .enumerate()
                .find_map(|(rank, path)| Some((rank, indicator_text(event.get(path)?)?)));
            let Some((rank, value)) = found else {
                continue;
            };
            let same_kind = samples.iter().filter(|(kind, _)| *kind == rank).count();
            if same_kind >= 2 || samples.iter().any(|(_, seen)| seen == value) {
                continue;
            }
            if samples.len() < SAMPLE_SIZE {
                samples.push((rank, value.to_owned()));
            } else if let Some(worst) = samples
                .iter()
                .map(|(kind, _)| *kind)
                .max()
                .filter(|worst| *worst > rank)
            {
                if let Some(position) = samples.iter().rposition(|(kind, _)| *kind == worst) {
                    samples[position] = (rank, value.to_owned());
                }
            }
        }
        samples.sort_by_key(|(kind, _)| *kind);
    }
}

/// How many of the `kinds` indicator fields (in order of preference) could
/// still give a sample: all while there is room, then those better than the
/// worst kind kept; 0 once every such kind has its two.
fn sample_reach(samples: &[(usize, String)], kinds: usize) -> usize {
    let reach = if samples.len() < SAMPLE_SIZE {
        kinds
    } else {
        samples.iter().map(|(kind, _)| *kind).max().unwrap_or(0)
    };
    let open = (0..reach).any(|rank| samples.iter().filter(|(kind, _)| *kind == rank).count() < 2);
    if open {
        reach
    } else {
        0
    }
}

/// The indicator value shown for a field: a string, or a list's first string.
fn indicator_text(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(text),
        Value::Array(items) => items.first().and_then(Value::as_str),
        _ => None,
    }
}

fn indicator_paths() -> &'static [FieldPath] {
    static PATHS: OnceLock<Vec<FieldPath>> = OnceLock::new();
    PATHS.get_or_init(|| {
        INDICATOR_FIELDS
            .iter()
            .filter_map(|field| FieldPath::parse(field).ok())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The samples as first kept: every indicator field of every event
    /// looked up, each event's value copied before it was judged.
    fn samples_looked_up_everywhere(batches: &[Vec<Event>]) -> Vec<String> {
        let mut samples: Vec<(usize, String)> = Vec::new();
        for batch in batches {
            for event in batch {
                let found = indicator_paths()
                    .iter()
                    .enumerate()
                    .find_map(|(rank, path)| Some((rank, indicator_text(event.get(path)?)?.to_owned())));
                let Some((rank, value)) = found else { continue };
                let same_kind = samples.iter().filter(|(kind, _)| *kind == rank).count();
                if same_kind >= 2 || samples.iter().any(|(_, seen)| *seen == value) {
                    continue;
                }
                if samples.len() < SAMPLE_SIZE {
                    samples.push((rank, value));
                } else if let Some(worst) = samples
                    .iter()
                    .map(|(kind, _)| *kind)
                    .max()
                    .filter(|worst| *worst > rank)
                {
                    if let Some(position) = samples.iter().rposition(|(kind, _)| *kind == worst) {
                        samples[position] = (rank, value);
                    }
                }
            }
            samples.sort_by_key(|(kind, _)| *kind);
        }
        samples.into_iter().map(|(_, value)| value).collect()
    }

    fn indicator_event() -> impl Strategy<Value = Event> {
        let field = (0..INDICATOR_FIELDS.len() + 1, "[a-d]{1,2}", 0..3u8);
        prop::collection::vec(field, 0..4).prop_map(|fields| {
            let mut event = Event::from_value(serde_json::json!({}));
            for (rank, text, shape) in fields {
                let Some(path) = INDICATOR_FIELDS.get(rank) else {
                    continue;
                };
                let value = match shape {
                    0 => Value::String(text),
                    1 => serde_json::json!([text]),
                    _ => serde_json::json!(7),
                };
                let _ = event.set(&FieldPath::parse(path).unwrap(), value);
            }
            event
        })
    }

    proptest! {
        #[test]
        fn samples_are_the_ones_every_field_looked_up_would_give(
            batches in prop::collection::vec(prop::collection::vec(indicator_event(), 0..12), 1..5)
        ) {
            let telemetry = PipelineTelemetry::new("unit/samples");
            for batch in &batches {
                telemetry.record_samples(batch);
            }
            prop_assert_eq!(telemetry.samples(), samples_looked_up_everywhere(&batches));
        }
    }

    #[test]
    fn one_record_counts_what_every_reader_sees() {
        let telemetry = PipelineTelemetry::new("unit/telemetry");
        telemetry.record(PipelineEvent::InputRunning { restarted: false });
        telemetry.record(PipelineEvent::BatchWritten {
            received: 10,
            published: 8,
            cursor_stored: true,
            duration: Duration::from_millis(3),
        });
        telemetry.record(PipelineEvent::BatchFailed {
            cause: FailureCause::OutputRefused,
            reason: "disk full".into(),
        });
        telemetry.record(PipelineEvent::ProcessorPanicked {
            event_id: None,
            panic: "boom",
        });
        assert_eq!(
            telemetry.counts(),
            PipelineCounts {
                published: 8,
                dropped: 2,
                failed_batches: 1,
                cursor_commits: 1,
                panics: 1,
            }
        );
        assert!(telemetry.input_running());
        assert!(telemetry.last_publish().is_some());
        assert_eq!(telemetry.last_failure().as_deref(), Some("disk full"));

        // A written batch clears the failure; a batch without a cursor stores none.
        telemetry.record(PipelineEvent::BatchWritten {
            received: 1,
            published: 1,
            cursor_stored: false,
            duration: Duration::ZERO,
        });
        assert_eq!(telemetry.last_failure(), None);
        assert_eq!(telemetry.counts().cursor_commits, 1);
        telemetry.record(PipelineEvent::InputStopped);
        assert!(!telemetry.input_running());
    }
}
