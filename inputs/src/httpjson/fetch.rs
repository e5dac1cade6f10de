//! Sending one request: retries with exponential back-off and jitter, 429
//! waits (`Retry-After`, MISP's `X-Rate-Limit-Reset`), a client-side rate
//! limit, and decoding of the body. Every wait ends early on shutdown.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::{Map, Value};
use threatbeat_core::Backoff;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::client::{Auth, CredentialScope};
use super::config::{DecodeAs, Encoding, Method, RetryConfig};
use super::transform::RequestState;
use crate::csv::{decode_csv, CsvConfig};
use crate::decode::{decode_json, misp_error_message, snippet};
use crate::lines::{decode_lines, LinesConfig};
use crate::metrics::InputMetrics;

/// The most of a refusal's body `probe` reads to say why.
const PROBE_BODY_LIMIT: u64 = 64 * 1024;

/// How a server answered one request sent by [`Fetcher::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// The request could not be prepared (an OAuth2 token request failed).
    NotSent(String),
    /// No HTTP answer: connection refused, TLS, timeout.
    Unreachable(String),
    /// An HTTP answer.
    Answered {
        /// The status code.
        status: u16,
        /// Its reason phrase (`Forbidden`).
        reason: String,
        /// Why, from the body, when the status is not a success.
        detail: Option<String>,
    },
}

/// A decoded response.
#[derive(Debug)]
pub struct Response {
    /// The JSON body.
    pub body: Value,
    /// Headers, lower-case names; repeated names joined with `, `.
    pub headers: Map<String, Value>,
}

/// How an answer's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Whole, then decoded.
    Whole,
    /// Split while it arrives.
    Streamed,
}

/// A successful answer whose body is not read yet.
pub struct Head {
    /// The status (a success).
    pub status: StatusCode,
    /// Headers, lower-case names; repeated names joined with `, `.
    pub headers: Map<String, Value>,
    /// The answer, its body unread.
    pub response: reqwest::Response,
    /// When the request was sent.
    pub started: Instant,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The input is shutting down.
    #[error("shutting down")]
    Shutdown,
    /// The last attempt failed with `reason`; `retryable` says whether more attempts could help.
    #[error("{reason}")]
    Failed {
        /// What went wrong (status, body snippet, or transport error).
        reason: String,
        /// Whether another attempt could succeed.
        retryable: bool,
        /// Seconds the server asked us to wait (429).
        wait: Option<u64>,
    },
}

pub(super) fn failed(reason: String, retryable: bool) -> FetchError {
    FetchError::Failed {
        reason,
        retryable,
        wait: None,
    }
}

/// Sends requests for one input.
pub struct Fetcher {
    /// The HTTP client.
    pub client: Client,
    /// Credentials.
    pub auth: Auth,
    /// `GET` or `POST`.
    pub method: Method,
    /// JSON or form body.
    pub encoding: Encoding,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Minimum time between two requests (rate limit).
    pub min_spacing: Option<Duration>,
    /// When the last request was sent.
    pub last_sent: Mutex<Option<Instant>>,
    /// Pipeline id, for logs.
    pub id: String,
    /// Counters of requests and pages.
    pub metrics: InputMetrics,
    /// JSON or CSV bodies.
    pub decode_as: DecodeAs,
    /// CSV settings.
    pub csv: CsvConfig,
    /// Line settings.
    pub lines: LinesConfig,
    /// `request.timeout`: the whole request when its body is read whole.
    pub timeout: Duration,
    /// The largest body read whole (after decompression).
    pub max_body_bytes: u64,
    /// The largest body read while it is split (after decompression).
    pub max_streamed_body_bytes: u64,
    /// Which origins get the credentials.
    pub scope: CredentialScope,
}

/// Why a body was not read whole.
pub(super) enum BodyError {
    /// More than the limit arrived (decompressed).
    TooLarge,
    /// The connection failed.
    Read(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => formatter.write_str("the answer is larger than its limit"),
            BodyError::Read(error) => {
                formatter.write_str(&threatbeat_core::redact_userinfo(&error.to_string()))
            }
        }
    }
}

