//! One pipeline per enabled fileset: it takes each batch its input publishes,
//! runs the processors, serialises the events and writes them into the queue
//! (or, without one, the output), and only once they are durable there
//! stores the batch's cursor and acknowledges. A large batch is processed
//! and serialised on two threads.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use threatbeat_core::{
    Batch, CursorStore, EncodedEvent, Event, Output, OutputError, PublishError, PublishRequest,
};
use threatbeat_processors::Chain;

use crate::lifecycle::{format_time, CurrentState, Pending};
use crate::telemetry::{FailureCause, PipelineEvent, PipelineTelemetry};
use threatbeat_outputs::queue::{Durability, QueueHandle};
use tokio::sync::mpsc;

/// The smallest batch whose processing and serialising are shared with a
/// second thread.
const PARALLEL_FROM: usize = 128;

/// How many ended indicators one delete step queues.
const SWEEP_STEP: usize = 1000;

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
        let events = in_two_halves(events, |half| {
            half.into_iter().map(Event::encode).collect::<Vec<_>>()
        })
        .into_iter()
        .collect::<Result<Vec<EncodedEvent>, _>>()
        .map_err(|error| OutputError::Write(format!("cannot serialise an event: {error}")))?;
        self.write(events, Durability::Now).await
    }

    /// Writes serialised events, as [`Sink::publish`]; the queue makes them
    /// durable as `durability` says (with no events and [`Durability::Now`],
    /// what earlier writes left).
    pub async fn write(&self, events: Vec<EncodedEvent>, durability: Durability) -> Result<(), OutputError> {
        match self {
            Sink::Queue(queue) => queue
                .push(events, durability)
                .await
                .map_err(|error| OutputError::Write(error.to_string())),
            Sink::Direct(_) if events.is_empty() => Ok(()),
            Sink::Direct(output) => output.lock().await.publish(events).await,
        }
    }
}

/// When a batch's events must be durable in the queue: with the batch that
/// stores the cursor, for an early slice of a page (the input fetches it again
/// until then); before the batch is acknowledged otherwise, and always with the
/// current state on, whose store records each batch as written once it is.
fn durability(batch: &Batch, keeps_current_state: bool) -> Durability {
    if batch.fetched_again_until_cursor && !keeps_current_state {
        Durability::WithCursor
    } else {
        Durability::Now
    }
}

/// A batch (or a part of one) processed, prepared and serialised.
#[derive(Default)]
struct Worked {
    /// How many events the processors kept.
    kept: usize,
    /// The history documents, serialised: written first.
    history: Vec<EncodedEvent>,
    /// The current-state documents and deletes, serialised: written after.
    state: Vec<EncodedEvent>,
    /// What the current state records once they are queued.
    pending: Pending,
}

impl Joined for Worked {
    fn join(&mut self, later: Self) {
        self.kept += later.kept;
        self.history.extend(later.history);
        self.state.extend(later.state);
        self.pending.join(later.pending);
    }
}

/// Why a batch was not written.
struct BatchFailure {
    cause: FailureCause,
    reason: String,
}

impl BatchFailure {
    fn new(cause: FailureCause, reason: impl ToString) -> Self {
        Self {
            cause,
            reason: reason.to_string(),
        }
    }
}

/// The per-fileset stage between an input and the output.
pub struct Pipeline {
    /// The pipeline id (`threatintel/misp`), also the cursor's name.
    pub id: String,
    chains: Vec<Chain>,
    index: Option<String>,
    cursors: CursorStore,
    output: Sink,
    telemetry: Arc<PipelineTelemetry>,
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
            telemetry: Arc::new(PipelineTelemetry::new(id.clone())),
            id,
            chains,
            index,
            cursors,
            output,
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

