//! Error bodies shaped exactly as Elasticsearch 8.x shapes them.

use serde_json::{json, Value};

/// `{"type": .., "reason": ..}` plus extra fields, the inner error object.
pub fn error_object(error_type: &str, reason: &str, extra: Value) -> Value {
    let mut object = json!({ "type": error_type, "reason": reason });
    if let (Some(target), Value::Object(extra)) = (object.as_object_mut(), extra) {
        target.extend(extra);
    }
    object
}

/// The request-level error envelope: `{"error": {root_cause, type, reason, ..}, "status": n}`.
pub fn request_error(status: u16, error: Value) -> Value {
    let mut outer = error.clone();
    if let Some(object) = outer.as_object_mut() {
        object.insert("root_cause".to_owned(), json!([error]));
    }
    json!({ "error": outer, "status": status })
}

/// The 401 body for missing or rejected credentials on `path`.
pub fn authentication_failed(path: &str, principal: Option<&str>) -> Value {
    let reason = match principal {
        None => format!("missing authentication credentials for REST request [{path}]"),
        Some(user) => format!("unable to authenticate user [{user}] for REST request [{path}]"),
    };
    let header = json!({ "WWW-Authenticate": ["Basic realm=\"security\" charset=\"UTF-8\"", "ApiKey"] });
    request_error(
        401,
        error_object("security_exception", &reason, json!({ "header": header })),
    )
}

/// The per-item 409 of a `create` whose `_id` already exists.
pub fn version_conflict(index: &str, id: &str, index_uuid: &str, current_version: u64) -> Value {
    error_object(
        "version_conflict_engine_exception",
        &format!("[{id}]: version conflict, document already exists (current version [{current_version}])"),
        json!({ "index_uuid": index_uuid, "shard": "0", "index": index }),
    )
}

/// The per-item 404 of an `update` whose document does not exist.
pub fn document_missing(index: &str, id: &str, index_uuid: &str) -> Value {
    error_object(
        "document_missing_exception",
        &format!("[{id}]: document missing"),
        json!({ "index_uuid": index_uuid, "shard": "0", "index": index }),
    )
}

/// The per-item 429 of an overloaded write thread pool.
pub fn rejected_execution() -> Value {
    error_object(
        "es_rejected_execution_exception",
        "rejected execution of coordinating operation [coordinating_and_primary_bytes=104857600, \
         replica_bytes=0, all_bytes=104857600, coordinating_operation_bytes=2048, \
         max_coordinating_and_primary_bytes=104857600]",
        json!({}),
    )
}

/// A 404 for a missing template, policy, data stream or index.
pub fn not_found(error_type: &str, reason: &str) -> Value {
    request_error(404, error_object(error_type, reason, json!({})))
}

/// A 400 for a malformed request.
pub fn bad_request(error_type: &str, reason: &str) -> Value {
    request_error(400, error_object(error_type, reason, json!({})))
}

/// The 503 a node answers while it has no master or its shards are unavailable.
pub fn unavailable() -> Value {
    request_error(
        503,
        error_object(
            "master_not_discovered_exception",
            "no master node discovered (simulated outage)",
            json!({}),
        ),
    )
}