/// Reads `response`'s body chunk by chunk (decompressed as it arrives),
/// stopping as soon as it exceeds `limit` bytes: a compression bomb costs
/// at most the limit, never its inflated size.
pub(super) async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Waits `duration` unless `shutdown` fires first.
pub async fn sleep_or_shutdown(duration: Duration, shutdown: &CancellationToken) -> Result<(), FetchError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = shutdown.cancelled() => Err(FetchError::Shutdown),
    }
}

/// The longest wait a server may ask for (MISP's rate-limit window is 900 s).
const MAX_SERVER_WAIT: u64 = 3600;

/// Seconds to wait from `Retry-After` (seconds or an HTTP date) or
/// `X-Rate-Limit-Reset` (MISP: seconds left in the window, not an epoch),
/// at most an hour.
fn server_wait(headers: &HeaderMap) -> Option<u64> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let seconds = header("retry-after")
        .and_then(|value| {
            value.parse::<u64>().ok().or_else(|| {
                chrono::DateTime::parse_from_rfc2822(value)
                    .ok()
                    .map(|date| (date.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64)
            })
        })
        .or_else(|| header("x-rate-limit-reset")?.parse::<u64>().ok())?;
    Some(seconds.min(MAX_SERVER_WAIT))
}

impl Fetcher {
    /// Sends `request`, retrying as configured, and decodes the whole body.
    /// Logs each failed attempt.
    pub async fn fetch(
        &self,
        request: &RequestState,
        shutdown: &CancellationToken,
    ) -> Result<Response, FetchError> {
        self.with_retries(request, shutdown, || self.send_once(request))
            .await
    }

    /// Sends `request`, retrying as configured, up to a successful status:
    /// the body is left for the caller to stream.
    pub async fn fetch_head(
        &self,
        request: &RequestState,
        shutdown: &CancellationToken,
    ) -> Result<Head, FetchError> {
        self.with_retries(request, shutdown, || self.send_head(request, Body::Streamed))
            .await
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// configured are used up, waiting between attempts as the server asks
    /// or with a [`Backoff`] from `retry.wait_min` up to `retry.wait_max`.
    pub async fn with_retries<T, Attempt, Sent>(
        &self,
        request: &RequestState,
        shutdown: &CancellationToken,
        attempt_once: Attempt,
    ) -> Result<T, FetchError>
    where
        Attempt: Fn() -> Sent,
        Sent: std::future::Future<Output = Result<T, FetchError>>,
    {
        let mut attempts = Attempts::new(self, request);
        loop {
            self.pace(shutdown).await?;
            let outcome = tokio::select! {
                outcome = attempt_once() => outcome,
                _ = shutdown.cancelled() => return Err(FetchError::Shutdown),
            };
            let error = match outcome {
                Ok(response) => {
                    self.metrics.record_page();
                    return Ok(response);
                }
                Err(error) => error,
            };
            let FetchError::Failed {
                reason,
                retryable: true,
                wait,
            } = &error
            else {
                return Err(error);
            };
            let delay = attempts
                .after_retryable_failure(reason, *wait)
                .map_err(|reason| failed(reason, true))?;
            if matches!(error, FetchError::Failed { ref reason, .. } if reason.starts_with("401")) {
                self.auth.invalidate().await;
            }
            sleep_or_shutdown(delay, shutdown).await?;
        }
    }

    /// Honours the client-side rate limit.
    async fn pace(&self, shutdown: &CancellationToken) -> Result<(), FetchError> {
        let Some(spacing) = self.min_spacing else {
            return Ok(());
        };
        let mut last = self.last_sent.lock().await;
        if let Some(previous) = *last {
            let ready = previous + spacing;
            let now = Instant::now();
            if ready > now {
                sleep_or_shutdown(ready - now, shutdown).await?;
            }
        }
        *last = Some(Instant::now());
        Ok(())
    }

    /// Sends `request` once, without retries or pacing, and reports how the
    /// server answered: what `threatbeat test modules` shows per fileset.
    pub async fn probe(&self, request: &RequestState) -> ProbeAnswer {
        let builder = match self.prepare(request).await {
            Ok(builder) => builder.timeout(self.timeout),
            Err(error) => return ProbeAnswer::NotSent(error.to_string()),
        };
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => return ProbeAnswer::Unreachable(describe(error)),
        };
        let status = response.status();
        let detail = if status.is_success() {
            None
        } else {
            // A few kilobytes say why (MISP's message); more is not shown.
            read_body(response, PROBE_BODY_LIMIT).await.ok().map(|bytes| {
                match decode_json(&bytes).ok().as_ref().and_then(misp_error_message) {
                    Some(message) => message,
                    None => snippet(&String::from_utf8_lossy(&bytes)),
                }
            })
        };
        ProbeAnswer::Answered {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or_default().to_owned(),
            detail,
        }
    }

