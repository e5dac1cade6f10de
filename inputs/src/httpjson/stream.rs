//! Pages decoded while they arrive. With a `response.split` on a JSON body,
//! a page is never held whole: its records are cut element by element
//! ([`StreamPlan`]) on a blocking thread and published in slices bounded by
//! count and bytes while the rest of the page is still on the wire. Memory
//! follows those budgets, not the page or one event: a MISP event of 200 000
//! attributes or a 500 MB page costs what a 5 000-attribute page does.
//!
//! A body up to [`WHOLE_BODY_BYTES`] is read first and parsed from memory
//! (the fastest way); a larger one is parsed from the connection as it
//! arrives. Every slice but the page's last is published without a cursor;
//! the last carries it, once the whole page was read, so a page cut short
//! (a dropped connection, truncated JSON) moves no cursor: it is fetched
//! again, and the records already published keep their ids.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};
use threatbeat_core::{Batch, Event, InputContext};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fetch::{describe, sleep_or_shutdown, Attempts, FetchError, Head};
use super::poll::{PollError, PUBLISH_SLICE};
use super::transform::RequestState;
use super::HttpJsonInput;
use crate::decode::{snippet, DecodeError};
use crate::split::{Emitted, Rejected, StreamError, StreamPlan};

/// A body up to this size is read whole and parsed from memory.
pub(super) const WHOLE_BODY_BYTES: usize = 4 << 20;
/// Bytes of one element's spooled list items kept in memory before the rest
/// goes to a temporary file (a MISP event of 200 000 attributes is ~100 MB).
/// 1 MiB instead of 4 lowered the peak RSS of a 500 MB page of 6 MB events
/// from 65-66 to 61 MB at the same CPU (docs/performance.md); an event of a
/// few hundred attributes stays in memory.
pub(super) const SPOOL_MEMORY_BYTES: usize = 1 << 20;
/// Records of a published slice, in bytes: a slice ends at
/// [`PUBLISH_SLICE`] records or this size, whichever comes first.
pub(super) const SLICE_BYTES: usize = 4 << 20;
/// Chunks of a streamed body in flight between the connection and the parser.
const CHUNKS_IN_FLIGHT: usize = 8;

/// One slice of records cut from a page.
struct Slice {
    records: Vec<Event>,
    rejected: Vec<Rejected>,
}

/// What a streamed page left for the poll after its early slices went out.
pub(super) struct StreamedPage {
    /// The body without its records (see [`StreamPlan::decode`]): what
    /// `last_response.body` shows to pagination and cursor templates.
    pub skeleton: Value,
    /// The page's last slice, published by the poll with the cursor.
    pub records: Vec<Event>,
    /// The page's first and last records (`first_event`, `last_event`).
    pub first: Option<Value>,
    /// See `first`.
    pub last: Option<Value>,
    /// Records of the page, the early slices included.
    pub count: usize,
}

/// Why a streamed page failed.
pub(super) enum PageFailure {
    /// Worth fetching the page again (a cut connection, truncated JSON).
    Retry(String),
    /// Not worth it (a body over its limit, a MISP error, shutdown).
    Fatal(PollError),
}

/// Where the parser reads a body from.
enum BodySource {
    /// Read whole: parsed from memory.
    Whole(Vec<u8>),
    /// Its first part, then the rest as it arrives.
    Streamed(Vec<u8>, mpsc::Receiver<Result<Bytes, String>>),
}

/// A blocking reader over a body that arrives in chunks.
struct ChunkReader {
    current: Bytes,
    chunks: mpsc::Receiver<Result<Bytes, String>>,
    /// Why the body stopped, once it did: every later read fails the same
    /// way. serde_json reads on after an error (it closes the open object to
    /// order its messages), and a read that waited on the channel again
    /// would hang for as long as the sender lived.
    failed: Option<String>,
}

