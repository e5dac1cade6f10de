//! `collect_by_key`: a list of `{name, value}` objects into fields named by
//! each object's key, what Elasticsearch writes as a `foreach` that
//! lower-cases / rewrites `_ingest._value.name` and then appends
//! `_ingest._value.value` to `target.{{ _ingest._value.name }}` (ThreatQ's
//! `attributes[]` into `threatq.attributes.<name>`).

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, write, FromTo, Step, StepConfig, KEEP};

/// `collect_by_key` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CollectByKeyConfig {
    field: String,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_value")]
    value: String,
    target_field: String,
    #[serde(default)]
    key_lowercase: bool,
    #[serde(default)]
    key_replace: Vec<FromTo>,
    #[serde(default = "crate::common::yes")]
    allow_duplicates: bool,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_key() -> String {
    "name".to_owned()
}

fn default_value() -> String {
    "value".to_owned()
}

pub(crate) struct CollectByKey {
    field: FieldPath,
    key: FieldPath,
    value: FieldPath,
    target: FieldPath,
    key_lowercase: bool,
    key_replace: Vec<(String, String)>,
    allow_duplicates: bool,
    ignore_missing: bool,
}

impl StepConfig for CollectByKeyConfig {
    const NAME: &'static str = "collect_by_key";
    type Step = CollectByKey;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<CollectByKey, ConfigError> {
        let mut key_replace = Vec::with_capacity(self.key_replace.len());
        for (index, pair) in self.key_replace.into_iter().enumerate() {
            if pair.from.is_empty() {
                return Err(origin
                    .child("key_replace")
                    .child(index)
                    .child("from")
                    .error("the text to replace must not be empty"));
            }
            key_replace.push((pair.from, pair.to));
        }
        Ok(CollectByKey {
            field: path_at(&self.field, &origin.child("field"))?,
            key: path_at(&self.key, &origin.child("key"))?,
            value: path_at(&self.value, &origin.child("value"))?,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            key_lowercase: self.key_lowercase,
            key_replace,
            allow_duplicates: self.allow_duplicates,
            ignore_missing: self.ignore_missing,
        })
    }
}

