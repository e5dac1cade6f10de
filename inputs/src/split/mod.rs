//! `split`: turning one response body into many records, as Filebeat's
//! httpjson `response.split` does, plus sibling splits.
//!
//! A split names a `target` list (or map, or delimited string) inside the
//! document; each element becomes a record. With `keep_parent` the record is
//! the whole document with the list replaced by that one element; without it
//! the element itself is the record. A nested `split` applies to each record.
//!
//! **Sibling splits** (our addition): `split` may be a list. Each entry runs
//! on the same record, and their outputs are concatenated; in each branch the
//! targets of the other branches are removed. This gives the *union* of MISP
//! attributes and object attributes (one record each) instead of Filebeat's
//! attribute × object-attribute cross product.

mod stream;

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{ConfigError, FieldPath, Origin};

pub use stream::{Emitted, Stopped, StreamError, StreamPlan};

/// How a target is cut into elements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// A JSON array: one record per element.
    #[default]
    Array,
    /// A JSON object: one record per value (`key_field` keeps the key).
    Map,
    /// A string cut at `delimiter`.
    String,
}

/// One or several nested splits.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NestedSplit {
    /// Filebeat's form: one nested split.
    One(Box<SplitConfig>),
    /// Sibling splits whose records are concatenated.
    Siblings(Vec<SplitConfig>),
}

/// The `split` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// `body.response`, `body.Event.Attribute`; `body` splits the document itself.
    pub target: String,
    /// `array` (default), `map` or `string`.
    #[serde(rename = "type", default)]
    pub kind: SplitKind,
    /// Keep the whole document around each element.
    #[serde(default)]
    pub keep_parent: bool,
    /// An empty or missing target yields no record (otherwise the document
    /// is passed on unchanged, as Filebeat does).
    #[serde(default)]
    pub ignore_empty_value: bool,
    /// For `map`: the field of each element that receives its key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// For `string`: the delimiter.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Paths (`body.Event.Galaxy`) removed from every record this split
    /// produces, before nested splits copy it: large context nobody maps is
    /// not copied once per indicator.
    #[serde(default)]
    pub discard: Vec<String>,
    /// Nested split(s) applied to every record.
    #[serde(default)]
    pub split: Option<NestedSplit>,
}

/// A split compiled from [`SplitConfig`].
#[derive(Debug, Clone)]
pub struct Split {
    target: Option<FieldPath>,
    kind: SplitKind,
    keep_parent: bool,
    ignore_empty_value: bool,
    key_field: Option<FieldPath>,
    delimiter: String,
    discard: Vec<FieldPath>,
    children: Vec<Split>,
}

/// A document did not have the shape the split expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("split on `{target}`: expected {expected}, found {found}")]
pub struct SplitError {
    /// The target as configured.
    pub target: String,
    /// What the split needs.
    pub expected: &'static str,
    /// What the document holds.
    pub found: &'static str,
}

/// A record that cannot be made into events (a MISP event whose `Object`
/// is not a list, a keyset item without its sort field): one bad record,
/// kept aside with why, while the records around it go on.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The record.
    pub record: Value,
    /// Why.
    pub error: String,
}

