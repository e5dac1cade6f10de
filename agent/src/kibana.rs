//! `threatbeat setup --dashboards`: loads threatbeat's Kibana dashboard (and
//! the data view and visualizations it shows) through Kibana's saved-objects
//! import API, with Filebeat's `setup.kibana.*` / `setup.dashboards.*` names.
//!
//! The saved objects are the NDJSON file `kibana/threatbeat-dashboards.ndjson`
//! at the top of the repository, embedded in the binary so that `setup` needs
//! no files beside it. The dashboard's id is Filebeat's threat-intel dashboard
//! id, which every document already carries in `threat.feed.dashboard_id`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::config::{deserialize_at, nest_dotted_keys, NullKeys};
use threatbeat_core::tls::{LoadedTls, TlsSettings};
use threatbeat_core::{ConfigError, Origin, Secret};

/// The saved objects `setup --dashboards` imports (Kibana 8.8 or later).
pub const SAVED_OBJECTS: &str = include_str!("../../kibana/threatbeat-dashboards.ndjson");

/// The dashboard's id: Filebeat's threat-intel dashboard, the value of every
/// document's `threat.feed.dashboard_id`.
pub const DASHBOARD_ID: &str = "ad9c7430-72de-11eb-a3e3-b3cc7c78a70f";

/// How long one request to Kibana may take; an import of a few objects is quick.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// The keys of `setup` this module owns; the Elasticsearch setup ignores them.
pub const SETUP_KEYS: [&str; 2] = ["kibana", "dashboards"];

/// `setup.kibana.*`: where Kibana is and how to authenticate, as in Filebeat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KibanaSettings {
    /// `host`: `host:port` or a URL (default `localhost:5601`).
    #[serde(default = "default_host")]
    pub host: String,
    /// `protocol`: the scheme for a `host` written without one (default `http`).
    #[serde(default)]
    pub protocol: Option<String>,
    /// `path`: a path prefix, when Kibana is served under one (`server.basePath`).
    #[serde(default)]
    pub path: Option<String>,
    /// `username` for basic authentication, with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// `password` for basic authentication.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `api_key`: `id:api_key`, or the base64 form Kibana's UI shows.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `space.id`: the Kibana space to load into (default: the default space).
    #[serde(default)]
    pub space: SpaceSettings,
    /// `ssl.*`: the same block as the Elasticsearch output's.
    #[serde(default)]
    pub ssl: TlsSettings,
}

/// `setup.kibana.space.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceSettings {
    /// `id`: the space's URL identifier.
    #[serde(default)]
    pub id: Option<String>,
}

/// `setup.dashboards.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardsSettings {
    /// `enabled`: plain `threatbeat setup` loads the dashboards too (default false,
    /// as in Filebeat); `setup --dashboards` loads them regardless.
    #[serde(default)]
    pub enabled: bool,
}

/// Both sections, parsed from the raw `setup` map.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KibanaSetup {
    /// `setup.kibana`.
    #[serde(default)]
    pub kibana: Option<KibanaSettings>,
    /// `setup.dashboards`.
    #[serde(default)]
    pub dashboards: DashboardsSettings,
}

fn default_host() -> String {
    "localhost:5601".to_owned()
}

impl Default for KibanaSettings {
    fn default() -> Self {
        Self {
            host: default_host(),
            protocol: None,
            path: None,
            username: None,
            password: None,
            api_key: None,
            space: SpaceSettings::default(),
            ssl: TlsSettings::default(),
        }
    }
}

impl KibanaSetup {
    /// Reads `setup.kibana` and `setup.dashboards` from the raw `setup` map
    /// (dotted or nested keys); `origin` points at `setup`.
    pub fn parse(setup: &Map<String, Value>, origin: &Origin) -> Result<Self, ConfigError> {
        let nested = nest_dotted_keys(Value::Object(setup.clone()), NullKeys::Drop);
        let mut own = Map::new();
        if let Value::Object(mut nested) = nested {
            for key in SETUP_KEYS {
                if let Some(value) = nested.remove(key) {
                    own.insert(key.to_owned(), value);
                }
            }
        }
        deserialize_at(&Value::Object(own), origin)
    }

    /// The Kibana settings (defaults when `setup.kibana` is absent).
    pub fn kibana(&self) -> KibanaSettings {
        self.kibana.clone().unwrap_or_default()
    }
}

