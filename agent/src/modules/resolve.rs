//! Turns a fileset definition plus the user's `var.*` overrides into a
//! resolved fileset: the chosen input's config, the processors and the index,
//! all templated.

use serde_json::{Map, Value};
use threatbeat_core::{ConfigError, Origin, PluginConfig};

use super::definition::FilesetDefinition;
use super::template::Templater;

/// A fileset ready to be built into a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFileset {
    /// The pipeline id, also used for the cursor file: `module/fileset`, or
    /// `module/fileset/<instance>` when the fileset is configured several
    /// times (see [`super::instances`]).
    pub id: String,
    /// The entry's `id:`, which names this instance among several.
    pub instance: Option<String>,
    /// A digest of the settings that say where the data comes from: it tells
    /// unnamed instances apart and lets one adopt the cursor it had alone.
    pub source_key: String,
    /// Where the fileset's entry was written.
    pub origin: Origin,
    /// The module (`threatintel`).
    pub module: String,
    /// The fileset (`misp`).
    pub fileset: String,
    /// The input chosen by `var.input`, templated.
    pub input: PluginConfig,
    /// The definition's processors (a list, possibly empty), templated.
    pub processors: Value,
    /// Where the definition's processors were written.
    pub processors_origin: Origin,
    /// The target index set on events that have none.
    pub index: Option<String>,
    /// The final variables: declared defaults with the user's overrides.
    pub vars: Map<String, Value>,
    /// The templated `current_state:` block of the manifest (null when absent).
    pub current_state: Value,
    /// Where `current_state:` was written.
    pub current_state_origin: Origin,
    /// Processors the user added in the module entry (`misp.processors`),
    /// run after the definition's; `Value::Null` when none.
    pub user_processors: Value,
    /// Where the user's processors were written.
    pub user_processors_origin: Origin,
}

/// Resolves `definition` with `overrides`, written at `origin` (the module
/// entry's fileset, such as `modules.d/threatintel.yml` key `0.misp`).
///
/// `overrides` maps variable names to values; keys may also be written with
/// their `var.` prefix, or as one nested `var` map.
pub fn resolve(
    definition: &FilesetDefinition,
    overrides: &Map<String, Value>,
    origin: &Origin,
) -> Result<ResolvedFileset, ConfigError> {
    let manifest = &definition.manifest;
    let mut vars = manifest.var.clone();
    for (name, value) in flatten_overrides(overrides) {
        if !manifest.var.contains_key(&name) {
            return Err(origin.child(format!("var.{name}")).error(format!(
                "unknown variable `{name}` for {}; declared variables: {}",
                definition.id(),
                join_keys(&manifest.var)
            )));
        }
        let value = typed_like(&manifest.var[&name], value);
        vars.insert(name, value);
    }

    let input_type = choose_input(definition, &vars, origin)?;
    let templater = Templater::new(&vars);
    let input_origin = definition.manifest_origin.child(format!("input.{input_type}"));
    let settings = templater
        .render(&manifest.input[&input_type], &input_origin)?
        .filter(|settings| !settings.is_null())
        .unwrap_or_else(|| Value::Object(Map::new()));
    let processors = templater
        .render(&definition.processors, &definition.processors_origin)?
        .unwrap_or(Value::Null);
    let index = match &manifest.index {
        Some(index) => match templater.render(
            &Value::String(index.clone()),
            &definition.manifest_origin.child("index"),
        )? {
            Some(Value::String(index)) => Some(index),
            None => None,
            Some(other) => {
                return Err(definition
                    .manifest_origin
                    .child("index")
                    .error(format!("the index must be text, the template gave {other}")))
            }
        },
        None => None,
    };

    let current_state_origin = definition.manifest_origin.child("current_state");
    let current_state = templater
        .render(&manifest.current_state, &current_state_origin)?
        .unwrap_or(Value::Null);
    let mut resolved = ResolvedFileset {
        id: definition.id(),
        instance: None,
        source_key: String::new(),
        origin: origin.clone(),
        module: definition.module.clone(),
        fileset: definition.fileset.clone(),
        input: PluginConfig {
            type_name: input_type,
            settings,
            origin: input_origin,
        },
        processors,
        processors_origin: definition.processors_origin.clone(),
        index,
        vars,
        current_state,
        current_state_origin,
        user_processors: Value::Null,
        user_processors_origin: origin.child("processors"),
    };
    resolved.source_key = super::instances::source_key(&resolved);
    Ok(resolved)
}

impl ResolvedFileset {
    /// `module/fileset`, whatever the instance.
    pub fn base_id(&self) -> String {
        format!("{}/{}", self.module, self.fileset)
    }
}

/// A user's value as the type of the variable's default, when it is that
/// type's text: `${VAR}` references expand to text, and templates must see
/// `var.current_state: ${CURRENT_STATE}` = `"false"` as `false` (in Jinja the
/// text is truthy), as Beats reads such text for typed settings.
fn typed_like(default: &Value, value: Value) -> Value {
    let Value::String(text) = &value else {
        return value;
    };
    let trimmed = text.trim();
    match default {
        Value::Bool(_) if trimmed.eq_ignore_ascii_case("true") => Value::Bool(true),
        Value::Bool(_) if trimmed.eq_ignore_ascii_case("false") => Value::Bool(false),
        Value::Number(_) => match trimmed.parse::<i64>() {
            Ok(number) => Value::from(number),
            Err(_) => value,
        },
        _ => value,
    }
}

/// `{"var.url": x}`, `{"var": {"url": x}}` and `{"url": x}` all mean `url = x`.
fn flatten_overrides(overrides: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut flat = Vec::with_capacity(overrides.len());
    for (key, value) in overrides {
        match (key.as_str(), value) {
            ("var", Value::Object(nested)) => {
                flat.extend(nested.iter().map(|(name, value)| (name.clone(), value.clone())))
            }
            _ => {
                let name = key.strip_prefix("var.").unwrap_or(key);
                flat.push((name.to_owned(), value.clone()));
            }
        }
    }
    flat
}

fn choose_input(
    definition: &FilesetDefinition,
    vars: &Map<String, Value>,
    origin: &Origin,
) -> Result<String, ConfigError> {
    let inputs = &definition.manifest.input;
    match vars.get("input") {
        Some(Value::String(chosen)) if inputs.contains_key(chosen) => Ok(chosen.clone()),
        Some(Value::String(chosen)) => Err(origin.child("var.input").error(format!(
            "{} has no input `{chosen}`; it supports: {}",
            definition.id(),
            join_keys(inputs)
        ))),
        Some(Value::Null) | None if inputs.len() == 1 => {
            Ok(inputs.keys().next().cloned().unwrap_or_default())
        }
        Some(Value::Null) | None => Err(origin.child("var.input").error(format!(
            "{} supports several inputs; choose one with `var.input`: {}",
            definition.id(),
            join_keys(inputs)
        ))),
        Some(other) => Err(origin
            .child("var.input")
            .error(format!("`var.input` must name an input, found {other}"))),
    }
}

fn join_keys(map: &Map<String, Value>) -> String {
    if map.is_empty() {
        return "(none)".to_owned();
    }
    map.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}
