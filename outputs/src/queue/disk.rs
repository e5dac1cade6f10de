//! The disk queue: an append-only log of segment files plus an ack file.
//! The format, invariants and recovery are described on the `queue` module.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lz4_flex::block::CompressTable;
use threatbeat_core::EncodedEvent;

use super::frame::{self, FrameRead, FRAME_OVERHEAD, SEGMENT_HEADER_LEN};
use super::lock::DirectoryLock;
use super::recovery::{list_segments, read_ack_state, scan_segment, SegmentReader};
use super::{CorruptRecord, Durability, QueueError, QueueStore, ReadBatch};

/// When written data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every event (slowest).
    Always,
    /// Once per published batch, before `publish` returns.
    Batch,
    /// As [`FsyncPolicy::Batch`], except that a push of events the input
    /// fetches again until a later batch stores its cursor
    /// ([`Durability::WithCursor`]) is fsynced with that batch (default).
    Cursor,
    /// At most once per interval; a power loss may lose that much.
    Interval(Duration),
    /// Never: survives a process crash, not a power loss.
    Never,
}

/// How the disk queue stores the records it writes (`queue.disk.compression`).
/// Reading does not depend on it: each segment's header says how its records
/// are stored, so a queue keeps working across a change of the setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// As they are: segment format 2 (the default; see `docs/queue.md`,
    /// "Compression", for the measurement behind it).
    #[default]
    None,
    /// Each record compressed on its own as an LZ4 block: segment format 3.
    Lz4,
}

impl Compression {
    /// The segment format version written with this setting.
    pub fn segment_version(self) -> u32 {
        match self {
            Self::None => frame::SEGMENT_VERSION_PLAIN,
            Self::Lz4 => frame::SEGMENT_VERSION_LZ4,
        }
    }
}

/// Settings of one disk queue.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// The queue directory.
    pub path: PathBuf,
    /// Pending (unacknowledged) bytes at which producers wait.
    pub max_size: u64,
    /// Size at which a new segment file is started.
    pub segment_size: u64,
    /// Fsync policy.
    pub fsync: FsyncPolicy,
    /// How new records are stored; segments already there are read in
    /// whatever format they were written.
    pub compression: Compression,
}

const ACK_FILE: &str = "ack.state";

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// Bytes of whole frames (plus header) in the file.
    size: u64,
    /// The format version in its header.
    format: u32,
}

#[derive(Debug)]
struct Writer {
    segment_id: u64,
    file: File,
}

/// A record read from a segment: its sequence number and its payload, a
/// slice of the one buffer the record was read into.
#[derive(Debug)]
struct ReadFrame {
    seq: u64,
    payload: Bytes,
}

/// The buffers a push encodes and gathers records in, kept from one push to
/// the next: a fresh megabyte per batch was allocated, grown and freed
/// again each time (docs/performance.md, "Allocation churn").
#[derive(Default)]
struct PushBuffers {
    frames: Vec<u8>,
    payload: Vec<u8>,
    compressed: Vec<u8>,
    /// LZ4's hash table (16 KiB), made at the first compressed record.
    table: Option<CompressTable>,
}

impl std::fmt::Debug for PushBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushBuffers")
            .field("frames", &self.frames.capacity())
            .field("payload", &self.payload.capacity())
            .field("compressed", &self.compressed.capacity())
            .finish_non_exhaustive()
    }
}

impl PushBuffers {
    /// Empties the buffers for the next push; one grown past what a push
    /// normally holds (a huge record) is given back instead of kept.
    fn reset(&mut self) {
        for buffer in [&mut self.frames, &mut self.payload, &mut self.compressed] {
            buffer.clear();
            if buffer.capacity() > 2 * WRITE_BUFFER_BYTES {
                *buffer = Vec::new();
            }
        }
    }
}

#[derive(Debug)]
struct Reader {
    segment_id: u64,
    offset: u64,
    file: Option<(u64, SegmentReader)>,
}

