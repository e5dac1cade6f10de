//! `_bulk`: NDJSON parsing and per-item outcomes as Elasticsearch 8.x gives
//! them, for `create`, `index` (add or replace), `update` (partial document
//! merged, `doc_as_upsert`/`upsert`, 404 `document_missing_exception`) and
//! `delete` (200 `deleted`, 404 `not_found`; no source line).

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
        let Some(op) = Op::parse(op) else {
            return request_error(
                400,
                errors::bad_request(
                    "illegal_argument_exception",
                    &format!("Malformed action/metadata line [{line_number}], expected field [create], [delete], [index] or [update] but found [{op}]"),
                ),
            );
        };
        let index = metadata
            .get("_index")
            .and_then(Value::as_str)
            .or(path_target)
            .map(str::to_owned);
        let id = metadata.get("_id").and_then(Value::as_str).map(str::to_owned);
        // Every action but `delete` is followed by a source line.
        let source_line = if op == Op::Delete {
            None
        } else {
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
            Some(source_line)
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
        if id.is_none() && matches!(op, Op::Update | Op::Delete) {
            return request_error(
                400,
                errors::bad_request(
                    "action_request_validation_exception",
                    "Validation Failed: 1: id is missing;",
                ),
            );
        }
        let update = match (op, source_line) {
            (Op::Update, Some(line)) => match UpdateBody::parse(line) {
                Ok(update) => Some(update),
                Err(answer) => return answer,
            },
            _ => None,
        };
        let item = match op {
            Op::Create | Op::Index => index_one(state, op, &index, id, source_line.unwrap_or(""), can_write),
            Op::Update => update_one(
                state,
                &index,
                id.unwrap_or_default(),
                update.expect("parsed above"),
                can_write,
            ),
            Op::Delete => delete_one(state, &index, id.unwrap_or_default(), can_write),
        };
        if item.get("error").is_some() {
            any_error = true;
        }
        items.push(json!({ op.name(): item }));
    }
    BulkAnswer {
        status: 200,
        body: json!({ "errors": any_error, "took": 1, "items": items }),
    }
}

/// A bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Index,
    Update,
    Delete,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "create" => Op::Create,
            "index" => Op::Index,
            "update" => Op::Update,
            "delete" => Op::Delete,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Index => "index",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// The source line of an `update`: a partial document (`doc`) and how to
/// treat a missing document (`doc_as_upsert`, `upsert`).
struct UpdateBody {
    doc: Option<Map<String, Value>>,
    doc_as_upsert: bool,
    upsert: Option<Map<String, Value>>,
    detect_noop: bool,
}

impl UpdateBody {
    fn parse(line: &str) -> Result<Self, BulkAnswer> {
        let malformed =
            |reason: String| request_error(400, errors::bad_request("x_content_parse_exception", &reason));
        let body: Map<String, Value> = match serde_json::from_str(line) {
            Ok(Value::Object(body)) => body,
            Ok(_) => {
                return Err(malformed(
                    "[1:1] [UpdateRequest] Expected START_OBJECT".to_owned(),
                ))
            }
            Err(error) => {
                return Err(malformed(format!(
                    "[1:1] [UpdateRequest] failed to parse: {error}"
                )))
            }
        };
        let mut update = UpdateBody {
            doc: None,
            doc_as_upsert: false,
            upsert: None,
            detect_noop: true,
        };
        for (key, value) in body {
            match (key.as_str(), value) {
                ("doc", Value::Object(doc)) => update.doc = Some(doc),
                ("upsert", Value::Object(upsert)) => update.upsert = Some(upsert),
                ("doc_as_upsert", Value::Bool(flag)) => update.doc_as_upsert = flag,
                ("detect_noop", Value::Bool(flag)) => update.detect_noop = flag,
                ("script" | "scripted_upsert", _) => {
                    return Err(request_error(
                        400,
                        errors::bad_request(
                            "illegal_argument_exception",
                            "the simulator does not run update scripts",
                        ),
                    ))
                }
                (key, _) => return Err(malformed(format!("[1:2] [UpdateRequest] unknown field [{key}]"))),
            }
        }
        if update.doc.is_none() {
            return Err(request_error(
                400,
                errors::bad_request(
                    "action_request_validation_exception",
                    "Validation Failed: 1: script or doc is missing;",
                ),
            ));
        }
        Ok(update)
    }
}

