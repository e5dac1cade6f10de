//! Filter values as MISP reads them (misp-api.md §4–§6): time values and
//! ranges (`resolveTimeDelta`), OR/NOT/AND term lists (`convert_filters`)
//! and SQL `LIKE` matching of tag names.

use chrono::{DateTime, NaiveDate};
use serde_json::{Map, Value};

/// A filter problem MISP answers with an error status.
#[derive(Debug)]
pub struct SearchError {
    /// HTTP status.
    pub status: u16,
    /// MISP's message.
    pub message: String,
}

/// A time condition (`>= from`, `<= to`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeRange {
    from: Option<i64>,
    to: Option<i64>,
}

impl TimeRange {
    /// Whether `value` is inside the range.
    pub fn contains(&self, value: i64) -> bool {
        self.from.is_none_or(|from| value >= from) && self.to.is_none_or(|to| value <= to)
    }
}

/// `resolveTimeDelta`: seconds, `<n>d|h|m|s` relative to now, or a date
/// text; anything unparseable becomes "now + 1 s" (no error, as MISP).
pub fn resolve_time(value: &Value, now: i64) -> i64 {
    let text = match value {
        Value::Number(number) => return number.as_f64().map(|f| f as i64).unwrap_or(now + 1),
        Value::String(text) => text.trim().to_owned(),
        _ => return now + 1,
    };
    if let Ok(number) = text.parse::<f64>() {
        return number as i64;
    }
    let lower = text.to_ascii_lowercase();
    if let Some(unit) = lower.chars().last() {
        let digits = &lower[..lower.len() - 1];
        if let Ok(amount) = digits.parse::<i64>() {
            let seconds = match unit {
                'd' => Some(86400),
                'h' => Some(3600),
                'm' => Some(60),
                's' => Some(1),
                _ => None,
            };
            if let Some(seconds) = seconds {
                return now - amount * seconds;
            }
        }
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(&text) {
        return parsed.timestamp();
    }
    if let Ok(date) = NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(now + 1);
    }
    now + 1
}

/// A time filter value: one bound (`>=`) or a two-element range.
pub fn time_filter(value: &Value, now: i64) -> Result<Option<TimeRange>, SearchError> {
    match value {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Array(items) if items.len() == 2 => {
            let (mut a, mut b) = (resolve_time(&items[0], now), resolve_time(&items[1], now));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            Ok(Some(TimeRange {
                from: if a == 0 { None } else { Some(a) },
                to: Some(b),
            }))
        }
        Value::Array(_) => Err(SearchError {
            status: 500,
            message: "An Internal Error Has Occurred.".to_owned(),
        }),
        single => {
            let from = resolve_time(single, now);
            Ok(if from == 0 {
                None
            } else {
                Some(TimeRange {
                    from: Some(from),
                    to: None,
                })
            })
        }
    }
}

/// OR / NOT / AND lists of a filter (`convert_filters`).
#[derive(Debug, Default, Clone)]
pub struct Terms {
    /// Any of these.
    pub or: Vec<String>,
    /// None of these.
    pub not: Vec<String>,
    /// All of these.
    pub and: Vec<String>,
}

impl Terms {
    /// From a string (`a&&!b`, `a||b`), a list (`["a", "!b"]`) or `{OR, NOT, AND}`.
    pub fn parse(value: &Value) -> Option<Terms> {
        let mut terms = Terms::default();
        let push = |text: &str, terms: &mut Terms| {
            let text = text.trim();
            if let Some(negated) = text.strip_prefix('!') {
                terms.not.push(negated.to_owned());
            } else if !text.is_empty() {
                terms.or.push(text.to_owned());
            }
        };
        match value {
            Value::Null | Value::Bool(false) => return None,
            Value::String(text) => {
                for part in text.split("&&").flat_map(|part| part.split("||")) {
                    push(part, &mut terms);
                }
            }
            Value::Number(number) => push(&number.to_string(), &mut terms),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(text) => push(text, &mut terms),
                        other => push(&other.to_string(), &mut terms),
                    }
                }
            }
            Value::Object(map) => {
                let list = |key: &str| -> Vec<String> {
                    match map.get(key) {
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                        Some(Value::String(text)) => vec![text.clone()],
                        _ => Vec::new(),
                    }
                };
                terms.or = list("OR");
                terms.not = list("NOT");
                terms.and = list("AND");
            }
            Value::Bool(true) => push("1", &mut terms),
        }
        Some(terms)
    }
}

