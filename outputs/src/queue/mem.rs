//! `queue.mem`: the same contract as the disk queue, in memory. Faster, but
//! events not yet acknowledged are lost when the process stops.

use std::collections::VecDeque;

use threatbeat_core::EncodedEvent;

use super::{CorruptRecord, Durability, QueueError, QueueStore, ReadBatch};

/// An in-memory queue bounded by a number of events.
#[derive(Debug)]
pub struct MemQueue {
    max_events: usize,
    /// Unacknowledged events; the first `read` of them were handed out.
    events: VecDeque<EncodedEvent>,
    read: usize,
    /// Sequence number of `events[0]`.
    first_seq: u64,
}

impl MemQueue {
    /// A queue holding at most `max_events` unacknowledged events.
    pub fn new(max_events: usize) -> Self {
        Self {
            max_events: max_events.max(1),
            events: VecDeque::new(),
            read: 0,
            first_seq: 0,
        }
    }
}

impl QueueStore for MemQueue {
    fn push(&mut self, events: &mut VecDeque<EncodedEvent>, _: Durability) -> Result<usize, QueueError> {
        let room = self
            .max_events
            .saturating_sub(self.events.len())
            .min(events.len());
        self.events.extend(events.drain(..room));
        Ok(room)
    }

    fn read(&mut self, max_events: usize) -> Result<ReadBatch, QueueError> {
        let end = (self.read + max_events).min(self.events.len());
        let batch: Vec<EncodedEvent> = self.events.range(self.read..end).cloned().collect();
        self.read = end;
        let ack_through = (self.read > 0).then(|| self.first_seq + self.read as u64 - 1);
        Ok(ReadBatch {
            events: batch,
            ack_through,
        })
    }

    fn ack(&mut self, through: u64) -> Result<(), QueueError> {
        if through < self.first_seq {
            return Ok(());
        }
        let count = ((through - self.first_seq + 1) as usize).min(self.read);
        self.events.drain(..count);
        self.read -= count;
        self.first_seq += count as u64;
        Ok(())
    }

    fn pending_events(&self) -> u64 {
        self.events.len() as u64
    }

    fn pending_bytes(&self) -> u64 {
        0
    }

    fn flush(&mut self) -> Result<(), QueueError> {
        Ok(())
    }

    fn take_corruption(&mut self) -> Vec<CorruptRecord> {
        Vec::new()
    }
}
