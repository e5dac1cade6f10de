//! `_bulk`: NDJSON parsing and per-item outcomes as Elasticsearch 8.x gives them.

use serde_json::{json, Map, Value};

use super::errors;
use super::state::{MappingRule, State};

/// The answer to one bulk request: HTTP status and body (before `filter_path`).
pub(crate) struct BulkAnswer {
    pub status: u16,
    pub body: Value,
}

/// Runs a (decompressed) bulk body against the state; `path_target` is the
/// index from `/<target>/_bulk`.
pub(crate) fn execute(
    state: &mut State,
    body: &[u8],
    path_target: Option<&str>,
    can_write: bool,
) -> BulkAnswer {
    if body.is_empty() {
        return request_error(
            400,
            errors::bad_request(
                "action_request_validation_exception",
                "Validation Failed: 1: no requests added;",
            ),
        );
    }
    if body.last() != Some(&b'\n') {
        return request_error(
            400,
            errors::bad_request(
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            ),
        );
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return request_error(
            400,
            errors::bad_request("parse_exception", "request body is not valid UTF-8"),
        );
    };
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let mut items = Vec::new();
    let mut any_error = false;
    let mut line_number = 0usize;
    while let Some(action_line) = lines.next() {
        line_number += 1;
        if action_line.trim().is_empty() {
            continue;
        }
        let action: Value = match serde_json::from_str(action_line) {
            Ok(action) => action,
            Err(error) => {
                return request_error(
                    400,
                    errors::bad_request(
                        "x_content_parse_exception",
                        &format!("[{line_number}:1] Malformed action/metadata line [{line_number}]: {error}"),
                    ),
                )
            }
        };
        let Some((op, metadata)) = action.as_object().and_then(|object| object.iter().next()) else {
            return request_error(
                400,
                errors::bad_request(
                    "illegal_argument_exception",
                    &format!("Malformed action/metadata line [{line_number}], expected START_OBJECT"),
                ),
            );
        };
        let op = op.clone();
        if !matches!(op.as_str(), "create" | "index") {
            return request_error(
                400,
                errors::bad_request(
                    "illegal_argument_exception",
                    &format!("Malformed action/metadata line [{line_number}], the simulator supports create and index, got [{op}]"),
                ),
            );
        }
        let index = metadata
            .get("_index")
            .and_then(Value::as_str)
            .or(path_target)
            .map(str::to_owned);
        let id = metadata.get("_id").and_then(Value::as_str).map(str::to_owned);
        line_number += 1;
        let Some(source_line) = lines.next().filter(|line| !line.trim().is_empty()) else {
            return request_error(
                400,
                errors::bad_request(
                    "illegal_argument_exception",
                    &format!("The bulk request must be terminated by a newline [\\n] (no source for the action on line [{}])", line_number - 1),
                ),
            );
        };
        let Some(index) = index else {
            return request_error(
                400,
                errors::bad_request(
                    "action_request_validation_exception",
                    "Validation Failed: 1: index is missing;",
                ),
            );
        };
        let item = index_one(state, &op, &index, id, source_line, can_write);
        if item.get("error").is_some() {
            any_error = true;
        }
        items.push(json!({ op: item }));
    }
    BulkAnswer {
        status: 200,
        body: json!({ "errors": any_error, "took": 1, "items": items }),
    }
}

fn request_error(status: u16, body: Value) -> BulkAnswer {
    BulkAnswer { status, body }
}

fn failed_item(index: &str, id: &str, status: u16, error: Value) -> Value {
    json!({ "_index": index, "_id": id, "status": status, "error": error })
}