/// Merges `changes` into `source` as Elasticsearch's partial update does
/// (`XContentHelper.update`): a key whose old and new values are both
/// objects is merged recursively; any other new value (scalar, array,
/// null, or an object replacing a non-object) replaces the old one. Keys
/// are taken literally: a dotted key `"a.b"` does not merge into `{"a":
/// {"b": ..}}` but sits beside it. Returns whether anything changed.
pub fn merge_partial(source: &mut Map<String, Value>, changes: Map<String, Value>) -> bool {
    let mut changed = false;
    for (key, new_value) in changes {
        match (source.get_mut(&key), new_value) {
            (Some(Value::Object(old)), Value::Object(new)) => changed |= merge_partial(old, new),
            (Some(old), new_value) => {
                if *old != new_value {
                    *old = new_value;
                    changed = true;
                }
            }
            (None, new_value) => {
                source.insert(key, new_value);
                changed = true;
            }
        }
    }
    changed
}
fn request_error(status: u16, body: Value) -> BulkAnswer {
    BulkAnswer { status, body }
}

fn failed_item(index: &str, id: &str, status: u16, error: Value) -> Value {
    json!({ "_index": index, "_id": id, "status": status, "error": error })
}

/// The per-item checks every action goes through first: privileges and
/// the injected 429s.
fn refused_up_front(state: &mut State, index: &str, id: &str, can_write: bool) -> Option<Value> {
    state.bulk_items_received += 1;
    if !can_write {
        return Some(failed_item(
            index,
            id,
            403,
            errors::error_object(
                "security_exception",
                &format!("action [indices:data/write/bulk[s]] is unauthorized for user [reader] with effective roles [viewer] on indices [{index}], this action is granted by the index privileges [create_doc,create,index,write,all]"),
                json!({}),
            ),
        ));
    }
    if state.faults.item_rejection_rate > 0.0 && state.next_unit() < state.faults.item_rejection_rate {
        state.items_rejected_429 += 1;
        return Some(failed_item(index, id, 429, errors::rejected_execution()));
    }
    None
}

/// The 400 a document gets when a field mapped `ip` (by an injected rule or
/// by the matching template, unless `ignore_malformed`) holds something else.
fn mapping_violation(state: &State, index: &str, id: &str, document: &Map<String, Value>) -> Option<Value> {
    let template_rules: Vec<MappingRule> = state
        .template_ip_fields(index)
        .into_iter()
        .map(MappingRule::IpField)
        .collect();
    let (field, value) = state
        .faults
        .mapping_rules
        .iter()
        .chain(template_rules.iter())
        .find_map(|rule| rule.violation(document))?;
    Some(failed_item(
        index,
        id,
        400,
        errors::error_object(
            "mapper_parsing_exception",
            &format!("failed to parse field [{field}] of type [ip] in document with id '{id}'. Preview of field's value: '{value}'"),
            json!({ "caused_by": { "type": "illegal_argument_exception", "reason": format!("'{value}' is not an IP string literal.") } }),
        ),
    ))
}

/// Data streams take only `create`: the 400 any other action gets.
fn data_stream_refusal(index: &str, id: &str) -> Value {
    failed_item(
        index,
        id,
        400,
        errors::error_object(
            "illegal_argument_exception",
            "only write ops with an op_type of create are allowed in data streams",
            json!({}),
        ),
    )
}

