//! Counters of the Elasticsearch output, shaped after libbeat's
//! `libbeat.output.events.*`; `/metrics` reads them
//! (`threatbeat_output_events_total`, `threatbeat_output_write_bytes_total`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters; share with `Arc` and read with [`OutputStats::snapshot`].
#[derive(Debug, Default)]
pub struct OutputStats {
    acked: AtomicU64,
    duplicates: AtomicU64,
    already_deleted: AtomicU64,
    update_missing: AtomicU64,
    retried: AtomicU64,
    too_many: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    bulk_requests: AtomicU64,
    failed_requests: AtomicU64,
    bytes_written: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Events indexed (2xx).
    pub acked: u64,
    /// Events already indexed (409 on `create`): done, not re-indexed.
    pub duplicates: u64,
    /// Deletes of a document that was already gone (404 `not_found`): done.
    pub already_deleted: u64,
    /// Updates of a missing document (404 `document_missing_exception`):
    /// failed for good (logged once per reason, not dead-lettered).
    pub update_missing: u64,
    /// Event sends that failed transiently and were retried.
    pub retried: u64,
    /// Items answered 429 (a subset of `retried`).
    pub too_many: u64,
    /// Events refused for good and written to the dead-letter index.
    pub dead_lettered: u64,
    /// Events refused for good and dropped.
    pub dropped: u64,
    /// Bulk requests sent.
    pub bulk_requests: u64,
    /// Bulk requests that failed as a whole (connection, non-200).
    pub failed_requests: u64,
    /// Request body bytes sent (after compression).
    pub bytes_written: u64,
}

macro_rules! counter {
    ($add:ident, $field:ident) => {
        #[doc = concat!("Adds to `", stringify!($field), "`.")]
        pub fn $add(&self, count: u64) {
            self.$field.fetch_add(count, Ordering::Relaxed);
        }
    };
}

impl OutputStats {
    counter!(add_acked, acked);
    counter!(add_duplicates, duplicates);
    counter!(add_already_deleted, already_deleted);
    counter!(add_update_missing, update_missing);
    counter!(add_retried, retried);
    counter!(add_too_many, too_many);
    counter!(add_dead_lettered, dead_lettered);
    counter!(add_dropped, dropped);
    counter!(add_bulk_requests, bulk_requests);
    counter!(add_failed_requests, failed_requests);
    counter!(add_bytes_written, bytes_written);

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            acked: self.acked.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            already_deleted: self.already_deleted.load(Ordering::Relaxed),
            update_missing: self.update_missing.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            too_many: self.too_many.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bulk_requests: self.bulk_requests.load(Ordering::Relaxed),
            failed_requests: self.failed_requests.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}
