//! A Kibana 8.x simulator for `threatbeat setup --dashboards`: the saved-objects
//! import API (`POST [/s/<space>]/api/saved_objects/_import`) checked the way
//! Kibana checks it, with what it stored kept for the test to read.
//!
//! In Kibana's order: the route (anything else is 404), authentication (basic
//! or `ApiKey`, 401 with Kibana's JSON error), the `kbn-xsrf` header (400),
//! a `multipart/form-data` body (415 otherwise) with a `file` part named
//! `*.ndjson` (400), the query (`overwrite` xor `createNewCopies`), then every
//! NDJSON line: JSON with `type`, `id`, `attributes` (400 otherwise; the export
//! summary line is skipped). Per object, as Kibana answers 200 with
//! `success: false`: an unknown type (`unsupported_type`), a reference to an
//! object neither in the file nor stored (`missing_references`), an existing
//! object without `overwrite` (`conflict`), a `typeMigrationVersion` newer
//! than this Kibana, and errors the test injects. The other objects are stored.
//!
//! ```no_run
//! # async fn demo() {
//! use threatbeat_test_support::kibana::{KibanaCredential, KibanaSimulator};
//! let kibana = KibanaSimulator::start(vec![KibanaCredential::basic("elastic", "changeme")]).await;
//! // ... point setup.kibana.host at kibana.url(), run `setup --dashboards`, then:
//! assert!(kibana.object("default", "dashboard", "ad9c7430-72de-11eb-a3e3-b3cc7c78a70f").is_some());
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::server::{lock, Shared, SimServer};

/// The Kibana version the simulator claims: objects migrated for a newer one are refused.
pub const SIMULATED_VERSION: &str = "8.15.0";

/// The saved-object types the simulator imports (a subset of Kibana's importable types).
pub const IMPORTABLE_TYPES: [&str; 9] = [
    "index-pattern",
    "visualization",
    "lens",
    "search",
    "dashboard",
    "map",
    "tag",
    "query",
    "config",
];

/// Who may call the simulator.
#[derive(Debug, Clone)]
pub enum KibanaCredential {
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
        /// Whether the user may write saved objects (else 403).
        can_import: bool,
    },
    /// `Authorization: ApiKey base64(id:key)`.
    ApiKey {
        /// The key's id.
        id: String,
        /// The key.
        key: String,
        /// Whether the key may write saved objects (else 403).
        can_import: bool,
    },
}

impl KibanaCredential {
    /// A user who may import.
    pub fn basic(username: &str, password: &str) -> Self {
        Self::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
            can_import: true,
        }
    }

    /// An API key that may import.
    pub fn api_key(id: &str, key: &str) -> Self {
        Self::ApiKey {
            id: id.to_owned(),
            key: key.to_owned(),
            can_import: true,
        }
    }
}

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string.
    pub query: String,
    /// `basic:<user>`, `api_key:<id>`, or `None` when no credentials came.
    pub principal: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// The simulator's state.
#[derive(Debug, Default)]
pub struct KibanaState {
    /// Empty: security off, anyone may import.
    pub credentials: Vec<KibanaCredential>,
    /// Spaces besides `default`.
    pub spaces: BTreeSet<String>,
    /// Stored objects by `(space, type, id)`.
    pub objects: BTreeMap<(String, String, String), Value>,
    /// Every request.
    pub requests: Vec<RecordedRequest>,
    /// Injected per-object errors: `(type, id)` → message.
    pub failing_objects: HashMap<(String, String), String>,
}

/// A running Kibana simulator. Stops when dropped.
pub struct KibanaSimulator {
    server: SimServer<KibanaState>,
}

impl KibanaSimulator {
    /// Starts one that requires one of `credentials` (none: security off).
    pub async fn start(credentials: Vec<KibanaCredential>) -> Self {
        let state = KibanaState {
            credentials,
            ..KibanaState::default()
        };
        let server = SimServer::start(state, |shared| {
            Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move { handle(&shared, &method, &uri, &headers, &body) }
            })
        })
        .await;
        Self { server }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// The address it listens on (to put a TLS front before it).
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// Creates a space.
    pub fn add_space(&self, id: &str) {
        self.server.state().spaces.insert(id.to_owned());
    }

    /// Makes the import of `(object_type, id)` fail with `message` (Kibana's `unknown` error).
    pub fn fail_object(&self, object_type: &str, id: &str, message: &str) {
        self.server
            .state()
            .failing_objects
            .insert((object_type.to_owned(), id.to_owned()), message.to_owned());
    }

    /// The stored object, as imported.
    pub fn object(&self, space: &str, object_type: &str, id: &str) -> Option<Value> {
        self.server
            .state()
            .objects
            .get(&(space.to_owned(), object_type.to_owned(), id.to_owned()))
            .cloned()
    }

    /// Every stored object of a space.
    pub fn objects(&self, space: &str) -> Vec<Value> {
        self.server
            .state()
            .objects
            .iter()
            .filter(|((object_space, _, _), _)| object_space == space)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.state().requests.clone()
    }
}