/// The `setup` map without the keys this module owns, for the Elasticsearch
/// setup (whose settings reject unknown keys).
pub fn without_kibana_keys(setup: &Map<String, Value>) -> Map<String, Value> {
    match nest_dotted_keys(Value::Object(setup.clone()), NullKeys::Keep) {
        Value::Object(mut nested) => {
            for key in SETUP_KEYS {
                nested.remove(key);
            }
            nested
        }
        _ => setup.clone(),
    }
}

/// A Kibana client for the import: base URL (with space), auth and TLS checked.
#[derive(Debug)]
pub struct Kibana {
    /// `<scheme>://<host>[:port][/path]`, without credentials.
    base: String,
    space: Option<String>,
    authorization: Option<Secret>,
    tls: LoadedTls,
}

/// One saved object Kibana did not import, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    /// Its type (`dashboard`, `index-pattern`, …).
    pub object_type: String,
    /// Its id.
    pub id: String,
    /// Its title, when Kibana gave one.
    pub title: Option<String>,
    /// Kibana's error: its `type` and message or missing references.
    pub reason: String,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.object_type, self.id)?;
        if let Some(title) = &self.title {
            write!(f, " ({title:?})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Why the dashboards were not loaded.
#[derive(Debug, thiserror::Error)]
pub enum KibanaError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request did not get an answer.
    #[error("cannot reach Kibana at {url}: {reason}; check setup.kibana.host")]
    Connection {
        /// Kibana's URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// HTTP 401.
    #[error(
        "Kibana at {url} rejected the credentials (HTTP 401: {message}); \
         check setup.kibana.username/password or setup.kibana.api_key"
    )]
    Credentials {
        /// Kibana's URL.
        url: String,
        /// Kibana's message.
        message: String,
    },
    /// HTTP 403.
    #[error(
        "Kibana at {url} denied the import (HTTP 403: {message}); the user needs the \
         privilege to manage saved objects (e.g. the kibana_admin role) in the space"
    )]
    Forbidden {
        /// Kibana's URL.
        url: String,
        /// Kibana's message.
        message: String,
    },
    /// Any other non-200 answer.
    #[error("Kibana at {url} refused the import (HTTP {status}: {message})")]
    Refused {
        /// Kibana's URL (with the space).
        url: String,
        /// The status.
        status: u16,
        /// Kibana's message.
        message: String,
    },
    /// 200 with `success: false`: some objects were not imported.
    #[error(
        "Kibana at {url} did not import {} of the saved objects ({imported} imported):\n  {}",
        errors.len(),
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Objects {
        /// Kibana's URL (with the space).
        url: String,
        /// How many objects were imported.
        imported: usize,
        /// The refused ones.
        errors: Vec<ObjectError>,
    },
    /// A 200 answer that is not an import result.
    #[error("unexpected answer from Kibana at {url}: {reason}")]
    Answer {
        /// Kibana's URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// What the import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Kibana's URL, with the space.
    pub url: String,
    /// Objects imported (created or overwritten).
    pub imported: usize,
    /// Of those, how many replaced an existing object.
    pub overwritten: usize,
    /// Where the dashboard is.
    pub dashboard_url: String,
}

/// Kibana's import answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportResponse {
    success: bool,
    #[serde(default)]
    success_count: usize,
    #[serde(default)]
    success_results: Vec<Value>,
    #[serde(default)]
    errors: Vec<Value>,
}

