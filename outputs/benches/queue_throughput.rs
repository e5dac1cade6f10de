//! Queue throughput: the disk queue (each fsync policy, and with
//! `compression: lz4`), the memory queue and, with `--features bench-redb`,
//! a redb-backed queue, against a baseline of raw sequential file writes and
//! reads of the same bytes in the same run. Prints MB/s of event bytes (the
//! same figure for every store, so the rates compare), the ratio to the
//! baseline, and the bytes each store holds on disk per event.
//!
//! ```text
//! cargo bench -p threatbeat-outputs --bench queue_throughput
//! cargo bench -p threatbeat-outputs --bench queue_throughput --features bench-redb
//! ```

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use threatbeat_core::{EncodedEvent, Event};
use threatbeat_outputs::queue::{
    Compression, DiskQueue, DiskSettings, Durability, FsyncPolicy, MemQueue, QueueStore,
};

const EVENTS: usize = 100_000;
const BATCH: usize = 500;

fn events(count: usize) -> Vec<EncodedEvent> {
    (0..count)
        .map(|n| {
            let mut event = Event::from_value(json!({
                "@timestamp": "2026-01-02T03:04:05.000Z",
                "event": {"kind": "enrichment", "category": ["threat"], "type": ["indicator"], "module": "threatintel", "dataset": "threatintel.misp"},
                "threat": {"feed": {"name": "[Filebeat] MISP", "dashboard_id": "ad9c7430-72de-11eb-a3e3-b3cc7c78a70f"},
                    "indicator": {"type": "ipv4-addr", "ip": format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256),
                        "provider": "misp", "marking": {"tlp": "white"}, "first_seen": "2026-01-01T00:00:00Z"}},
                "misp": {"attribute": {"uuid": format!("5f0c1c2e-0000-4000-8000-{n:012}"), "category": "Network activity", "to_ids": true}},
                "tags": ["threatintel-misp", "forwarded"]
            }));
            event.set_id(format!("fingerprint-{n:016x}"));
            event.encode().unwrap()
        })
        .collect()
}

struct Figures {
    name: String,
    events: usize,
    bytes: u64,
    write: Duration,
    read: Duration,
    /// Bytes on disk once every event is written (before any is acknowledged).
    on_disk: Option<u64>,
}

impl Figures {
    fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
        bytes as f64 / 1_048_576.0 / elapsed.as_secs_f64()
    }
}

/// The bytes the queue stores for `event` (metadata line, document line),
/// without the queue's framing.
fn payload(event: &EncodedEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(event.metadata.text());
    out.push(b'\n');
    out.extend_from_slice(&event.source);
    out.push(b'\n');
}