impl ChunkReader {
    fn new(first: Bytes, chunks: mpsc::Receiver<Result<Bytes, String>>) -> Self {
        Self {
            current: first,
            chunks,
            failed: None,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if let Some(reason) = &self.failed {
                return Err(io::Error::other(reason.clone()));
            }
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(reason)) => self.failed = Some(reason),
                None => return Ok(0),
            }
        }
        let count = buffer.len().min(self.current.len());
        buffer[..count].copy_from_slice(&self.current[..count]);
        let _ = self.current.split_to(count);
        Ok(count)
    }
}

/// A reader that counts the bytes it gave.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<usize>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count.set(self.count.get() + read);
        Ok(read)
    }
}

/// What arrived first, when it cannot be the JSON the split reads: nothing,
/// an HTML page, a byte-order mark to skip. Returns where the JSON starts.
fn check_start(prefix: &[u8], complete: bool) -> Result<usize, DecodeError> {
    let bom = if prefix.starts_with("\u{feff}".as_bytes()) {
        3
    } else {
        0
    };
    let text = &prefix[bom..];
    match text.iter().position(|byte| !byte.is_ascii_whitespace()) {
        None if complete => Err(DecodeError::Empty),
        Some(start) if text[start] == b'<' => Err(DecodeError::Html {
            snippet: snippet(&String::from_utf8_lossy(
                &text[start..text.len().min(start + 512)],
            )),
        }),
        _ => Ok(bom),
    }
}

/// The parser's error as [`crate::decode::decode_json`] words it.
fn json_error(error: serde_json::Error, received: usize, prefix: &[u8]) -> DecodeError {
    if error.is_eof() {
        DecodeError::Truncated {
            reason: error.to_string(),
            length: received,
        }
    } else {
        DecodeError::Invalid {
            reason: error.to_string(),
            snippet: snippet(&String::from_utf8_lossy(&prefix[..prefix.len().min(512)])),
        }
    }
}

