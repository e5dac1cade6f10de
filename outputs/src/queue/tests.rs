//! Unit and model-based tests of the queue stores.

use std::collections::VecDeque;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use threatbeat_core::{EncodedEvent, Event};

use super::*;

fn event(n: u64) -> EncodedEvent {
    let mut event = Event::from_value(json!({"n": n, "threat": {"indicator": {"ip": "10.0.0.1"}}}));
    event.set_id(format!("id-{n}"));
    event.encode().unwrap()
}

fn settings(path: &Path, max_size: u64, segment_size: u64) -> DiskSettings {
    DiskSettings {
        path: path.to_owned(),
        max_size,
        segment_size,
        fsync: FsyncPolicy::Never,
        compression: Compression::None,
    }
}

fn push(queue: &mut dyn QueueStore, range: std::ops::Range<u64>) -> usize {
    let mut events: VecDeque<EncodedEvent> = range.map(event).collect();
    queue.push(&mut events, Durability::Now).unwrap()
}

fn numbers(batch: &ReadBatch) -> Vec<u64> {
    batch
        .events
        .iter()
        .map(|e| e.decode().unwrap().fields["n"].as_u64().unwrap())
        .collect()
}

#[test]
fn events_survive_reopen_until_acked() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 4096)).unwrap();
    assert_eq!(push(&mut queue, 0..100), 100);
    let batch = queue.read(40).unwrap();
    assert_eq!(numbers(&batch), (0..40).collect::<Vec<_>>());
    queue.ack(batch.ack_through.unwrap()).unwrap();
    let unacked = queue.read(10).unwrap();
    assert_eq!(numbers(&unacked), (40..50).collect::<Vec<_>>());
    drop(queue);

    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 4096)).unwrap();
    assert_eq!(queue.pending_events(), 60);
    let batch = queue.read(1000).unwrap();
    assert_eq!(numbers(&batch), (40..100).collect::<Vec<_>>());
    queue.ack(batch.ack_through.unwrap()).unwrap();
    assert_eq!(queue.pending_events(), 0);
    assert_eq!(queue.pending_bytes(), 0);
    // Only the current write segment may remain.
    let segments = std::fs::read_dir(directory.path())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "seg")
        })
        .count();
    assert!(segments <= 1, "{segments} segments left");
}

#[test]
fn a_full_queue_takes_only_what_fits() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 8192, 4096)).unwrap();
    let mut events: VecDeque<EncodedEvent> = (0..1000).map(event).collect();
    let taken = queue.push(&mut events, Durability::Now).unwrap();
    assert!(taken > 0 && taken < 1000, "{taken}");
    assert_eq!(events.len(), 1000 - taken);
    assert_eq!(
        queue.push(&mut events, Durability::Now).unwrap(),
        0,
        "no room until acked"
    );
    let batch = queue.read(taken).unwrap();
    queue.ack(batch.ack_through.unwrap()).unwrap();
    assert!(queue.push(&mut events, Durability::Now).unwrap() > 0);
}

#[test]
fn garbled_bytes_are_reported_with_file_and_offset_and_skipped() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    push(&mut queue, 0..10);
    drop(queue);
    let segment = directory.path().join("0000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let frame_length = (bytes.len() as u64 - frame::SEGMENT_HEADER_LEN) / 10;
    let third = frame::SEGMENT_HEADER_LEN + 2 * frame_length;
    bytes[third as usize + 30] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();

    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    let batch = queue.read(100).unwrap();
    assert_eq!(numbers(&batch), [0, 1, 3, 4, 5, 6, 7, 8, 9]);
    let reports = queue.take_corruption();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].file, segment);
    assert_eq!(reports[0].offset, third);
    assert!(reports[0].reason.contains("checksum"), "{}", reports[0].reason);
    queue.ack(batch.ack_through.unwrap()).unwrap();
    assert_eq!(queue.pending_events(), 0);
}

