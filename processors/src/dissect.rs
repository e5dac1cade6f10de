//! `dissect`: splits a string into fields with a tokenizer of literal
//! delimiters and `%{key}` captures, as Beats' processor of the same name.
//! Used for STIX patterns (`[%{type}:value = '%{value}']`) and free-text
//! descriptions (`%{}Source: %{provider}`) where a regular expression would be
//! overkill and a fixed layout is documented by the vendor.

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, write, KEEP};

/// How captured values are trimmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Trim {
    /// Kept as captured (default).
    #[default]
    None,
    /// Leading `trim_chars` removed.
    Left,
    /// Trailing `trim_chars` removed.
    Right,
    /// Both.
    All,
}

/// `dissect` settings (Beats names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DissectConfig {
    /// `literal%{key}literal%{key}…`.
    tokenizer: String,
    /// The string field to split. Default `message`.
    #[serde(default = "default_field")]
    field: String,
    /// Where keys are written: `<prefix>.<key>`; `""` writes at the root. Default `dissect`.
    #[serde(default = "default_prefix")]
    target_prefix: String,
    /// A missing source field is not a failure.
    #[serde(default)]
    ignore_missing: bool,
    /// Existing target fields are replaced (otherwise that is a failure).
    #[serde(default)]
    overwrite_keys: bool,
    /// Trimming of captured values.
    #[serde(default)]
    trim_values: Trim,
    /// The characters trimmed. Default a space.
    #[serde(default = "default_trim_chars")]
    trim_chars: String,
}

fn default_field() -> String {
    "message".to_owned()
}
fn default_prefix() -> String {
    "dissect".to_owned()
}
fn default_trim_chars() -> String {
    " ".to_owned()
}

/// One capture of the tokenizer.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    /// Where the value goes; `None` for `%{}` and `%{?name}` (matched, not kept).
    target: Option<FieldPath>,
    /// The delimiter that ends the capture (`None`: the rest of the string).
    delimiter: Option<String>,
    /// `%{key->}`: repeated delimiters after the value are skipped (padding).
    skip_repeated: bool,
}

/// The compiled processor.
pub(crate) struct Dissect {
    field: FieldPath,
    leading: String,
    keys: Vec<Key>,
    ignore_missing: bool,
    overwrite_keys: bool,
    trim: Trim,
    trim_chars: Vec<char>,
}

/// Splits a tokenizer into its leading literal and keys with their delimiters.
fn parse_tokenizer(tokenizer: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut leading = None;
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut rest = tokenizer;
    loop {
        let Some(start) = rest.find("%{") else {
            match keys.last_mut() {
                Some(last) => last.1.push_str(rest),
                None => return Err("the tokenizer has no `%{key}`".to_owned()),
            }
            break;
        };
        let literal = &rest[..start];
        match keys.last_mut() {
            Some(last) => {
                if literal.is_empty() {
                    return Err(format!(
                        "`%{{{}}}` is followed directly by another key: a delimiter must separate them",
                        last.0
                    ));
                }
                last.1.push_str(literal);
            }
            None => leading = Some(literal.to_owned()),
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a `%{` is not closed by `}`".to_owned())?;
        keys.push((after[..end].to_owned(), String::new()));
        rest = &after[end + 1..];
    }
    Ok((leading.unwrap_or_default(), keys))
}

impl crate::common::StepConfig for DissectConfig {
    const NAME: &'static str = "dissect";
    type Step = Dissect;

    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Dissect, ConfigError> {
        let tokenizer_origin = origin.child("tokenizer");
        let (leading, raw_keys) =
            parse_tokenizer(&self.tokenizer).map_err(|reason| tokenizer_origin.error(reason))?;
        let mut keys = Vec::new();
        for (name, delimiter) in raw_keys {
            let (name, skip_repeated) = match name.strip_suffix("->") {
                Some(name) => (name.to_owned(), true),
                None => (name, false),
            };
            if name.starts_with(['+', '*', '&']) {
                return Err(tokenizer_origin.error(format!(
                    "`%{{{name}}}`: append and reference modifiers are not supported"
                )));
            }
            let target = if name.is_empty() || name.starts_with('?') {
                None
            } else {
                let full = if self.target_prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{}.{name}", self.target_prefix)
                };
                Some(path_at(&full, &tokenizer_origin)?)
            };
            keys.push(Key {
                target,
                delimiter: (!delimiter.is_empty()).then_some(delimiter),
                skip_repeated,
            });
        }
        Ok(Dissect {
            field: path_at(&self.field, &origin.child("field"))?,
            leading,
            keys,
            ignore_missing: self.ignore_missing,
            overwrite_keys: self.overwrite_keys,
            trim: self.trim_values,
            trim_chars: self.trim_chars.chars().collect(),
        })
    }
}

