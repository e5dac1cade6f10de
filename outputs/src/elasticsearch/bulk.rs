//! Bulk encoding and decoding of the filtered bulk response. Per event: a
//! `create` or `index` action line plus the document; an `update` action
//! line plus `{"doc": <partial document>}` (with `"doc_as_upsert": true` when
//! asked); a `delete` action line alone.

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

const UPDATE_PREFIX: &[u8] = b"{\"doc\":";
const UPSERT_SUFFIX: &[u8] = b",\"doc_as_upsert\":true}";

impl BulkItem {
    /// Bytes this item adds to a bulk body.
    pub fn len(&self) -> usize {
        let source = self.event.source.len();
        // Each source line ends in `\n`; an update's adds the wrapper.
        self.action.len()
            + match self.op {
                OpType::Delete => 0,
                OpType::Update if self.event.doc_as_upsert() => {
                    UPDATE_PREFIX.len() + source + UPSERT_SUFFIX.len() + 1
                }
                OpType::Update => UPDATE_PREFIX.len() + source + 2,
                OpType::Create | OpType::Index => source + 1,
            }
    }

    /// Appends the action line and, unless it is a delete, the source line
    /// to a bulk body. An update's document is wrapped as `{"doc": ...}`.
    pub fn write_to(&self, body: &mut Vec<u8>) {
        body.extend_from_slice(&self.action);
        match self.op {
            OpType::Delete => return,
            OpType::Update => {
                body.extend_from_slice(UPDATE_PREFIX);
                body.extend_from_slice(&self.event.source);
                if self.event.doc_as_upsert() {
                    body.extend_from_slice(UPSERT_SUFFIX);
                } else {
                    body.push(b'}');
                }
            }
            OpType::Create | OpType::Index => body.extend_from_slice(&self.event.source),
        }
        body.push(b'\n');
    }

