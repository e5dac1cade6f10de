//! `output.elasticsearch`: the settings users write, their defaults and the
//! validation that turns them into resolved settings (hosts as URLs, the
//! authorization header, the index format).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use threatbeat_core::tls::{LoadedTls, TlsSettings};
use threatbeat_core::{deserialize_at, nest_dotted_keys, ConfigError, NullKeys, Origin, Secret};
use url::Url;

use super::hosts::{decode_cloud_id, parse_host};
use super::index_format::IndexFormat;

/// The default index: a daily name from the event's `@timestamp`.
pub const DEFAULT_INDEX: &str = "threatbeat-%{+yyyy.MM.dd}";

/// `output.elasticsearch` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// `host:port` or URLs; a host without scheme uses `protocol`, without port 9200.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `http` (default) or `https` for hosts written without a scheme.
    #[serde(default)]
    pub protocol: Option<String>,
    /// A path prefix for every request (`/es` behind a proxy).
    #[serde(default)]
    pub path: Option<String>,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `id:api_key`, sent as `Authorization: ApiKey base64(id:api_key)`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Elastic Cloud deployment (`cloud.id`, `cloud.auth`).
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    /// Extra HTTP headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings.
    #[serde(default)]
    pub ssl: TlsSettings,
    /// gzip level of request bodies, 0 (off) to 9; default 1.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    /// Events per bulk request; default 1600.
    #[serde(default = "default_bulk_max_size")]
    pub bulk_max_size: usize,
    /// Concurrent bulk requests per host; default 1.
    #[serde(default = "default_worker")]
    pub worker: usize,
    /// Per-request timeout; default 90s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "threatbeat_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Retry backoff.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Target index or data stream; `%{[field]}` and `%{+yyyy.MM.dd}` are
    /// replaced per event. An event's `@metadata.index` wins.
    #[serde(default)]
    pub index: Option<String>,
    /// Ingest pipeline; an event's `@metadata.pipeline` wins.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// What to do with documents Elasticsearch refuses for good.
    #[serde(default)]
    pub non_indexable_policy: Option<NonIndexablePolicyConfig>,
    /// Not an output setting here: refused with a pointer to `queue.*.flush.timeout`.
    #[serde(default)]
    pub flush_interval: Option<serde_json::Value>,
}

/// `cloud.id` / `cloud.auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// `<label>:<base64(host$es_uuid$kibana_uuid)>`.
    pub id: Option<String>,
    /// `user:password`.
    pub auth: Option<Secret>,
}

/// `backoff.init` / `backoff.max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First wait after a failure; default 1s.
    #[serde(
        default = "default_backoff_init",
        deserialize_with = "threatbeat_core::duration::deserialize"
    )]
    pub init: Duration,
    /// Longest wait; default 60s.
    #[serde(
        default = "default_backoff_max",
        deserialize_with = "threatbeat_core::duration::deserialize"
    )]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            init: default_backoff_init(),
            max: default_backoff_max(),
        }
    }
}

/// `non_indexable_policy`: `drop: ~` (default) or `dead_letter_index: {index: ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonIndexablePolicyConfig {
    /// Present (even empty) to drop.
    #[serde(default)]
    pub drop: Option<serde_json::Value>,
    /// Send refused documents to this index instead.
    #[serde(default)]
    pub dead_letter_index: Option<DeadLetterConfig>,
}

/// `non_indexable_policy.dead_letter_index`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The dead-letter index name.
    pub index: String,
}

fn default_compression_level() -> u32 {
    1
}
fn default_bulk_max_size() -> usize {
    1600
}
fn default_worker() -> usize {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_backoff_init() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}

/// Where refused documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonIndexablePolicy {
    /// Drop them (counted, logged once per reason).
    Drop,
    /// Write `{message, error.type, error.message}` to this index.
    DeadLetterIndex(String),
}

/// The validated settings the client and the output run with.
#[derive(Debug, Clone)]
pub struct ResolvedSettings {
    /// Base URLs, one per host.
    pub hosts: Vec<Url>,
    /// The `Authorization` header value, if any.
    pub authorization: Option<Secret>,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// TLS material, read and checked.
    pub tls: LoadedTls,
    /// gzip level, 0 = off.
    pub compression_level: u32,
    /// Events per bulk request.
    pub bulk_max_size: usize,
    /// Concurrent requests per host.
    pub worker: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retry backoff.
    pub backoff: BackoffConfig,
    /// Index format.
    pub index: IndexFormat,
    /// The index format as written (for `test output` and setup).
    pub index_text: String,
    /// Default ingest pipeline.
    pub pipeline: Option<String>,
    /// Refused-document policy.
    pub non_indexable_policy: NonIndexablePolicy,
}

