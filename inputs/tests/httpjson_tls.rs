//! TLS against a real rustls server on 127.0.0.1: `verification_mode`
//! `full`, `certificate` and `none`, and `certificate_authorities`.

mod common;

use common::*;
use serde_json::json;
use threatbeat_core::{BuildContext, Origin, PluginConfig};
use threatbeat_test_support::tls::{ca_file, https_front, tls_dir};

/// An HTTPS server presenting `name.pem`, answering every request with one item.
async fn https_server(name: &str) -> u16 {
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({"items": [{"id": 1}]})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    https_front(name, backend).await
}

async fn fetch(url: String, ssl: serde_json::Value) -> Result<usize, String> {
    let config = PluginConfig {
        type_name: "httpjson".into(),
        settings: json!({"request": {"url": url, "ssl": ssl, "retry": {"max_attempts": 1}},
            "response": {"split": {"target": "body.items"}}}),
        origin: Origin::named("test"),
    };
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "tls", None);
    run_once(&config, &pipeline)
        .await
        .map_err(|error| error.to_string())?;
    Ok(pipeline.event_count())
}

#[tokio::test]
async fn full_verification_with_the_ca_succeeds_and_without_it_fails() {
    let port = https_server("localhost").await;
    let ca = ca_file();
    let url = format!("https://localhost:{port}/");
    assert_eq!(
        fetch(url.clone(), json!({"certificate_authorities": [ca]})).await,
        Ok(1)
    );
    let error = fetch(url, json!({})).await.unwrap_err();
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    // Inline PEM works as well as a path.
    let inline = std::fs::read_to_string(tls_dir().join("ca.pem")).unwrap();
    assert_eq!(
        fetch(
            format!("https://127.0.0.1:{port}/"),
            json!({"certificate_authorities": [inline]})
        )
        .await,
        Ok(1)
    );
}

#[tokio::test]
async fn certificate_mode_skips_only_the_host_name() {
    // The server's certificate names misp.example, we connect to 127.0.0.1.
    let port = https_server("other").await;
    let ca = ca_file();
    let url = format!("https://127.0.0.1:{port}/");
    let error = fetch(url.clone(), json!({"certificate_authorities": [ca.clone()]}))
        .await
        .unwrap_err();
    assert!(
        error.to_lowercase().contains("certificate"),
        "full mode checks the name: {error}"
    );
    assert_eq!(
        fetch(
            url.clone(),
            json!({"certificate_authorities": [ca], "verification_mode": "certificate"})
        )
        .await,
        Ok(1)
    );
    // `certificate` still verifies the chain: without the CA it fails.
    let error = fetch(url.clone(), json!({"verification_mode": "certificate"}))
        .await
        .unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // `none` verifies nothing.
    assert_eq!(fetch(url, json!({"verification_mode": "none"})).await, Ok(1));
}

#[test]
fn a_client_certificate_and_key_load() {
    let dir = tls_dir();
    let config = PluginConfig {
        type_name: "httpjson".into(),
        settings: json!({"request": {"url": "https://misp.test/", "ssl": {"certificate": "localhost.pem", "key": "localhost.key"}}}),
        origin: Origin::named("test"),
    };
    let context = BuildContext {
        config_path: dir,
        ..BuildContext::default()
    };
    assert!(threatbeat_inputs::registry().build(&config, &context).is_ok());
}