impl HttpJsonInput {
    /// Reads and cuts one page from `head`, publishing every slice but the
    /// last as soon as it is cut.
    pub(super) async fn stream_page(
        &self,
        plan: &Arc<StreamPlan>,
        head: Head,
        request: &RequestState,
        context: &InputContext,
        page: u32,
        starts_poll: &mut bool,
    ) -> Result<StreamedPage, PageFailure> {
        let Head {
            status,
            headers: _,
            mut response,
            started,
        } = head;
        let limit = self.fetcher.max_streamed_body_bytes;
        let too_large = || {
            PageFailure::Fatal(PollError::Fetch {
                page,
                reason: format!(
                    "{status} but the response body is larger than response.max_streamed_body_bytes ({limit} bytes, after decompression); \
                     not retried: raise the limit if the answer is genuine"
                ),
            })
        };
        let read_error = |error: reqwest::Error| {
            PageFailure::Retry(format!(
                "{status} but reading the response body failed: {}",
                describe(error)
            ))
        };
        if response.content_length().is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        // Set when a streamed body passed its limit: that failure is final.
        let over_limit = Arc::new(AtomicBool::new(false));
        let (prefix, complete) = read_start(&mut response).await.map_err(read_error)?;
        if prefix.len() as u64 > limit {
            return Err(too_large());
        }
        let start = check_start(&prefix, complete)
            .map_err(|error| PageFailure::Retry(format!("{status} but {error}")))?;
        let source = if complete {
            self.fetcher
                .metrics
                .record_request(Some(status.as_u16()), started.elapsed().as_secs_f64());
            BodySource::Whole(prefix)
        } else {
            let metrics = self.fetcher.metrics.clone();
            let receiver = pump_rest(
                response,
                prefix.len() as u64,
                limit,
                Arc::clone(&over_limit),
                context.shutdown.clone(),
                move || metrics.record_request(Some(status.as_u16()), started.elapsed().as_secs_f64()),
            );
            BodySource::Streamed(prefix, receiver)
        };
        let (slices, mut receiver) = mpsc::channel::<Slice>(1);
        let decoding = {
            let plan = Arc::clone(plan);
            tokio::task::spawn_blocking(move || decode_slices(&plan, source, start, &slices))
        };
        let url = request.url.as_str();
        let mut first = None;
        let mut last = None;
        let mut count = 0;
        let mut note = |records: &[Event]| {
            if first.is_none() {
                first = records.first().map(|record| Value::Object(record.document()));
            }
            if let Some(record) = records.last() {
                last = Some(Value::Object(record.document()));
            }
            count += records.len();
        };
        // A full slice goes out as soon as it arrives; the page's rest, which
        // the decoder returns at the end, is published with the cursor.
        loop {
            let slice = tokio::select! {
                slice = receiver.recv() => slice,
                _ = context.shutdown.cancelled() => return Err(PageFailure::Fatal(PollError::Shutdown)),
            };
            let Some(Slice { records, rejected }) = slice else {
                break;
            };
            self.dead_letter.record(url, rejected);
            if !records.is_empty() {
                note(&records);
                self.publish_slice(context, records, page, starts_poll).await?;
            }
        }
        let (skeleton, rest) = match decoding.await {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(_)) if over_limit.load(Ordering::Relaxed) => return Err(too_large()),
            Ok(Err(failure)) => return Err(decode_failure(failure, status, page, count)),
            Err(panic) => {
                return Err(PageFailure::Fatal(PollError::Response {
                    page,
                    reason: format!("decoding the page failed: {panic}"),
                }))
            }
        };
        if let Some(message) = crate::decode::misp_error_message(&skeleton) {
            return Err(PageFailure::Fatal(PollError::Fetch {
                page,
                reason: format!("{status} with a MISP error: {message}"),
            }));
        }
        self.dead_letter.record(url, rest.rejected);
        note(&rest.records);
        Ok(StreamedPage {
            skeleton,
            records: rest.records,
            first,
            last,
            count,
        })
    }

    /// Publishes one early slice of a page (no cursor), waiting until the
    /// pipeline took it (durable at once, or with the page's last slice).
    async fn publish_slice(
        &self,
        context: &InputContext,
        records: Vec<Event>,
        page: u32,
        starts_poll: &mut bool,
    ) -> Result<(), PageFailure> {
        let count = records.len();
        let batch = Batch {
            events: records,
            cursor: None,
            starts_poll: std::mem::take(starts_poll),
            ends_poll: false,
            fetched_again_until_cursor: true,
        };
        tokio::select! {
            result = context.publisher.publish(batch) => {
                result.map_err(|source| PageFailure::Fatal(PollError::Publish { page, source }))?;
                self.fetcher.metrics.record_events(count);
                Ok(())
            }
            _ = context.shutdown.cancelled() => Err(PageFailure::Fatal(PollError::Shutdown)),
        }
    }

    /// [`Self::stream_page`] with the page fetched again after a failure
    /// worth retrying, as many times as `request.retry` allows.
    pub(super) async fn fetch_streamed_page(
        &self,
        plan: &Arc<StreamPlan>,
        mut head: Result<Head, FetchError>,
        request: &RequestState,
        context: &InputContext,
        page: u32,
        starts_poll: &mut bool,
    ) -> Result<(Map<String, Value>, StreamedPage), PollError> {
        let mut attempts = Attempts::new(&self.fetcher, request);
        loop {
            let answer = head.map_err(|error| super::poll::fetch_error(page, error))?;
            let headers = answer.headers.clone();
            match self
                .stream_page(plan, answer, request, context, page, starts_poll)
                .await
            {
                Ok(streamed) => return Ok((headers, streamed)),
                Err(PageFailure::Fatal(error)) => return Err(error),
                Err(PageFailure::Retry(reason)) => {
                    let delay = attempts
                        .after_retryable_failure(&reason, None)
                        .map_err(|reason| PollError::Fetch { page, reason })?;
                    sleep_or_shutdown(delay, &context.shutdown)
                        .await
                        .map_err(|error| super::poll::fetch_error(page, error))?;
                    head = self.fetcher.fetch_head(request, &context.shutdown).await;
                }
            }
        }
    }
}

