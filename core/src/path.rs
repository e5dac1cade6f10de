//! Dotted field paths (`threat.indicator.ip`), parsed once at config time.
//!
//! A path addresses a value inside nested JSON objects. Walking stops at the
//! first segment that is missing or is not an object: paths never index into
//! arrays, as in Beats. A key that itself contains a dot cannot be addressed;
//! ECS documents are nested objects, so this does not arise in practice.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Why a field path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path was empty.
    #[error("field path is empty")]
    Empty,
    /// A segment between two dots was empty (`a..b`, `.a`, `a.`).
    #[error("field path `{0}` has an empty segment")]
    EmptySegment(String),
    /// More segments than [`MAX_SEGMENTS`]; the path is not repeated, as it
    /// may be megabytes long.
    #[error("field path has {count} segments, more than the {MAX_SEGMENTS} allowed")]
    TooManySegments {
        /// How many segments the path has.
        count: usize,
    },
}

/// The most segments a path may have. JSON parsed from a feed nests at
/// most 128 levels (serde_json's recursion limit), so a longer path could
/// never address a value; the bound keeps the parsed form (a chain of
/// suffixes, quadratic in the segment count) and the recursive walks small.
pub const MAX_SEGMENTS: usize = 128;

/// Whether a write may replace a value already at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Replace it (and hand it back).
    Replace,
    /// Fail with [`SetError::Occupied`].
    Vacant,
}

/// Why a value could not be written at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The field exists and the write was not allowed to replace it.
    #[error("field [{path}] already exists")]
    Occupied {
        /// The full path being written.
        path: String,
    },
    /// An intermediate segment holds a value that is not an object.
    #[error("cannot set `{path}`: `{blocking}` holds a {kind}, not an object")]
    NotAnObject {
        /// The full path being written.
        path: String,
        /// The prefix whose value blocks the walk.
        blocking: String,
        /// The JSON type found there.
        kind: &'static str,
    },
}

/// A parsed dotted path into a JSON object.
///
/// Cloning is cheap (a reference count): processors and [`crate::Event`]
/// pass paths around on every event.
#[derive(Clone)]
pub struct FieldPath {
    parsed: Arc<Parsed>,
}

/// The parts of a path, computed once by [`FieldPath::parse`].
struct Parsed {
    raw: String,
    segments: Vec<String>,
    /// The path without its first segment: every `@metadata.*` access asks
    /// for it, so it is built once here rather than on each event.
    rest: Option<FieldPath>,
}

