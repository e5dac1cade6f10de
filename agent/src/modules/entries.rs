//! Module entries as users write them, in `modules.d/*.yml` or under
//! `threatbeat.modules:` / `filebeat.modules:`:
//!
//! ```yaml
//! - module: threatintel
//!   misp:
//!     enabled: true
//!     var.url: https://misp.example/events/restSearch
//!     var.api_token: ${MISP_API_KEY}
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use threatbeat_core::{deep_merge, ConfigError, Origin};

use super::definition::Definitions;
use super::resolve::{resolve, ResolvedFileset};

/// One `- module: NAME` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleEntry {
    /// The module name.
    pub module: String,
    /// `enabled` at the module level (default true).
    pub enabled: bool,
    /// The filesets named in the entry; empty means "every fileset of the
    /// module, with its defaults", as in Filebeat.
    pub filesets: Vec<FilesetEntry>,
    /// Where the entry was written (file and list position).
    pub origin: Origin,
}

/// The settings of one fileset inside a module entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesetEntry {
    /// The fileset name.
    pub name: String,
    /// `enabled` (default true).
    pub enabled: bool,
    /// `id`: names this instance when the fileset is configured several times.
    pub id: Option<String>,
    /// `var.*` overrides, by variable name.
    pub vars: Map<String, Value>,
    /// `input:` settings deep-merged over the templated input config.
    pub input: Map<String, Value>,
    /// `processors:` run after the definition's processors.
    pub processors: Value,
    /// Where the fileset's settings were written.
    pub origin: Origin,
}

const FILESET_KEYS: &str = "enabled, id, var.*, input, processors";

/// Parses a YAML list of module entries (a `modules.d/*.yml` file, or the
/// value of `threatbeat.modules`). `Value::Null` is an empty list.
pub fn parse_module_list(value: &Value, origin: &Origin) -> Result<Vec<ModuleEntry>, ConfigError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(origin.error(format!(
                "expected a list of module entries (`- module: threatintel`), found {}",
                threatbeat_core::path::json_kind(other)
            )))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(position, item)| parse_entry(item, &origin.child(position)))
        .collect()
}

fn parse_entry(item: &Value, origin: &Origin) -> Result<ModuleEntry, ConfigError> {
    let map = item
        .as_object()
        .ok_or_else(|| origin.error("a module entry must be a map with a `module` key"))?;
    let module = match map.get("module") {
        Some(Value::String(module)) if !module.is_empty() => module.clone(),
        Some(_) => return Err(origin.child("module").error("`module` must name a module")),
        None => return Err(origin.error("a module entry needs a `module` key")),
    };
    let mut enabled = true;
    // Dotted keys (`misp.var.url: x`) are nested first, as Beats' config does.
    let mut filesets: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut order = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "module" => {}
            "enabled" => enabled = as_bool(value, &origin.child("enabled"))?,
            _ => {
                let (fileset, rest) = key.split_once('.').unwrap_or((key.as_str(), ""));
                if !filesets.contains_key(fileset) {
                    order.push(fileset.to_owned());
                }
                let settings = filesets.entry(fileset.to_owned()).or_default();
                match (rest, value) {
                    ("", Value::Object(inner)) => settings.extend(inner.clone()),
                    ("", Value::Null) => {}
                    ("", _) => {
                        return Err(origin
                            .child(fileset)
                            .error(format!("fileset settings must be a map ({FILESET_KEYS})")))
                    }
                    (rest, value) => {
                        settings.insert(rest.to_owned(), value.clone());
                    }
                }
            }
        }
    }
    let filesets = order
        .into_iter()
        .map(|name| {
            let settings = filesets.remove(&name).unwrap_or_default();
            parse_fileset(&name, &settings, &origin.child(&name))
        })
        .collect::<Result<_, _>>()?;
    Ok(ModuleEntry {
        module,
        enabled,
        filesets,
        origin: origin.clone(),
    })
}

