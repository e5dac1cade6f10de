//! `copy_tags` (tag names from MISP-style tag lists into `tags`) and
//! `extract_tlp` (`tlp:amber` → `threat.indicator.marking.tlp`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{path_at, paths_at, write, Step, StepConfig};
use crate::values::append_values;

/// Replace the target list, or add to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Keep the tags already there and add the new ones (ti_misp's behaviour).
    #[default]
    Append,
    /// Replace the tags when at least one source list exists (Filebeat's module).
    Replace,
}

/// Letter case applied to extracted values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LetterCase {
    #[default]
    Keep,
    Upper,
    Lower,
}

impl LetterCase {
    fn apply(self, text: &str) -> String {
        match self {
            LetterCase::Keep => text.to_owned(),
            LetterCase::Upper => text.to_uppercase(),
            LetterCase::Lower => text.to_lowercase(),
        }
    }
}

/// The tag names held by `value`: a list of strings or of objects with `key`.
fn names<'a>(value: &'a Value, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    };
    items.iter().filter_map(move |item| match item {
        Value::String(name) => Some(name.as_str()),
        Value::Object(map) => map.get(key).and_then(Value::as_str),
        _ => None,
    })
}

/// Characters removed from every tag name (`strip_chars`), compiled once.
struct StripChars {
    chars: Vec<char>,
    /// The same characters as a bit set of bytes when all are ASCII (the
    /// default `"` and `\`): names are then scanned byte by byte instead of
    /// being decoded into chars. An ASCII byte is always a whole char, so
    /// the text between two of them is valid UTF-8.
    ascii: Option<u128>,
}

impl StripChars {
    fn new(text: &str) -> StripChars {
        let ascii = text
            .is_ascii()
            .then(|| text.bytes().fold(0u128, |set, byte| set | (1u128 << byte)));
        StripChars {
            chars: text.chars().collect(),
            ascii,
        }
    }

    fn is_stripped(&self, c: char) -> bool {
        self.chars.contains(&c)
    }

    /// `name` without these characters; borrowed when it holds none.
    fn strip<'a>(&self, name: &'a str) -> Cow<'a, str> {
        let Some(set) = self.ascii else {
            if !name.contains(self.chars.as_slice()) {
                return Cow::Borrowed(name);
            }
            return Cow::Owned(name.chars().filter(|c| !self.is_stripped(*c)).collect());
        };
        let mut kept: Option<String> = None;
        let mut start = 0;
        for (index, byte) in name.bytes().enumerate() {
            if byte < 128 && set & (1u128 << byte) != 0 {
                // Sized once: pushing char by char reallocates as it grows.
                let buffer = kept.get_or_insert_with(|| String::with_capacity(name.len()));
                buffer.push_str(&name[start..index]);
                start = index + 1;
            }
        }
        match kept {
            None => Cow::Borrowed(name),
            Some(mut buffer) => {
                buffer.push_str(&name[start..]);
                Cow::Owned(buffer)
            }
        }
    }

    /// Whether `name`, once stripped, starts with `prefix`; decided without
    /// building the stripped name, usually at the first char.
    fn stripped_starts_with(&self, name: &str, prefix: &str) -> bool {
        let mut kept = name.chars().filter(|c| !self.is_stripped(*c));
        prefix.chars().all(|expected| kept.next() == Some(expected))
    }
}

/// How many names `value` can hold at most (see [`names`]).
fn name_capacity(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.len(),
        _ => 1,
    }
}

/// `copy_tags` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyTagsConfig {
    fields: Vec<String>,
    #[serde(default = "default_tags_target")]
    target_field: String,
    #[serde(default = "default_name_key")]
    name_key: String,
    #[serde(default)]
    mode: Mode,
    /// Characters removed from every name; Elastic strips `"` and `\`.
    #[serde(default = "default_strip")]
    strip_chars: String,
}

fn default_tags_target() -> String {
    "tags".to_owned()
}

fn default_name_key() -> String {
    "name".to_owned()
}

fn default_strip() -> String {
    "\"\\".to_owned()
}

pub(crate) struct CopyTags {
    fields: Vec<FieldPath>,
    target: FieldPath,
    name_key: String,
    mode: Mode,
    strip_chars: StripChars,
}

impl StepConfig for CopyTagsConfig {
    const NAME: &'static str = "copy_tags";
    type Step = CopyTags;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<CopyTags, ConfigError> {
        let fields = paths_at(&self.fields, &origin.child("fields"))?;
        if fields.is_empty() {
            return Err(origin
                .child("fields")
                .error("list at least one field holding tags"));
        }
        Ok(CopyTags {
            fields,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            name_key: self.name_key,
            mode: self.mode,
            strip_chars: StripChars::new(&self.strip_chars),
        })
    }
}

impl Step for CopyTags {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut found = false;
        let mut collected: Vec<Value> = Vec::new();
        for field in &self.fields {
            let Some(value) = event.get(field).filter(|value| !value.is_null()) else {
                continue;
            };
            found = true;
            collected.reserve(name_capacity(value));
            for name in names(value, &self.name_key) {
                let cleaned = self.strip_chars.strip(name);
                if !collected.iter().any(|seen| seen.as_str() == Some(&*cleaned)) {
                    collected.push(Value::String(cleaned.into_owned()));
                }
            }
        }
        match self.mode {
            Mode::Replace if found => write(event, &self.target, Value::Array(collected))?,
            Mode::Replace => {}
            Mode::Append if collected.is_empty() => {}
            Mode::Append => append_values(event, &self.target, collected, false)?,
        }
        Ok(ProcessOutcome::Keep)
    }
}

