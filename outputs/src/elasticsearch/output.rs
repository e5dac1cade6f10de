//! The Elasticsearch output: sends events with `_bulk`, classifies every
//! item, retries what is transient with backoff, splits on 413, routes
//! refused documents to the dead-letter index or drops them, and returns
//! only once every event is settled (acked, duplicate, already deleted,
//! update of a missing document, dead-lettered or dropped). During an outage
//! `publish` keeps retrying: the queue in front holds the rest.
//!
//! Order per document: of several events for the same `(index, _id)` in one
//! call (an `index` then an `update`, an `update` then a `delete`), only the
//! oldest unsettled one is in flight at any time, so retries, 413 splits and
//! concurrent workers never apply them out of order.

use std::collections::HashSet;
use std::mem;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use reqwest::Method;
use threatbeat_core::{Backoff, EncodedEvent, Output, OutputError};

use super::bulk::{self, BulkItem, BULK_PATH};
use super::classify::{classify_item, classify_response, ItemOutcome, ResponseOutcome};
use super::client::{lock, Client, Gzip, RequestBody};
use super::config::{NonIndexablePolicy, ResolvedSettings};
use super::stats::OutputStats;
use crate::metrics;

/// How many distinct refusal reasons are remembered for "log once".
const MAX_REMEMBERED_REASONS: usize = 1024;

/// A document Elasticsearch refused for good.
struct Refusal {
    item: BulkItem,
    status: u16,
    error_type: String,
    reason: String,
}

/// What one bulk request (and its 413 halves) settled.
#[derive(Default)]
struct ChunkResult {
    retry: Vec<BulkItem>,
    refused: Vec<Refusal>,
    progress: bool,
    transient_failure: bool,
    credentials_rejected: bool,
}

/// `output.elasticsearch`.
pub struct ElasticsearchOutput {
    client: Arc<Client>,
    settings: Arc<ResolvedSettings>,
    stats: Arc<OutputStats>,
    logged_reasons: Mutex<HashSet<String>>,
    /// Since when no bulk request got an answer with items, and when that
    /// was last logged: an outage is logged when it starts, every
    /// [`OUTAGE_REMINDER`] while it lasts and when it ends, not per retry.
    outage: Mutex<Option<Outage>>,
    /// Bulk bodies' buffers (the stretch being gzipped, or the whole body
    /// sent uncompressed), kept between requests: one allocated afresh for
    /// each request was faulted in page by page each time
    /// (docs/performance.md, "Allocation churn").
    spare_bodies: Mutex<Vec<Vec<u8>>>,
}

/// A bulk body's buffer larger than this is freed after its request
/// instead of kept (an unusually large chunk of documents).
const MAX_KEPT_BODY: usize = 16 << 20;

/// Bytes of a bulk body gathered before they are gzipped: few enough to
/// hold, many enough that the compressor is called a few times per request,
/// not twice per document.
const GZIP_STRETCH: usize = 256 << 10;

/// How often a lasting outage is logged again.
const OUTAGE_REMINDER: std::time::Duration = std::time::Duration::from_secs(300);

/// An ongoing outage of the cluster.
#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    last_logged: Instant,
}

