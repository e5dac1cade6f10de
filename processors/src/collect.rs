//! `collect`: gathers one key of every object in a list into list fields,
//! what Elasticsearch writes as a `foreach` over the list with an `append`
//! of `{{_ingest._value.key}}` inside (MalwareBazaar's `code_sign[]` into
//! `threat.indicator.file.x509.*`).

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, FromTo, Step, StepConfig, KEEP};
use crate::values::append_values;

/// `collect`: for each element of the list at `field`, the value at each
/// `from` (a path inside the element) is appended to the list at `to`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CollectConfig {
    field: String,
    fields: Vec<FromTo>,
    /// Appended when an element lacks `from` (or holds null there); without
    /// it nothing is appended for that element. Elastic's mustache template
    /// renders a missing key as `""`, so the lists stay aligned element by element.
    #[serde(default)]
    missing_value: Option<Value>,
    #[serde(default = "crate::common::yes")]
    allow_duplicates: bool,
    #[serde(default)]
    ignore_missing: bool,
}

pub(crate) struct Collect {
    field: FieldPath,
    fields: Vec<(FieldPath, FieldPath)>,
    missing_value: Option<Value>,
    allow_duplicates: bool,
    ignore_missing: bool,
}

impl StepConfig for CollectConfig {
    const NAME: &'static str = "collect";
    type Step = Collect;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Collect, ConfigError> {
        if self.fields.is_empty() {
            return Err(origin
                .child("fields")
                .error("give at least one `{from, to}` pair"));
        }
        let fields = self
            .fields
            .iter()
            .enumerate()
            .map(|(index, pair)| {
                let item = origin.child("fields").child(index);
                Ok((
                    path_at(&pair.from, &item.child("from"))?,
                    path_at(&pair.to, &item.child("to"))?,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Collect {
            field: path_at(&self.field, &origin.child("field"))?,
            fields,
            missing_value: self.missing_value.filter(|value| !value.is_null()),
            allow_duplicates: self.allow_duplicates,
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for Collect {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut gathered: Vec<Vec<Value>> = vec![Vec::new(); self.fields.len()];
        match event.get(&self.field) {
            Some(Value::Array(items)) => {
                for item in items {
                    let object = item.as_object();
                    for ((from, _), values) in self.fields.iter().zip(gathered.iter_mut()) {
                        match object.and_then(|map| from.get(map)) {
                            None | Some(Value::Null) => {
                                if let Some(fill) = &self.missing_value {
                                    values.push(fill.clone());
                                }
                            }
                            Some(value) => values.push(value.clone()),
                        }
                    }
                }
            }
            None | Some(Value::Null) if self.ignore_missing => return KEEP,
            None | Some(Value::Null) => return Err(missing(&self.field)),
            Some(other) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] holds a {}, not a list",
                    self.field,
                    threatbeat_core::path::json_kind(other)
                )))
            }
        }
        for ((_, to), values) in self.fields.iter().zip(gathered) {
            if !values.is_empty() {
                append_values(event, to, values, self.allow_duplicates)?;
            }
        }
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{build_error, chain, run};
    use serde_json::json;

    #[test]
    fn collects_each_key_in_element_order_and_fills_missing_ones() {
        let c = chain(json!([{"collect": {
            "field": "sign",
            "fields": [
                {"from": "cn", "to": "x509.cn"},
                {"from": "serial", "to": "x509.serial"},
                {"from": "deep.k", "to": "x509.deep"},
            ],
            "missing_value": "",
        }}]));
        let out = run(
            &c,
            json!({"sign": [{"cn": "a", "serial": "1", "deep": {"k": 7}}, {"cn": "b", "serial": null}, "odd"]}),
        );
        assert_eq!(out["x509"]["cn"], json!(["a", "b", ""]));
        assert_eq!(out["x509"]["serial"], json!(["1", "", ""]));
        assert_eq!(out["x509"]["deep"], json!([7, "", ""]));
        // The source list is left as it was.
        assert_eq!(out["sign"][1], json!({"cn": "b", "serial": null}));
    }

    #[test]
    fn without_missing_value_missing_keys_are_skipped_and_existing_lists_grow() {
        let c = chain(json!([{"collect": {
            "field": "sign",
            "fields": [{"from": "cn", "to": "names"}],
            "allow_duplicates": false,
        }}]));
        let out = run(&c, json!({"names": "a", "sign": [{"cn": "a"}, {}, {"cn": "c"}]}));
        assert_eq!(out["names"], json!(["a", "c"]));
    }

    #[test]
    fn empty_missing_and_wrong_lists() {
        let c = chain(json!([{"collect": {"field": "sign", "fields": [{"from": "cn", "to": "names"}]}}]));
        // An empty list writes nothing, as a foreach over [] does.
        assert_eq!(run(&c, json!({"sign": []})), json!({"sign": []}));
        let out = run(&c, json!({}));
        assert_eq!(
            out["error"]["message"],
            json!("collect: field [sign] not present")
        );
        let out = run(&c, json!({"sign": "x"}));
        assert_eq!(
            out["error"]["message"],
            json!("collect: field [sign] holds a string, not a list")
        );
        let lenient = chain(json!([{"collect": {"field": "sign", "ignore_missing": true,
            "fields": [{"from": "cn", "to": "names"}]}}]));
        assert_eq!(run(&lenient, json!({"sign": null})), json!({"sign": null}));
    }

    #[test]
    fn config_errors_name_the_key() {
        let error = build_error(json!([{"collect": {"field": "sign", "fields": []}}]));
        assert_eq!(error.key, "processors.0.collect.fields");
        let error = build_error(json!([{"collect": {"field": "sign", "fields": [{"from": "", "to": "x"}]}}]));
        assert_eq!(error.key, "processors.0.collect.fields.0.from");
    }
}