/// Raw sequential writes of the same bytes (one write + fsync per batch,
/// like a publish), then one sequential read: the disk's own floor.
fn baseline(directory: &Path, events: &[EncodedEvent]) -> Figures {
    let path = directory.join("raw.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut bytes = 0u64;
    let start = Instant::now();
    for batch in events.chunks(BATCH) {
        let mut buffer = Vec::new();
        for event in batch {
            payload(event, &mut buffer);
        }
        file.write_all(&buffer).unwrap();
        file.sync_data().unwrap();
        bytes += buffer.len() as u64;
    }
    let write = start.elapsed();
    let start = Instant::now();
    let data = std::fs::read(&path).unwrap();
    let lines = data
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .count();
    assert_eq!(lines, 2 * events.len());
    Figures {
        name: "baseline: raw file (write+fsync per batch, read)".into(),
        events: events.len(),
        bytes,
        write,
        read: start.elapsed(),
        on_disk: Some(bytes),
    }
}

/// Bytes in the segment files of a disk queue directory.
fn segment_bytes(directory: &Path) -> u64 {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

fn run_store(
    name: &str,
    (mut store, directory): (Box<dyn QueueStore>, Option<std::path::PathBuf>),
    events: &[EncodedEvent],
    bytes: u64,
) -> Figures {
    let start = Instant::now();
    for batch in events.chunks(BATCH) {
        let mut pending: VecDeque<EncodedEvent> = batch.to_vec().into();
        while !pending.is_empty() {
            store.push(&mut pending, Durability::Now).unwrap();
        }
    }
    let write = start.elapsed();
    let on_disk = directory.as_deref().map(segment_bytes);
    let start = Instant::now();
    let mut read = 0;
    loop {
        let batch = store.read(1600).unwrap();
        read += batch.events.len();
        match batch.ack_through {
            Some(through) if !batch.events.is_empty() => store.ack(through).unwrap(),
            _ => break,
        }
    }
    assert_eq!(read, events.len());
    Figures {
        name: name.into(),
        events: events.len(),
        bytes,
        write,
        read: start.elapsed(),
        on_disk,
    }
}

fn disk(
    directory: &Path,
    name: &str,
    fsync: FsyncPolicy,
    compression: Compression,
) -> (Box<dyn QueueStore>, Option<std::path::PathBuf>) {
    let path = directory.join(name);
    let settings = DiskSettings {
        path: path.clone(),
        max_size: 10 << 30,
        segment_size: 64 << 20,
        fsync,
        compression,
    };
    (Box::new(DiskQueue::open(settings).unwrap()), Some(path))
}

#[cfg(feature = "bench-redb")]
fn redb_store(directory: &Path, events: &[EncodedEvent], bytes: u64) -> Figures {
    use redb::{Database, TableDefinition};
    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
    let database = Database::create(directory.join("queue.redb")).unwrap();
    let start = Instant::now();
    let mut seq = 0u64;
    for batch in events.chunks(BATCH) {
        let transaction = database.begin_write().unwrap();
        {
            let mut table = transaction.open_table(TABLE).unwrap();
            for event in batch {
                let mut bytes = Vec::new();
                payload(event, &mut bytes);
                table.insert(seq, bytes.as_slice()).unwrap();
                seq += 1;
            }
        }
        transaction.commit().unwrap();
    }
    let write = start.elapsed();
    let start = Instant::now();
    let mut next = 0u64;
    let mut read = 0;
    loop {
        let batch: Vec<EncodedEvent> = {
            let transaction = database.begin_read().unwrap();
            let table = transaction.open_table(TABLE).unwrap();
            table
                .range(next..)
                .unwrap()
                .take(1600)
                .map(|entry| {
                    let stored = bytes::Bytes::from(entry.unwrap().1.value().to_vec());
                    let split = stored.iter().position(|byte| *byte == b'\n').unwrap();
                    EncodedEvent {
                        metadata: threatbeat_core::EncodedMetadata::parse(stored.slice(..split)).unwrap(),
                        source: stored.slice(split + 1..),
                    }
                })
                .collect()
        };
        if batch.is_empty() {
            break;
        }
        let end = next + batch.len() as u64;
        let transaction = database.begin_write().unwrap();
        {
            let mut table = transaction.open_table(TABLE).unwrap();
            table.retain_in(next..end, |_, _| false).unwrap();
        }
        transaction.commit().unwrap();
        read += batch.len();
        next = end;
    }
    assert_eq!(read, events.len());
    Figures {
        name: "redb (commit per batch = fsync)".into(),
        events: events.len(),
        bytes,
        write,
        read: start.elapsed(),
        on_disk: None,
    }
}

fn main() {
    let directory = tempfile::tempdir().unwrap();
    let all = events(EVENTS);
    let few = &all[..10_000];
    let base = baseline(directory.path(), &all);
    let bytes = base.bytes;
    let few_bytes = bytes * few.len() as u64 / all.len() as u64;
    let mut figures = vec![
        run_store(
            "disk queue, fsync: batch (default)",
            disk(directory.path(), "batch", FsyncPolicy::Batch, Compression::None),
            &all,
            bytes,
        ),
        run_store(
            "disk queue, fsync: batch, compression: lz4",
            disk(
                directory.path(),
                "batch-lz4",
                FsyncPolicy::Batch,
                Compression::Lz4,
            ),
            &all,
            bytes,
        ),
        run_store(
            "disk queue, fsync: never",
            disk(directory.path(), "never", FsyncPolicy::Never, Compression::None),
            &all,
            bytes,
        ),
        run_store(
            "disk queue, fsync: never, compression: lz4",
            disk(
                directory.path(),
                "never-lz4",
                FsyncPolicy::Never,
                Compression::Lz4,
            ),
            &all,
            bytes,
        ),
        run_store(
            "disk queue, fsync: 1s interval",
            disk(
                directory.path(),
                "interval",
                FsyncPolicy::Interval(Duration::from_secs(1)),
                Compression::None,
            ),
            &all,
            bytes,
        ),
        run_store(
            "disk queue, fsync: always (10k events)",
            disk(directory.path(), "always", FsyncPolicy::Always, Compression::None),
            few,
            few_bytes,
        ),
        run_store(
            "memory queue",
            (Box::new(MemQueue::new(usize::MAX)), None),
            &all,
            bytes,
        ),
    ];
    #[cfg(feature = "bench-redb")]
    figures.push(redb_store(directory.path(), &all, bytes));
    let base_write = Figures::mb_per_s(base.bytes, base.write);
    let base_read = Figures::mb_per_s(base.bytes, base.read);
    println!(
        "{} events of ~{} bytes (metadata and document JSON), batches of {BATCH}",
        all.len(),
        bytes / all.len() as u64
    );
    println!(
        "{:<52} {:>8} {:>12} {:>8} {:>14} {:>8} {:>13}",
        "store", "events", "write MB/s", "x base", "read+ack MB/s", "x base", "disk B/event"
    );
    figures.insert(0, base);
    for figure in &figures {
        let write = Figures::mb_per_s(figure.bytes, figure.write);
        let read = Figures::mb_per_s(figure.bytes, figure.read);
        let on_disk = figure.on_disk.map_or("-".to_owned(), |on_disk| {
            (on_disk / figure.events as u64).to_string()
        });
        println!(
            "{:<52} {:>8} {:>12.1} {:>8.2} {:>14.1} {:>8.2} {:>13}",
            figure.name,
            figure.events,
            write,
            write / base_write,
            read,
            read / base_read,
            on_disk
        );
    }
}
