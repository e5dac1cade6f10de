//! Configuration errors that name the file, the key and the reason, and the
//! helper that turns a raw config value into a typed plugin config.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where a piece of configuration came from: a file (or another source such
/// as the command line) and the key path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file, or a description such as `-E flag` or `built-in module threatintel/misp`.
    pub file: String,
    /// The dotted key path inside that source (`output.file.path`, `processors.2.rename`).
    pub key: String,
}

impl Origin {
    /// An origin in `file` at the top level.
    pub fn file(path: &Path) -> Self {
        Self {
            file: path.display().to_string(),
            key: String::new(),
        }
    }

    /// An origin in a non-file source such as `-E flag`.
    pub fn named(source: impl Into<String>) -> Self {
        Self {
            file: source.into(),
            key: String::new(),
        }
    }

    /// The same source, one key deeper.
    pub fn child(&self, key: impl fmt::Display) -> Self {
        let key = key.to_string();
        Self {
            file: self.file.clone(),
            key: if self.key.is_empty() {
                key
            } else if key.is_empty() {
                self.key.clone()
            } else {
                format!("{}.{}", self.key, key)
            },
        }
    }

    /// An error at this origin.
    pub fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: self.key.clone(),
            reason: reason.into(),
        }
    }
}

/// A configuration problem: what, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or other source) holding the bad setting.
    pub file: String,
    /// The dotted key path of the bad setting; empty for the whole file.
    pub key: String,
    /// Why it is rejected, and what to do where that is not obvious.
    pub reason: String,
}

impl ConfigError {
    /// An error not tied to one file, such as "no output is enabled".
    pub fn general(reason: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            key: String::new(),
            reason: reason.into(),
        }
    }

    /// The same error, with the source set when it was not known yet.
    pub fn in_file(mut self, file: &str) -> Self {
        if self.file.is_empty() {
            self.file = file.to_owned();
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.key.is_empty()) {
            (true, true) => write!(f, "{}", self.reason),
            (true, false) => write!(f, "key `{}`: {}", self.key, self.reason),
            (false, true) => write!(f, "{}: {}", self.file, self.reason),
            (false, false) => write!(f, "{}: key `{}`: {}", self.file, self.key, self.reason),
        }
    }
}

/// A switch as users write it: `true`/`false`, or the same text, which is
/// what a `${VAR}` reference expands to (Beats reads such text as a boolean
/// too). For `#[serde(deserialize_with = "...")]` on `bool` fields.
pub fn deserialize_switch<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Switch {
        Bool(bool),
        Text(String),
    }
    match <Switch as serde::Deserialize>::deserialize(deserializer)? {
        Switch::Bool(value) => Ok(value),
        Switch::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "expected true or false, found `{text}`"
            ))),
        },
    }
}

/// Reads a switch (see [`deserialize_switch`]) at `origin`.
pub fn switch_at(value: &Value, origin: &Origin) -> Result<bool, ConfigError> {
    deserialize_switch(value).map_err(|error: serde_json::Error| origin.error(error.to_string()))
}

/// Deserializes `value` into `T`, reporting the exact key of any problem
/// (unknown field, wrong type, missing field) relative to `origin`.
pub fn deserialize_at<T: DeserializeOwned>(value: &Value, origin: &Origin) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let inner_path = error.path().to_string();
        let key = if inner_path == "." {
            String::new()
        } else {
            inner_path
        };
        origin.child(key).error(error.into_inner().to_string())
    })
}

/// What [`nest_dotted_keys`] does with keys whose value is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullKeys {
    /// `key:` with no value means "unset": the key is dropped.
    Drop,
    /// Nulls are kept (`non_indexable_policy.drop: ~` selects a policy by its key).
    Keep,
}

/// The deepest a configuration may nest once its dotted keys are expanded:
/// the limit serde_yaml puts on YAML's own nesting. Without it a key of a
/// million dots would become a million-level value, and the recursive walks
/// over it (merging, cloning, dropping) would overflow the stack.
pub const MAX_CONFIG_DEPTH: usize = 128;

/// Expands dotted keys (`output.file.path: x`, `backoff.init: 1s`) into
/// nested maps, as Beats does, merging with keys already nested; recurses
/// through maps but not into lists (module entries and processors keep
/// their keys). A key that would nest past [`MAX_CONFIG_DEPTH`] is kept as
/// written: [`check_dotted_keys`] reports it clearly, and a typed config
/// refuses it as an unknown field.
pub fn nest_dotted_keys(value: Value, nulls: NullKeys) -> Value {
    nest_below(value, nulls, 0)
}

/// [`nest_dotted_keys`] for a value `depth` levels below the top.
fn nest_below(value: Value, nulls: NullKeys, depth: usize) -> Value {
    match value {
        Value::Object(map) => {
            let mut nested = serde_json::Map::new();
            for (key, item) in map {
                if item.is_null() && nulls == NullKeys::Drop {
                    continue;
                }
                let segments = key.split('.').count();
                let single = if depth + segments <= MAX_CONFIG_DEPTH {
                    let item = nest_below(item, nulls, depth + segments);
                    key.rsplit('.').fold(item, |inner, segment| {
                        let mut map = serde_json::Map::new();
                        map.insert(segment.to_owned(), inner);
                        Value::Object(map)
                    })
                } else {
                    let item = nest_below(item, nulls, depth + 1);
                    Value::Object(serde_json::Map::from_iter([(key, item)]))
                };
                if let Value::Object(single) = single {
                    deep_merge(&mut nested, &single);
                }
            }
            Value::Object(nested)
        }
        other => other,
    }
}

