//! Dotted field paths (`threat.indicator.ip`), parsed once at config time.
//!
//! A path addresses a value inside nested JSON objects. Walking stops at the
//! first segment that is missing or is not an object: paths never index into
//! arrays, as in Beats. A key that itself contains a dot cannot be addressed;
//! ECS documents are nested objects, so this does not arise in practice.

use std::fmt;

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
}

/// Why a value could not be written at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    raw: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses `a.b.c`; rejects empty paths and empty segments.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        let segments: Vec<String> = raw.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(PathError::EmptySegment(raw.to_owned()));
        }
        Ok(Self {
            raw: raw.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The segments between the dots.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The first segment.
    pub fn first(&self) -> &str {
        &self.segments[0]
    }

    /// The path without its first segment, or `None` for a one-segment path.
    pub fn strip_first(&self) -> Option<FieldPath> {
        if self.segments.len() < 2 {
            return None;
        }
        let rest = self.segments[1..].to_vec();
        Some(FieldPath {
            raw: rest.join("."),
            segments: rest,
        })
    }

    /// The value at this path, if every segment exists.
    pub fn get<'a>(&self, root: &'a Map<String, Value>) -> Option<&'a Value> {
        let (last, parents) = self.segments.split_last()?;
        let mut current = root;
        for segment in parents {
            current = current.get(segment)?.as_object()?;
        }
        current.get(last)
    }

    /// A mutable reference to the value at this path.
    pub fn get_mut<'a>(&self, root: &'a mut Map<String, Value>) -> Option<&'a mut Value> {
        let (last, parents) = self.segments.split_last()?;
        let mut current = root;
        for segment in parents {
            current = current.get_mut(segment)?.as_object_mut()?;
        }
        current.get_mut(last)
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
        let (last, parents) = self
            .segments
            .split_last()
            .expect("a parsed path has at least one segment");
        let mut current = root;
        for (depth, segment) in parents.iter().enumerate() {
            let slot = current
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            current = match slot {
                Value::Object(map) => map,
                other => {
                    let error = SetError::NotAnObject {
                        path: self.raw.clone(),
                        blocking: self.segments[..=depth].join("."),
                        kind: json_kind(other),
                    };
                    return Err((error, value));
                }
            };
        }
        Ok(current.insert(last.clone(), value))
    }

    /// Removes and returns the value at this path. Objects left empty by the
    /// removal are kept, as in Beats' `drop_fields`.
    pub fn remove(&self, root: &mut Map<String, Value>) -> Option<Value> {
        let (last, parents) = self.segments.split_last()?;
        let mut current = root;
        for segment in parents {
            current = current.get_mut(segment)?.as_object_mut()?;
        }
        current.remove(last)
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
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({})", self.raw)
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
        serializer.serialize_str(&self.raw)
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
