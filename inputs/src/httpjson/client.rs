//! The HTTP client (timeouts, proxy, TLS) and authentication.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use threatbeat_core::{ConfigError, Origin, Secret};
use tokio::sync::Mutex;

use super::config::{AuthConfig, OAuth2Config, RequestConfig};

/// Builds the reqwest client for `request`; `config_path` resolves relative PEM paths.
pub fn build_client(
    request: &RequestConfig,
    config_path: &Path,
    origin: &Origin,
) -> Result<Client, ConfigError> {
    let mut builder = Client::builder()
        .timeout(request.timeout)
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
    #[serde(default)]
    expires_in: Option<u64>,
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
        let body = response
            .bytes()
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
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
        let token = Secret::new(parsed.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }
}
