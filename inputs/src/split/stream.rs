//! Streaming split: the records of one JSON body, decoded element by element
//! while the body is read, so that memory follows a byte budget and never
//! the size of a page or of one event.
//!
//! The top split's list is walked in place: each element is decoded on its
//! own and turned into records at once. Inside an element, the lists that
//! nested splits cut (MISP's `Event.Attribute` and `Event.Object`) are not
//! decoded into the element: their items are kept as raw JSON in a [`Spool`]
//! (in memory up to a budget, then in an unlinked temporary file), because
//! the context every record copies (the event's `Tag`, MISP writes it after
//! the attributes) may come after them. When the element closes, the spooled
//! items are decoded one at a time, each into its records. A record that is
//! only the element around one item (a MISP attribute in its event, or an
//! object holding one of its attributes) shares the element's context
//! instead of copying it ([`SharedRecord`]): its document is built by the
//! pipeline that processes it.
//!
//! Anything off that path (a target that is missing, empty, of another type,
//! or a split this walk does not cover) is decoded into the body's skeleton
//! and cut by [`Split::apply`] as before: both ways give the same records.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use threatbeat_core::{Event, SharedRecord};

use super::{Rejected, Split, SplitError, SplitKind};

/// What the decoder hands out, in body order.
#[derive(Debug)]
pub enum Emitted {
    /// One record, with the approximate bytes it holds.
    Record {
        /// The record; its document is assembled by [`Event::assemble`]
        /// when it shares its element's context.
        record: Event,
        /// Its size in bytes, approximately (for byte-bounded batches).
        size: usize,
    },
    /// A record a nested split could not cut (kept aside with why).
    Rejected(Rejected),
}

/// The receiver of the records went away (the input is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Why a body could not be streamed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The bytes are not JSON, or end early.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Spilling one element's items to a temporary file failed.
    #[error("spooling a large element to a temporary file failed: {0}")]
    Spool(io::Error),
    /// The body's own list has the wrong shape.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// The receiver went away.
    #[error("the input is stopping")]
    Stopped,
    /// The body is not UTF-8 (found before parsing).
    #[error(transparent)]
    NotUtf8(crate::decode::DecodeError),
}

/// What the decoder does with the value under one key.
#[derive(Debug)]
enum Step {
    /// Skipped without being decoded (a `discard` path).
    Skip,
    /// Walked into: some keys below it are not plain values.
    Descend(Vec<(String, Step)>),
    /// The top split's list: its elements are streamed.
    Elements,
    /// The list of nested split `n`: its items are spooled.
    Spool(usize),
}

impl Step {
    /// Adds `path` (non-empty) with `leaf` at its end. A path below a skipped
    /// one is already skipped; `false` when two lists overlap (one inside the
    /// other, or the same one twice), which this walk does not cover.
    fn insert(steps: &mut Vec<(String, Step)>, path: &[String], leaf: Step) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        let index = match steps.iter().position(|(key, _)| key == first) {
            Some(index) => index,
            None => {
                steps.push((first.clone(), Step::Descend(Vec::new())));
                steps.len() - 1
            }
        };
        match (&mut steps[index].1, rest.is_empty()) {
            (Step::Skip, _) => true,
            (step @ Step::Descend(_), true) => {
                let fresh = matches!(step, Step::Descend(children) if children.is_empty());
                let skip = matches!(leaf, Step::Skip);
                if fresh || skip {
                    *step = leaf;
                }
                fresh || skip
            }
            (Step::Descend(children), false) => Step::insert(children, rest, leaf),
            _ => false,
        }
    }
}

/// How each element of the top list is decoded.
#[derive(Debug)]
enum ElementPlan {
    /// Whole (discarded paths skipped), then cut by the split as a record.
    Whole(Vec<(String, Step)>),
    /// With the nested splits' lists spooled, then cut item by item.
    Spooled(Vec<(String, Step)>),
}

/// The walk of one body for one split, compiled once.
#[derive(Debug)]
pub struct StreamPlan {
    /// The split this plan walks for.
    split: Split,
    /// The steps to the top list from the body's root; `None` when the body
    /// itself is the list.
    body: Option<Vec<(String, Step)>>,
    element: ElementPlan,
    /// Bytes of one element's spooled items kept in memory before the rest
    /// goes to a temporary file.
    spool_memory: usize,
}

