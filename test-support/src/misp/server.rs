//! The HTTP side: one handler that routes by path, applies MISP's body
//! rules (§3), authentication (§2), errors (§9) and injected faults.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::search::{self, Hidden, Scope};
use super::{Edit, ExactFailures, Fault, RequestRecord, State};

type Shared = Arc<Mutex<State>>;

pub(super) fn spawn(
    listener: tokio::net::TcpListener,
    state: Shared,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Router::new().fallback(handle).with_state(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

pub(super) fn apply_edit(state: &mut State, edit: &Edit) {
    match edit {
        Edit::TouchAttribute(uuid, timestamp) => {
            state.store.touch_attribute(uuid, *timestamp);
        }
        Edit::TouchEvent(uuid, timestamp) => {
            state.store.touch_event(uuid, *timestamp);
        }
        Edit::DeleteAttribute(uuid, timestamp) => {
            state
                .store
                .set_attribute_field(uuid, "deleted", Value::Bool(true));
            state.store.touch_attribute(uuid, *timestamp);
        }
        Edit::SetToIds(uuid, to_ids, timestamp) => {
            state
                .store
                .set_attribute_field(uuid, "to_ids", Value::Bool(*to_ids));
            state.store.touch_attribute(uuid, *timestamp);
        }
    }
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Body::from(text))
        .unwrap_or_default()
}

fn misp_error(status: StatusCode, message: &str, path: &str) -> Response {
    json_response(status, &json!({"name": message, "message": message, "url": path}))
}

const AUTH_FAILED: &str =
    "Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.";

/// §2: `X-MISP-AUTH` wins over `Authorization`; comma-separated keys; exactly 40 alphanumerics; `Basic ...` is skipped.
fn authorized(state: &State, headers: &HeaderMap) -> bool {
    let raw = headers
        .get("x-misp-auth")
        .or_else(|| headers.get("authorization"))
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if raw.starts_with("Basic") {
        return false;
    }
    raw.split(',').map(str::trim).any(|key| {
        key.len() == 40
            && key.chars().all(|c| c.is_ascii_alphanumeric())
            && state.api_keys.iter().any(|known| known == key)
    })
}

/// Deterministic xorshift step for the failure rate.
fn next_random(seed: &mut u64) -> u64 {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *seed = x;
    x
}

fn next_exact_fault(exact: &mut ExactFailures) -> Option<Fault> {
    if exact.kinds.is_empty() {
        return None;
    }
    if exact.pending.is_empty() {
        let mut block: Vec<bool> = (0..exact.block)
            .map(|position| position < exact.failing)
            .collect();
        // Fisher–Yates.
        for last in (1..block.len()).rev() {
            let other = (next_random(&mut exact.seed) % (last as u64 + 1)) as usize;
            block.swap(last, other);
        }
        exact.pending.extend(block);
    }
    if !exact.pending.pop_front().unwrap_or(false) {
        return None;
    }
    let index = (next_random(&mut exact.seed) % exact.kinds.len() as u64) as usize;
    Some(exact.kinds[index].clone())
}

fn pick_fault(state: &mut State) -> Option<Fault> {
    let fault = next_fault(state);
    if let Some(fault) = &fault {
        state.injected.push(fault.clone());
    }
    fault
}

fn next_fault(state: &mut State) -> Option<Fault> {
    if let Some(fault) = state.faults.pop_front() {
        return Some(fault);
    }
    if let Some(exact) = state.exact_failures.as_mut() {
        return next_exact_fault(exact);
    }
    let (percent, kinds, seed) = state.failure_rate.as_mut()?;
    if kinds.is_empty() {
        return None;
    }
    let roll = next_random(seed);
    if roll % 100 < u64::from(*percent) {
        let index = (next_random(seed) % kinds.len() as u64) as usize;
        return Some(kinds[index].clone());
    }
    None
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    // Logged on arrival (status 0 until answered), so that requests whose
    // client gave up (timeouts) still show in the log.
    let index = {
        let mut state = lock(&state);
        state.log.push(RequestRecord {
            method: method.to_string(),
            path: path.clone(),
            body: Value::Null,
            status: 0,
            items: 0,
            authorized_header: headers.contains_key("authorization"),
        });
        state.log.len() - 1
    };
    let response = route(&state, &method, &path, &headers, &body, index).await;
    if let Some(record) = lock(&state).log.get_mut(index) {
        record.status = response.status().as_u16();
    }
    response
}

fn update_record(state: &Shared, index: usize, change: impl FnOnce(&mut RequestRecord)) {
    if let Some(record) = lock(state).log.get_mut(index) {
        change(record);
    }
}

async fn route(
    state: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    index: usize,
) -> Response {
    if path == "/oauth2/token" && method == Method::POST {
        return oauth_token(state, body);
    }
    let is_authorized = {
        let state = lock(state);
        authorized(&state, headers) || bearer_ok(&state, headers)
    };
    let search_scope = match path.trim_end_matches(".json") {
        "/events/restSearch" => Some(Scope::Events),
        "/attributes/restSearch" => Some(Scope::Attributes),
        _ => None,
    };
    if !is_authorized {
        return misp_error(StatusCode::FORBIDDEN, AUTH_FAILED, path);
    }
    match (method, path, search_scope) {
        (&Method::GET, "/servers/getVersion", _) => json_response(
            StatusCode::OK,
            &json!({"version": "2.5.1", "pymisp_recommended_version": "2.5.1", "perm_sync": false, "perm_sighting": false, "perm_galaxy_editor": false, "request_encoding": ["gzip", "br"], "filter_sightings": true}),
        ),
        (&Method::GET, "/users/view/me", _) | (&Method::GET, "/users/view/me.json", _) => json_response(
            StatusCode::OK,
            &json!({"User": {"id": "1", "email": "admin@sim.test", "org_id": "1", "role_id": "1"}, "Role": {"id": "1", "name": "admin", "perm_auth": true}, "UserSetting": [], "Organisation": {"id": "1", "name": "SIM"}}),
        ),
        (&Method::GET, "/attributes/describeTypes.json", _) => {
            let file = crate::data::fixture("misp/describeTypes.json");
            match std::fs::read(&file).ok().and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()) {
                Some(types) => json_response(StatusCode::OK, &types),
                None => misp_error(StatusCode::INTERNAL_SERVER_ERROR, "An Internal Error Has Occurred.", path),
            }
        }
        (&Method::GET, _, Some(_)) => misp_error(
            StatusCode::BAD_REQUEST,
            "Restsearch queries using GET and no parameters are not allowed. If you have passed parameters via a JSON body, make sure you use POST requests.",
            path,
        ),
        (&Method::POST, _, Some(scope)) => rest_search(state, scope, path, headers, body, index).await,
        _ => misp_error(StatusCode::NOT_FOUND, "Not Found", path),
    }
}