/// `a string`, `an object`: the JSON type of `value` for messages.
fn kind_with_article(value: &Value) -> String {
    let kind = threatbeat_core::path::json_kind(value);
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

impl CollectByKey {
    /// The sub-field name an element's key gives, or `None` when it has no
    /// usable key (missing, null, an object, or empty once rewritten).
    fn field_name(&self, key: &Value) -> Option<String> {
        let mut name = match key {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return None,
        };
        if self.key_lowercase {
            name = name.to_lowercase();
        }
        for (from, to) in &self.key_replace {
            if name.contains(from.as_str()) {
                name = name.replace(from.as_str(), to);
            }
        }
        (!name.is_empty()).then_some(name)
    }
}

impl Step for CollectByKey {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        // Gathered first, in element order, so that a failure leaves the
        // document unchanged.
        let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
        match event.get(&self.field) {
            Some(Value::Array(items)) => {
                for map in items.iter().filter_map(Value::as_object) {
                    let Some(name) = self.key.get(map).and_then(|key| self.field_name(key)) else {
                        continue;
                    };
                    let value = match self.value.get(map) {
                        None | Some(Value::Null) => continue,
                        Some(value) => value.clone(),
                    };
                    match groups.iter_mut().find(|(existing, _)| *existing == name) {
                        Some((_, values)) => values.push(value),
                        None => groups.push((name, vec![value])),
                    }
                }
            }
            None | Some(Value::Null) if self.ignore_missing => return KEEP,
            None | Some(Value::Null) => return Err(missing(&self.field)),
            Some(other) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] holds {}, not a list",
                    self.field,
                    kind_with_article(other)
                )))
            }
        }
        if groups.is_empty() {
            return KEEP;
        }
        match event.get(&self.target) {
            None | Some(Value::Null) => write(event, &self.target, Value::Object(Map::new()))?,
            Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] holds {}, not an object",
                    self.target,
                    kind_with_article(other)
                )))
            }
        }
        let Some(Value::Object(target)) = event.get_mut(&self.target) else {
            return Err(ProcessorError::new(format!(
                "field [{}] could not be written",
                self.target
            )));
        };
        for (name, values) in groups {
            // The name is one key, never a dotted path: ThreatQ attribute
            // names are free text.
            let mut list = match target.remove(&name) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => list,
                Some(single) => vec![single],
            };
            for value in values {
                if self.allow_duplicates || !list.contains(&value) {
                    list.push(value);
                }
            }
            target.insert(name, Value::Array(list));
        }
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{build_error, chain, run};
    use serde_json::json;

    fn threatq_chain() -> crate::Chain {
        chain(json!([{"collect_by_key": {
            "field": "json.attributes",
            "key": "name",
            "value": "value",
            "target_field": "threatq.attributes",
            "key_lowercase": true,
            "key_replace": [{"from": " ", "to": "_"}],
        }}]))
    }

    #[test]
    fn groups_values_under_rewritten_names_in_element_order() {
        let out = run(
            &threatq_chain(),
            json!({"json": {"attributes": [
                {"name": "AlienVault Threat Level", "value": "3"},
                {"name": "Country", "value": "MP"},
                {"name": "country", "value": "US"},
                {"name": "Ports", "value": 80},
                {"name": "dotted.name", "value": "kept as one key"},
            ]}}),
        );
        assert_eq!(
            out["threatq"]["attributes"],
            json!({
                "alienvault_threat_level": ["3"],
                "country": ["MP", "US"],
                "ports": [80],
                "dotted.name": ["kept as one key"],
            })
        );
        // The source list is left as it was.
        assert_eq!(
            out["json"]["attributes"][0]["name"],
            json!("AlienVault Threat Level")
        );
    }

    #[test]
    fn skips_elements_without_key_or_value_and_grows_existing_lists() {
        let c = chain(json!([{"collect_by_key": {
            "field": "attrs",
            "target_field": "out",
            "allow_duplicates": false,
        }}]));
        let out = run(
            &c,
            json!({"out": {"a": "x", "keep": 1}, "attrs": [
                {"name": "a", "value": "x"},
                {"name": "a", "value": "y"},
                {"name": null, "value": "z"},
                {"name": "", "value": "z"},
                {"name": "b"},
                {"name": "c", "value": null},
                "odd",
            ]}),
        );
        assert_eq!(out["out"], json!({"a": ["x", "y"], "keep": 1}));
    }

    #[test]
    fn empty_missing_and_wrong_fields() {
        let c = threatq_chain();
        assert_eq!(
            run(&c, json!({"json": {"attributes": []}})),
            json!({"json": {"attributes": []}})
        );
        let out = run(&c, json!({}));
        assert_eq!(
            out["error"]["message"],
            json!("collect_by_key: field [json.attributes] not present")
        );
        let out = run(&c, json!({"json": {"attributes": {"name": "a"}}}));
        assert_eq!(
            out["error"]["message"],
            json!("collect_by_key: field [json.attributes] holds an object, not a list")
        );
        let out = run(
            &c,
            json!({"threatq": {"attributes": "x"}, "json": {"attributes": [{"name": "a", "value": 1}]}}),
        );
        assert_eq!(
            out["error"]["message"],
            json!("collect_by_key: field [threatq.attributes] holds a string, not an object")
        );
        let lenient =
            chain(json!([{"collect_by_key": {"field": "a", "target_field": "b", "ignore_missing": true}}]));
        assert_eq!(run(&lenient, json!({"a": null})), json!({"a": null}));
    }

    #[test]
    fn config_errors_name_the_key() {
        let error = build_error(json!([{"collect_by_key": {"field": "a", "target_field": "b",
            "key_replace": [{"from": "", "to": "_"}]}}]));
        assert_eq!(error.key, "processors.0.collect_by_key.key_replace.0.from");
        let error = build_error(json!([{"collect_by_key": {"field": "a", "target_field": ""}}]));
        assert_eq!(error.key, "processors.0.collect_by_key.target_field");
        let error = build_error(json!([{"collect_by_key": {"field": "a"}}]));
        assert!(error.reason.contains("target_field"), "{}", error.reason);
    }
}
