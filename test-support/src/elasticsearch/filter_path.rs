//! The `filter_path` response filter: comma-separated dotted patterns, `*`
//! matching one key, arrays transparent (their elements are filtered).

use serde_json::{Map, Value};

/// Keeps only the parts of `value` that some pattern in `filter` selects.
/// An empty filter keeps everything.
pub fn apply(value: Value, filter: &str) -> Value {
    let patterns: Vec<Vec<&str>> = filter
        .split(',')
        .map(str::trim)
        .filter(|pattern| !pattern.is_empty())
        .map(|pattern| pattern.split('.').collect())
        .collect();
    if patterns.is_empty() {
        return value;
    }
    let refs: Vec<&[&str]> = patterns.iter().map(Vec::as_slice).collect();
    filter_value(value, &refs).unwrap_or(Value::Object(Map::new()))
}

fn filter_value(value: Value, patterns: &[&[&str]]) -> Option<Value> {
    match value {
        Value::Object(object) => {
            let mut kept = Map::new();
            for (key, child) in object {
                let mut deeper: Vec<&[&str]> = Vec::new();
                let mut whole = false;
                for pattern in patterns {
                    if let Some((first, rest)) = pattern.split_first() {
                        if *first == "*" || *first == key {
                            if rest.is_empty() {
                                whole = true;
                            } else {
                                deeper.push(rest);
                            }
                        }
                    }
                }
                if whole {
                    kept.insert(key, child);
                } else if !deeper.is_empty() {
                    if let Some(filtered) = filter_value(child, &deeper) {
                        kept.insert(key, filtered);
                    }
                }
            }
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items
                .into_iter()
                .filter_map(|item| filter_value(item, patterns))
                .collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_libbeat_bulk_fields() {
        let response = json!({"took": 3, "errors": true, "items": [
            {"create": {"_index": "a", "_id": "1", "status": 201, "result": "created"}},
            {"create": {"_index": "a", "_id": "2", "status": 409, "error": {"type": "x"}}}
        ]});
        let filtered = apply(response, "errors,items.*.error,items.*.status");
        assert_eq!(
            filtered,
            json!({"errors": true, "items": [
                {"create": {"status": 201}},
                {"create": {"status": 409, "error": {"type": "x"}}}
            ]})
        );
    }

    #[test]
    fn empty_filter_keeps_all() {
        assert_eq!(apply(json!({"a": 1}), ""), json!({"a": 1}));
    }
}