impl FieldPath {
    /// Parses `a.b.c`; rejects empty paths and empty segments.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        // Counted before anything is copied: a key of a million dots must
        // cost one scan, not a million strings.
        let count = raw.split('.').count();
        if count > MAX_SEGMENTS {
            return Err(PathError::TooManySegments { count });
        }
        let segments: Vec<String> = raw.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(PathError::EmptySegment(raw.to_owned()));
        }
        Ok(Self::from_segments(segments))
    }

    /// The path made of `segments` (non-empty, none of them empty).
    fn from_segments(segments: Vec<String>) -> Self {
        let rest = (segments.len() > 1).then(|| Self::from_segments(segments[1..].to_vec()));
        FieldPath {
            parsed: Arc::new(Parsed {
                raw: segments.join("."),
                segments,
                rest,
            }),
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.parsed.raw
    }

    /// The segments between the dots.
    pub fn segments(&self) -> &[String] {
        &self.parsed.segments
    }

    /// The first segment.
    pub fn first(&self) -> &str {
        &self.parsed.segments[0]
    }

    /// The path without its first segment, or `None` for a one-segment path.
    pub fn strip_first(&self) -> Option<FieldPath> {
        self.parsed.rest.clone()
    }

    /// The value at this path, if every segment exists.
    pub fn get<'a>(&self, root: &'a Map<String, Value>) -> Option<&'a Value> {
        let (last, parents) = self.segments().split_last()?;
        let mut current = root;
        for segment in parents {
            current = current.get(segment)?.as_object()?;
        }
        current.get(last)
    }

    /// A mutable reference to the value at this path.
    pub fn get_mut<'a>(&self, root: &'a mut Map<String, Value>) -> Option<&'a mut Value> {
        let last = self.segments().len() - 1;
        self.object_below(root, 0, last)?.get_mut(&self.segments()[last])
    }

    /// Whether a value (null included) exists at this path.
    pub fn exists(&self, root: &Map<String, Value>) -> bool {
        self.get(root).is_some()
    }

    /// Writes `value` at this path, creating intermediate objects. Returns the
    /// value it replaced. Fails when an intermediate segment holds a
    /// non-object (a string, say): overwriting it would lose data silently.
    pub fn set(&self, root: &mut Map<String, Value>, value: Value) -> Result<Option<Value>, SetError> {
        self.try_set(root, value).map_err(|(error, _)| error)
    }

    /// As [`FieldPath::set`], but hands the value back on failure.
    fn try_set(
        &self,
        root: &mut Map<String, Value>,
        value: Value,
    ) -> Result<Option<Value>, (SetError, Value)> {
        self.set_below(root, 0, value, Write::Replace)
    }

    /// Writes `value` at the segments from `depth` on, inside `map` (the
    /// object the first `depth` segments lead to), creating the missing
    /// parents.
    pub(crate) fn set_below(
        &self,
        map: &mut Map<String, Value>,
        depth: usize,
        value: Value,
        write: Write,
    ) -> Result<Option<Value>, (SetError, Value)> {
        let last = self.segments().len() - 1;
        self.with_object_below(map, depth, last, value, |parent, value| {
            self.set_last(parent, value, write)
        })
    }

    /// Writes `value` at this path's last segment inside `parent`, the
    /// object the other segments lead to. Returns the value it replaced.
    ///
    /// The key is looked up by reference and copied only when it is
    /// missing: most writes replace a value or land beside others.
    // Inlined into the walks (every write ends here): without it the chain
    // costs 1 % more instructions (callgrind, bench/examples/chain_instructions.rs).
    #[inline]
    pub(crate) fn set_last(
        &self,
        parent: &mut Map<String, Value>,
        value: Value,
        write: Write,
    ) -> Result<Option<Value>, (SetError, Value)> {
        let key = &self.segments()[self.segments().len() - 1];
        match parent.get_mut(key) {
            Some(_) if write == Write::Vacant => Err((
                SetError::Occupied {
                    path: self.as_str().to_owned(),
                },
                value,
            )),
            Some(slot) => Ok(Some(std::mem::replace(slot, value))),
            None => {
                parent.insert(key.clone(), value);
                Ok(None)
            }
        }
    }

    /// Runs `write` with `state` on the object the segments from `depth` up
    /// to `end` (exclusive) lead to inside `map`, creating the missing ones.
    /// Fails as [`FieldPath::set`] does when a non-object is in the way,
    /// handing `state` back.
    ///
    /// Recursive so that a missing parent can be inserted after a failed
    /// lookup, once what goes inside it is written.
    pub(crate) fn with_object_below<S, R>(
        &self,
        map: &mut Map<String, Value>,
        depth: usize,
        end: usize,
        state: S,
        write: impl FnOnce(&mut Map<String, Value>, S) -> Result<R, (SetError, S)>,
    ) -> Result<R, (SetError, S)> {
        if depth == end {
            return write(map, state);
        }
        let segment = &self.segments()[depth];
        match map.get_mut(segment) {
            Some(Value::Object(child)) => return self.with_object_below(child, depth + 1, end, state, write),
            Some(other) => return Err((self.not_an_object(depth, other), state)),
            None => {}
        }
        // The rest of the path is missing too: an empty object cannot block it.
        let mut child = Map::new();
        let result = self.with_object_below(&mut child, depth + 1, end, state, write)?;
        map.insert(segment.clone(), Value::Object(child));
        Ok(result)
    }

    /// The object the segments from `depth` up to `end` (exclusive) lead to
    /// inside `map`, if they all exist and hold objects.
    pub(crate) fn object_below<'a>(
        &self,
        map: &'a mut Map<String, Value>,
        depth: usize,
        end: usize,
    ) -> Option<&'a mut Map<String, Value>> {
        let mut current = map;
        for segment in &self.segments()[depth..end] {
            current = current.get_mut(segment)?.as_object_mut()?;
        }
        Some(current)
    }

    /// Removes the value at the segments from `depth` on, inside `map`.
    pub(crate) fn remove_below(&self, map: &mut Map<String, Value>, depth: usize) -> Option<Value> {
        let last = self.segments().len() - 1;
        self.object_below(map, depth, last)?
            .remove(&self.segments()[last])
    }

    /// The error of a write blocked by `found` at the segment at `depth`.
    fn not_an_object(&self, depth: usize, found: &Value) -> SetError {
        SetError::NotAnObject {
            path: self.as_str().to_owned(),
            blocking: self.segments()[..=depth].join("."),
            kind: json_kind(found),
        }
    }

    /// Removes and returns the value at this path. Objects left empty by the
    /// removal are kept, as in Beats' `drop_fields`.
    pub fn remove(&self, root: &mut Map<String, Value>) -> Option<Value> {
        self.remove_below(root, 0)
    }

    /// Moves the value at this path to `to`. Returns `Ok(false)` when there
    /// was nothing to move. On failure to write, the value is put back.
    pub fn rename(&self, to: &FieldPath, root: &mut Map<String, Value>) -> Result<bool, SetError> {
        let Some(value) = self.remove(root) else {
            return Ok(false);
        };
        match to.try_set(root, value) {
            Ok(_) => Ok(true),
            Err((error, value)) => {
                // The source path held this value a moment ago, so its parents exist.
                let _ = self.try_set(root, value);
                Err(error)
            }
        }
    }
}

// Equality and hashing follow the written path: the segments are derived from it.
impl PartialEq for FieldPath {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FieldPath {}

impl Hash for FieldPath {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// The JSON type name of a value, for messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({})", self.as_str())
    }
}

