//! `${VAR}` / `${VAR:default}` expansion inside YAML string values (never keys).
//!
//! `$${` writes a literal `${`. References to the agent's own paths
//! (`${path.config}`, `${path.home}`, `${path.data}`, `${path.logs}`) are
//! left in place and filled once the paths are known.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use threatbeat_core::{ConfigError, Origin};

/// Expands environment references inside string values.
pub struct Expander<'a> {
    env: &'a BTreeMap<String, String>,
    /// Values that came from variables whose name looks secret
    /// (`MISP_API_KEY`), redacted wherever the config is printed.
    pub secrets: Vec<String>,
    /// Unset variables without a default expand to nothing instead of failing
    /// (the first pass of loading, which only needs the paths to find the keystore).
    lenient: bool,
    /// The keystore consulted, named when a variable is found nowhere
    /// (`--path.data` moves it).
    keystore: Option<String>,
}

impl<'a> Expander<'a> {
    /// An expander reading `env`.
    pub fn new(env: &'a BTreeMap<String, String>) -> Self {
        Self {
            env,
            secrets: Vec::new(),
            lenient: false,
            keystore: None,
        }
    }

    /// The same expander, naming `path` as the keystore it reads in errors.
    pub fn naming_keystore(mut self, path: &std::path::Path) -> Self {
        self.keystore = Some(path.display().to_string());
        self
    }

    /// An expander that expands unset variables without a default to nothing.
    pub fn lenient(env: &'a BTreeMap<String, String>) -> Self {
        Self {
            lenient: true,
            ..Self::new(env)
        }
    }

    /// Expands every string inside `value`; errors name `origin` plus the key.
    pub fn expand(&mut self, value: &mut Value, origin: &Origin) -> Result<(), ConfigError> {
        match value {
            Value::String(text) if text.contains('$') => {
                *text = self.expand_text(text, origin)?;
            }
            Value::Array(items) => {
                for (position, item) in items.iter_mut().enumerate() {
                    self.expand(item, &origin.child(position))?;
                }
            }
            Value::Object(map) => self.expand_map(map, origin)?,
            _ => {}
        }
        Ok(())
    }

    fn expand_map(&mut self, map: &mut Map<String, Value>, origin: &Origin) -> Result<(), ConfigError> {
        for (key, item) in map.iter_mut() {
            self.expand(item, &origin.child(key))?;
        }
        Ok(())
    }

    /// Expands the references in one string.
    pub fn expand_text(&mut self, text: &str, origin: &Origin) -> Result<String, ConfigError> {
        let mut output = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(position) = rest.find('$') {
            output.push_str(&rest[..position]);
            let after = &rest[position..];
            if let Some(escaped) = after.strip_prefix("$${") {
                output.push_str("${");
                rest = escaped;
                continue;
            }
            let Some(reference) = after.strip_prefix("${") else {
                output.push('$');
                rest = &after[1..];
                continue;
            };
            let Some(end) = closing_brace(reference) else {
                return Err(origin.error(format!(
                    "unterminated `${{` in `{text}`; close it with `}}` or write `$${{` for a literal `${{`"
                )));
            };
            let (name, default) = match reference[..end].split_once(':') {
                Some((name, default)) => (name.trim(), Some(default)),
                None => (reference[..end].trim(), None),
            };
            rest = &reference[end + 1..];
            if is_path_reference(name) {
                output.push_str("${");
                output.push_str(name);
                output.push('}');
                continue;
            }
            if name.is_empty() {
                return Err(origin.error(format!("empty variable name in `{text}`")));
            }
            let resolved = match (self.env.get(name), default) {
                (Some(value), _) => value.clone(),
                // A default may itself hold references (go-ucfg's rule, so
                // `${MISP_URL:https://${MISP_HOST:localhost}}` reads as in Filebeat).
                (None, Some(default)) if default.contains('$') => self.expand_text(default, origin)?,
                (None, Some(default)) => default.to_owned(),
                (None, None) if self.lenient => String::new(),
                (None, None) => {
                    let keystore = match &self.keystore {
                        Some(path) => format!("the keystore {path}"),
                        None => "the keystore".to_owned(),
                    };
                    return Err(origin.error(format!(
                        "`{name}` is not set (neither in {keystore} nor in the environment) and `${{{name}}}` has no default; \
                         set it, add it with `threatbeat keystore add {name}`, or write `${{{name}:default}}`"
                    )));
                }
            };
            if looks_secret(name) && !resolved.is_empty() {
                self.secrets.push(resolved.clone());
            }
            output.push_str(&resolved);
        }
        output.push_str(rest);
        Ok(output)
    }
}