impl StreamPlan {
    /// The plan for `split`, or `None` when its top split is not a list cut
    /// into bare elements (that split needs the whole body anyway).
    pub fn new(split: &Split, spool_memory: usize) -> Option<Self> {
        if split.kind != SplitKind::Array || split.keep_parent {
            return None;
        }
        let body = match &split.target {
            None => None,
            Some(path) => {
                let mut steps = Vec::new();
                Step::insert(&mut steps, path.segments(), Step::Elements).then_some(())?;
                Some(steps)
            }
        };
        let mut steps = Vec::new();
        for path in &split.discard {
            Step::insert(&mut steps, path.segments(), Step::Skip);
        }
        let whole = steps;
        let mut steps = Vec::new();
        for path in &split.discard {
            Step::insert(&mut steps, path.segments(), Step::Skip);
        }
        let spoolable = !split.children.is_empty()
            && split.children.iter().enumerate().all(|(index, child)| {
                child.kind == SplitKind::Array
                    && child
                        .target
                        .as_ref()
                        .is_some_and(|path| Step::insert(&mut steps, path.segments(), Step::Spool(index)))
            });
        let element = if spoolable {
            ElementPlan::Spooled(steps)
        } else {
            ElementPlan::Whole(whole)
        };
        Some(Self {
            split: split.clone(),
            body,
            element,
            spool_memory,
        })
    }

    /// Decodes one body from `deserializer`, handing every record to `emit`
    /// as soon as it is cut. Returns the body's skeleton: the body with the
    /// top list's elements replaced by `null` (its length kept, for
    /// `last_response.body.response|length`) but for the last element's
    /// context. Nothing may follow the document.
    pub fn decode<'de, R: serde_json::de::Read<'de>>(
        &self,
        deserializer: &mut serde_json::Deserializer<R>,
        emit: &mut dyn FnMut(Emitted) -> Result<(), Stopped>,
    ) -> Result<Value, StreamError> {
        let split = &self.split;
        let mut state = State {
            split,
            plan: self,
            emit,
            failure: None,
            streamed: false,
            spools: Vec::new(),
            out: Vec::new(),
            rejected: Vec::new(),
        };
        let result = match &self.body {
            Some(steps) => WalkSeed {
                steps,
                state: &mut state,
            }
            .deserialize(&mut *deserializer),
            None => ListSeed { state: &mut state }.deserialize(&mut *deserializer),
        };
        let skeleton = match (result, state.failure.take()) {
            (_, Some(failure)) => return Err(failure),
            (Err(error), None) => return Err(StreamError::Json(error)),
            (Ok(skeleton), None) => skeleton,
        };
        deserializer.end()?;
        if !state.streamed {
            // Missing, empty or not a list: the split decides, as for a body decoded whole.
            split.apply(&skeleton, &mut state.out, &mut state.rejected)?;
            state.flush(None)?;
        }
        Ok(skeleton)
    }
}

/// The decoder's state while one body is walked.
struct State<'a> {
    split: &'a Split,
    plan: &'a StreamPlan,
    emit: &'a mut dyn FnMut(Emitted) -> Result<(), Stopped>,
    /// What stopped the walk, when it was not the JSON itself.
    failure: Option<StreamError>,
    /// Whether the top list was found and streamed.
    streamed: bool,
    spools: Vec<Spool>,
    out: Vec<Value>,
    rejected: Vec<Rejected>,
}

