//! `split_list`: a delimited string into a list of strings, Elasticsearch's
//! ingest `split` processor (ours, `split`, splits into fixed targets).
//!
//! Elasticsearch semantics are kept where the goldens see them: trailing
//! empty parts are removed (Java's `String.split`), other empty parts are
//! kept (`""` gives `[""]`); `drop_empty` removes them all, and then a field
//! left with no part is removed. A separator preceded by `escape` does not
//! split (Anomali's `(?<!\\),`), and the escape stays in the part, as
//! Elasticsearch's regex split leaves it. A value that is already a list is
//! left as it is (a record that was split upstream).

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, write, Step, StepConfig, KEEP};

/// `split_list` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitListConfig {
    field: String,
    /// Default: `field` itself.
    #[serde(default)]
    target_field: Option<String>,
    /// A literal separator (not a regex). Default `,`.
    #[serde(default = "default_separator")]
    separator: String,
    /// A character that, right before the separator, keeps it from splitting.
    #[serde(default)]
    escape: Option<char>,
    /// Keep trailing empty parts (Elasticsearch's `preserve_trailing`).
    #[serde(default)]
    preserve_trailing: bool,
    /// Remove every empty part; a field left empty is removed.
    #[serde(default)]
    drop_empty: bool,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_separator() -> String {
    ",".to_owned()
}

pub(crate) struct SplitList {
    field: FieldPath,
    target: FieldPath,
    separator: String,
    escape: Option<char>,
    preserve_trailing: bool,
    drop_empty: bool,
    ignore_missing: bool,
}

impl StepConfig for SplitListConfig {
    const NAME: &'static str = "split_list";
    type Step = SplitList;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<SplitList, ConfigError> {
        if self.separator.is_empty() {
            return Err(origin.child("separator").error("the separator must not be empty"));
        }
        let field = path_at(&self.field, &origin.child("field"))?;
        let target = match &self.target_field {
            Some(target) => path_at(target, &origin.child("target_field"))?,
            None => field.clone(),
        };
        Ok(SplitList {
            field,
            target,
            separator: self.separator,
            escape: self.escape,
            preserve_trailing: self.preserve_trailing,
            drop_empty: self.drop_empty,
            ignore_missing: self.ignore_missing,
        })
    }
}

impl SplitList {
    fn parts(&self, text: &str) -> Vec<Value> {
        let mut parts: Vec<&str> = Vec::new();
        let mut start = 0;
        let mut search = 0;
        while let Some(found) = text[search..].find(&self.separator) {
            let at = search + found;
            let escaped = self.escape.is_some_and(|escape| text[..at].ends_with(escape));
            if !escaped {
                parts.push(&text[start..at]);
                start = at + self.separator.len();
            }
            search = at + self.separator.len();
        }
        parts.push(&text[start..]);
        if self.drop_empty {
            parts.retain(|part| !part.is_empty());
        } else if !self.preserve_trailing {
            // Java's split: trailing empties go, but a lone "" stays [""].
            while parts.len() > 1 && parts.last().is_some_and(|part| part.is_empty()) {
                parts.pop();
            }
            if parts.len() == 1 && parts[0].is_empty() && !text.is_empty() {
                parts.clear();
            }
        }
        parts
            .into_iter()
            .map(|part| Value::String(part.to_owned()))
            .collect()
    }
}

impl Step for SplitList {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let parts = match event.get(&self.field) {
            Some(Value::String(text)) => self.parts(text),
            Some(Value::Array(_)) => return KEEP,
            Some(other) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] holds a {}, not a string",
                    self.field,
                    threatbeat_core::path::json_kind(other)
                )))
            }
            None if self.ignore_missing => return KEEP,
            None => return Err(missing(&self.field)),
        };
        if parts.is_empty() && self.drop_empty {
            event.remove(&self.field);
            return KEEP;
        }
        write(event, &self.target, Value::Array(parts))?;
        KEEP
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn splits_as_elasticsearch_does() {
        let plain = chain(json!([{"split_list": {"field": "a", "ignore_missing": true}}]));
        assert_eq!(
            run(&plain, json!({"a": "x,y,,z"})),
            json!({"a": ["x", "y", "", "z"]})
        );
        assert_eq!(run(&plain, json!({"a": ",x,"})), json!({"a": ["", "x"]}));
        assert_eq!(run(&plain, json!({"a": ""})), json!({"a": [""]}));
        assert_eq!(run(&plain, json!({"a": ["kept"]})), json!({"a": ["kept"]}));
        assert_eq!(run(&plain, json!({"b": 1})), json!({"b": 1}));

        let circles = chain(json!([{"split_list": {"field": "a", "drop_empty": true}}]));
        assert_eq!(
            run(&circles, json!({"a": ",123,,9,"})),
            json!({"a": ["123", "9"]})
        );
        assert_eq!(run(&circles, json!({"a": ","})), json!({}));

        let escaped = chain(json!([{"split_list": {"field": "a", "target_field": "t", "escape": "\\"}}]));
        assert_eq!(
            run(&escaped, json!({"a": "x\\,y,z"})),
            json!({"a": "x\\,y,z", "t": ["x\\,y", "z"]})
        );
    }
}
