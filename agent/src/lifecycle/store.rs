//! The agent's own record of the current-state documents it maintains: for
//! every indicator id, when it expires and when its document was last written
//! (so that it is refreshed before it leaves the rules' 30-day window).
//!
//! An embedded redb database under `path.data/current_state/`, one per
//! pipeline: ACID transactions with a durable commit, so a `kill -9` leaves
//! either the state before a batch or the state after it. Two index tables
//! keyed by time make the sweep a range scan instead of a walk over every
//! indicator.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use base64::Engine;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

/// The 20 bytes behind an indicator id (its `_id` is their URL-safe base64):
/// fixed-size keys keep the store small (docs/detection.md has the figures).
pub type Key = [u8; ID_BYTES];

/// redb's page cache for one store.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes in an indicator id.
pub const ID_BYTES: usize = 20;

/// indicator id → (expires_at, written_at, content digest); times in Unix seconds.
const INDICATORS: TableDefinition<Key, (i64, i64, u64)> = TableDefinition::new("indicators");
/// (expires_at, id) → (): what expires first.
const BY_EXPIRY: TableDefinition<(i64, Key), ()> = TableDefinition::new("by_expiry");
/// (written_at, id) → (): what was written longest ago.
const BY_WRITTEN: TableDefinition<(i64, Key), ()> = TableDefinition::new("by_written");

/// The key of `id`, or `None` when it is not an indicator id of ours.
pub fn key(id: &str) -> Option<Key> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id).ok()?;
    bytes.try_into().ok()
}

/// The id of `key`.
fn id_of(key: &Key) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// What the store knows of one current-state document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// When the indicator stops being valid (Unix seconds).
    pub expires_at: i64,
    /// When its document was last written with a fresh `@timestamp`.
    pub written_at: i64,
    /// A digest of the document as written, so that an unchanged record read
    /// again is not written again.
    pub digest: u64,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("current-state store {path}: {reason}")]
pub struct StoreError {
    path: PathBuf,
    reason: String,
}

/// The store of one pipeline.
pub struct IndicatorStore {
    /// `None` while a reopen after an I/O error has not succeeded yet.
    database: RwLock<Option<Database>>,
    /// redb refuses every operation after one I/O error (a full disk) until
    /// the database is opened again: set by such an error, the next
    /// operation reopens it.
    failed: AtomicBool,
    path: PathBuf,
}

