//! Reading what a previous run left: the ack file, the segment list, a scan
//! of each segment for its last valid sequence number, and the buffered
//! segment reader.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::disk::io_error;
use super::frame::{self, FrameRead, SEGMENT_HEADER_LEN};
use super::QueueError;

/// A buffered segment reader that only seeks when it must: frames are
/// mostly read one after another, and a seek would drop the buffer.
#[derive(Debug)]
pub(super) struct SegmentReader {
    pub(super) file: BufReader<File>,
    pub(super) position: u64,
}

impl SegmentReader {
    pub(super) fn seek_to(&mut self, offset: u64) -> std::io::Result<()> {
        if offset != self.position {
            self.file.seek_relative(offset as i64 - self.position as i64)?;
            self.position = offset;
        }
        Ok(())
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.file.read(buffer)?;
        self.position += count as u64;
        Ok(count)
    }
}

/// `(first unacknowledged sequence number, problem)`; 0 when absent or unreadable.
pub(super) fn read_ack_state(path: &Path) -> (u64, Option<String>) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return (0, None),
        Err(error) => return (0, Some(error.to_string())),
    };
    if bytes.len() != 12 {
        return (0, Some(format!("expected 12 bytes, found {}", bytes.len())));
    }
    let stored = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if stored != crc32fast::hash(&bytes[..8]) {
        return (0, Some("checksum mismatch".to_owned()));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[..8]);
    (u64::from_le_bytes(seq), None)
}

pub(super) fn list_segments(directory: &Path) -> Result<Vec<(u64, PathBuf)>, QueueError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(directory).map_err(io_error(directory))? {
        let entry = entry.map_err(io_error(directory))?;
        let path = entry.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".seg"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(id) = id {
            segments.push((id, path));
        }
    }
    segments.sort();
    Ok(segments)
}

pub(super) struct SegmentScan {
    /// The segment format version (how payloads are laid out).
    pub(super) format: u32,
    pub(super) last_seq: Option<u64>,
    pub(super) valid_size: u64,
    pub(super) file_size: u64,
}

/// Finds the last valid sequence number of a segment (skipping garbage, as the reader will).
pub(super) fn scan_segment(path: &Path) -> Result<SegmentScan, QueueError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let file_size = bytes.len() as u64;
    let Ok(format) = frame::check_segment_header(&mut bytes.as_slice()).map_err(io_error(path))? else {
        return Ok(SegmentScan {
            format: frame::SEGMENT_VERSION_PLAIN,
            last_seq: None,
            valid_size: 0,
            file_size,
        });
    };
    let mut offset = SEGMENT_HEADER_LEN as usize;
    let mut last_seq = None;
    let mut valid_size = SEGMENT_HEADER_LEN;
    while offset < bytes.len() {
        match frame::decode_frame(&bytes[offset..]) {
            FrameRead::Frame(found, length) => {
                last_seq = Some(found.seq);
                offset += length as usize;
                valid_size = offset as u64;
            }
            FrameRead::End => break,
            FrameRead::Corrupt(_) => match frame::resync(&bytes[offset..]) {
                Some(next) => offset += next,
                None => break,
            },
        }
    }
    Ok(SegmentScan {
        format,
        last_seq,
        valid_size,
        file_size,
    })
}
