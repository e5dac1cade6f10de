//! The three plugin kinds and the contract between them.
//!
//! An [`Input`] produces [`Batch`]es and hands each to its [`Publisher`].
//! `publish` returns only once the pipeline has made the batch durable (the
//! queue, or until the queue exists, the output accepted it); only then does
//! the pipeline persist the batch's cursor. So a cursor never moves past
//! events that could still be lost.

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::{EncodedEvent, Event};

/// What a processor decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// Pass the event on.
    Keep,
    /// Drop the event (`drop_event`, or a failure configured to drop).
    Drop,
}

/// A processor failed on one event. The chain records the message in
/// `error.message` and keeps the event unless configured otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProcessorError(pub String);

impl ProcessorError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Transforms events one at a time. Built once per pipeline from config;
/// shared across tasks, so it holds no per-event state.
pub trait Processor: Send + Sync {
    /// The registered type name (for logs and error messages).
    fn name(&self) -> &str;

    /// Transforms `event` in place.
    fn process(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError>;
}

/// A group of events from one input plus the cursor that covers them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The events, in the order the input produced them.
    pub events: Vec<Event>,
    /// The input's cursor once these events are durable; `None` leaves the
    /// stored cursor as it is. A batch may carry a cursor and no events.
    pub cursor: Option<Value>,
    /// The first batch of a poll that read the source from its beginning.
    pub starts_poll: bool,
    /// The last batch of a poll that ended normally: with [`Batch::starts_poll`]
    /// seen earlier, the batches in between are everything the source
    /// answered. A fileset whose source is a whole list every time (a
    /// blocklist) ends the indicators such a poll no longer held.
    pub ends_poll: bool,
    /// The input fetches these events again until a later batch stores its
    /// cursor (an early slice of a page whose last slice carries it): the
    /// queue may make them durable together with that batch instead of
    /// before this one is acknowledged (`queue.disk.fsync: cursor`).
    pub fetched_again_until_cursor: bool,
}

/// Why a batch could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The pipeline is shutting down; the batch was not accepted.
    #[error("the pipeline is closed")]
    Closed,
    /// The pipeline tried and failed (the output refused the events).
    #[error("the pipeline did not accept the batch: {0}")]
    Failed(String),
}

/// A batch waiting for the pipeline, with the channel that acknowledges it.
#[derive(Debug)]
pub struct PublishRequest {
    /// The batch.
    pub batch: Batch,
    /// Answered once the batch is durable (or failed).
    pub ack: oneshot::Sender<Result<(), PublishError>>,
}

/// The input's handle on its pipeline.
#[derive(Debug, Clone)]
pub struct Publisher {
    sender: mpsc::Sender<PublishRequest>,
}

impl Publisher {
    /// A publisher and the receiving end a pipeline (or a test) drains.
    /// `capacity` bounds how many batches may wait: a slow pipeline pauses
    /// the input instead of growing memory.
    pub fn channel(capacity: usize) -> (Publisher, mpsc::Receiver<PublishRequest>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Publisher { sender }, receiver)
    }

    /// Hands `batch` to the pipeline and waits until it is durable.
    pub async fn publish(&self, batch: Batch) -> Result<(), PublishError> {
        let (ack, answer) = oneshot::channel();
        self.sender
            .send(PublishRequest { batch, ack })
            .await
            .map_err(|_| PublishError::Closed)?;
        answer.await.map_err(|_| PublishError::Closed)?
    }
}

/// Why an input stopped before it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The input cannot run at all (a certificate file vanished, say).
    #[error("{0}")]
    Fatal(String),
}

/// What an input receives when it starts.
#[derive(Debug, Clone)]
pub struct InputContext {
    /// The pipeline id (`threatintel/misp`), used in logs and state names.
    pub id: String,
    /// Where batches go.
    pub publisher: Publisher,
    /// The cursor persisted by the last durable batch, if any.
    pub cursor: Option<Value>,
    /// Cancelled when the input must stop (shutdown, reload).
    pub shutdown: CancellationToken,
    /// `threatbeat run --once`: do one complete pass (one poll with all its
    /// pages, or every file once), publish it, and return.
    pub run_once: bool,
}

/// Produces events until shut down.
#[async_trait]
pub trait Input: Send {
    /// Runs until `context.shutdown` is cancelled. Failures of one poll are
    /// logged and retried by the input itself; an error here means the
    /// input cannot run at all.
    async fn run(self: Box<Self>, context: InputContext) -> Result<(), InputError>;
}

/// Why an output could not write events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// Writing failed; the events were not accepted and may be retried.
    #[error("{0}")]
    Write(String),
}

/// Writes events somewhere (stdout, files, Elasticsearch).
///
/// Events arrive serialised, as the pipelines encode them and the queue
/// stores them: an output writes the document bytes as they are and reads
/// only the small metadata it needs.
#[async_trait]
pub trait Output: Send {
    /// Writes `events`; returns once they are accepted by the destination.
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError>;

    /// Serialises `events` and writes them with [`Output::publish`], for a
    /// caller holding events as trees.
    async fn publish_events(&mut self, events: Vec<Event>) -> Result<(), OutputError> {
        let encoded = events
            .into_iter()
            .map(Event::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| OutputError::Write(format!("cannot serialise an event: {error}")))?;
        self.publish(encoded).await
    }

    /// Flushes and releases resources.
    async fn close(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_waits_for_the_pipeline_ack() {
        let (publisher, mut receiver) = Publisher::channel(1);
        let pipeline = tokio::spawn(async move {
            let request = receiver.recv().await.unwrap();
            assert_eq!(request.batch.events.len(), 2);
            request.ack.send(Ok(())).unwrap();
        });
        let batch = Batch {
            events: vec![Event::default(), Event::default()],
            cursor: Some(serde_json::json!({"timestamp": "1"})),
            ..Batch::default()
        };
        publisher.publish(batch).await.unwrap();
        pipeline.await.unwrap();
    }

    #[tokio::test]
    async fn publish_fails_when_the_pipeline_is_gone() {
        let (publisher, receiver) = Publisher::channel(1);
        drop(receiver);
        assert_eq!(
            publisher.publish(Batch::default()).await,
            Err(PublishError::Closed)
        );
    }

    #[tokio::test]
    async fn publish_fails_when_the_request_is_dropped_unanswered() {
        let (publisher, mut receiver) = Publisher::channel(1);
        tokio::spawn(async move {
            let request = receiver.recv().await;
            drop(request);
        });
        assert_eq!(
            publisher.publish(Batch::default()).await,
            Err(PublishError::Closed)
        );
    }
}
