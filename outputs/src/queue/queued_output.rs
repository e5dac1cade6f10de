//! [`QueuedOutput`]: the queue in front of an output, with the background
//! consumer that drains it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use threatbeat_core::{Backoff, BuildContext, ConfigError, EncodedEvent, Origin, Output, OutputError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gauges::QueueGauges;
use super::settings::{QueueKind, QueueSettings};
use super::{CorruptRecord, DiskQueue, Durability, MemQueue, QueueError, QueueStore};
use crate::metrics::LiveCounters;

/// How often the depth and age gauges are refreshed while nothing is pushed or acked.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// Counters of the queue (libbeat's `pipeline.queue.*` in spirit); `/metrics`
/// reads `added` and `acked` (`queue_counters`).
#[derive(Debug, Default)]
pub struct QueueStats {
    added: AtomicU64,
    acked: AtomicU64,
    corrupt_records: AtomicU64,
}

/// A copy of the queue counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStatsSnapshot {
    /// Events made durable in the queue.
    pub added: u64,
    /// Events freed after the output accepted them.
    pub acked: u64,
    /// Corrupt records skipped.
    pub corrupt_records: u64,
    /// Events waiting (pushed, not yet acknowledged).
    pub pending_events: u64,
    /// Bytes waiting on disk.
    pub pending_bytes: u64,
}

struct Shared {
    store: Mutex<Box<dyn QueueStore>>,
    data_added: Notify,
    space_freed: Notify,
    stats: QueueStats,
    corruption: Mutex<Vec<CorruptRecord>>,
    closed: CancellationToken,
    gauges: QueueGauges,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Box<dyn QueueStore>> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refresh_gauges(&self) {
        let (events, bytes) = {
            let store = self.store();
            (store.pending_events(), store.pending_bytes())
        };
        self.gauges.refresh(events, bytes);
    }

    fn record_corruption(&self) {
        let found = self.store().take_corruption();
        if !found.is_empty() {
            self.stats
                .corrupt_records
                .fetch_add(found.len() as u64, Ordering::Relaxed);
            self.corruption
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(found);
        }
    }
}

/// `threatbeat_queue_events_added_total` and `threatbeat_queue_events_acked_total`,
/// labelled by `queue`, read from the queues' own counters.
fn queue_counters() -> &'static [LiveCounters<Shared>; 2] {
    static COUNTERS: OnceLock<[LiveCounters<Shared>; 2]> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        [
            LiveCounters::register(
                "threatbeat_queue_events_added_total",
                "Events made durable in the queue.",
                &["queue"],
                |shared| labelled(shared, &shared.stats.added),
            ),
            LiveCounters::register(
                "threatbeat_queue_events_acked_total",
                "Events freed from the queue after the output accepted them.",
                &["queue"],
                |shared| labelled(shared, &shared.stats.acked),
            ),
        ]
    })
}

/// One queue's `count`, labelled with its kind.
fn labelled(shared: &Shared, count: &AtomicU64) -> Vec<(Vec<&'static str>, u64)> {
    vec![(vec![shared.gauges.label], count.load(Ordering::Relaxed))]
}

/// Runs a store operation off the async worker threads.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    operation: impl FnOnce(&mut dyn QueueStore) -> T + Send + 'static,
) -> T {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || operation(shared.store().as_mut())).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// A cloneable handle that publishes into the queue; give one to each pipeline.
#[derive(Clone)]
pub struct QueueHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHandle").finish_non_exhaustive()
    }
}

impl QueueHandle {
    /// How long the oldest event not yet acknowledged has waited (zero when
    /// the queue is empty), as of the last push, acknowledgement or
    /// periodic refresh (at most a second ago); never waits for the disk.
    pub fn oldest_event_age(&self) -> Duration {
        self.shared.gauges.oldest_event_age()
    }

