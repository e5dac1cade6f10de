//! The listening socket of the `http_endpoint` input, plain or TLS, and the
//! server-side `ssl.*` settings.
//!
//! TLS handshakes run in their own tasks, off the accept loop, so a client
//! that connects and never finishes its handshake cannot stall others; a
//! handshake has [`HANDSHAKE_TIMEOUT`] to complete.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use threatbeat_core::secret::Secret;
use threatbeat_core::{ConfigError, Origin};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether clients must present a certificate (`ssl.client_authentication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthentication {
    /// No client certificate is asked for.
    None,
    /// Asked for, checked when given.
    Optional,
    /// Required and checked against `certificate_authorities`.
    Required,
}

/// `ssl.*` of a server, as Beats writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// `false` ignores the other settings and serves plain HTTP.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The server certificate chain: a PEM file (relative to `path.config`) or inline PEM.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Its private key: a PEM file or inline PEM.
    #[serde(default)]
    pub key: Option<Secret>,
    /// CAs whose client certificates are accepted (mutual TLS).
    #[serde(default)]
    pub certificate_authorities: Vec<String>,
    /// `none`, `optional` or `required`; `required` when CAs are listed (Beats' default).
    #[serde(default)]
    pub client_authentication: Option<ClientAuthentication>,
    /// Accepted for Filebeat configs; a server does not verify a peer host
    /// name, so this setting changes nothing.
    #[serde(default)]
    pub verification_mode: Option<String>,
}

impl ServerTlsSettings {
    /// The rustls acceptor, or `None` when TLS is off. PEM files are read now,
    /// so a missing or mismatched certificate is a config error.
    pub fn load(&self, config_path: &Path, origin: &Origin) -> Result<Option<TlsAcceptor>, ConfigError> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let (certificate, key) = match (&self.certificate, &self.key) {
            (Some(certificate), Some(key)) => (certificate, key),
            (None, None) if self.enabled.is_none() && self.certificate_authorities.is_empty() => {
                return Ok(None)
            }
            (_, None) => return Err(origin.child("key").error("TLS needs `certificate` and `key`")),
            (None, _) => {
                return Err(origin
                    .child("certificate")
                    .error("TLS needs `certificate` and `key`"))
            }
        };
        let chain_pem = read_pem(certificate, config_path, &origin.child("certificate"))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|error| {
                origin
                    .child("certificate")
                    .error(format!("not a PEM certificate: {error}"))
            })?;
        if chain.is_empty() {
            return Err(origin.child("certificate").error("no PEM certificate found"));
        }
        let key_pem = read_pem(key.expose(), config_path, &origin.child("key"))?;
        // The key's own parse error could quote key material: say only what is wrong.
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            origin
                .child("key")
                .error("no PEM private key found (PKCS#8, PKCS#1 or SEC1)")
        })?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| origin.error(format!("TLS setup failed: {error}")))?;
        let mode = self
            .client_authentication
            .unwrap_or(if self.certificate_authorities.is_empty() {
                ClientAuthentication::None
            } else {
                ClientAuthentication::Required
            });
        let builder = match mode {
            ClientAuthentication::None => builder.with_no_client_auth(),
            ClientAuthentication::Optional | ClientAuthentication::Required => {
                if self.certificate_authorities.is_empty() {
                    return Err(origin
                        .child("certificate_authorities")
                        .error("client authentication needs `certificate_authorities`"));
                }
                let mut roots = rustls::RootCertStore::empty();
                for (index, authority) in self.certificate_authorities.iter().enumerate() {
                    let origin = origin.child("certificate_authorities").child(index);
                    let pem = read_pem(authority, config_path, &origin)?;
                    for certificate in CertificateDer::pem_slice_iter(&pem) {
                        let certificate = certificate
                            .map_err(|error| origin.error(format!("not a PEM certificate: {error}")))?;
                        roots
                            .add(certificate)
                            .map_err(|error| origin.error(format!("unusable CA certificate: {error}")))?;
                    }
                }
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if mode == ClientAuthentication::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|error| {
                    origin
                        .child("certificate_authorities")
                        .error(format!("cannot verify clients: {error}"))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, private_key).map_err(|error| {
            origin
                .child("certificate")
                .error(format!("certificate and key do not go together: {error}"))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

/// Inline PEM text, or the contents of a file relative to `config_path`.
fn read_pem(value: &str, config_path: &Path, origin: &Origin) -> Result<Vec<u8>, ConfigError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    let path = config_path.join(value);
    std::fs::read(&path).map_err(|error| origin.error(format!("cannot read {}: {error}", path.display())))
}

/// One accepted connection.
pub type Connection = Either<TcpStream, TlsStream<TcpStream>>;

/// The peer's address, for logs (`ConnectInfo<Remote>`).
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

/// Connections ready for HTTP: accepted, and for TLS, past the handshake.
pub struct EndpointListener {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
    // Stops the accept task when the server is dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl EndpointListener {
    /// Starts accepting on `listener`, with TLS when `acceptor` is set.
    pub fn start(listener: TcpListener, acceptor: Option<TlsAcceptor>, id: String) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stopped.cancelled() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(input = %id, %error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        if sender.send((Either::Left(stream), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let sender = sender.clone();
                        let id = id.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    let _ = sender.send((Either::Right(tls), peer)).await;
                                }
                                Ok(Err(error)) => {
                                    tracing::warn!(input = %id, %peer, %error, "TLS handshake failed")
                                }
                                Err(_) => tracing::warn!(input = %id, %peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Self {
            ready,
            local,
            _stop: stop.drop_guard(),
        })
    }
}

impl axum::serve::Listener for EndpointListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, EndpointListener>> for Remote {
    fn connect_info(stream: IncomingStream<'_, EndpointListener>) -> Self {
        Remote(*stream.remote_addr())
    }
}
