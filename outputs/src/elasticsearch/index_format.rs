//! Index names templated per event, as in Beats: `%{[field.path]}` (with an
//! optional default, `%{[field]:fallback}`) and `%{+yyyy.MM.dd}` (a date
//! from the event's `@timestamp`, UTC; the current time when it has none).

use chrono::{DateTime, Utc};
use serde_json::Value;
use threatbeat_core::{EncodedEvent, Event, FieldPath};

/// A parsed index format.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexFormat {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Field {
        path: FieldPath,
        default: Option<String>,
    },
    Date(String),
}

impl IndexFormat {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{text}`: `%{{` without a closing `}}`"))?;
            let inner = &after[..end];
            if let Some(pattern) = inner.strip_prefix('+') {
                if pattern.is_empty() {
                    return Err(format!("`{text}`: empty date pattern in `%{{+}}`"));
                }
                parts.push(Part::Date(joda_to_strftime(pattern)));
            } else if let Some(field) = inner.strip_prefix('[') {
                let (field, default) = match field.split_once("]:") {
                    Some((field, default)) => (field, Some(default.to_owned())),
                    None => (
                        field
                            .strip_suffix(']')
                            .ok_or_else(|| format!("`{text}`: write fields as `%{{[field.path]}}`"))?,
                        None,
                    ),
                };
                let path = FieldPath::parse(field).map_err(|error| format!("`{text}`: {error}"))?;
                parts.push(Part::Field { path, default });
            } else {
                return Err(format!(
                    "`{text}`: `%{{{inner}}}` is neither a field `%{{[field]}}` nor a date `%{{+yyyy.MM.dd}}`"
                ));
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The literal text before the first placeholder (`threatbeat-` for
    /// `threatbeat-%{+yyyy.MM.dd}`), used to build index patterns.
    pub fn static_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(text)) => text,
            _ => "",
        }
    }

    /// Whether the name is the same for every event.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|part| matches!(part, Part::Literal(_)))
    }

    /// The index for `event`, lower-cased (Elasticsearch refuses upper case).
    pub fn render(&self, event: &Event) -> Result<String, String> {
        let mut name = String::new();
        let mut timestamp: Option<DateTime<Utc>> = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Field { path, default } => match event.get(path) {
                    Some(Value::String(text)) => name.push_str(text),
                    Some(Value::Number(number)) => name.push_str(&number.to_string()),
                    Some(Value::Bool(flag)) => name.push_str(if *flag { "true" } else { "false" }),
                    _ => match default {
                        Some(default) => name.push_str(default),
                        None => {
                            return Err(format!(
                                "the index format needs field `{path}`, which the event lacks"
                            ))
                        }
                    },
                },
                Part::Date(pattern) => {
                    let time = *timestamp.get_or_insert_with(|| event_time(event));
                    name.push_str(&time.format(pattern).to_string());
                }
            }
        }
        Ok(name.to_lowercase())
    }

    /// The index for an already serialised event. A name with placeholders
    /// needs the document's fields, so only then is the document parsed.
    pub fn render_encoded(&self, event: &EncodedEvent) -> Result<String, String> {
        if self.is_static() {
            return self.render(&Event::default());
        }
        let tree = event.decode().map_err(|error| error.to_string())?;
        self.render(&tree)
    }
}

fn event_time(event: &Event) -> DateTime<Utc> {
    event
        .fields
        .get("@timestamp")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// `yyyy.MM.dd` → `%Y.%m.%d` (the Joda tokens Beats users write).
fn joda_to_strftime(pattern: &str) -> String {
    const TOKENS: [(&str, &str); 8] = [
        ("yyyy", "%Y"),
        ("yy", "%y"),
        ("MM", "%m"),
        ("dd", "%d"),
        ("HH", "%H"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("%", "%%"),
    ];
    let mut out = String::new();
    let mut rest = pattern;
    'outer: while !rest.is_empty() {
        for (token, replacement) in TOKENS {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(replacement);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        Event::from_value(value)
    }

    #[test]
    fn dates_come_from_the_event_timestamp() {
        let format = IndexFormat::parse("threatbeat-%{+yyyy.MM.dd}").unwrap();
        assert_eq!(format.static_prefix(), "threatbeat-");
        let rendered = format
            .render(&event(json!({"@timestamp": "2021-03-04T05:06:07Z"})))
            .unwrap();
        assert_eq!(rendered, "threatbeat-2021.03.04");
    }

    #[test]
    fn fields_and_defaults() {
        let format =
            IndexFormat::parse("logs-%{[event.dataset]}-%{[data_stream.namespace]:default}").unwrap();
        let rendered = format
            .render(&event(json!({"event": {"dataset": "TI_misp.threat"}})))
            .unwrap();
        assert_eq!(rendered, "logs-ti_misp.threat-default");
        let error = format.render(&event(json!({}))).unwrap_err();
        assert!(error.contains("event.dataset"), "{error}");
        assert!(IndexFormat::parse("plain").unwrap().is_static());
    }

    #[test]
    fn serialised_events_are_parsed_only_for_placeholders() {
        let garbled = EncodedEvent {
            metadata: threatbeat_core::EncodedMetadata::default(),
            source: bytes::Bytes::from_static(b"{"),
        };
        assert_eq!(
            IndexFormat::parse("Plain")
                .unwrap()
                .render_encoded(&garbled)
                .unwrap(),
            "plain"
        );
        let format = IndexFormat::parse("ti-%{[event.module]}").unwrap();
        assert!(format.render_encoded(&garbled).is_err());
        let encoded = event(json!({"event": {"module": "misp"}})).encode().unwrap();
        assert_eq!(format.render_encoded(&encoded).unwrap(), "ti-misp");
    }

    #[test]
    fn malformed_formats_are_rejected() {
        assert!(IndexFormat::parse("a-%{[x").is_err());
        assert!(IndexFormat::parse("a-%{x}").is_err());
        assert!(IndexFormat::parse("a-%{+}").is_err());
    }
}