    /// Writes serialised events into the queue, waiting while it is full,
    /// and makes them durable as `durability` says. With no events and
    /// [`Durability::Now`], makes durable what earlier pushes left.
    pub async fn push(&self, events: Vec<EncodedEvent>, durability: Durability) -> Result<(), QueueError> {
        let mut remaining: VecDeque<EncodedEvent> = events.into();
        loop {
            let space = self.shared.space_freed.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let (result, rest) = blocking(&self.shared, move |store| {
                let result = store.push(&mut remaining, durability);
                (result, remaining)
            })
            .await;
            remaining = rest;
            let pushed = result?;
            if pushed > 0 {
                self.shared
                    .stats
                    .added
                    .fetch_add(pushed as u64, Ordering::Relaxed);
                self.shared.gauges.record_push(pushed as u64);
                self.shared.refresh_gauges();
                self.shared.data_added.notify_one();
            }
            if remaining.is_empty() {
                return Ok(());
            }
            tracing::debug!(
                waiting = remaining.len(),
                "queue full; publishing waits for the output"
            );
            tokio::select! {
                _ = &mut space => {}
                _ = self.shared.closed.cancelled() => return Err(QueueError::Closed),
            }
        }
    }
}

#[async_trait]
impl Output for QueueHandle {
    /// Events serialised by their pipeline are queued as they are.
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        self.push(events, Durability::Now)
            .await
            .map_err(|error| OutputError::Write(error.to_string()))
    }
}

/// The queue plus its consumer; implements [`Output`] so the pipeline needs
/// no change beyond wrapping the configured output.
pub struct QueuedOutput {
    handle: QueueHandle,
    consumer: Option<JoinHandle<Box<dyn Output>>>,
    stop: CancellationToken,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for QueuedOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedOutput").finish_non_exhaustive()
    }
}

/// Builds the queue from the raw `queue` value (null → `queue.disk` with
/// defaults) and starts draining it into `output`. Must run inside a tokio
/// runtime. Events a previous run left unacknowledged are delivered first.
pub fn build_queued_output(
    queue: &Value,
    origin: &Origin,
    output: Box<dyn Output>,
    context: &BuildContext,
) -> Result<QueuedOutput, ConfigError> {
    let settings = QueueSettings::parse(queue, origin, context)?;
    QueuedOutput::start(settings, output)
        .map_err(|error| origin.error(format!("cannot open the queue: {error}")))
}

impl QueuedOutput {
    /// Opens the store and starts the consumer.
    pub fn start(settings: QueueSettings, output: Box<dyn Output>) -> Result<Self, QueueError> {
        let store: Box<dyn QueueStore> = match &settings.kind {
            QueueKind::Disk(disk) => Box::new(DiskQueue::open(disk.clone())?),
            QueueKind::Mem(events) => Box::new(MemQueue::new(*events)),
        };
        let gauges = QueueGauges::new(&settings.kind, store.pending_events());
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            data_added: Notify::new(),
            space_freed: Notify::new(),
            stats: QueueStats::default(),
            corruption: Mutex::new(Vec::new()),
            closed: CancellationToken::new(),
            gauges,
        });
        for counters in queue_counters() {
            counters.watch(&shared);
        }
        shared.record_corruption();
        shared.refresh_gauges();
        let stop = CancellationToken::new();
        tokio::spawn(refresh_gauges_periodically(Arc::downgrade(&shared), stop.clone()));
        let consumer = tokio::spawn(consume(
            Arc::clone(&shared),
            output,
            settings.clone(),
            stop.clone(),
        ));
        Ok(Self {
            handle: QueueHandle { shared },
            consumer: Some(consumer),
            stop,
            shutdown_timeout: settings.shutdown_timeout,
        })
    }

    /// A handle for another pipeline.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> QueueStatsSnapshot {
        let shared = &self.handle.shared;
        let store = shared.store();
        QueueStatsSnapshot {
            added: shared.stats.added.load(Ordering::Relaxed),
            acked: shared.stats.acked.load(Ordering::Relaxed),
            corrupt_records: shared.stats.corrupt_records.load(Ordering::Relaxed),
            pending_events: store.pending_events(),
            pending_bytes: store.pending_bytes(),
        }
    }

    /// Corrupt records skipped so far (also logged with file and offset).
    pub fn corruption_reports(&self) -> Vec<CorruptRecord> {
        self.handle
            .shared
            .corruption
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits until every queued event is acknowledged, at most `timeout`.
    /// Returns whether the queue is empty.
    pub async fn wait_until_empty(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let freed = self.handle.shared.space_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.handle.shared.store().pending_events() == 0 {
                return true;
            }
            // Also re-check periodically: the last ack may race with `enable`.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.handle.shared.store().pending_events() == 0;
            }
        }
    }
}