/// A successful item: `_version`, `result`, `_shards`, `_seq_no`, `_primary_term`, `status`.
fn written_item(index: &str, id: &str, version: u64, result: &str, seq_no: u64, status: u16) -> Value {
    let shards = if result == "noop" {
        json!({"total": 0, "successful": 0, "failed": 0})
    } else {
        json!({"total": 2, "successful": 1, "failed": 0})
    };
    json!({
        "_index": index, "_id": id, "_version": version, "result": result,
        "_shards": shards, "_seq_no": seq_no, "_primary_term": 1, "status": status
    })
}

fn index_one(
    state: &mut State,
    op: Op,
    index: &str,
    id: Option<String>,
    source_line: &str,
    can_write: bool,
) -> Value {
    let shown_id = id.clone().unwrap_or_default();
    if let Some(refused) = refused_up_front(state, index, &shown_id, can_write) {
        return refused;
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
    if let Some(refused) = mapping_violation(state, index, &shown_id, &document) {
        return refused;
    }
    let is_data_stream = state.index_mut(index).data_stream;
    if is_data_stream {
        if op != Op::Create {
            return data_stream_refusal(index, &shown_id);
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
    let shown_index = target.shown_name(index);
    let exists = target.documents.contains_key(&id);
    if exists && op == Op::Create {
        return failed_item(
            &shown_index,
            &id,
            409,
            errors::version_conflict(&shown_index, &id, &target.uuid, target.version(&id)),
        );
    }
    let (version, seq_no) = target.write(&id, Some(Value::Object(document)));
    let (status, result) = if exists {
        (200, "updated")
    } else {
        (201, "created")
    };
    written_item(&shown_index, &id, version, result, seq_no, status)
}

/// `update`: merges the partial document into the stored one, or creates
/// it (`doc_as_upsert`, `upsert`), or answers 404 `document_missing_exception`.
fn update_one(state: &mut State, index: &str, id: String, update: UpdateBody, can_write: bool) -> Value {
    if let Some(refused) = refused_up_front(state, index, &id, can_write) {
        return refused;
    }
    // An update may create its index (auto-create), like index and create.
    let target = state.index_mut(index);
    if target.data_stream {
        return data_stream_refusal(index, &id);
    }
    let shown_index = target.shown_name(index);
    let doc = update.doc.expect("checked when parsed");
    let (document, result, status) = match target.documents.get(&id) {
        Some(Value::Object(existing)) => {
            let mut merged = existing.clone();
            let changed = merge_partial(&mut merged, doc);
            if !changed && update.detect_noop {
                let (version, seq_no) = (target.version(&id), target.next_seq_no.saturating_sub(1));
                return written_item(&shown_index, &id, version, "noop", seq_no, 200);
            }
            (merged, "updated", 200)
        }
        Some(_) => unreachable!("stored documents are objects"),
        None if update.doc_as_upsert => (doc, "created", 201),
        None => match update.upsert {
            Some(upsert) => (upsert, "created", 201),
            None => {
                let uuid = target.uuid.clone();
                return failed_item(
                    &shown_index,
                    &id,
                    404,
                    errors::document_missing(&shown_index, &id, &uuid),
                );
            }
        },
    };
    if let Some(refused) = mapping_violation(state, index, &id, &document) {
        return refused;
    }
    let target = state.index_mut(index);
    let (version, seq_no) = target.write(&id, Some(Value::Object(document)));
    written_item(&shown_index, &id, version, result, seq_no, status)
}

/// `delete`: 200 `deleted`, or 404 `not_found` (no error: it is not a
/// failure, and `errors` stays false). A delete never creates its index: a
/// missing index is a 404 `index_not_found_exception`.
fn delete_one(state: &mut State, index: &str, id: String, can_write: bool) -> Value {
    if let Some(refused) = refused_up_front(state, index, &id, can_write) {
        return refused;
    }
    let Some(target) = state.indices.get_mut(index) else {
        return failed_item(
            index,
            &id,
            404,
            errors::error_object(
                "index_not_found_exception",
                &format!("no such index [{index}]"),
                json!({"resource.type": "index_expression", "resource.id": index, "index_uuid": "_na_", "index": index}),
            ),
        );
    };
    if target.data_stream {
        return data_stream_refusal(index, &id);
    }
    let shown_index = target.shown_name(index);
    let existed = target.documents.contains_key(&id);
    let (version, seq_no) = target.write(&id, None);
    if existed {
        written_item(&shown_index, &id, version, "deleted", seq_no, 200)
    } else {
        written_item(&shown_index, &id, version, "not_found", seq_no, 404)
    }
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

    fn item(answer: &BulkAnswer, n: usize) -> (&str, &Value) {
        let (op, item) = answer.body["items"][n]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        (op.as_str(), item)
    }

    fn stored(state: &State, index: &str, id: &str) -> Option<Value> {
        state.indices.get(index)?.documents.get(id).cloned()
    }

    #[test]
    fn index_replaces_and_counts_versions() {
        let mut state = State::default();
        let first = run(
            &mut state,
            "{\"index\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"x\":1,\"y\":{\"z\":1}}\n",
        );
        assert_eq!(first.body["errors"], false);
        assert_eq!(
            item(&first, 0),
            (
                "index",
                &json!({"_index": "l", "_id": "a", "_version": 1, "result": "created",
                    "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1, "status": 201})
            )
        );
        let second = run(
            &mut state,
            "{\"index\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"y\":{\"w\":2}}\n",
        );
        let (_, answer) = item(&second, 0);
        assert_eq!(
            (answer["status"].clone(), answer["result"].clone()),
            (json!(200), json!("updated"))
        );
        assert_eq!(
            (answer["_version"].clone(), answer["_seq_no"].clone()),
            (json!(2), json!(1))
        );
        // Replaced whole, not merged.
        assert_eq!(stored(&state, "l", "a"), Some(json!({"y": {"w": 2}})));
    }

    #[test]
    fn update_merges_objects_recursively_and_replaces_the_rest() {
        let mut state = State::default();
        run(
            &mut state,
            "{\"index\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"threat\":{\"indicator\":{\"ip\":\"10.0.0.1\",\"type\":\"ipv4-addr\"}},\"tags\":[\"a\",\"b\"],\"n\":{\"k\":1}}\n",
        );
        let answer = run(
            &mut state,
            "{\"update\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"doc\":{\"@timestamp\":\"2026-02-01T00:00:00Z\",\"threat\":{\"indicator\":{\"last_seen\":\"x\"}},\"tags\":[\"c\"],\"n\":5,\"a.b\":1}}\n",
        );
        assert_eq!(answer.body["errors"], false);
        let (op, result) = item(&answer, 0);
        assert_eq!(op, "update");
        assert_eq!(
            (
                result["status"].clone(),
                result["result"].clone(),
                result["_version"].clone()
            ),
            (json!(200), json!("updated"), json!(2))
        );
        assert_eq!(
            stored(&state, "l", "a"),
            Some(json!({
                "@timestamp": "2026-02-01T00:00:00Z",
                "threat": {"indicator": {"ip": "10.0.0.1", "type": "ipv4-addr", "last_seen": "x"}},
                "tags": ["c"],
                "n": 5,
                "a.b": 1
            })),
            "objects merge key by key; arrays, scalars and an object's replacement by a scalar replace; dotted keys stay literal"
        );
        // The same partial document again changes nothing: a noop, no new version.
        let again = run(
            &mut state,
            "{\"update\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"doc\":{\"n\":5}}\n",
        );
        let (_, result) = item(&again, 0);
        assert_eq!(
            (
                result["status"].clone(),
                result["result"].clone(),
                result["_version"].clone()
            ),
            (json!(200), json!("noop"), json!(2))
        );
    }

    #[test]
    fn update_of_a_missing_document_is_404_unless_upserted() {
        let mut state = State::default();
        run(
            &mut state,
            "{\"index\":{\"_index\":\"l\",\"_id\":\"other\"}}\n{}\n",
        );
        let answer = run(
            &mut state,
            "{\"update\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"doc\":{\"x\":1}}\n{\"update\":{\"_index\":\"l\",\"_id\":\"b\"}}\n{\"doc\":{\"x\":1},\"doc_as_upsert\":true}\n{\"update\":{\"_index\":\"l\",\"_id\":\"c\"}}\n{\"doc\":{\"x\":1},\"upsert\":{\"x\":0,\"fresh\":true}}\n{\"update\":{\"_index\":\"l\",\"_id\":\"c\"}}\n{\"doc\":{\"x\":1},\"upsert\":{\"x\":0}}\n",
        );
        assert_eq!(answer.body["errors"], true);
        let uuid = state.indices["l"].uuid.clone();
        assert_eq!(
            item(&answer, 0),
            (
                "update",
                &json!({"_index": "l", "_id": "a", "status": 404, "error": {
                    "type": "document_missing_exception", "reason": "[a]: document missing",
                    "index_uuid": uuid, "shard": "0", "index": "l"
                }})
            )
        );
        assert_eq!(item(&answer, 1).1["status"], 201);
        assert_eq!(item(&answer, 1).1["result"], "created");
        assert_eq!(
            stored(&state, "l", "b"),
            Some(json!({"x": 1})),
            "doc_as_upsert stores the doc"
        );
        assert_eq!(item(&answer, 2).1["status"], 201);
        assert_eq!(item(&answer, 3).1["result"], "updated");
        assert_eq!(
            stored(&state, "l", "c"),
            Some(json!({"x": 1, "fresh": true})),
            "upsert creates from `upsert`, the next update merges `doc`"
        );
        assert_eq!(stored(&state, "l", "a"), None);
    }

    #[test]
    fn delete_answers_deleted_or_not_found_without_an_error() {
        let mut state = State::default();
        run(
            &mut state,
            "{\"index\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"x\":1}\n",
        );
        // No source line after a delete: the next line is the next action.
        let answer = run(
            &mut state,
            "{\"delete\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"delete\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"index\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"x\":2}\n",
        );
        assert_eq!(
            answer.body["errors"], false,
            "a delete that finds nothing is not an error"
        );
        assert_eq!(
            item(&answer, 0),
            (
                "delete",
                &json!({"_index": "l", "_id": "a", "_version": 2, "result": "deleted",
                    "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": 1, "_primary_term": 1, "status": 200})
            )
        );
        let (_, missing) = item(&answer, 1);
        assert_eq!(
            (
                missing["status"].clone(),
                missing["result"].clone(),
                missing["_version"].clone()
            ),
            (json!(404), json!("not_found"), json!(3))
        );
        assert!(missing.get("error").is_none());
        let (_, recreated) = item(&answer, 2);
        assert_eq!(
            (recreated["result"].clone(), recreated["_version"].clone()),
            (json!("created"), json!(4)),
            "the tombstone keeps the version count"
        );
        assert_eq!(stored(&state, "l", "a"), Some(json!({"x": 2})));
        // A delete never creates its index.
        let answer = run(&mut state, "{\"delete\":{\"_index\":\"nope\",\"_id\":\"a\"}}\n");
        assert_eq!(answer.body["errors"], true);
        assert_eq!(item(&answer, 0).1["status"], 404);
        assert_eq!(item(&answer, 0).1["error"]["type"], "index_not_found_exception");
        assert!(!state.indices.contains_key("nope"));
    }

    #[test]
    fn updates_and_deletes_are_refused_on_data_streams() {
        let mut state = State::default();
        state.index_templates.insert(
            "t".into(),
            json!({"index_patterns": ["logs-*"], "data_stream": {}}),
        );
        let answer = run(
            &mut state,
            "{\"create\":{\"_index\":\"logs-a\",\"_id\":\"a\"}}\n{\"@timestamp\":\"2026-01-01T00:00:00Z\"}\n{\"update\":{\"_index\":\"logs-a\",\"_id\":\"a\"}}\n{\"doc\":{\"x\":1}}\n{\"delete\":{\"_index\":\"logs-a\",\"_id\":\"a\"}}\n",
        );
        assert_eq!(item(&answer, 0).1["status"], 201);
        for n in [1, 2] {
            assert_eq!(item(&answer, n).1["status"], 400);
            assert_eq!(
                item(&answer, n).1["error"]["reason"],
                "only write ops with an op_type of create are allowed in data streams"
            );
        }
    }

    #[test]
    fn malformed_update_requests_are_refused_whole() {
        let mut state = State::default();
        for (body, error_type) in [
            (
                "{\"update\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"upsert\":{}}\n",
                "action_request_validation_exception",
            ),
            (
                "{\"update\":{\"_index\":\"l\"}}\n{\"doc\":{}}\n",
                "action_request_validation_exception",
            ),
            (
                "{\"delete\":{\"_index\":\"l\"}}\n",
                "action_request_validation_exception",
            ),
            (
                "{\"update\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"doc\":{},\"nonsense\":1}\n",
                "x_content_parse_exception",
            ),
            (
                "{\"upsert\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{}\n",
                "illegal_argument_exception",
            ),
        ] {
            let answer = run(&mut state, body);
            assert_eq!(answer.status, 400, "{body}");
            assert_eq!(answer.body["error"]["type"], error_type, "{body}");
        }
    }

    #[test]
    fn ignore_malformed_lets_a_cidr_through_a_template_ip_field() {
        let mut state = State::default();
        let template = |ignore: bool| {
            let mut ip = json!({"type": "ip"});
            if ignore {
                ip["ignore_malformed"] = json!(true);
            }
            json!({"index_patterns": ["l*"], "template": {"mappings": {"properties": {"threat": {"properties": {"indicator": {"properties": {"ip": ip}}}}}}}})
        };
        let body = "{\"index\":{\"_index\":\"l\",\"_id\":\"a\"}}\n{\"threat\":{\"indicator\":{\"ip\":\"10.0.0.0/8\"}}}\n";
        state.index_templates.insert("t".into(), template(false));
        assert_eq!(item(&run(&mut state, body), 0).1["status"], 400);
        // An update that would bring a CIDR in is refused the same way.
        run(&mut state, "{\"index\":{\"_index\":\"l\",\"_id\":\"b\"}}\n{}\n");
        let answer = run(
            &mut state,
            "{\"update\":{\"_index\":\"l\",\"_id\":\"b\"}}\n{\"doc\":{\"threat\":{\"indicator\":{\"ip\":\"10.0.0.0/8\"}}}}\n",
        );
        assert_eq!(item(&answer, 0).1["error"]["type"], "mapper_parsing_exception");
        assert_eq!(stored(&state, "l", "b"), Some(json!({})));
        state.index_templates.insert("t".into(), template(true));
        assert_eq!(item(&run(&mut state, body), 0).1["status"], 201);
    }

    #[test]
    fn merge_partial_follows_elasticsearch() {
        let mut source = json!({"a": {"b": 1, "c": {"d": 1}}, "e": [1], "f": {"g": 1}})
            .as_object()
            .unwrap()
            .clone();
        let changes = json!({"a": {"c": {"x": 2}}, "e": [2], "f": null, "h": {"i": 1}})
            .as_object()
            .unwrap()
            .clone();
        assert!(merge_partial(&mut source, changes.clone()));
        assert_eq!(
            Value::Object(source.clone()),
            json!({"a": {"b": 1, "c": {"d": 1, "x": 2}}, "e": [2], "f": null, "h": {"i": 1}})
        );
        assert!(!merge_partial(&mut source, changes));
    }
}
