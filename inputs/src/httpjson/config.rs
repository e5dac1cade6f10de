//! The settings of the httpjson input, named as in Filebeat's httpjson v2
//! where they fit.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::tls::TlsSettings;
use threatbeat_core::Secret;

use crate::csv::CsvConfig;
use crate::lines::LinesConfig;
use crate::split::{NestedSplit, SplitConfig};
use threatbeat_core::duration;

/// The whole `httpjson` input config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonConfig {
    /// Time between the starts of two polls. The first poll runs at once.
    #[serde(default = "default_interval", deserialize_with = "duration::deserialize")]
    pub interval: Duration,
    /// The first request of every poll.
    pub request: RequestConfig,
    /// Credentials.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Decoding, splitting and paging of responses.
    #[serde(default)]
    pub response: ResponseConfig,
    /// Cursor fields: name → template evaluated after every page.
    #[serde(default)]
    pub cursor: BTreeMap<String, CursorFieldConfig>,
    /// Keyset paging (order by a timestamp, move the lower bound) instead of
    /// offset paging by `response.pagination`.
    #[serde(default)]
    pub keyset: Option<KeysetConfig>,
    /// Chained requests (Filebeat's `chain`): each record of the root
    /// request's split is the parent of one request per step; the last
    /// step's records are the events. See `docs/inputs/httpjson.md`.
    #[serde(default)]
    pub chain: Vec<ChainEntryConfig>,
    /// The record fields whose values order the root records, ascending
    /// (numbers numerically, other values as text; ties by the next field),
    /// so that a per-record cursor only ever moves forward.
    #[serde(default)]
    pub chain_order_by: Vec<String>,
    /// At most this many chained requests per poll; the records left are
    /// fetched by the next poll. Default 1000.
    #[serde(default = "default_chain_max_requests")]
    pub chain_max_requests: u32,
}

fn default_chain_max_requests() -> u32 {
    1000
}

/// One entry of `chain`. Only `step` exists (Filebeat's `while` does not).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntryConfig {
    /// The step's settings, as written: dotted keys (`request.url`, as
    /// Filebeat writes them) are nested when the chain is built.
    pub step: Value,
}

/// `chain[].step`, after its dotted keys were nested.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainStepConfig {
    /// The request sent once per parent record.
    pub request: ChainRequestConfig,
    /// A JSONPath (`$.uuid`, `$.links.self`) into the parent record: every
    /// occurrence of this exact text in `request.url` is replaced with the
    /// record's value there.
    #[serde(default)]
    pub replace: Option<String>,
    /// A template rendered per parent record (`record`, `cursor`, `poll`):
    /// `true` sends the request, `false` or empty skips the record.
    #[serde(default)]
    pub when: Option<String>,
    /// How the step's responses become records.
    #[serde(default)]
    pub response: ChainResponseConfig,
}

/// `chain[].step.request`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainRequestConfig {
    /// The URL, with the `replace` text and/or `[[ ]]` templates over `record`.
    pub url: String,
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: Method,
    /// Headers added to the input's `request.headers`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `chain[].step.response`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainResponseConfig {
    /// One split, or a list of sibling splits applied to the body (their
    /// records concatenated, each branch without the other branches' targets).
    #[serde(default)]
    pub split: Option<NestedSplit>,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

/// HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Method {
    /// GET (default).
    #[default]
    #[serde(alias = "get")]
    GET,
    /// POST, with the body.
    #[serde(alias = "post")]
    POST,
}

/// How the body is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    /// A JSON object (default).
    #[default]
    #[serde(rename = "application/json")]
    Json,
    /// `application/x-www-form-urlencoded` (values must be scalars).
    #[serde(rename = "application/x-www-form-urlencoded")]
    Form,
}

