//! The `httpjson` input: polls a REST API on an interval, pages through the
//! answer, splits each page into events and publishes one batch per page
//! with the cursor that covers it. See `docs/inputs/httpjson.md`.

mod chain;
pub mod client;
pub mod config;
pub mod fetch;
mod keyset;
mod poll;
mod stream;
pub mod template;
pub mod transform;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, FieldPath, Input, InputContext, InputError, PluginConfig};
use tokio::sync::Mutex;
use url::Url;

use self::chain::Chain;
use self::client::{build_client, Auth, CredentialScope};
use self::config::{DecodeAs, HttpJsonConfig, ValueType};
use self::fetch::{sleep_or_shutdown, Fetcher};
use self::keyset::Keyset;
use self::poll::PollError;
use self::template::{TemplateBuilder, TemplateId, Templates};
use self::transform::{compile, RequestState, Transform};
use crate::dead_letter::DeadLetter;
use crate::metrics::{unix_now, InputMetrics};
use crate::split::{Split, StreamPlan};
use threatbeat_core::tls::VerificationMode;

/// A cursor field compiled from config.
struct CursorField {
    name: String,
    value: TemplateId,
    default: Option<TemplateId>,
    ignore_empty_value: bool,
    value_type: ValueType,
    not_in_future: bool,
}

/// The built input.
pub struct HttpJsonInput {
    interval: Duration,
    page_limit: u32,
    fetcher: Fetcher,
    templates: Templates,
    base_request: RequestState,
    request_transforms: Vec<Transform>,
    response_transforms: Vec<Transform>,
    pagination: Vec<Transform>,
    split: Option<Split>,
    /// How pages are split while they arrive, when they can be.
    stream: Option<Arc<StreamPlan>>,
    /// Where records a nested split cannot cut are set aside.
    dead_letter: DeadLetter,
    cursor_fields: Vec<CursorField>,
    keyset: Option<Keyset>,
    chain: Option<Chain>,
}

