//! One pipeline per enabled fileset: it takes each batch its input publishes,
//! runs the processors, serialises the events and writes them into the queue
//! (or, without one, the output), and only once they are durable there
//! stores the batch's cursor and acknowledges. A large batch is processed
//! and serialised on two threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use threatbeat_core::{
    Batch, CursorStore, EncodedEvent, Event, FieldPath, Output, OutputError, PublishError, PublishRequest,
};
use threatbeat_processors::Chain;

use crate::lifecycle::{format_time, CurrentState};
use threatbeat_outputs::queue::QueueHandle;
use tokio::sync::mpsc;

/// The smallest batch whose processing and serialising are shared with a
/// second thread.
const PARALLEL_FROM: usize = 128;

/// How many ended indicators one delete step queues.
const SWEEP_STEP: usize = 1000;

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

/// Where a pipeline's events go: straight into the queue, which every
/// pipeline shares and its consumer drains into the output; or, where no
/// queue is configured, into the output itself, one batch at a time.
#[derive(Clone)]
pub enum Sink {
    /// The queue (`queue.disk` or `queue.mem`).
    Queue(QueueHandle),
    /// The output, without a queue.
    Direct(Arc<tokio::sync::Mutex<Box<dyn Output>>>),
}

impl Sink {
    /// Serialises `events` (a large batch on two threads) and writes them;
    /// returns once the queue made them durable, or the output accepted
    /// them, or either refused them.
    pub async fn publish(&self, events: Vec<Event>) -> Result<(), OutputError> {
        let events = in_two_halves(events, |half| half.into_iter().map(Event::encode).collect())
            .into_iter()
            .collect::<Result<Vec<EncodedEvent>, _>>()
            .map_err(|error| OutputError::Write(format!("cannot serialise an event: {error}")))?;
        match self {
            Sink::Queue(queue) => queue
                .push(events)
                .await
                .map_err(|error| OutputError::Write(error.to_string())),
            Sink::Direct(output) => output.lock().await.publish(events).await,
        }
    }
}

/// Counters of one pipeline, readable while it runs.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events the output accepted.
    pub published: AtomicU64,
    /// Events dropped by processors.
    pub dropped: AtomicU64,
    /// Batches the output refused (their cursor did not move).
    pub failed_batches: AtomicU64,
    /// Cursors stored.
    pub cursors_stored: AtomicU64,
    /// Current-state documents written (indicators valid when their batch arrived).
    pub current_state_written: AtomicU64,
    /// Whether the input is running (set by the supervisor).
    pub input_running: AtomicBool,
    /// Unix seconds of the last batch the output accepted; 0 before the first.
    pub last_publish_unix: AtomicU64,
    /// Why the last batch failed; `None` once a batch succeeds again.
    last_failure: Mutex<Option<String>>,
    samples: Mutex<Vec<(usize, String)>>,
}

impl PipelineStats {
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

