//! The event: one JSON document plus the metadata the output needs.
//!
//! As in Beats, metadata is addressed through the `@metadata` namespace:
//! `@metadata._id` becomes the bulk `_id`, `@metadata.index` the target
//! index, `@metadata.op_type` the bulk action, `@metadata.pipeline` the
//! ingest pipeline. Metadata is never part of the indexed document.
//!
//! The action decides what the fields mean:
//!
//! | `@metadata.op_type` | fields | bulk |
//! | --- | --- | --- |
//! | absent, `create` | the document | `create` + source (a repeated `_id` is a no-op) |
//! | `index` | the document | `index` + source (add or replace) |
//! | `update` | the partial document | `update` + `{"doc": fields}`, plus `"doc_as_upsert": true` when `@metadata.doc_as_upsert` is `true` |
//! | `delete` | ignored (no source) | `delete` only |
//!
//! An encoded delete carries `{}` as its source, so the queue's record
//! format and every reader stay unchanged; outputs never send it.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::encoded_metadata::{op_type_named, upsert_flag, EncodedMetadata, Routing};
use crate::path::{FieldPath, SetError};

/// The namespace under which processors address event metadata.
pub const METADATA_NAMESPACE: &str = "@metadata";

/// The largest encoding buffer a thread keeps between documents; a larger
/// document's buffer is freed after it.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

/// The bulk action used to write an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    /// Write only if the `_id` is new (the default; required by data streams).
    #[default]
    Create,
    /// Add or replace.
    Index,
    /// Merge the fields (a partial document) into an existing document.
    Update,
    /// Remove the document; the event has no source.
    Delete,
}

impl OpType {
    /// The bulk action name (`create`, `index`, `update`, `delete`), also
    /// the value of `@metadata.op_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Create => "create",
            OpType::Index => "index",
            OpType::Update => "update",
            OpType::Delete => "delete",
        }
    }

    /// Whether the bulk action is followed by a source line.
    pub fn has_source(self) -> bool {
        self != OpType::Delete
    }
}

/// One event flowing from an input through processors to an output.
///
/// An event made by [`Event::shared`] holds its document only once
/// [`Event::assemble`] ran: the pipeline assembles each event before its
/// processors, and [`Event::encode`] assembles too; until then `fields` is
/// empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The document that will be indexed.
    pub fields: Map<String, Value>,
    /// `@metadata`: `_id`, `index`, `op_type`, `pipeline`, and anything
    /// processors put there for their own use.
    #[serde(rename = "@metadata", default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The parts of a document not yet assembled into `fields`.
    #[serde(skip)]
    unassembled: Option<Box<SharedRecord>>,
}

/// A record cut from an element it shares with the element's other records
/// (each attribute of a MISP event, with the event's fields around it; each
/// attribute of an object, as its object holding that attribute): the
/// element's fields, decoded once and shared, and the record's own item.
///
/// The record's document is built where it is processed rather than where
/// the page is decoded: the decoder then allocates one copy of the context
/// per element instead of one per record, a slice waiting for the pipeline
/// holds each context once, and the document's tree is allocated and freed
/// by the same thread, which keeps the allocator on its fast path.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRecord {
    /// The element's fields around the item, shared by its records.
    pub context: Arc<Map<String, Value>>,
    /// Where the item goes in the context.
    pub path: FieldPath,
    /// The record's own part.
    pub item: Value,
}

impl SharedRecord {
    /// The record's document: the context with the item at `path`
    /// (replacing what the context holds there), the context itself taken
    /// when this is its last holder, else copied.
    fn into_document(self) -> Map<String, Value> {
        let mut document = Arc::unwrap_or_clone(self.context);
        // A path whose parent in the context is not an object leaves the
        // record as the context: the split only shares contexts whose lists
        // it found, so their parents are objects.
        let _ = self.path.set(&mut document, self.item);
        document
    }
}

impl Event {
    /// An event holding `fields` and no metadata.
    pub fn new(fields: Map<String, Value>) -> Self {
        Self {
            fields,
            metadata: Map::new(),
            unassembled: None,
        }
    }