/// Parses and checks a request URL: `http` or `https` with a host. The URL
/// parser alone accepts what a half-filled variable leaves behind
/// (`https://${MISP_HOST}/x` with `MISP_HOST=http://lab` gives
/// `https://http//lab/x`, host `http`; an empty host gives `https:///x`,
/// host `x`), so the written text is checked before it is parsed.
pub fn check_url(text: &str, origin: &threatbeat_core::Origin) -> Result<Url, ConfigError> {
    let lower = text.trim().to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return Err(origin.error(format!(
            "`{text}` is not an http:// or https:// URL; write the whole URL, such as https://misp.example.org/events/restSearch"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(origin.error(format!(
            "`{text}` has no host; is the variable that fills it empty?"
        )));
    }
    if matches!(authority, "http" | "http:" | "https" | "https:") && rest[authority.len()..].starts_with('/')
    {
        return Err(origin.error(format!(
            "`{text}` has a second scheme where the host belongs; write the scheme once, e.g. set the whole URL (MISP_URL=http://misp.lab:8080) instead of putting `http://` into a host variable"
        )));
    }
    let url =
        Url::parse(text.trim()).map_err(|error| origin.error(format!("`{text}` is not a URL: {error}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(origin.error(format!("`{text}` has no host")));
    }
    Ok(url)
}

/// What `threatbeat test modules` learns about one httpjson input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The first request's URL, without credentials or query (it may hold a key).
    pub url: String,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// How the server answered.
    pub answer: fetch::ProbeAnswer,
}

/// Builds the input from `raw` and sends the first request of a poll, as a
/// poll from `cursor` (the stored one, or none) builds it, once: no retries,
/// nothing published, no cursor stored.
pub async fn probe(
    raw: &PluginConfig,
    context: &BuildContext,
    cursor: Option<&Value>,
) -> Result<ProbeReport, ConfigError> {
    let input = HttpJsonInput::build(raw, context)?;
    let cursor = match cursor {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let mut shown = input.base_request.url.clone();
    shown.set_query(None);
    let url = threatbeat_core::redact_userinfo(shown.as_str()).into_owned();
    let method = match input.fetcher.method {
        config::Method::GET => "GET",
        config::Method::POST => "POST",
    };
    let answer = match input.first_request(&cursor) {
        Ok(request) => input.fetcher.probe(&request).await,
        Err(error) => fetch::ProbeAnswer::NotSent(error.to_string()),
    };
    Ok(ProbeReport { url, method, answer })
}

/// Registry factory for `type: httpjson`.
pub fn build(config: &PluginConfig, context: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let input = HttpJsonInput::build(config, context)?;
    // A dry run of the first poll's request (no cursor yet), so that `test
    // config` and the start refuse a template that can only fail — an
    // invalid date format, a duration over the limit — instead of the
    // first poll.
    if let Err(error) = input.first_request(&Map::new()) {
        return Err(config
            .origin
            .child("request.transforms")
            .error(format!("the first request cannot be built: {error}")));
    }
    Ok(Box::new(input))
}

impl HttpJsonInput {
    /// Builds and validates the input from its raw config.
    pub fn build(raw: &PluginConfig, context: &BuildContext) -> Result<Self, ConfigError> {
        let config: HttpJsonConfig = raw.parse()?;
        let origin = &raw.origin;
        let url = check_url(&config.request.url, &origin.child("request.url"))?;
        if config.interval.is_zero() {
            return Err(origin.child("interval").error("must be greater than zero"));
        }
        let body = match &config.request.body {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(origin.child("request.body").error("must be a mapping")),
        };
        let headers = config
            .request
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let scope = CredentialScope::build(&config.request, &url, origin)?;
        let client = build_client(&config.request, &scope, &context.config_path, origin)?;
        if config.request.ssl.verification_mode == VerificationMode::None {
            tracing::warn!(input = %context.pipeline_id, url = %url, "ssl.verification_mode is `none`: the server's certificate is NOT verified; anyone on the path can read and change this traffic");
        }
        let auth = Auth::build(&config.auth, origin)?;
        let min_spacing = match &config.request.rate_limit {
            Some(limit) if limit.limit > 0.0 => Some(Duration::from_secs_f64(1.0 / limit.limit)),
            Some(_) => {
                return Err(origin
                    .child("request.rate_limit.limit")
                    .error("must be greater than zero"))
            }
            None => None,
        };
        let mut templates = TemplateBuilder::new();
        let request_transforms = compile(
            &config.request.transforms,
            &mut templates,
            &origin.child("request.transforms"),
        )?;
        let response_transforms = compile(
            &config.response.transforms,
            &mut templates,
            &origin.child("response.transforms"),
        )?;
        let pagination = compile(
            &config.response.pagination,
            &mut templates,
            &origin.child("response.pagination"),
        )?;
        let split = match &config.response.split {
            Some(split) => Some(Split::build(split, &origin.child("response.split"))?),
            None => None,
        };
        let mut cursor_fields = Vec::new();
        for (name, field) in &config.cursor {
            let field_origin = origin.child("cursor").child(name);
            let value = templates
                .add(&field.value)
                .map_err(|reason| field_origin.child("value").error(reason))?;
            let default = match &field.default {
                Some(source) => Some(
                    templates
                        .add(source)
                        .map_err(|reason| field_origin.child("default").error(reason))?,
                ),
                None => None,
            };
            cursor_fields.push(CursorField {
                name: name.clone(),
                value,
                default,
                ignore_empty_value: field.ignore_empty_value,
                value_type: field.value_type,
                not_in_future: field.not_in_future,
            });
        }
        let keyset = match &config.keyset {
            Some(keyset) if keyset.enabled => {
                Some(Keyset::build(keyset, &mut templates, &origin.child("keyset"))?)
            }
            _ => None,
        };
        if keyset.is_some() && !config.chain.is_empty() {
            return Err(origin
                .child("chain")
                .error("`chain` does not combine with `keyset` paging"));
        }
        let chain = Chain::build(
            &config.chain,
            &config.chain_order_by,
            config.chain_max_requests,
            &url,
            &mut templates,
            origin,
            |method| {
                Ok(Fetcher {
                    client: client.clone(),
                    auth: Auth::build(&config.auth, origin)?,
                    method,
                    encoding: config.request.encode_as,
                    retry: config.request.retry.clone(),
                    min_spacing,
                    last_sent: Mutex::new(None),
                    id: context.pipeline_id.clone(),
                    metrics: InputMetrics::new(&context.pipeline_id),
                    // Chained answers are JSON whatever the root's decoding.
                    decode_as: DecodeAs::Json,
                    csv: Default::default(),
                    lines: Default::default(),
                    timeout: config.request.timeout,
                    max_body_bytes: config.response.max_body_bytes,
                    max_streamed_body_bytes: config.response.max_streamed_body_bytes,
                    scope: scope.clone(),
                })
            },
        )?;
        if config.response.page_limit == 0 {
            return Err(origin.child("response.page_limit").error("must be at least 1"));
        }
        // Pages are split while they arrive unless something needs the body
        // whole first: response transforms, keyset paging, a chain, CSV or lines.
        let stream = match &split {
            Some(split)
                if config.response.decode_as == DecodeAs::Json
                    && response_transforms.is_empty()
                    && keyset.is_none()
                    && chain.is_none() =>
            {
                StreamPlan::new(split, stream::SPOOL_MEMORY_BYTES).map(Arc::new)
            }
            _ => None,
        };
        Ok(Self {
            interval: config.interval,
            page_limit: config.response.page_limit,
            fetcher: Fetcher {
                client,
                auth,
                method: config.request.method,
                encoding: config.request.encode_as,
                retry: config.request.retry.clone(),
                min_spacing,
                last_sent: Mutex::new(None),
                id: context.pipeline_id.clone(),
                metrics: InputMetrics::new(&context.pipeline_id),
                decode_as: config.response.decode_as,
                csv: config.response.csv.clone(),
                lines: config.response.lines.clone(),
                timeout: config.request.timeout,
                max_body_bytes: config.response.max_body_bytes,
                max_streamed_body_bytes: config.response.max_streamed_body_bytes,
                scope,
            },
            templates: templates.finish(),
            base_request: RequestState::new(url, headers, body),
            request_transforms,
            response_transforms,
            pagination,
            split,
            stream,
            dead_letter: DeadLetter::new(&context.data_path, &context.pipeline_id),
            cursor_fields,
            keyset,
            chain,
        })
    }

    /// The stored cursor as a map (anything else starts fresh, with a warning).
    fn initial_cursor(context: &InputContext) -> Map<String, Value> {
        match &context.cursor {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                tracing::warn!(input = %context.id, cursor = %other, "stored cursor is not an object; starting from the initial window");
                Map::new()
            }
        }
    }
}

#[async_trait]
impl Input for HttpJsonInput {
    async fn run(mut self: Box<Self>, context: InputContext) -> Result<(), InputError> {
        if context.id != self.fetcher.id {
            self.fetcher.metrics = InputMetrics::new(&context.id);
            for step in self.chain.iter_mut().flat_map(|chain| chain.steps.iter_mut()) {
                step.fetcher.metrics = InputMetrics::new(&context.id);
            }
        }
        let mut cursor = Self::initial_cursor(&context);
        // Logged and quoted in errors: credentials written in the URL stay out.
        let url = threatbeat_core::redact_userinfo(self.base_request.url.as_str()).into_owned();
        let cursor_text = Value::Object(cursor.clone()).to_string();
        tracing::info!(input = %context.id, url, interval = ?self.interval, paging = if self.keyset.is_some() { "keyset" } else if self.chain.is_some() { "chain" } else { "offset" }, cursor = %cursor_text, run_once = context.run_once, "httpjson input started");
        let mut consecutive_failures: u64 = 0;
        loop {
            let started = Instant::now();
            let outcome = match (&self.keyset, &self.chain) {
                (Some(keyset), _) => self.poll_keyset(keyset, &mut cursor, &context).await,
                (None, Some(chain)) => self.poll_chain(chain, &mut cursor, &context).await,
                (None, None) => self.poll(&mut cursor, &context).await,
            };
            match outcome {
                Ok(summary) => {
                    consecutive_failures = 0;
                    self.fetcher
                        .metrics
                        .record_poll_success(unix_now(), cursor_timestamp(&cursor));
                    let cursor_text = Value::Object(cursor.clone()).to_string();
                    tracing::info!(input = %context.id, url, pages = summary.pages, events = summary.events, cursor = %cursor_text, took = ?started.elapsed(), "poll complete");
                }
                Err(PollError::Shutdown) => return Ok(()),
                Err(error) => {
                    consecutive_failures += 1;
                    if context.run_once {
                        tracing::error!(input = %context.id, url, error = %error, "poll failed; the cursor covers only what was delivered");
                        return Err(InputError::Fatal(format!(
                            "{}: poll of {url} failed: {error}",
                            context.id
                        )));
                    }
                    let retry_in = failed_poll_wait(consecutive_failures, self.interval);
                    tracing::error!(input = %context.id, url, consecutive_failures, next_poll_in = ?retry_in, error = %error, "poll failed; the cursor covers only what was delivered; polling again sooner than the interval, backing off");
                    if sleep_or_shutdown(retry_in, &context.shutdown).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            }
            if context.run_once {
                return Ok(());
            }
            let wait = self.interval.saturating_sub(started.elapsed());
            if sleep_or_shutdown(wait, &context.shutdown).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The first wait after a failed poll; it doubles with each further failure.
const FIRST_POLL_RETRY: Duration = Duration::from_secs(10);

/// How long to wait after the `failures`-th failed poll in a row: 10 s,
/// doubling, never more than `interval`. A server down for a minute must not
/// cost an hour of a 60m interval, and one down for a day is not hammered.
fn failed_poll_wait(failures: u64, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20) as u32;
    FIRST_POLL_RETRY.saturating_mul(1 << doublings).min(interval)
}

/// The newest unix timestamp (seconds, from 2001-09-09 on) among the cursor's
/// top-level values; other values (page numbers, offsets, ids) are ignored.
fn cursor_timestamp(cursor: &Map<String, Value>) -> Option<i64> {
    const EARLIEST: i64 = 1_000_000_000;
    let latest = unix_now() as i64 + 86_400;
    cursor
        .values()
        .filter_map(as_epoch)
        .filter(|seconds| (EARLIEST..=latest).contains(seconds))
        .max()
}

/// Reads an integer from a JSON number or a numeric string.
fn as_epoch(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64().or_else(|| number.as_f64().map(|f| f as i64)),
        Value::String(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| text.trim().parse::<f64>().ok().map(|f| f as i64)),
        _ => None,
    }
}

/// Parses a `body.<path>` target into the path inside the body.
fn body_path(raw: &str, origin: &threatbeat_core::Origin) -> Result<FieldPath, ConfigError> {
    raw.strip_prefix("body.")
        .ok_or_else(|| origin.error(format!("`{raw}` must start with `body.`")))
        .and_then(|path| FieldPath::parse(path).map_err(|error| origin.error(error.to_string())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use threatbeat_core::Origin;

    use super::*;

    #[test]
    fn the_cursor_timestamp_ignores_values_that_are_not_unix_times() {
        let cursor = json!({"timestamp": "1700000000", "page": 3, "offset": 12000, "since": 1690000000});
        let Value::Object(cursor) = cursor else {
            unreachable!()
        };
        assert_eq!(cursor_timestamp(&cursor), Some(1_700_000_000));
        let Value::Object(no_time) = json!({"page": 2, "uuid": "abc"}) else {
            unreachable!()
        };
        assert_eq!(cursor_timestamp(&no_time), None);
    }

    #[test]
    fn failed_polls_are_retried_sooner_doubling_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=10).map(|n| failed_poll_wait(n, hour).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
        assert_eq!(failed_poll_wait(u64::MAX, hour), hour);
        assert_eq!(
            failed_poll_wait(1, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn request_urls_need_one_http_scheme_and_a_host() {
        let origin = Origin::named("modules.d/x.yml").child("request.url");
        for good in [
            "https://misp.example.org/events/restSearch",
            "http://127.0.0.1:8080/events",
            "HTTPS://Misp.Example.org",
            "http://http:8080/x",
        ] {
            check_url(good, &origin).unwrap_or_else(|error| panic!("{good}: {error}"));
        }
        for (bad, says) in [
            ("https://http//127.0.0.1:8080/events/restSearch", "second scheme"),
            ("https://http://misp.lab/events", "second scheme"),
            ("https://https//misp.lab", "second scheme"),
            ("https:///events/restSearch", "no host"),
            ("misp.example.org/events", "not an http:// or https:// URL"),
            ("ftp://misp.example.org/", "not an http:// or https:// URL"),
            ("https://exa mple.org/", "is not a URL"),
        ] {
            let error = check_url(bad, &origin).expect_err(bad);
            assert_eq!(error.file, "modules.d/x.yml");
            assert_eq!(error.key, "request.url");
            assert!(
                error.reason.contains(says) && error.reason.contains(bad),
                "{bad}: {}",
                error.reason
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let raw = PluginConfig {
            type_name: "httpjson".into(),
            settings: json!({
                "request": {"url": "https://misp.test/events/restSearch", "ssl": {"key": "-----BEGIN PRIVATE KEY-----\nSECRETKEY"}},
                "auth": {"api_key": {"value": "SimulatorKey0123456789abcdefABCDEF012345"}}
            }),
            origin: Origin::named("test"),
        };
        let config: HttpJsonConfig = raw.parse().unwrap();
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("SimulatorKey") && !printed.contains("SECRETKEY"),
            "{printed}"
        );
        let basic: HttpJsonConfig = PluginConfig {
            settings: json!({"request": {"url": "https://x"}, "auth": {"basic": {"user": "u", "password": "hunter2"}}}),
            ..raw
        }
        .parse()
        .unwrap();
        let auth = Auth::build(&basic.auth, &Origin::named("test")).unwrap();
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