/// A disk-backed queue of events.
#[derive(Debug)]
pub struct DiskQueue {
    settings: DiskSettings,
    segments: VecDeque<Segment>,
    writer: Option<Writer>,
    reader: Reader,
    next_seq: u64,
    /// Every sequence number below this is acknowledged.
    first_unacked: u64,
    /// Every sequence number below this was returned by `read` (or skipped as corrupt).
    read_seq: u64,
    /// `(last sequence number of a read, reader segment, reader offset)` for byte accounting.
    read_marks: VecDeque<(u64, u64, u64)>,
    acked_offset: (u64, u64),
    corruption: Vec<CorruptRecord>,
    last_sync: Instant,
    unsynced: bool,
    push_buffers: PushBuffers,
    _lock: DirectoryLock,
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DiskQueue {
    /// Opens (or creates) the queue in `settings.path`, recovering what a
    /// previous run left: acknowledged segments are deleted, the rest is
    /// replayed from the first unacknowledged event.
    pub fn open(settings: DiskSettings) -> Result<Self, QueueError> {
        let directory = settings.path.clone();
        fs::create_dir_all(&directory).map_err(io_error(&directory))?;
        let lock = DirectoryLock::acquire(&directory)?;
        let (first_unacked, ack_problem) = read_ack_state(&directory.join(ACK_FILE));
        let mut corruption = Vec::new();
        if let Some(problem) = ack_problem {
            tracing::error!(file = %directory.join(ACK_FILE).display(), %problem,
                "queue ack file is unreadable; replaying every queued event (documents keep their _id, so nothing is duplicated)");
            corruption.push(CorruptRecord {
                file: directory.join(ACK_FILE),
                offset: 0,
                reason: problem,
            });
        }
        let mut segments = VecDeque::new();
        let mut max_seq: Option<u64> = None;
        for (id, path) in list_segments(&directory)? {
            let scan = scan_segment(&path)?;
            match scan.last_seq {
                Some(last) if last < first_unacked => {
                    fs::remove_file(&path).map_err(io_error(&path))?;
                    max_seq = max_seq.max(Some(last));
                }
                None if scan.valid_size <= SEGMENT_HEADER_LEN => {
                    // Empty, or only garbage: nothing to replay from it.
                    if scan.file_size > SEGMENT_HEADER_LEN || scan.valid_size < SEGMENT_HEADER_LEN {
                        let reason = "no valid record in this segment; removing it".to_owned();
                        tracing::error!(file = %path.display(), offset = 0, %reason, "corrupt disk queue segment");
                        corruption.push(CorruptRecord {
                            file: path.clone(),
                            offset: 0,
                            reason,
                        });
                    }
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
                last => {
                    max_seq = max_seq.max(last);
                    segments.push_back(Segment {
                        id,
                        path,
                        size: scan.file_size,
                        format: scan.format,
                    });
                }
            }
        }
        let next_seq = max_seq.map_or(first_unacked, |seq| (seq + 1).max(first_unacked));
        let reader_segment = segments.front().map_or(0, |segment| segment.id);
        let queue = Self {
            settings,
            segments,
            writer: None,
            reader: Reader {
                segment_id: reader_segment,
                offset: SEGMENT_HEADER_LEN,
                file: None,
            },
            next_seq,
            first_unacked,
            read_seq: first_unacked,
            read_marks: VecDeque::new(),
            acked_offset: (reader_segment, SEGMENT_HEADER_LEN),
            corruption,
            last_sync: Instant::now(),
            unsynced: false,
            push_buffers: PushBuffers::default(),
            _lock: lock,
        };
        if queue.pending_events() > 0 {
            tracing::info!(
                path = %queue.settings.path.display(),
                events = queue.pending_events(),
                "disk queue holds unacknowledged events from a previous run; replaying them"
            );
        }
        Ok(queue)
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.settings.path.join(format!("{id:010}.seg"))
    }

    fn start_segment(&mut self) -> Result<(), QueueError> {
        if let Some(writer) = self.writer.take() {
            if self.settings.fsync != FsyncPolicy::Never {
                let path = self.segment_path(writer.segment_id);
                writer.file.sync_data().map_err(io_error(&path))?;
            }
        }
        let id = self.segments.back().map_or(0, |segment| segment.id + 1);
        let path = self.segment_path(id);
        // A file of this id is no segment the queue knows (a rollover that
        // failed half-way, on a full disk): it is replaced, not a reason to
        // stop for good.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let started = file
            .set_len(0)
            .and_then(|()| {
                file.write_all(&frame::segment_header(
                    self.settings.compression.segment_version(),
                ))
            })
            .and_then(|()| {
                if self.settings.fsync != FsyncPolicy::Never {
                    file.sync_data()?;
                    sync_directory(&self.settings.path);
                }
                Ok(())
            });
        if let Err(source) = started {
            // ENOSPC at rollover: remove the half-made segment, so the next
            // push (once there is room) starts it again cleanly.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(QueueError::Io { path, source });
        }
        if self.segments.is_empty() {
            self.reader.segment_id = id;
            self.reader.offset = SEGMENT_HEADER_LEN;
            self.acked_offset = (id, SEGMENT_HEADER_LEN);
        }
        self.segments.push_back(Segment {
            id,
            path,
            size: SEGMENT_HEADER_LEN,
            format: self.settings.compression.segment_version(),
        });
        self.writer = Some(Writer { segment_id: id, file });
        Ok(())
    }

    fn write_buffer(&mut self, buffer: &mut Vec<u8>) -> Result<(), QueueError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let writer = self
            .writer
            .as_mut()
            .expect("a writer exists while frames are buffered");
        let segment = self
            .segments
            .back_mut()
            .expect("the writer's segment is the last one");
        if let Err(source) = writer.file.write_all(buffer) {
            // Cut a partial write off so later frames follow a clean end.
            let _ = writer.file.set_len(segment.size);
            return Err(QueueError::Io {
                path: segment.path.clone(),
                source,
            });
        }
        segment.size += buffer.len() as u64;
        buffer.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Forces what was written to disk if the policy says it is due;
    /// `force` makes it due now under every policy but `never`.
    fn sync(&mut self, force: bool) -> Result<(), QueueError> {
        let due = match self.settings.fsync {
            FsyncPolicy::Always | FsyncPolicy::Batch => true,
            FsyncPolicy::Cursor => force,
            FsyncPolicy::Interval(interval) => force || self.last_sync.elapsed() >= interval,
            FsyncPolicy::Never => false,
        };
        if due && self.unsynced {
            if let Some(writer) = &self.writer {
                let path = self.segment_path(writer.segment_id);
                writer.file.sync_data().map_err(io_error(&path))?;
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn open_reader_file(&mut self, segment_id: u64, path: &Path) -> Result<&mut SegmentReader, QueueError> {
        let reopen = !matches!(&self.reader.file, Some((id, _)) if *id == segment_id);
        if reopen {
            let file = File::open(path).map_err(io_error(path))?;
            let reader = SegmentReader {
                file: BufReader::with_capacity(256 * 1024, file),
                position: 0,
            };
            self.reader.file = Some((segment_id, reader));
        }
        let (_, file) = self.reader.file.as_mut().expect("opened above");
        Ok(file)
    }

    /// Reads the next frame, skipping corrupt stretches (recorded and logged),
    /// with the format version of the segment it came from and its offset there.
    fn read_frame(&mut self) -> Result<Option<(ReadFrame, u32, u64)>, QueueError> {
        loop {
            let Some(position) = self
                .segments
                .iter()
                .position(|segment| segment.id >= self.reader.segment_id)
            else {
                return Ok(None);
            };
            let (id, size, path, format) = {
                let segment = &self.segments[position];
                (segment.id, segment.size, segment.path.clone(), segment.format)
            };
            if id != self.reader.segment_id {
                self.reader.segment_id = id;
                self.reader.offset = SEGMENT_HEADER_LEN;
            }
            let offset = self.reader.offset;
            if offset >= size {
                let is_writer = self.writer.as_ref().is_some_and(|writer| writer.segment_id == id);
                if is_writer || position + 1 == self.segments.len() {
                    return Ok(None);
                }
                self.reader.segment_id = self.segments[position + 1].id;
                self.reader.offset = SEGMENT_HEADER_LEN;
                continue;
            }
            let file = self.open_reader_file(id, &path)?;
            if offset == SEGMENT_HEADER_LEN {
                file.seek_to(0).map_err(io_error(&path))?;
                if let Err(reason) = frame::check_segment_header(file).map_err(io_error(&path))? {
                    self.report_corruption(&path, 0, &reason);
                    self.reader.offset = size;
                    continue;
                }
            }
            file.seek_to(offset).map_err(io_error(&path))?;
            let available = size - offset;
            let mut head = [0u8; FRAME_OVERHEAD as usize];
            let head = &mut head[..FRAME_OVERHEAD.min(available) as usize];
            file.read_exact(head).map_err(io_error(&path))?;
            let declared = if head.len() >= 8 && head[..4] == frame::FRAME_MAGIC {
                Some(u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64)
            } else {
                None
            };
            let whole = declared
                .filter(|length| *length <= frame::MAX_PAYLOAD as u64 && FRAME_OVERHEAD + length <= available)
                .map(|length| FRAME_OVERHEAD + length);
            // One allocation per record, its payload later sliced out of it.
            let mut bytes = Vec::with_capacity(whole.unwrap_or(head.len() as u64) as usize);
            bytes.extend_from_slice(head);
            if let Some(total) = whole {
                bytes.resize(total as usize, 0);
                file.read_exact(&mut bytes[head.len()..])
                    .map_err(io_error(&path))?;
                if let FrameRead::Frame(found, length) = frame::decode_frame(&bytes) {
                    self.reader.offset = offset + length;
                    let payload = Bytes::from(bytes).slice(found.payload);
                    return Ok(Some((
                        ReadFrame {
                            seq: found.seq,
                            payload,
                        },
                        format,
                        offset,
                    )));
                }
            }
            // Corrupt: read the rest of the segment and look for the next valid frame.
            let reason = match frame::decode_frame(&bytes) {
                FrameRead::Corrupt(reason) => reason,
                _ => "unreadable record".to_owned(),
            };
            file.seek_to(offset).map_err(io_error(&path))?;
            let mut remainder = Vec::with_capacity(available as usize);
            file.take(available)
                .read_to_end(&mut remainder)
                .map_err(io_error(&path))?;
            self.report_corruption(&path, offset, &reason);
            self.reader.offset = match frame::resync(&remainder) {
                Some(next) => offset + next as u64,
                None => size,
            };
        }
    }

    fn report_corruption(&mut self, path: &Path, offset: u64, reason: &str) {
        tracing::error!(
            file = %path.display(), offset, %reason,
            "corrupt record in the disk queue; skipping it and continuing with the next valid record"
        );
        self.corruption.push(CorruptRecord {
            file: path.to_owned(),
            offset,
            reason: reason.to_owned(),
        });
    }

    /// [`QueueStore::push`] with the buffers it encodes into.
    fn push_with(
        &mut self,
        events: &mut VecDeque<EncodedEvent>,
        durability: Durability,
        buffers: &mut PushBuffers,
    ) -> Result<usize, QueueError> {
        let mut pushed = 0;
        let compress = self.settings.compression == Compression::Lz4;
        let mut pending_bytes = self.pending_bytes();
        while let Some(event) = events.front() {
            buffers.payload.clear();
            frame::encode_payload(event, &mut buffers.payload);
            let fits = buffers.payload.len() <= frame::MAX_PAYLOAD as usize;
            let stored = if compress && fits {
                let table = buffers.table.get_or_insert_with(CompressTable::default);
                frame::compress_payload(&buffers.payload, table, &mut buffers.compressed)
                    .map_err(QueueError::Encode)?;
                &buffers.compressed
            } else {
                &buffers.payload
            };
            // LZ4 may make a record a few bytes longer; the stored length is
            // the one the reader checks.
            if !fits || stored.len() > frame::MAX_PAYLOAD as usize {
                // The reader would call such a record corrupt; refusing it
                // here keeps it from jamming the queue, and the events around
                // it go on. No cluster indexes a document this large either.
                tracing::error!(
                    bytes = buffers.payload.len(),
                    limit = frame::MAX_PAYLOAD,
                    id = event.id().unwrap_or("(none)"),
                    index = event.index().unwrap_or("(none)"),
                    "an event larger than the queue's record limit was refused and dropped"
                );
                events.pop_front();
                continue;
            }
            let frame_size = FRAME_OVERHEAD + stored.len() as u64;
            let queue_holds_events = self.pending_events() > 0 || pushed > 0;
            if queue_holds_events && pending_bytes + frame_size > self.settings.max_size {
                break;
            }
            let segment_full = match (&self.writer, self.segments.back()) {
                (Some(_), Some(segment)) => {
                    segment.size + buffers.frames.len() as u64 >= self.settings.segment_size
                }
                _ => true,
            };
            if segment_full {
                self.write_buffer(&mut buffers.frames)?;
                self.start_segment()?;
            }
            frame::encode_frame(self.next_seq, stored, &mut buffers.frames);
            if self.settings.fsync == FsyncPolicy::Always {
                self.write_buffer(&mut buffers.frames)?;
                self.sync(true)?;
            } else if buffers.frames.len() >= WRITE_BUFFER_BYTES {
                // A large batch is written in slices, so memory does not grow with the batch.
                self.write_buffer(&mut buffers.frames)?;
            }
            self.next_seq += 1;
            pending_bytes += frame_size;
            pushed += 1;
            events.pop_front();
        }
        self.write_buffer(&mut buffers.frames)?;
        // `cursor` forces the events of this push, and those earlier pushes
        // left, to disk unless a later batch's cursor covers them.
        self.sync(self.settings.fsync == FsyncPolicy::Cursor && durability == Durability::Now)?;
        Ok(pushed)
    }

    fn write_ack_state(&self) -> Result<(), QueueError> {
        let path = self.settings.path.join(ACK_FILE);
        let temporary = self.settings.path.join("ack.state.tmp");
        let mut bytes = Vec::with_capacity(12);
        bytes.extend_from_slice(&self.first_unacked.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
        file.write_all(&bytes).map_err(io_error(&temporary))?;
        if self.settings.fsync == FsyncPolicy::Always {
            file.sync_data().map_err(io_error(&temporary))?;
        }
        fs::rename(&temporary, &path).map_err(io_error(&path))?;
        Ok(())
    }
}

/// Frames are written to the segment file once this many bytes are buffered.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

impl QueueStore for DiskQueue {
    fn push(
        &mut self,
        events: &mut VecDeque<EncodedEvent>,
        durability: Durability,
    ) -> Result<usize, QueueError> {
        let mut buffers = std::mem::take(&mut self.push_buffers);
        let pushed = self.push_with(events, durability, &mut buffers);
        buffers.reset();
        self.push_buffers = buffers;
        pushed
    }

    fn read(&mut self, max_events: usize) -> Result<ReadBatch, QueueError> {
        let mut events = Vec::new();
        while events.len() < max_events {
            let Some((found, format, offset)) = self.read_frame()? else {
                break;
            };
            if found.seq < self.read_seq {
                // Acknowledged before a restart, but its segment was not deleted yet.
                continue;
            }
            match frame::decode_payload(format, found.payload) {
                Ok(event) => events.push(event),
                Err(reason) => {
                    // Intact on disk (the CRC checked out) but unreadable: a
                    // record that was written wrong is skipped like a torn one.
                    let path = self.segment_path(self.reader.segment_id);
                    self.report_corruption(&path, offset, &format!("record {}: {reason}", found.seq));
                }
            }
            self.read_seq = found.seq + 1;
        }
        // Everything written so far was read (or skipped): nothing below next_seq is unread.
        if events.len() < max_events {
            self.read_seq = self.next_seq.max(self.read_seq);
        }
        let ack_through = (self.read_seq > self.first_unacked).then(|| self.read_seq - 1);
        if let Some(through) = ack_through {
            self.read_marks
                .push_back((through, self.reader.segment_id, self.reader.offset));
        }
        Ok(ReadBatch { events, ack_through })
    }

    fn ack(&mut self, through: u64) -> Result<(), QueueError> {
        if through < self.first_unacked {
            return Ok(());
        }
        self.first_unacked = through + 1;
        while let Some(&(seq, segment_id, offset)) = self.read_marks.front() {
            if seq > through {
                break;
            }
            self.acked_offset = (segment_id, offset);
            self.read_marks.pop_front();
        }
        self.write_ack_state()?;
        let writer_id = self.writer.as_ref().map(|writer| writer.segment_id);
        while let Some(segment) = self.segments.front() {
            let fully_acked = segment.id < self.acked_offset.0
                || (segment.id == self.acked_offset.0
                    && self.acked_offset.1 >= segment.size
                    && Some(segment.id) != writer_id);
            if !fully_acked || Some(segment.id) == writer_id {
                break;
            }
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            if matches!(&self.reader.file, Some((id, _)) if *id == segment.id) {
                self.reader.file = None;
            }
            self.segments.pop_front();
        }
        Ok(())
    }

    fn pending_events(&self) -> u64 {
        self.next_seq - self.first_unacked
    }

    fn pending_bytes(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|segment| segment.size).sum();
        let acked_in_first = match self.segments.front() {
            Some(first) if first.id == self.acked_offset.0 => self.acked_offset.1.min(first.size),
            _ => 0,
        };
        total.saturating_sub(acked_in_first)
    }

    fn flush(&mut self) -> Result<(), QueueError> {
        self.sync(true)
    }

    fn take_corruption(&mut self) -> Vec<CorruptRecord> {
        std::mem::take(&mut self.corruption)
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        let _ = self.sync(true);
    }
}

fn sync_directory(directory: &Path) {
    if let Ok(handle) = File::open(directory) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_with(directory: &Path, fsync: FsyncPolicy) -> DiskQueue {
        DiskQueue::open(DiskSettings {
            path: directory.to_owned(),
            max_size: 1 << 20,
            segment_size: 64 << 10,
            fsync,
            compression: Compression::None,
        })
        .unwrap()
    }

    fn events(numbers: std::ops::Range<u64>) -> VecDeque<EncodedEvent> {
        numbers
            .map(|n| {
                let mut event = threatbeat_core::Event::from_value(serde_json::json!({"n": n}));
                event.set_id(format!("id-{n}"));
                event.encode().unwrap()
            })
            .collect()
    }

    #[test]
    fn under_fsync_cursor_early_slices_are_forced_to_disk_with_the_push_that_is_durable_now() {
        let directory = tempfile::tempdir().unwrap();
        let mut queue = queue_with(directory.path(), FsyncPolicy::Cursor);
        assert_eq!(queue.push(&mut events(0..3), Durability::WithCursor).unwrap(), 3);
        assert_eq!(queue.push(&mut events(3..5), Durability::WithCursor).unwrap(), 2);
        assert!(
            queue.unsynced,
            "the early slices are written, not yet forced to disk"
        );
        assert_eq!(queue.push(&mut events(5..6), Durability::Now).unwrap(), 1);
        assert!(!queue.unsynced, "the last slice forces them with its own events");

        assert_eq!(queue.push(&mut events(6..8), Durability::WithCursor).unwrap(), 2);
        assert_eq!(queue.push(&mut VecDeque::new(), Durability::Now).unwrap(), 0);
        assert!(
            !queue.unsynced,
            "a last slice the processors emptied still forces them"
        );

        let read = queue.read(100).unwrap();
        let ids: Vec<String> = read
            .events
            .iter()
            .map(|event| event.id().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..8).map(|n| format!("id-{n}")).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn fsync_batch_forces_every_push_to_disk() {
        let directory = tempfile::tempdir().unwrap();
        let mut queue = queue_with(directory.path(), FsyncPolicy::Batch);
        queue.push(&mut events(0..3), Durability::WithCursor).unwrap();
        assert!(!queue.unsynced);
    }

    #[test]
    fn push_buffers_are_kept_empty_and_an_oversized_one_is_freed() {
        let mut buffers = PushBuffers::default();
        buffers.frames.extend_from_slice(&[1; 1024]);
        buffers.payload = vec![2; 2 * WRITE_BUFFER_BYTES + 1];
        buffers.reset();
        assert!(buffers.frames.is_empty() && buffers.frames.capacity() >= 1024);
        assert_eq!(
            buffers.payload.capacity(),
            0,
            "a huge record's buffer is not kept"
        );
        assert!(buffers.compressed.is_empty());
    }
}
