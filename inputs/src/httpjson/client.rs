//! The HTTP client (timeouts, proxy, TLS) and authentication.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use threatbeat_core::{ConfigError, Origin, Secret};
use tokio::sync::Mutex;

use super::config::{AuthConfig, OAuth2Config, RequestConfig};

/// Which origins receive the input's credentials: the configured URL's and
/// those `request.allowed_origins` lists, never over `http://` when the
/// configured URL is `https://`. A pagination link or a redirect elsewhere
/// gets no auth and none of the configured `headers`.
#[derive(Debug, Clone)]
pub struct CredentialScope {
    home: url::Origin,
    allowed: Vec<url::Origin>,
    https_only: bool,
    configured_headers: Vec<String>,
}

impl CredentialScope {
    /// The scope of `url` with `request.allowed_origins`; errors name the key.
    pub fn build(request: &RequestConfig, url: &url::Url, origin: &Origin) -> Result<Self, ConfigError> {
        let allowed = request
            .allowed_origins
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let parsed = url::Url::parse(text)
                    .ok()
                    .map(|parsed| parsed.origin())
                    .filter(url::Origin::is_tuple);
                parsed.ok_or_else(|| {
                    origin
                        .child("request.allowed_origins")
                        .child(index)
                        .error(format!("`{text}` is not an origin; write e.g. `https://cdn.example.com` or `https://host:8443`"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            home: url.origin(),
            allowed,
            https_only: url.scheme() == "https",
            configured_headers: request
                .headers
                .keys()
                .map(|name| name.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Whether `url` may receive the credentials.
    pub fn trusts(&self, url: &url::Url) -> bool {
        if self.https_only && url.scheme() != "https" {
            return false;
        }
        let origin = url.origin();
        origin == self.home || self.allowed.contains(&origin)
    }

    /// Whether header `name` carries a credential: one the config sets
    /// (`request.headers`), or one named like one.
    pub fn is_credential_header(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.configured_headers.contains(&name)
            || ["auth", "key", "token", "secret", "session", "cookie", "password"]
                .iter()
                .any(|marker| name.contains(marker))
    }
}

/// Builds the reqwest client for `request`; `config_path` resolves relative
/// PEM paths. Redirects are followed only within `scope` (reqwest would
/// keep custom headers such as `X-OTX-API-KEY` on a redirect elsewhere).
pub fn build_client(
    request: &RequestConfig,
    scope: &CredentialScope,
    config_path: &Path,
    origin: &Origin,
) -> Result<Client, ConfigError> {
    let redirect_scope = scope.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if redirect_scope.trusts(attempt.url()) {
            attempt.follow()
        } else {
            let target = threatbeat_core::redact_userinfo(attempt.url().as_str()).into_owned();
            attempt.error(format!(
                "a redirect to {target} was not followed: credentials stay with the configured origin \
                 (list that origin in request.allowed_origins to follow it)"
            ))
        }
    });
    let mut builder = Client::builder()
        .redirect(redirects)
        // Each wait for the server; the whole request is bounded per request
        // when its body is read whole (fetch.rs).
        .read_timeout(request.timeout)
        .connect_timeout(request.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("threatbeat/", env!("CARGO_PKG_VERSION")));
    builder = request
        .ssl
        .load(config_path, &origin.child("request.ssl"))?
        .apply(builder);
    if let Some(proxy) = &request.proxy_url {
        let proxy = reqwest::Proxy::all(proxy).map_err(|error| {
            origin
                .child("request.proxy_url")
                .error(format!("invalid proxy URL: {error}"))
        })?;
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|error| {
        origin
            .child("request")
            .error(format!("cannot build the HTTP client: {error}"))
    })
}

/// Authentication applied to every request.
#[derive(Debug)]
pub enum Auth {
    /// No credentials.
    None,
    /// A raw key in a header.
    ApiKey { header: String, value: Secret },
    /// HTTP basic.
    Basic { user: String, password: Secret },
    /// A fixed bearer token.
    Bearer(Secret),
    /// OAuth2 client credentials with a cached token.
    OAuth2(OAuth2),
}

impl Auth {
    /// From config; more than one method is an error.
    pub fn build(config: &AuthConfig, origin: &Origin) -> Result<Self, ConfigError> {
        let configured = [
            config.api_key.is_some(),
            config.basic.is_some(),
            config.bearer.is_some(),
            config.oauth2.is_some(),
        ];
        if configured.iter().filter(|set| **set).count() > 1 {
            return Err(origin
                .child("auth")
                .error("configure only one of api_key, basic, bearer, oauth2"));
        }
        Ok(if let Some(key) = &config.api_key {
            if key.value.is_empty() {
                Auth::None
            } else {
                Auth::ApiKey {
                    header: key.header.clone(),
                    value: key.value.clone(),
                }
            }
        } else if let Some(basic) = &config.basic {
            Auth::Basic {
                user: basic.user.clone(),
                password: basic.password.clone(),
            }
        } else if let Some(bearer) = &config.bearer {
            Auth::Bearer(bearer.token.clone())
        } else if let Some(oauth2) = &config.oauth2 {
            Auth::OAuth2(OAuth2 {
                config: oauth2.clone(),
                token: Mutex::new(None),
            })
        } else {
            Auth::None
        })
    }

    /// Adds the credentials to `request`.
    pub async fn apply(&self, client: &Client, request: RequestBuilder) -> Result<RequestBuilder, String> {
        Ok(match self {
            Auth::None => request,
            Auth::ApiKey { header, value } => request.header(header.as_str(), value.expose()),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::OAuth2(oauth2) => request.bearer_auth(oauth2.token(client).await?.expose()),
        })
    }

    /// Forgets a cached token (after a 401).
    pub async fn invalidate(&self) {
        if let Auth::OAuth2(oauth2) = self {
            *oauth2.token.lock().await = None;
        }
    }
}

/// OAuth2 client-credentials state.
#[derive(Debug)]
pub struct OAuth2 {
    config: OAuth2Config,
    token: Mutex<Option<(Secret, Instant)>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default, deserialize_with = "lifetime_seconds")]
    expires_in: Option<u64>,
}

/// The longest a token is kept without asking again, whatever the server
/// says: a lifetime of 2^63 seconds would overflow the clock.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `expires_in` as RFC 6749 writes it (a number of seconds) or as Azure AD
/// v1 does (the number in a string); anything else counts as absent.
fn lifetime_seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(deserializer)? {
        Some(serde_json::Value::Number(number)) => number.as_u64(),
        Some(serde_json::Value::String(text)) => text.trim().parse().ok(),
        _ => None,
    })
}