    /// Where the pipeline reports what happens, and its counters are read.
    pub fn telemetry(&self) -> Arc<PipelineTelemetry> {
        Arc::clone(&self.telemetry)
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
        let received = batch.events.len();
        let cursor_stored = batch.cursor.is_some();
        match self.write(batch).await {
            Ok(published) => {
                self.telemetry.record(PipelineEvent::BatchWritten {
                    received,
                    published,
                    cursor_stored,
                    duration: started.elapsed(),
                });
                Ok(())
            }
            Err(BatchFailure { cause, reason }) => {
                self.telemetry.record(PipelineEvent::BatchFailed {
                    cause,
                    reason: reason.clone(),
                });
                Err(PublishError::Failed(reason))
            }
        }
    }

    /// Processes and writes a batch, then stores its cursor; returns how
    /// many events were written.
    async fn write(&self, batch: Batch) -> Result<usize, BatchFailure> {
        let read_at = Value::String(format_time(chrono::Utc::now()));
        let now = unix_now();
        let durability = durability(&batch, self.current_state.is_some());
        let worked = in_two_halves(batch.events, |part| self.work(part, &read_at, now))?;
        let published = worked.kept;
        let mut listed = Vec::new();
        if published > 0 {
            let mut events = worked.history;
            events.extend(worked.state);
            self.output
                .write(events, durability)
                .await
                .map_err(|error| BatchFailure::new(FailureCause::OutputRefused, error))?;
            if let Some(state) = &self.current_state {
                state
                    .commit(&worked.pending)
                    .map_err(|error| BatchFailure::new(FailureCause::CurrentState, error))?;
                listed = worked.pending.listed;
            }
        } else if batch.cursor.is_some() {
            // Nothing kept: what earlier slices left is made durable before
            // the cursor moves past it.
            self.output
                .write(Vec::new(), Durability::Now)
                .await
                .map_err(|error| BatchFailure::new(FailureCause::OutputRefused, error))?;
        }
        if let Some(state) = &self.current_state {
            state.note_listing(batch.starts_poll, listed);
            if batch.ends_poll {
                self.end_listing(state)
                    .await
                    .map_err(|error| BatchFailure::new(FailureCause::EndListing, error))?;
            }
        }
        if let Some(cursor) = &batch.cursor {
            self.cursors.store(&self.id, cursor).map_err(|error| {
                BatchFailure::new(
                    FailureCause::Cursor,
                    format!("storing the cursor failed: {error}"),
                )
            })?;
        }
        Ok(published)
    }

    /// Runs the processors on the events of a batch (or of a part of one:
    /// a large batch is worked in two halves at once), prepares the current
    /// state, and serialises what is to be written, each event right after
    /// its processing, while its tree is fresh in the cache.
    fn work(&self, events: Vec<Event>, read_at: &Value, now: i64) -> Result<Worked, BatchFailure> {
        let events: Vec<Event> = events
            .into_iter()
            .filter_map(|event| self.process(event, read_at))
            .collect();
        if events.is_empty() {
            return Ok(Worked::default());
        }
        self.telemetry.record_samples(&events);
        let kept = events.len();
        let (history, state, pending) = match &self.current_state {
            Some(current_state) => {
                let prepared = current_state
                    .prepare(events, now)
                    .map_err(|error| BatchFailure::new(FailureCause::CurrentState, error))?;
                (prepared.history, prepared.state, prepared.pending)
            }
            None => (events, Vec::new(), Pending::default()),
        };
        let history = history
            .into_iter()
            .map(Event::encode)
            .collect::<Result<Vec<EncodedEvent>, _>>()
            .map_err(|error| {
                BatchFailure::new(
                    FailureCause::OutputRefused,
                    format!("cannot serialise an event: {error}"),
                )
            })?;
        Ok(Worked {
            kept,
            history,
            state,
            pending,
        })
    }