/// SQL `LIKE` on a default MySQL collation: case-insensitive, `%` and `_` wildcards.
pub fn like(pattern: &str, text: &str) -> bool {
    fn matches(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('%', rest)) => (0..=text.len()).any(|skip| matches(rest, &text[skip..])),
            Some(('_', rest)) => !text.is_empty() && matches(rest, &text[1..]),
            Some((c, rest)) => {
                text.first()
                    .is_some_and(|t| t.to_lowercase().eq(c.to_lowercase()))
                    && matches(rest, &text[1..])
            }
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    matches(&pattern, &text)
}

pub(super) fn tag_names(item: &Map<String, Value>) -> Vec<&str> {
    item.get("Tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tag| tag.get("name").and_then(Value::as_str))
        .collect()
}

pub(super) fn any_like(patterns: &[String], names: &[&str]) -> bool {
    patterns
        .iter()
        .any(|pattern| names.iter().any(|name| like(pattern, name)))
}

pub(super) fn timestamp_of(item: &Map<String, Value>) -> i64 {
    item.get("timestamp")
        .and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

pub(super) fn flag(filters: &Map<String, Value>, key: &str) -> Option<bool> {
    match filters.get(key)? {
        Value::Bool(false) => None,
        Value::Bool(true) => Some(true),
        Value::Number(number) => Some(number.as_i64() != Some(0)),
        Value::String(text) if text == "1" || text == "0" => Some(text == "1"),
        _ => None,
    }
}

pub(super) fn matches_values(terms: &Option<Terms>, value: &str) -> bool {
    match terms {
        None => true,
        Some(terms) => {
            let positive = terms.or.is_empty() && terms.and.is_empty()
                || terms
                    .or
                    .iter()
                    .chain(terms.and.iter())
                    .any(|pattern| like(pattern, value));
            positive && !terms.not.iter().any(|pattern| like(pattern, value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_values_follow_resolve_time_delta() {
        assert_eq!(resolve_time(&json!("1700000000"), 0), 1_700_000_000);
        assert_eq!(resolve_time(&json!(1700000000.5), 0), 1_700_000_000);
        assert_eq!(resolve_time(&json!("1d"), 100_000), 100_000 - 86400);
        assert_eq!(resolve_time(&json!("15m"), 1000), 100);
        assert_eq!(resolve_time(&json!("1w"), 1000), 1001, "unparseable = now + 1 s");
        assert_eq!(resolve_time(&json!("2024-01-31T10:00:00Z"), 0), 1_706_695_200);
        assert!(time_filter(&json!(0), 5).unwrap().is_none());
        assert!(time_filter(&json!([1, 2, 3]), 5).is_err());
        let range = time_filter(&json!([20, 10]), 5).unwrap().unwrap();
        assert!(range.contains(10) && range.contains(20) && !range.contains(21));
    }

    #[test]
    fn tag_terms_and_like_matching() {
        let terms = Terms::parse(&json!("tlp:white&&!tlp:red")).unwrap();
        assert_eq!((terms.or.len(), terms.not.len()), (1, 1));
        let terms = Terms::parse(&json!({"OR": ["a"], "NOT": ["b"], "AND": ["c"]})).unwrap();
        assert_eq!(
            (terms.or, terms.not, terms.and),
            (vec!["a".to_owned()], vec!["b".to_owned()], vec!["c".to_owned()])
        );
        assert!(like("TLP:%", "tlp:white"));
        assert!(like("workflow:state=\"complete\"", "workflow:state=\"complete\""));
        assert!(like("misp_galaxy", "misp-galaxy"), "`_` is a wildcard");
        assert!(!like("tlp:red", "tlp:white"));
    }
}
