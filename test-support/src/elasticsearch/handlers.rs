//! Routing and handling of every request the simulator answers. One
//! handler routes by method and path so that auth, faults and counters apply
//! uniformly, as they do in front of every real REST handler.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};

use super::state::{Credential, State};
use super::{bulk, errors, filter_path, Shared};

/// The version the simulator reports in `GET /`.
pub const SIMULATED_VERSION: &str = "8.7.1";

pub(crate) async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = {
        let mut state = shared.lock();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.faults.delay
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let (status, value) = answer(&shared, &method, &uri, &headers, &body);
    shared.lock().in_flight -= 1;
    let mut response = match value {
        Some(value) => (status, axum::Json(value)).into_response(),
        None => status.into_response(),
    };
    response
        .headers_mut()
        .insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"security\" charset=\"UTF-8\""),
        );
    }
    response
}

fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Option<Value>) {
    let path = uri.path().to_owned();
    let query = parse_query(uri.query().unwrap_or(""));
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    let mut state = shared.lock();
    *state
        .request_counts
        .entry(count_key(method, &segments))
        .or_default() += 1;
    if state.faults.unavailable {
        return (StatusCode::SERVICE_UNAVAILABLE, Some(errors::unavailable()));
    }
    let can_write = match authenticate(&state.credentials, headers) {
        Ok(can_write) => can_write,
        Err(principal) => {
            return (
                StatusCode::UNAUTHORIZED,
                Some(errors::authentication_failed(&path, principal.as_deref())),
            )
        }
    };
    if let Some(limit) = state.faults.max_content_length {
        if body.len() > limit {
            return (StatusCode::PAYLOAD_TOO_LARGE, None);
        }
    }
    if let (Some(answer), Some(&"_bulk")) = (&state.faults.hollow_bulk_answer, segments.last()) {
        return (StatusCode::OK, Some(answer.clone()));
    }
    let body = match decode_body(headers, body) {
        Ok(body) => body,
        Err(reason) => return status_json(400, errors::bad_request("parse_exception", &reason)),
    };
    let filter = query
        .iter()
        .find(|(key, _)| key == "filter_path")
        .map(|(_, v)| v.clone());
    let (status, value) = route(&mut state, method, &segments, &body, can_write);
    let value = match filter {
        Some(filter) if status.is_success() => filter_path::apply(value, &filter),
        _ => value,
    };
    (status, Some(value))
}

fn status_json(status: u16, value: Value) -> (StatusCode, Option<Value>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Some(value),
    )
}