/// Kibana's error body.
fn kibana_error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
    });
    (status, Json(body)).into_response()
}

fn handle(
    shared: &Shared<KibanaState>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let principal = principal(headers);
    let response = answer(shared, method, uri, headers, body);
    lock(shared).requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        principal,
        status: response.status().as_u16(),
    });
    response
}

/// Who the `Authorization` header claims to be (for the record; checked in `authenticate`).
fn principal(headers: &HeaderMap) -> Option<String> {
    let (scheme, pair) = decoded_authorization(headers)?;
    let name = pair.split(':').next().unwrap_or_default().to_owned();
    Some(match scheme.as_str() {
        "basic" => format!("basic:{name}"),
        _ => format!("api_key:{name}"),
    })
}

/// `(scheme in lowercase, decoded "a:b")` of the `Authorization` header.
fn decoded_authorization(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    Some((scheme.to_ascii_lowercase(), String::from_utf8(decoded).ok()?))
}

enum Auth {
    Allowed,
    Unauthenticated(String),
    Forbidden,
}

fn authenticate(state: &KibanaState, headers: &HeaderMap) -> Auth {
    if state.credentials.is_empty() {
        return Auth::Allowed;
    }
    let Some((scheme, pair)) = decoded_authorization(headers) else {
        return Auth::Unauthenticated("Unauthorized".to_owned());
    };
    let (name, secret) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
    for credential in &state.credentials {
        match (credential, scheme.as_str()) {
            (
                KibanaCredential::Basic {
                    username,
                    password,
                    can_import,
                },
                "basic",
            ) if username == name && password == secret => {
                return if *can_import {
                    Auth::Allowed
                } else {
                    Auth::Forbidden
                };
            }
            (KibanaCredential::ApiKey { id, key, can_import }, "apikey") if id == name && key == secret => {
                return if *can_import {
                    Auth::Allowed
                } else {
                    Auth::Forbidden
                };
            }
            _ => {}
        }
    }
    Auth::Unauthenticated(match scheme.as_str() {
        "basic" => format!(
            "[security_exception]: unable to authenticate user [{name}] for REST request [/_security/_authenticate]"
        ),
        _ => "[security_exception]: unable to authenticate with provided credentials".to_owned(),
    })
}

/// The space of an import path, or `None` when the path is not the import route.
fn import_space(path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    if path == "/api/saved_objects/_import" {
        return Some("default".to_owned());
    }
    let rest = path.strip_prefix("/s/")?;
    let (space, route) = rest.split_once('/')?;
    (format!("/{route}") == "/api/saved_objects/_import" && !space.is_empty()).then(|| space.to_owned())
}

fn answer(
    shared: &Shared<KibanaState>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some(space) = import_space(uri.path()).filter(|_| method == Method::POST) else {
        return kibana_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut state = lock(shared);
    match authenticate(&state, headers) {
        Auth::Allowed => {}
        Auth::Unauthenticated(message) => return kibana_error(StatusCode::UNAUTHORIZED, &message),
        Auth::Forbidden => {
            return kibana_error(
                StatusCode::FORBIDDEN,
                "Unable to bulk_create index-pattern,visualization,search,dashboard",
            )
        }
    }
    if space != "default" && !state.spaces.contains(&space) {
        return kibana_error(
            StatusCode::NOT_FOUND,
            &format!("Saved object [space/{space}] not found"),
        );
    }
    if !headers.contains_key("kbn-xsrf") {
        return kibana_error(StatusCode::BAD_REQUEST, "Request must contain a kbn-xsrf header.");
    }
    let query = match parse_query(uri.query().unwrap_or_default()) {
        Ok(query) => query,
        Err(message) => return kibana_error(StatusCode::BAD_REQUEST, &message),
    };
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = multipart_boundary(content_type) else {
        return kibana_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type");
    };
    let Some(file) = multipart_parts(body, &boundary)
        .into_iter()
        .find(|part| part.name.as_deref() == Some("file"))
    else {
        return kibana_error(
            StatusCode::BAD_REQUEST,
            "[request body.file]: expected value of type [Stream] but got [undefined]",
        );
    };
    let filename = file.filename.unwrap_or_default();
    let extension = filename.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default();
    if extension != "ndjson" {
        return kibana_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid file extension .{extension}"),
        );
    }
    let objects = match parse_ndjson(&file.content) {
        Ok(objects) => objects,
        Err(message) => return kibana_error(StatusCode::BAD_REQUEST, &message),
    };
    let (results, errors) = import(&mut state, &space, &objects, query.overwrite);
    let body = json!({
        "success": errors.is_empty(),
        "successCount": results.len(),
        "successResults": results,
        "errors": errors,
        "warnings": [],
    });
    let mut body = body;
    if body["errors"].as_array().is_some_and(Vec::is_empty) {
        // Kibana leaves `errors` out of a fully successful answer.
        body.as_object_mut().map(|map| map.remove("errors"));
    }
    (StatusCode::OK, Json(body)).into_response()
}

