//! Bulk encoding (one `create`/`index` action line plus the source line per
//! event) and decoding of the filtered bulk response.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use threatbeat_core::{EncodedEvent, Event, OpType};

use super::config::ResolvedSettings;

/// The response fields we need; libbeat asks for the same filter.
pub const BULK_PATH: &str = "_bulk?filter_path=errors,items.*.error,items.*.status";

/// One event ready to send.
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// The event as queued; its source is sent as it is.
    pub event: EncodedEvent,
    /// The action sent.
    pub op: OpType,
    /// Target index (for logs).
    pub index: String,
    /// The action line, ending in `\n`.
    pub action: Vec<u8>,
    /// Whether this item is itself a dead-letter record.
    pub dead_letter: bool,
}

impl BulkItem {
    /// Bytes this item adds to a bulk body.
    pub fn len(&self) -> usize {
        self.action.len() + self.event.source.len() + 1
    }

    /// Appends the action line and the source line to a bulk body.
    pub fn write_to(&self, body: &mut Vec<u8>) {
        body.extend_from_slice(&self.action);
        body.extend_from_slice(&self.event.source);
        body.push(b'\n');
    }
}

/// Prepares `event` for its target index; the error names why it cannot be.
pub fn encode(event: EncodedEvent, settings: &ResolvedSettings) -> Result<BulkItem, (EncodedEvent, String)> {
    let index = match event.index() {
        Some(index) => index.to_lowercase(),
        None => match settings.index.render_encoded(&event) {
            Ok(index) => index,
            Err(reason) => return Err((event, reason)),
        },
    };
    let pipeline = event
        .pipeline()
        .map(str::to_lowercase)
        .or_else(|| settings.pipeline.clone());
    encode_to(event, index, pipeline, false)
}

fn encode_to(
    event: EncodedEvent,
    index: String,
    pipeline: Option<String>,
    dead_letter: bool,
) -> Result<BulkItem, (EncodedEvent, String)> {
    let op = event.op_type();
    let mut metadata = Map::new();
    metadata.insert("_index".to_owned(), Value::String(index.clone()));
    if let Some(id) = event.id() {
        metadata.insert("_id".to_owned(), Value::String(id.to_owned()));
    }
    if let Some(pipeline) = pipeline {
        metadata.insert("pipeline".to_owned(), Value::String(pipeline));
    }
    let action_name = op.as_str();
    let mut action = match serde_json::to_vec(&json!({ action_name: metadata })) {
        Ok(action) => action,
        Err(error) => return Err((event, format!("cannot encode the bulk action: {error}"))),
    };
    action.push(b'\n');
    Ok(BulkItem {
        event,
        op,
        index,
        action,
        dead_letter,
    })
}

/// The dead-letter record for `item`: the original document as a string in
/// `message`, the reason in `error.*`, the same `_id` (so a replay stays single).
pub fn dead_letter(
    item: &BulkItem,
    index: &str,
    status: u16,
    error_type: &str,
    reason: &str,
) -> Result<BulkItem, String> {
    let original = String::from_utf8_lossy(&item.event.source).into_owned();
    let mut fields = Map::new();
    fields.insert(
        "@timestamp".to_owned(),
        Value::String(chrono::Utc::now().to_rfc3339()),
    );
    fields.insert("message".to_owned(), Value::String(original));
    fields.insert(
        "error".to_owned(),
        json!({ "type": error_type, "message": reason, "code": status, "index": item.index }),
    );
    let mut event = Event::new(fields);
    if let Some(id) = item.event.id() {
        event.set_id(id);
    }
    let encoded = event.encode().map_err(|error| error.to_string())?;
    encode_to(encoded, index.to_owned(), None, true).map_err(|(_, reason)| reason)
}

/// One item of the response.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    /// Its status.
    pub status: u16,
    /// `error.type`, when failed.
    pub error_type: Option<String>,
    /// `error.reason` (with `caused_by.reason`), when failed.
    pub reason: Option<String>,
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<HashMap<String, RawItem>>,
}

