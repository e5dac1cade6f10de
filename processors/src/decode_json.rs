//! `decode_json_fields`: parses JSON held as text in string fields, as Beats'
//! processor of the same name. Feeds that travel as CSV carry structured
//! cells this way (Recorded Future's `EvidenceDetails` column).

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{path_at, paths_at, write, KEEP};

/// `decode_json_fields` settings (Beats names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecodeJsonFieldsConfig {
    /// The string fields to decode.
    fields: Vec<String>,
    /// Where the decoded value goes: unset replaces the field in place, `""`
    /// merges an object into the root, anything else is a field path.
    #[serde(default)]
    target: Option<String>,
    /// Levels decoded: 1 (default) decodes the field; more also decodes
    /// strings holding JSON objects or arrays inside the result.
    #[serde(default = "default_depth")]
    max_depth: u32,
    /// Decoded arrays are kept (otherwise a field holding an array text is left alone).
    #[serde(default)]
    process_array: bool,
    /// With a root or object target, existing keys are replaced (otherwise kept).
    #[serde(default)]
    overwrite_keys: bool,
    /// Text that is not JSON is a failure (`error.message`); by default it is
    /// left as it is, silently, as Beats does.
    #[serde(default)]
    add_error_key: bool,
}

fn default_depth() -> u32 {
    1
}

enum Target {
    InPlace,
    Root,
    Field(FieldPath),
}

/// The compiled processor.
pub(crate) struct DecodeJsonFields {
    fields: Vec<FieldPath>,
    target: Target,
    max_depth: u32,
    process_array: bool,
    overwrite_keys: bool,
    add_error_key: bool,
}

impl crate::common::StepConfig for DecodeJsonFieldsConfig {
    const NAME: &'static str = "decode_json_fields";
    type Step = DecodeJsonFields;

    fn build(self, origin: &Origin, _: &BuildContext) -> Result<DecodeJsonFields, ConfigError> {
        if self.fields.is_empty() {
            return Err(origin.child("fields").error("list at least one field"));
        }
        if self.max_depth == 0 {
            return Err(origin.child("max_depth").error("must be at least 1"));
        }
        let target = match self.target.as_deref() {
            None => Target::InPlace,
            Some("") => Target::Root,
            Some(raw) => Target::Field(path_at(raw, &origin.child("target"))?),
        };
        Ok(DecodeJsonFields {
            fields: paths_at(&self.fields, &origin.child("fields"))?,
            target,
            max_depth: self.max_depth,
            process_array: self.process_array,
            overwrite_keys: self.overwrite_keys,
            add_error_key: self.add_error_key,
        })
    }
}

/// Decodes nested strings that hold JSON objects or arrays, `depth` levels down.
fn decode_nested(value: &mut Value, depth: u32) {
    if depth == 0 {
        return;
    }
    match value {
        Value::Object(map) => map.values_mut().for_each(|child| decode_nested(child, depth)),
        Value::Array(items) => items.iter_mut().for_each(|child| decode_nested(child, depth)),
        Value::String(text) => {
            let trimmed = text.trim_start();
            if trimmed.starts_with('{') || trimmed.starts_with('[') {
                if let Ok(mut decoded) = serde_json::from_str::<Value>(text) {
                    decode_nested(&mut decoded, depth - 1);
                    *value = decoded;
                }
            }
        }
        _ => {}
    }
}