    /// An event whose document is `record`'s, built by [`Event::assemble`].
    pub fn shared(record: SharedRecord) -> Self {
        Self {
            fields: Map::new(),
            metadata: Map::new(),
            unassembled: Some(Box::new(record)),
        }
    }

    /// Builds the document of an event made by [`Event::shared`]; does
    /// nothing to any other event.
    pub fn assemble(&mut self) {
        if let Some(record) = self.unassembled.take() {
            let mut document = record.into_document();
            // Fields set before the assembly win, as if set after it.
            document.append(&mut self.fields);
            self.fields = document;
        }
    }

    /// Whether the document is in `fields` (false for an event made by
    /// [`Event::shared`] until [`Event::assemble`]).
    pub fn is_assembled(&self) -> bool {
        self.unassembled.is_none()
    }

    /// A copy of the document, assembled if it is not yet (for templates
    /// that read a page's first and last records).
    pub fn document(&self) -> Map<String, Value> {
        let mut copy = self.clone();
        copy.assemble();
        copy.fields
    }

    /// An event from any JSON value: objects become the document, other
    /// values are stored under `message` (as Beats does for plain lines).
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Object(fields) => Self::new(fields),
            other => {
                let mut fields = Map::new();
                fields.insert("message".to_owned(), other);
                Self::new(fields)
            }
        }
    }

    /// The document id (`@metadata._id`), if set.
    pub fn id(&self) -> Option<&str> {
        metadata_str(&self.metadata, "_id")
    }

    /// Sets the document id.
    pub fn set_id(&mut self, id: impl Into<String>) {
        self.metadata.insert("_id".to_owned(), Value::String(id.into()));
    }

    /// The target index or data stream (`@metadata.index`), if set.
    pub fn index(&self) -> Option<&str> {
        metadata_str(&self.metadata, "index")
    }

    /// Sets the target index or data stream.
    pub fn set_index(&mut self, index: impl Into<String>) {
        self.metadata
            .insert("index".to_owned(), Value::String(index.into()));
    }

    /// The ingest pipeline (`@metadata.pipeline`), if set.
    pub fn pipeline(&self) -> Option<&str> {
        metadata_str(&self.metadata, "pipeline")
    }

    /// The bulk action: `@metadata.op_type` when it names one, else `create`.
    pub fn op_type(&self) -> OpType {
        op_type_of(&self.metadata)
    }

    /// Sets `@metadata.op_type`.
    pub fn set_op_type(&mut self, op: OpType) {
        self.metadata
            .insert("op_type".to_owned(), Value::String(op.as_str().to_owned()));
    }

    /// For an update: whether a missing document is created from the
    /// partial one (`@metadata.doc_as_upsert: true`).
    pub fn doc_as_upsert(&self) -> bool {
        doc_as_upsert_of(&self.metadata)
    }

    /// Serialises the document once, for the queue and the outputs: after
    /// the processors nothing changes an event, so it is never parsed again
    /// on its way to Elasticsearch. A delete keeps no fields: its source is `{}`.
    pub fn encode(mut self) -> Result<EncodedEvent, serde_json::Error> {
        self.assemble();
        let source = if self.op_type() == OpType::Delete {
            Bytes::from_static(b"{}")
        } else {
            serialise(&self.fields)?
        };
        Ok(EncodedEvent {
            metadata: EncodedMetadata::from_map(&self.metadata),
            source,
        })
    }

    /// Encodes this event's metadata with `document` as its source instead
    /// of its fields: a document derived from another one (a current-state
    /// copy of a history document) is written without building its tree.
    pub fn encode_as(self, document: &impl Serialize) -> Result<EncodedEvent, serde_json::Error> {
        Ok(EncodedEvent {
            source: serialise(document)?,
            metadata: EncodedMetadata::from_map(&self.metadata),
        })
    }

    /// Reads a field; paths starting with `@metadata.` read metadata.
    pub fn get(&self, path: &FieldPath) -> Option<&Value> {
        match self.split_metadata(path) {
            Some(Some(inner)) => inner.get(&self.metadata),
            Some(None) => None,
            None => path.get(&self.fields),
        }
    }

    /// Mutable access to a field; paths starting with `@metadata.` address metadata.
    pub fn get_mut(&mut self, path: &FieldPath) -> Option<&mut Value> {
        match self.split_metadata(path) {
            Some(Some(inner)) => inner.get_mut(&mut self.metadata),
            Some(None) => None,
            None => path.get_mut(&mut self.fields),
        }
    }

    /// Writes a field (creating parents); returns the value it replaced.
    pub fn set(&mut self, path: &FieldPath, value: Value) -> Result<Option<Value>, SetError> {
        match self.split_metadata(path) {
            Some(Some(inner)) => inner.set(&mut self.metadata, value),
            Some(None) => match value {
                Value::Object(map) => Ok(Some(Value::Object(std::mem::replace(&mut self.metadata, map)))),
                other => Err(SetError::NotAnObject {
                    path: path.as_str().to_owned(),
                    blocking: METADATA_NAMESPACE.to_owned(),
                    kind: crate::path::json_kind(&other),
                }),
            },
            None => path.set(&mut self.fields, value),
        }
    }

    /// Removes a field and returns it.
    pub fn remove(&mut self, path: &FieldPath) -> Option<Value> {
        match self.split_metadata(path) {
            Some(Some(inner)) => inner.remove(&mut self.metadata),
            Some(None) => Some(Value::Object(std::mem::take(&mut self.metadata))),
            None => path.remove(&mut self.fields),
        }
    }

    /// Moves a field. `Ok(false)` when the source is missing. A failed write
    /// puts the value back where it was.
    pub fn rename(&mut self, from: &FieldPath, to: &FieldPath) -> Result<bool, SetError> {
        if self.split_metadata(from).is_none() && self.split_metadata(to).is_none() {
            // Both in the document: one walk to take the value, one to put it.
            return from.rename(to, &mut self.fields);
        }
        let Some(value) = self.remove(from) else {
            return Ok(false);
        };
        if let Err(error) = self.check_writable(to) {
            self.set(from, value)?;
            return Err(error);
        }
        self.set(to, value).map(|_| true)
    }

    /// Fails when writing at `path` would need to replace a non-object parent.
    fn check_writable(&self, path: &FieldPath) -> Result<(), SetError> {
        let (root, inner) = match self.split_metadata(path) {
            Some(Some(inner)) => (&self.metadata, inner),
            Some(None) => return Ok(()),
            None => (&self.fields, path.clone()),
        };
        let segments = inner.segments();
        let mut current = root;
        for (depth, segment) in segments[..segments.len() - 1].iter().enumerate() {
            match current.get(segment) {
                None => return Ok(()),
                Some(Value::Object(map)) => current = map,
                Some(other) => {
                    return Err(SetError::NotAnObject {
                        path: path.as_str().to_owned(),
                        blocking: segments[..=depth].join("."),
                        kind: crate::path::json_kind(other),
                    })
                }
            }
        }
        Ok(())
    }

    /// `Some(Some(rest))` for `@metadata.rest`, `Some(None)` for `@metadata`
    /// itself, `None` for a document field.
    fn split_metadata(&self, path: &FieldPath) -> Option<Option<FieldPath>> {
        if path.first() == METADATA_NAMESPACE {
            Some(path.strip_first())
        } else {
            None
        }
    }

    /// The document as one JSON object with `@metadata` included, as the
    /// console output prints it.
    pub fn to_json_with_metadata(&self) -> Value {
        let mut fields = self.fields.clone();
        if !self.metadata.is_empty() {
            fields.insert(
                METADATA_NAMESPACE.to_owned(),
                Value::Object(self.metadata.clone()),
            );
        }
        Value::Object(fields)
    }
}