    /// Sends `request` once and reads the answer up to its headers; a
    /// status that is not a success reads the (limited) body to say why.
    async fn send_head(&self, request: &RequestState, body: Body) -> Result<Head, FetchError> {
        let mut builder = self.prepare(request).await?;
        // A body read whole must arrive within `request.timeout`; one split
        // while it arrives takes as long as its records take to process, so
        // only each wait for the server (the client's read timeout) is bounded.
        if body == Body::Whole {
            builder = builder.timeout(self.timeout);
        }
        let started = Instant::now();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                self.metrics.record_request(None, started.elapsed().as_secs_f64());
                return Err(failed(format!("request failed: {}", describe(error)), true));
            }
        };
        let status = response.status();
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&text);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::String(text));
                }
            }
        }
        if status.is_success() {
            return Ok(Head {
                status,
                headers,
                response,
                started,
            });
        }
        let wait = server_wait(response.headers());
        let bytes = read_body(response, self.max_body_bytes).await;
        self.metrics
            .record_request(Some(status.as_u16()), started.elapsed().as_secs_f64());
        let bytes = bytes.map_err(|error| self.body_error(status, error))?;
        let detail = match decode_json(&bytes).ok().as_ref().and_then(misp_error_message) {
            Some(message) => message,
            None => snippet(&String::from_utf8_lossy(&bytes)),
        };
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::UNAUTHORIZED && matches!(self.auth, Auth::OAuth2(_));
        Err(FetchError::Failed {
            reason: format!("{status}: {detail}"),
            retryable,
            wait: if status == StatusCode::TOO_MANY_REQUESTS {
                wait
            } else {
                None
            },
        })
    }

    /// Why reading a body failed, as a fetch error.
    pub(super) fn body_error(&self, status: StatusCode, error: BodyError) -> FetchError {
        match error {
            BodyError::TooLarge => failed(
                format!(
                    "{status} but the response body is larger than response.max_body_bytes ({} bytes, after decompression); \
                     not retried: raise the limit if the answer is genuine",
                    self.max_body_bytes
                ),
                false,
            ),
            BodyError::Read(error) => failed(
                format!("reading the response body failed: {}", describe(error)),
                true,
            ),
        }
    }

    /// Sends `request` once and decodes the whole body.
    async fn send_once(&self, request: &RequestState) -> Result<Response, FetchError> {
        let Head {
            status,
            headers,
            response,
            started,
        } = self.send_head(request, Body::Whole).await?;
        let bytes = read_body(response, self.max_body_bytes).await;
        self.metrics
            .record_request(Some(status.as_u16()), started.elapsed().as_secs_f64());
        let bytes = bytes.map_err(|error| self.body_error(status, error))?;
        if self.decode_as == DecodeAs::Csv {
            let rows = decode_csv(&bytes, &self.csv)
                .map_err(|error| failed(format!("{status} but {error}"), true))?;
            crate::file::log_skipped_rows(&self.id, request.url.as_str(), "CSV row", &rows.errors);
            return Ok(Response {
                body: Value::Array(rows.records),
                headers,
            });
        }
        if self.decode_as == DecodeAs::Text {
            let lines = decode_lines(&bytes, &self.lines)
                .map_err(|error| failed(format!("{status} but {error}"), true))?;
            crate::file::log_skipped_rows(&self.id, request.url.as_str(), "line", &lines.errors);
            return Ok(Response {
                body: Value::Array(lines.records),
                headers,
            });
        }
        let body = decode_json(&bytes).map_err(|error| failed(format!("{status} but {error}"), true))?;
        if let Some(message) = misp_error_message(&body) {
            return Err(failed(format!("{status} with a MISP error: {message}"), false));
        }
        Ok(Response { body, headers })
    }

    /// The request as sent: method, `Accept`, headers, body and credentials.
    async fn prepare(&self, request: &RequestState) -> Result<reqwest::RequestBuilder, FetchError> {
        let url = request.full_url();
        let mut builder = match self.method {
            Method::GET => self.client.get(url.clone()),
            Method::POST => self.client.post(url.clone()),
        };
        // The default `Accept` only when the request sets none: a TAXII
        // server answers 406 to a request that also accepts plain JSON.
        if !request
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            let accept = match self.decode_as {
                DecodeAs::Json => "application/json",
                DecodeAs::Csv => "text/csv",
                DecodeAs::Text => "text/plain",
            };
            builder = builder.header("Accept", accept);
        }
        // A pagination link to another origin gets no credentials.
        let trusted = self.scope.trusts(&request.url);
        for (name, value) in &request.headers {
            if trusted || !self.scope.is_credential_header(name) {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        if self.method == Method::POST {
            builder = match self.encoding {
                Encoding::Json => builder.json(&request.body),
                Encoding::Form => {
                    let fields: Vec<(String, String)> = request
                        .body
                        .iter()
                        .map(|(key, value)| {
                            let text = match value {
                                Value::String(text) => text.clone(),
                                other => other.to_string(),
                            };
                            (key.clone(), text)
                        })
                        .collect();
                    builder.form(&fields)
                }
            };
        }
        match trusted {
            true => self
                .auth
                .apply(&self.client, builder)
                .await
                .map_err(|reason| failed(reason, true)),
            false => {
                tracing::warn!(input = %self.id, url = %threatbeat_core::redact_userinfo(request.url.as_str()), "this request leaves the configured origin: it is sent without credentials (list its origin in request.allowed_origins to trust it)");
                Ok(builder)
            }
        }
    }
}

