//! Beats format strings: `%{[field.path]}` inside a string value is replaced
//! by the field's value at run time (`https://misp/events/view/%{[misp.id]}`).
//! A string that is exactly one reference keeps the field's type.

use serde_json::Value;
use threatbeat_core::{ConfigError, Event, FieldPath, Origin, ProcessorError};

use crate::common::{missing, path_at};

/// A compiled format string.
#[derive(Debug, Clone)]
pub(crate) struct FormatString {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Field(FieldPath),
}

impl FormatString {
    /// Compiles `text`; `None` when it holds no `%{[...]}` reference.
    pub(crate) fn parse(text: &str, origin: &Origin) -> Result<Option<FormatString>, ConfigError> {
        if !text.contains("%{[") {
            return Ok(None);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{[") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 3..];
            let end = after.find("]}").ok_or_else(|| {
                origin.error(format!(
                    "unclosed field reference in `{text}`; write `%{{[field]}}`"
                ))
            })?;
            parts.push(Part::Field(path_at(&after[..end], origin)?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Some(FormatString { parts }))
    }

    /// The rendered value; a missing field is an error.
    pub(crate) fn render(&self, event: &Event) -> Result<Value, ProcessorError> {
        if let [Part::Field(path)] = self.parts.as_slice() {
            return event.get(path).cloned().ok_or_else(|| missing(path));
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => match event.get(path) {
                    Some(Value::String(text)) => out.push_str(text),
                    Some(Value::Null) | None => return Err(missing(path)),
                    Some(other) => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }
}
