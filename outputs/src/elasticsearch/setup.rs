//! `threatbeat setup` and `threatbeat test output`: install the index
//! template, ILM policy and data streams idempotently, and check that the
//! cluster answers and the credentials may write.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use threatbeat_core::{
    deserialize_at, nest_dotted_keys, BuildContext, ConfigError, NullKeys, Origin, PluginConfig,
};

use super::bulk::request_error_reason;
use super::client::{Client, Reply, RequestBody, TransportError};
use super::config::{ElasticsearchConfig, ResolvedSettings};
use super::template;

/// Why setup or the connection check failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The output config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No answer from any host.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// 401: the cluster refused the credentials.
    #[error("Elasticsearch at {host} rejected the credentials (HTTP 401: {reason}); check output.elasticsearch username/password or api_key")]
    Credentials {
        /// The host that answered.
        host: String,
        /// Elasticsearch's reason.
        reason: String,
    },
    /// Any other unexpected answer.
    #[error("{what} failed: HTTP {status} from {host}: {reason}")]
    Unexpected {
        /// What was being done.
        what: String,
        /// Status code.
        status: u16,
        /// The host.
        host: String,
        /// Elasticsearch's reason.
        reason: String,
    },
}

/// `setup.*` settings: what `threatbeat setup` installs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupSettings {
    /// `setup.template.*`.
    #[serde(default)]
    pub template: TemplateSettings,
    /// `setup.ilm.*`.
    #[serde(default)]
    pub ilm: IlmSettings,
    /// `setup.latest_template.*`: the template of the current-state indices.
    #[serde(default)]
    pub latest_template: LatestTemplateSettings,
    /// Data streams to create up front (`setup.data_streams`); otherwise
    /// the first write creates them through the template.
    #[serde(default)]
    pub data_streams: Vec<String>,
}

/// `setup.template.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    /// Install the template (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Template name (default `threatbeat`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Index patterns (default `threatbeat-*` and the modules' data streams
    /// `logs-ti_threatbeat.*-*`).
    #[serde(default = "default_patterns")]
    pub patterns: Vec<String>,
    /// Priority (default 150, above the built-in `logs` template's 100).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Matching indices are data streams (default true).
    #[serde(default = "yes")]
    pub data_stream: bool,
    /// Replace an existing template even when it is ours and unchanged.
    #[serde(default)]
    pub overwrite: bool,
}

/// `setup.latest_template.*`: the template of the current-state indices
/// `logs-ti_threatbeat_latest.<fileset>` (regular indices, one document per
/// indicator).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestTemplateSettings {
    /// Install the template (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Template name (default `threatbeat-latest`).
    #[serde(default = "default_latest_name")]
    pub name: String,
    /// Index patterns (default `logs-ti_threatbeat_latest.*`).
    #[serde(default = "default_latest_patterns")]
    pub patterns: Vec<String>,
    /// Priority (default 160: above the built-in `logs` template's 100,
    /// which matches `logs-*-*`, and apart from the main template's 150, as
    /// Elasticsearch refuses two overlapping templates of equal priority).
    #[serde(default = "default_latest_priority")]
    pub priority: u32,
    /// Replace an existing template even when it is ours and unchanged.
    #[serde(default)]
    pub overwrite: bool,
}

fn default_latest_name() -> String {
    "threatbeat-latest".to_owned()
}
fn default_latest_patterns() -> Vec<String> {
    vec![template::LATEST_PATTERN.to_owned()]
}
fn default_latest_priority() -> u32 {
    160
}

impl Default for LatestTemplateSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            name: default_latest_name(),
            patterns: default_latest_patterns(),
            priority: default_latest_priority(),
            overwrite: false,
        }
    }
}

/// `setup.ilm.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IlmSettings {
    /// Install the policy (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Policy name (default `threatbeat`).
    #[serde(default = "default_name")]
    pub policy_name: String,
    /// Delete indices this long after rollover (`90d`); default: never.
    #[serde(default)]
    pub delete_after: Option<String>,
    /// Replace an existing policy even when unchanged.
    #[serde(default)]
    pub overwrite: bool,
}

fn yes() -> bool {
    true
}
fn default_name() -> String {
    "threatbeat".to_owned()
}
fn default_patterns() -> Vec<String> {
    vec!["threatbeat-*".to_owned(), "logs-ti_threatbeat.*-*".to_owned()]
}
fn default_priority() -> u32 {
    150
}

impl Default for TemplateSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            name: default_name(),
            patterns: default_patterns(),
            priority: default_priority(),
            data_stream: true,
            overwrite: false,
        }
    }
}

impl Default for IlmSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            policy_name: default_name(),
            delete_after: None,
            overwrite: false,
        }
    }
}