#[derive(Deserialize)]
struct RawItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Decodes a bulk response: `Ok(None)` when every item succeeded
/// (`errors: false`), `Ok(Some(items))` otherwise; an error when the body
/// is not a bulk response or has the wrong number of items.
pub fn decode_response(body: &[u8], sent: usize) -> Result<Option<Vec<ItemResult>>, String> {
    let raw: RawResponse = serde_json::from_slice(body)
        .map_err(|error| format!("the bulk response is not valid JSON: {error}"))?;
    if !raw.errors {
        return Ok(None);
    }
    if raw.items.len() != sent {
        return Err(format!(
            "the bulk response has {} items for {sent} sent",
            raw.items.len()
        ));
    }
    Ok(Some(
        raw.items
            .into_iter()
            .map(|mut item| {
                let result = item.drain().next().map(|(_, raw)| raw);
                match result {
                    Some(raw) => ItemResult {
                        status: raw.status,
                        error_type: raw
                            .error
                            .as_ref()
                            .and_then(|error| error.get("type"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        reason: raw.error.as_ref().map(describe_error),
                    },
                    None => ItemResult {
                        status: 0,
                        error_type: None,
                        reason: Some("empty bulk item".to_owned()),
                    },
                }
            })
            .collect(),
    ))
}

fn describe_error(error: &Value) -> String {
    let mut text = error
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
        .to_owned();
    if let Some(cause) = error
        .get("caused_by")
        .and_then(|cause| cause.get("reason"))
        .and_then(Value::as_str)
    {
        text.push_str(": ");
        text.push_str(cause);
    }
    text
}

/// The `error.reason` of a request-level error body, for logs.
pub fn request_error_reason(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| {
            let error = value.get("error")?;
            Some(match error {
                Value::String(text) => text.clone(),
                other => format!(
                    "{}: {}",
                    other.get("type").and_then(Value::as_str).unwrap_or("error"),
                    other.get("reason").and_then(Value::as_str).unwrap_or("")
                ),
            })
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elasticsearch::config::ElasticsearchConfig;
    use threatbeat_core::Origin;

    fn settings(value: Value) -> ResolvedSettings {
        let origin = Origin::named("t");
        ElasticsearchConfig::parse(&value, &origin)
            .unwrap()
            .resolve(&origin, std::path::Path::new("."))
            .unwrap()
    }

    #[test]
    fn encodes_create_with_id_index_and_pipeline() {
        let settings = settings(json!({"hosts": ["h"], "index": "ti-%{[event.module]}", "pipeline": "p"}));
        let mut event = Event::from_value(json!({"event": {"module": "threatintel"}, "a": 1}));
        event.set_id("abc");
        let item = encode(event.clone().encode().unwrap(), &settings).unwrap();
        let mut body = Vec::new();
        item.write_to(&mut body);
        assert_eq!(body.len(), item.len());
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                json!({"create": {"_id": "abc", "_index": "ti-threatintel", "pipeline": "p"}}),
                json!({"a": 1, "event": {"module": "threatintel"}})
            ]
        );
        event.set_index("Own-Index");
        assert_eq!(
            encode(event.encode().unwrap(), &settings).unwrap().index,
            "own-index"
        );
        let (_, reason) = encode(Event::from_value(json!({})).encode().unwrap(), &settings).unwrap_err();
        assert!(reason.contains("event.module"));
    }

    #[test]
    fn dead_letter_records_keep_the_original_source_and_id() {
        let settings = settings(json!({"hosts": ["h"], "index": "ti"}));
        let mut event = Event::from_value(json!({"ip": "not an ip"}));
        event.set_id("abc");
        let item = encode(event.encode().unwrap(), &settings).unwrap();
        let record = dead_letter(&item, "dlq", 400, "mapper_parsing_exception", "failed to parse").unwrap();
        assert!(record.dead_letter);
        assert_eq!((record.index.as_str(), record.event.id()), ("dlq", Some("abc")));
        let document = record.event.decode().unwrap().fields;
        assert_eq!(document["message"], json!(r#"{"ip":"not an ip"}"#));
        assert_eq!(document["error"]["code"], json!(400));
        assert_eq!(document["error"]["index"], json!("ti"));
    }

    #[test]
    fn decodes_filtered_responses() {
        assert_eq!(
            decode_response(br#"{"errors":false,"items":[{"create":{"status":201}}]}"#, 1),
            Ok(None)
        );
        let items = decode_response(
            br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse","caused_by":{"reason":"not an IP"}}}}]}"#,
            2,
        )
        .unwrap()
        .unwrap();
        assert_eq!(items[0].status, 201);
        assert_eq!(items[1].error_type.as_deref(), Some("mapper_parsing_exception"));
        assert_eq!(items[1].reason.as_deref(), Some("failed to parse: not an IP"));
        assert!(decode_response(br#"{"errors":true,"items":[]}"#, 1).is_err());
        assert!(decode_response(b"<html>", 1).is_err());
    }
}
