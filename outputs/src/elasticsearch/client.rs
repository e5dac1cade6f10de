//! The HTTP side: one reqwest client, several hosts used round-robin, a host
//! that fails is skipped for a while (failover), the authorization header,
//! gzip request bodies and TLS settings.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Method;
use url::Url;

use super::config::ResolvedSettings;

/// How long a host that refused a connection is skipped at first.
const HOST_QUARANTINE: Duration = Duration::from_secs(1);
/// The longest a failing host is skipped.
const MAX_HOST_QUARANTINE: Duration = Duration::from_secs(60);

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connection refused, reset, DNS or timeout.
    #[error("request to {url} failed: {reason}")]
    Unreachable {
        /// The URL without credentials.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The client could not be built from the TLS settings.
    #[error("{0}")]
    Setup(String),
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body bytes (already decompressed).
    pub body: bytes::Bytes,
    /// The host that answered.
    pub host: Url,
    /// Request body bytes sent (after compression).
    pub sent_bytes: u64,
}

struct HostState {
    url: Url,
    quarantined_until: Option<Instant>,
    quarantine: Duration,
}

/// A client for one Elasticsearch cluster.
pub struct Client {
    http: reqwest::Client,
    hosts: Vec<Mutex<HostState>>,
    next_host: AtomicUsize,
    headers: HeaderMap,
    compression_level: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hosts", &self.hosts.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client; fails on unreadable TLS files or bad header values.
    pub fn new(settings: &ResolvedSettings) -> Result<Self, TransportError> {
        let mut headers = HeaderMap::new();
        if let Some(authorization) = &settings.authorization {
            let mut value = HeaderValue::from_str(authorization.expose()).map_err(|_| {
                TransportError::Setup("the credentials contain characters not allowed in a header".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TransportError::Setup(format!("`{name}` is not a valid header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| TransportError::Setup(format!("the value of header `{name}` is not valid")))?;
            headers.insert(name, value);
        }
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(3))
            .user_agent(concat!("threatbeat/", env!("CARGO_PKG_VERSION")));
        let builder = settings.tls.apply(builder);
        let http = builder
            .build()
            .map_err(|error| TransportError::Setup(format!("cannot build the HTTP client: {error}")))?;
        Ok(Self {
            http,
            hosts: settings
                .hosts
                .iter()
                .map(|url| {
                    Mutex::new(HostState {
                        url: url.clone(),
                        quarantined_until: None,
                        quarantine: HOST_QUARANTINE,
                    })
                })
                .collect(),
            next_host: AtomicUsize::new(0),
            headers,
            compression_level: settings.compression_level,
        })
    }

    /// The number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Picks the next host round-robin, skipping quarantined ones (unless all are).
    fn pick_host(&self) -> usize {
        let count = self.hosts.len();
        let start = self.next_host.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut soonest = (start % count, None::<Instant>);
        for offset in 0..count {
            let index = (start + offset) % count;
            let host = lock(&self.hosts[index]);
            match host.quarantined_until {
                None => return index,
                Some(until) if until <= now => return index,
                Some(until) => {
                    if soonest.1.is_none_or(|best| until < best) {
                        soonest = (index, Some(until));
                    }
                }
            }
        }
        soonest.0
    }

    fn mark(&self, index: usize, healthy: bool) {
        let mut host = lock(&self.hosts[index]);
        if healthy {
            host.quarantined_until = None;
            host.quarantine = HOST_QUARANTINE;
        } else {
            host.quarantined_until = Some(Instant::now() + host.quarantine);
            host.quarantine = (host.quarantine * 2).min(MAX_HOST_QUARANTINE);
        }
    }

    /// The gzip level bulk bodies are compressed at (`compression_level`),
    /// `None` when they are sent as they are.
    pub fn gzip_level(&self) -> Option<u32> {
        (self.compression_level > 0).then_some(self.compression_level)
    }

    /// Sends one request to the next healthy host. `path_and_query` is
    /// relative (`_bulk?filter_path=...`).
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(RequestBody<'_>, &'static str)>,
    ) -> Result<Reply, TransportError> {
        let index = self.pick_host();
        let base = lock(&self.hosts[index]).url.clone();
        let url = base
            .join(path_and_query)
            .map_err(|error| TransportError::Unreachable {
                url: format!("{base}{path_and_query}"),
                reason: error.to_string(),
            })?;
        let mut request = self
            .http
            .request(method, url.clone())
            .headers(self.headers.clone());
        let mut sent_bytes = 0;
        if let Some((body, content_type)) = body {
            request = request.header(CONTENT_TYPE, content_type);
            let bytes = match body {
                RequestBody::Plain(bytes) => bytes.to_vec(),
                RequestBody::Gzip(bytes) => {
                    request = request.header(CONTENT_ENCODING, "gzip");
                    bytes
                }
            };
            sent_bytes = bytes.len() as u64;
            request = request.body(bytes);
        }
        let shown_url = without_query(&url);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.mark(index, false);
                return Err(TransportError::Unreachable {
                    url: shown_url,
                    reason: describe(&error),
                });
            }
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) => {
                self.mark(index, status != 502 && status != 503 && status != 504);
                Ok(Reply {
                    status,
                    body,
                    host: base,
                    sent_bytes,
                })
            }
            Err(error) => {
                self.mark(index, false);
                Err(TransportError::Unreachable {
                    url: shown_url,
                    reason: describe(&error),
                })
            }
        }
    }
}

/// The guard of `mutex`, poisoned or not: what it guards stays consistent across a panic.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// The error with its causes (reqwest's top message alone says little).
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if let Some(hint) = threatbeat_core::tls::plain_http_hint(&text) {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// A request's body.
#[derive(Debug)]
pub enum RequestBody<'a> {
    /// Sent as it is.
    Plain(&'a [u8]),
    /// Already gzipped (see [`Gzip`]); sent with `Content-Encoding: gzip`.
    Gzip(Vec<u8>),
}

/// A body gzipped while it is written, so that the whole uncompressed body
/// is never held (a bulk body is a few megabytes, its gzip a tenth of that).
pub struct Gzip(flate2::write::GzEncoder<Vec<u8>>);

impl Gzip {
    /// An empty body compressed at `level`, its output buffer sized for a
    /// body of about `expected` bytes.
    pub fn new(level: u32, expected: usize) -> Self {
        Self(flate2::write::GzEncoder::new(
            Vec::with_capacity(expected / 4),
            flate2::Compression::new(level),
        ))
    }

    /// Adds `bytes` to the body.
    pub fn write(&mut self, bytes: &[u8]) {
        // Writing to a Vec cannot fail.
        let _ = self.0.write_all(bytes);
    }

    /// The gzipped body.
    pub fn finish(self) -> Vec<u8> {
        self.0.finish().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips() {
        let mut body = Gzip::new(1, 8);
        body.write(b"{\"a\":");
        body.write(b"1}\n");
        let compressed = body.finish();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, "{\"a\":1}\n");
    }
}