fn bearer_ok(state: &State, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value
        .strip_prefix("Bearer sim-token-")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n >= 1 && n <= state.oauth_tokens_issued)
}

/// A tiny client-credentials token endpoint (`client_id=threatbeat`, `client_secret=s3cret`).
fn oauth_token(state: &Shared, body: &Bytes) -> Response {
    let form: Map<String, Value> = String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.replace('+', " "))))
        .collect();
    let valid = form.get("grant_type").and_then(Value::as_str) == Some("client_credentials")
        && form.get("client_id").and_then(Value::as_str) == Some("threatbeat")
        && form.get("client_secret").and_then(Value::as_str) == Some("s3cret");
    if !valid {
        return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_client"}));
    }
    let mut state = lock(state);
    state.oauth_tokens_issued += 1;
    let token = format!("sim-token-{}", state.oauth_tokens_issued);
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": state.oauth_token_lifetime}),
    )
}

async fn rest_search(
    state: &Shared,
    scope: Scope,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    index: usize,
) -> Response {
    const EMPTY_BODY: &str =
        "Either specify the search terms in the url, or POST a json with the filter parameters.";
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    // §3: without the JSON content type the server sees no body at all.
    if !is_json || body.iter().all(u8::is_ascii_whitespace) {
        return misp_error(StatusCode::BAD_REQUEST, EMPTY_BODY, path);
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => {
            return misp_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Invalid JSON input. Make sure that the JSON input is a correctly formatted JSON string. This request has been blocked to avoid an unfiltered request.",
                path,
            )
        }
    };
    let mut filters = match parsed {
        Value::Object(mut map) => match map.remove("request") {
            Some(Value::Object(inner)) => inner,
            Some(other) => {
                map.insert("request".into(), other);
                map
            }
            None => map,
        },
        _ => Map::new(),
    };
    if filters.is_empty() {
        return misp_error(StatusCode::BAD_REQUEST, EMPTY_BODY, path);
    }
    for value in filters.values_mut() {
        if let Value::String(text) = value {
            let trimmed = text.trim().to_owned();
            *value = match trimmed.find("||") {
                Some(position) if position > 0 => {
                    Value::Array(trimmed.split("||").map(|s| Value::String(s.to_owned())).collect())
                }
                _ => Value::String(trimmed),
            };
        }
    }
    let logged_filters = Value::Object(filters.clone());
    update_record(state, index, |record| record.body = logged_filters);

    let (fault, delay) = {
        let mut state = lock(state);
        state.search_count += 1;
        (pick_fault(&mut state), state.delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(Fault::Slow(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let result = {
        let mut guard = lock(state);
        let now = guard.now_override.unwrap_or_else(search::now);
        let hidden = Hidden {
            warninglisted: &guard.warninglisted,
            always_enforce: guard.always_enforce_warninglist,
            hidden_events: &guard.hidden_events,
        };
        let result = search::search(scope, &guard.store.events, &filters, &hidden, now);
        // Edits scheduled after this request happen once it is answered.
        let count = guard.search_count;
        let due: Vec<Edit> = guard
            .edits
            .iter()
            .filter(|(after, _)| *after == count)
            .map(|(_, e)| e.clone())
            .collect();
        for edit in &due {
            apply_edit(&mut guard, edit);
        }
        result
    };
    let result = match result {
        Ok(result) => result,
        Err(error) => {
            return misp_error(
                StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &error.message,
                path,
            )
        }
    };
    let items = match scope {
        Scope::Events => result.body["response"].as_array().map_or(0, Vec::len),
        Scope::Attributes => result.body["response"]["Attribute"]
            .as_array()
            .map_or(0, Vec::len),
    };
    update_record(state, index, |record| record.items = items);
    let mut text = result.body.to_string();
    text.push('\n');
    let ok = |body: Body| {
        Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "application/json")
            .header("X-Result-Count", result.result_count.to_string())
            .header("X-Skipped-Elements-Count", result.skipped.to_string())
            .header("X-Response-Format", "json")
            .body(body)
            .unwrap_or_default()
    };
    match fault {
        None | Some(Fault::Slow(_)) => ok(Body::from(text)),
        Some(Fault::InternalError) => misp_error(StatusCode::INTERNAL_SERVER_ERROR, "An Internal Error Has Occurred.", path),
        Some(Fault::BadGatewayHtml) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header("Content-Type", "text/html")
            .body(Body::from("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"))
            .unwrap_or_default(),
        Some(Fault::ServiceUnavailableHtml) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("Content-Type", "text/html")
            .body(Body::from("<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center></body></html>\n"))
            .unwrap_or_default(),
        Some(Fault::LoginPageHtml) => Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "text/html; charset=UTF-8")
            .body(Body::from("<!DOCTYPE html>\n<html><head><title>Users - MISP</title></head><body><form id=\"UserLoginForm\" method=\"post\" action=\"/users/login\"></form></body></html>\n"))
            .unwrap_or_default(),
        Some(Fault::TruncatedJson) => {
            let cut = text.len() / 2;
            ok(Body::from(text.as_bytes()[..cut].to_vec()))
        }
        Some(Fault::EmptyBody) => ok(Body::empty()),
        Some(Fault::InvalidUtf8) => {
            let mut bytes = b"{\"response\": [{\"Event\": {\"info\": \"".to_vec();
            bytes.extend_from_slice(&[0xff, 0xfe, 0xfd]);
            bytes.extend_from_slice(b"\"}}]}\n");
            ok(Body::from(bytes))
        }
        Some(Fault::ErrorObject) => json_response(
            StatusCode::OK,
            &json!({"name": "An Internal Error Has Occurred.", "message": "An Internal Error Has Occurred.", "url": path}),
        ),
        Some(Fault::ConnectionReset) => {
            let head = text.as_bytes()[..text.len().min(64)].to_vec();
            let stream = futures::stream::iter(vec![
                Ok::<Bytes, std::io::Error>(Bytes::from(head)),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated connection reset")),
            ]);
            Response::builder()
                .status(StatusCode::OK)
                .header("Content-Type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_default()
        }
        Some(Fault::RateLimited(reset)) => {
            let mut response = misp_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.", path);
            let headers = response.headers_mut();
            headers.insert("X-Rate-Limit-Limit", "100".parse().expect("static header"));
            headers.insert("X-Rate-Limit-Remaining", "0".parse().expect("static header"));
            headers.insert("X-Rate-Limit-Reset", reset.to_string().parse().expect("digits are a valid header"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn an_exact_failure_rate_fails_that_share_of_every_block() {
        let mut exact = ExactFailures {
            failing: 3,
            block: 10,
            kinds: vec![Fault::InternalError, Fault::ConnectionReset],
            seed: 42,
            pending: VecDeque::new(),
        };
        let outcomes: Vec<Option<Fault>> = (0..100).map(|_| next_exact_fault(&mut exact)).collect();
        for block in outcomes.chunks(10) {
            assert_eq!(
                block.iter().filter(|fault| fault.is_some()).count(),
                3,
                "{block:?}"
            );
        }
        let first_positions: Vec<bool> = outcomes[..10].iter().map(Option::is_some).collect();
        let later_positions: Vec<bool> = outcomes[10..]
            .chunks(10)
            .flat_map(|block| block.iter().map(Option::is_some))
            .collect();
        assert!(
            later_positions
                .chunks(10)
                .any(|block| block != first_positions.as_slice()),
            "the positions are shuffled block by block"
        );
        assert!(
            outcomes.contains(&Some(Fault::ConnectionReset))
                && outcomes.contains(&Some(Fault::InternalError))
        );
    }
}