impl SetupSettings {
    /// Parses the raw `setup` value (null → defaults).
    pub fn parse(value: &Value, origin: &Origin) -> Result<Self, ConfigError> {
        if value.is_null() {
            return Ok(Self::default());
        }
        deserialize_at(&nest_dotted_keys(value.clone(), NullKeys::Keep), origin)
    }
}

/// What setup did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupAction {
    /// Created or replaced.
    Installed,
    /// Already there and identical: nothing sent.
    Unchanged,
}

/// What setup did, in order, for printing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// `(what, action)`, e.g. `("index template threatbeat", Installed)`.
    pub steps: Vec<(String, SetupAction)>,
}

impl SetupReport {
    /// Whether anything was changed.
    pub fn changed_anything(&self) -> bool {
        self.steps
            .iter()
            .any(|(_, action)| *action == SetupAction::Installed)
    }
}

fn connect(output: &PluginConfig, context: &BuildContext) -> Result<(Client, ResolvedSettings), SetupError> {
    let config = ElasticsearchConfig::parse(&output.settings, &output.origin)?;
    let settings = config.resolve(&output.origin, &context.config_path)?;
    let client = Client::new(&settings)?;
    Ok((client, settings))
}

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Reply, SetupError> {
    let body = body.map(Value::to_string);
    let body = body
        .as_deref()
        .map(|text| (RequestBody::Plain(text.as_bytes()), "application/json"));
    let reply = client.request(method, path, body).await?;
    if reply.status == 401 {
        return Err(SetupError::Credentials {
            host: reply.host.to_string(),
            reason: request_error_reason(&reply.body),
        });
    }
    Ok(reply)
}

fn unexpected(what: &str, reply: &Reply) -> SetupError {
    SetupError::Unexpected {
        what: what.to_owned(),
        status: reply.status,
        host: reply.host.to_string(),
        reason: request_error_reason(&reply.body),
    }
}

/// Installs the ILM policy, the index template and the data streams. With
/// `index_management_only` (`setup --index-management`) the same happens;
/// the flag exists so callers can skip future non-index setup steps.
/// Running it twice changes nothing the second time: each installed object
/// carries a fingerprint of its body in `_meta`/`version` and is only
/// replaced when that differs (or `overwrite` is set).
pub async fn setup(
    output: &PluginConfig,
    context: &BuildContext,
    settings: &SetupSettings,
) -> Result<SetupReport, SetupError> {
    let (client, _) = connect(output, context)?;
    let mut report = SetupReport::default();
    let policy_name = settings.ilm.enabled.then_some(settings.ilm.policy_name.as_str());
    if let Some(name) = policy_name {
        let mut policy = template::ilm_policy(settings.ilm.delete_after.as_deref());
        let fingerprint = template::fingerprint(&policy);
        policy["_meta"]["threatbeat_fingerprint"] = json!(fingerprint);
        let path = format!("_ilm/policy/{name}");
        let existing = call(&client, Method::GET, &path, None).await?;
        let current = match existing.status {
            200 => serde_json::from_slice::<Value>(&existing.body)
                .ok()
                .and_then(|body| {
                    body.get(name)?
                        .get("policy")?
                        .get("_meta")?
                        .get("threatbeat_fingerprint")
                        .cloned()
                }),
            404 => None,
            _ => return Err(unexpected("reading the ILM policy", &existing)),
        };
        let action = if current == Some(json!(fingerprint)) && !settings.ilm.overwrite {
            SetupAction::Unchanged
        } else {
            let reply = call(&client, Method::PUT, &path, Some(&json!({ "policy": policy }))).await?;
            if reply.status != 200 {
                return Err(unexpected("installing the ILM policy", &reply));
            }
            SetupAction::Installed
        };
        report.steps.push((format!("ILM policy {name}"), action));
    }
    if settings.template.enabled {
        let config = &settings.template;
        let body =
            template::index_template(&config.patterns, config.priority, config.data_stream, policy_name);
        let action = install_template(&client, &config.name, body, config.overwrite).await?;
        report
            .steps
            .push((format!("index template {}", config.name), action));
    }
    if settings.latest_template.enabled {
        let config = &settings.latest_template;
        let body = template::latest_index_template(&config.patterns, config.priority);
        let action = install_template(&client, &config.name, body, config.overwrite).await?;
        report
            .steps
            .push((format!("index template {}", config.name), action));
    }
    for name in &settings.data_streams {
        let path = format!("_data_stream/{name}");
        let existing = call(&client, Method::GET, &path, None).await?;
        let action = match existing.status {
            200 => SetupAction::Unchanged,
            404 => {
                let reply = call(&client, Method::PUT, &path, None).await?;
                if reply.status != 200 {
                    return Err(unexpected(&format!("creating data stream {name}"), &reply));
                }
                SetupAction::Installed
            }
            _ => return Err(unexpected(&format!("reading data stream {name}"), &existing)),
        };
        report.steps.push((format!("data stream {name}"), action));
    }
    Ok(report)
}