/// `request.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// The URL; its query parameters become `url.params`.
    pub url: String,
    /// `GET` or `POST`.
    #[serde(default)]
    pub method: Method,
    /// The body, a mapping sent as JSON (or form fields with `encode_as`).
    #[serde(default)]
    pub body: Option<Value>,
    /// `encode_as: application/x-www-form-urlencoded` sends the body as a form.
    #[serde(default)]
    pub encode_as: Encoding,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout: the whole request, body included, when the body
    /// is read whole; each wait for the server when it is split while it
    /// arrives. Default 30s.
    #[serde(default = "default_timeout", deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// An HTTP(S) proxy for every request.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Origins (`https://cdn.example.com:8443`) besides `url`'s that may
    /// receive the credentials (auth, `headers`) when a pagination link or a
    /// redirect leads there. Default none: credentials stay with `url`'s
    /// origin, and never go over `http://` when `url` is `https://`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// TLS settings.
    #[serde(default)]
    pub ssl: TlsSettings,
    /// Transforms building the first request of a poll.
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    /// Retries of one request.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Client-side request rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `request.retry`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included. Default 5.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First back-off wait. Default 1s.
    #[serde(default = "default_wait_min", deserialize_with = "duration::deserialize")]
    pub wait_min: Duration,
    /// Longest back-off wait. Default 60s.
    #[serde(default = "default_wait_max", deserialize_with = "duration::deserialize")]
    pub wait_max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            wait_min: default_wait_min(),
            wait_max: default_wait_max(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}
fn default_wait_min() -> Duration {
    Duration::from_secs(1)
}
fn default_wait_max() -> Duration {
    Duration::from_secs(60)
}

/// `request.rate_limit`: at most `limit` requests per second.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second (fractions allowed: `0.5` = one every 2 s).
    pub limit: f64,
}

/// `auth.*`: at most one method.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A raw key in a header (MISP: `Authorization: <key>`).
    #[serde(default)]
    pub api_key: Option<ApiKeyConfig>,
    /// HTTP basic.
    #[serde(default)]
    pub basic: Option<BasicConfig>,
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer: Option<BearerConfig>,
    /// OAuth2 client credentials.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
}

/// `auth.api_key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The header name. Default `Authorization`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// The key, sent verbatim. An empty key sends no header.
    pub value: Secret,
}

fn default_api_key_header() -> String {
    "Authorization".to_owned()
}

/// `auth.basic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
}

/// `auth.bearer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerConfig {
    /// The token.
    pub token: Secret,
}

/// `auth.oauth2` (client credentials grant).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Scopes, sent space-separated.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra form fields for the token request.
    #[serde(default)]
    pub endpoint_params: BTreeMap<String, String>,
}

/// `response.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// How one body becomes records.
    #[serde(default)]
    pub split: Option<SplitConfig>,
    /// Transforms on the decoded body before the split (`body.*` targets).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    /// Transforms that turn the last request into the next page's request;
    /// paging stops when one renders empty.
    #[serde(default)]
    pub pagination: Vec<TransformConfig>,
    /// At most this many pages per poll (a guard against a server that never stops).
    #[serde(default = "default_page_limit")]
    pub page_limit: u32,
    /// How a body is decoded: JSON (default) or CSV with a header row.
    #[serde(default)]
    pub decode_as: DecodeAs,
    /// CSV settings for `decode_as: text/csv`.
    #[serde(default)]
    pub csv: CsvConfig,
    /// Line settings for `decode_as: text/plain`.
    #[serde(default)]
    pub lines: LinesConfig,
    /// The largest response body read, in bytes, after decompression
    /// (a 0.5 MB gzip may inflate to gigabytes). Default 100 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// The largest body read while it is split element by element (a JSON
    /// body with a `split`), in bytes, after decompression. Such a body is
    /// never held whole, so this limit is about time and trust, not memory.
    /// Default 8 GiB.
    #[serde(default = "default_max_streamed_body_bytes")]
    pub max_streamed_body_bytes: u64,
}

fn default_max_body_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_max_streamed_body_bytes() -> u64 {
    8 * 1024 * 1024 * 1024
}