impl OAuth2 {
    /// A valid token: the cached one, or a new one when it expires within 30 s.
    async fn token(&self, client: &Client) -> Result<Secret, String> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if Instant::now() + Duration::from_secs(30) < *expires {
                return Ok(token.clone());
            }
        }
        let mut form: Vec<(String, String)> = vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), self.config.client_id.clone()),
            (
                "client_secret".into(),
                self.config.client_secret.expose().to_owned(),
            ),
        ];
        if !self.config.scopes.is_empty() {
            form.push(("scope".into(), self.config.scopes.join(" ")));
        }
        form.extend(
            self.config
                .endpoint_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let url = &self.config.token_url;
        let response = client
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|error| format!("OAuth2 token request to {url} failed: {error}"))?;
        let status = response.status();
        // A token answer is a few hundred bytes; read no more than 1 MiB.
        let body = super::fetch::read_body(response, 1024 * 1024)
            .await
            .map_err(|error| format!("OAuth2 token response from {url}: {error}"))?;
        if !status.is_success() {
            return Err(format!(
                "OAuth2 token endpoint {url} answered {status}: {}",
                crate::decode::snippet(&String::from_utf8_lossy(&body))
            ));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|error| format!("OAuth2 token endpoint {url} sent no usable token: {error}"))?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600)).min(MAX_TOKEN_LIFETIME);
        let token = Secret::new(parsed.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }
}