impl Split {
    /// Compiles `config`; errors name the key under `origin`.
    pub fn build(config: &SplitConfig, origin: &Origin) -> Result<Self, ConfigError> {
        let raw = config.target.strip_prefix("body").unwrap_or(&config.target);
        let target = match raw.strip_prefix('.') {
            None if raw.is_empty() => None,
            Some(rest) => Some(
                FieldPath::parse(rest).map_err(|error| origin.child("target").error(error.to_string()))?,
            ),
            None => {
                return Err(origin.child("target").error(format!(
                    "`{}` must start with `body.` (or be `body`)",
                    config.target
                )))
            }
        };
        if config.kind == SplitKind::String && config.delimiter.is_none() {
            return Err(origin
                .child("delimiter")
                .error("a `string` split needs a `delimiter`"));
        }
        let key_field = match &config.key_field {
            Some(raw) => Some(
                FieldPath::parse(raw).map_err(|error| origin.child("key_field").error(error.to_string()))?,
            ),
            None => None,
        };
        let discard = config
            .discard
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                raw.strip_prefix("body.")
                    .ok_or_else(|| format!("`{raw}` must start with `body.`"))
                    .and_then(|path| FieldPath::parse(path).map_err(|error| error.to_string()))
                    .map_err(|reason| origin.child("discard").child(index).error(reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let children = match &config.split {
            None => Vec::new(),
            Some(NestedSplit::One(child)) => vec![Split::build(child, &origin.child("split"))?],
            Some(NestedSplit::Siblings(children)) => children
                .iter()
                .enumerate()
                .map(|(index, child)| Split::build(child, &origin.child("split").child(index)))
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            target,
            kind: config.kind,
            keep_parent: config.keep_parent,
            ignore_empty_value: config.ignore_empty_value,
            key_field,
            delimiter: config.delimiter.clone().unwrap_or_default(),
            discard,
            children,
        })
    }

    fn target_name(&self) -> String {
        match &self.target {
            Some(path) => format!("body.{}", path.as_str()),
            None => "body".to_owned(),
        }
    }

    /// Splits `document` and pushes every record to `out`. Only the parts
    /// that become records are copied. A `document` whose own target has
    /// the wrong shape is an error (the whole answer is not what the feed
    /// sends); a record that a nested split cannot cut goes to `rejected`
    /// and the others are still split.
    pub fn apply(
        &self,
        document: &Value,
        out: &mut Vec<Value>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SplitError> {
        if let (SplitKind::Array, false) = (self.kind, self.keep_parent) {
            if let Some(Value::Array(items)) = self.target_value(document) {
                if !items.is_empty() {
                    // Borrowed: a page is not copied as a whole, only the parts
                    // that end up in records are (discarded context never is).
                    for item in items {
                        self.emit_borrowed(item, out, rejected);
                    }
                    return Ok(());
                }
            }
        }
        let elements = match self.take_elements(document)? {
            Some(elements) => elements,
            None => {
                if !self.ignore_empty_value {
                    self.emit(document.clone(), out, rejected);
                }
                return Ok(());
            }
        };
        // The parent without its list, copied once: copying the whole parent
        // per element would copy the list n times (n² for a 500-attribute event).
        let skeleton = match (&self.target, self.keep_parent) {
            (Some(path), true) => Some(clone_without(document, &[path.segments()])),
            _ => None,
        };
        for element in elements {
            let record = match &skeleton {
                Some(skeleton) => {
                    let mut parent = skeleton.clone();
                    self.put_back(&mut parent, element);
                    parent
                }
                None => element,
            };
            self.emit(record, out, rejected);
        }
        Ok(())
    }

    fn target_value<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        match (&self.target, document) {
            (None, value) => Some(value),
            (Some(path), Value::Object(map)) => path.get(map),
            (Some(_), _) => None,
        }
    }

    /// Like [`Self::emit`] for a record still inside the page: the discarded
    /// paths (and, per sibling branch, the other branches' targets) are left
    /// out while copying instead of removed after.
    fn emit_borrowed(&self, record: &Value, out: &mut Vec<Value>, rejected: &mut Vec<Rejected>) {
        let discard: Vec<&[String]> = self.discard.iter().map(FieldPath::segments).collect();
        match self.children.as_slice() {
            [] => out.push(clone_without(record, &discard)),
            [only] if discard.is_empty() => only.apply_nested(record, out, rejected),
            [only] => only.apply_nested(&clone_without(record, &discard), out, rejected),
            siblings => {
                for (index, branch) in siblings.iter().enumerate() {
                    let mut left_out = discard.clone();
                    left_out.extend(
                        siblings
                            .iter()
                            .enumerate()
                            .filter(|(other_index, _)| *other_index != index)
                            .filter_map(|(_, other)| other.target.as_ref().map(FieldPath::segments)),
                    );
                    branch.apply_nested(&clone_without(record, &left_out), out, rejected);
                }
            }
        }
    }

    /// A nested split of one record: its failure rejects that record only.
    fn apply_nested(&self, record: &Value, out: &mut Vec<Value>, rejected: &mut Vec<Rejected>) {
        if let Err(error) = self.apply(record, out, rejected) {
            rejected.push(Rejected {
                record: record.clone(),
                error: error.to_string(),
            });
        }
    }

    /// The elements of the target, or `None` when it is missing or empty.
    fn take_elements(&self, document: &Value) -> Result<Option<Vec<Value>>, SplitError> {
        let value = self.target_value(document);
        let error = |expected, found: &Value| SplitError {
            target: self.target_name(),
            expected,
            found: threatbeat_core::path::json_kind(found),
        };
        let elements = match (self.kind, value) {
            (_, None | Some(Value::Null)) => return Ok(None),
            (SplitKind::Array, Some(Value::Array(items))) => items.clone(),
            (SplitKind::Array, Some(other)) => return Err(error("an array", other)),
            (SplitKind::Map, Some(Value::Object(map))) => map
                .iter()
                .map(|(key, value)| match (&self.key_field, value.clone()) {
                    (Some(field), Value::Object(mut inner)) => {
                        let _ = field.set(&mut inner, Value::String(key.clone()));
                        Value::Object(inner)
                    }
                    (_, value) => value,
                })
                .collect(),
            (SplitKind::Map, Some(other)) => return Err(error("an object", other)),
            (SplitKind::String, Some(Value::String(text))) => text
                .split(self.delimiter.as_str())
                .filter(|piece| !piece.is_empty())
                .map(|piece| Value::String(piece.to_owned()))
                .collect(),
            (SplitKind::String, Some(other)) => return Err(error("a string", other)),
        };
        Ok(if elements.is_empty() { None } else { Some(elements) })
    }

    fn put_back(&self, parent: &mut Value, element: Value) {
        match (&self.target, parent) {
            (Some(path), Value::Object(map)) => {
                // The target was found in this document, so its parents are objects.
                let _ = path.set(map, element);
            }
            (_, parent) => *parent = element,
        }
    }

    /// Whether each record of this split is exactly its parent with one
    /// element put back at the target: nothing discarded, nothing cut
    /// further. Such records can share the parent instead of copying it.
    pub(crate) fn puts_items_in_parent(&self) -> bool {
        self.keeps_parent_whole() && self.children.is_empty()
    }

    /// Whether each record of this array split is its parent, nothing
    /// discarded, with its element put back at the target.
    fn keeps_parent_whole(&self) -> bool {
        self.kind == SplitKind::Array && self.keep_parent && self.target.is_some() && self.discard.is_empty()
    }

    /// When each record of this split is its parent with its element put
    /// back, and that element holding one element of its own list (a MISP
    /// object with one of its attributes: one nested split that
    /// [`Self::puts_items_in_parent`], under this split's target): the
    /// list's path within the element.
    pub(crate) fn shares_through_list(&self) -> Option<&[String]> {
        let [nested] = self.children.as_slice() else {
            return None;
        };
        let (own, inner) = (self.target.as_ref()?, nested.target.as_ref()?);
        let list = inner.segments().strip_prefix(own.segments())?;
        (self.keeps_parent_whole() && nested.puts_items_in_parent() && !list.is_empty()).then_some(list)
    }

    /// The records of one `element` of this split's list, `context` being
    /// the document around the list (without it): what [`Self::apply`] makes
    /// of each element, for a list that was never held whole.
    fn emit_element(
        &self,
        context: &Value,
        element: Value,
        out: &mut Vec<Value>,
        rejected: &mut Vec<Rejected>,
    ) {
        if self.keep_parent {
            let mut parent = context.clone();
            self.put_back(&mut parent, element);
            self.emit(parent, out, rejected);
        } else {
            self.emit(element, out, rejected);
        }
    }

    fn emit(&self, mut record: Value, out: &mut Vec<Value>, rejected: &mut Vec<Rejected>) {
        if let Value::Object(map) = &mut record {
            for path in &self.discard {
                path.remove(map);
            }
        }
        match self.children.as_slice() {
            [] => out.push(record),
            [only] => only.apply_nested(&record, out, rejected),
            siblings => {
                for (index, branch) in siblings.iter().enumerate() {
                    let others: Vec<&[String]> = siblings
                        .iter()
                        .enumerate()
                        .filter(|(other_index, _)| *other_index != index)
                        .filter_map(|(_, other)| other.target.as_ref().map(FieldPath::segments))
                        .collect();
                    branch.apply_nested(&clone_without(&record, &others), out, rejected);
                }
            }
        }
    }
}

/// A copy of `value` without the values at `paths` (segment lists); the
/// removed parts are never copied.
fn clone_without(value: &Value, paths: &[&[String]]) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    if paths.is_empty() {
        return value.clone();
    }
    let mut copy = Map::new();
    for (key, child) in map {
        let mut deeper: Vec<&[String]> = Vec::new();
        let mut removed = false;
        for path in paths {
            if path.first() == Some(key) {
                if path.len() == 1 {
                    removed = true;
                } else {
                    deeper.push(&path[1..]);
                }
            }
        }
        if !removed {
            copy.insert(key.clone(), clone_without(child, &deeper));
        }
    }
    Value::Object(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(yaml: &str) -> Split {
        let config: SplitConfig = serde_yaml::from_str(yaml).unwrap();
        Split::build(&config, &Origin::named("test")).unwrap()
    }

    fn run(split: &Split, document: Value) -> Vec<Value> {
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        split.apply(&document, &mut out, &mut rejected).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        out
    }

    /// The MISP fileset's split (without its `discard`).
    pub(super) const MISP_EVENTS: &str = r#"
target: body.response
ignore_empty_value: true
split:
  - target: body.Event.Attribute
    keep_parent: true
    ignore_empty_value: true
  - target: body.Event.Object
    keep_parent: true
    ignore_empty_value: true
    split:
      target: body.Event.Object.Attribute
      keep_parent: true
      ignore_empty_value: true
"#;

    #[test]
    fn misp_events_give_the_union_of_attributes_and_object_attributes() {
        let body = json!({"response": [{"Event": {
            "uuid": "e1",
            "Attribute": [{"uuid": "a1"}, {"uuid": "a2"}],
            "Object": [{"uuid": "o1", "Attribute": [{"uuid": "oa1"}, {"uuid": "oa2"}, {"uuid": "oa3"}]}]
        }}]});
        let records = run(&split(MISP_EVENTS), body);
        assert_eq!(
            records.len(),
            5,
            "2 attributes + 3 object attributes, no cross product"
        );
        assert_eq!(
            records[0],
            json!({"Event": {"uuid": "e1", "Attribute": {"uuid": "a1"}}})
        );
        assert_eq!(
            records[2],
            json!({"Event": {"uuid": "e1", "Object": {"uuid": "o1", "Attribute": {"uuid": "oa1"}}}})
        );
    }

    #[test]
    fn discarded_context_is_not_copied_into_records() {
        let split = split(
            "target: body.response\ndiscard: [body.Event.Galaxy]\nsplit:\n  target: body.Event.Attribute\n  keep_parent: true",
        );
        let body = json!({"response": [{"Event": {"Galaxy": [{"big": 1}], "Attribute": [{"uuid": "a"}, {"uuid": "b"}]}}]});
        let records = run(&split, body);
        assert_eq!(
            records,
            vec![
                json!({"Event": {"Attribute": {"uuid": "a"}}}),
                json!({"Event": {"Attribute": {"uuid": "b"}}})
            ]
        );
    }

    #[test]
    fn empty_pages_emit_nothing() {
        let events = split(MISP_EVENTS);
        assert!(run(&events, json!({"response": []})).is_empty());
        let attributes = split("target: body.response.Attribute\nignore_empty_value: true");
        assert!(run(&attributes, json!({"response": {"Attribute": []}})).is_empty());
        assert!(run(&attributes, json!({"response": []})).is_empty());
        assert_eq!(
            run(&attributes, json!({"response": {"Attribute": [{"id": "1"}]}})),
            vec![json!({"id": "1"})]
        );
    }

    #[test]
    fn without_ignore_empty_value_the_document_passes_unchanged() {
        let split = split("target: body.items");
        assert_eq!(run(&split, json!({"items": []})), vec![json!({"items": []})]);
    }

    #[test]
    fn map_and_string_splits() {
        let map = split("target: body.data\ntype: map\nkey_field: name");
        let records = run(&map, json!({"data": {"x": {"v": 1}, "y": {"v": 2}}}));
        assert_eq!(
            records,
            vec![json!({"v": 1, "name": "x"}), json!({"v": 2, "name": "y"})]
        );
        let text = split("target: body.line\ntype: string\ndelimiter: \",\"\nkeep_parent: true");
        assert_eq!(
            run(&text, json!({"line": "a,b"})),
            vec![json!({"line": "a"}), json!({"line": "b"})]
        );
        let root = split("target: body");
        assert_eq!(run(&root, json!([1, 2])).len(), 2);
    }

    #[test]
    fn a_record_a_nested_split_cannot_cut_is_rejected_alone() {
        let split = split(MISP_EVENTS);
        let page = json!({"response": [
            {"Event": {"uuid": "bad", "Attribute": [{"uuid": "a0"}], "Object": "not-a-list"}},
            {"Event": {"uuid": "good", "Attribute": [{"uuid": "a1"}, {"uuid": "a2"}]}},
        ]});
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        split.apply(&page, &mut out, &mut rejected).unwrap();
        let uuids: Vec<&str> = out
            .iter()
            .filter_map(|record| record.pointer("/Event/Attribute/uuid").and_then(Value::as_str))
            .collect();
        assert!(uuids.contains(&"a1") && uuids.contains(&"a2"), "{out:?}");
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].record.pointer("/Event/uuid"), Some(&json!("bad")));
        assert!(
            rejected[0].error.to_string().contains("Object"),
            "{}",
            rejected[0].error
        );
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        let split = split("target: body.items");
        let error = split
            .apply(&json!({"items": "nope"}), &mut Vec::new(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "split on `body.items`: expected an array, found string"
        );
        let bad: SplitConfig = serde_yaml::from_str("target: response").unwrap();
        let error = Split::build(&bad, &Origin::named("m.yml").child("response.split")).unwrap_err();
        assert_eq!(error.key, "response.split.target");
    }
}