impl std::str::FromStr for FieldPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        FieldPath::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test fixture must be an object"),
        }
    }

    fn path(raw: &str) -> FieldPath {
        FieldPath::parse(raw).unwrap()
    }

    #[test]
    fn parse_rejects_empty_path_and_segments() {
        assert_eq!(FieldPath::parse(""), Err(PathError::Empty));
        for bad in ["a..b", ".a", "a."] {
            assert!(
                matches!(FieldPath::parse(bad), Err(PathError::EmptySegment(_))),
                "{bad}"
            );
        }
        assert_eq!(
            path("threat.indicator.ip").segments(),
            ["threat", "indicator", "ip"]
        );
    }

    #[test]
    fn get_walks_nested_objects_only() {
        let doc = obj(json!({"misp": {"attribute": {"Tag": [{"name": "tlp:white"}], "value": "1.2.3.4"}}}));
        assert_eq!(path("misp.attribute.value").get(&doc), Some(&json!("1.2.3.4")));
        assert!(path("misp.attribute.Tag").get(&doc).unwrap().is_array());
        assert_eq!(
            path("misp.attribute.Tag.name").get(&doc),
            None,
            "arrays are not indexed"
        );
        assert_eq!(path("misp.nothing").get(&doc), None);
        assert_eq!(path("misp.attribute.value.deeper").get(&doc), None);
    }

    #[test]
    fn set_creates_intermediate_objects_and_returns_previous() {
        let mut doc = Map::new();
        assert_eq!(
            path("threat.indicator.ip")
                .set(&mut doc, json!("10.0.0.1"))
                .unwrap(),
            None
        );
        assert_eq!(
            path("threat.indicator.ip")
                .set(&mut doc, json!("10.0.0.2"))
                .unwrap(),
            Some(json!("10.0.0.1"))
        );
        path("threat.indicator.port").set(&mut doc, json!(443)).unwrap();
        assert_eq!(
            Value::Object(doc),
            json!({"threat": {"indicator": {"ip": "10.0.0.2", "port": 443}}})
        );
    }

    #[test]
    fn set_refuses_to_overwrite_a_scalar_parent() {
        let mut doc = obj(json!({"threat": "not an object"}));
        let error = path("threat.indicator.ip").set(&mut doc, json!("x")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot set `threat.indicator.ip`: `threat` holds a string, not an object"
        );
        assert_eq!(doc.get("threat"), Some(&json!("not an object")));
    }

    #[test]
    fn set_reports_a_deep_blocking_scalar_and_leaves_the_document_alone() {
        let mut doc = obj(json!({"a": {"b": 1}}));
        let error = path("a.b.c.d").set(&mut doc, json!("x")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot set `a.b.c.d`: `a.b` holds a number, not an object"
        );
        assert_eq!(Value::Object(doc), json!({"a": {"b": 1}}));
    }

    #[test]
    fn paths_compare_and_hash_by_their_text() {
        use std::collections::HashSet;
        let stripped = path("@metadata.a.b").strip_first().unwrap();
        assert_eq!(stripped, path("a.b"));
        assert_eq!(stripped.segments(), ["a", "b"]);
        assert_eq!(stripped.strip_first().unwrap().as_str(), "b");
        let set: HashSet<FieldPath> = [stripped.clone(), path("a.b"), path("a")].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert_ne!(path("a.b"), path("a"));
    }

    #[test]
    fn remove_returns_the_value_and_keeps_parents() {
        let mut doc = obj(json!({"a": {"b": 1, "c": 2}}));
        assert_eq!(path("a.b").remove(&mut doc), Some(json!(1)));
        assert_eq!(path("a.b").remove(&mut doc), None);
        assert_eq!(path("x.y").remove(&mut doc), None);
        assert_eq!(Value::Object(doc), json!({"a": {"c": 2}}));
    }

    #[test]
    fn rename_moves_values_and_reports_missing_sources() {
        let mut doc = obj(json!({"json": {"Event": {"info": "x"}}}));
        assert!(path("json.Event").rename(&path("misp"), &mut doc).unwrap());
        assert_eq!(
            Value::Object(doc.clone()),
            json!({"json": {}, "misp": {"info": "x"}})
        );
        assert!(!path("json.Event").rename(&path("misp2"), &mut doc).unwrap());
    }

    #[test]
    fn failed_rename_puts_the_value_back() {
        let mut doc = obj(json!({"a": 1, "b": "scalar"}));
        assert!(path("a").rename(&path("b.c"), &mut doc).is_err());
        assert_eq!(Value::Object(doc), json!({"a": 1, "b": "scalar"}));
    }

    #[test]
    fn strip_first_drops_the_namespace() {
        assert_eq!(path("@metadata._id").strip_first().unwrap().as_str(), "_id");
        assert!(path("tags").strip_first().is_none());
    }

    #[test]
    fn deserializes_from_a_string_and_validates() {
        let parsed: FieldPath = serde_json::from_value(json!("a.b")).unwrap();
        assert_eq!(parsed.as_str(), "a.b");
        assert!(serde_json::from_value::<FieldPath>(json!("a..b")).is_err());
    }
}
