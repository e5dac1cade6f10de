//! The on-disk record: a CRC-checked, length-prefixed frame, and the
//! segment header. See the module documentation of `queue` for the layout.

use std::io::{self, Read};
use std::ops::Range;

use bytes::Bytes;
use lz4_flex::block::{self, CompressTable};
use threatbeat_core::{EncodedEvent, EncodedMetadata, Event};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"TBQS";
/// Segment format 2, written with `compression: none`: a payload is the
/// event's metadata JSON, a newline, then the document JSON.
pub const SEGMENT_VERSION_PLAIN: u32 = 2;
/// Segment format 3, written with `compression: lz4`: a payload is a format-2
/// payload compressed as one LZ4 block, preceded by its uncompressed length
/// (u32 LE). Each frame is compressed on its own, so a corrupt frame still
/// loses only itself, and the frame's CRC covers the compressed bytes.
pub const SEGMENT_VERSION_LZ4: u32 = 3;
/// The first format (still read), whose payload is one JSON `Event`.
const SEGMENT_VERSION_EVENT_JSON: u32 = 1;
/// Segment header size: magic + version.
pub const SEGMENT_HEADER_LEN: u64 = 8;
/// First bytes of every frame; lets a reader find the next frame after garbage.
pub const FRAME_MAGIC: [u8; 4] = *b"TBFR";
/// Bytes a frame adds to its payload: magic, length, sequence number, CRC.
pub const FRAME_OVERHEAD: u64 = 4 + 4 + 8 + 4;
/// The largest payload accepted (a bigger length field is garbage).
pub const MAX_PAYLOAD: u32 = 256 * 1024 * 1024;

/// Appends one frame for `payload` with sequence number `seq` to `out`.
pub fn encode_frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let length = payload.len() as u32;
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(length, seq, payload).to_le_bytes());
}

/// CRC-32 (IEEE) over length, sequence number and payload.
fn checksum(length: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The header bytes of a segment of format `version`.
pub fn segment_header(version: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..4].copy_from_slice(&SEGMENT_MAGIC);
    header[4..].copy_from_slice(&version.to_le_bytes());
    header
}

/// One valid frame, found at the start of some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sequence number.
    pub seq: u64,
    /// Where its payload lies in the bytes it was found at: a reader slices
    /// the payload out of the bytes it read instead of copying it.
    pub payload: Range<usize>,
}

/// What was found at a frame position.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRead {
    /// A valid frame of `len` bytes in total.
    Frame(Frame, u64),
    /// Clean end of the data.
    End,
    /// Bytes that are not a valid frame; the reason says why.
    Corrupt(String),
}

