//! Beats' `ssl.*` settings, shared by every HTTP client threatbeat runs (the
//! httpjson input, the Elasticsearch output). Certificates are read and
//! checked when the config is built, so a missing or malformed PEM is a
//! config error naming the file and key, not a failure at the first request.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::config::{ConfigError, Origin};
use crate::secret::Secret;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMode {
    /// The chain and the host name (the default).
    #[default]
    Full,
    /// Beats' name for `full` with stricter rules; rustls is always strict.
    Strict,
    /// The chain and its validity, not the host name.
    Certificate,
    /// Nothing: anyone on the path can read and change the traffic.
    None,
}

/// `ssl.*` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// `false` ignores the other settings (TLS is still used for `https` URLs).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `full` (default), `strict`, `certificate` or `none`.
    #[serde(default)]
    pub verification_mode: VerificationMode,
    /// CA certificates trusted besides the bundled Mozilla roots: PEM files
    /// (relative to `path.config`) or inline PEM text.
    #[serde(default)]
    pub certificate_authorities: Vec<String>,
    /// Client certificate (PEM file or inline PEM), with `key`.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Client key (PEM file or inline PEM), with `certificate`.
    #[serde(default)]
    pub key: Option<Secret>,
}

/// TLS material read and checked, ready to apply to any number of clients.
#[derive(Clone, Default)]
pub struct LoadedTls {
    mode: VerificationMode,
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedTls")
            .field("mode", &self.mode)
            .field("extra_roots", &self.roots.len())
            .field("client_identity", &self.identity.is_some())
            .finish()
    }
}

impl TlsSettings {
    /// Reads the PEM files (relative paths against `config_path`) and checks
    /// them; `origin` is where these `ssl` settings were written.
    pub fn load(&self, config_path: &Path, origin: &Origin) -> Result<LoadedTls, ConfigError> {
        if self.enabled == Some(false) {
            return Ok(LoadedTls::default());
        }
        let mut roots = Vec::new();
        for (index, authority) in self.certificate_authorities.iter().enumerate() {
            let origin = origin.child("certificate_authorities").child(index);
            let pem = read_pem(authority, config_path, &origin)?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| origin.error(format!("not a PEM certificate: {error}")))?;
            if certificates.is_empty() {
                return Err(origin.error("no PEM certificate found"));
            }
            roots.extend(certificates);
        }
        let identity = match (&self.certificate, &self.key) {
            (Some(certificate), Some(key)) => {
                let mut pem = read_pem(certificate, config_path, &origin.child("certificate"))?;
                pem.push(b'\n');
                pem.extend(read_pem(key.expose(), config_path, &origin.child("key"))?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|error| {
                    origin
                        .child("certificate")
                        .error(format!("invalid client certificate or key: {error}"))
                })?;
                Some(identity)
            }
            (None, None) => None,
            (Some(_), None) => return Err(origin.child("key").error("`certificate` needs a `key`")),
            (None, Some(_)) => return Err(origin.child("certificate").error("`key` needs a `certificate`")),
        };
        Ok(LoadedTls {
            mode: self.verification_mode,
            roots,
            identity,
        })
    }
}

impl LoadedTls {
    /// The verification mode.
    pub fn verification_mode(&self) -> VerificationMode {
        self.mode
    }

    /// Applies these settings to a reqwest client being built (rustls).
    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder = builder.use_rustls_tls();
        match self.mode {
            VerificationMode::Full | VerificationMode::Strict => {}
            // rustls still verifies the chain and the validity period.
            VerificationMode::Certificate => builder = builder.danger_accept_invalid_hostnames(true),
            VerificationMode::None => builder = builder.danger_accept_invalid_certs(true),
        }
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder
    }
}

/// Inline PEM text, or the contents of a file.
fn read_pem(value: &str, config_path: &Path, origin: &Origin) -> Result<Vec<u8>, ConfigError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    let path = config_path.join(value);
    std::fs::read(&path).map_err(|error| origin.error(format!("cannot read {}: {error}", path.display())))
}

/// What to add to a connection error whose text (with its causes) shows a
/// TLS client talking to a plain-HTTP server: rustls then reports only
/// `received corrupt message of type InvalidContentType`, which says nothing
/// to someone who put `https://` in front of a lab server's `http` port.
pub fn plain_http_hint(error_text: &str) -> Option<&'static str> {
    error_text
        .contains("InvalidContentType")
        .then_some("the server answered plain HTTP; use http:// or check the port")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: serde_json::Value) -> TlsSettings {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn missing_files_and_half_pairs_name_the_key() {
        let origin = Origin::named("threatbeat.yml").child("output.elasticsearch.ssl");
        let directory = tempfile::tempdir().unwrap();
        let error = settings(serde_json::json!({"certificate_authorities": ["ca.pem"]}))
            .load(directory.path(), &origin)
            .unwrap_err();
        assert_eq!(error.key, "output.elasticsearch.ssl.certificate_authorities.0");
        assert!(error.reason.contains("ca.pem"), "{}", error.reason);

        let error = settings(serde_json::json!({"certificate": "-----BEGIN CERTIFICATE-----"}))
            .load(directory.path(), &origin)
            .unwrap_err();
        assert_eq!(error.key, "output.elasticsearch.ssl.key");

        let error = settings(serde_json::json!({"certificate_authorities": ["-----BEGIN nothing"]}))
            .load(directory.path(), &origin)
            .unwrap_err();
        assert_eq!(error.key, "output.elasticsearch.ssl.certificate_authorities.0");
        assert!(error.reason.contains("PEM certificate"), "{}", error.reason);
    }

    #[test]
    fn modes_parse_and_disabled_ignores_the_rest() {
        assert_eq!(
            settings(serde_json::json!({"verification_mode": "strict"})).verification_mode,
            VerificationMode::Strict
        );
        assert!(
            serde_json::from_value::<TlsSettings>(serde_json::json!({"verification_mode": "maybe"})).is_err()
        );
        let loaded =
            settings(serde_json::json!({"enabled": false, "certificate_authorities": ["missing.pem"]}))
                .load(Path::new("/nonexistent"), &Origin::named("x"))
                .unwrap();
        assert_eq!(loaded.verification_mode(), VerificationMode::Full);
    }

    #[test]
    fn a_tls_record_error_from_a_plain_http_server_gets_a_hint() {
        let hint = plain_http_hint("error sending request: client error (Connect): received corrupt message of type InvalidContentType");
        assert_eq!(
            hint,
            Some("the server answered plain HTTP; use http:// or check the port")
        );
        assert_eq!(plain_http_hint("error sending request: connection refused"), None);
    }
}