struct ImportQuery {
    overwrite: bool,
}

fn parse_query(query: &str) -> Result<ImportQuery, String> {
    let mut overwrite = false;
    let mut copies = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        let flag = match value {
            "true" => true,
            "false" => false,
            other => {
                return Err(format!(
                    "[request query.{key}]: expected value of type [boolean] but got [{other}]"
                ))
            }
        };
        match key {
            "overwrite" => overwrite = flag,
            "createNewCopies" => copies = flag,
            "compatibilityMode" => {}
            other => {
                return Err(format!(
                    "[request query.{other}]: definition for this key is missing"
                ))
            }
        }
    }
    if overwrite && copies {
        return Err("[request query]: cannot use [overwrite] with [createNewCopies]".to_owned());
    }
    Ok(ImportQuery { overwrite })
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|parameter| {
        let (key, value) = parameter.trim().split_once('=')?;
        key.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_owned())
            .filter(|boundary| !boundary.is_empty())
    })
}

struct Part {
    name: Option<String>,
    filename: Option<String>,
    content: Vec<u8>,
}

/// The parts of a multipart body (RFC 7578); a malformed body gives none.
fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut positions = Vec::new();
    let mut from = 0;
    while let Some(found) = find(&body[from..], &delimiter) {
        positions.push(from + found);
        from += found + delimiter.len();
    }
    let mut parts = Vec::new();
    for window in positions.windows(2) {
        let chunk = &body[window[0] + delimiter.len()..window[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let Some(split) = find(chunk, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&chunk[..split]).to_string();
        let mut name = None;
        let mut filename = None;
        for line in head.lines() {
            let Some((header, value)) = line.split_once(':') else {
                continue;
            };
            if header.trim().eq_ignore_ascii_case("content-disposition") {
                for parameter in value.split(';').skip(1) {
                    if let Some((key, value)) = parameter.trim().split_once('=') {
                        let value = value.trim_matches('"').to_owned();
                        match key {
                            "name" => name = Some(value),
                            "filename" => filename = Some(value),
                            _ => {}
                        }
                    }
                }
            }
        }
        parts.push(Part {
            name,
            filename,
            content: chunk[split + 4..].to_vec(),
        });
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Every object of the file; the export summary line is skipped as Kibana does.
fn parse_ndjson(content: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(content).map_err(|_| "the file is not UTF-8".to_owned())?;
    let mut objects = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let object: Value = serde_json::from_str(line)
            .map_err(|error| format!("Unexpected token in JSON at line {}: {error}", number + 1))?;
        if object.get("exportedCount").is_some() {
            continue;
        }
        let has = |key: &str, check: fn(&Value) -> bool| object.get(key).is_some_and(check);
        if !has("type", Value::is_string)
            || !has("id", Value::is_string)
            || !has("attributes", Value::is_object)
        {
            return Err(format!(
                "line {}: a saved object needs a string `type`, a string `id` and an object `attributes`",
                number + 1
            ));
        }
        if let Some(references) = object.get("references") {
            let valid = references.as_array().is_some_and(|list| {
                list.iter().all(|reference| {
                    ["name", "type", "id"]
                        .iter()
                        .all(|key| reference.get(*key).is_some_and(Value::is_string))
                })
            });
            if !valid {
                return Err(format!(
                    "line {}: `references` must be a list of {{name, type, id}}",
                    number + 1
                ));
            }
        }
        objects.push(object);
    }
    Ok(objects)
}

fn version_tuple(version: &str) -> Option<(u32, u32, u32)> {
    let mut numbers = version.split('.').map(|part| part.parse::<u32>().ok());
    let tuple = (numbers.next()??, numbers.next()??, numbers.next()??);
    numbers.next().is_none().then_some(tuple)
}

/// Imports what passes the per-object checks; `(successResults, errors)`.
fn import(
    state: &mut KibanaState,
    space: &str,
    objects: &[Value],
    overwrite: bool,
) -> (Vec<Value>, Vec<Value>) {
    let text = |object: &Value, key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let in_file: BTreeSet<(String, String)> = objects
        .iter()
        .map(|object| (text(object, "type"), text(object, "id")))
        .collect();
    let current = version_tuple(SIMULATED_VERSION);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for object in objects {
        let (object_type, id) = (text(object, "type"), text(object, "id"));
        let title = object["attributes"]
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let meta = json!({ "title": title, "icon": icon(&object_type) });
        let entry = |error: Value| json!({ "id": id, "type": object_type, "title": title, "meta": meta, "error": error });
        if !IMPORTABLE_TYPES.contains(&object_type.as_str()) {
            errors.push(entry(json!({ "type": "unsupported_type" })));
            continue;
        }
        let mut too_new = None;
        for key in ["coreMigrationVersion", "typeMigrationVersion"] {
            if let Some(version) = object.get(key) {
                let parsed = version.as_str().and_then(version_tuple);
                if parsed.is_none() || parsed > current {
                    too_new = Some(format!(
                        "Document \"{id}\" has an invalid or newer {key} [{version}] than this Kibana [{SIMULATED_VERSION}]"
                    ));
                }
            }
        }
        if let Some(message) = too_new {
            errors.push(entry(
                json!({ "type": "unknown", "message": message, "statusCode": 400 }),
            ));
            continue;
        }
        let missing: Vec<Value> = object
            .get("references")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|reference| {
                let target = (text(reference, "type"), text(reference, "id"));
                !in_file.contains(&target)
                    && !state
                        .objects
                        .contains_key(&(space.to_owned(), target.0.clone(), target.1.clone()))
            })
            .map(|reference| json!({ "type": reference["type"], "id": reference["id"] }))
            .collect();
        if !missing.is_empty() {
            errors.push(entry(
                json!({ "type": "missing_references", "references": missing }),
            ));
            continue;
        }
        if let Some(message) = state.failing_objects.get(&(object_type.clone(), id.clone())) {
            errors.push(entry(
                json!({ "type": "unknown", "message": message, "statusCode": 400 }),
            ));
            continue;
        }
        let key = (space.to_owned(), object_type.clone(), id.clone());
        let existed = state.objects.contains_key(&key);
        if existed && !overwrite {
            errors.push(entry(json!({ "type": "conflict" })));
            continue;
        }
        state.objects.insert(key, object.clone());
        let mut result = json!({ "type": object_type, "id": id, "meta": meta });
        if existed {
            result["overwrite"] = json!(true);
        }
        results.push(result);
    }
    (results, errors)
}

fn icon(object_type: &str) -> &'static str {
    match object_type {
        "index-pattern" => "indexPatternApp",
        "visualization" => "visualizeApp",
        "lens" => "lensApp",
        "search" => "discoverApp",
        "dashboard" => "dashboardApp",
        _ => "apps",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_and_paths_parse_as_kibana_reads_them() {
        let body = b"--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.ndjson\"\r\n\
                     Content-Type: application/ndjson\r\n\r\n{\"a\":1}\n{\"b\":2}\r\n--b1--\r\n";
        let parts = multipart_parts(body, "b1");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name.as_deref(), Some("file"));
        assert_eq!(parts[0].filename.as_deref(), Some("x.ndjson"));
        assert_eq!(parts[0].content, b"{\"a\":1}\n{\"b\":2}");
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"b1\"").as_deref(),
            Some("b1")
        );
        assert_eq!(multipart_boundary("application/json"), None);
        assert_eq!(
            import_space("/api/saved_objects/_import").as_deref(),
            Some("default")
        );
        assert_eq!(
            import_space("/s/secops/api/saved_objects/_import").as_deref(),
            Some("secops")
        );
        assert_eq!(import_space("/api/saved_objects/_export"), None);
        assert!(parse_query("overwrite=true&createNewCopies=true").is_err());
        assert!(parse_query("overwrite=yes").is_err());
    }
}
