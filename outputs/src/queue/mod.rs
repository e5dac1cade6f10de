//! The queue between processors and the output (`queue.disk`, default, or
//! `queue.mem`), and [`QueuedOutput`], the wrapper that puts it in front of
//! any output: its `publish` returns once the events are durable in the
//! queue (so the input's cursor may move), and a background consumer drains
//! the queue into the wrapped output, freeing events only once the output
//! accepted them.
//!
//! # Disk format
//!
//! A directory (default `${path.data}/diskqueue`) holds:
//!
//! - segment files `0000000000.seg`, `0000000001.seg`, … (increasing id).
//!   Each starts with an 8-byte header, `b"TBQS"` then the format version as
//!   u32 LE (2, or 3 when compressed), followed by frames. A frame is
//!   `b"TBFR"`, payload length (u32 LE), sequence number (u64 LE), the
//!   payload, and a CRC-32 (IEEE, u32 LE) over length, sequence number and
//!   payload. The payload is the event's `@metadata` as a JSON object, a
//!   newline, then the document as compact JSON, exactly the bytes the
//!   Elasticsearch output sends as the bulk source line, so the consumer
//!   never parses documents again. (Version 1 segments, whose payload is
//!   the whole event as one JSON object, are still read.) With
//!   `compression: lz4` segments are version 3: each payload is the version-2
//!   payload compressed as one LZ4 block, preceded by its uncompressed
//!   length (u32 LE); the CRC covers these stored bytes. A segment keeps the
//!   version it was written with, so one queue may hold versions 1, 2 and 3
//!   after the setting changed, and each is read as its header says. A
//!   record whose CRC checks out but whose block does not decompress (or
//!   whose length prefix is above the record limit) is skipped like a torn
//!   one.
//! - `ack.state`: the first unacknowledged sequence number (u64 LE) and its
//!   CRC-32 (u32 LE), replaced atomically (write to `ack.state.tmp`, rename);
//! - `lock`: the PID of the process using the queue.
//!
//! # Invariants
//!
//! - Sequence numbers increase by one per event across segments.
//! - A push returns only after the frames are written and, with `fsync:
//!   cursor` (the default) or `batch`, fsynced: the cursor moves only past
//!   durable events. Under `cursor`, a push of events the input fetches
//!   again until a later batch stores its cursor ([`Durability::WithCursor`]:
//!   the early slices of a page) is fsynced with that batch instead.
//! - Events are freed (ack state advanced, whole segments deleted) only after
//!   the wrapped output accepted them, in order.
//! - Producers wait while the unacknowledged bytes would exceed `max_size`
//!   (back-pressure); nothing is ever dropped for lack of room.
//!
//! # Recovery
//!
//! At open, segments whose events are all below the ack position are
//! deleted, and reading restarts at the first unacknowledged event, so a
//! crash or `kill -9` at any moment replays at most the events that were
//! being delivered (documents carry a deterministic `_id`, so the replay
//! creates no duplicates). Writing always starts a new segment. A frame whose
//! marker, length or checksum is wrong (a torn write, a garbled byte) is
//! reported with its file and offset, and reading continues at the next
//! frame marker whose frame checks out; an unreadable `ack.state` replays
//! everything. No corruption stops the agent.

mod disk;
mod frame;
mod gauges;
mod lock;
mod mem;
mod queued_output;
mod recovery;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::PathBuf;

use threatbeat_core::EncodedEvent;

pub use disk::{Compression, DiskQueue, DiskSettings, FsyncPolicy};
pub use mem::MemQueue;
pub use queued_output::{build_queued_output, QueueHandle, QueueStats, QueueStatsSnapshot, QueuedOutput};
pub use settings::{QueueKind, QueueSettings};

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A file operation failed.
    #[error("disk queue file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process (or queue) uses the directory.
    #[error("the disk queue {path} is in use by {owner}; give each threatbeat its own path.data or queue.disk.path")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Who holds it.
        owner: String,
    },
    /// An event could not be serialized.
    #[error("cannot encode an event for the queue: {0}")]
    Encode(String),
    /// The queue was closed while a publish waited for room.
    #[error("the queue is closed")]
    Closed,
}

/// A corrupt stretch that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The segment (or ack) file.
    pub file: PathBuf,
    /// The byte offset of the bad record.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// Events handed out by [`QueueStore::read`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadBatch {
    /// The events, oldest first.
    pub events: Vec<EncodedEvent>,
    /// Acknowledge through this sequence number once `events` are delivered
    /// (it may also cover corrupt records that were skipped).
    pub ack_through: Option<u64>,
}

/// When the events of a push must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the push returns, as the fsync policy says: a batch that moves
    /// a cursor, or whose events no one would send again.
    Now,
    /// With the next push that is durable now: events the input fetches
    /// again until a later batch stores its cursor. Only `fsync: cursor`
    /// makes the difference; every other policy treats them as [`Durability::Now`].
    WithCursor,
}

/// The storage behind a queue. Calls are synchronous; [`QueuedOutput`]
/// runs them off the async threads.
pub trait QueueStore: Send {
    /// Appends as many events from the front of `events` as fit (at least one
    /// when the queue is empty), removes them from `events`, makes them
    /// durable per the fsync policy and `durability` (with no events, what
    /// earlier pushes left to be made durable), and returns how many were
    /// taken.
    fn push(
        &mut self,
        events: &mut VecDeque<EncodedEvent>,
        durability: Durability,
    ) -> Result<usize, QueueError>;
    /// The next unread events, at most `max_events`.
    fn read(&mut self, max_events: usize) -> Result<ReadBatch, QueueError>;
    /// Frees every event up to sequence number `through`.
    fn ack(&mut self, through: u64) -> Result<(), QueueError>;
    /// Events pushed and not yet acknowledged.
    fn pending_events(&self) -> u64;
    /// Bytes of those events on disk (0 for the memory queue).
    fn pending_bytes(&self) -> u64;
    /// Forces written data to disk.
    fn flush(&mut self) -> Result<(), QueueError>;
    /// Corrupt records found since the last call.
    fn take_corruption(&mut self) -> Vec<CorruptRecord>;
}