impl State<'_> {
    fn fail<E: de::Error>(&mut self, failure: StreamError) -> E {
        let message = failure.to_string();
        self.failure = Some(failure);
        E::custom(message)
    }

    /// Hands `out` and `rejected` to the receiver. Each record's size is
    /// `size`, or estimated when `None`.
    fn flush(&mut self, size: Option<usize>) -> Result<(), StreamError> {
        for rejected in self.rejected.drain(..) {
            (self.emit)(Emitted::Rejected(rejected)).map_err(|Stopped| StreamError::Stopped)?;
        }
        for record in self.out.drain(..) {
            let size = size.unwrap_or_else(|| approximate_size(&record));
            let record = Event::from_value(record);
            (self.emit)(Emitted::Record { record, size }).map_err(|Stopped| StreamError::Stopped)?;
        }
        Ok(())
    }

    /// Cuts one decoded element (the spooled items, if any, are in `spools`).
    fn cut_element(&mut self, element: Value) -> Result<(), StreamError> {
        let split = self.split;
        if let ElementPlan::Whole(_) = &self.plan.element {
            split.emit(element, &mut self.out, &mut self.rejected);
            return self.flush(None);
        }
        let mut context = element;
        // Each branch sees the element without any branch's list, as
        // `Split::apply` cuts sibling splits; a list that was not spooled
        // (empty, missing, not a list) goes back for its own branch.
        let leftovers: Vec<Option<Value>> = split
            .children
            .iter()
            .map(|child| match (&child.target, &mut context) {
                (Some(path), Value::Object(map)) => path.remove(map),
                _ => None,
            })
            .collect();
        let context_size = approximate_size(&context);
        let shared = match &context {
            Value::Object(map)
                if split
                    .children
                    .iter()
                    .any(|child| child.puts_items_in_parent() || child.shares_through_list().is_some()) =>
            {
                Some(Arc::new(map.clone()))
            }
            _ => None,
        };
        // Taken out while they are read: cutting needs `self` too.
        let mut spools = std::mem::take(&mut self.spools);
        let result = self.cut_branches(&context, shared, leftovers, context_size, &mut spools);
        self.spools = spools;
        result
    }

    /// `shared` is the context as the records that share it hold it, when
    /// a branch makes such records.
    fn cut_branches(
        &mut self,
        context: &Value,
        shared: Option<Arc<Map<String, Value>>>,
        leftovers: Vec<Option<Value>>,
        context_size: usize,
        spools: &mut [Spool],
    ) -> Result<(), StreamError> {
        for ((index, child), leftover) in self.split.children.iter().enumerate().zip(leftovers) {
            match spools.get_mut(index).filter(|spool| spool.count > 0) {
                Some(spool) => {
                    let mut items = spool.replay().map_err(StreamError::Spool)?;
                    while let Some(raw) = items.next_item().map_err(StreamError::Spool)? {
                        let size = context_size + raw.len();
                        match serde_json::from_slice::<Value>(raw) {
                            Ok(item) => {
                                let unshared = match &shared {
                                    Some(shared) => self.emit_shared(child, shared, item, size)?,
                                    None => Some(item),
                                };
                                if let Some(item) = unshared {
                                    child.emit_element(context, item, &mut self.out, &mut self.rejected);
                                }
                            }
                            // The parser accepted these bytes once; kept apart if it would not again.
                            Err(error) => self.rejected.push(Rejected {
                                record: Value::String(String::from_utf8_lossy(raw).into_owned()),
                                error: error.to_string(),
                            }),
                        }
                        self.flush(Some(size))?;
                    }
                }
                None => {
                    let mut document = context.clone();
                    if let (Some(path), Value::Object(map), Some(list)) =
                        (&child.target, &mut document, leftover)
                    {
                        let _ = path.set(map, list);
                    }
                    child.apply_nested(&document, &mut self.out, &mut self.rejected);
                    self.flush(None)?;
                }
            }
        }
        Ok(())
    }

    /// Emits the records `child` cuts from `item` as records sharing
    /// `context`: when each is the context with `item` put back
    /// ([`Split::puts_items_in_parent`]: a plain MISP attribute), or with
    /// `item` holding one element of its own list (an object with one of its
    /// attributes, [`Split::shares_through_list`]). Gives `item` back when it
    /// is neither (an object whose list is missing, empty or no list), for
    /// the split to cut as before.
    fn emit_shared(
        &mut self,
        child: &Split,
        context: &Arc<Map<String, Value>>,
        mut item: Value,
        size: usize,
    ) -> Result<Option<Value>, StreamError> {
        let Some(path) = &child.target else {
            return Ok(Some(item));
        };
        let shared = |item| {
            Event::shared(SharedRecord {
                context: Arc::clone(context),
                path: path.clone(),
                item,
            })
        };
        if child.puts_items_in_parent() {
            return self.emit_record(shared(item), size).map(|()| None);
        }
        let Some(list) = child.shares_through_list() else {
            return Ok(Some(item));
        };
        let Some(elements) = take_list(&mut item, list) else {
            return Ok(Some(item));
        };
        for element in elements {
            let mut part = item.clone();
            put_back(&mut part, list, element);
            self.emit_record(shared(part), size)?;
        }
        Ok(None)
    }

    fn emit_record(&mut self, record: Event, size: usize) -> Result<(), StreamError> {
        (self.emit)(Emitted::Record { record, size }).map_err(|Stopped| StreamError::Stopped)
    }
}