/// Refuses a configuration whose dotted keys would nest it deeper than
/// [`MAX_CONFIG_DEPTH`] levels, naming the key by its first characters (it
/// may be megabytes long). Walks lists too: the keys of the maps inside
/// them are nested by whoever reads them (module entries, `input.*` keys).
pub fn check_dotted_keys(value: &Value, origin: &Origin) -> Result<(), ConfigError> {
    check_below(value, origin, 0)
}

/// [`check_dotted_keys`] for a value `depth` levels below the top.
fn check_below(value: &Value, origin: &Origin, depth: usize) -> Result<(), ConfigError> {
    let map = match value {
        Value::Object(map) => map,
        Value::Array(items) => {
            for (position, item) in items.iter().enumerate() {
                check_below(item, &origin.child(position), depth + 1)?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    for (key, item) in map {
        let segments = key.split('.').count();
        if depth + segments > MAX_CONFIG_DEPTH {
            const SHOWN: usize = 60;
            let mut shown: String = key.chars().take(SHOWN).collect();
            if key.chars().nth(SHOWN).is_some() {
                shown.push('…');
            }
            return Err(origin.error(format!(
                "key `{shown}` has {segments} dotted segments: the configuration would nest \
                 deeper than {MAX_CONFIG_DEPTH} levels"
            )));
        }
        check_below(item, &origin.child(key), depth + segments)?;
    }
    Ok(())
}

/// Merges `overlay` into `base`: maps merge key by key, anything else replaces.
pub fn deep_merge(base: &mut serde_json::Map<String, Value>, overlay: &serde_json::Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => deep_merge(existing, incoming),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The raw config of one plugin, before its typed config is built.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin's registered `type` name (`httpjson`, `fingerprint`, `console`).
    pub type_name: String,
    /// The plugin's settings, as written.
    pub settings: Value,
    /// Where `settings` was written.
    pub origin: Origin,
}

impl PluginConfig {
    /// Deserializes the settings into the plugin's typed config.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        // A plugin written with no settings (`- drop_event:`) reads as null.
        if self.settings.is_null() {
            return deserialize_at(&Value::Object(Default::default()), &self.origin);
        }
        deserialize_at(&self.settings, &self.origin)
    }
}

/// What plugins may read from the agent's settings when they are built.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// `path.data`: where cursors and queues live.
    pub data_path: PathBuf,
    /// `path.config`: base for relative paths in configs.
    pub config_path: PathBuf,
    /// The pipeline this plugin belongs to (`threatintel/misp`), for logs and state.
    pub pipeline_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        path: String,
        #[serde(default)]
        rotate_every_kb: u64,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        level: u8,
    }

    #[test]
    fn switches_accept_booleans_and_their_text() {
        let origin = Origin::named("m.yml").child("enabled");
        assert!(switch_at(&json!(true), &origin).unwrap());
        assert!(!switch_at(&json!("false"), &origin).unwrap());
        assert!(switch_at(&json!(" True "), &origin).unwrap());
        let error = switch_at(&json!("yes please"), &origin).unwrap_err();
        assert_eq!(error.key, "enabled");
        assert!(
            error.reason.contains("expected true or false"),
            "{}",
            error.reason
        );
        assert!(switch_at(&json!(1), &origin).is_err());
    }

    #[test]
    fn errors_name_source_and_full_key() {
        let origin = Origin::named("/etc/threatbeat/threatbeat.yml").child("output.file");
        let error =
            deserialize_at::<Sample>(&json!({"path": "/tmp", "rotate_every_kbb": 1}), &origin).unwrap_err();
        assert_eq!(error.file, "/etc/threatbeat/threatbeat.yml");
        assert_eq!(error.key, "output.file.rotate_every_kbb");
        assert!(
            error.reason.contains("unknown field `rotate_every_kbb`"),
            "{}",
            error.reason
        );

        let error = deserialize_at::<Sample>(&json!({"path": "/tmp", "nested": {"level": "high"}}), &origin)
            .unwrap_err();
        assert_eq!(error.key, "output.file.nested.level");
        assert!(error.reason.contains("invalid type"), "{}", error.reason);
        assert_eq!(
            error.to_string(),
            format!(
                "/etc/threatbeat/threatbeat.yml: key `output.file.nested.level`: {}",
                error.reason
            )
        );
    }

    #[test]
    fn dotted_keys_nest_merge_and_stop_at_lists() {
        let raw = json!({"backoff.init": "1s", "backoff": {"max": "60s"}, "policy.drop": null,
            "processors": [{"a.b": 1}]});
        assert_eq!(
            nest_dotted_keys(raw.clone(), NullKeys::Keep),
            json!({"backoff": {"init": "1s", "max": "60s"}, "policy": {"drop": null}, "processors": [{"a.b": 1}]})
        );
        assert_eq!(
            nest_dotted_keys(raw, NullKeys::Drop),
            json!({"backoff": {"init": "1s", "max": "60s"}, "processors": [{"a.b": 1}]})
        );
    }

    #[test]
    fn null_settings_read_as_an_empty_map() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        let plugin = PluginConfig {
            type_name: "drop_event".into(),
            settings: Value::Null,
            origin: Origin::named("x"),
        };
        assert!(plugin.parse::<Empty>().is_ok());
    }
}
