//! TLS: the simulator behind a rustls proxy on 127.0.0.1, checked with
//! `verification_mode` full, certificate and none, and `certificate_authorities`.
//! The certificates and the HTTPS front are shared with the input's TLS tests.

mod common;

use serde_json::json;
use threatbeat_core::{BuildContext, Output};
use threatbeat_outputs::elasticsearch::check_connection;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::tls::{ca_file, https_front};

use common::{indicator_events, output, output_config};

#[tokio::test]
async fn full_verification_with_the_ca_delivers_and_without_it_refuses() {
    let cluster = ElasticsearchSimulator::start().await;
    let port = https_front("localhost", cluster.address()).await;
    let url = format!("https://localhost:{port}");
    let context = BuildContext::default();

    let without_ca = check_connection(&output_config(json!({"hosts": [url.clone()]})), &context).await;
    let error = without_ca.unwrap_err().to_string();
    assert!(
        error.contains("cannot connect") || error.contains("certificate"),
        "{error}"
    );

    let trusted =
        json!({"hosts": [url], "index": "threatbeat-tls", "ssl": {"certificate_authorities": [ca_file()]}});
    let report = check_connection(&output_config(trusted.clone()), &context)
        .await
        .unwrap();
    assert_eq!(report.version, "8.7.1");
    let mut output = output(trusted);
    output.publish_events(indicator_events("tls", 20)).await.unwrap();
    assert_eq!(cluster.document_count("threatbeat-tls"), 20);
}

#[tokio::test]
async fn certificate_mode_skips_only_the_host_name_and_none_skips_everything() {
    let cluster = ElasticsearchSimulator::start().await;
    // This certificate names another host; we connect to 127.0.0.1.
    let port = https_front("other", cluster.address()).await;
    let url = format!("https://127.0.0.1:{port}");
    let context = BuildContext::default();
    let full = json!({"hosts": [url.clone()], "ssl": {"certificate_authorities": [ca_file()]}});
    assert!(check_connection(&output_config(full), &context).await.is_err());
    let certificate = json!({"hosts": [url.clone()], "ssl": {"certificate_authorities": [ca_file()], "verification_mode": "certificate"}});
    assert!(check_connection(&output_config(certificate), &context)
        .await
        .is_ok());
    let none = json!({"hosts": [url], "ssl": {"verification_mode": "none"}});
    assert!(check_connection(&output_config(none), &context).await.is_ok());
}