/// Reads the rest of a body, `received` bytes in, a few chunks ahead of the
/// parser, and runs `on_end` once it all arrived. Over `limit` bytes it sets
/// `over_limit` and hands the parser an error. Ends when the body does, when
/// the parser stops reading, or at shutdown (the parser then sees the body
/// end and stops too).
fn pump_rest(
    mut response: reqwest::Response,
    mut received: u64,
    limit: u64,
    over_limit: Arc<AtomicBool>,
    shutdown: CancellationToken,
    on_end: impl FnOnce() + Send + 'static,
) -> mpsc::Receiver<Result<Bytes, String>> {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = shutdown.cancelled() => return,
            };
            let next = match chunk {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    if received > limit {
                        over_limit.store(true, Ordering::Relaxed);
                        Err(format!(
                            "the response body is larger than response.max_streamed_body_bytes ({limit} bytes)"
                        ))
                    } else {
                        Ok(chunk)
                    }
                }
                Ok(None) => break,
                Err(error) => Err(describe(error)),
            };
            let stop = next.is_err();
            if sender.send(next).await.is_err() || stop {
                return;
            }
        }
        on_end();
    });
    receiver
}

/// Why decoding a page stopped, as the poll sees it: a body that ended
/// early or is not JSON is worth fetching again; a list of the wrong shape
/// is not.
fn decode_failure(
    (error, received, start): (StreamError, usize, Vec<u8>),
    status: reqwest::StatusCode,
    page: u32,
    count: usize,
) -> PageFailure {
    match error {
        StreamError::Json(error) if error.is_io() => PageFailure::Retry(format!(
            "{status} but reading the response body failed after {received} bytes and {count} records: {error}"
        )),
        StreamError::Json(error) => {
            let error = json_error(error, received, &start);
            PageFailure::Retry(format!("{status} but {error} (after {count} records)"))
        }
        StreamError::Stopped => PageFailure::Fatal(PollError::Shutdown),
        StreamError::Split(error) => PageFailure::Fatal(PollError::Response {
            page,
            reason: error.to_string(),
        }),
        error @ (StreamError::Spool(_) | StreamError::NotUtf8(_)) => {
            PageFailure::Retry(format!("{status} but {error}"))
        }
    }
}

/// The body's first [`WHOLE_BODY_BYTES`] (or all of it, `true`, when it is
/// shorter). Its buffer is sized once from the declared length (a hint,
/// capped at that size), so a page is not copied from buffer to buffer as it
/// grows; without a length it grows by doubling, never past that size.
async fn read_start(response: &mut reqwest::Response) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let declared = response
        .content_length()
        .unwrap_or(0)
        .min(WHOLE_BODY_BYTES as u64);
    let mut prefix = Vec::with_capacity(declared as usize);
    while prefix.len() < WHOLE_BODY_BYTES {
        let Some(chunk) = response.chunk().await? else {
            return Ok((prefix, true));
        };
        let needed = prefix.len() + chunk.len();
        if needed > prefix.capacity() {
            let grown = (prefix.capacity() * 2).clamp(needed, WHOLE_BODY_BYTES.max(needed));
            prefix.reserve_exact(grown - prefix.len());
        }
        prefix.extend_from_slice(&chunk);
    }
    Ok((prefix, false))
}