/// A reqwest error with its cause chain (the top level alone says little),
/// without the URL: callers log the URL without its query, which may hold a key.
pub(super) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(hint) = threatbeat_core::tls::plain_http_hint(&text) {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// The attempts at one request (`request.retry`): counts them, and says how
/// long to wait before the next or that none is left. One for the whole-body
/// fetch and the streamed page, so both retry, wait and log alike.
pub(super) struct Attempts<'a> {
    input: &'a str,
    url: &'a str,
    allowed: u32,
    made: u32,
    backoff: Backoff,
}

impl<'a> Attempts<'a> {
    /// No attempt made yet at `request`, with `fetcher`'s retry settings.
    pub(super) fn new(fetcher: &'a Fetcher, request: &'a RequestState) -> Self {
        Self {
            input: &fetcher.id,
            url: request.url.as_str(),
            allowed: fetcher.retry.max_attempts.max(1),
            made: 0,
            backoff: Backoff::new(fetcher.retry.wait_min, fetcher.retry.wait_max),
        }
    }

    /// Counts an attempt that failed for `reason`, worth retrying. Returns
    /// the wait before the next one (`server_wait` seconds when the server
    /// named it), logged; or, when the attempts are used up, the reason the
    /// request is given up for this poll.
    pub(super) fn after_retryable_failure(
        &mut self,
        reason: &str,
        server_wait: Option<u64>,
    ) -> Result<Duration, String> {
        self.made += 1;
        if self.made >= self.allowed {
            return Err(format!(
                "giving up this poll after {} attempt(s): {reason}",
                self.made
            ));
        }
        // The step grows with every failed attempt, also one the server
        // timed: a later untimed retry waits as long as its number says.
        let own_wait = self.backoff.next_wait();
        let delay = server_wait.map_or(own_wait, Duration::from_secs);
        tracing::warn!(input = %self.input, url = self.url, attempt = self.made, of = self.allowed, retry_in = ?delay, error = %reason, "request failed, retrying");
        Ok(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_wait_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-rate-limit-reset", "7".parse().unwrap());
        assert_eq!(server_wait(&headers), Some(7));
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(server_wait(&headers), Some(3));
        headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(server_wait(&headers), Some(0), "a date in the past: retry now");
        headers.insert("retry-after", "99999999999".parse().unwrap());
        assert_eq!(server_wait(&headers), Some(MAX_SERVER_WAIT));
    }
}
