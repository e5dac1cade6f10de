//! Runtime templates of the httpjson input: minijinja with `[[ ]]` for
//! expressions, `[% %]` for blocks and `[# #]` for comments, so that they
//! pass untouched through the load-time `{{ }}` module templating.
//!
//! Helpers (all times are Unix epoch seconds, so arithmetic is plain `+`/`-`):
//! `now()`, `parse_duration('24h')`, `parse_date(text[, format])`,
//! `format_date(value[, format])` with `RFC3339` (default), `unix`,
//! `UnixDate` or a strftime format, `link_header(value[, rel])` (the
//! `rel="next"` URL of a `Link` header). minijinja's own filters (`int`,
//! `length`, `default`, `max`, `min`, `tojson`, ...) are available.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value as TemplateValue};
use serde_json::Value;

use threatbeat_core::duration::parse_duration;

/// The compiled templates of one input.
#[derive(Clone)]
pub struct Templates {
    environment: Arc<Environment<'static>>,
}

/// A handle on one compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateId(String);

/// Collects templates while a config is built.
pub struct TemplateBuilder {
    environment: Environment<'static>,
    count: usize,
}

impl Default for TemplateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateBuilder {
    /// An environment with the runtime syntax and helpers.
    pub fn new() -> Self {
        let mut environment = Environment::new();
        let syntax = SyntaxConfig::builder()
            .block_delimiters("[%", "%]")
            .variable_delimiters("[[", "]]")
            .comment_delimiters("[#", "#]")
            .build()
            .expect("the runtime delimiters are distinct and valid");
        environment.set_syntax(syntax);
        // `last_event.Event.timestamp` before any event is undefined, not an error.
        environment.set_undefined_behavior(UndefinedBehavior::Chainable);
        // A JSON null (`"next": null` on the last page) renders empty, not
        // "none", and booleans as JSON writes them (`true`, not `True`), so
        // rendered text can be typed as JSON.
        environment.set_formatter(|out, state, value| {
            if value.is_none() {
                Ok(())
            } else if value.kind() == minijinja::value::ValueKind::Bool {
                out.write_str(if value.is_true() { "true" } else { "false" })
                    .map_err(Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        environment.add_function("now", now);
        environment.add_function("parse_duration", template_parse_duration);
        environment.add_function("parse_date", parse_date);
        environment.add_function("format_date", format_date);
        environment.add_function("link_header", link_header);
        environment.add_function("next_range", next_range);
        Self {
            environment,
            count: 0,
        }
    }

    /// Compiles `source`; the error text is the template problem.
    pub fn add(&mut self, source: &str) -> Result<TemplateId, String> {
        self.count += 1;
        let name = format!("t{}", self.count);
        self.environment
            .add_template_owned(name.clone(), source.to_owned())
            .map_err(|error| format!("invalid template `{source}`: {error}"))?;
        Ok(TemplateId(name))
    }

    /// Freezes the environment.
    pub fn finish(self) -> Templates {
        Templates {
            environment: Arc::new(self.environment),
        }
    }
}

/// A template context: JSON exposed to minijinja lazily, so a template that
/// reads `last_response.page` does not convert the whole page body.
#[derive(Debug, Clone)]
pub struct Context(TemplateValue);

impl Context {
    /// Wraps `value` (a JSON object) without copying it.
    pub fn new(value: Value) -> Self {
        Context(json_value(&Arc::new(value), String::new()))
    }
}

/// A JSON array or object inside a shared document, addressed by a JSON pointer.
#[derive(Debug)]
struct JsonNode {
    root: Arc<Value>,
    pointer: String,
}

impl JsonNode {
    fn value(&self) -> &Value {
        self.root.pointer(&self.pointer).unwrap_or(&Value::Null)
    }

    fn child(&self, key: &str) -> TemplateValue {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        json_value(&self.root, format!("{}/{escaped}", self.pointer))
    }
}

/// The minijinja value of the JSON at `pointer`: scalars converted, arrays
/// and objects wrapped lazily.
fn json_value(root: &Arc<Value>, pointer: String) -> TemplateValue {
    match root.pointer(&pointer) {
        None => TemplateValue::UNDEFINED,
        Some(Value::Null) => TemplateValue::from(()),
        Some(Value::Bool(flag)) => TemplateValue::from(*flag),
        Some(Value::Number(number)) => match (number.as_i64(), number.as_u64()) {
            (Some(signed), _) => TemplateValue::from(signed),
            (None, Some(unsigned)) => TemplateValue::from(unsigned),
            _ => TemplateValue::from(number.as_f64().unwrap_or(f64::NAN)),
        },
        Some(Value::String(text)) => TemplateValue::from(text.as_str()),
        Some(Value::Array(_) | Value::Object(_)) => TemplateValue::from_object(JsonNode {
            root: root.clone(),
            pointer,
        }),
    }
}

impl Object for JsonNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.value() {
            Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &TemplateValue) -> Option<TemplateValue> {
        let found = match self.value() {
            Value::Array(items) => {
                let index = usize::try_from(key.clone()).ok()?;
                (index < items.len()).then(|| self.child(&index.to_string()))
            }
            Value::Object(map) => {
                let name = key.as_str()?;
                map.contains_key(name).then(|| self.child(name))
            }
            _ => None,
        };
        found
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.value() {
            Value::Array(items) => Enumerator::Seq(items.len()),
            Value::Object(map) => {
                Enumerator::Values(map.keys().map(|key| TemplateValue::from(key.as_str())).collect())
            }
            _ => Enumerator::Empty,
        }
    }
}

impl Templates {
    /// Renders `id` over `context`, trimmed.
    pub fn render(&self, id: &TemplateId, context: &Context) -> Result<String, String> {
        let template = self
            .environment
            .get_template(&id.0)
            .map_err(|error| error.to_string())?;
        template
            .render(context.0.clone())
            .map(|text| text.trim().to_owned())
            .map_err(|error| {
                let mut message = error.to_string();
                if let Some(detail) = error.detail() {
                    if !message.contains(detail) {
                        message = format!("{message}: {detail}");
                    }
                }
                message
            })
    }
}

fn now() -> i64 {
    Utc::now().timestamp()
}

fn template_parse_duration(text: String) -> Result<i64, Error> {
    parse_duration(&text)
        .map(|duration| duration.as_secs() as i64)
        .map_err(|reason| Error::new(ErrorKind::InvalidOperation, reason))
}

fn epoch_of(value: &TemplateValue) -> Result<i64, Error> {
    if let Ok(number) = i64::try_from(value.clone()) {
        return Ok(number);
    }
    if let Some(text) = value.as_str() {
        return parse_date(text.to_owned(), None);
    }
    if let Ok(number) = f64::try_from(value.clone()) {
        return Ok(number as i64);
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("`{value}` is not a time"),
    ))
}

/// The URL of the `rel` link (default `next`) in an RFC 8288 `Link` header, or "".
fn link_header(value: Option<String>, rel: Option<String>) -> String {
    let rel = rel.unwrap_or_else(|| "next".to_owned());
    let Some(value) = value else {
        return String::new();
    };
    for link in value.split(',') {
        let mut parts = link.split(';');
        let target = parts.next().unwrap_or("").trim();
        let has_rel = parts.any(|parameter| {
            let parameter = parameter.trim();
            parameter
                .strip_prefix("rel=")
                .map(|names| {
                    names
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|name| name.eq_ignore_ascii_case(&rel))
                })
                .unwrap_or(false)
        });
        if has_rel {
            if let Some(url) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
                return url.to_owned();
            }
        }
    }
    String::new()
}