#[test]
fn a_torn_tail_is_reported_and_the_rest_replayed() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    push(&mut queue, 0..5);
    drop(queue);
    let segment = directory.path().join("0000000000.seg");
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 7]).unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    let batch = queue.read(100).unwrap();
    assert_eq!(numbers(&batch), [0, 1, 2, 3]);
    let reports = queue.take_corruption();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].reason.contains("truncated"), "{}", reports[0].reason);
    queue.ack(batch.ack_through.unwrap()).unwrap();
    push(&mut queue, 5..7);
    assert_eq!(numbers(&queue.read(10).unwrap()), [5, 6]);
}

#[test]
fn segments_of_the_first_format_are_still_delivered() {
    // Written by a build whose frames held the whole event as one JSON object.
    let directory = tempfile::tempdir().unwrap();
    let mut bytes = b"TBQS".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for n in 0..3 {
        let old_payload = serde_json::to_vec(&event(n).decode().unwrap()).unwrap();
        frame::encode_frame(n, &old_payload, &mut bytes);
    }
    std::fs::write(directory.path().join("0000000000.seg"), &bytes).unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    push(&mut queue, 3..5);
    let batch = queue.read(10).unwrap();
    assert_eq!(batch.events[0], event(0));
    assert_eq!(numbers(&batch), [0, 1, 2, 3, 4]);
    assert!(queue.take_corruption().is_empty());
}

#[test]
fn a_garbled_ack_file_replays_everything() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    push(&mut queue, 0..5);
    let batch = queue.read(3).unwrap();
    queue.ack(batch.ack_through.unwrap()).unwrap();
    drop(queue);
    std::fs::write(directory.path().join("ack.state"), b"garbage").unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    assert_eq!(queue.take_corruption().len(), 1);
    assert_eq!(numbers(&queue.read(10).unwrap()), [0, 1, 2, 3, 4]);
}

#[test]
fn a_second_queue_on_the_same_directory_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let _queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap();
    let error = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).unwrap_err();
    assert!(error.to_string().contains("in use"), "{error}");
}

/// Random push / read / ack / reopen against a `VecDeque` model.
fn model_check(
    seed: u64,
    store: &mut dyn FnMut(Option<Box<dyn QueueStore>>) -> Box<dyn QueueStore>,
    reopen: bool,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut queue = store(None);
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut read_count = 0usize;
    let mut last_ack: Option<u64> = None;
    let mut next = 0u64;
    for _ in 0..400 {
        match rng.random_range(0..10) {
            0..=3 => {
                let count = rng.random_range(1..30);
                let mut events: VecDeque<EncodedEvent> = (next..next + count).map(event).collect();
                let taken = queue.push(&mut events, Durability::Now).unwrap() as u64;
                unacked.extend(next..next + taken);
                next += taken;
            }
            4..=6 => {
                let max = rng.random_range(1..50);
                let batch = queue.read(max).unwrap();
                let expected: Vec<u64> = unacked.iter().skip(read_count).take(max).copied().collect();
                assert_eq!(numbers(&batch), expected, "seed {seed}");
                read_count += expected.len();
                if batch.ack_through.is_some() {
                    last_ack = batch.ack_through;
                }
            }
            7 | 8 => {
                if let Some(through) = last_ack.take() {
                    queue.ack(through).unwrap();
                    unacked.drain(..read_count);
                    read_count = 0;
                }
            }
            _ if reopen => {
                queue = store(Some(queue));
                read_count = 0;
                last_ack = None;
            }
            _ => {}
        }
        assert_eq!(queue.pending_events(), unacked.len() as u64, "seed {seed}");
    }
}

#[test]
fn disk_queue_matches_the_model() {
    for seed in 0..8 {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().to_owned();
        let mut open = |previous: Option<Box<dyn QueueStore>>| -> Box<dyn QueueStore> {
            drop(previous);
            Box::new(DiskQueue::open(settings(&path, 64 * 1024, 4096)).unwrap())
        };
        model_check(seed, &mut open, true);
    }
}