/// Decodes a body on a blocking thread, sending slices as they fill; the
/// skeleton and the last, partial slice (possibly empty) come back at the end.
/// An error comes back with the bytes received and the body's start, for
/// the message.
fn decode_slices(
    plan: &StreamPlan,
    source: BodySource,
    start: usize,
    slices: &mpsc::Sender<Slice>,
) -> Result<(Value, Slice), (StreamError, usize, Vec<u8>)> {
    let mut slice = Slice {
        records: Vec::new(),
        rejected: Vec::new(),
    };
    let mut bytes = 0;
    let runtime = tokio::runtime::Handle::current();
    let mut emit = |emitted: Emitted| {
        match emitted {
            Emitted::Record { record, size } => {
                slice.records.push(record);
                bytes += size;
            }
            Emitted::Rejected(rejected) => slice.rejected.push(rejected),
        }
        if slice.records.len() >= PUBLISH_SLICE || bytes >= SLICE_BYTES {
            bytes = 0;
            let full = std::mem::replace(
                &mut slice,
                Slice {
                    records: Vec::new(),
                    rejected: Vec::new(),
                },
            );
            slices.blocking_send(full).map_err(|_| crate::split::Stopped)?;
            // The next slice is cut once the poll took this one: one slice is
            // worked on while the next is cut, and none waits decoded in
            // between (a slice of MISP attributes is a few megabytes of trees).
            drop(
                runtime
                    .block_on(slices.reserve())
                    .map_err(|_| crate::split::Stopped)?,
            );
        }
        Ok(())
    };
    let result = match source {
        BodySource::Whole(body) => match std::str::from_utf8(&body[start..]) {
            // Checked once here, the parser need not check each string.
            Ok(text) => {
                let mut deserializer = serde_json::Deserializer::from_str(text);
                plan.decode(&mut deserializer, &mut emit)
                    .map_err(|error| (error, body.len(), body[..body.len().min(512)].to_vec()))
            }
            Err(error) => Err((
                StreamError::NotUtf8(DecodeError::NotUtf8 {
                    offset: start + error.valid_up_to(),
                }),
                body.len(),
                Vec::new(),
            )),
        },
        BodySource::Streamed(prefix, chunks) => {
            let head = prefix[..prefix.len().min(512)].to_vec();
            let received = Rc::new(Cell::new(0));
            // The first part is freed once it was read, as each chunk is.
            let reader = Counting {
                inner: ChunkReader::new(Bytes::from(prefix), chunks),
                count: Rc::clone(&received),
            };
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            // The byte-order mark `check_start` found.
            let skipped = io::copy(&mut (&mut reader).take(start as u64), &mut io::sink());
            match skipped {
                Ok(_) => {
                    let mut deserializer = serde_json::Deserializer::from_reader(reader);
                    plan.decode(&mut deserializer, &mut emit)
                        .map_err(|error| (error, received.get(), head))
                }
                Err(error) => Err((
                    StreamError::Json(serde_json::Error::io(error)),
                    received.get(),
                    head,
                )),
            }
        }
    };
    let skeleton = result?;
    Ok((skeleton, slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_arrives_first_is_told_apart() {
        assert_eq!(check_start(b"  {\"response\": []}", true), Ok(0));
        assert_eq!(
            check_start("\u{feff}{\"a\": 1}".as_bytes(), true),
            Ok(3),
            "a byte-order mark is skipped"
        );
        assert_eq!(check_start(b" \n ", true), Err(DecodeError::Empty));
        assert_eq!(check_start(b" \n ", false), Ok(0), "more may come");
        assert!(matches!(
            check_start(b"\n<html><body>Login", true),
            Err(DecodeError::Html { .. })
        ));
    }

    #[test]
    fn a_chunked_body_reads_as_one() {
        let (sender, chunks) = mpsc::channel(4);
        for chunk in ["{\"a\":", "", " [1,", " 2]}"] {
            sender.try_send(Ok(Bytes::from(chunk))).unwrap();
        }
        drop(sender);
        let reader = ChunkReader::new(Bytes::new(), chunks);
        let value: Value = serde_json::from_reader(BufReader::new(reader)).unwrap();
        assert_eq!(value, serde_json::json!({"a": [1, 2]}));

        let (sender, chunks) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"{\"a\":"))).unwrap();
        sender.try_send(Err("connection reset".to_owned())).unwrap();
        // The sender stays open: the failure alone ends the read.
        let reader = ChunkReader::new(Bytes::new(), chunks);
        let error = serde_json::from_reader::<_, Value>(reader).unwrap_err();
        assert!(
            error.is_io() && error.to_string().contains("connection reset"),
            "{error}"
        );
    }
}