impl Dissect {
    /// The captured values, in tokenizer order (`None` for skipped keys).
    /// Delimiters are found left to right, each at its first occurrence;
    /// text after a final delimiter is ignored.
    fn split<'a>(&self, text: &'a str) -> Option<Vec<(&Key, &'a str)>> {
        let mut rest = text.strip_prefix(self.leading.as_str())?;
        let mut values = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            match &key.delimiter {
                Some(delimiter) => {
                    let position = rest.find(delimiter.as_str())?;
                    values.push((key, &rest[..position]));
                    rest = &rest[position + delimiter.len()..];
                    if key.skip_repeated {
                        while let Some(after) = rest.strip_prefix(delimiter.as_str()) {
                            rest = after;
                        }
                    }
                }
                None => {
                    values.push((key, rest));
                    rest = "";
                }
            }
        }
        Some(values)
    }

    fn trimmed<'a>(&self, value: &'a str) -> &'a str {
        let chars = self.trim_chars.as_slice();
        match self.trim {
            Trim::None => value,
            Trim::Left => value.trim_start_matches(chars),
            Trim::Right => value.trim_end_matches(chars),
            Trim::All => value.trim_matches(chars),
        }
    }
}

impl crate::common::Step for Dissect {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let text = match event.get(&self.field) {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) if self.ignore_missing => return KEEP,
            None | Some(Value::Null) => return Err(missing(&self.field)),
            Some(_) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] is not a string",
                    self.field
                )))
            }
        };
        let values = self.split(&text).ok_or_else(|| {
            ProcessorError::new(format!(
                "could not find the tokenizer's delimiters in [{}]",
                self.field
            ))
        })?;
        // Check every target before writing any, so a failure leaves the event as it was.
        let mut writes = Map::new();
        for (key, value) in values {
            let Some(target) = &key.target else { continue };
            if !self.overwrite_keys && event.get(target).is_some() {
                return Err(ProcessorError::new(format!(
                    "field [{target}] already exists (set overwrite_keys to replace it)"
                )));
            }
            writes.insert(target.to_string(), Value::String(self.trimmed(value).to_owned()));
        }
        for (target, value) in writes {
            let path = FieldPath::parse(&target).map_err(|error| ProcessorError::new(error.to_string()))?;
            write(event, &path, value)?;
        }
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{build_error, chain, run};
    use serde_json::json;

    #[test]
    fn stix_patterns_and_descriptions() {
        let c = chain(json!([
            {"dissect": {"field": "pattern", "tokenizer": "[%{type}:value = '%{value}']", "target_prefix": "_tmp"}},
            {"dissect": {"field": "description", "tokenizer": "%{}Source: %{provider}", "target_prefix": "", "ignore_missing": true}},
        ]));
        let out = run(
            &c,
            json!({"pattern": "[ipv4-addr:value = '198.51.100.7']", "description": "iType: mal_ip; Source: CyberCrime"}),
        );
        assert_eq!(out["_tmp"], json!({"type": "ipv4-addr", "value": "198.51.100.7"}));
        assert_eq!(out["provider"], json!("CyberCrime"));
        // Like the grok it replaces: the first `']` ends the value, the rest of a compound pattern is ignored.
        let out = run(
            &c,
            json!({"pattern": "[url:value = 'http://a.example/x'] OR [url:value = 'http://b.example/']"}),
        );
        assert_eq!(out["_tmp"]["value"], json!("http://a.example/x"));
    }

    #[test]
    fn failures_leave_the_event_alone() {
        let c =
            chain(json!([{"dissect": {"field": "pattern", "tokenizer": "[%{type}:value = '%{value}']"}}]));
        let out = run(&c, json!({"pattern": "[file:hashes.MD5 = 'abc']"}));
        assert!(out.get("dissect").is_none());
        assert!(out["error"]["message"].as_str().unwrap().contains("delimiters"));
        let out = run(&c, json!({}));
        assert_eq!(
            out["error"]["message"],
            json!("dissect: field [pattern] not present")
        );
        let out = run(
            &c,
            json!({"pattern": "[a:value = 'b']", "dissect": {"type": "x"}}),
        );
        assert!(out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists"));
    }

    #[test]
    fn skips_padding_and_trims() {
        let c = chain(json!([{"dissect": {
            "tokenizer": "%{?ts} %{level->} %{msg}", "trim_values": "all", "trim_chars": " .",
        }}]));
        let out = run(&c, json!({"message": "12:00 WARN    disk full."}));
        assert_eq!(out["dissect"], json!({"level": "WARN", "msg": "disk full"}));
    }

    #[test]
    fn bad_tokenizers_are_config_errors() {
        let error = build_error(json!([{"dissect": {"tokenizer": "%{a}%{b}"}}]));
        assert_eq!(error.key, "processors.0.dissect.tokenizer");
        assert!(build_error(json!([{"dissect": {"tokenizer": "plain"}}]))
            .reason
            .contains("no `%{key}`"));
        assert!(build_error(json!([{"dissect": {"tokenizer": "%{a"}}]))
            .reason
            .contains("not closed"));
        assert!(build_error(json!([{"dissect": {"tokenizer": "%{+a} %{b}"}}]))
            .reason
            .contains("not supported"));
    }
}