/// The position of the `}` closing a reference whose `${` was just read,
/// skipping the references nested in its default.
fn closing_brace(reference: &str) -> Option<usize> {
    let bytes = reference.as_bytes();
    let mut depth = 0usize;
    let mut position = 0;
    while position < bytes.len() {
        match bytes[position] {
            b'$' if bytes.get(position + 1) == Some(&b'{') => {
                depth += 1;
                position += 1;
            }
            b'}' if depth == 0 => return Some(position),
            b'}' => depth -= 1,
            _ => {}
        }
        position += 1;
    }
    None
}

/// Whether `name` is one of the agent's path settings.
pub fn is_path_reference(name: &str) -> bool {
    matches!(name, "path.home" | "path.config" | "path.data" | "path.logs")
}

/// Whether a key or variable name holds a secret: `*password*`, `*api_key*`,
/// `*api_token*`, `*secret*`, `*token*` (any case, `-` read as `_`).
pub fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    ["password", "api_key", "apikey", "api_token", "secret", "token"]
        .iter()
        .any(|marker| name.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> BTreeMap<String, String> {
        [
            ("MISP_HOST", "misp.local"),
            ("MISP_API_KEY", "k3y"),
            ("EMPTY", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn expands_set_default_escape_and_paths() {
        let env = env();
        let mut expander = Expander::new(&env);
        let mut value = json!({
            "url": "https://${MISP_HOST}/events",
            "port": "${MISP_PORT:443}",
            "empty_default": "${NOPE:}",
            "empty": "${EMPTY:fallback}",
            "literal": "cost $5 and $${HOME}",
            "path": "${path.config}/modules.d/*.yml",
            "list": ["${MISP_API_KEY}"],
            "${MISP_HOST}": "keys are never expanded"
        });
        expander.expand(&mut value, &Origin::named("t.yml")).unwrap();
        assert_eq!(
            value,
            json!({
                "url": "https://misp.local/events",
                "port": "443",
                "empty_default": "",
                "empty": "",
                "literal": "cost $5 and ${HOME}",
                "path": "${path.config}/modules.d/*.yml",
                "list": ["k3y"],
                "${MISP_HOST}": "keys are never expanded"
            })
        );
        assert_eq!(expander.secrets, vec!["k3y".to_owned()]);
    }

    #[test]
    fn unset_without_default_names_file_and_key() {
        let env = env();
        let mut value = json!({"output": {"elasticsearch": {"hosts": ["${ES_HOST}"]}}});
        let error = Expander::new(&env)
            .expand(&mut value, &Origin::named("/etc/threatbeat/threatbeat.yml"))
            .unwrap_err();
        assert_eq!(error.file, "/etc/threatbeat/threatbeat.yml");
        assert_eq!(error.key, "output.elasticsearch.hosts.0");
        assert!(error.reason.contains("`ES_HOST` is not set"), "{}", error.reason);

        let error = Expander::new(&env)
            .expand(&mut json!({"a": "${OPEN"}), &Origin::named("x"))
            .unwrap_err();
        assert!(error.reason.contains("unterminated"), "{}", error.reason);
    }

    #[test]
    fn a_default_may_hold_references() {
        let env = env();
        let mut value = json!({
            "host_only": "${MISP_URL:https://${MISP_HOST:localhost}}/events",
            "neither": "${MISP_URL:https://${NOPE:localhost}}/events",
            "deeper": "${A:${B:${MISP_HOST}}}!",
            "unset_inside": "${A:${NOPE}}"
        });
        let error = Expander::new(&env)
            .expand(&mut value, &Origin::named("t.yml"))
            .unwrap_err();
        assert_eq!(error.key, "unset_inside");
        assert!(error.reason.contains("`NOPE` is not set"), "{}", error.reason);
        value.as_object_mut().unwrap().remove("unset_inside");
        Expander::new(&env)
            .expand(&mut value, &Origin::named("t.yml"))
            .unwrap();
        assert_eq!(
            value,
            json!({
                "host_only": "https://misp.local/events",
                "neither": "https://localhost/events",
                "deeper": "misp.local!"
            })
        );
        let mut set = BTreeMap::new();
        set.insert("MISP_URL".to_owned(), "http://lab:8080".to_owned());
        let mut value = json!("${MISP_URL:https://${MISP_HOST}}/events");
        Expander::new(&set)
            .expand(&mut value, &Origin::named("t.yml"))
            .unwrap();
        assert_eq!(
            value,
            json!("http://lab:8080/events"),
            "a set variable never reads its default"
        );
        let error = Expander::new(&env)
            .expand(&mut json!({"a": "${A:${B:x}"}), &Origin::named("x"))
            .unwrap_err();
        assert!(error.reason.contains("unterminated"), "{}", error.reason);
    }

    #[test]
    fn secret_names() {
        for name in [
            "api_key",
            "MISP_API_KEY",
            "password",
            "es-api-token",
            "client_secret",
            "token",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["url", "hosts", "username", "keyword"] {
            assert!(!looks_secret(name), "{name}");
        }
    }
}