/// `response.decode_as`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DecodeAs {
    /// One JSON document (default).
    #[default]
    #[serde(rename = "application/json")]
    Json,
    /// CSV with a header row: the body becomes an array of objects, one per
    /// row, keyed by the header's names (Filebeat's `text/csv`).
    #[serde(rename = "text/csv")]
    Csv,
    /// One value per line: the body becomes an array of `{"message": line}`
    /// records, comments and blank lines left out (blocklists).
    #[serde(rename = "text/plain")]
    Text,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            split: None,
            transforms: Vec::new(),
            pagination: Vec::new(),
            page_limit: default_page_limit(),
            decode_as: DecodeAs::default(),
            csv: CsvConfig::default(),
            lines: LinesConfig::default(),
            max_body_bytes: default_max_body_bytes(),
            max_streamed_body_bytes: default_max_streamed_body_bytes(),
        }
    }
}

fn default_page_limit() -> u32 {
    10_000
}

/// One cursor field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorFieldConfig {
    /// Template of the new value.
    pub value: String,
    /// Template used when `value` renders empty.
    #[serde(default)]
    pub default: Option<String>,
    /// An empty result keeps the previous value (default true).
    #[serde(default = "default_true")]
    pub ignore_empty_value: bool,
    /// Type of the stored value.
    #[serde(default)]
    pub value_type: ValueType,
    /// The value is a time from the server (epoch seconds or milliseconds,
    /// or RFC 3339): one later than now plus 5 minutes of clock skew is
    /// stored as now, with a warning, so that one record stamped in 2038
    /// does not make every later poll ask for what comes after it.
    #[serde(default)]
    pub not_in_future: bool,
}

fn default_true() -> bool {
    true
}

/// What a rendered template is turned into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A JSON string (default).
    #[default]
    String,
    /// A JSON integer.
    Int,
    /// Parsed as JSON (numbers, lists, objects keep their type).
    Json,
}

/// One transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TransformConfig {
    /// Sets a target.
    Set(SetConfig),
    /// Appends to a list (body) or adds a header / parameter value.
    Append(SetConfig),
    /// Removes a target.
    Delete(DeleteConfig),
}

/// `set` / `append`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// `body.<path>`, `header.<name>`, `url.params.<name>` or `url.value`.
    pub target: String,
    /// A template (string) or a literal value (number, list, map).
    #[serde(default)]
    pub value: Option<Value>,
    /// Used when `value` renders empty.
    #[serde(default)]
    pub default: Option<Value>,
    /// How the rendered text is typed.
    #[serde(default)]
    pub value_type: ValueType,
    /// A template error stops (pagination) or fails the request, instead of
    /// falling back to `default`.
    #[serde(default)]
    pub fail_on_template_error: bool,
}

/// `delete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteConfig {
    /// The target to remove.
    pub target: String,
}

/// `keyset`: paging by a moving lower bound (MISP reference §13.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysetConfig {
    /// Off keeps offset paging (lets a module switch with a var). Default on.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the items are in the body (`body.response`, `body.response.Attribute`).
    pub items: String,
    /// The item field holding the sort key in epoch seconds (`Event.timestamp`, `timestamp`).
    pub sort_field: String,
    /// The item field identifying an item (`Event.uuid`, `uuid`), to drop boundary duplicates.
    pub id_field: String,
    /// The request target receiving `[lower, upper]`. Default `body.timestamp`.
    #[serde(default = "default_range_target")]
    pub range_target: String,
    /// The request target receiving the page number. Default `body.page`.
    #[serde(default = "default_page_target")]
    pub page_target: String,
    /// The cursor field holding the lower bound. Default `timestamp`.
    #[serde(default = "default_cursor_field")]
    pub cursor_field: String,
    /// Template of the first lower bound when no cursor is stored (epoch seconds).
    pub initial: String,
}

fn default_range_target() -> String {
    "body.timestamp".to_owned()
}
fn default_page_target() -> String {
    "body.page".to_owned()
}
fn default_cursor_field() -> String {
    "timestamp".to_owned()
}
