//! Processors that move, copy, set and remove fields: `rename`,
//! `copy_fields`, `set`, `add_fields`,
//! `drop_fields` and `drop_event`.

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{
    BuildContext, ConfigError, Event, FieldGroups, FieldMove, FieldPath, Origin, ProcessOutcome,
    ProcessorError,
};

use crate::common::{is_empty, missing, path_at, paths_at, write, FromTo, Step, StepConfig, KEEP};
use crate::format::FormatString;

/// `from`/`to` pairs given either Beats-style (`fields: [{from, to}]`) or
/// Elasticsearch-style (`field` + `target_field`).
fn pairs(
    fields: Option<Vec<FromTo>>,
    field: Option<String>,
    target_field: Option<String>,
    origin: &Origin,
) -> Result<Vec<(FieldPath, FieldPath)>, ConfigError> {
    match (fields, field, target_field) {
        (Some(list), None, None) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(index, pair)| {
                let origin = origin.child("fields").child(index);
                Ok((
                    path_at(&pair.from, &origin.child("from"))?,
                    path_at(&pair.to, &origin.child("to"))?,
                ))
            })
            .collect(),
        (None, Some(from), Some(to)) => Ok(vec![(
            path_at(&from, &origin.child("field"))?,
            path_at(&to, &origin.child("target_field"))?,
        )]),
        _ => Err(origin.error("give either `fields: [{from, to}, ...]` or both `field` and `target_field`")),
    }
}

// ---------------------------------------------------------------- rename

/// `rename`: moves fields. Fails when the source is missing (unless
/// `ignore_missing`) or the target exists (unless `overwrite`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameConfig {
    fields: Option<Vec<FromTo>>,
    field: Option<String>,
    target_field: Option<String>,
    #[serde(default)]
    ignore_missing: bool,
    #[serde(default)]
    overwrite: bool,
}

pub(crate) struct Rename {
    moves: Vec<FieldMove>,
    ignore_missing: bool,
    overwrite: bool,
    copy: bool,
}

/// The pairs compiled into moves.
fn moves(pairs: Vec<(FieldPath, FieldPath)>) -> Vec<FieldMove> {
    pairs
        .into_iter()
        .map(|(from, to)| FieldMove::new(from, to))
        .collect()
}

impl StepConfig for RenameConfig {
    const NAME: &'static str = "rename";
    type Step = Rename;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Rename, ConfigError> {
        Ok(Rename {
            moves: moves(pairs(self.fields, self.field, self.target_field, origin)?),
            ignore_missing: self.ignore_missing,
            overwrite: self.overwrite,
            copy: false,
        })
    }
}

impl Step for Rename {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        for field_move in &self.moves {
            let (from, to) = (field_move.from(), field_move.to());
            if self.copy {
                if !self.overwrite && event.get(to).is_some() {
                    return Err(ProcessorError::new(format!("field [{to}] already exists")));
                }
                match event.get(from) {
                    Some(value) => {
                        let value = value.clone();
                        write(event, to, value)?;
                    }
                    None if self.ignore_missing => {}
                    None => return Err(missing(from)),
                }
                continue;
            }
            match field_move.apply(event, self.overwrite) {
                Ok(true) => {}
                Ok(false) if self.ignore_missing => {}
                Ok(false) => return Err(missing(from)),
                Err(error) => return Err(ProcessorError::new(error.to_string())),
            }
        }
        KEEP
    }
}

/// `copy_fields`: copies fields; same options as `rename`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyFieldsConfig {
    fields: Option<Vec<FromTo>>,
    field: Option<String>,
    target_field: Option<String>,
    #[serde(default)]
    ignore_missing: bool,
    #[serde(default)]
    overwrite: bool,
}

impl StepConfig for CopyFieldsConfig {
    const NAME: &'static str = "copy_fields";
    type Step = Rename;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Rename, ConfigError> {
        Ok(Rename {
            moves: moves(pairs(self.fields, self.field, self.target_field, origin)?),
            ignore_missing: self.ignore_missing,
            overwrite: self.overwrite,
            copy: true,
        })
    }
}

