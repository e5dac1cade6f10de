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
    }
}

fn push(queue: &mut dyn QueueStore, range: std::ops::Range<u64>) -> usize {
    let mut events: VecDeque<EncodedEvent> = range.map(event).collect();
    queue.push(&mut events).unwrap()
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
    let taken = queue.push(&mut events).unwrap();
    assert!(taken > 0 && taken < 1000, "{taken}");
    assert_eq!(events.len(), 1000 - taken);
    assert_eq!(queue.push(&mut events).unwrap(), 0, "no room until acked");
    let batch = queue.read(taken).unwrap();
    queue.ack(batch.ack_through.unwrap()).unwrap();
    assert!(queue.push(&mut events).unwrap() > 0);
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
                let taken = queue.push(&mut events).unwrap() as u64;
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
    assert_eq!(queue.push(&mut events).unwrap(), 2);
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