pub(crate) fn metadata_str<'a>(metadata: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    metadata.get(key).and_then(Value::as_str)
}

pub(crate) fn op_type_of(metadata: &Map<String, Value>) -> OpType {
    op_type_named(metadata_str(metadata, "op_type"))
}

pub(crate) fn doc_as_upsert_of(metadata: &Map<String, Value>) -> bool {
    upsert_flag(metadata.get("doc_as_upsert").map(Routing::of))
}

/// An event after the processors, with its document already serialised:
/// what the queue stores and outputs receive. The metadata is text too,
/// with the fields outputs route by read once; the document is compact JSON
/// text, which the Elasticsearch output copies into the bulk body as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// `@metadata`, as in [`Event::metadata`].
    pub metadata: EncodedMetadata,
    /// The document as one compact JSON object (no newline in it).
    pub source: Bytes,
}

/// `document` as compact JSON, written into a buffer the thread keeps and
/// copied out at its exact size: one allocation per document instead of the
/// four or five a growing vector takes for a typical 1-2 KB document.
fn serialise(document: &impl Serialize) -> Result<Bytes, serde_json::Error> {
    with_serialised(document, Bytes::copy_from_slice)
}

/// Serialises `document` as compact JSON into a buffer the thread keeps and
/// hands the text to `use_text`: nothing is allocated per document (a
/// larger one's buffer is freed after it). `use_text` must not serialise
/// through this function again: the buffer is in use.
pub fn with_serialised<R>(
    document: &impl Serialize,
    use_text: impl FnOnce(&[u8]) -> R,
) -> Result<R, serde_json::Error> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        let used = serde_json::to_writer(&mut *buffer, document).map(|()| use_text(buffer));
        if buffer.capacity() > MAX_KEPT_BUFFER {
            *buffer = Vec::new();
        }
        used
    })
}