    // Keeps the most telling values (network indicators before hashes), at most
    // two per field so the summary shows a mix of kinds.
    fn record_samples(&self, events: &[Event]) {
        let paths = indicator_paths();
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        for event in events {
            let found = paths.iter().enumerate().find_map(|(rank, path)| {
                let value = match event.get(path)? {
                    Value::String(text) => text.clone(),
                    Value::Array(items) => items.first().and_then(Value::as_str)?.to_owned(),
                    _ => return None,
                };
                Some((rank, value))
            });
            let Some((rank, value)) = found else {
                continue;
            };
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

/// What one batch did, for the summary log line.
struct Written {
    received: usize,
    published: usize,
    cursor_stored: bool,
}

/// The per-fileset stage between an input and the output.
pub struct Pipeline {
    /// The pipeline id (`threatintel/misp`), also the cursor's name.
    pub id: String,
    chains: Vec<Chain>,
    index: Option<String>,
    cursors: CursorStore,
    output: Sink,
    stats: Arc<PipelineStats>,
    current_state: Option<CurrentState>,
}

impl Pipeline {
    /// A pipeline running `chains` in order, setting `index` on events that
    /// have none, writing through `output` and storing cursors in `cursors`.
    pub fn new(
        id: String,
        chains: Vec<Chain>,
        index: Option<String>,
        cursors: CursorStore,
        output: Sink,
    ) -> Self {
        Self {
            id,
            chains,
            index,
            cursors,
            output,
            stats: Arc::default(),
            current_state: None,
        }
    }

    /// Also maintains the fileset's current-state index: every batch writes
    /// its indicators there, and expiry and refresh are checked every
    /// `check_interval` (and once before the first batch).
    pub fn with_current_state(mut self, current_state: CurrentState) -> Self {
        self.current_state = Some(current_state);
        self
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> Arc<PipelineStats> {
        Arc::clone(&self.stats)
    }

    /// Handles batches until every publisher is dropped (the input returned).
    /// Expiry and refresh run in the same task, between batches, so a sweep
    /// and a batch never write one indicator concurrently.
    pub async fn run(self, mut requests: mpsc::Receiver<PublishRequest>) {
        let Some(check_interval) = self
            .current_state
            .as_ref()
            .map(|state| state.settings().check_interval)
        else {
            while let Some(request) = requests.recv().await {
                self.answer(request).await;
            }
            return;
        };
        // The first tick is immediate: a restart (or `run --once`) deletes what
        // expired while the agent was stopped before it reads anything new.
        let mut checks = tokio::time::interval(check_interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = checks.tick() => self.sweep().await,
                request = requests.recv() => match request {
                    Some(request) => self.answer(request).await,
                    None => return,
                },
            }
        }
    }

    async fn answer(&self, request: PublishRequest) {
        let result = self.handle(request.batch).await;
        // The input may have stopped waiting (shutdown); nothing to tell it then.
        let _ = request.ack.send(result);
    }

    /// Deletes the expired indicators' documents and refreshes the stale ones,
    /// in steps, until nothing is due. A failure is logged and left for the
    /// next check: the store still lists what was not queued.
    async fn sweep(&self) {
        let Some(state) = &self.current_state else { return };
        loop {
            let now = unix_now();
            let mut step = match state.sweep(now) {
                Ok(Some(step)) => step,
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(pipeline = %self.id, %error, "checking expiry failed");
                    return;
                }
            };
            let (expired, refreshed) = (step.expired.len(), step.refreshed.len());
            if let Err(error) = self.output.publish(std::mem::take(&mut step.events)).await {
                tracing::warn!(pipeline = %self.id, %error, "expiry and refresh not queued; retried at the next check");
                return;
            }
            if let Err(error) = state.swept(&step, now) {
                tracing::error!(pipeline = %self.id, %error, "expiry and refresh queued but not recorded; they are sent again");
                return;
            }
            tracing::info!(pipeline = %self.id, expired, refreshed, "current state: expired indicators deleted, stale ones refreshed");
        }
    }

    async fn handle(&self, batch: Batch) -> Result<(), PublishError> {
        let started = Instant::now();
        let result = self.write(batch).await;
        let metrics = crate::metrics::agent();
        match &result {
            Ok(written) => {
                self.stats.set_last_failure(None);
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                self.stats
                    .last_publish_unix
                    .store(now.as_secs(), Ordering::Relaxed);
                metrics
                    .last_publish
                    .with_label_values(&[self.id.as_str()])
                    .set(now.as_secs_f64());
                let (module, fileset) = self.id.split_once('/').unwrap_or((self.id.as_str(), ""));
                tracing::info!(
                    pipeline = %self.id,
                    module,
                    fileset,
                    events = written.received,
                    published = written.published,
                    dropped = written.received - written.published,
                    cursor = written.cursor_stored,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "batch published"
                );
            }
            Err(error) => {
                self.stats.set_last_failure(Some(error.to_string()));
                metrics
                    .batches_failed
                    .with_label_values(&[self.id.as_str()])
                    .inc();
            }
        }
        result.map(|_| ())
    }

    async fn write(&self, batch: Batch) -> Result<Written, PublishError> {
        let metrics = crate::metrics::agent();
        let label = [self.id.as_str()];
        let received = batch.events.len();
        let read_at = Value::String(format_time(chrono::Utc::now()));
        let events = self.process_all(batch.events, &read_at);
        let dropped = (received - events.len()) as u64;
        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        metrics.events_dropped.with_label_values(&label).inc_by(dropped);
        let published = events.len();
        let mut listed = Vec::new();
        if !events.is_empty() {
            let count = events.len() as u64;
            self.stats.record_samples(&events);
            let store_failed = |error: crate::lifecycle::StoreError| {
                tracing::error!(pipeline = %self.id, %error, "the current state could not be read or recorded; the batch's cursor is not stored");
                PublishError::Failed(error.to_string())
            };
            let (events, prepared) = match &self.current_state {
                Some(state) => {
                    let mut prepared = state.prepare(events, unix_now()).map_err(store_failed)?;
                    (std::mem::take(&mut prepared.events), Some(prepared))
                }
                None => (events, None),
            };
            if let Err(error) = self.output.publish(events).await {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pipeline = %self.id, %error, "the output refused a batch; its cursor is not stored");
                return Err(PublishError::Failed(error.to_string()));
            }
            if let (Some(state), Some(prepared)) = (&self.current_state, prepared) {
                state
                    .commit(&prepared.records, &prepared.deleted)
                    .map_err(store_failed)?;
                self.stats
                    .current_state_written
                    .fetch_add(prepared.written as u64, Ordering::Relaxed);
                listed = prepared.listed;
            }
            self.stats.published.fetch_add(count, Ordering::Relaxed);
            metrics.events_published.with_label_values(&label).inc_by(count);
        }
        if let Some(state) = &self.current_state {
            state.note_listing(batch.starts_poll, listed);
            if batch.ends_poll {
                self.end_listing(state).await?;
            }
        }
        if let Some(cursor) = &batch.cursor {
            if let Err(error) = self.cursors.store(&self.id, cursor) {
                tracing::error!(pipeline = %self.id, %error, "the events were written but the cursor could not be stored");
                return Err(PublishError::Failed(format!(
                    "storing the cursor failed: {error}"
                )));
            }
            self.stats.cursors_stored.fetch_add(1, Ordering::Relaxed);
            metrics.cursor_commits.with_label_values(&label).inc();
        }
        Ok(Written {
            received,
            published,
            cursor_stored: batch.cursor.is_some(),
        })
    }

    /// Deletes the documents of the indicators that a complete poll of a
    /// whole-list feed no longer held, before the poll's cursor moves. A
    /// failure fails the batch: the next poll lists everything again.
    async fn end_listing(&self, state: &CurrentState) -> Result<(), PublishError> {
        let failed = |error: String| {
            tracing::warn!(pipeline = %self.id, %error, "indicators no longer listed were not deleted; the next poll tries again");
            PublishError::Failed(error)
        };
        let ended = state
            .end_listing(&self.id)
            .map_err(|error| failed(error.to_string()))?;
        let total = ended.len();
        let mut ended = ended.into_iter().peekable();
        while ended.peek().is_some() {
            let mut step = state.ended(ended.by_ref().take(SWEEP_STEP).collect());
            self.output
                .publish(std::mem::take(&mut step.events))
                .await
                .map_err(|error| failed(error.to_string()))?;
            state
                .swept(&step, unix_now())
                .map_err(|error| failed(error.to_string()))?;
        }
        if total > 0 {
            tracing::info!(pipeline = %self.id, ended = total, "current state: indicators no longer listed deleted");
        }
        Ok(())
    }

    /// Runs the processors on every event of a batch, in order, a large
    /// batch on two threads.
    fn process_all(&self, events: Vec<Event>, read_at: &Value) -> Vec<Event> {
        in_two_halves(events, |half| {
            half.into_iter()
                .filter_map(|event| self.process(event, read_at))
                .collect()
        })
    }

    fn process(&self, event: Event, read_at: &Value) -> Option<Event> {
        // A processor that panics on one event costs that event, not the
        // pipeline: it is logged and counted, the batch goes on.
        let id = event.id().map(str::to_owned);
        let chains = std::panic::AssertUnwindSafe(|| {
            self.chains
                .iter()
                .try_fold(event, |event, chain| chain.run(event))
        });
        let mut event = match std::panic::catch_unwind(chains) {
            Ok(kept) => kept?,
            Err(payload) => {
                let panic = crate::running::panic_message(&*payload);
                tracing::error!(pipeline = %self.id, id = id.as_deref().unwrap_or("(none)"), panic, "a processor panicked on this event; the event is dropped, the others go on");
                crate::metrics::agent()
                    .panics
                    .with_label_values(&[self.id.as_str()])
                    .inc();
                return None;
            }
        };
        // As in Beats, every event carries the time it was read unless its
        // mapping took one from the data: data streams refuse documents
        // without `@timestamp`, and feeds such as OTX's export have no time.
        if !event.fields.contains_key("@timestamp") {
            event.fields.insert("@timestamp".to_owned(), read_at.clone());
        }
        if event.index().is_none() {
            if let Some(index) = &self.index {
                event.set_index(index.clone());
            }
        }
        Some(event)
    }
}

/// `work` applied to `items` in order; a large list is cut in two and its
/// second half worked on a second thread, where the machine has one.
fn in_two_halves<T: Send, U: Send>(items: Vec<T>, work: impl Fn(Vec<T>) -> Vec<U> + Sync) -> Vec<U> {
    in_two_halves_on(std::thread::Builder::new(), items, work)
}

/// [`in_two_halves`] with the second thread started by `helper`.
fn in_two_halves_on<T: Send, U: Send>(
    helper: std::thread::Builder,
    mut items: Vec<T>,
    work: impl Fn(Vec<T>) -> Vec<U> + Sync,
) -> Vec<U> {
    // Read once: on Linux it reads the cgroup's CPU quota from files.
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    if items.len() < PARALLEL_FROM || cores < 2 {
        return work(items);
    }
    // Taken by whichever thread works it: the helper, or this one when no
    // thread can be started (a container at its process limit).
    let second_half = Mutex::new(Some(items.split_off(items.len() / 2)));
    let take_second_half = || {
        second_half
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    };
    std::thread::scope(|scope| {
        let helper = helper.spawn_scoped(scope, || work(take_second_half()));
        let mut done = work(items);
        match helper {
            Ok(helper) => match helper.join() {
                Ok(rest) => done.extend(rest),
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(error) => {
                tracing::debug!(%error, "no second thread; the whole batch is worked on one");
                done.extend(work(take_second_half()));
            }
        }
        done
    })
}

/// Unix seconds now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_is_worked_on_two_threads_and_stays_in_order() {
        let threads = Mutex::new(std::collections::HashSet::new());
        let work = |half: Vec<usize>| {
            if let Ok(mut threads) = threads.lock() {
                threads.insert(std::thread::current().id());
            }
            half.into_iter().map(|item| item * 2).collect::<Vec<_>>()
        };
        let large: Vec<usize> = (0..PARALLEL_FROM * 3 + 1).collect();
        let expected: Vec<usize> = large.iter().map(|item| item * 2).collect();
        assert_eq!(in_two_halves(large, work), expected);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let used = threads.lock().map(|threads| threads.len()).unwrap_or(0);
        assert_eq!(used, if cores < 2 { 1 } else { 2 });

        // A thread that cannot start (a stack larger than the address space):
        // the whole batch is worked here, nothing lost.
        let large: Vec<usize> = (0..PARALLEL_FROM * 3 + 1).collect();
        let refused = std::thread::Builder::new().stack_size(1 << 50);
        assert_eq!(
            in_two_halves_on(refused, large, |half| half),
            (0..PARALLEL_FROM * 3 + 1).collect::<Vec<_>>()
        );

        let small: Vec<usize> = (0..PARALLEL_FROM - 1).collect();
        assert_eq!(in_two_halves(small.clone(), |half| half), small);
        assert!(in_two_halves(Vec::<usize>::new(), |half| half).is_empty());
    }
}