    /// Deletes the documents of the indicators that a complete poll of a
    /// whole-list feed no longer held, before the poll's cursor moves. A
    /// failure fails the batch: the next poll lists everything again.
    async fn end_listing(&self, state: &CurrentState) -> Result<(), String> {
        let ended = state.end_listing(&self.id).map_err(|error| error.to_string())?;
        let total = ended.len();
        let mut ended = ended.into_iter().peekable();
        while ended.peek().is_some() {
            let mut step = state.ended(ended.by_ref().take(SWEEP_STEP).collect());
            self.output
                .publish(std::mem::take(&mut step.events))
                .await
                .map_err(|error| error.to_string())?;
            state
                .swept(&step, unix_now())
                .map_err(|error| error.to_string())?;
        }
        if total > 0 {
            tracing::info!(pipeline = %self.id, ended = total, "current state: indicators no longer listed deleted");
        }
        Ok(())
    }

    fn process(&self, mut event: Event, read_at: &Value) -> Option<Event> {
        // Built here, on the thread that processes and frees it.
        event.assemble();
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
                self.telemetry.record(PipelineEvent::ProcessorPanicked {
                    event_id: id.as_deref(),
                    panic,
                });
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

/// What working on part of a list gives, joined in order with what the
/// next part gave.
trait Joined {
    /// Appends `later`, the result of the part after this one.
    fn join(&mut self, later: Self);
}

impl<U> Joined for Vec<U> {
    fn join(&mut self, later: Self) {
        self.extend(later);
    }
}

impl<T: Joined, E> Joined for Result<T, E> {
    /// The first error stands; both parts' results otherwise.
    fn join(&mut self, later: Self) {
        match later {
            Err(error) if self.is_ok() => *self = Err(error),
            Err(_) => {}
            Ok(later) => {
                if let Ok(first) = self {
                    first.join(later);
                }
            }
        }
    }
}

/// `work` applied to `items` in order; a large list is cut in two and its
/// second half worked on a second thread, where the machine has one.
fn in_two_halves<T: Send, R: Joined + Send>(items: Vec<T>, work: impl Fn(Vec<T>) -> R + Sync) -> R {
    in_two_halves_on(std::thread::Builder::new(), items, work)
}

/// [`in_two_halves`] with the second thread started by `helper`.
fn in_two_halves_on<T: Send, R: Joined + Send>(
    helper: std::thread::Builder,
    mut items: Vec<T>,
    work: impl Fn(Vec<T>) -> R + Sync,
) -> R {
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
                Ok(rest) => done.join(rest),
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(error) => {
                tracing::debug!(%error, "no second thread; the whole batch is worked on one");
                done.join(work(take_second_half()));
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
    fn only_an_early_slice_of_a_page_waits_for_the_cursor_to_be_durable() {
        let early_slice = Batch {
            fetched_again_until_cursor: true,
            ..Batch::default()
        };
        let last_slice = Batch {
            cursor: Some(serde_json::json!({"timestamp": 1})),
            ..Batch::default()
        };
        assert_eq!(durability(&early_slice, false), Durability::WithCursor);
        assert_eq!(durability(&last_slice, false), Durability::Now);
        assert_eq!(
            durability(&Batch::default(), false),
            Durability::Now,
            "a pushed batch no one sends again"
        );
        assert_eq!(
            durability(&early_slice, true),
            Durability::Now,
            "the current state records it"
        );
    }

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

        // A part that fails fails the whole; the first failure is the one told.
        let failing = |half: Vec<usize>| match half.iter().find(|item| **item >= 1000) {
            Some(item) => Err(*item),
            None => Ok(half),
        };
        let mut items: Vec<usize> = (0..PARALLEL_FROM * 3).collect();
        let last = items.len() - 1;
        items[last] = 2000;
        assert_eq!(in_two_halves(items.clone(), failing), Err(2000));
        items[0] = 1000;
        assert_eq!(in_two_halves(items, failing), Err(1000));
        assert_eq!(in_two_halves(vec![1, 2], failing), Ok(vec![1, 2]));

        let small: Vec<usize> = (0..PARALLEL_FROM - 1).collect();
        assert_eq!(in_two_halves(small.clone(), |half| half), small);
        assert!(in_two_halves(Vec::<usize>::new(), |half| half).is_empty());
    }
}
