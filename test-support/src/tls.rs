//! An HTTPS front for any plain test server: a rustls listener on
//! 127.0.0.1 presenting one of the test certificates in `data/tls/` and
//! forwarding every connection to a plain HTTP backend (a simulator). TLS
//! tests of the input and the output share it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The test certificates: `ca.pem` (a throw-away CA), `localhost.pem`/`.key`
/// (SAN localhost and 127.0.0.1) and `other.pem`/`.key` (SAN misp.example only).
pub fn tls_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/tls"))
}

/// The test CA's PEM file, as `ssl.certificate_authorities` takes it.
pub fn ca_file() -> String {
    tls_dir().join("ca.pem").display().to_string()
}

/// Starts an HTTPS listener presenting `<certificate>.pem` that forwards to
/// `backend`; returns its port.
///
/// # Panics
/// When the bundled test certificates cannot be read (a broken checkout).
pub async fn https_front(certificate: &str, backend: SocketAddr) -> u16 {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir().join(format!("{certificate}.pem")))
            .expect("test certificate readable")
            .map(|certificate| certificate.expect("test certificate is PEM"))
            .collect();
    let key = PrivateKeyDer::from_pem_file(tls_dir().join(format!("{certificate}.key")))
        .expect("test key readable");
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .expect("test certificate and key match");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("bound address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}
