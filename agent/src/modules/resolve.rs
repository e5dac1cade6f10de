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
    /// The input settings (keys under `input.origin`) whose templates read a
    /// variable the user set, with that variable: an error in such a setting
    /// is the user's value, reported where the user wrote it.
    pub user_var_settings: Vec<(String, String)>,
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

    let user_vars: Vec<String> = flatten_overrides(overrides)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let input_type = choose_input(definition, &vars, origin)?;
    let templater = Templater::for_fileset(&definition.module, &definition.fileset, &vars);
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
        user_var_settings: Vec::new(),
    };
    var_settings(
        &manifest.input[&resolved.input.type_name],
        "",
        &mut |setting, name| {
            if user_vars.iter().any(|var| var == name) {
                resolved
                    .user_var_settings
                    .push((setting.to_owned(), name.to_owned()));
            }
        },
    );
    resolved.source_key = super::instances::source_key(&resolved);
    Ok(resolved)
}

impl ResolvedFileset {
    /// `module/fileset`, whatever the instance.
    pub fn base_id(&self) -> String {
        format!("{}/{}", self.module, self.fileset)
    }

    /// An error the input gave about its templated settings, moved to the
    /// user's `var.*` key when the bad setting was filled from a variable the
    /// user set (`var.interval: 5 minutes` is the user's mistake, not the
    /// built-in manifest's `input.httpjson.interval`). Other errors pass as
    /// they are.
    pub fn attribute_input_error(&self, error: ConfigError) -> ConfigError {
        if error.file != self.input.origin.file {
            return error;
        }
        let base = &self.input.origin.key;
        let relative = if error.key == *base {
            ""
        } else if let Some(rest) = error
            .key
            .strip_prefix(base.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
        {
            rest
        } else {
            return error;
        };
        let inside = |outer: &str, inner: &str| {
            outer.is_empty()
                || inner == outer
                || inner
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        // The setting that holds the error's key, the deepest first; else,
        // for an error about a whole block (`request.transforms`), the one
        // variable the user set inside it.
        let holding = self
            .user_var_settings
            .iter()
            .filter(|(setting, _)| inside(setting, relative))
            .max_by_key(|(setting, _)| setting.len())
            .map(|(_, var)| var.clone());
        // An error about the input as a whole (its type) is the definition's.
        let var = holding.or_else(|| {
            if relative.is_empty() {
                return None;
            }
            let mut within: Vec<&String> = self
                .user_var_settings
                .iter()
                .filter(|(setting, _)| inside(relative, setting))
                .map(|(_, var)| var)
                .collect();
            within.sort();
            within.dedup();
            match within.as_slice() {
                [one] => Some((*one).clone()),
                _ => None,
            }
        });
        let Some(var) = var else {
            return error;
        };
        let user = self.origin.child(format!("var.{var}"));
        ConfigError {
            file: user.file,
            key: user.key,
            reason: format!(
                "{} (the value fills `{}` of the {} definition, {})",
                error.reason,
                if relative.is_empty() {
                    base.as_str()
                } else {
                    relative
                },
                self.base_id(),
                error.file
            ),
        }
    }
}

/// Calls `found(setting, variable)` for every `var.<name>` a template in
/// `value` reads, `setting` being the dotted key of the string holding it.
fn var_settings(value: &Value, path: &str, found: &mut impl FnMut(&str, &str)) {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(text) if text.contains("{{") => {
            let mut rest = text.as_str();
            while let Some(position) = rest.find("var.") {
                let before = rest[..position].chars().next_back();
                let after = &rest[position + 4..];
                let name_length = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    && name_length > 0
                {
                    found(path, &after[..name_length]);
                }
                rest = &after[name_length..];
            }
        }
        Value::Array(items) => {
            for (position, item) in items.iter().enumerate() {
                var_settings(item, &child(&position.to_string()), found);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                var_settings(item, &child(key), found);
            }
        }
        _ => {}
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

#[cfg(test)]
mod attribution_tests {
    use serde_json::json;

    use super::*;
    use crate::modules::Definitions;

    const MANIFEST: &str = r#"
module: intel
fileset: feed
description: a test feed
var:
  url: https://localhost/events
  interval: 60m
  first_interval: 24h
  limit: 10
input:
  httpjson:
    interval: "{{ var.interval }}"
    request:
      url: "{{ var.url }}"
      transforms:
        - set: {target: body.limit, value: "{{ var.limit }}"}
        - set: {target: body.from, value: "[[ now() - parse_duration('{{ var.first_interval }}') ]]"}
"#;

    fn fileset(overrides: Value) -> ResolvedFileset {
        let config = tempfile::tempdir().unwrap();
        let folder = config.path().join("modules.d/definitions/intel/feed");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("manifest.yml"), MANIFEST).unwrap();
        let definitions = Definitions::load(config.path()).unwrap();
        let origin = Origin::named("modules.d/intel.yml").child(0).child("feed");
        let overrides = overrides.as_object().unwrap().clone();
        resolve(definitions.get("intel", "feed").unwrap(), &overrides, &origin).unwrap()
    }

    fn manifest_error(fileset: &ResolvedFileset, key: &str) -> ConfigError {
        fileset.input.origin.child(key).error("bad value")
    }

    #[test]
    fn a_bad_setting_filled_by_the_users_variable_names_the_users_key() {
        let fileset = fileset(json!({"var.interval": "5 minutes", "var": {"first_interval": "1 year"}}));
        let error = fileset.attribute_input_error(manifest_error(&fileset, "interval"));
        assert_eq!(
            (error.file.as_str(), error.key.as_str()),
            ("modules.d/intel.yml", "0.feed.var.interval")
        );
        assert!(error.reason.starts_with("bad value"), "{}", error.reason);
        assert!(
            error.reason.contains("`interval` of the intel/feed definition"),
            "{}",
            error.reason
        );
        // A block-level error (the first request cannot be built) with one
        // user variable inside it.
        let error = fileset.attribute_input_error(manifest_error(&fileset, "request.transforms"));
        assert_eq!(error.key, "0.feed.var.first_interval");
        let error = fileset.attribute_input_error(manifest_error(&fileset, "request.transforms.1.set.value"));
        assert_eq!(error.key, "0.feed.var.first_interval");
    }

    #[test]
    fn errors_in_defaults_and_elsewhere_keep_their_place() {
        // The user set only the URL: a bad interval is the definition's.
        let fileset = fileset(json!({"var.url": "https://misp.lab/events"}));
        let error = fileset.attribute_input_error(manifest_error(&fileset, "interval"));
        assert_eq!(error.key, "input.httpjson.interval");
        assert!(error.file.ends_with("manifest.yml"));
        assert_eq!(
            fileset
                .attribute_input_error(manifest_error(&fileset, "request.url"))
                .key,
            "0.feed.var.url"
        );
        // Two user variables inside one block: no guess.
        let fileset = fileset_two();
        let error = fileset.attribute_input_error(manifest_error(&fileset, "request.transforms"));
        assert_eq!(error.key, "input.httpjson.request.transforms");
        let whole = fileset.input.origin.error("unknown input type");
        assert_eq!(fileset.attribute_input_error(whole.clone()), whole);
        let other = Origin::named("threatbeat.yml").child("output").error("x");
        assert_eq!(fileset.attribute_input_error(other.clone()), other);
    }

    fn fileset_two() -> ResolvedFileset {
        fileset(json!({"var.limit": "5", "var.first_interval": "2h"}))
    }
}