fn route(
    state: &mut State,
    method: &Method,
    segments: &[&str],
    body: &[u8],
    can_write: bool,
) -> (StatusCode, Value) {
    let json_body = || serde_json::from_slice::<Value>(body).ok();
    let ok = |value: Value| (StatusCode::OK, value);
    let status = |code: u16, value: Value| (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), value);
    match (method.as_str(), segments) {
        ("GET" | "HEAD", []) => ok(root_info()),
        ("POST" | "PUT", ["_bulk"]) => bulk_status(bulk::execute(state, body, None, can_write)),
        ("POST" | "PUT", [target, "_bulk"]) => {
            bulk_status(bulk::execute(state, body, Some(target), can_write))
        }
        ("PUT", ["_index_template", name]) => match json_body() {
            Some(template) if template.get("index_patterns").is_some() => {
                state.index_templates.insert((*name).to_owned(), template);
                ok(json!({"acknowledged": true}))
            }
            _ => status(
                400,
                errors::bad_request(
                    "action_request_validation_exception",
                    "Validation Failed: 1: index patterns are missing;",
                ),
            ),
        },
        ("GET", ["_index_template", name]) => match state.index_templates.get(*name) {
            Some(template) => ok(json!({"index_templates": [{"name": name, "index_template": template}]})),
            None => status(
                404,
                errors::not_found(
                    "resource_not_found_exception",
                    &format!("index template matching [{name}] not found"),
                ),
            ),
        },
        ("PUT", ["_ilm", "policy", name]) => match json_body().and_then(|body| body.get("policy").cloned()) {
            Some(policy) => {
                let version = state
                    .ilm_policies
                    .get(*name)
                    .map(|(version, _)| version + 1)
                    .unwrap_or(1);
                state.ilm_policies.insert((*name).to_owned(), (version, policy));
                ok(json!({"acknowledged": true}))
            }
            None => status(
                400,
                errors::bad_request("parse_exception", "request body is required"),
            ),
        },
        ("GET", ["_ilm", "policy", name]) => match state.ilm_policies.get(*name) {
            Some((version, policy)) => ok(json!({ *name: {
                "version": version, "modified_date": "2026-01-01T00:00:00.000Z", "policy": policy,
                "in_use_by": {"indices": [], "data_streams": [], "composable_templates": []}
            }})),
            None => status(
                404,
                errors::not_found(
                    "resource_not_found_exception",
                    &format!("Lifecycle policy not found: {name}"),
                ),
            ),
        },
        ("PUT", ["_data_stream", name]) => {
            if state.indices.get(*name).is_some_and(|index| index.data_stream) {
                return status(
                    400,
                    errors::bad_request(
                        "resource_already_exists_exception",
                        &format!("data_stream [{name}] already exists"),
                    ),
                );
            }
            if !state.template_wants_data_stream(name) {
                return status(
                    400,
                    errors::bad_request(
                        "illegal_argument_exception",
                        &format!("no matching index template found for data stream [{name}]"),
                    ),
                );
            }
            state.index_mut(name).data_stream = true;
            ok(json!({"acknowledged": true}))
        }
        ("GET", ["_data_stream", name]) => match state.indices.get(*name).filter(|index| index.data_stream) {
            Some(_) => ok(
                json!({"data_streams": [{"name": name, "timestamp_field": {"name": "@timestamp"}, "status": "GREEN"}]}),
            ),
            None => status(
                404,
                errors::not_found("index_not_found_exception", &format!("no such index [{name}]")),
            ),
        },
        ("GET", ["_security", "_authenticate"]) => {
            ok(json!({"username": "simulated", "authentication_type": "realm"}))
        }
        ("GET" | "POST", ["_security", "user", "_has_privileges"]) => {
            let requested = json_body().unwrap_or(Value::Null);
            ok(has_privileges(&requested, can_write))
        }
        ("POST" | "GET", [_index, "_refresh"]) => {
            ok(json!({"_shards": {"total": 1, "successful": 1, "failed": 0}}))
        }
        ("GET" | "POST", [index, "_count"]) => match state.indices.get(*index) {
            Some(found) => ok(json!({"count": found.documents.len()})),
            None => status(
                404,
                errors::not_found("index_not_found_exception", &format!("no such index [{index}]")),
            ),
        },
        ("GET" | "POST", [index, "_search"]) => match state.indices.get(*index) {
            Some(found) => {
                let size = json_body()
                    .and_then(|body| body.get("size").and_then(Value::as_u64))
                    .unwrap_or(10) as usize;
                let hits: Vec<Value> = found
                    .documents
                    .iter()
                    .take(size)
                    .map(|(id, source)| json!({"_index": index, "_id": id, "_source": source}))
                    .collect();
                ok(
                    json!({"hits": {"total": {"value": found.documents.len(), "relation": "eq"}, "hits": hits}}),
                )
            }
            None => status(
                404,
                errors::not_found("index_not_found_exception", &format!("no such index [{index}]")),
            ),
        },
        ("DELETE", [index]) => match state.indices.remove(*index) {
            Some(_) => ok(json!({"acknowledged": true})),
            None => status(
                404,
                errors::not_found("index_not_found_exception", &format!("no such index [{index}]")),
            ),
        },
        _ => status(
            400,
            errors::bad_request(
                "illegal_argument_exception",
                &format!(
                    "request [/{}] contains unrecognized parameter or method [{}]",
                    segments.join("/"),
                    method
                ),
            ),
        ),
    }
}