impl Kibana {
    /// Checks the settings and reads the TLS material; `origin` is `setup.kibana`.
    pub fn new(settings: &KibanaSettings, config_path: &Path, origin: &Origin) -> Result<Self, KibanaError> {
        let host = settings.host.trim().trim_end_matches('/');
        if host.is_empty() {
            return Err(origin.child("host").error("must not be empty").into());
        }
        let with_scheme = if host.contains("://") {
            host.to_owned()
        } else {
            let protocol = settings.protocol.as_deref().unwrap_or("http");
            format!("{protocol}://{host}")
        };
        let mut url = reqwest::Url::parse(&with_scheme)
            .map_err(|error| origin.child("host").error(format!("not a URL ({error})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(origin
                .child("host")
                .error(format!("scheme `{}`: use http or https", url.scheme()))
                .into());
        }
        // Credentials belong in username/password; never print them with the URL.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(origin
                .child("host")
                .error("put credentials in setup.kibana.username/password, not in the URL")
                .into());
        }
        if let Some(path) = settings.path.as_deref().filter(|path| !path.trim().is_empty()) {
            url.set_path(&format!(
                "{}/{}",
                url.path().trim_end_matches('/'),
                path.trim_matches('/')
            ));
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        let authorization = match (&settings.username, &settings.password, &settings.api_key) {
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(origin
                    .child("api_key")
                    .error("set either api_key or username/password, not both")
                    .into());
            }
            (None, None, Some(api_key)) => Some(Secret::new(format!(
                "ApiKey {}",
                encode_api_key(api_key.expose())
            ))),
            (Some(username), password, None) => {
                let pair = format!(
                    "{username}:{}",
                    password.as_ref().map(Secret::expose).unwrap_or("")
                );
                Some(Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            (None, Some(_), None) => return Err(origin.child("password").error("needs `username`").into()),
            (None, None, None) => None,
        };
        if let Some(authorization) = &authorization {
            if reqwest::header::HeaderValue::from_str(authorization.expose()).is_err() {
                return Err(origin
                    .error("the credentials contain characters an HTTP header cannot carry")
                    .into());
            }
        }
        let space = match settings.space.id.as_deref().map(str::trim) {
            None | Some("") | Some("default") => None,
            Some(id)
                if id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') =>
            {
                Some(id.to_owned())
            }
            Some(_) => {
                return Err(origin
                    .child("space.id")
                    .error("a space id has only lowercase letters, digits, `_` and `-`")
                    .into())
            }
        };
        let tls = settings.ssl.load(config_path, &origin.child("ssl"))?;
        Ok(Self {
            base,
            space,
            authorization,
            tls,
        })
    }

    /// Kibana's URL with the space prefix (`…/s/<space>`), as printed.
    pub fn url(&self) -> String {
        match &self.space {
            Some(space) => format!("{}/s/{space}", self.base),
            None => self.base.clone(),
        }
    }

    /// Imports `ndjson` with `overwrite=true`, so a second run replaces the
    /// objects with the same ids and changes nothing else.
    pub async fn import(&self, ndjson: &str) -> Result<ImportReport, KibanaError> {
        let url = self.url();
        let client = self
            .tls
            .apply(reqwest::Client::builder())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| KibanaError::Connection {
                url: url.clone(),
                reason: format!("cannot build the HTTP client: {error}"),
            })?;
        let boundary = format!("threatbeat-{:016x}", boundary_seed());
        let body = multipart_file(&boundary, "threatbeat-dashboards.ndjson", ndjson);
        let mut request = client
            .post(format!("{url}/api/saved_objects/_import?overwrite=true"))
            .header("kbn-xsrf", "true")
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if let Some(authorization) = &self.authorization {
            // Checked in `new`; sensitive keeps it out of reqwest's debug output.
            if let Ok(mut value) = reqwest::header::HeaderValue::from_str(authorization.expose()) {
                value.set_sensitive(true);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
        }
        let response = request.send().await.map_err(|error| KibanaError::Connection {
            url: url.clone(),
            reason: describe_request_error(&error),
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|error| KibanaError::Connection {
            url: url.clone(),
            reason: format!("the answer was cut short: {}", describe_request_error(&error)),
        })?;
        match status {
            200 => self.interpret(&url, &text),
            401 => Err(KibanaError::Credentials {
                url,
                message: error_message(&text),
            }),
            403 => Err(KibanaError::Forbidden {
                url,
                message: error_message(&text),
            }),
            404 if self.space.is_some() => Err(KibanaError::Refused {
                url,
                status,
                message: format!(
                    "{} (does the space exist? check setup.kibana.space.id)",
                    error_message(&text)
                ),
            }),
            _ => Err(KibanaError::Refused {
                url,
                status,
                message: error_message(&text),
            }),
        }
    }

    fn interpret(&self, url: &str, text: &str) -> Result<ImportReport, KibanaError> {
        let answer: ImportResponse = serde_json::from_str(text).map_err(|error| KibanaError::Answer {
            url: url.to_owned(),
            reason: format!("not an import result ({error}): {}", shorten(text)),
        })?;
        if !answer.success || !answer.errors.is_empty() {
            return Err(KibanaError::Objects {
                url: url.to_owned(),
                imported: answer.success_count,
                errors: answer.errors.iter().map(object_error).collect(),
            });
        }
        let overwritten = answer
            .success_results
            .iter()
            .filter(|result| result.get("overwrite").and_then(Value::as_bool) == Some(true))
            .count();
        Ok(ImportReport {
            url: url.to_owned(),
            imported: answer.success_count,
            overwritten,
            dashboard_url: format!("{url}/app/dashboards#/view/{DASHBOARD_ID}"),
        })
    }
}

/// `id:key` is encoded as Elasticsearch expects; a value without `:` is taken
/// as already encoded (the form Kibana's API-key page shows).
fn encode_api_key(api_key: &str) -> String {
    if api_key.contains(':') {
        base64::engine::general_purpose::STANDARD.encode(api_key)
    } else {
        api_key.to_owned()
    }
}

/// A multipart/form-data body with one part, `file`, as a browser or curl's
/// `--form file=@x.ndjson` sends it (Kibana checks the `.ndjson` extension).
pub fn multipart_file(boundary: &str, filename: &str, content: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(content.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/ndjson\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Varies the boundary between runs; it only has to be absent from the content.
fn boundary_seed() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}

/// Kibana's error body is `{"statusCode", "error", "message"}`; else the text.
fn error_message(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(body) => match (
            body.get("error").and_then(Value::as_str),
            body.get("message").and_then(Value::as_str),
        ) {
            (Some(error), Some(message)) => format!("{error}: {message}"),
            (None, Some(message)) => message.to_owned(),
            (Some(error), None) => error.to_owned(),
            (None, None) => shorten(text),
        },
        Err(_) if text.trim().is_empty() => "empty answer".to_owned(),
        Err(_) => shorten(text),
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// One entry of the import answer's `errors`.
fn object_error(entry: &Value) -> ObjectError {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let error = entry.get("error").cloned().unwrap_or(Value::Null);
    let kind = text(error.get("type")).unwrap_or_else(|| "unknown".to_owned());
    let mut reason = kind.clone();
    if let Some(message) = text(error.get("message")) {
        reason = format!("{kind}: {message}");
    }
    if let Some(Value::Array(missing)) = error.get("references") {
        let list: Vec<String> = missing
            .iter()
            .map(|reference| {
                format!(
                    "{} {}",
                    text(reference.get("type")).unwrap_or_default(),
                    text(reference.get("id")).unwrap_or_default()
                )
            })
            .collect();
        reason = format!("{reason}: {}", list.join(", "));
    }
    ObjectError {
        object_type: text(entry.get("type")).unwrap_or_default(),
        id: text(entry.get("id")).unwrap_or_default(),
        title: text(entry.get("title"))
            .or_else(|| text(entry.get("meta").and_then(|meta| meta.get("title")))),
        reason,
    }
}

fn describe_request_error(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;

    fn objects() -> Vec<Value> {
        SAVED_OBJECTS
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is one JSON object"))
            .collect()
    }

    #[test]
    fn the_saved_objects_are_valid_ndjson_for_kibana_8() {
        let objects = objects();
        let ids: HashSet<(String, String)> = objects
            .iter()
            .map(|object| {
                (
                    object["type"].as_str().unwrap().to_owned(),
                    object["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(ids.len(), objects.len(), "ids are unique");
        for object in &objects {
            for key in ["type", "id", "coreMigrationVersion", "typeMigrationVersion"] {
                assert!(object[key].is_string(), "{key} in {object}");
            }
            assert!(object["attributes"].is_object(), "{object}");
            assert!(object["attributes"]["title"].is_string(), "{object}");
            for reference in object["references"].as_array().expect("references") {
                let target = (
                    reference["type"].as_str().unwrap().to_owned(),
                    reference["id"].as_str().unwrap().to_owned(),
                );
                assert!(
                    ids.contains(&target),
                    "dangling reference {reference} in {}",
                    object["id"]
                );
            }
            // The JSON-in-a-string attributes must parse, or Kibana shows an error panel.
            for key in ["visState", "panelsJSON", "optionsJSON", "uiStateJSON"] {
                if let Some(text) = object["attributes"][key].as_str() {
                    serde_json::from_str::<Value>(text)
                        .unwrap_or_else(|e| panic!("{key} of {}: {e}", object["id"]));
                }
            }
            if let Some(meta) = object["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str() {
                let source: Value = serde_json::from_str(meta).expect("searchSourceJSON");
                if let Some(name) = source["indexRefName"].as_str() {
                    assert!(
                        object["references"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["name"] == name),
                        "indexRefName {name} has a reference in {}",
                        object["id"]
                    );
                }
            }
        }
    }

    #[test]
    fn the_dashboard_has_filebeats_id_and_shows_every_panel() {
        let objects = objects();
        let dashboard = objects
            .iter()
            .find(|object| object["type"] == "dashboard")
            .expect("a dashboard");
        assert_eq!(dashboard["id"], DASHBOARD_ID);
        let panels: Vec<Value> =
            serde_json::from_str(dashboard["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
        let references = dashboard["references"].as_array().unwrap();
        for panel in &panels {
            let name = &panel["panelRefName"];
            assert!(references.iter().any(|r| &r["name"] == name), "{panel}");
        }
        assert_eq!(panels.len(), references.len());
        let text = SAVED_OBJECTS;
        for field in [
            "threat.feed.name",
            "threat.indicator.type",
            "threat.indicator.marking.tlp",
        ] {
            assert!(text.contains(field), "{field} is shown");
        }
        let view = objects.iter().find(|o| o["type"] == "index-pattern").unwrap();
        assert_eq!(view["attributes"]["title"], "logs-ti_*");
        assert_eq!(view["attributes"]["timeFieldName"], "@timestamp");
    }

    #[test]
    fn settings_use_filebeats_names_and_leave_the_rest_to_elasticsearch() {
        let setup = json!({
            "kibana.host": "https://kb.example:5601/",
            "kibana": {"username": "u", "password": "p", "space.id": "secops"},
            "dashboards.enabled": true,
            "template.name": "x"
        });
        let setup = setup.as_object().unwrap();
        let parsed = KibanaSetup::parse(setup, &Origin::file(Path::new("t.yml")).child("setup")).unwrap();
        assert!(parsed.dashboards.enabled);
        let kibana = Kibana::new(
            &parsed.kibana(),
            Path::new("."),
            &Origin::file(Path::new("t.yml")),
        )
        .unwrap();
        assert_eq!(kibana.url(), "https://kb.example:5601/s/secops");
        let rest = without_kibana_keys(setup);
        assert_eq!(Value::Object(rest), json!({"template": {"name": "x"}}));

        let wrong = json!({"dashboards": {"directory": "/x"}});
        let error = KibanaSetup::parse(
            wrong.as_object().unwrap(),
            &Origin::file(Path::new("t.yml")).child("setup"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("setup.dashboards"), "{error}");
    }

    #[test]
    fn urls_and_credentials_are_checked() {
        let origin = Origin::file(Path::new("t.yml")).child("setup.kibana");
        let settings = KibanaSettings {
            host: "kb:5601".into(),
            path: Some("/kibana/".into()),
            api_key: Some(Secret::new("id:key")),
            ..KibanaSettings::default()
        };
        let kibana = Kibana::new(&settings, Path::new("."), &origin).unwrap();
        assert_eq!(kibana.url(), "http://kb:5601/kibana");
        let header = kibana.authorization.as_ref().unwrap().expose().to_owned();
        assert_eq!(
            header,
            format!(
                "ApiKey {}",
                base64::engine::general_purpose::STANDARD.encode("id:key")
            )
        );
        let both = KibanaSettings {
            username: Some("u".into()),
            ..settings
        };
        assert!(Kibana::new(&both, Path::new("."), &origin).is_err());
        let in_url = KibanaSettings {
            host: "http://u:secret@kb:5601".into(),
            ..KibanaSettings::default()
        };
        let error = Kibana::new(&in_url, Path::new("."), &origin)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn object_errors_name_the_object_and_the_reason() {
        let error = object_error(&json!({
            "id": "d", "type": "dashboard", "meta": {"title": "T"},
            "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "x"}]}
        }));
        assert_eq!(
            error.to_string(),
            "dashboard d (\"T\"): missing_references: index-pattern x"
        );
    }
}