// ---------------------------------------------------------------- set

/// `set`: writes one field from a value (with `%{[field]}` references) or
/// from another field (`copy_from`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetConfig {
    field: String,
    value: Option<Value>,
    copy_from: Option<String>,
    #[serde(default = "crate::common::yes")]
    overwrite: bool,
    #[serde(default)]
    ignore_empty_value: bool,
}

pub(crate) struct Set {
    field: FieldPath,
    source: SetSource,
    overwrite: bool,
    ignore_empty_value: bool,
}

enum SetSource {
    Value(Value),
    Format(FormatString),
    CopyFrom(FieldPath),
}

impl StepConfig for SetConfig {
    const NAME: &'static str = "set";
    type Step = Set;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Set, ConfigError> {
        let source = match (self.value, self.copy_from) {
            (Some(Value::String(text)), None) => match FormatString::parse(&text, &origin.child("value"))? {
                Some(format) => SetSource::Format(format),
                None => SetSource::Value(Value::String(text)),
            },
            (Some(value), None) => SetSource::Value(value),
            (None, Some(from)) => SetSource::CopyFrom(path_at(&from, &origin.child("copy_from"))?),
            _ => return Err(origin.error("give exactly one of `value` and `copy_from`")),
        };
        Ok(Set {
            field: path_at(&self.field, &origin.child("field"))?,
            source,
            overwrite: self.overwrite,
            ignore_empty_value: self.ignore_empty_value,
        })
    }
}

impl Step for Set {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        if !self.overwrite && event.get(&self.field).is_some_and(|value| !value.is_null()) {
            return KEEP;
        }
        let value = match &self.source {
            SetSource::Value(value) => value.clone(),
            SetSource::Format(format) => format.render(event)?,
            SetSource::CopyFrom(from) => match event.get(from) {
                Some(value) => value.clone(),
                None if self.ignore_empty_value => return KEEP,
                None => return Err(missing(from)),
            },
        };
        if self.ignore_empty_value && is_empty(&value) {
            return KEEP;
        }
        write(event, &self.field, value)?;
        KEEP
    }
}

/// `add_fields` (Beats): merges a map of fields under `target` (default
/// `fields`; an empty target means the document root).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddFieldsConfig {
    #[serde(default = "default_add_target")]
    target: String,
    fields: Map<String, Value>,
}

fn default_add_target() -> String {
    "fields".to_owned()
}

pub(crate) struct AddFields {
    paths: FieldGroups,
    /// The value written at each of `paths`, same order.
    values: Vec<Value>,
}

impl StepConfig for AddFieldsConfig {
    const NAME: &'static str = "add_fields";
    type Step = AddFields;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<AddFields, ConfigError> {
        let mut entries = Vec::new();
        flatten_into(&self.fields, &self.target, origin, &mut entries)?;
        let (paths, values) = entries.into_iter().unzip();
        Ok(AddFields {
            paths: FieldGroups::new(paths),
            values,
        })
    }
}

fn flatten_into(
    map: &Map<String, Value>,
    prefix: &str,
    origin: &Origin,
    entries: &mut Vec<(FieldPath, Value)>,
) -> Result<(), ConfigError> {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten_into(inner, &name, origin, entries)?,
            other => entries.push((path_at(&name, &origin.child("fields").child(key))?, other.clone())),
        }
    }
    Ok(())
}

impl Step for AddFields {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        self.paths
            .set(event, |index| self.values[index].clone())
            .map_err(|error| ProcessorError::new(error.to_string()))?;
        KEEP
    }
}

// ---------------------------------------------------------------- drop

/// `drop_fields`: removes fields; a missing one is an error unless `ignore_missing`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DropFieldsConfig {
    fields: Vec<String>,
    #[serde(default)]
    ignore_missing: bool,
}

pub(crate) struct DropFields {
    fields: FieldGroups,
    ignore_missing: bool,
}