/// Takes the elements of the list at `segments` in `value` when it is a
/// non-empty array, leaving it empty in place for [`put_back`].
fn take_list(value: &mut Value, segments: &[String]) -> Option<Vec<Value>> {
    match slot(value, segments)? {
        Value::Array(items) if !items.is_empty() => Some(std::mem::take(items)),
        _ => None,
    }
}

/// Puts `element` where [`take_list`] took its list from.
fn put_back(value: &mut Value, segments: &[String], element: Value) {
    if let Some(slot) = slot(value, segments) {
        *slot = element;
    }
}

/// The value at `segments` inside nested objects.
fn slot<'a>(value: &'a mut Value, segments: &[String]) -> Option<&'a mut Value> {
    segments.iter().try_fold(value, |current, segment| {
        current.as_object_mut()?.get_mut(segment)
    })
}

/// An estimate of the bytes `value` holds (its JSON length, roughly).
fn approximate_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => 2 + items.iter().map(approximate_size).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(key, value)| key.len() + 4 + approximate_size(value))
                .sum::<usize>()
        }
    }
}

/// Decodes a value, walking `steps` where keys match.
struct WalkSeed<'s, 'a, 'b> {
    steps: &'s [(String, Step)],
    state: &'b mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for WalkSeed<'_, '_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The plain visits shared by the seeds: scalars become JSON values.
macro_rules! scalar_visits {
    () => {
        fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
            Ok(Value::Bool(value))
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
            Ok(Value::from(value))
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
            Ok(Value::from(value))
        }
        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
            Ok(Value::from(value))
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
            Ok(Value::String(value.to_owned()))
        }
        fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
            Ok(Value::String(value))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    };
}

impl<'de> Visitor<'de> for WalkSeed<'_, '_, '_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    scalar_visits!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let step = self
                .steps
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, step)| step);
            match step {
                None => {
                    let value = map.next_value::<Value>()?;
                    object.insert(key, value);
                }
                Some(Step::Skip) => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(Step::Descend(steps)) => {
                    let value = map.next_value_seed(WalkSeed {
                        steps,
                        state: &mut *self.state,
                    })?;
                    object.insert(key, value);
                }
                Some(Step::Elements) => {
                    let value = map.next_value_seed(ListSeed {
                        state: &mut *self.state,
                    })?;
                    object.insert(key, value);
                }
                Some(Step::Spool(index)) => {
                    let value = map.next_value_seed(SpoolSeed {
                        index: *index,
                        state: &mut *self.state,
                    })?;
                    // A spooled list stays out of the context.
                    if let Some(value) = value {
                        object.insert(key, value);
                    }
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// The top split's list: each element is decoded and cut on its own. Its
/// value in the skeleton keeps the list's length.
struct ListSeed<'a, 'b> {
    state: &'b mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    scalar_visits!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let plan = self.state.plan;
        let steps = match &plan.element {
            ElementPlan::Whole(steps) | ElementPlan::Spooled(steps) => steps.as_slice(),
        };
        let mut count = 0usize;
        let mut last = Value::Null;
        loop {
            for spool in &mut self.state.spools {
                spool.clear();
            }
            let element = seq.next_element_seed(WalkSeed {
                steps,
                state: &mut *self.state,
            })?;
            let Some(element) = element else { break };
            count += 1;
            self.state.streamed = true;
            // The skeleton keeps the last element's context (lists that were
            // spooled are not in it), as `last_response.body` showed it.
            let context = match &plan.element {
                ElementPlan::Spooled(_) => Some(element.clone()),
                ElementPlan::Whole(_) => None,
            };
            if let Err(failure) = self.state.cut_element(element) {
                return Err(self.state.fail(failure));
            }
            last = context.unwrap_or(Value::Null);
        }
        if count == 0 {
            return Ok(Value::Array(Vec::new()));
        }
        let mut skeleton = vec![Value::Null; count - 1];
        skeleton.push(last);
        Ok(Value::Array(skeleton))
    }
}

/// The list of one nested split: its items go to that split's spool. `None`
/// when it was spooled; any other value (an empty list, an object) is
/// returned for the element's context.
struct SpoolSeed<'a, 'b> {
    index: usize,
    state: &'b mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for SpoolSeed<'_, '_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Value>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SpoolSeed<'_, '_> {
    type Value = Option<Value>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(value)))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(value)))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(value)))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(value)))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::String(value.to_owned())))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Some(Value::String(value)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let memory = self.state.plan.spool_memory;
        while self.state.spools.len() <= self.index {
            self.state.spools.push(Spool::new(memory));
        }
        let mut count = 0;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            count += 1;
            if let Err(error) = self.state.spools[self.index].push(raw.get().as_bytes()) {
                return Err(self.state.fail(StreamError::Spool(error)));
            }
        }
        Ok((count == 0).then(|| Value::Array(Vec::new())))
    }
}

