//! `@metadata` of an encoded event: the text the queue stores and the
//! console output prints, plus the few fields every output routes by, read
//! once.
//!
//! A queued record's metadata is a slice of the record read from disk, not a
//! map: an output's batch of 1 600 events held one small B-tree (about
//! 630 bytes, with its keys and values besides) per event, only to look up
//! `_id`, `index`, `pipeline`, `op_type` and `doc_as_upsert`.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event::{doc_as_upsert_of, metadata_str, op_type_of, OpType};

/// `@metadata` as compact JSON text, with the fields outputs route by.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedMetadata {
    text: Bytes,
    /// `_id`, `index` and `pipeline` (those that are strings), one after
    /// another in one allocation: an event stays small in a batch.
    routes: Box<str>,
    /// Where each of the three ends in `routes`.
    ends: [u32; 3],
    /// Which of the three are present, one bit each.
    present: u8,
    op_type: OpType,
    doc_as_upsert: bool,
}

/// The routing strings' places in [`EncodedMetadata::routes`].
const ID: usize = 0;
const INDEX: usize = 1;
const PIPELINE: usize = 2;

impl Default for EncodedMetadata {
    fn default() -> Self {
        Self::from_map(&Map::new())
    }
}

impl EncodedMetadata {
    /// The metadata of an event (`Event::metadata`).
    pub fn from_map(metadata: &Map<String, Value>) -> Self {
        let text = match serde_json::to_vec(metadata) {
            Ok(text) => Bytes::from(text),
            // A map of JSON values always serialises.
            Err(_) => Bytes::from_static(b"{}"),
        };
        let string = |key: &str| metadata_str(metadata, key);
        Self::new(
            text,
            [string("_id"), string("index"), string("pipeline")],
            op_type_of(metadata),
            doc_as_upsert_of(metadata),
        )
    }

    fn new(text: Bytes, strings: [Option<&str>; 3], op_type: OpType, doc_as_upsert: bool) -> Self {
        let mut routes = String::new();
        let mut ends = [0u32; 3];
        let mut present = 0u8;
        for (place, string) in strings.into_iter().enumerate() {
            // Elasticsearch takes an `_id` of at most 512 bytes and index
            // names of 255: a string that would take the routes past 4 GiB
            // is no route, and is left out.
            if let Some(string) = string.filter(|string| routes.len() + string.len() <= u32::MAX as usize) {
                routes.push_str(string);
                present |= 1 << place;
            }
            ends[place] = routes.len() as u32;
        }
        Self {
            text,
            routes: routes.into_boxed_str(),
            ends,
            present,
            op_type,
            doc_as_upsert,
        }
    }

    fn route(&self, place: usize) -> Option<&str> {
        if self.present & (1 << place) == 0 {
            return None;
        }
        let start = if place == 0 {
            0
        } else {
            self.ends[place - 1] as usize
        };
        self.routes.get(start..self.ends[place] as usize)
    }

    /// Reads `text`, a JSON object as [`EncodedMetadata::text`] gives it
    /// (a queued record's), keeping the text as it is.
    pub fn parse(text: Bytes) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(&text);
        let read = Fields::deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(Self::new(
            // The same bytes, shared: the routes are read from them first.
            text.clone(),
            [text_of(&read.id), text_of(&read.index), text_of(&read.pipeline)],
            op_type_named(text_of(&read.op_type)),
            upsert_flag(read.doc_as_upsert),
        ))
    }

    /// The metadata as compact JSON text (`{}` when there is none).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// `_id`, when it is a string.
    pub fn id(&self) -> Option<&str> {
        self.route(ID)
    }

    /// `index`, when it is a string.
    pub fn index(&self) -> Option<&str> {
        self.route(INDEX)
    }

    /// `pipeline`, when it is a string.
    pub fn pipeline(&self) -> Option<&str> {
        self.route(PIPELINE)
    }

    /// The bulk action: `op_type` when it names one, else `create`.
    pub fn op_type(&self) -> OpType {
        self.op_type
    }

    /// Whether `doc_as_upsert` is `true` (or the string `"true"`).
    pub fn doc_as_upsert(&self) -> bool {
        self.doc_as_upsert
    }

    /// The metadata as a map (for an event parsed back).
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_slice(&self.text)
    }
}

/// The action `op_type` names; `create` for anything else.
pub(crate) fn op_type_named(name: Option<&str>) -> OpType {
    match name {
        Some("index") => OpType::Index,
        Some("update") => OpType::Update,
        Some("delete") => OpType::Delete,
        _ => OpType::Create,
    }
}

/// Whether a `doc_as_upsert` value asks for an upsert: `true` or `"true"`.
pub(crate) fn upsert_flag(value: Option<Routing<'_>>) -> bool {
    match value {
        Some(Routing::Flag(flag)) => flag,
        Some(Routing::Text(text)) => text == "true",
        _ => false,
    }
}