/// A stored document that is not a JSON object (a corrupt queue record).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The document does not parse.
    #[error("the queued document is not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// The document is not enclosed in braces.
    #[error("the queued document is not a JSON object")]
    NotAnObject,
}

impl EncodedEvent {
    /// The document id (`@metadata._id`), if set.
    pub fn id(&self) -> Option<&str> {
        self.metadata.id()
    }

    /// The target index or data stream (`@metadata.index`), if set.
    pub fn index(&self) -> Option<&str> {
        self.metadata.index()
    }

    /// The ingest pipeline (`@metadata.pipeline`), if set.
    pub fn pipeline(&self) -> Option<&str> {
        self.metadata.pipeline()
    }

    /// The bulk action: `@metadata.op_type` when it names one, else `create`.
    pub fn op_type(&self) -> OpType {
        self.metadata.op_type()
    }

    /// For an update: whether `@metadata.doc_as_upsert` is `true`.
    pub fn doc_as_upsert(&self) -> bool {
        self.metadata.doc_as_upsert()
    }

    /// Writes the document with `metadata` (a JSON object's text, such as
    /// [`EncodedMetadata::text`]) as its `@metadata` member, as compact JSON
    /// (no newline), without parsing the document: `@metadata` is written
    /// first, then the document's members as they are. With no metadata
    /// (`{}`) the document is written unchanged.
    pub fn write_with_metadata(&self, metadata: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if metadata == b"{}" {
            out.extend_from_slice(&self.source);
            return Ok(());
        }
        let members = self
            .source
            .strip_prefix(b"{")
            .and_then(|rest| rest.strip_suffix(b"}"))
            .ok_or(DecodeError::NotAnObject)?;
        out.push(b'{');
        serde_json::to_writer(&mut *out, METADATA_NAMESPACE)?;
        out.push(b':');
        out.extend_from_slice(metadata);
        if !members.iter().all(u8::is_ascii_whitespace) {
            out.push(b',');
            out.extend_from_slice(members);
        }
        out.push(b'}');
        Ok(())
    }

    /// Parses the document back into an [`Event`], for index names built
    /// from fields.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        Ok(Event {
            fields: serde_json::from_slice(&self.source)?,
            metadata: self.metadata.to_map()?,
            unassembled: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(raw: &str) -> FieldPath {
        FieldPath::parse(raw).unwrap()
    }

    fn shared_records(context: Value, items: &[Value]) -> Vec<Event> {
        let Value::Object(context) = context else {
            panic!("a context is an object")
        };
        let context = Arc::new(context);
        items
            .iter()
            .map(|item| {
                Event::shared(SharedRecord {
                    context: Arc::clone(&context),
                    path: path("Event.Attribute"),
                    item: item.clone(),
                })
            })
            .collect()
    }