/// The raw items of one list inside one element: in memory up to a budget,
/// then in an unlinked temporary file, each item prefixed by its length.
struct Spool {
    memory: Vec<u8>,
    limit: usize,
    file: Option<File>,
    /// Bytes written to `file` for the current element.
    in_file: u64,
    count: usize,
}

impl Spool {
    fn new(limit: usize) -> Self {
        Self {
            memory: Vec::new(),
            limit,
            file: None,
            in_file: 0,
            count: 0,
        }
    }

    fn clear(&mut self) {
        self.memory.clear();
        self.in_file = 0;
        self.count = 0;
    }

    fn push(&mut self, item: &[u8]) -> io::Result<()> {
        let length = (item.len() as u64).to_le_bytes();
        self.count += 1;
        if self.memory.len() + length.len() + item.len() <= self.limit {
            let needed = self.memory.len() + length.len() + item.len();
            if needed > self.memory.capacity() {
                // Grown by doubling, never past the limit.
                let grown = (self.memory.capacity() * 2).clamp(needed, self.limit);
                self.memory.reserve_exact(grown - self.memory.len());
            }
            self.memory.extend_from_slice(&length);
            self.memory.extend_from_slice(item);
            return Ok(());
        }
        // Full: what is in memory goes to the file first, to keep the order.
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile()?),
        };
        if self.in_file == 0 {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
        }
        file.write_all(&self.memory)?;
        file.write_all(&length)?;
        file.write_all(item)?;
        self.in_file += (self.memory.len() + length.len() + item.len()) as u64;
        self.memory.clear();
        Ok(())
    }

    /// The items in the order they were pushed.
    fn replay(&mut self) -> io::Result<Replay<'_>> {
        let from_file = match (&mut self.file, self.in_file) {
            (Some(file), written) if written > 0 => {
                file.seek(SeekFrom::Start(0))?;
                Some(BufReader::with_capacity(256 * 1024, Read::take(&*file, written)))
            }
            _ => None,
        };
        Ok(Replay {
            from_file,
            memory: &self.memory,
            position: 0,
            item: Vec::new(),
        })
    }
}

/// Reads back a [`Spool`].
struct Replay<'s> {
    from_file: Option<BufReader<io::Take<&'s File>>>,
    memory: &'s [u8],
    position: usize,
    item: Vec<u8>,
}