#[async_trait]
impl Output for QueuedOutput {
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        self.handle.publish(events).await
    }

    /// Drains the queue while the output makes progress (giving up after
    /// `shutdown_timeout` without progress), then stops the consumer
    /// (undelivered disk-queue events stay for the next start) and closes
    /// the wrapped output.
    async fn close(&mut self) -> Result<(), OutputError> {
        // Keep draining while the output makes progress; give up after
        // `shutdown_timeout` without any event delivered.
        let mut drained = false;
        loop {
            let acked_before = self.handle.shared.stats.acked.load(Ordering::Relaxed);
            if self.wait_until_empty(self.shutdown_timeout).await {
                drained = true;
                break;
            }
            if self.handle.shared.stats.acked.load(Ordering::Relaxed) == acked_before {
                break;
            }
        }
        if !drained {
            let pending = self.handle.shared.store().pending_events();
            tracing::warn!(
                pending,
                "stopping with events still queued; a disk queue delivers them at the next start"
            );
        }
        self.stop.cancel();
        self.handle.shared.closed.cancel();
        let result = match self.consumer.take() {
            Some(consumer) => match consumer.await {
                Ok(mut output) => output.close().await,
                Err(error) => Err(OutputError::Write(format!("the queue consumer failed: {error}"))),
            },
            None => Ok(()),
        };
        let shared = Arc::clone(&self.handle.shared);
        let flushed = blocking(&shared, |store| store.flush()).await;
        flushed.map_err(|error| OutputError::Write(error.to_string()))?;
        result
    }
}

impl Drop for QueuedOutput {
    fn drop(&mut self) {
        self.stop.cancel();
        self.handle.shared.closed.cancel();
    }
}

/// Reads batches, hands them to the output, and acknowledges them once
/// accepted. Returns the output when stopped, for closing.
async fn consume(
    shared: Arc<Shared>,
    mut output: Box<dyn Output>,
    settings: QueueSettings,
    stop: CancellationToken,
) -> Box<dyn Output> {
    // One backoff for both retries below; it starts over once a batch is delivered.
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let arrived = shared.data_added.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let pending = shared.store().pending_events();
        if pending == 0 {
            tokio::select! {
                _ = &mut arrived => continue,
                _ = stop.cancelled() => return output,
            }
        }
        if (pending as usize) < settings.min_events {
            // Give producers `flush.timeout` to fill a batch.
            let deadline = tokio::time::Instant::now() + settings.flush_timeout;
            loop {
                tokio::select! {
                    _ = &mut arrived => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.cancelled() => return output,
                }
                if shared.store().pending_events() as usize >= settings.min_events {
                    break;
                }
                arrived.set(shared.data_added.notified());
                arrived.as_mut().enable();
            }
        }
        let max_events = settings.max_events;
        let batch = blocking(&shared, move |store| store.read(max_events)).await;
        shared.record_corruption();
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "cannot read from the queue; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                    _ = stop.cancelled() => return output,
                }
                continue;
            }
        };
        let count = batch.events.len() as u64;
        if count > 0 {
            loop {
                let result = tokio::select! {
                    result = output.publish(batch.events.clone()) => result,
                    _ = stop.cancelled() => return output,
                };
                match result {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%error, events = count, "the output did not accept a batch; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_wait()) => {}
                            _ = stop.cancelled() => return output,
                        }
                    }
                }
            }
            backoff.reset();
        }
        if let Some(through) = batch.ack_through {
            let acked = blocking(&shared, move |store| store.ack(through)).await;
            if let Err(error) = acked {
                tracing::error!(%error, "cannot record delivered events in the queue; they may be sent again after a restart");
            }
            shared.stats.acked.fetch_add(count, Ordering::Relaxed);
            shared.refresh_gauges();
            shared.space_freed.notify_waiters();
        } else if count == 0 {
            // Nothing readable although events are pending (should not happen): avoid spinning.
            tokio::select! {
                _ = &mut arrived => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.cancelled() => return output,
            }
        }
    }
}

/// Keeps the age gauge current while the output is stuck (nothing acked).
async fn refresh_gauges_periodically(shared: std::sync::Weak<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(GAUGE_REFRESH) => {}
            _ = stop.cancelled() => return,
        }
        let Some(shared) = shared.upgrade() else { return };
        let refreshed = Arc::clone(&shared);
        // The store lock may wait on a disk write: keep it off the async threads.
        if tokio::task::spawn_blocking(move || refreshed.refresh_gauges())
            .await
            .is_err()
        {
            return;
        }
    }
}