/// The string a routing field holds, if it is one.
fn text_of<'a>(route: &'a Option<Routing<'_>>) -> Option<&'a str> {
    route.as_ref().and_then(Routing::as_text)
}

/// A routing field's value: only strings and booleans mean anything.
pub(crate) enum Routing<'a> {
    Text(Cow<'a, str>),
    Flag(bool),
    Other,
}

impl<'a> Routing<'a> {
    /// The routing meaning of a metadata map's value.
    pub(crate) fn of(value: &'a Value) -> Self {
        match value {
            Value::String(text) => Routing::Text(Cow::Borrowed(text)),
            Value::Bool(flag) => Routing::Flag(*flag),
            _ => Routing::Other,
        }
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            Routing::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Routing<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RoutingVisitor)
    }
}

struct RoutingVisitor;

impl<'de> Visitor<'de> for RoutingVisitor {
    type Value = Routing<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Routing::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Routing::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(Routing::Flag(flag))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Routing::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Routing::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Routing::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Routing::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        while items.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Routing::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Routing::Other)
    }
}

/// The routing fields of a metadata object; other members are skipped. As
/// in a map, a repeated key's last value counts.
#[derive(Default)]
struct Fields<'a> {
    id: Option<Routing<'a>>,
    index: Option<Routing<'a>>,
    pipeline: Option<Routing<'a>>,
    op_type: Option<Routing<'a>>,
    doc_as_upsert: Option<Routing<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the @metadata object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        // Keys read as `Routing` are borrowed from the text unless escaped.
        while let Some(key) = entries.next_key::<Routing<'de>>()? {
            let slot = match key.as_text() {
                Some("_id") => &mut fields.id,
                Some("index") => &mut fields.index,
                Some("pipeline") => &mut fields.pipeline,
                Some("op_type") => &mut fields.op_type,
                Some("doc_as_upsert") => &mut fields.doc_as_upsert,
                _ => {
                    entries.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(entries.next_value()?);
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn routing_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "index", "update", "delete", "create", "true", "x", "é\"\\\n"
            ])
            .prop_map(Value::from),
            Just(json!([1, {"a": [2]}])),
            Just(json!({"a": {"b": [true]}})),
        ]
    }

    fn metadata() -> impl Strategy<Value = Map<String, Value>> {
        let key = prop::sample::select(vec![
            "_id",
            "index",
            "pipeline",
            "op_type",
            "doc_as_upsert",
            "current_state",
            "x",
        ]);
        prop::collection::btree_map(key.prop_map(str::to_owned), routing_value(), 0..6)
            .prop_map(|map| map.into_iter().collect())
    }

    proptest! {
        /// Read back from its text, the metadata is what it was built from.
        #[test]
        fn parsed_text_routes_as_the_map_did(map in metadata()) {
            let built = EncodedMetadata::from_map(&map);
            let parsed = EncodedMetadata::parse(Bytes::copy_from_slice(built.text())).unwrap();
            prop_assert_eq!(&parsed, &built);
            prop_assert_eq!(parsed.to_map().unwrap(), map.clone());
            for (routed, key) in [(parsed.id(), "_id"), (parsed.index(), "index"), (parsed.pipeline(), "pipeline")] {
                prop_assert_eq!(routed, map.get(key).and_then(Value::as_str));
            }
        }
    }

    #[test]
    fn routing_fields_follow_the_map_rules() {
        let metadata = |value: Value| EncodedMetadata::from_map(value.as_object().unwrap());
        let routed = metadata(
            json!({"_id": "a", "index": "i", "pipeline": 3, "op_type": "update", "doc_as_upsert": "true"}),
        );
        assert_eq!(
            (
                routed.id(),
                routed.index(),
                routed.pipeline(),
                routed.op_type(),
                routed.doc_as_upsert()
            ),
            (Some("a"), Some("i"), None, OpType::Update, true)
        );
        let unknown = metadata(json!({"op_type": "upsert", "doc_as_upsert": 1}));
        assert_eq!(
            (unknown.op_type(), unknown.doc_as_upsert()),
            (OpType::Create, false)
        );
        assert_eq!(EncodedMetadata::default().text(), b"{}");
        // A repeated key: the last value counts, as in a map.
        let repeated = EncodedMetadata::parse(Bytes::from_static(br#"{"_id":"a","_id":"b"}"#)).unwrap();
        assert_eq!(repeated.id(), Some("b"));
        for broken in [&b"[1]"[..], b"{\"_id\":", b"", b"\"x\""] {
            assert!(EncodedMetadata::parse(Bytes::copy_from_slice(broken)).is_err());
        }
    }
}