/// `extract_tlp` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtractTlpConfig {
    field: String,
    #[serde(default = "default_tlp_target")]
    target_field: String,
    #[serde(default = "default_name_key")]
    name_key: String,
    #[serde(default = "default_tlp_prefix")]
    prefix: String,
    #[serde(default)]
    case: LetterCase,
    /// Characters removed from every name before matching, as `copy_tags` does.
    #[serde(default = "default_strip")]
    strip_chars: String,
}

fn default_tlp_target() -> String {
    "threat.indicator.marking.tlp".to_owned()
}

fn default_tlp_prefix() -> String {
    "tlp:".to_owned()
}

pub(crate) struct ExtractTlp {
    field: FieldPath,
    target: FieldPath,
    name_key: String,
    prefix: String,
    case: LetterCase,
    strip_chars: StripChars,
}

impl StepConfig for ExtractTlpConfig {
    const NAME: &'static str = "extract_tlp";
    type Step = ExtractTlp;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<ExtractTlp, ConfigError> {
        if self.prefix.is_empty() {
            return Err(origin.child("prefix").error("the prefix must not be empty"));
        }
        Ok(ExtractTlp {
            field: path_at(&self.field, &origin.child("field"))?,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            name_key: self.name_key,
            prefix: self.prefix,
            case: self.case,
            strip_chars: StripChars::new(&self.strip_chars),
        })
    }
}

impl Step for ExtractTlp {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        // No source list: nothing is written. A list without TLP tags gives
        // an empty list, as Elastic's module does.
        let Some(value) = event.get(&self.field).filter(|value| !value.is_null()) else {
            return Ok(ProcessOutcome::Keep);
        };
        let mut levels: Vec<Value> = Vec::new();
        for name in names(value, &self.name_key) {
            // Most tags are not TLP markings: reject them before stripping.
            if !self.strip_chars.stripped_starts_with(name, &self.prefix) {
                continue;
            }
            let cleaned = self.strip_chars.strip(name);
            if let Some(level) = cleaned.strip_prefix(self.prefix.as_str()) {
                let level = Value::String(self.case.apply(level));
                if !levels.contains(&level) {
                    levels.push(level);
                }
            }
        }
        write(event, &self.target, Value::Array(levels))?;
        Ok(ProcessOutcome::Keep)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn copies_names_strips_quotes_and_deduplicates() {
        let c = chain(json!([{"copy_tags": {"fields": ["event_tags", "attribute_tags"]}}]));
        let out = run(
            &c,
            json!({"tags": ["forwarded"],
                   "event_tags": [{"name": "misp-galaxy:ransomware=\"Dharma Ransomware\""}, {"name": "tlp:white"}],
                   "attribute_tags": [{"name": "tlp:white"}, {"name": "a\\b"}]}),
        );
        assert_eq!(
            out["tags"],
            json!([
                "forwarded",
                "misp-galaxy:ransomware=Dharma Ransomware",
                "tlp:white",
                "ab"
            ])
        );
    }

    #[test]
    fn replace_mode_only_when_a_source_exists() {
        let c = chain(json!([{"copy_tags": {"fields": ["t"], "mode": "replace"}}]));
        assert_eq!(
            run(&c, json!({"tags": ["x"], "t": [{"name": "y"}]}))["tags"],
            json!(["y"])
        );
        assert_eq!(run(&c, json!({"tags": ["x"]}))["tags"], json!(["x"]));
    }

    #[test]
    fn stripping_borrows_names_without_the_characters() {
        for strip in [super::StripChars::new("\"\\"), super::StripChars::new("\"\\é")] {
            assert!(matches!(
                strip.strip("tlp:white"),
                std::borrow::Cow::Borrowed("tlp:white")
            ));
            assert_eq!(strip.strip("a=\"b\\c\""), "a=bc");
            assert!(strip.stripped_starts_with("\"tlp\":amber", "tlp:"));
            assert!(strip.stripped_starts_with("tlp:amber", "tlp:"));
            assert!(!strip.stripped_starts_with("tl", "tlp:"));
            assert!(!strip.stripped_starts_with("type:OSINT", "tlp:"));
        }
        let accents = super::StripChars::new("é");
        assert_eq!(accents.strip("café crémé"), "caf crm");
    }

    #[test]
    fn tlp_levels() {
        let c = chain(json!([{"extract_tlp": {"field": "t"}}]));
        let out = run(
            &c,
            json!({"t": [{"name": "tlp:amber"}, {"name": "type:OSINT"}, {"name": "tlp:amber"}]}),
        );
        assert_eq!(out["threat"]["indicator"]["marking"]["tlp"], json!(["amber"]));
        assert_eq!(
            run(&c, json!({"t": [{"name": "x"}]}))["threat"]["indicator"]["marking"]["tlp"],
            json!([])
        );
        assert!(run(&c, json!({})).get("threat").is_none());
        let upper = chain(json!([{"extract_tlp": {"field": "t", "case": "upper", "target_field": "m"}}]));
        assert_eq!(run(&upper, json!({"t": ["tlp:green"]}))["m"], json!(["GREEN"]));
    }
}