impl ElasticsearchConfig {
    /// Parses the raw `output.elasticsearch` value (dotted keys accepted).
    pub fn parse(value: &serde_json::Value, origin: &Origin) -> Result<Self, ConfigError> {
        let value = if value.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            nest_dotted_keys(value.clone(), NullKeys::Keep)
        };
        deserialize_at(&value, origin)
    }

    /// Checks every setting and resolves hosts, auth and the index format.
    pub fn resolve(&self, origin: &Origin, config_path: &Path) -> Result<ResolvedSettings, ConfigError> {
        if self.flush_interval.is_some() {
            return Err(origin.child("flush_interval").error(
                "batching is set on the queue: use queue.disk.flush.timeout (or queue.mem.flush.timeout) \
                 and flush.min_events instead",
            ));
        }
        let protocol = self.protocol.as_deref().unwrap_or("http");
        if !matches!(protocol, "http" | "https") {
            return Err(origin
                .child("protocol")
                .error(format!("`{protocol}` is not supported; use http or https")));
        }
        let mut hosts = Vec::new();
        for (position, host) in self.hosts.iter().enumerate() {
            hosts.push(
                parse_host(host, protocol, self.path.as_deref())
                    .map_err(|reason| origin.child(format!("hosts.{position}")).error(reason))?,
            );
        }
        let mut authorization = None;
        if let Some(cloud) = &self.cloud {
            if let Some(id) = &cloud.id {
                let url = decode_cloud_id(id).map_err(|reason| origin.child("cloud.id").error(reason))?;
                hosts.push(url);
            }
            if let Some(auth) = &cloud.auth {
                if !auth.expose().contains(':') {
                    return Err(origin.child("cloud.auth").error("write it as `user:password`"));
                }
                authorization = Some(basic(auth.expose()));
            }
        }
        if hosts.is_empty() {
            return Err(origin
                .child("hosts")
                .error("at least one host is required (or cloud.id)"));
        }
        match (&self.username, &self.password, &self.api_key) {
            (Some(_), _, Some(_)) => {
                return Err(origin
                    .child("api_key")
                    .error("set either username/password or api_key, not both"))
            }
            (Some(user), password, None) => {
                let password = password.as_ref().map(Secret::expose).unwrap_or("");
                authorization = Some(basic(&format!("{user}:{password}")));
            }
            (None, Some(_), _) => {
                return Err(origin
                    .child("username")
                    .error("password is set but username is not"))
            }
            (None, None, Some(key)) => {
                if !key.expose().contains(':') {
                    return Err(origin.child("api_key").error(
                        "write the API key as `id:api_key` (the `id` and `api_key` fields of the create-API-key response)",
                    ));
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(key.expose());
                authorization = Some(Secret::new(format!("ApiKey {encoded}")));
            }
            (None, None, None) => {}
        }
        if self.compression_level > 9 {
            return Err(origin
                .child("compression_level")
                .error("must be between 0 (off) and 9"));
        }
        if self.bulk_max_size == 0 {
            return Err(origin.child("bulk_max_size").error("must be at least 1"));
        }
        if self.worker == 0 {
            return Err(origin.child("worker").error("must be at least 1"));
        }
        if self.backoff.init.is_zero() || self.backoff.max < self.backoff.init {
            return Err(origin
                .child("backoff")
                .error("need 0 < backoff.init <= backoff.max"));
        }
        let tls = self.ssl.load(config_path, &origin.child("ssl"))?;
        let index_text = self.index.clone().unwrap_or_else(|| DEFAULT_INDEX.to_owned());
        let index = IndexFormat::parse(&index_text).map_err(|reason| origin.child("index").error(reason))?;
        let non_indexable_policy = match &self.non_indexable_policy {
            None => NonIndexablePolicy::Drop,
            Some(policy) => match (&policy.drop, &policy.dead_letter_index) {
                (Some(_), Some(_)) => {
                    return Err(origin
                        .child("non_indexable_policy")
                        .error("choose one of `drop` and `dead_letter_index`"))
                }
                (_, Some(dead_letter)) if dead_letter.index.trim().is_empty() => {
                    return Err(origin
                        .child("non_indexable_policy.dead_letter_index.index")
                        .error("must not be empty"))
                }
                (_, Some(dead_letter)) => {
                    NonIndexablePolicy::DeadLetterIndex(dead_letter.index.to_lowercase())
                }
                _ => NonIndexablePolicy::Drop,
            },
        };
        Ok(ResolvedSettings {
            hosts,
            authorization,
            headers: self.headers.clone(),
            tls,
            compression_level: self.compression_level,
            bulk_max_size: self.bulk_max_size,
            worker: self.worker,
            timeout: self.timeout,
            backoff: self.backoff.clone(),
            index,
            index_text,
            pipeline: self.pipeline.clone(),
            non_indexable_policy,
        })
    }
}