/// The `Range` value of the page after the one a `Content-Range` header
/// (`items 0-99/250`, `items 0-99/*`) describes, `size` items long, or ""
/// when that page was the last: its end reached the total, or (total
/// unknown) it was shorter than `size`, or there is no usable header (a
/// server that ignores `Range` answers everything at once).
fn next_range(content_range: Option<String>, size: i64) -> String {
    let Some(value) = content_range else {
        return String::new();
    };
    let parse = || -> Option<(String, i64, i64, Option<i64>)> {
        let (unit, rest) = value.trim().split_once(' ')?;
        let (span, total) = rest.trim().split_once('/')?;
        let (start, end) = span.split_once('-')?;
        let start = start.trim().parse::<i64>().ok()?;
        let end = end.trim().parse::<i64>().ok()?;
        let total = match total.trim() {
            "*" => None,
            number => Some(number.parse::<i64>().ok()?),
        };
        Some((unit.to_owned(), start, end, total))
    };
    let Some((unit, start, end, total)) = parse() else {
        return String::new();
    };
    if size < 1 || end < start {
        return String::new();
    }
    // The numbers come from the server: a page ending at i64::MAX has no
    // next one, and a next page reaching past it asks for all that is left.
    let Some(following) = end.checked_add(1) else {
        return String::new();
    };
    let last = match total {
        Some(total) => following >= total,
        // `start` is not negative (it is the text before the first `-`): no overflow.
        None => following - start < size,
    };
    if last {
        return String::new();
    }
    format!("{unit} {following}-{}", end.saturating_add(size))
}

