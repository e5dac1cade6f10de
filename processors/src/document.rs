//! Processors that work on the document as a whole: `remove_nulls`,
//! `encode_json` (the record as JSON text, for `event.original`) and `nest`
//! (the record moved under one key, such as `misp.attribute`).

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{path_at, paths_at, write, Step, StepConfig, KEEP};

// ---------------------------------------------------------------- nulls

/// `remove_nulls`: deletes every null value, recursively (inside lists too),
/// under `fields` (default: the whole document).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveNullsConfig {
    #[serde(default)]
    fields: Vec<String>,
}

pub(crate) struct RemoveNulls {
    fields: Vec<FieldPath>,
}

impl StepConfig for RemoveNullsConfig {
    const NAME: &'static str = "remove_nulls";
    type Step = RemoveNulls;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<RemoveNulls, ConfigError> {
        Ok(RemoveNulls {
            fields: paths_at(&self.fields, &origin.child("fields"))?,
        })
    }
}

impl Step for RemoveNulls {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        if self.fields.is_empty() {
            strip_map(&mut event.fields);
        } else {
            for field in &self.fields {
                if event.get(field).is_some_and(Value::is_null) {
                    event.remove(field);
                } else if let Some(value) = event.get_mut(field) {
                    strip(value);
                }
            }
        }
        KEEP
    }
}

fn strip_map(map: &mut Map<String, Value>) {
    // Most objects hold no null: a read pass is much cheaper than `retain`,
    // which takes every entry out of the tree and puts it back.
    let mut has_null = false;
    for value in map.values_mut() {
        if value.is_null() {
            has_null = true;
        } else {
            strip(value);
        }
    }
    if has_null {
        map.retain(|_, value| !value.is_null());
    }
}

fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => strip_map(map),
        // Elasticsearch's cleanup walks lists but keeps their null items;
        // only map entries whose value is null are removed.
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

// ---------------------------------------------------------------- encode_json

/// `encode_json`: writes the listed fields, as one JSON object text (keys
/// sorted, like Go's encoder), into `target_field`. Keeps the source record
/// as `event.original` for `preserve_original_event`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncodeJsonConfig {
    /// The fields to encode; none means the whole document.
    #[serde(default)]
    fields: Vec<String>,
    target_field: String,
}

pub(crate) struct EncodeJson {
    fields: Vec<FieldPath>,
    target: FieldPath,
}

impl StepConfig for EncodeJsonConfig {
    const NAME: &'static str = "encode_json";
    type Step = EncodeJson;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<EncodeJson, ConfigError> {
        let fields = paths_at(&self.fields, &origin.child("fields"))?;
        Ok(EncodeJson {
            fields,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
        })
    }
}

impl Step for EncodeJson {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        if self.fields.is_empty() {
            let text = serde_json::to_string(&event.fields)
                .map_err(|error| ProcessorError::new(error.to_string()))?;
            write(event, &self.target, Value::String(text))?;
            return KEEP;
        }
        let mut document = Map::new();
        for field in &self.fields {
            if let Some(value) = event.get(field) {
                field
                    .set(&mut document, value.clone())
                    .map_err(|error| ProcessorError::new(error.to_string()))?;
            }
        }
        if document.is_empty() {
            return KEEP;
        }
        let text =
            serde_json::to_string(&document).map_err(|error| ProcessorError::new(error.to_string()))?;
        write(event, &self.target, Value::String(text))?;
        KEEP
    }
}

// ---------------------------------------------------------------- nest

/// `nest`: moves every top-level field (except `exclude`) under
/// `target_field`, so a record that arrives at the root (an attribute of
/// `/attributes/restSearch`) can be mapped like one decoded into a namespace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NestConfig {
    target_field: String,
    #[serde(default)]
    exclude: Vec<String>,
}

pub(crate) struct Nest {
    target: FieldPath,
    exclude: Vec<String>,
}

impl StepConfig for NestConfig {
    const NAME: &'static str = "nest";
    type Step = Nest;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Nest, ConfigError> {
        let target = path_at(&self.target_field, &origin.child("target_field"))?;
        if target.first() == threatbeat_core::METADATA_NAMESPACE {
            return Err(origin
                .child("target_field")
                .error("cannot nest the document under @metadata"));
        }
        let mut exclude = self.exclude;
        // The target's own root stays where it is.
        exclude.push(target.first().to_owned());
        Ok(Nest { target, exclude })
    }
}

impl Step for Nest {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut moved = Map::new();
        let keys: Vec<String> = event
            .fields
            .keys()
            .filter(|key| !self.exclude.contains(key))
            .cloned()
            .collect();
        for key in keys {
            if let Some(value) = event.fields.remove(&key) {
                moved.insert(key, value);
            }
        }
        let merged = match event.remove(&self.target) {
            Some(Value::Object(mut existing)) => {
                existing.extend(moved);
                existing
            }
            _ => moved,
        };
        write(event, &self.target, Value::Object(merged))?;
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn encode_json_and_enabled_switch() {
        let c = chain(json!([
            {"encode_json": {"fields": ["Event"], "target_field": "event.original"}},
            {"set": {"field": "off", "value": 1, "enabled": false}},
        ]));
        let out = run(&c, json!({"Event": {"b": 1, "a": "x"}}));
        assert_eq!(out["event"]["original"], json!(r#"{"Event":{"a":"x","b":1}}"#));
        assert!(out.get("off").is_none());
        let c = chain(json!([{"append": {"field": "tags", "value": []}}]));
        assert_eq!(run(&c, json!({})), json!({}));
    }

    #[test]
    fn nest_moves_the_record_under_a_key() {
        let c = chain(json!([{"nest": {"target_field": "misp.attribute", "exclude": ["tags"]}}]));
        assert_eq!(
            run(
                &c,
                json!({"uuid": "u", "Event": {"id": "1"}, "tags": ["t"], "misp": {"x": 1}})
            ),
            json!({"tags": ["t"], "misp": {"x": 1, "attribute": {"uuid": "u", "Event": {"id": "1"}}}})
        );
    }
}