fn index_one(
    state: &mut State,
    op: &str,
    index: &str,
    id: Option<String>,
    source_line: &str,
    can_write: bool,
) -> Value {
    state.bulk_items_received += 1;
    let shown_id = id.clone().unwrap_or_default();
    if !can_write {
        return failed_item(
            index,
            &shown_id,
            403,
            errors::error_object(
                "security_exception",
                &format!("action [indices:data/write/bulk[s]] is unauthorized for user [reader] with effective roles [viewer] on indices [{index}], this action is granted by the index privileges [create_doc,create,index,write,all]"),
                json!({}),
            ),
        );
    }
    if state.faults.item_rejection_rate > 0.0 && state.next_unit() < state.faults.item_rejection_rate {
        state.items_rejected_429 += 1;
        return failed_item(index, &shown_id, 429, errors::rejected_execution());
    }
    let document: Map<String, Value> = match serde_json::from_str(source_line) {
        Ok(Value::Object(document)) => document,
        Ok(_) | Err(_) => {
            return failed_item(
                index,
                &shown_id,
                400,
                errors::error_object(
                    "mapper_parsing_exception",
                    "failed to parse",
                    json!({
                        "caused_by": {"type": "not_x_content_exception", "reason": "Compressor detection can only be called on some xcontent bytes or compressed xcontent bytes"}
                    }),
                ),
            )
        }
    };
    // Fields mapped `ip` by a matching index template behave like the injected rules.
    let template_rules: Vec<MappingRule> = state
        .template_ip_fields(index)
        .into_iter()
        .map(MappingRule::IpField)
        .collect();
    let violation = state
        .faults
        .mapping_rules
        .iter()
        .chain(template_rules.iter())
        .find_map(|rule| rule.violation(&document));
    if let Some((field, value)) = violation {
        return failed_item(
            index,
            &shown_id,
            400,
            errors::error_object(
                "mapper_parsing_exception",
                &format!("failed to parse field [{field}] of type [ip] in document with id '{shown_id}'. Preview of field's value: '{value}'"),
                json!({ "caused_by": { "type": "illegal_argument_exception", "reason": format!("'{value}' is not an IP string literal.") } }),
            ),
        );
    }
    let is_data_stream = state.index_mut(index).data_stream;
    if is_data_stream {
        if op != "create" {
            return failed_item(
                index,
                &shown_id,
                400,
                errors::error_object(
                    "illegal_argument_exception",
                    "only write ops with an op_type of create are allowed in data streams",
                    json!({}),
                ),
            );
        }
        if !document.contains_key("@timestamp") {
            return failed_item(
                index,
                &shown_id,
                400,
                errors::error_object(
                    "document_parsing_exception",
                    "[1:2] failed to parse: data stream timestamp field [@timestamp] is missing",
                    json!({}),
                ),
            );
        }
    }
    let id = id.unwrap_or_else(|| state.generate_id());
    let target = state.index_mut(index);
    let shown_index = if target.data_stream {
        format!(".ds-{index}-2026.01.01-000001")
    } else {
        index.to_owned()
    };
    let exists = target.documents.contains_key(&id);
    if exists && op == "create" {
        return failed_item(
            &shown_index,
            &id,
            409,
            errors::version_conflict(&shown_index, &id, &target.uuid),
        );
    }
    target.documents.insert(id.clone(), Value::Object(document));
    target.next_seq_no += 1;
    let (status, result) = if exists {
        (200, "updated")
    } else {
        (201, "created")
    };
    json!({
        "_index": shown_index, "_id": id, "_version": 1, "result": result,
        "_shards": {"total": 2, "successful": 1, "failed": 0},
        "_seq_no": target.next_seq_no - 1, "_primary_term": 1, "status": status
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut State, body: &str) -> BulkAnswer {
        execute(state, body.as_bytes(), None, true)
    }

    #[test]
    fn create_twice_answers_409_like_elasticsearch() {
        let mut state = State::default();
        let body = "{\"create\":{\"_index\":\"i\",\"_id\":\"a\"}}\n{\"x\":1}\n";
        let first = run(&mut state, body);
        assert_eq!(first.body["errors"], false);
        assert_eq!(first.body["items"][0]["create"]["status"], 201);
        let second = run(&mut state, body);
        assert_eq!(second.body["errors"], true);
        let item = &second.body["items"][0]["create"];
        assert_eq!(item["status"], 409);
        assert_eq!(item["error"]["type"], "version_conflict_engine_exception");
        assert_eq!(
            item["error"]["reason"],
            "[a]: version conflict, document already exists (current version [1])"
        );
        assert_eq!(state.indices["i"].documents.len(), 1);
    }

    #[test]
    fn missing_final_newline_is_a_400() {
        let mut state = State::default();
        let answer = run(
            &mut state,
            "{\"create\":{\"_index\":\"i\",\"_id\":\"a\"}}\n{\"x\":1}",
        );
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body["error"]["type"], "illegal_argument_exception");
    }

    #[test]
    fn data_streams_need_create_and_timestamp() {
        let mut state = State::default();
        state.index_templates.insert(
            "t".into(),
            json!({"index_patterns": ["logs-*"], "data_stream": {}}),
        );
        let answer = run(
            &mut state,
            "{\"index\":{\"_index\":\"logs-a\"}}\n{\"@timestamp\":\"2026-01-01T00:00:00Z\"}\n{\"create\":{\"_index\":\"logs-a\"}}\n{\"x\":1}\n{\"create\":{\"_index\":\"logs-a\"}}\n{\"@timestamp\":\"2026-01-01T00:00:00Z\"}\n",
        );
        let items = answer.body["items"].as_array().unwrap();
        assert_eq!(items[0]["index"]["status"], 400);
        assert_eq!(items[1]["create"]["status"], 400);
        assert_eq!(items[2]["create"]["status"], 201);
        assert!(items[2]["create"]["_index"]
            .as_str()
            .unwrap()
            .starts_with(".ds-logs-a-"));
    }

    #[test]
    fn mapping_rule_rejects_a_cidr() {
        let mut state = State::default();
        state
            .faults
            .mapping_rules
            .push(MappingRule::IpField("threat.indicator.ip".into()));
        let answer = run(
            &mut state,
            "{\"create\":{\"_index\":\"i\",\"_id\":\"a\"}}\n{\"threat\":{\"indicator\":{\"ip\":\"10.0.0.0/8\"}}}\n{\"create\":{\"_index\":\"i\",\"_id\":\"b\"}}\n{\"threat\":{\"indicator\":{\"ip\":\"10.0.0.1\"}}}\n",
        );
        assert_eq!(answer.body["items"][0]["create"]["status"], 400);
        assert_eq!(
            answer.body["items"][0]["create"]["error"]["type"],
            "mapper_parsing_exception"
        );
        assert_eq!(answer.body["items"][1]["create"]["status"], 201);
    }
}