    #[test]
    fn shared_records_are_their_context_with_their_item() {
        let context = json!({"Event": {"id": "7", "Attribute": "replaced", "Tag": [{"name": "t"}]}});
        let mut records = shared_records(context, &[json!({"uuid": "a"}), json!({"uuid": "b"})]);
        assert!(records
            .iter()
            .all(|record| !record.is_assembled() && record.fields.is_empty()));
        let expected =
            |uuid: &str| json!({"Event": {"id": "7", "Attribute": {"uuid": uuid}, "Tag": [{"name": "t"}]}});
        // A copy leaves the record as it was; the other record is untouched by either.
        assert_eq!(Value::Object(records[0].document()), expected("a"));
        assert!(!records[0].is_assembled());
        records[0].assemble();
        assert_eq!(Value::Object(records[0].fields.clone()), expected("a"));
        // The last holder takes the context itself.
        let mut last = records.pop().unwrap();
        drop(records);
        last.assemble();
        assert_eq!(Value::Object(last.fields.clone()), expected("b"));
        // Assembling twice changes nothing.
        last.assemble();
        assert_eq!(Value::Object(last.fields), expected("b"));
    }

    #[test]
    fn fields_set_before_the_assembly_stay_and_encoding_assembles() {
        let mut record = shared_records(json!({"Event": {"id": "7"}, "kept": 1}), &[json!({"uuid": "a"})])
            .pop()
            .unwrap();
        record.fields.insert("kept".to_owned(), json!(2));
        record.set_id("abc");
        assert_eq!(
            Value::Object(record.document()),
            json!({"Event": {"id": "7", "Attribute": {"uuid": "a"}}, "kept": 2})
        );
        let encoded = record.clone().encode().unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&encoded.source).unwrap(),
            json!({"Event": {"id": "7", "Attribute": {"uuid": "a"}}, "kept": 2})
        );
        assert_eq!(encoded.metadata.id(), Some("abc"));
    }

    #[test]
    fn metadata_paths_address_metadata_not_the_document() {
        let mut event = Event::from_value(json!({"misp": {"attribute": {"uuid": "u1"}}}));
        event.set(&path("@metadata._id"), json!("abc")).unwrap();
        assert_eq!(event.id(), Some("abc"));
        assert!(!event.fields.contains_key("@metadata"));
        assert_eq!(event.get(&path("@metadata._id")), Some(&json!("abc")));
        assert_eq!(event.remove(&path("@metadata._id")), Some(json!("abc")));
        assert_eq!(event.id(), None);
    }

    #[test]
    fn rename_between_document_and_metadata() {
        let mut event = Event::from_value(json!({"json": {"index": "threatbeat-x"}}));
        assert!(event
            .rename(&path("json.index"), &path("@metadata.index"))
            .unwrap());
        assert_eq!(event.index(), Some("threatbeat-x"));
        assert!(!event
            .rename(&path("json.index"), &path("@metadata.index"))
            .unwrap());
    }

    #[test]
    fn op_type_defaults_to_create() {
        let mut event = Event::default();
        assert_eq!(event.op_type(), OpType::Create);
        event.metadata.insert("op_type".into(), json!("index"));
        assert_eq!(event.op_type(), OpType::Index);
    }

    #[test]
    fn encoding_keeps_metadata_apart_and_decodes_back() {
        let mut event = Event::from_value(json!({"a": {"b": "line\nbreak"}, "n": 1}));
        event.set_id("x");
        event.metadata.insert("op_type".into(), json!("index"));
        let encoded = event.clone().encode().unwrap();
        assert_eq!(&encoded.source[..], br#"{"a":{"b":"line\nbreak"},"n":1}"#);
        assert!(!encoded.source.contains(&b'\n'), "the source is one line");
        assert_eq!(encoded.id(), Some("x"));
        assert_eq!(encoded.op_type(), OpType::Index);
        assert_eq!(encoded.decode().unwrap(), event);
        let garbled = EncodedEvent {
            metadata: EncodedMetadata::default(),
            source: Bytes::from_static(b"[1,"),
        };
        assert!(garbled.decode().is_err());
    }

    #[test]
    fn update_and_delete_op_types() {
        let mut event = Event::from_value(json!({"@timestamp": "2026-01-02T00:00:00Z"}));
        for (raw, op) in [
            ("update", OpType::Update),
            ("delete", OpType::Delete),
            ("create", OpType::Create),
            ("index", OpType::Index),
            ("unknown", OpType::Create),
        ] {
            event.metadata.insert("op_type".into(), json!(raw));
            assert_eq!(event.op_type(), op, "{raw}");
        }
        for op in [OpType::Create, OpType::Index, OpType::Update, OpType::Delete] {
            event.set_op_type(op);
            assert_eq!(event.op_type(), op);
            assert_eq!(event.metadata["op_type"], json!(op.as_str()));
            assert_eq!(op.has_source(), op != OpType::Delete);
            // serde and the metadata value agree on the name.
            assert_eq!(serde_json::to_value(op).unwrap(), json!(op.as_str()));
        }
        assert!(!event.doc_as_upsert());
        event.metadata.insert("doc_as_upsert".into(), json!(true));
        assert!(event.doc_as_upsert());
        event.metadata.insert("doc_as_upsert".into(), json!("true"));
        assert!(event.doc_as_upsert());
        event.metadata.insert("doc_as_upsert".into(), json!(false));
        assert!(!event.doc_as_upsert());
    }

    #[test]
    fn an_update_encodes_its_partial_document_and_a_delete_no_fields() {
        let mut update = Event::from_value(json!({"@timestamp": "2026-01-02T00:00:00Z"}));
        update.set_id("x");
        update.set_op_type(OpType::Update);
        update.metadata.insert("doc_as_upsert".into(), json!(true));
        let encoded = update.clone().encode().unwrap();
        assert_eq!(&encoded.source[..], br#"{"@timestamp":"2026-01-02T00:00:00Z"}"#);
        assert_eq!(
            (encoded.op_type(), encoded.doc_as_upsert()),
            (OpType::Update, true)
        );
        assert_eq!(encoded.decode().unwrap(), update);

        let mut delete = Event::from_value(json!({"left": "over"}));
        delete.set_id("x");
        delete.set_index("logs-ti_threatbeat_latest.misp");
        delete.set_op_type(OpType::Delete);
        let encoded = delete.encode().unwrap();
        assert_eq!(&encoded.source[..], b"{}");
        assert_eq!(encoded.op_type(), OpType::Delete);
        assert_eq!(
            (encoded.id(), encoded.index()),
            (Some("x"), Some("logs-ti_threatbeat_latest.misp"))
        );
        assert!(encoded.decode().unwrap().fields.is_empty());
    }

    #[test]
    fn non_object_values_land_in_message() {
        let event = Event::from_value(json!("plain line"));
        assert_eq!(event.fields.get("message"), Some(&json!("plain line")));
    }

    #[test]
    fn serializes_with_metadata_namespace() {
        let mut event = Event::from_value(json!({"a": 1}));
        event.set_id("x");
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"fields": {"a": 1}, "@metadata": {"_id": "x"}})
        );
        assert_eq!(
            event.to_json_with_metadata(),
            json!({"a": 1, "@metadata": {"_id": "x"}})
        );
    }

    #[test]
    fn an_encoded_document_is_written_with_its_metadata_unparsed() {
        let written = |event: &EncodedEvent, metadata: &[u8]| {
            let mut out = Vec::new();
            event.write_with_metadata(metadata, &mut out).map(|()| out)
        };
        for fields in [json!({"a": 1, "0": [], "!": {"b": null}, "s": "x}"}), json!({})] {
            let mut event = Event::from_value(fields);
            event.set_id("x");
            let expected = event.to_json_with_metadata();
            let encoded = event.encode().unwrap();
            let line = written(&encoded, encoded.metadata.text()).unwrap();
            assert!(line.starts_with(br#"{"@metadata":{"_id":"x"}"#));
            assert_eq!(serde_json::from_slice::<Value>(&line).unwrap(), expected);
            assert_eq!(written(&encoded, b"{}").unwrap(), encoded.source);
        }
        let metadata = EncodedMetadata::from_map(json!({"_id": "x"}).as_object().unwrap());
        for source in [&b"[1]"[..], b"", b"{\"a\":1"] {
            let broken = EncodedEvent {
                metadata: metadata.clone(),
                source: Bytes::copy_from_slice(source),
            };
            assert!(matches!(
                written(&broken, metadata.text()),
                Err(DecodeError::NotAnObject)
            ));
        }
    }
}