impl crate::common::Step for DecodeJsonFields {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut errors = Vec::new();
        for field in &self.fields {
            // Missing and non-string fields are skipped, as Beats does.
            let Some(Value::String(text)) = event.get(field) else {
                continue;
            };
            let mut decoded = match serde_json::from_str::<Value>(text) {
                Ok(decoded) => decoded,
                Err(error) => {
                    errors.push(format!("field [{field}] is not JSON: {error}"));
                    continue;
                }
            };
            if decoded.is_array() && !self.process_array {
                continue;
            }
            decode_nested(&mut decoded, self.max_depth - 1);
            match &self.target {
                Target::InPlace => write(event, field, decoded)?,
                Target::Field(target) => match (event.get_mut(target), decoded) {
                    (Some(Value::Object(existing)), Value::Object(new)) => {
                        for (key, value) in new {
                            if self.overwrite_keys || !existing.contains_key(&key) {
                                existing.insert(key, value);
                            }
                        }
                    }
                    (Some(_), _) if !self.overwrite_keys => {
                        errors.push(format!("field [{target}] already exists"));
                    }
                    (_, decoded) => write(event, target, decoded)?,
                },
                Target::Root => {
                    let Value::Object(new) = decoded else {
                        errors.push(format!(
                            "field [{field}] is not a JSON object; it cannot go to the root"
                        ));
                        continue;
                    };
                    for (key, value) in new {
                        if self.overwrite_keys || !event.fields.contains_key(&key) {
                            event.fields.insert(key, value);
                        }
                    }
                }
            }
        }
        if self.add_error_key && !errors.is_empty() {
            return Err(ProcessorError::new(errors.join("; ")));
        }
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{build_error, chain, run};
    use serde_json::json;

    #[test]
    fn decodes_in_place_into_a_target_and_into_the_root() {
        let c = chain(json!([{"decode_json_fields": {"fields": ["cell"]}}]));
        assert_eq!(
            run(&c, json!({"cell": "{\"EvidenceDetails\": [{\"Rule\": \"x\"}]}"})),
            json!({"cell": {"EvidenceDetails": [{"Rule": "x"}]}})
        );
        let c = chain(json!([{"decode_json_fields": {"fields": ["cell"], "target": "_tmp.cell"}}]));
        assert_eq!(
            run(&c, json!({"cell": "{\"a\": 1}"})),
            json!({"cell": "{\"a\": 1}", "_tmp": {"cell": {"a": 1}}})
        );
        let c = chain(json!([{"decode_json_fields": {"fields": ["m"], "target": ""}}]));
        assert_eq!(
            run(&c, json!({"a": 0, "m": "{\"a\": 1, \"b\": 2}"})),
            json!({"a": 0, "b": 2, "m": "{\"a\": 1, \"b\": 2}"})
        );
        let c =
            chain(json!([{"decode_json_fields": {"fields": ["m"], "target": "", "overwrite_keys": true}}]));
        assert_eq!(run(&c, json!({"a": 0, "m": "{\"a\": 1}"}))["a"], json!(1));
    }

    #[test]
    fn arrays_depth_and_bad_text() {
        let c = chain(json!([{"decode_json_fields": {"fields": ["l"]}}]));
        assert_eq!(run(&c, json!({"l": "[1, 2]"})), json!({"l": "[1, 2]"}));
        let c =
            chain(json!([{"decode_json_fields": {"fields": ["l"], "process_array": true, "max_depth": 2}}]));
        assert_eq!(
            run(&c, json!({"l": "[{\"inner\": \"{\\\"x\\\": 1}\"}]"})),
            json!({"l": [{"inner": {"x": 1}}]})
        );
        // Not JSON: left alone, silently by default, an error with add_error_key.
        let c = chain(json!([{"decode_json_fields": {"fields": ["t", "missing"]}}]));
        assert_eq!(run(&c, json!({"t": "{oops"})), json!({"t": "{oops"}));
        let c = chain(json!([{"decode_json_fields": {"fields": ["t"], "add_error_key": true}}]));
        let out = run(&c, json!({"t": "{oops"}));
        assert_eq!(out["t"], json!("{oops"));
        assert!(out["error"]["message"].as_str().unwrap().contains("not JSON"));
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            build_error(json!([{"decode_json_fields": {"fields": []}}])).key,
            "processors.0.decode_json_fields.fields"
        );
        assert_eq!(
            build_error(json!([{"decode_json_fields": {"fields": ["a"], "max_depth": 0}}])).key,
            "processors.0.decode_json_fields.max_depth"
        );
    }
}