impl std::fmt::Debug for ElasticsearchOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchOutput")
            .field(
                "hosts",
                &self
                    .settings
                    .hosts
                    .iter()
                    .map(|url| url.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ElasticsearchOutput {
    /// An output for the resolved settings.
    pub fn new(settings: ResolvedSettings) -> Result<Self, super::client::TransportError> {
        let client = Client::new(&settings)?;
        let stats = Arc::new(OutputStats::default());
        metrics::output().watch(&stats);
        Ok(Self {
            client: Arc::new(client),
            settings: Arc::new(settings),
            stats,
            logged_reasons: Mutex::new(HashSet::new()),
            outage: Mutex::new(None),
            spare_bodies: Mutex::new(Vec::new()),
        })
    }

    /// A bulk request failed as a whole (no answer, or 5xx/429 for the
    /// request): the first failure of an outage is a warning, later ones
    /// are debug detail until the reminder is due.
    fn note_failure(&self, error: &dyn std::fmt::Display) {
        let mut outage = self
            .outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match outage.as_mut() {
            None => {
                *outage = Some(Outage {
                    since: now,
                    last_logged: now,
                });
                tracing::warn!(%error, queued = metrics::queue_pending_events(), "Elasticsearch is unavailable; events wait in the queue and are retried with backoff (logged again when delivery resumes)");
            }
            Some(ongoing) if now.duration_since(ongoing.last_logged) >= OUTAGE_REMINDER => {
                ongoing.last_logged = now;
                let down_for = std::time::Duration::from_secs(now.duration_since(ongoing.since).as_secs());
                tracing::warn!(%error, ?down_for, queued = metrics::queue_pending_events(), "Elasticsearch is still unavailable; events wait in the queue");
            }
            Some(_) => tracing::debug!(%error, "Elasticsearch still unavailable; retrying"),
        }
    }

    /// The cluster answered a bulk request with items: ends an outage.
    fn note_answer(&self) {
        let ended = self
            .outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(outage) = ended {
            let down_for = std::time::Duration::from_secs(outage.since.elapsed().as_secs());
            tracing::info!(
                ?down_for,
                backlog = metrics::queue_pending_events(),
                "Elasticsearch accepts events again; delivering the queued backlog"
            );
        }
    }

    /// The counters (acked, duplicates, retried, dead-lettered, dropped, requests).
    pub fn stats(&self) -> Arc<OutputStats> {
        Arc::clone(&self.stats)
    }

    /// Sends `events` until every one is settled.
    pub async fn deliver(&self, events: Vec<EncodedEvent>) {
        let mut pending = Vec::with_capacity(events.len());
        let mut refused = Vec::new();
        for event in events {
            match bulk::encode(event, &self.settings) {
                Ok(item) => pending.push(item),
                Err((event, reason)) => self.route_refused_event(event, &reason, &mut pending),
            }
        }
        let mut backoff = Backoff::new(self.settings.backoff.init, self.settings.backoff.max);
        let concurrency = self.settings.worker * self.client.host_count();
        loop {
            for refusal in refused.drain(..) {
                self.route_refusal(refusal, &mut pending);
            }
            if pending.is_empty() {
                return;
            }
            let (ready, held) = one_per_document(mem::take(&mut pending));
            let chunks = chunk(ready, self.settings.bulk_max_size);
            let results: Vec<ChunkResult> = stream::iter(chunks)
                .map(|items| self.send(items))
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            let (mut progress, mut transient, mut credentials) = (false, false, false);
            for result in results {
                progress |= result.progress;
                transient |= result.transient_failure;
                credentials |= result.credentials_rejected;
                self.stats.add_retried(result.retry.len() as u64);
                pending.extend(result.retry);
                refused.extend(result.refused);
            }
            // After the retries: each document's older event stays first.
            pending.extend(held);
            if progress {
                backoff.reset();
            }
            if !pending.is_empty() && (transient || credentials) {
                let wait = if credentials {
                    backoff.max_wait()
                } else {
                    backoff.next_wait()
                };
                tracing::debug!(
                    events = pending.len(),
                    wait_ms = wait.as_millis() as u64,
                    "retrying after backoff"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Sends one chunk; on 413 splits it in two and sends the halves.
    fn send(&self, items: Vec<BulkItem>) -> BoxFuture<'_, ChunkResult> {
        Box::pin(async move {
            let size = items.iter().map(BulkItem::len).sum();
            let mut buffer = lock(&self.spare_bodies).pop().unwrap_or_default();
            let body = match self.client.gzip_level() {
                // Gzipped a stretch at a time: the whole uncompressed body
                // is never held, only the stretch and the compressed body.
                Some(level) => {
                    let mut body = Gzip::new(level, size);
                    for item in &items {
                        item.write_to(&mut buffer);
                        if buffer.len() >= GZIP_STRETCH {
                            body.write(&buffer);
                            buffer.clear();
                        }
                    }
                    body.write(&buffer);
                    RequestBody::Gzip(body.finish())
                }
                None => {
                    buffer.reserve(size);
                    for item in &items {
                        item.write_to(&mut buffer);
                    }
                    RequestBody::Plain(&buffer)
                }
            };
            self.stats.add_bulk_requests(1);
            let started = Instant::now();
            let reply = self
                .client
                .request(Method::POST, BULK_PATH, Some((body, "application/json")))
                .await;
            if buffer.capacity() <= MAX_KEPT_BODY {
                buffer.clear();
                lock(&self.spare_bodies).push(buffer);
            }
            let output_metrics = metrics::output();
            output_metrics
                .bulk_duration
                .observe(started.elapsed().as_secs_f64());
            let status_label = match &reply {
                Ok(reply) => reply.status.to_string(),
                Err(_) => "error".to_owned(),
            };
            output_metrics
                .bulk_requests
                .with_label_values(&[status_label.as_str()])
                .inc();
            let reply = match reply {
                Ok(reply) => {
                    self.stats.add_bytes_written(reply.sent_bytes);
                    reply
                }
                Err(error) => {
                    self.stats.add_failed_requests(1);
                    self.note_failure(&error);
                    return retry_all(items, false);
                }
            };
            match classify_response(reply.status) {
                ResponseOutcome::ReadItems => {
                    self.note_answer();
                    self.settle_items(items, &reply.body)
                }
                ResponseOutcome::Split if items.len() > 1 => {
                    let mut first = items;
                    let second = first.split_off(first.len() / 2);
                    tracing::info!(
                        events = first.len() + second.len(),
                        "Elasticsearch answered 413 (request too large); splitting the batch"
                    );
                    let mut result = self.send(first).await;
                    let other = self.send(second).await;
                    result.retry.extend(other.retry);
                    result.refused.extend(other.refused);
                    result.progress |= other.progress;
                    result.transient_failure |= other.transient_failure;
                    result.credentials_rejected |= other.credentials_rejected;
                    result
                }
                ResponseOutcome::Split => {
                    let item = items.into_iter().next();
                    let mut result = ChunkResult::default();
                    if let Some(item) = item {
                        result.refused.push(Refusal {
                            item,
                            status: 413,
                            error_type: "request_entity_too_large".to_owned(),
                            reason: "a single event is larger than the cluster's http.max_content_length"
                                .to_owned(),
                        });
                    }
                    result
                }
                ResponseOutcome::CredentialsRejected => {
                    self.stats.add_failed_requests(1);
                    tracing::error!(
                        status = reply.status,
                        host = %reply.host,
                        reason = %bulk::request_error_reason(&reply.body),
                        retry_in_secs = self.settings.backoff.max.as_secs(),
                        "Elasticsearch rejected the credentials (401) or their privileges (403): check \
                         output.elasticsearch username/password or api_key; sending is paused and retried slowly"
                    );
                    retry_all(items, true)
                }
                ResponseOutcome::RetryAll => {
                    self.stats.add_failed_requests(1);
                    self.note_failure(&format_args!(
                        "{} answered {}: {}",
                        reply.host,
                        reply.status,
                        bulk::request_error_reason(&reply.body)
                    ));
                    retry_all(items, false)
                }
            }
        })
    }

    fn settle_items(&self, items: Vec<BulkItem>, body: &[u8]) -> ChunkResult {
        let has_deletes = items
            .iter()
            .any(|item| item.op == threatbeat_core::OpType::Delete);
        let results = match bulk::decode_response(body, items.len(), has_deletes) {
            Ok(None) => {
                self.count_acked(&items, 0);
                return ChunkResult {
                    progress: true,
                    ..ChunkResult::default()
                };
            }
            Ok(Some(results)) => results,
            Err(reason) => {
                tracing::warn!(%reason, "unexpected bulk response; will retry the whole batch");
                return retry_all(items, false);
            }
        };
        let mut chunk = ChunkResult::default();
        for (item, result) in items.into_iter().zip(results) {
            match classify_item(result.status, item.op) {
                ItemOutcome::Acked => {
                    chunk.progress = true;
                    self.count_acked(std::slice::from_ref(&item), 0);
                }
                ItemOutcome::Duplicate => {
                    chunk.progress = true;
                    self.count_acked(std::slice::from_ref(&item), 1);
                }
                ItemOutcome::AlreadyDeleted => {
                    chunk.progress = true;
                    self.stats.add_already_deleted(1);
                }
                ItemOutcome::UpdateMissing => {
                    chunk.progress = true;
                    self.stats.add_update_missing(1);
                    self.log_refusal_once(
                        result
                            .error_type
                            .as_deref()
                            .unwrap_or("document_missing_exception"),
                        result.reason.as_deref().unwrap_or("document missing"),
                        &item.index,
                        "the update is dropped (the document is gone: expired, deleted or never indexed)",
                    );
                }
                ItemOutcome::Retry => {
                    if result.status == 429 {
                        self.stats.add_too_many(1);
                    } else {
                        self.log_refusal_once(
                            result.error_type.as_deref().unwrap_or("retryable"),
                            result.reason.as_deref().unwrap_or(""),
                            &item.index,
                            "kept and retried",
                        );
                    }
                    chunk.transient_failure = true;
                    chunk.retry.push(item);
                }
                ItemOutcome::NonIndexable => chunk.refused.push(Refusal {
                    item,
                    status: result.status,
                    error_type: result
                        .error_type
                        .unwrap_or_else(|| format!("status {}", result.status)),
                    reason: result.reason.unwrap_or_default(),
                }),
            }
        }
        chunk
    }

    /// Counts settled items: `duplicate` 1 means "409 on create".
    fn count_acked(&self, items: &[BulkItem], duplicate: u64) {
        for item in items {
            if item.dead_letter {
                self.stats.add_dead_lettered(1);
            } else if duplicate == 1 {
                self.stats.add_duplicates(1);
            } else {
                self.stats.add_acked(1);
            }
        }
    }

    fn route_refusal(&self, refusal: Refusal, pending: &mut Vec<BulkItem>) {
        let Refusal {
            item,
            status,
            error_type,
            reason,
        } = refusal;
        let outcome = match (&self.settings.non_indexable_policy, status) {
            (_, _) if item.dead_letter => "dropped (the dead-letter index refused it too)".to_owned(),
            (NonIndexablePolicy::DeadLetterIndex(index), status) if status != 413 => {
                format!("sent to dead-letter index {index}")
            }
            _ => "dropped".to_owned(),
        };
        self.log_refusal_once(&error_type, &reason, &item.index, &outcome);
        if item.dead_letter {
            tracing::error!(
                index = %item.index, error_type = %error_type, reason = %reason,
                "the dead-letter index refused a record too; dropping it"
            );
            self.stats.add_dropped(1);
            return;
        }
        match &self.settings.non_indexable_policy {
            NonIndexablePolicy::DeadLetterIndex(index) if status != 413 => {
                match bulk::dead_letter(&item, index, status, &error_type, &reason) {
                    Ok(record) => pending.push(record),
                    Err(error) => {
                        tracing::error!(%error, "cannot build the dead-letter record; dropping the event");
                        self.stats.add_dropped(1);
                    }
                }
            }
            _ => self.stats.add_dropped(1),
        }
    }

    fn route_refused_event(&self, event: EncodedEvent, reason: &str, pending: &mut Vec<BulkItem>) {
        let item = BulkItem {
            event,
            op: threatbeat_core::OpType::Create,
            index: String::new(),
            action: Vec::new(),
            dead_letter: false,
        };
        self.route_refusal(
            Refusal {
                item,
                status: 400,
                error_type: "index_format_error".to_owned(),
                reason: reason.to_owned(),
            },
            pending,
        );
    }

    /// Logs a refusal reason at warn the first time, at debug afterwards.
    fn log_refusal_once(&self, error_type: &str, reason: &str, index: &str, outcome: &str) {
        let first_time = {
            let mut seen = self
                .logged_reasons
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = format!("{error_type}\u{0}{}", generalise(reason));
            if seen.contains(&key) {
                false
            } else {
                if seen.len() >= MAX_REMEMBERED_REASONS {
                    seen.clear();
                }
                seen.insert(key)
            }
        };
        if first_time {
            tracing::warn!(%error_type, %reason, %index, %outcome,
                "Elasticsearch refused a document (logged once per reason; see the output counters)");
        } else {
            tracing::debug!(%error_type, %reason, %index, %outcome, "Elasticsearch refused a document");
        }
    }
}

/// The reason without document ids and values, so "log once" groups them.
fn generalise(reason: &str) -> String {
    reason
        .split(" in document with id")
        .next()
        .unwrap_or(reason)
        .to_owned()
}

/// Splits `items` (in order) into those that may be sent now, at most one
/// per document, and those that wait for an older event on the same
/// document to settle.
fn one_per_document(items: Vec<BulkItem>) -> (Vec<BulkItem>, Vec<BulkItem>) {
    let mut in_flight: HashSet<(String, String)> = HashSet::new();
    let (mut ready, mut held) = (Vec::with_capacity(items.len()), Vec::new());
    for item in items {
        let first = match item.document_key() {
            Some((index, id)) => in_flight.insert((index.to_owned(), id.to_owned())),
            None => true,
        };
        if first {
            ready.push(item);
        } else {
            held.push(item);
        }
    }
    (ready, held)
}

fn retry_all(items: Vec<BulkItem>, credentials: bool) -> ChunkResult {
    ChunkResult {
        retry: items,
        transient_failure: !credentials,
        credentials_rejected: credentials,
        ..ChunkResult::default()
    }
}

fn chunk(mut items: Vec<BulkItem>, size: usize) -> Vec<Vec<BulkItem>> {
    let mut chunks = Vec::with_capacity(items.len() / size + 1);
    while items.len() > size {
        let rest = items.split_off(size);
        chunks.push(items);
        items = rest;
    }
    if !items.is_empty() {
        chunks.push(items);
    }
    chunks
}

#[async_trait]
impl Output for ElasticsearchOutput {
    /// The queue's documents go into the bulk body as they are, unparsed.
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        self.deliver(events).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threatbeat_core::Event;

    #[test]
    fn chunks_keep_order_and_size() {
        let item = |n: u8| BulkItem {
            event: Event::default().encode().unwrap(),
            op: threatbeat_core::OpType::Create,
            index: n.to_string(),
            action: vec![n],
            dead_letter: false,
        };
        let chunks = chunk((0..5).map(item).collect(), 2);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(chunks[2][0].index, "4");
    }

    #[test]
    fn one_event_per_document_in_flight() {
        let item = |index: &str, id: Option<&str>, n: u8| {
            let mut event = Event::default();
            if let Some(id) = id {
                event.set_id(id);
            }
            BulkItem {
                event: event.encode().unwrap(),
                op: threatbeat_core::OpType::Index,
                index: index.to_owned(),
                action: vec![n],
                dead_letter: false,
            }
        };
        let items = vec![
            item("a", Some("1"), 0),
            item("a", Some("2"), 1),
            item("a", Some("1"), 2),
            item("b", Some("1"), 3),
            item("a", None, 4),
            item("a", None, 5),
            item("a", Some("1"), 6),
        ];
        let (ready, held) = one_per_document(items);
        let order = |items: &[BulkItem]| items.iter().map(|item| item.action[0]).collect::<Vec<_>>();
        assert_eq!(order(&ready), [0, 1, 3, 4, 5]);
        assert_eq!(order(&held), [2, 6]);
        let (ready, held) = one_per_document(held);
        assert_eq!((order(&ready), order(&held)), (vec![2], vec![6]));
    }

    #[test]
    fn reasons_are_grouped_without_ids() {
        assert_eq!(
            generalise("failed to parse field [ip] of type [ip] in document with id 'a'. Preview: '1'"),
            generalise("failed to parse field [ip] of type [ip] in document with id 'b'. Preview: '2'")
        );
    }
}