fn basic(user_and_password: &str) -> Secret {
    let encoded = base64::engine::general_purpose::STANDARD.encode(user_and_password);
    Secret::new(format!("Basic {encoded}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(value: serde_json::Value) -> Result<ResolvedSettings, ConfigError> {
        let origin = Origin::named("threatbeat.yml").child("output.elasticsearch");
        ElasticsearchConfig::parse(&value, &origin)?.resolve(&origin, Path::new("."))
    }

    #[test]
    fn defaults_follow_libbeat() {
        let settings = resolve(json!({"hosts": ["localhost"]})).unwrap();
        assert_eq!(settings.hosts[0].as_str(), "http://localhost:9200/");
        assert_eq!(settings.bulk_max_size, 1600);
        assert_eq!(settings.compression_level, 1);
        assert_eq!(settings.timeout, Duration::from_secs(90));
        assert_eq!(settings.backoff.init, Duration::from_secs(1));
        assert_eq!(settings.backoff.max, Duration::from_secs(60));
        assert_eq!(settings.non_indexable_policy, NonIndexablePolicy::Drop);
        assert_eq!(settings.index_text, DEFAULT_INDEX);
    }

    #[test]
    fn hosts_protocol_and_path() {
        let settings = resolve(json!({"hosts": ["es1:9201", "https://es2.example", "http://es3"], "protocol": "https", "path": "/es"})).unwrap();
        let hosts: Vec<&str> = settings.hosts.iter().map(Url::as_str).collect();
        assert_eq!(
            hosts,
            [
                "https://es1:9201/es/",
                "https://es2.example/es/",
                "http://es3/es/"
            ]
        );
    }

    #[test]
    fn auth_headers() {
        let settings =
            resolve(json!({"hosts": ["h"], "api_key": "TiNAGG4BaaMdaH1tRfuU:KnR6yE41RrSowb0kQ0HWoA"}))
                .unwrap();
        let header = settings.authorization.unwrap();
        assert_eq!(
            header.expose(),
            format!(
                "ApiKey {}",
                base64::engine::general_purpose::STANDARD
                    .encode("TiNAGG4BaaMdaH1tRfuU:KnR6yE41RrSowb0kQ0HWoA")
            )
        );
        let settings =
            resolve(json!({"hosts": ["h"], "username": "elastic", "password": "changeme"})).unwrap();
        assert_eq!(
            settings.authorization.unwrap().expose(),
            "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
        );
        let error = resolve(json!({"hosts": ["h"], "api_key": "nocolon"})).unwrap_err();
        assert_eq!(error.key, "output.elasticsearch.api_key");
        assert!(
            !error.to_string().contains("nocolon"),
            "secrets never reach errors"
        );
    }

    #[test]
    fn cloud_id_becomes_a_host() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("example.com:9243$es$kb");
        let settings =
            resolve(json!({"cloud.id": format!("x:{encoded}"), "cloud.auth": "elastic:pw"})).unwrap();
        assert_eq!(settings.hosts[0].as_str(), "https://es.example.com:9243/");
        assert!(settings.authorization.is_some());
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (value, key) in [
            (
                json!({"hosts": ["h"], "compression_level": 12}),
                "output.elasticsearch.compression_level",
            ),
            (
                json!({"hosts": ["h"], "bulk_max_size": 0}),
                "output.elasticsearch.bulk_max_size",
            ),
            (
                json!({"hosts": ["h"], "backoff.init": "fast"}),
                "output.elasticsearch.backoff.init",
            ),
            (json!({"hosts": ["ftp://h"]}), "output.elasticsearch.hosts.0"),
            (
                json!({"hosts": ["h"], "worker": 0}),
                "output.elasticsearch.worker",
            ),
            (
                json!({"hosts": ["h"], "index": "x-%{[unclosed"}),
                "output.elasticsearch.index",
            ),
            (
                json!({"hosts": ["h"], "ssl.verification_mode": "maybe"}),
                "output.elasticsearch.ssl.verification_mode",
            ),
            (
                json!({"hosts": ["h"], "bulk_max_sise": 5}),
                "output.elasticsearch.bulk_max_sise",
            ),
            (json!({}), "output.elasticsearch.hosts"),
            (
                json!({"hosts": ["h"], "flush_interval": "1s"}),
                "output.elasticsearch.flush_interval",
            ),
        ] {
            let error = resolve(value.clone()).unwrap_err();
            assert_eq!(error.key, key, "{value}: {error}");
            assert_eq!(error.file, "threatbeat.yml");
        }
    }

    #[test]
    fn dead_letter_policy() {
        let settings =
            resolve(json!({"hosts": ["h"], "non_indexable_policy.dead_letter_index.index": "Dead"})).unwrap();
        assert_eq!(
            settings.non_indexable_policy,
            NonIndexablePolicy::DeadLetterIndex("dead".into())
        );
        let settings = resolve(json!({"hosts": ["h"], "non_indexable_policy": {"drop": null}})).unwrap();
        assert_eq!(settings.non_indexable_policy, NonIndexablePolicy::Drop);
    }
}