/// Decodes the frame at the start of `bytes` (the data up to the end of the segment).
pub fn decode_frame(bytes: &[u8]) -> FrameRead {
    if bytes.is_empty() {
        return FrameRead::End;
    }
    if bytes.len() < FRAME_OVERHEAD as usize {
        return FrameRead::Corrupt(format!(
            "truncated record ({} bytes left, a record needs at least {FRAME_OVERHEAD})",
            bytes.len()
        ));
    }
    if bytes[..4] != FRAME_MAGIC {
        return FrameRead::Corrupt("no record marker".to_owned());
    }
    let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if length > MAX_PAYLOAD {
        return FrameRead::Corrupt(format!("implausible record length {length}"));
    }
    let total = FRAME_OVERHEAD as usize + length as usize;
    if bytes.len() < total {
        return FrameRead::Corrupt(format!(
            "truncated record (length {length} but only {} bytes left)",
            bytes.len() - FRAME_OVERHEAD as usize
        ));
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&bytes[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    let payload = &bytes[16..16 + length as usize];
    let stored = u32::from_le_bytes([
        bytes[total - 4],
        bytes[total - 3],
        bytes[total - 2],
        bytes[total - 1],
    ]);
    if stored != checksum(length, seq, payload) {
        return FrameRead::Corrupt("checksum mismatch".to_owned());
    }
    FrameRead::Frame(
        Frame {
            seq,
            payload: 16..16 + length as usize,
        },
        total as u64,
    )
}

/// The offset (relative to `bytes`) of the next valid frame after a corrupt
/// spot, searching from position 1; `None` when no valid frame follows.
pub fn resync(bytes: &[u8]) -> Option<usize> {
    let mut start = 1;
    while start + FRAME_OVERHEAD as usize <= bytes.len() {
        let found = bytes[start..]
            .windows(4)
            .position(|window| window == FRAME_MAGIC)?;
        let candidate = start + found;
        if let FrameRead::Frame(..) = decode_frame(&bytes[candidate..]) {
            return Some(candidate);
        }
        start = candidate + 1;
    }
    None
}

/// Appends the payload of `event` in the current format.
pub fn encode_payload(event: &EncodedEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(event.metadata.text());
    out.push(b'\n');
    out.extend_from_slice(&event.source);
}

/// Replaces `out` with the format-3 form of the format-2 `payload`: its
/// length (u32 LE), then the payload compressed as one LZ4 block. `table`
/// is reused from one record to the next so that each does not allocate its own.
pub fn compress_payload(payload: &[u8], table: &mut CompressTable, out: &mut Vec<u8>) -> Result<(), String> {
    let length = u32::try_from(payload.len())
        .map_err(|_| format!("a record of {} bytes is too large to compress", payload.len()))?;
    out.clear();
    out.extend_from_slice(&length.to_le_bytes());
    out.resize(4 + block::get_maximum_output_size(payload.len()), 0);
    let written = block::compress_into_with_table(payload, &mut out[4..], table)
        .map_err(|error| format!("cannot compress a record: {error}"))?;
    out.truncate(4 + written);
    Ok(())
}

/// The format-2 payload inside a format-3 `stored` payload. The declared
/// length is checked before anything is allocated: never more than
/// `MAX_PAYLOAD`, and never more than the block can hold (an LZ4 block
/// yields at most 255 bytes per byte: a match is extended by at most 255
/// per length byte, a literal is copied once), so a corrupt prefix costs
/// no more memory than a valid record could.
pub fn decompress_payload(stored: &[u8]) -> Result<Vec<u8>, String> {
    let Some((prefix, compressed)) = stored.split_first_chunk::<4>() else {
        return Err(format!(
            "compressed record of {} bytes is shorter than its length prefix",
            stored.len()
        ));
    };
    let length = u32::from_le_bytes(*prefix);
    if length > MAX_PAYLOAD || length as u64 > compressed.len() as u64 * 255 {
        return Err(format!(
            "implausible uncompressed length {length} for {} compressed bytes",
            compressed.len()
        ));
    }
    let mut payload = vec![0u8; length as usize];
    let written = block::decompress_into(compressed, &mut payload)
        .map_err(|error| format!("undecodable compressed record: {error}"))?;
    if written != payload.len() {
        return Err(format!(
            "compressed record holds {written} bytes, its prefix says {length}"
        ));
    }
    Ok(payload)
}

/// Reads a payload written in segment format `version`. The document is a
/// slice of the payload, not a copy; only the small metadata is parsed.
pub fn decode_payload(version: u32, payload: Bytes) -> Result<EncodedEvent, String> {
    match version {
        SEGMENT_VERSION_EVENT_JSON => {
            let event: Event =
                serde_json::from_slice(&payload).map_err(|error| format!("not an event: {error}"))?;
            return event.encode().map_err(|error| error.to_string());
        }
        SEGMENT_VERSION_LZ4 => return decode_plain_payload(Bytes::from(decompress_payload(&payload)?)),
        _ => {}
    }
    decode_plain_payload(payload)
}

/// Reads a format-2 payload.
fn decode_plain_payload(payload: Bytes) -> Result<EncodedEvent, String> {
    let split = payload
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or_else(|| "no separator between metadata and document".to_owned())?;
    let metadata = EncodedMetadata::parse(payload.slice(..split))
        .map_err(|error| format!("unreadable metadata: {error}"))?;
    Ok(EncodedEvent {
        metadata,
        source: payload.slice(split + 1..),
    })
}

/// Checks the segment header of `file`; returns its format version.
pub fn check_segment_header(file: &mut impl Read) -> io::Result<Result<u32, String>> {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Err("the segment header is truncated".to_owned()))
        }
        Err(error) => return Err(error),
    }
    if header[..4] != SEGMENT_MAGIC {
        return Ok(Err("not a threatbeat queue segment (bad magic)".to_owned()));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if ![
        SEGMENT_VERSION_EVENT_JSON,
        SEGMENT_VERSION_PLAIN,
        SEGMENT_VERSION_LZ4,
    ]
    .contains(&version)
    {
        return Ok(Err(format!("unsupported segment version {version}")));
    }
    Ok(Ok(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detection() {
        let mut bytes = Vec::new();
        encode_frame(7, b"{\"a\":1}", &mut bytes);
        encode_frame(8, b"{\"b\":2}", &mut bytes);
        let FrameRead::Frame(frame, length) = decode_frame(&bytes) else {
            panic!()
        };
        assert_eq!((frame.seq, &bytes[frame.payload]), (7, b"{\"a\":1}".as_slice()));
        assert_eq!(length, FRAME_OVERHEAD + 7);

        let mut garbled = bytes.clone();
        garbled[18] ^= 0xff;
        assert_eq!(
            decode_frame(&garbled),
            FrameRead::Corrupt("checksum mismatch".into())
        );
        let next = resync(&garbled).unwrap();
        assert_eq!(next as u64, length);

        assert!(
            matches!(decode_frame(&bytes[..10]), FrameRead::Corrupt(reason) if reason.contains("truncated"))
        );
        assert_eq!(decode_frame(&[]), FrameRead::End);
        assert_eq!(resync(&bytes[..length as usize]), None);
    }

    #[test]
    fn payloads_of_both_versions_decode_to_the_same_event() {
        let mut event = Event::from_value(serde_json::json!({"a": {"b": 1}, "s": "x\ny"}));
        event.set_id("id-1");
        let encoded = event.clone().encode().unwrap();
        let mut current = Vec::new();
        encode_payload(&encoded, &mut current);
        assert_eq!(
            current,
            br#"{"_id":"id-1"}
{"a":{"b":1},"s":"x\ny"}"#
        );
        assert_eq!(
            decode_payload(SEGMENT_VERSION_PLAIN, current.into()),
            Ok(encoded.clone())
        );
        let first_format = serde_json::to_vec(&event).unwrap();
        assert_eq!(
            decode_payload(SEGMENT_VERSION_EVENT_JSON, first_format.into()),
            Ok(encoded)
        );
        assert!(decode_payload(SEGMENT_VERSION_PLAIN, Bytes::from_static(b"{}"))
            .unwrap_err()
            .contains("separator"));
        assert!(
            decode_payload(SEGMENT_VERSION_PLAIN, Bytes::from_static(b"[\n{}"))
                .unwrap_err()
                .contains("metadata")
        );
    }

    #[test]
    fn updates_and_deletes_keep_the_same_record_format() {
        use threatbeat_core::OpType;
        let mut update = Event::from_value(serde_json::json!({"@timestamp": "2026-01-02T00:00:00Z"}));
        update.set_id("u");
        update.set_op_type(OpType::Update);
        update
            .metadata
            .insert("doc_as_upsert".into(), serde_json::json!(true));
        let mut delete = Event::from_value(serde_json::json!({"ignored": 1}));
        delete.set_id("d");
        delete.set_op_type(OpType::Delete);
        let mut payload = Vec::new();
        encode_payload(&delete.clone().encode().unwrap(), &mut payload);
        assert_eq!(
            payload,
            br#"{"_id":"d","op_type":"delete"}
{}"#
        );
        for event in [update, delete] {
            let encoded = event.encode().unwrap();
            let mut payload = Vec::new();
            encode_payload(&encoded, &mut payload);
            let read = decode_payload(SEGMENT_VERSION_PLAIN, payload.into()).unwrap();
            assert_eq!(read, encoded);
            assert_eq!(
                (read.op_type(), read.doc_as_upsert()),
                (encoded.op_type(), encoded.doc_as_upsert())
            );
        }
    }

    fn compressed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress_payload(payload, &mut CompressTable::default(), &mut out).unwrap();
        out
    }

    #[test]
    fn a_compressed_payload_reads_back_as_the_same_event() {
        let mut event = Event::from_value(
            serde_json::json!({"threat": {"indicator": {"ip": "10.0.0.1"}}, "tags": ["a", "a", "a", "a"]}),
        );
        event.set_id("id-1");
        let encoded = event.encode().unwrap();
        let mut plain = Vec::new();
        encode_payload(&encoded, &mut plain);
        let stored = compressed(&plain);
        assert_eq!(stored[..4], (plain.len() as u32).to_le_bytes());
        assert_ne!(stored[4..], plain[..], "the block is not the plain payload");
        assert_eq!(decompress_payload(&stored).unwrap(), plain);
        assert_eq!(decode_payload(SEGMENT_VERSION_LZ4, stored.into()), Ok(encoded));
        // The empty payload too (a block of one token).
        assert_eq!(decompress_payload(&compressed(b"")).unwrap(), b"");
    }

    #[test]
    fn a_bad_compressed_payload_is_refused_without_a_large_allocation() {
        let plain = br#"{"_id":"x"}
{"message":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let good = compressed(plain);
        let with_prefix = |length: u32| {
            let mut bytes = good.clone();
            bytes[..4].copy_from_slice(&length.to_le_bytes());
            bytes
        };
        let reason = |stored: &[u8]| decompress_payload(stored).unwrap_err();
        assert!(reason(&good[..3]).contains("shorter than its length prefix"));
        for length in [MAX_PAYLOAD + 1, u32::MAX, MAX_PAYLOAD] {
            assert!(reason(&with_prefix(length)).contains("implausible uncompressed length"));
        }
        // Longer than 255 bytes per compressed byte: no block holds that.
        let most = (good.len() as u32 - 4) * 255;
        assert!(reason(&with_prefix(most + 1)).contains("implausible"));
        assert!(reason(&with_prefix(most)).contains("prefix says"));
        // The prefix says less than the block holds, or more.
        assert!(reason(&with_prefix(plain.len() as u32 - 1)).contains("undecodable"));
        assert!(reason(&with_prefix(plain.len() as u32 + 1)).contains("prefix says"));
        // A block cut short.
        assert!(reason(&good[..good.len() - 3]).contains("undecodable"));
        assert!(decode_payload(
            SEGMENT_VERSION_LZ4,
            Bytes::copy_from_slice(&good[..good.len() - 3])
        )
        .is_err());
    }

    #[test]
    fn segment_headers_of_every_version_are_accepted_and_others_refused() {
        for version in [
            SEGMENT_VERSION_EVENT_JSON,
            SEGMENT_VERSION_PLAIN,
            SEGMENT_VERSION_LZ4,
        ] {
            let header = segment_header(version);
            assert_eq!(check_segment_header(&mut header.as_slice()).unwrap(), Ok(version));
        }
        for version in [0, 4, u32::MAX] {
            let header = segment_header(version);
            assert_eq!(
                check_segment_header(&mut header.as_slice()).unwrap(),
                Err(format!("unsupported segment version {version}"))
            );
        }
    }
}

/// Property tests: whatever a segment file holds (a torn write, a flipped
/// bit, another program's bytes), reading it gives a frame, the end, or a
/// reason, never a panic, and never a payload the bytes do not contain.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Frames of small payloads, encoded back to back, with where each starts.
    fn stream(frames: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for (seq, payload) in frames {
            starts.push(bytes.len());
            encode_frame(*seq, payload, &mut bytes);
        }
        (bytes, starts)
    }

    /// Bytes that often look like the start of a frame: the marker, then
    /// a length that may be huge, then anything.
    fn frame_like() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            (
                prop_oneof![Just(MAX_PAYLOAD), Just(MAX_PAYLOAD + 1), Just(u32::MAX), 0u32..64],
                prop::collection::vec(any::<u8>(), 0..96)
            )
                .prop_map(|(length, rest)| {
                    let mut bytes = FRAME_MAGIC.to_vec();
                    bytes.extend_from_slice(&length.to_le_bytes());
                    bytes.extend(rest);
                    bytes
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_are_a_frame_the_end_or_corrupt(bytes in frame_like()) {
            match decode_frame(&bytes) {
                FrameRead::Frame(frame, length) => {
                    // Only bytes that are there, re-encoding to exactly them.
                    prop_assert!(length as usize <= bytes.len());
                    prop_assert!(frame.payload.len() <= MAX_PAYLOAD as usize);
                    prop_assert_eq!(length, FRAME_OVERHEAD + frame.payload.len() as u64);
                    let mut again = Vec::new();
                    encode_frame(frame.seq, &bytes[frame.payload], &mut again);
                    prop_assert_eq!(again.as_slice(), &bytes[..length as usize]);
                }
                FrameRead::End => prop_assert!(bytes.is_empty()),
                FrameRead::Corrupt(reason) => prop_assert!(!reason.is_empty() && reason.len() < 200),
            }
            if let Some(next) = resync(&bytes) {
                prop_assert!(next >= 1 && next < bytes.len());
                prop_assert!(matches!(decode_frame(&bytes[next..]), FrameRead::Frame(..)));
            }
        }

        #[test]
        fn frames_read_back_one_after_another(
            frames in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..48)), 0..6),
        ) {
            let (bytes, starts) = stream(&frames);
            let mut offset = 0;
            for ((seq, payload), start) in frames.iter().zip(&starts) {
                prop_assert_eq!(offset, *start);
                let FrameRead::Frame(frame, length) = decode_frame(&bytes[offset..]) else {
                    return Err(TestCaseError::fail(format!("no frame at {offset}")));
                };
                prop_assert_eq!((frame.seq, &bytes[offset..][frame.payload]), (*seq, payload.as_slice()));
                offset += length as usize;
            }
            prop_assert_eq!(decode_frame(&bytes[offset..]), FrameRead::End);
        }

        #[test]
        fn a_torn_or_damaged_frame_is_corrupt_and_the_next_one_is_found(
            frames in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..48)), 2..5),
            victim in any::<prop::sample::Index>(),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let (bytes, starts) = stream(&frames);
            let victim = victim.index(frames.len());
            let start = starts[victim];
            let end = starts.get(victim + 1).copied().unwrap_or(bytes.len());

            // One byte changed anywhere in a frame: the marker, the length,
            // the sequence number, the payload or the checksum.
            let mut damaged = bytes.clone();
            damaged[start + position.index(end - start)] ^= flip;
            prop_assert!(
                matches!(decode_frame(&damaged[start..]), FrameRead::Corrupt(_)),
                "a damaged frame read as valid"
            );
            // Reading on finds the very next frame: none is skipped.
            if let Some(next) = resync(&damaged[start..]) {
                prop_assert_eq!(start + next, end);
            } else {
                prop_assert_eq!(victim, frames.len() - 1, "a later frame was not found");
            }

            // A frame cut short (a torn write at the end of the segment).
            let torn = &bytes[start..start + cut.index(end - start)];
            let read = decode_frame(torn);
            if torn.is_empty() {
                prop_assert_eq!(read, FrameRead::End);
            } else {
                prop_assert!(matches!(read, FrameRead::Corrupt(ref reason) if reason.contains("truncated")), "{read:?}");
            }
        }

        #[test]
        fn any_payload_decodes_or_is_refused(
            version in prop_oneof![
                Just(SEGMENT_VERSION_PLAIN),
                Just(SEGMENT_VERSION_EVENT_JSON),
                Just(SEGMENT_VERSION_LZ4),
                any::<u32>(),
            ],
            payload in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..96),
                "[{}\\[\\]\":,a-z0-9\n_]{0,64}".prop_map(String::into_bytes),
            ],
        ) {
            let length = payload.len();
            if let Ok(event) = decode_payload(version, Bytes::from(payload.clone())) {
                if version == SEGMENT_VERSION_PLAIN {
                    // The document is the payload after the first newline, not a copy of more.
                    let split = payload.iter().position(|byte| *byte == b'\n').expect("a separator");
                    prop_assert_eq!(&event.source[..], &payload[split + 1..]);
                    prop_assert!(event.source.len() < length);
                }
            }
        }

        #[test]
        fn encoded_events_read_back(
            id in "[a-zA-Z0-9_-]{1,12}",
            fields in prop::collection::btree_map("[a-z.@]{1,6}", "\\PC{0,12}", 0..5),
            version in prop_oneof![Just(SEGMENT_VERSION_PLAIN), Just(SEGMENT_VERSION_LZ4)],
        ) {
            let mut event = Event::from_value(json!(fields));
            event.set_id(id);
            let encoded = event.encode().expect("an event encodes");
            let mut payload = Vec::new();
            encode_payload(&encoded, &mut payload);
            if version == SEGMENT_VERSION_LZ4 {
                let mut stored = Vec::new();
                compress_payload(&payload, &mut CompressTable::default(), &mut stored).expect("it compresses");
                payload = stored;
            }
            let mut bytes = Vec::new();
            encode_frame(7, &payload, &mut bytes);
            let FrameRead::Frame(frame, _) = decode_frame(&bytes) else {
                return Err(TestCaseError::fail("the frame does not read back"));
            };
            prop_assert_eq!(decode_payload(version, Bytes::from(bytes).slice(frame.payload)), Ok(encoded));
        }

        #[test]
        fn any_bytes_compress_and_read_back(
            // Repetitive text (what compresses) as well as noise (what does not).
            plain in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..600),
                "(\\{\"[a-c]{1,3}\":\"[a-c0-9]{0,8}\",?\\}){0,40}".prop_map(String::into_bytes),
            ],
        ) {
            // One table for two records: a reused table must not leak one into the other.
            let mut table = CompressTable::default();
            let mut stored = Vec::new();
            compress_payload(b"a previous record, a previous record", &mut table, &mut stored).expect("it compresses");
            compress_payload(&plain, &mut table, &mut stored).expect("it compresses");
            prop_assert!(stored.len() <= 4 + block::get_maximum_output_size(plain.len()));
            prop_assert_eq!(decompress_payload(&stored), Ok(plain));
        }

        #[test]
        fn a_damaged_compressed_payload_never_panics_nor_overallocates(
            plain in "(\\{\"[a-c]{1,3}\":\"[a-c0-9]{0,8}\",?\\}){1,40}".prop_map(String::into_bytes),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
            noise in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut stored = Vec::new();
            compress_payload(&plain, &mut CompressTable::default(), &mut stored).expect("it compresses");
            let mut flipped = stored.clone();
            flipped[position.index(stored.len())] ^= flip;
            let torn = &stored[..cut.index(stored.len())];
            for damaged in [flipped.as_slice(), torn, noise.as_slice()] {
                // A changed literal may still decode (the frame CRC is what
                // catches it on disk); whatever decodes is what the prefix says.
                if let Ok(read) = decompress_payload(damaged) {
                    let declared = u32::from_le_bytes(damaged[..4].try_into().expect("4 bytes"));
                    prop_assert_eq!(read.len(), declared as usize);
                    prop_assert!(read.len() <= (damaged.len() - 4) * 255);
                }
                let _ = decode_payload(SEGMENT_VERSION_LZ4, Bytes::copy_from_slice(damaged));
            }
            // Cut inside the block: the block is incomplete, never read as whole.
            if torn.len() < stored.len() {
                prop_assert!(decompress_payload(torn).is_err());
            }
        }
    }

    #[test]
    fn a_length_past_the_limit_is_refused_before_anything_is_read() {
        for length in [MAX_PAYLOAD + 1, u32::MAX] {
            let mut bytes = FRAME_MAGIC.to_vec();
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(&[0; 12]);
            assert_eq!(
                decode_frame(&bytes),
                FrameRead::Corrupt(format!("implausible record length {length}"))
            );
        }
        let mut bytes = FRAME_MAGIC.to_vec();
        bytes.extend_from_slice(&MAX_PAYLOAD.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        assert!(matches!(decode_frame(&bytes), FrameRead::Corrupt(reason) if reason.contains("truncated")));
    }
}