impl StepConfig for DropFieldsConfig {
    const NAME: &'static str = "drop_fields";
    type Step = DropFields;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<DropFields, ConfigError> {
        let fields = paths_at(&self.fields, &origin.child("fields"))?;
        if fields.is_empty() {
            return Err(origin.child("fields").error("list at least one field to drop"));
        }
        Ok(DropFields {
            fields: FieldGroups::new(fields),
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for DropFields {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut absent = Vec::new();
        self.fields.remove(event, |index, removed| {
            if removed.is_none() && !self.ignore_missing {
                absent.push(self.fields.paths()[index].as_str());
            }
        });
        if absent.is_empty() {
            KEEP
        } else {
            Err(ProcessorError::new(format!(
                "fields not present: {}",
                absent.join(", ")
            )))
        }
    }
}

/// `drop_event`: drops the event (combine with `when`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DropEventConfig {}

pub(crate) struct DropEvent;

impl StepConfig for DropEventConfig {
    const NAME: &'static str = "drop_event";
    type Step = DropEvent;
    fn build(self, _: &Origin, _: &BuildContext) -> Result<DropEvent, ConfigError> {
        Ok(DropEvent)
    }
}

impl Step for DropEvent {
    fn apply(&self, _: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        Ok(ProcessOutcome::Drop)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn rename_moves_and_reports_missing_or_existing() {
        let c = chain(json!([{"rename": {"fields": [{"from": "a", "to": "b.c"}]}}]));
        assert_eq!(run(&c, json!({"a": 1})), json!({"b": {"c": 1}}));
        let marked = run(&c, json!({"x": 1}));
        assert_eq!(marked["error"]["message"], json!("rename: field [a] not present"));
        let marked = run(&c, json!({"a": 1, "b": {"c": 2}}));
        assert_eq!(
            marked["error"]["message"],
            json!("rename: field [b.c] already exists")
        );
        let c = chain(json!([{"rename": {"field": "a", "target_field": "b", "ignore_missing": true}}]));
        assert_eq!(run(&c, json!({"x": 1})), json!({"x": 1}));
    }

    #[test]
    fn copy_set_add_fields() {
        let c = chain(json!([
            {"copy_fields": {"fields": [{"from": "a", "to": "b"}]}},
            {"set": {"field": "c.d", "value": "id-%{[a]}"}},
            {"set": {"field": "e", "copy_from": "a"}},
            {"set": {"field": "a", "value": 9, "overwrite": false}},
            {"add_fields": {"target": "", "fields": {"ecs": {"version": "1.12.0"}}}},
            {"add_fields": {"fields": {"x": true}}},
        ]));
        assert_eq!(
            run(&c, json!({"a": 5})),
            json!({"a": 5, "b": 5, "c": {"d": "id-5"}, "e": 5, "ecs": {"version": "1.12.0"}, "fields": {"x": true}})
        );
    }

    #[test]
    fn drop_fields_and_drop_event() {
        let c = chain(json!([{"drop_fields": {"fields": ["a.b", "z"], "ignore_missing": true}}]));
        assert_eq!(run(&c, json!({"a": {"b": 1, "c": 2}})), json!({"a": {"c": 2}}));
        let c = chain(json!([{"drop_fields": {"fields": ["z"]}}]));
        assert_eq!(
            run(&c, json!({}))["error"]["message"],
            json!("drop_fields: fields not present: z")
        );
        let c = chain(json!([{"drop_event": {"when": {"equals": {"response": []}}}}]));
        assert!(c
            .run(threatbeat_core::Event::from_value(json!({"response": []})))
            .is_none());
        assert!(c
            .run(threatbeat_core::Event::from_value(json!({"response": [1]})))
            .is_some());
    }

    #[test]
    fn unknown_settings_are_rejected_with_the_key() {
        let error = crate::test_util::build_error(
            json!([{"rename": {"field": "a", "target_field": "b", "ignore_mising": true}}]),
        );
        assert_eq!(error.key, "processors.0.rename.ignore_mising");
        assert!(error.reason.contains("unknown field"), "{}", error.reason);
    }
}