#[test]
fn memory_queue_matches_the_model() {
    for seed in 0..8 {
        let mut open = |previous: Option<Box<dyn QueueStore>>| -> Box<dyn QueueStore> {
            previous.unwrap_or_else(|| Box::new(MemQueue::new(200)))
        };
        model_check(seed, &mut open, false);
    }
}

#[test]
fn a_lock_file_left_behind_is_no_lock() {
    let directory = tempfile::tempdir().unwrap();
    // What a killed process leaves: the file, with its PID, but no OS lock.
    std::fs::write(directory.path().join("lock"), "4194999").unwrap();
    let queue = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19));
    assert!(queue.is_ok(), "{:?}", queue.err());
    // While it is open, the same directory cannot be opened twice.
    let again = DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19));
    assert!(
        matches!(again, Err(QueueError::Locked { .. })),
        "{:?}",
        again.err()
    );
    drop(queue);
    assert!(DiskQueue::open(settings(directory.path(), 1 << 20, 1 << 19)).is_ok());
}

#[test]
fn an_event_larger_than_the_reader_accepts_is_refused_alone() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 30, 1 << 20)).unwrap();
    let mut huge = event(1);
    huge.source = vec![b' '; super::frame::MAX_PAYLOAD as usize + 1].into();
    let mut events: VecDeque<EncodedEvent> = [event(0), huge, event(2)].into_iter().collect();
    assert_eq!(queue.push(&mut events, Durability::Now).unwrap(), 2);
    assert!(events.is_empty());
    assert_eq!(numbers(&queue.read(10).unwrap()), [0, 2]);
}

#[test]
fn a_half_made_segment_left_by_a_full_disk_does_not_jam_the_queue() {
    let directory = tempfile::tempdir().unwrap();
    let mut queue = DiskQueue::open(settings(directory.path(), 1 << 20, 4096)).unwrap();
    assert_eq!(push(&mut queue, 0..10), 10);
    // What a rollover that hit ENOSPC right after creating its file leaves:
    // the next segment's file, unknown to the queue, holding a torn header.
    std::fs::write(directory.path().join(format!("{:010}.seg", 1)), b"TB").unwrap();
    // Space is back: the next rollovers go through.
    assert_eq!(push(&mut queue, 10..200), 190);
    let batch = queue.read(1000).unwrap();
    assert_eq!(numbers(&batch), (0..200).collect::<Vec<_>>());
}

fn open(path: &Path, segment_size: u64, compression: Compression) -> DiskQueue {
    DiskQueue::open(DiskSettings {
        compression,
        ..settings(path, 1 << 20, segment_size)
    })
    .unwrap()
}

/// `(file name, format version in its header)` of each segment, in order.
fn segment_versions(directory: &Path) -> Vec<(String, u32)> {
    let mut segments: Vec<(String, u32)> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, u32::from_le_bytes(bytes[4..8].try_into().unwrap()))
        })
        .collect();
    segments.sort();
    segments
}

