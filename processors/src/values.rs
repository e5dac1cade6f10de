//! Processors that change values in place: `append` (to a list field),
//! `lowercase` and `uppercase`.

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{is_empty, missing, path_at, paths_at, write, Step, StepConfig, KEEP};

// ---------------------------------------------------------------- append

/// `append`: adds values (and/or the values of other fields) to a list
/// field, turning a scalar into a list first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendConfig {
    #[serde(alias = "target_field")]
    field: String,
    value: Option<Value>,
    #[serde(default)]
    fields: Vec<String>,
    #[serde(default = "crate::common::yes")]
    allow_duplicates: bool,
    #[serde(default)]
    ignore_empty_values: bool,
}

pub(crate) struct Append {
    field: FieldPath,
    values: Vec<Value>,
    from: Vec<FieldPath>,
    allow_duplicates: bool,
    ignore_empty_values: bool,
}

impl StepConfig for AppendConfig {
    const NAME: &'static str = "append";
    type Step = Append;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Append, ConfigError> {
        // An explicit empty list (a templated `var.tags: []`) appends nothing.
        let has_value = self.value.as_ref().is_some_and(|value| !value.is_null());
        let values = match self.value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list,
            Some(single) => vec![single],
        };
        let from = paths_at(&self.fields, &origin.child("fields"))?;
        if !has_value && from.is_empty() {
            return Err(origin.error("give `value` (a value or a list) and/or `fields` to append from"));
        }
        Ok(Append {
            field: path_at(&self.field, &origin.child("field"))?,
            values,
            from,
            allow_duplicates: self.allow_duplicates,
            ignore_empty_values: self.ignore_empty_values,
        })
    }
}

impl Step for Append {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut additions: Vec<Value> = self.values.clone();
        for source in &self.from {
            match event.get(source) {
                Some(Value::Array(items)) => additions.extend(items.iter().cloned()),
                Some(value) => additions.push(value.clone()),
                None => {}
            }
        }
        if self.ignore_empty_values {
            additions.retain(|value| !is_empty(value));
        }
        if additions.is_empty() {
            return KEEP;
        }
        append_values(event, &self.field, additions, self.allow_duplicates)?;
        KEEP
    }
}

/// Appends `additions` to the list at `field` (a scalar becomes a one-item list).
pub(crate) fn append_values(
    event: &mut Event,
    field: &FieldPath,
    additions: Vec<Value>,
    allow_duplicates: bool,
) -> Result<(), ProcessorError> {
    let mut list = match event.remove(field) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(single) => vec![single],
    };
    for value in additions {
        if allow_duplicates || !list.contains(&value) {
            list.push(value);
        }
    }
    write(event, field, Value::Array(list))
}

// ---------------------------------------------------------------- case

/// `lowercase` / `uppercase`: changes the case of string fields (and of
/// each string in a list field).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaseConfig {
    fields: Vec<String>,
    #[serde(default)]
    ignore_missing: bool,
}

pub(crate) struct Case {
    fields: Vec<FieldPath>,
    ignore_missing: bool,
    upper: bool,
}

fn build_case(config: CaseConfig, origin: &Origin, upper: bool) -> Result<Case, ConfigError> {
    let fields = paths_at(&config.fields, &origin.child("fields"))?;
    Ok(Case {
        fields,
        ignore_missing: config.ignore_missing,
        upper,
    })
}

/// The `lowercase` registration.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct LowercaseConfig(CaseConfig);

impl StepConfig for LowercaseConfig {
    const NAME: &'static str = "lowercase";
    type Step = Case;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Case, ConfigError> {
        build_case(self.0, origin, false)
    }
}

/// The `uppercase` registration.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct UppercaseConfig(CaseConfig);

impl StepConfig for UppercaseConfig {
    const NAME: &'static str = "uppercase";
    type Step = Case;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Case, ConfigError> {
        build_case(self.0, origin, true)
    }
}

impl Step for Case {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        for field in &self.fields {
            let change = |text: &mut String| {
                *text = if self.upper {
                    text.to_uppercase()
                } else {
                    text.to_lowercase()
                };
            };
            match event.get_mut(field) {
                Some(Value::String(text)) => change(text),
                Some(Value::Array(items)) => items.iter_mut().for_each(|item| {
                    if let Value::String(text) = item {
                        change(text)
                    }
                }),
                Some(other) => {
                    return Err(ProcessorError::new(format!(
                        "field [{field}] holds a {}, not a string",
                        threatbeat_core::path::json_kind(other)
                    )))
                }
                None if self.ignore_missing => {}
                None => return Err(missing(field)),
            }
        }
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn append_case_and_nulls() {
        let c = chain(json!([
            {"append": {"field": "tags", "value": ["b", "a"], "allow_duplicates": false}},
            {"append": {"field": "roles", "value": "reporting_user"}},
            {"lowercase": {"fields": ["name", "tags"]}},
            {"uppercase": {"fields": ["up"], "ignore_missing": true}},
            {"remove_nulls": {}},
        ]));
        assert_eq!(
            run(
                &c,
                json!({"tags": "A", "name": "MiSP", "n": null, "deep": {"x": null, "l": [{"y": null}]}})
            ),
            json!({"tags": ["a", "b", "a"], "roles": ["reporting_user"], "name": "misp", "deep": {"l": [{}]}})
        );
    }
}