    /// `(index, _id)` when the item addresses one document: two items with
    /// the same key must reach Elasticsearch in order.
    pub fn document_key(&self) -> Option<(&str, &str)> {
        self.event.id().map(|id| (self.index.as_str(), id))
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
    // A delete runs no ingest pipeline (Elasticsearch ignores it there).
    let pipeline = pipeline.filter(|_| op != OpType::Delete);
    let id = event.id();
    let mut action = Vec::with_capacity(
        40 + index.len() + id.map_or(0, str::len) + pipeline.as_ref().map_or(0, String::len),
    );
    // `{"create":{"_id":...,"_index":...,"pipeline":...}}`, keys in order,
    // written straight into the line instead of through a map per event.
    let written = (|| {
        action.extend_from_slice(b"{\"");
        action.extend_from_slice(op.as_str().as_bytes());
        action.extend_from_slice(b"\":{");
        if let Some(id) = id {
            action.extend_from_slice(b"\"_id\":");
            serde_json::to_writer(&mut action, id)?;
            action.push(b',');
        }
        action.extend_from_slice(b"\"_index\":");
        serde_json::to_writer(&mut action, &index)?;
        if let Some(pipeline) = &pipeline {
            action.extend_from_slice(b",\"pipeline\":");
            serde_json::to_writer(&mut action, pipeline)?;
        }
        action.extend_from_slice(b"}}\n");
        Ok::<(), serde_json::Error>(())
    })();
    if let Err(error) = written {
        return Err((event, format!("cannot encode the bulk action: {error}")));
    }
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
    errors: Option<bool>,
    items: Option<Vec<HashMap<String, RawItem>>>,
}

#[derive(Deserialize)]
struct RawItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Decodes a bulk response: `Ok(None)` when every item succeeded
/// (`errors: false`) and `every_item` is false, `Ok(Some(items))`
/// otherwise; an error when the body is not a bulk response (no `errors`,
/// no `items`) or has the wrong number of items, even with `errors: false`:
/// a proxy or an impostor answering `200 {}` acknowledges nothing.
/// `every_item` serves batches with deletes: a delete that found nothing
/// (404 `not_found`) is no error, so only its status tells it from one that
/// deleted.
pub fn decode_response(
    body: &[u8],
    sent: usize,
    every_item: bool,
) -> Result<Option<Vec<ItemResult>>, String> {
    let raw: RawResponse = serde_json::from_slice(body)
        .map_err(|error| format!("the bulk response is not valid JSON: {error}"))?;
    let (Some(errors), Some(items)) = (raw.errors, raw.items) else {
        return Err("the answer is not a bulk response (no `errors` or no `items`)".to_owned());
    };
    if items.len() != sent {
        return Err(format!(
            "the bulk response has {} items for {sent} sent",
            items.len()
        ));
    }
    if !errors && !every_item {
        return Ok(None);
    }
    Ok(Some(
        items
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
    fn the_action_line_is_what_serialising_its_map_gives() {
        let settings = settings(json!({"hosts": ["h"], "index": "ti", "pipeline": "p\"q"}));
        for (id, op) in [
            (None, OpType::Create),
            (Some("a\"b\\c\u{1}é"), OpType::Index),
            (Some("x"), OpType::Delete),
            (Some("y"), OpType::Update),
        ] {
            let mut event = Event::from_value(json!({"a": 1}));
            event.set_op_type(op);
            let mut metadata = Map::new();
            metadata.insert("_index".to_owned(), json!("ti"));
            if let Some(id) = id {
                event.set_id(id);
                metadata.insert("_id".to_owned(), json!(id));
            }
            if op != OpType::Delete {
                metadata.insert("pipeline".to_owned(), json!("p\"q"));
            }
            let mut expected = serde_json::to_vec(&json!({ op.as_str(): metadata })).unwrap();
            expected.push(b'\n');
            let item = encode(event.encode().unwrap(), &settings).unwrap();
            assert_eq!(
                String::from_utf8(item.action).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    fn body_lines(item: &BulkItem) -> Vec<Value> {
        let mut body = Vec::new();
        item.write_to(&mut body);
        assert_eq!(body.len(), item.len(), "len() matches what is written");
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn encodes_index_update_and_delete() {
        let settings = settings(json!({"hosts": ["h"], "index": "unused", "pipeline": "p"}));
        let latest = "logs-ti_threatbeat_latest.misp";
        let event = |op: OpType, fields: Value| {
            let mut event = Event::from_value(fields);
            event.set_id("ioc-1");
            event.set_index(latest);
            event.set_op_type(op);
            event
        };
        let document =
            json!({"@timestamp": "2026-01-02T00:00:00Z", "threat": {"indicator": {"ip": "10.0.0.1"}}});
        let item = encode(
            event(OpType::Index, document.clone()).encode().unwrap(),
            &settings,
        )
        .unwrap();
        assert_eq!(
            body_lines(&item),
            [
                json!({"index": {"_index": latest, "_id": "ioc-1", "pipeline": "p"}}),
                document.clone()
            ]
        );

        let refresh = json!({"@timestamp": "2026-02-01T00:00:00Z"});
        let item = encode(
            event(OpType::Update, refresh.clone()).encode().unwrap(),
            &settings,
        )
        .unwrap();
        assert_eq!(item.op, OpType::Update);
        assert_eq!(
            body_lines(&item),
            [
                json!({"update": {"_index": latest, "_id": "ioc-1", "pipeline": "p"}}),
                json!({"doc": refresh})
            ]
        );
        let mut upsert = event(OpType::Update, refresh.clone());
        upsert.metadata.insert("doc_as_upsert".into(), json!(true));
        let item = encode(upsert.encode().unwrap(), &settings).unwrap();
        assert_eq!(
            body_lines(&item)[1],
            json!({"doc": refresh, "doc_as_upsert": true})
        );

        let item = encode(event(OpType::Delete, document).encode().unwrap(), &settings).unwrap();
        assert_eq!(
            body_lines(&item),
            [json!({"delete": {"_index": latest, "_id": "ioc-1"}})],
            "a delete has no source line and no pipeline"
        );
        assert_eq!(item.document_key(), Some((latest, "ioc-1")));
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
            decode_response(
                br#"{"errors":false,"items":[{"create":{"status":201}}]}"#,
                1,
                false
            ),
            Ok(None)
        );
        let deletes = decode_response(
            br#"{"errors":false,"items":[{"delete":{"status":200}},{"delete":{"status":404}}]}"#,
            2,
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!((deletes[0].status, deletes[1].status), (200, 404));
        assert_eq!(deletes[1].error_type, None);
        let items = decode_response(
            br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse","caused_by":{"reason":"not an IP"}}}}]}"#,
            2,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(items[0].status, 201);
        assert_eq!(items[1].error_type.as_deref(), Some("mapper_parsing_exception"));
        assert_eq!(items[1].reason.as_deref(), Some("failed to parse: not an IP"));
        assert!(decode_response(br#"{"errors":true,"items":[]}"#, 1, false).is_err());
        assert!(decode_response(br#"{"errors":false}"#, 1, true).is_err());
        // What acknowledges nothing: no bulk fields, or too few items.
        assert!(decode_response(br#"{}"#, 3, false).is_err());
        assert!(decode_response(br#"{"errors":false,"items":[]}"#, 1000, false).is_err());
        assert!(decode_response(br#"{"items":[{"create":{"status":201}}]}"#, 1, false).is_err());
        assert!(decode_response(b"<html>", 1, false).is_err());
    }
}