impl Replay<'_> {
    fn next_item(&mut self) -> io::Result<Option<&[u8]>> {
        if let Some(reader) = &mut self.from_file {
            if reader.fill_buf()?.is_empty() {
                self.from_file = None;
            } else {
                let mut length = [0u8; 8];
                reader.read_exact(&mut length)?;
                let length = usize::try_from(u64::from_le_bytes(length))
                    .map_err(|_| io::Error::other("a spooled item is larger than memory"))?;
                self.item.resize(length, 0);
                reader.read_exact(&mut self.item)?;
                return Ok(Some(&self.item));
            }
        }
        let rest = &self.memory[self.position..];
        if rest.len() < 8 {
            return Ok(None);
        }
        let (length, rest) = rest.split_at(8);
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(length);
        let length = u64::from_le_bytes(bytes) as usize;
        let item = rest
            .get(..length)
            .ok_or_else(|| io::Error::other("a spooled item is cut short"))?;
        self.position += 8 + length;
        Ok(Some(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::SplitConfig;
    use serde_json::json;
    use threatbeat_core::Origin;

    fn split(yaml: &str) -> Split {
        let config: SplitConfig = serde_yaml::from_str(yaml).unwrap();
        Split::build(&config, &Origin::named("test")).unwrap()
    }

    /// The MISP fileset's split, with a `discard`.
    fn misp() -> Split {
        split(&format!(
            "{}discard: [body.Event.Galaxy]\n",
            crate::split::tests::MISP_EVENTS
        ))
    }

    /// The records and rejections of `body` both ways: decoded whole and streamed.
    fn both_ways(split: &Split, body: &str, spool_memory: usize) -> (Vec<Value>, Vec<Value>, Value) {
        let document: Value = serde_json::from_str(body).unwrap();
        let (mut whole, mut rejected) = (Vec::new(), Vec::new());
        split.apply(&document, &mut whole, &mut rejected).unwrap();
        // As the input makes them events: a record that is no object becomes `message`.
        let mut whole: Vec<Value> = whole
            .into_iter()
            .map(|record| Value::Object(Event::from_value(record).fields))
            .collect();
        whole.extend(
            rejected
                .into_iter()
                .map(|rejected| json!({"rejected": rejected.record})),
        );
        let plan = StreamPlan::new(split, spool_memory).expect("streamable");
        let mut runs = Vec::new();
        for from_reader in [true, false] {
            let mut streamed = Vec::new();
            let mut emit = |emitted: Emitted| {
                streamed.push(match emitted {
                    // Assembled as the pipeline assembles it.
                    Emitted::Record { record, .. } => Value::Object(record.document()),
                    Emitted::Rejected(rejected) => json!({"rejected": rejected.record}),
                });
                Ok(())
            };
            let skeleton = if from_reader {
                let mut deserializer = serde_json::Deserializer::from_reader(body.as_bytes());
                plan.decode(&mut deserializer, &mut emit).unwrap()
            } else {
                let mut deserializer = serde_json::Deserializer::from_str(body);
                plan.decode(&mut deserializer, &mut emit).unwrap()
            };
            runs.push((streamed, skeleton));
        }
        let (from_slice, skeleton) = runs.pop().unwrap();
        assert_eq!(
            runs.pop().unwrap(),
            (from_slice.clone(), skeleton.clone()),
            "reader and slice differ"
        );
        (whole, from_slice, skeleton)
    }

    fn sorted(mut records: Vec<Value>) -> Vec<Value> {
        records.sort_by_key(|record| record.to_string());
        records
    }

    #[test]
    fn misp_pages_give_the_records_of_the_whole_body_tags_after_attributes_too() {
        let split = misp();
        let body = r#"{"response": [
            {"Event": {"id": "1", "Attribute": [{"uuid": "a1"}, {"uuid": "a2"}], "Galaxy": [{"big": 1}],
                       "Object": [{"name": "o", "Attribute": [{"uuid": "o1"}, {"uuid": "o2"}]}],
                       "Tag": [{"name": "tlp:white"}]}},
            {"Event": {"id": "2", "Attribute": [], "Object": [{"name": "empty", "Attribute": []}]}},
            {"Event": {"id": "3", "Object": {"not": "a list"}, "Attribute": [{"uuid": "a3"}]}},
            {"Event": {"id": "4"}},
            "not an event"
        ], "more": true}"#;
        for memory in [0, 16, 1 << 20] {
            let (whole, streamed, skeleton) = both_ways(&split, body, memory);
            assert_eq!(streamed.len(), whole.len(), "spool memory {memory}");
            assert_eq!(sorted(streamed), sorted(whole), "spool memory {memory}");
            assert_eq!(skeleton["more"], json!(true));
            assert_eq!(skeleton["response"].as_array().unwrap().len(), 5);
        }
        let (_, streamed, _) = both_ways(&split, body, 0);
        assert_eq!(streamed[0]["Event"]["Attribute"]["uuid"], "a1");
        assert_eq!(
            streamed[0]["Event"]["Tag"][0]["name"], "tlp:white",
            "context after the list"
        );
        assert!(streamed[0]["Event"].get("Galaxy").is_none(), "discarded");
        assert!(
            streamed[0]["Event"].get("Object").is_none(),
            "the other branch's list"
        );
    }

    #[test]
    fn attributes_share_their_event_and_are_assembled_where_processed() {
        let plan = StreamPlan::new(&misp(), 1024).unwrap();
        let body = r#"{"response": [{"Event": {"id": "1", "Tag": [{"name": "t"}], "Galaxy": [{"big": 1}],
            "Attribute": [{"uuid": "a1"}, {"uuid": "a2"}],
            "Object": [{"name": "o", "Attribute": [{"uuid": "o1"}]}]}}]}"#;
        let mut records = Vec::new();
        plan.decode(&mut serde_json::Deserializer::from_str(body), &mut |emitted| {
            if let Emitted::Record { record, .. } = emitted {
                records.push(record);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(records.len(), 3);
        // Each record is its event around its attribute (or around its
        // object holding one of its attributes): none is built yet.
        assert!(records.iter().all(|record| !record.is_assembled()));
        assert_eq!(
            Value::Object(records[2].document()),
            json!({"Event": {"id": "1", "Tag": [{"name": "t"}],
                             "Object": {"name": "o", "Attribute": {"uuid": "o1"}}}})
        );
        let mut first = records.remove(0);
        let copy = first.document();
        first.assemble();
        assert!(first.is_assembled());
        assert_eq!(first.fields, copy);
        assert_eq!(
            Value::Object(first.fields),
            json!({"Event": {"id": "1", "Tag": [{"name": "t"}], "Attribute": {"uuid": "a1"}}})
        );
    }

    #[test]
    fn objects_whose_attributes_are_no_list_are_cut_as_before() {
        let body = r#"{"response": [{"Event": {"id": "1", "Object": [
            {"name": "empty", "Attribute": []}, {"name": "none"},
            {"name": "scalar", "Attribute": "x"}, {"name": "o", "Attribute": [{"uuid": "o1"}]}]}}]}"#;
        for memory in [0, 1 << 20] {
            let (whole, streamed, _) = both_ways(&misp(), body, memory);
            assert_eq!(sorted(streamed), sorted(whole), "spool memory {memory}");
        }
    }

    #[test]
    fn missing_empty_and_misshapen_lists_are_cut_as_before() {
        let split = misp();
        for body in [r#"{"response": []}"#, r#"{"other": 1}"#, r#"{"response": null}"#] {
            let (whole, streamed, _) = both_ways(&split, body, 1024);
            assert_eq!(streamed, whole, "{body}");
        }
        let plan = StreamPlan::new(&split, 1024).unwrap();
        let mut deserializer = serde_json::Deserializer::from_str(r#"{"response": {"a": 1}}"#);
        let error = plan.decode(&mut deserializer, &mut |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("expected an array"), "{error}");
    }

    #[test]
    fn plain_lists_and_bodies_that_are_lists_stream() {
        let plain = split("target: body.data\ndiscard: [body.secret]");
        let body = r#"{"data": [{"a": 1, "secret": 2}, {"a": 2}], "next": "x"}"#;
        let (whole, streamed, skeleton) = both_ways(&plain, body, 1024);
        assert_eq!(streamed, whole);
        assert_eq!(skeleton, json!({"data": [null, null], "next": "x"}));
        let root = split("target: body");
        let (whole, streamed, _) = both_ways(&root, r#"[{"a": 1}, {"a": 2}]"#, 1024);
        assert_eq!(streamed, whole);
    }

    #[test]
    fn a_receiver_that_stops_stops_the_walk() {
        let split = misp();
        let plan = StreamPlan::new(&split, 1024).unwrap();
        let body = r#"{"response": [{"Event": {"Attribute": [{"uuid": "a"}]}}, {"Event": {"Attribute": [{"uuid": "b"}]}}]}"#;
        let mut deserializer = serde_json::Deserializer::from_str(body);
        let mut seen = 0;
        let error = plan
            .decode(&mut deserializer, &mut |_| {
                seen += 1;
                Err(Stopped)
            })
            .unwrap_err();
        assert!(matches!(error, StreamError::Stopped));
        assert_eq!(seen, 1);
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let split = misp();
        let plan = StreamPlan::new(&split, 1024).unwrap();
        let body = r#"{"response": [{"Event": {"Attribute": [{"uuid": "a"}, {"uu"#;
        let mut deserializer = serde_json::Deserializer::from_reader(body.as_bytes());
        let error = plan.decode(&mut deserializer, &mut |_| Ok(())).unwrap_err();
        assert!(
            matches!(&error, StreamError::Json(json) if json.is_eof()),
            "{error}"
        );
    }

    #[test]
    fn splits_the_walk_does_not_cover_are_refused() {
        assert!(StreamPlan::new(&split("target: body.data\nkeep_parent: true"), 1024).is_none());
        assert!(StreamPlan::new(&split("target: body.data\ntype: map"), 1024).is_none());
    }
}