fn parse_fileset(
    name: &str,
    settings: &Map<String, Value>,
    origin: &Origin,
) -> Result<FilesetEntry, ConfigError> {
    let mut entry = FilesetEntry {
        name: name.to_owned(),
        enabled: true,
        id: None,
        vars: Map::new(),
        input: Map::new(),
        processors: Value::Null,
        origin: origin.clone(),
    };
    for (key, value) in settings {
        let key_origin = origin.child(key);
        match key.split_once('.') {
            None if key == "enabled" => entry.enabled = as_bool(value, &key_origin)?,
            None if key == "id" => match value {
                Value::String(id) if super::instances::valid_instance_id(id) => entry.id = Some(id.clone()),
                _ => {
                    return Err(key_origin.error(format!(
                        "`id` names this instance of the fileset: 1 to 64 letters, digits, `-` or `_`, found {value}"
                    )))
                }
            },
            None if key == "var" => match value {
                Value::Object(vars) => entry.vars.extend(vars.clone()),
                Value::Null => {}
                _ => return Err(key_origin.error("`var` must be a map of variable names to values")),
            },
            None if key == "input" => match value {
                Value::Object(input) => deep_merge(&mut entry.input, input),
                Value::Null => {}
                _ => return Err(key_origin.error("`input` must be a map of input settings")),
            },
            None if key == "processors" => match value {
                Value::Array(_) | Value::Null => entry.processors = value.clone(),
                _ => return Err(key_origin.error("`processors` must be a list of processors")),
            },
            Some(("var", name)) => {
                entry.vars.insert(name.to_owned(), value.clone());
            }
            Some(("input", path)) => {
                let mut nested = value.clone();
                for segment in path.rsplit('.') {
                    let mut wrapper = Map::new();
                    wrapper.insert(segment.to_owned(), nested);
                    nested = Value::Object(wrapper);
                }
                if let Value::Object(nested) = nested {
                    deep_merge(&mut entry.input, &nested);
                }
            }
            _ => {
                return Err(key_origin.error(format!(
                    "unknown fileset setting `{key}`; allowed: {FILESET_KEYS}"
                )))
            }
        }
    }
    Ok(entry)
}

/// Resolves every enabled fileset of `entries` against `definitions`.
/// Unknown modules and filesets are errors naming the entry and the known names;
/// a fileset enabled several times gets one pipeline id per instance, and two
/// instances that cannot be told apart are an error
/// ([`super::assign_pipeline_ids`]).
pub fn resolve_entries(
    entries: &[ModuleEntry],
    definitions: &Definitions,
) -> Result<Vec<ResolvedFileset>, ConfigError> {
    let mut resolved: Vec<ResolvedFileset> = Vec::new();
    for entry in entries {
        let known = definitions.filesets(&entry.module);
        if known.is_empty() {
            return Err(entry.origin.child("module").error(format!(
                "unknown module `{}`; known modules: {}",
                entry.module,
                definitions.modules().into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        if !entry.enabled {
            continue;
        }
        let implicit;
        let filesets: &[FilesetEntry] = if entry.filesets.is_empty() {
            implicit = known
                .iter()
                .map(|definition| FilesetEntry {
                    name: definition.fileset.clone(),
                    enabled: true,
                    id: None,
                    vars: Map::new(),
                    input: Map::new(),
                    processors: Value::Null,
                    origin: entry.origin.clone(),
                })
                .collect::<Vec<_>>();
            &implicit
        } else {
            &entry.filesets
        };
        for fileset in filesets {
            let Some(definition) = definitions.get(&entry.module, &fileset.name) else {
                return Err(fileset.origin.error(format!(
                    "module `{}` has no fileset `{}`; known filesets: {}",
                    entry.module,
                    fileset.name,
                    known
                        .iter()
                        .map(|d| d.fileset.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if !fileset.enabled {
                continue;
            }
            let mut one = resolve(definition, &fileset.vars, &fileset.origin)?;
            if let Value::Object(settings) = &mut one.input.settings {
                deep_merge(settings, &fileset.input);
            }
            one.user_processors = fileset.processors.clone();
            one.user_processors_origin = fileset.origin.child("processors");
            one.instance = fileset.id.clone();
            resolved.push(one);
        }
    }
    super::assign_pipeline_ids(resolved.iter_mut())?;
    Ok(resolved)
}

fn as_bool(value: &Value, origin: &Origin) -> Result<bool, ConfigError> {
    value
        .as_bool()
        .ok_or_else(|| origin.error(format!("expected true or false, found {value}")))
}