/// Bytes in the segment files of `directory`.
fn segment_bytes(directory: &Path) -> u64 {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

/// A MISP-like event: repetitive, as the documents the queue holds are.
fn indicator(n: u64) -> EncodedEvent {
    let mut event = Event::from_value(json!({
        "n": n,
        "event": {"kind": "enrichment", "category": ["threat"], "type": ["indicator"], "dataset": "threatintel.misp"},
        "threat": {"feed": {"name": "[Filebeat] MISP"}, "indicator": {"type": "ipv4-addr", "ip": format!("10.0.{}.{}", n / 256, n % 256), "provider": "misp"}},
        "tags": ["threatintel-misp", "forwarded"]
    }));
    event.set_id(format!("fingerprint-{n:016x}"));
    event.encode().unwrap()
}

#[test]
fn both_compression_settings_round_trip_across_segments_and_reopen() {
    let mut sizes = Vec::new();
    for compression in [Compression::None, Compression::Lz4] {
        let directory = tempfile::tempdir().unwrap();
        let mut queue = open(directory.path(), 4096, compression);
        let mut events: VecDeque<EncodedEvent> = (0..200).map(indicator).collect();
        assert_eq!(queue.push(&mut events, Durability::Now).unwrap(), 200);
        let first = queue.read(50).unwrap();
        assert_eq!(
            first.events,
            (0..50).map(indicator).collect::<Vec<_>>(),
            "{compression:?}"
        );
        queue.ack(first.ack_through.unwrap()).unwrap();
        drop(queue);
        let versions = segment_versions(directory.path());
        assert!(versions.len() > 1, "{compression:?}: {versions:?}");
        assert!(
            versions
                .iter()
                .all(|(_, version)| *version == compression.segment_version()),
            "{compression:?}: {versions:?}"
        );
        sizes.push(segment_bytes(directory.path()));

        let mut queue = open(directory.path(), 4096, compression);
        assert_eq!(queue.pending_events(), 150);
        let rest = queue.read(1000).unwrap();
        assert_eq!(
            rest.events,
            (50..200).map(indicator).collect::<Vec<_>>(),
            "{compression:?}"
        );
        queue.ack(rest.ack_through.unwrap()).unwrap();
        assert_eq!((queue.pending_events(), queue.pending_bytes()), (0, 0));
        assert!(queue.take_corruption().is_empty());
    }
    // Compressed records are what is stored (and counted against max_size).
    assert!(
        sizes[1] < sizes[0],
        "lz4 {} bytes, none {} bytes",
        sizes[1],
        sizes[0]
    );
}

#[test]
fn a_queue_keeps_its_events_when_the_compression_setting_changes() {
    for (first, second) in [
        (Compression::None, Compression::Lz4),
        (Compression::Lz4, Compression::None),
    ] {
        let directory = tempfile::tempdir().unwrap();
        let mut queue = open(directory.path(), 4096, first);
        push(&mut queue, 0..60);
        let batch = queue.read(10).unwrap();
        queue.ack(batch.ack_through.unwrap()).unwrap();
        drop(queue);

        // Restarted with the other setting: old segments read as written, new ones in the new format.
        let mut queue = open(directory.path(), 4096, second);
        push(&mut queue, 60..120);
        assert_eq!(numbers(&queue.read(35).unwrap()), (10..45).collect::<Vec<_>>());
        drop(queue);
        let versions: Vec<u32> = segment_versions(directory.path())
            .into_iter()
            .map(|(_, version)| version)
            .collect();
        assert!(versions.contains(&first.segment_version()), "{versions:?}");
        assert_eq!(versions.last(), Some(&second.segment_version()), "{versions:?}");

        // And back again: three generations of segments in one queue, plus a format-1 one.
        let mut old = b"TBQS".to_vec();
        old.extend_from_slice(&1u32.to_le_bytes());
        let last_id: u64 = segment_versions(directory.path())
            .last()
            .map(|(name, _)| name.trim_end_matches(".seg").parse().unwrap())
            .unwrap();
        for n in 120..123 {
            frame::encode_frame(
                n,
                &serde_json::to_vec(&event(n).decode().unwrap()).unwrap(),
                &mut old,
            );
        }
        std::fs::write(directory.path().join(format!("{:010}.seg", last_id + 1)), &old).unwrap();
        let mut queue = open(directory.path(), 4096, first);
        push(&mut queue, 123..130);
        let batch = queue.read(1000).unwrap();
        assert_eq!(
            numbers(&batch),
            (10..130).collect::<Vec<_>>(),
            "{first:?} then {second:?}"
        );
        assert!(queue.take_corruption().is_empty());
        queue.ack(batch.ack_through.unwrap()).unwrap();
        assert_eq!(queue.pending_events(), 0);
    }
}

#[test]
fn a_corrupt_compressed_record_is_skipped_and_its_neighbours_delivered() {
    // Records whose CRC checks out but whose block does not: what a writer
    // bug (or a hand-made file) would leave. Each loses only itself.
    let directory = tempfile::tempdir().unwrap();
    let mut bytes = frame::segment_header(frame::SEGMENT_VERSION_LZ4).to_vec();
    let mut table = lz4_flex::block::CompressTable::default();
    let stored = |n: u64, table: &mut lz4_flex::block::CompressTable| {
        let mut plain = Vec::new();
        frame::encode_payload(&event(n), &mut plain);
        let mut stored = Vec::new();
        frame::compress_payload(&plain, table, &mut stored).unwrap();
        stored
    };
    let mut offsets = Vec::new();
    for n in 0..7u64 {
        let mut payload = stored(n, &mut table);
        match n {
            // A size prefix far past MAX_PAYLOAD: refused before any allocation.
            1 => payload[..4].copy_from_slice(&u32::MAX.to_le_bytes()),
            // A block cut short.
            3 => payload.truncate(payload.len() - 5),
            // A prefix that says more than the block holds.
            5 => {
                let length = u32::from_le_bytes(payload[..4].try_into().unwrap()) + 1;
                payload[..4].copy_from_slice(&length.to_le_bytes());
            }
            _ => {}
        }
        offsets.push(bytes.len() as u64);
        frame::encode_frame(n, &payload, &mut bytes);
    }
    let segment = directory.path().join("0000000000.seg");
    std::fs::write(&segment, &bytes).unwrap();

    let mut queue = open(directory.path(), 1 << 19, Compression::Lz4);
    assert_eq!(queue.pending_events(), 7);
    let batch = queue.read(100).unwrap();
    assert_eq!(numbers(&batch), [0, 2, 4, 6]);
    let reports = queue.take_corruption();
    let found: Vec<(u64, bool)> = reports
        .iter()
        .map(|report| (report.offset, report.file == segment))
        .collect();
    assert_eq!(
        found,
        [(offsets[1], true), (offsets[3], true), (offsets[5], true)],
        "{reports:?}"
    );
    assert!(
        reports[0]
            .reason
            .contains("record 1: implausible uncompressed length"),
        "{reports:?}"
    );
    assert!(reports[1].reason.contains("record 3: undecodable"), "{reports:?}");
    assert!(reports[2].reason.contains("record 5:"), "{reports:?}");
    // The skipped records are acknowledged with the rest: nothing jams.
    queue.ack(batch.ack_through.unwrap()).unwrap();
    assert_eq!(queue.pending_events(), 0);

    // A byte garbled on disk in a compressed record is caught by the CRC, as in format 2.
    let mut garbled = bytes.clone();
    garbled[offsets[2] as usize + 25] ^= 0x5a;
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("0000000000.seg"), &garbled).unwrap();
    let mut queue = open(directory.path(), 1 << 19, Compression::None);
    assert_eq!(numbers(&queue.read(100).unwrap()), [0, 4, 6]);
    let reasons: Vec<String> = queue.take_corruption().into_iter().map(|r| r.reason).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[1].contains("checksum"), "{reasons:?}");
}

#[test]
fn disk_queue_matches_the_model_while_the_compression_setting_changes() {
    for seed in 0..4 {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().to_owned();
        let mut opened = 0u64;
        let mut open = |previous: Option<Box<dyn QueueStore>>| -> Box<dyn QueueStore> {
            drop(previous);
            opened += 1;
            let compression = if (opened + seed).is_multiple_of(2) {
                Compression::Lz4
            } else {
                Compression::None
            };
            Box::new(
                DiskQueue::open(DiskSettings {
                    compression,
                    ..settings(&path, 64 * 1024, 4096)
                })
                .unwrap(),
            )
        };
        model_check(seed, &mut open, true);
    }
}