/// Parses a time: epoch seconds, RFC 3339, RFC 2822, `YYYY-MM-DD`, or a strftime `format`.
fn parse_date(text: String, format: Option<String>) -> Result<i64, Error> {
    let text = text.trim();
    let invalid = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot parse `{text}` as a date"),
        )
    };
    if let Some(format) = format {
        if let Ok(parsed) = DateTime::parse_from_str(text, &format) {
            return Ok(parsed.timestamp());
        }
        if let Ok(parsed) = NaiveDateTime::parse_from_str(text, &format) {
            return Ok(Utc.from_utc_datetime(&parsed).timestamp());
        }
        return NaiveDate::parse_from_str(text, &format)
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|midnight| Utc.from_utc_datetime(&midnight).timestamp())
            .ok_or_else(invalid);
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds as i64);
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Ok(parsed.timestamp());
    }
    if let Ok(parsed) = DateTime::parse_from_rfc2822(text) {
        return Ok(parsed.timestamp());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| Utc.from_utc_datetime(&midnight).timestamp())
        .ok_or_else(invalid)
}

/// Formats a time (epoch seconds or a parseable string).
fn format_date(value: TemplateValue, format: Option<String>) -> Result<String, Error> {
    let seconds = epoch_of(&value)?;
    let time = Utc
        .timestamp_opt(seconds, 0)
        .single()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("{seconds} is out of range")))?;
    Ok(match format.as_deref().unwrap_or("RFC3339") {
        "RFC3339" => time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "unix" => seconds.to_string(),
        "UnixDate" => time.format("%a %b %e %H:%M:%S UTC %Y").to_string(),
        custom => {
            // An unknown specifier (`%Q`) fails while formatting, and
            // `to_string` would panic on that: it is the template's error.
            let mut text = String::new();
            write!(text, "{}", time.format(custom)).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("`{custom}` is not a valid date format"),
                )
            })?;
            text
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, context: Value) -> Result<String, String> {
        let mut builder = TemplateBuilder::new();
        let id = builder.add(source)?;
        builder.finish().render(&id, &Context::new(context))
    }

    #[test]
    fn runtime_delimiters_and_helpers() {
        assert_eq!(
            render("[[ cursor.timestamp ]]", json!({"cursor": {"timestamp": "17"}})).unwrap(),
            "17"
        );
        assert_eq!(
            render("[[ cursor.timestamp ]]", json!({"cursor": {}})).unwrap(),
            ""
        );
        assert_eq!(render("{{ kept }}", json!({})).unwrap(), "{{ kept }}");
        assert_eq!(render("[[ parse_duration('2d') ]]", json!({})).unwrap(), "172800");
        let now_minus = render("[[ now() - parse_duration('24h') ]]", json!({})).unwrap();
        let expected = Utc::now().timestamp() - 86400;
        assert!((now_minus.parse::<i64>().unwrap() - expected).abs() <= 2);
        assert_eq!(
            render("[[ format_date(0) ]]", json!({})).unwrap(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            render("[[ format_date('1970-01-02T00:00:00Z', 'unix') ]]", json!({})).unwrap(),
            "86400"
        );
        assert_eq!(
            render("[[ parse_date('2024-01-31', '%Y-%m-%d') ]]", json!({})).unwrap(),
            "1706659200"
        );
        assert_eq!(
            render(
                "[[ last_response.page + 1 if last_response.body.response|length > 0 else '' ]]",
                json!({"last_response": {"page": 1, "body": {"response": [1]}}})
            )
            .unwrap(),
            "2"
        );
        assert_eq!(
            render(
                "[[ last_response.page + 1 if last_response.body.response|length > 0 else '' ]]",
                json!({"last_response": {"page": 3, "body": {"response": []}}})
            )
            .unwrap(),
            ""
        );
    }

    #[test]
    fn misp_cursor_template_tolerates_missing_values() {
        let source = "[[ [cursor.timestamp|default(0)|int, last_request.body.timestamp|default(0)|int, last_event.Event.timestamp|default(0)|int]|max ]]";
        assert_eq!(
            render(
                source,
                json!({"cursor": {}, "last_request": {"body": {"timestamp": 50}}})
            )
            .unwrap(),
            "50"
        );
        assert_eq!(
            render(source, json!({"cursor": {"timestamp": 60}, "last_request": {"body": {"timestamp": 50}}, "last_event": {"Event": {"timestamp": "70"}}})).unwrap(),
            "70"
        );
    }

    #[test]
    fn lazy_json_context_behaves_like_plain_values() {
        let context = json!({"body": {"items": [{"id": 1}, {"id": 2, "tags": ["a/b"]}], "n": null, "ok": true, "f": 1.5}});
        assert_eq!(render("[[ body.items|length ]]", context.clone()).unwrap(), "2");
        assert_eq!(
            render("[[ body.items[1].id + 1 ]]", context.clone()).unwrap(),
            "3"
        );
        assert_eq!(
            render("[[ body.items[1]['tags'][0] ]]", context.clone()).unwrap(),
            "a/b"
        );
        assert_eq!(
            render("[[ body.items[5].id|default('none left') ]]", context.clone()).unwrap(),
            "none left"
        );
        assert_eq!(
            render("[[ body.n ]]|[[ body.ok ]]|[[ body.f ]]", context.clone()).unwrap(),
            "|true|1.5"
        );
        assert_eq!(
            render("[[ body.items[0]|tojson ]]", context.clone()).unwrap(),
            "{\"id\":1}"
        );
        assert_eq!(
            render("[% for item in body.items %][[ item.id ]][% endfor %]", context).unwrap(),
            "12"
        );
    }

    #[test]
    fn next_range_pages_until_the_total_or_a_short_page() {
        let next = |header: Value| {
            render(
                "[[ next_range(last_response.header['content-range'], 100) ]]",
                json!({"last_response": {"header": header}}),
            )
            .unwrap()
        };
        assert_eq!(next(json!({"content-range": "items 0-99/250"})), "items 100-199");
        assert_eq!(next(json!({"content-range": "items 200-249/250"})), "");
        assert_eq!(next(json!({"content-range": "items 100-199/*"})), "items 200-299");
        assert_eq!(next(json!({"content-range": "items 100-149/*"})), "");
        assert_eq!(
            next(json!({})),
            "",
            "no Content-Range: the server sent everything"
        );
        assert_eq!(next(json!({"content-range": "bytes */1000"})), "");
        assert_eq!(next(json!({"content-range": "garbage"})), "");
    }

    #[test]
    fn link_header_finds_the_next_link() {
        let header =
            r#"<https://api.test/items?page=1>; rel="prev", <https://api.test/items?page=3>; rel="next""#;
        assert_eq!(
            render(
                "[[ link_header(last_response.header.link) ]]",
                json!({"last_response": {"header": {"link": header}}})
            )
            .unwrap(),
            "https://api.test/items?page=3"
        );
        assert_eq!(
            render(
                "[[ link_header(last_response.header.link, 'prev') ]]",
                json!({"last_response": {"header": {"link": header}}})
            )
            .unwrap(),
            "https://api.test/items?page=1"
        );
        assert_eq!(
            render(
                "[[ link_header(last_response.header.link) ]]",
                json!({"last_response": {"header": {}}})
            )
            .unwrap(),
            ""
        );
    }

    #[test]
    fn errors_are_reported_not_panics() {
        assert!(render("[[ parse_duration('1w') ]]", json!({}))
            .unwrap_err()
            .contains("unknown unit"));
        assert!(render("[[ oops(", json!({})).is_err());
    }
}