/// Installs the composable template `name` unless the installed one
/// carries the same fingerprint (its `version`) and `overwrite` is off.
async fn install_template(
    client: &Client,
    name: &str,
    mut body: Value,
    overwrite: bool,
) -> Result<SetupAction, SetupError> {
    let fingerprint = template::fingerprint(&body);
    body["version"] = json!(fingerprint);
    let path = format!("_index_template/{name}");
    let existing = call(client, Method::GET, &path, None).await?;
    let current = match existing.status {
        200 => serde_json::from_slice::<Value>(&existing.body)
            .ok()
            .and_then(|body| {
                body.get("index_templates")?
                    .get(0)?
                    .get("index_template")?
                    .get("version")
                    .cloned()
            }),
        404 => None,
        _ => {
            return Err(unexpected(
                &format!("reading the index template {name}"),
                &existing,
            ))
        }
    };
    if current == Some(json!(fingerprint)) && !overwrite {
        return Ok(SetupAction::Unchanged);
    }
    let reply = call(client, Method::PUT, &path, Some(&body)).await?;
    if reply.status != 200 {
        return Err(unexpected(
            &format!("installing the index template {name}"),
            &reply,
        ));
    }
    Ok(SetupAction::Installed)
}

/// Whether the configured credentials may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAccess {
    /// `create_doc` and `auto_configure` granted on the target indices.
    Allowed,
    /// Missing privileges, by index pattern.
    Denied(Vec<String>),
    /// Security is disabled on the cluster: anyone may write.
    SecurityDisabled,
}

/// What `threatbeat test output` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionReport {
    /// The host that answered.
    pub host: String,
    /// `cluster_name`.
    pub cluster_name: String,
    /// `version.number`.
    pub version: String,
    /// The index patterns checked for write access.
    pub index_patterns: Vec<String>,
    /// Whether the credentials may write there.
    pub write_access: WriteAccess,
}

impl std::fmt::Display for ConnectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "elasticsearch: {}", self.host)?;
        writeln!(f, "  cluster: {} (version {})", self.cluster_name, self.version)?;
        let access = match &self.write_access {
            WriteAccess::Allowed => "yes".to_owned(),
            WriteAccess::Denied(missing) => format!("NO (missing: {})", missing.join(", ")),
            WriteAccess::SecurityDisabled => "yes (security is disabled on the cluster)".to_owned(),
        };
        write!(f, "  can write to {}: {access}", self.index_patterns.join(", "))
    }
}

/// Connects, reads the cluster version and checks write privileges on the
/// configured index. Wrong credentials are an error.
pub async fn check_connection(
    output: &PluginConfig,
    context: &BuildContext,
) -> Result<ConnectionReport, SetupError> {
    let (client, settings) = connect(output, context)?;
    let root = call(&client, Method::GET, "", None).await?;
    if root.status != 200 {
        return Err(unexpected("GET /", &root));
    }
    let info: Value = serde_json::from_slice(&root.body).map_err(|error| SetupError::Unexpected {
        what: "GET /".into(),
        status: root.status,
        host: root.host.to_string(),
        reason: format!("not an Elasticsearch answer: {error}"),
    })?;
    let version = info
        .pointer("/version/number")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let cluster_name = info
        .get("cluster_name")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let pattern = if settings.index.is_static() {
        settings.index_text.clone()
    } else {
        format!("{}*", settings.index.static_prefix())
    };
    let request = json!({"index": [{"names": [pattern], "privileges": ["create_doc", "auto_configure"]}]});
    let privileges = call(
        &client,
        Method::POST,
        "_security/user/_has_privileges",
        Some(&request),
    )
    .await?;
    let write_access = match privileges.status {
        200 => {
            let body: Value = serde_json::from_slice(&privileges.body).unwrap_or(Value::Null);
            if body.get("has_all_requested").and_then(Value::as_bool) == Some(true) {
                WriteAccess::Allowed
            } else {
                let missing = body
                    .get("index")
                    .and_then(Value::as_object)
                    .map(|indices| {
                        indices
                            .iter()
                            .flat_map(|(name, granted)| {
                                granted
                                    .as_object()
                                    .into_iter()
                                    .flatten()
                                    .filter(|(_, allowed)| allowed.as_bool() != Some(true))
                                    .map(move |(privilege, _)| format!("{privilege} on {name}"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                WriteAccess::Denied(missing)
            }
        }
        // Security disabled: the security APIs answer 4xx/5xx while plain requests work.
        400 | 404 | 500 => WriteAccess::SecurityDisabled,
        _ => return Err(unexpected("checking privileges", &privileges)),
    };
    Ok(ConnectionReport {
        host: root.host.to_string(),
        cluster_name,
        version,
        index_patterns: vec![pattern],
        write_access,
    })
}