impl IndicatorStore {
    /// Opens (or creates) the store file `path`, creating its folder.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |reason: String| StoreError {
            path: path.to_owned(),
            reason,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| fail(error.to_string()))?;
        }
        // redb caches up to 1 GiB by default; the agent's memory is bounded
        // by configured budgets (docs/performance.md), so the cache is small:
        // the store is read a batch at a time.
        let database = Self::create(path).map_err(fail)?;
        let store = Self {
            database: RwLock::new(Some(database)),
            failed: AtomicBool::new(false),
            path: path.to_owned(),
        };
        // Create the tables once, so readers never meet a missing table.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    fn create(path: &Path) -> Result<Database, String> {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|error| {
                format!("{error}; if the file is damaged, remove it: the next polls write every valid indicator again")
            })
    }

    /// The open database; after an I/O error, opened again first (the old
    /// handle is closed before, as redb locks its file).
    fn database(&self) -> Result<DatabaseHandle<'_>, StoreError> {
        if self.failed.swap(false, Ordering::SeqCst) {
            let mut slot = self.database.write().unwrap_or_else(PoisonError::into_inner);
            *slot = None;
            match Self::create(&self.path) {
                Ok(database) => {
                    *slot = Some(database);
                    tracing::info!(path = %self.path.display(), "current-state store opened again after an I/O error");
                }
                Err(reason) => {
                    self.failed.store(true, Ordering::SeqCst);
                    return Err(self.error(format!("cannot open it again after an I/O error: {reason}")));
                }
            }
        }
        let guard = self.database.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            self.failed.store(true, Ordering::SeqCst);
            return Err(self.error("not open (opening it again after an I/O error failed)"));
        }
        Ok(DatabaseHandle(guard))
    }

    fn error(&self, error: impl std::fmt::Display) -> StoreError {
        let reason = error.to_string();
        // redb's `Io` and `PreviousIo` errors: every later operation fails
        // until the database is opened again.
        if reason.contains("I/O error") {
            self.failed.store(true, Ordering::SeqCst);
        }
        StoreError {
            path: self.path.clone(),
            reason,
        }
    }

    /// Runs `change` in one write transaction over the three tables and commits it.
    fn write(
        &self,
        change: impl FnOnce(&mut Tables) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        let transaction = self
            .database()?
            .begin_write()
            .map_err(|error| self.error(error))?;
        {
            let mut tables = Tables {
                indicators: transaction
                    .open_table(INDICATORS)
                    .map_err(|error| self.error(error))?,
                by_expiry: transaction
                    .open_table(BY_EXPIRY)
                    .map_err(|error| self.error(error))?,
                by_written: transaction
                    .open_table(BY_WRITTEN)
                    .map_err(|error| self.error(error))?,
            };
            change(&mut tables).map_err(|error| self.error(error))?;
        }
        transaction.commit().map_err(|error| self.error(error))
    }

    /// Records or replaces entries, in one durable transaction.
    pub fn upsert(&self, entries: &[(String, Entry)]) -> Result<(), StoreError> {
        let keyed = entries
            .iter()
            .map(|(id, entry)| Ok((self.key(id)?, *entry)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(|tables| {
            for (key, entry) in &keyed {
                tables.remove(key)?;
                tables
                    .indicators
                    .insert(key, (entry.expires_at, entry.written_at, entry.digest))?;
                tables.by_expiry.insert((entry.expires_at, *key), ())?;
                tables.by_written.insert((entry.written_at, *key), ())?;
            }
            Ok(())
        })
    }

    /// Marks `ids` as written at `written_at`, keeping their expiry; unknown
    /// ids are skipped.
    pub fn mark_written(&self, ids: &[String], written_at: i64) -> Result<(), StoreError> {
        let keys = self.keys(ids);
        self.write(|tables| {
            for key in &keys {
                let current = tables.indicators.get(key)?.map(|value| value.value());
                if let Some((expires_at, _, digest)) = current {
                    tables.remove(key)?;
                    tables.indicators.insert(key, (expires_at, written_at, digest))?;
                    tables.by_expiry.insert((expires_at, *key), ())?;
                    tables.by_written.insert((written_at, *key), ())?;
                }
            }
            Ok(())
        })
    }

    /// Forgets `ids`, in one durable transaction.
    pub fn remove(&self, ids: &[String]) -> Result<(), StoreError> {
        let keys = self.keys(ids);
        self.write(|tables| {
            for key in &keys {
                tables.remove(key)?;
            }
            Ok(())
        })
    }

    fn key(&self, id: &str) -> Result<Key, StoreError> {
        key(id).ok_or_else(|| {
            self.error(format!(
                "`{id}` is not an indicator id (base64 of {ID_BYTES} bytes)"
            ))
        })
    }

    /// The keys of `ids`; ids that are not ours cannot be in the store and are skipped.
    fn keys(&self, ids: &[String]) -> Vec<Key> {
        ids.iter().filter_map(|id| key(id)).collect()
    }

    /// The entry of `id`.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        self.reader()?.get(id)
    }

    /// A reader for many look-ups (a batch's): one read transaction, the
    /// table opened once.
    pub fn reader(&self) -> Result<Reader<'_>, StoreError> {
        let transaction = self.database()?.begin_read().map_err(|error| self.error(error))?;
        let indicators = transaction
            .open_table(INDICATORS)
            .map_err(|error| self.error(error))?;
        Ok(Reader {
            store: self,
            indicators,
        })
    }

    /// How many indicators the store holds.
    pub fn len(&self) -> Result<u64, StoreError> {
        let transaction = self.database()?.begin_read().map_err(|error| self.error(error))?;
        let table = transaction
            .open_table(INDICATORS)
            .map_err(|error| self.error(error))?;
        table.len().map_err(|error| self.error(error))
    }

    /// Whether the store holds no indicator.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// The ids of every indicator whose key is not in `keep`.
    pub fn ids_outside(&self, keep: &std::collections::HashSet<Key>) -> Result<Vec<String>, StoreError> {
        let transaction = self.database()?.begin_read().map_err(|error| self.error(error))?;
        let table = transaction
            .open_table(INDICATORS)
            .map_err(|error| self.error(error))?;
        let mut ids = Vec::new();
        for item in table.iter().map_err(|error| self.error(error))? {
            let (key, _) = item.map_err(|error| self.error(error))?;
            let key = key.value();
            if !keep.contains(&key) {
                ids.push(id_of(&key));
            }
        }
        Ok(ids)
    }

    /// Up to `limit` ids whose indicator expired at or before `now`, soonest first.
    pub fn expired(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.ids_before(BY_EXPIRY, now, limit)
    }

    /// Up to `limit` ids whose document was written at or before `before`, oldest first.
    pub fn written_before(&self, before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.ids_before(BY_WRITTEN, before, limit)
    }

    fn ids_before(
        &self,
        table: TableDefinition<(i64, Key), ()>,
        bound: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let transaction = self.database()?.begin_read().map_err(|error| self.error(error))?;
        let table = transaction.open_table(table).map_err(|error| self.error(error))?;
        let range = table
            .range((i64::MIN, [0; ID_BYTES])..=(bound, [u8::MAX; ID_BYTES]))
            .map_err(|error| self.error(error))?;
        let mut ids = Vec::new();
        for item in range.take(limit) {
            let (key, _) = item.map_err(|error| self.error(error))?;
            ids.push(id_of(&key.value().1));
        }
        Ok(ids)
    }
}