fn bulk_status(answer: bulk::BulkAnswer) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        answer.body,
    )
}

fn has_privileges(requested: &Value, can_write: bool) -> Value {
    let mut index = serde_json::Map::new();
    let mut all = true;
    for entry in requested
        .get("index")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let privileges: Vec<&str> = entry
            .get("privileges")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in entry
            .get("names")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let granted: serde_json::Map<String, Value> = privileges
                .iter()
                .map(|privilege| {
                    let allowed =
                        can_write || matches!(*privilege, "read" | "view_index_metadata" | "monitor");
                    all &= allowed;
                    ((*privilege).to_owned(), Value::Bool(allowed))
                })
                .collect();
            index.insert(name.to_owned(), Value::Object(granted));
        }
    }
    json!({"username": "simulated", "has_all_requested": all, "cluster": {}, "index": index, "application": {}})
}

fn root_info() -> Value {
    json!({
        "name": "simulated-node-1",
        "cluster_name": "threatbeat-simulator",
        "cluster_uuid": "c2ltdWxhdGVkLWNsdXN0ZXI",
        "version": {
            "number": SIMULATED_VERSION,
            "build_flavor": "default",
            "build_type": "docker",
            "build_hash": "f229ed3f893a515d590d0f39b05f68913e2d9b53",
            "build_date": "2023-04-27T04:33:42.127815583Z",
            "build_snapshot": false,
            "lucene_version": "9.5.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    })
}

fn count_key(method: &Method, segments: &[&str]) -> String {
    let kind = match segments {
        [] => "/".to_owned(),
        [first, ..] if first.starts_with('_') => match segments {
            ["_ilm", "policy", ..] => "_ilm/policy".to_owned(),
            ["_security", rest @ ..] => format!("_security/{}", rest.join("/")),
            _ => (*first).to_owned(),
        },
        [_, second, ..] => (*second).to_owned(),
        [_] => "index".to_owned(),
    };
    format!("{} {}", method.as_str(), kind)
}

/// `Ok(can_write)` for accepted (or unneeded) credentials, `Err(principal)` otherwise.
fn authenticate(credentials: &[Credential], headers: &HeaderMap) -> Result<bool, Option<String>> {
    if credentials.is_empty() {
        return Ok(true);
    }
    let header = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .ok_or(None)?;
    let (scheme, encoded) = header.split_once(' ').ok_or(None)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(None)?;
    let (principal, secret) = decoded.split_once(':').ok_or(None)?;
    for credential in credentials {
        match credential {
            Credential::Basic {
                username,
                password,
                can_write,
            } if scheme.eq_ignore_ascii_case("basic") && username == principal && password == secret => {
                return Ok(*can_write)
            }
            Credential::ApiKey { id, key, can_write }
                if scheme.eq_ignore_ascii_case("apikey") && id == principal && key == secret =>
            {
                return Ok(*can_write)
            }
            _ => {}
        }
    }
    Err(Some(principal.to_owned()))
}

fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    let gzip = headers
        .get("content-encoding")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut decoded)
        .map_err(|error| format!("failed to decompress the gzip request body: {error}"))?;
    Ok(decoded)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        match bytes[position] {
            b'%' if position + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[position + 1..position + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        position += 3;
                    }
                    _ => {
                        out.push(b'%');
                        position += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                position += 1;
            }
            byte => {
                out.push(byte);
                position += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_strings() {
        assert_eq!(
            parse_query("filter_path=errors%2Citems.*.status&pipeline=a+b"),
            vec![
                ("filter_path".to_owned(), "errors,items.*.status".to_owned()),
                ("pipeline".to_owned(), "a b".to_owned())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