/// A read lock on the open database.
struct DatabaseHandle<'store>(RwLockReadGuard<'store, Option<Database>>);

impl std::ops::Deref for DatabaseHandle<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // `IndicatorStore::database` hands out a handle only when it is open.
        self.0.as_ref().expect("an open database")
    }
}

struct Tables<'transaction> {
    indicators: redb::Table<'transaction, Key, (i64, i64, u64)>,
    by_expiry: redb::Table<'transaction, (i64, Key), ()>,
    by_written: redb::Table<'transaction, (i64, Key), ()>,
}

impl Tables<'_> {
    /// Removes `key` and its index keys, if present.
    fn remove(&mut self, key: &Key) -> Result<(), redb::StorageError> {
        let previous = self.indicators.remove(key)?.map(|value| value.value());
        if let Some((expires_at, written_at, _)) = previous {
            self.by_expiry.remove((expires_at, *key))?;
            self.by_written.remove((written_at, *key))?;
        }
        Ok(())
    }
}

/// Look-ups in one read transaction (see [`IndicatorStore::reader`]): what
/// they see is the store as it was when the reader was made.
pub struct Reader<'a> {
    store: &'a IndicatorStore,
    indicators: redb::ReadOnlyTable<Key, (i64, i64, u64)>,
}

impl Reader<'_> {
    /// The entry of `id`; `None` for an id that is not ours.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        let Some(key) = key(id) else {
            return Ok(None);
        };
        let value = self
            .indicators
            .get(key)
            .map_err(|error| self.store.error(error))?;
        Ok(value.map(|value| {
            let (expires_at, written_at, digest) = value.value();
            Entry {
                expires_at,
                written_at,
                digest,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An indicator id as the agent makes them, from a number.
    fn id(number: u64) -> String {
        let mut key = [0u8; ID_BYTES];
        key[..8].copy_from_slice(&number.to_be_bytes());
        id_of(&key)
    }

    fn entry(expires_at: i64, written_at: i64) -> Entry {
        Entry {
            expires_at,
            written_at,
            digest: 7,
        }
    }

    #[test]
    fn upserts_replace_and_the_time_indexes_follow() {
        let folder = tempfile::tempdir().unwrap();
        let store = IndicatorStore::open(&folder.path().join("s/p.redb")).unwrap();
        store
            .upsert(&[
                (id(1), entry(100, 10)),
                (id(2), entry(50, 20)),
                (id(3), entry(300, 5)),
            ])
            .unwrap();
        assert_eq!(store.len().unwrap(), 3);
        assert_eq!(store.expired(100, 10).unwrap(), [id(2), id(1)]);
        assert_eq!(store.written_before(10, 10).unwrap(), [id(3), id(1)]);

        // `a` edited: new expiry, written again. Its old index keys are gone.
        store.upsert(&[(id(1), entry(400, 30))]).unwrap();
        assert_eq!(store.get(&id(1)).unwrap(), Some(entry(400, 30)));
        assert_eq!(store.expired(100, 10).unwrap(), [id(2)]);
        assert_eq!(store.written_before(10, 10).unwrap(), [id(3)]);
        assert_eq!(
            store.expired(i64::MAX, 2).unwrap(),
            [id(2), id(3)],
            "the limit holds"
        );

        store.mark_written(&[id(3), id(99)], 40).unwrap();
        assert_eq!(store.get(&id(3)).unwrap(), Some(entry(300, 40)));
        assert_eq!(store.written_before(39, 10).unwrap(), [id(2), id(1)]);
        assert_eq!(store.get(&id(99)).unwrap(), None);

        store.remove(&[id(2), id(99)]).unwrap();
        assert_eq!(store.get(&id(2)).unwrap(), None);
        assert_eq!(store.expired(1000, 10).unwrap(), [id(3), id(1)]);
        assert_eq!(store.len().unwrap(), 2);
    }

    #[test]
    fn what_was_committed_survives_reopening() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("p.redb");
        {
            let store = IndicatorStore::open(&path).unwrap();
            store.upsert(&[(id(1), entry(1, 2))]).unwrap();
        }
        let store = IndicatorStore::open(&path).unwrap();
        assert_eq!(store.get(&id(1)).unwrap(), Some(entry(1, 2)));
    }

    /// Disk and time for one million indicators, as docs/detection.md quotes:
    /// `cargo test -p threatbeat --lib lifecycle::store -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run explicitly"]
    fn measure_one_million_indicators() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("p.redb");
        let store = IndicatorStore::open(&path).unwrap();
        let started = std::time::Instant::now();
        for batch in 0..100 {
            let entries: Vec<(String, Entry)> = (0..10_000)
                .map(|number| {
                    (
                        id((batch * 10_000 + number) as u64),
                        entry(1_700_000_000 + number, 1_690_000_000 + batch),
                    )
                })
                .collect();
            store.upsert(&entries).unwrap();
        }
        let written = started.elapsed();
        let started = std::time::Instant::now();
        let due = store.expired(1_700_005_000, usize::MAX).unwrap().len();
        let scanned = started.elapsed();
        let bytes = std::fs::metadata(&path).unwrap().len();
        println!(
            "1,000,000 indicators: {:.1} MB on disk, written in {written:?} (100 transactions), {due} due found in {scanned:?}",
            bytes as f64 / 1e6
        );
        assert_eq!(store.len().unwrap(), 1_000_000);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("p.redb");
        std::fs::write(&path, b"not a redb database at all, just text").unwrap();
        let error = IndicatorStore::open(&path)
            .err()
            .expect("a damaged file is refused");
        let message = error.to_string();
        assert!(
            message.contains("p.redb") && message.contains("remove it"),
            "{message}"
        );
    }
}
