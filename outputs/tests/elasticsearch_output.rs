//! The Elasticsearch output against the simulator: exactly-once delivery,
//! 409 duplicates, 429s, outages, mapping errors, 413 splits, credentials,
//! failover, setup and the connection check.

mod common;

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use threatbeat_core::{BuildContext, Output};
use threatbeat_outputs::elasticsearch::{check_connection, SetupError, SetupSettings, WriteAccess};
use threatbeat_test_support::elasticsearch::{Credential, ElasticsearchSimulator, MappingRule};

use common::{eventually, indicator_events, output, output_config, scenarios, Probe};

const INDEX: &str = "threatbeat-test";

#[tokio::test]
async fn n_events_make_n_documents_and_resending_counts_duplicates() {
    let cluster = ElasticsearchSimulator::start().await;
    let probe = Probe::new(&cluster.url(), None);
    scenarios::exactly_once(json!({"hosts": [cluster.url()]}), &probe, INDEX).await;
    assert_eq!(cluster.ids(INDEX).len(), 300);
}

#[tokio::test]
async fn twenty_percent_item_429s_still_give_exactly_n() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_item_rejection_rate(0.2);
    let mut output = output(json!({"hosts": [cluster.url()], "index": INDEX, "bulk_max_size": 100}));
    output.publish_events(indicator_events("r", 1000)).await.unwrap();
    let stats = output.stats().snapshot();
    assert_eq!(cluster.document_count(INDEX), 1000);
    assert_eq!(cluster.ids(INDEX).len(), 1000);
    assert!(
        cluster.items_rejected_with_429() > 100,
        "{}",
        cluster.items_rejected_with_429()
    );
    assert_eq!(stats.too_many, cluster.items_rejected_with_429());
    assert_eq!(stats.acked, 1000);
}

#[tokio::test]
async fn an_outage_then_recovery_gives_exactly_n() {
    let mut cluster = ElasticsearchSimulator::start().await;
    let url = cluster.url();
    cluster.stop().await;
    let mut output = output(json!({"hosts": [url], "index": INDEX}));
    let stats = output.stats();
    let delivery = tokio::spawn(async move {
        output.publish_events(indicator_events("o", 200)).await.unwrap();
        output
    });
    eventually("a few refused connections", Duration::from_secs(30), || {
        stats.snapshot().failed_requests >= 3
    })
    .await;
    assert!(
        !delivery.is_finished(),
        "publish must keep retrying during the outage"
    );
    cluster.restart().await;
    tokio::time::timeout(Duration::from_secs(60), delivery)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cluster.document_count(INDEX), 200);
    assert_eq!(stats.snapshot().acked, 200);
}

#[tokio::test]
async fn answers_503_are_retried() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_unavailable(true);
    let mut output = output(json!({"hosts": [cluster.url()], "index": INDEX}));
    let stats = output.stats();
    let delivery = tokio::spawn(async move { output.publish_events(indicator_events("u", 50)).await });
    eventually("503 answers", Duration::from_secs(30), || {
        stats.snapshot().failed_requests >= 2
    })
    .await;
    cluster.set_unavailable(false);
    tokio::time::timeout(Duration::from_secs(60), delivery)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cluster.document_count(INDEX), 50);
}

#[tokio::test]
async fn a_mapping_error_goes_to_the_dead_letter_index_with_its_reason() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.add_mapping_rule(MappingRule::IpField("threat.indicator.ip".into()));
    let probe = Probe::new(&cluster.url(), None);
    scenarios::mapping_error_is_dead_lettered(
        json!({"hosts": [cluster.url()]}),
        &probe,
        INDEX,
        "threatbeat-dead-letter",
    )
    .await;
}

#[tokio::test]
async fn a_mapping_error_is_dropped_and_counted_by_default() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.add_mapping_rule(MappingRule::IpField("threat.indicator.ip".into()));
    let mut events = indicator_events("d", 10);
    for event in &mut events[..4] {
        event.fields["threat"]["indicator"]["ip"] = json!("192.168.0.0/16");
    }
    let mut output = output(json!({"hosts": [cluster.url()], "index": INDEX}));
    output.publish_events(events).await.unwrap();
    let stats = output.stats().snapshot();
    assert_eq!(
        (stats.acked, stats.dropped, stats.dead_lettered),
        (6, 4, 0),
        "{stats:?}"
    );
    assert_eq!(cluster.document_count(INDEX), 6);
}

#[tokio::test]
async fn a_413_splits_the_batch_and_a_single_oversized_event_is_dropped() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_max_content_length(Some(8 * 1024));
    let mut events = indicator_events("s", 200);
    events[17].fields.insert("blob".into(), json!("x".repeat(20_000)));
    let mut output = output(json!({"hosts": [cluster.url()], "index": INDEX, "compression_level": 0}));
    output.publish_events(events).await.unwrap();
    let stats = output.stats().snapshot();
    assert_eq!(cluster.document_count(INDEX), 199);
    assert!(!cluster.ids(INDEX).contains("s-17"));
    assert_eq!((stats.acked, stats.dropped), (199, 1), "{stats:?}");
    assert!(stats.bulk_requests > 10, "{stats:?}");
}

#[tokio::test]
async fn gzip_bodies_are_sent_and_accepted() {
    let cluster = ElasticsearchSimulator::start().await;
    // Uncompressed the bulk body is ~40 KB; gzipped it fits under 16 KB.
    cluster.set_max_content_length(Some(16 * 1024));
    let mut output = output(json!({"hosts": [cluster.url()], "index": INDEX, "compression_level": 6}));
    output.publish_events(indicator_events("g", 200)).await.unwrap();
    assert_eq!(cluster.document_count(INDEX), 200);
    assert_eq!(
        output.stats().snapshot().bulk_requests,
        1,
        "one gzipped request, no 413 split"
    );
}

#[tokio::test]
async fn a_gzipped_body_larger_than_one_compressed_stretch_arrives_whole() {
    // About 1.5 MB uncompressed: gzipped in several stretches of 256 KiB,
    // sent as one request, every document intact.
    let cluster = ElasticsearchSimulator::start().await;
    let mut events = indicator_events("big", 1_500);
    for (n, event) in events.iter_mut().enumerate() {
        event
            .fields
            .insert("note".into(), json!(format!("{n:04}-").repeat(160)));
    }
    let mut output = output(json!({"hosts": [cluster.url()], "index": INDEX, "bulk_max_size": 1_500}));
    // A body missing documents would be answered for fewer items than sent,
    // and retried for ever: bounded here so that such a bug fails the test.
    tokio::time::timeout(Duration::from_secs(20), output.publish_events(events))
        .await
        .expect("the batch is delivered")
        .unwrap();
    assert_eq!(cluster.document_count(INDEX), 1_500);
    assert_eq!(output.stats().snapshot().bulk_requests, 1);
    for n in [0, 777, 1_499] {
        let document = cluster.document(INDEX, &format!("big-{n}")).expect("stored");
        assert_eq!(document["n"], json!(n));
        assert_eq!(document["note"], json!(format!("{n:04}-").repeat(160)));
    }
}

fn basic(user: &str, password: &str) -> Credential {
    Credential::Basic {
        username: user.into(),
        password: password.into(),
        can_write: true,
    }
}

#[tokio::test]
async fn basic_auth_and_api_keys_are_sent() {
    let cluster = ElasticsearchSimulator::start_with_credentials(vec![
        basic("elastic", "changeme"),
        Credential::ApiKey {
            id: "key-id".into(),
            key: "key-secret".into(),
            can_write: true,
        },
    ])
    .await;
    let mut with_password = output(
        json!({"hosts": [cluster.url()], "index": INDEX, "username": "elastic", "password": "changeme"}),
    );
    with_password
        .publish_events(indicator_events("b", 5))
        .await
        .unwrap();
    let mut with_key =
        output(json!({"hosts": [cluster.url()], "index": INDEX, "api_key": "key-id:key-secret"}));
    with_key.publish_events(indicator_events("k", 5)).await.unwrap();
    assert_eq!(cluster.document_count(INDEX), 10);
}

#[tokio::test]
async fn wrong_credentials_pause_sending_until_they_work() {
    let cluster = ElasticsearchSimulator::start_with_credentials(vec![basic("elastic", "right")]).await;
    let mut output =
        output(json!({"hosts": [cluster.url()], "index": INDEX, "username": "elastic", "password": "wrong"}));
    let stats = output.stats();
    let delivery = tokio::spawn(async move { output.publish_events(indicator_events("c", 20)).await });
    eventually("401 answers", Duration::from_secs(30), || {
        stats.snapshot().failed_requests >= 2
    })
    .await;
    assert_eq!(cluster.document_count(INDEX), 0);
    assert!(!delivery.is_finished());
    cluster.set_credentials(vec![basic("elastic", "right"), basic("elastic", "wrong")]);
    tokio::time::timeout(Duration::from_secs(60), delivery)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cluster.document_count(INDEX), 20);
}

#[tokio::test]
async fn a_dead_host_fails_over_to_the_next() {
    let cluster = ElasticsearchSimulator::start().await;
    let dead = ElasticsearchSimulator::start().await;
    let mut dead = dead;
    let dead_url = dead.url();
    dead.stop().await;
    let mut output = output(json!({"hosts": [dead_url, cluster.url()], "index": INDEX, "bulk_max_size": 10}));
    output.publish_events(indicator_events("f", 100)).await.unwrap();
    assert_eq!(cluster.document_count(INDEX), 100);
    // The dead host is quarantined after its first failure, so few requests are wasted on it.
    assert!(output.stats().snapshot().failed_requests <= 3);
}

#[tokio::test]
async fn templated_index_names_and_metadata_index() {
    let cluster = ElasticsearchSimulator::start().await;
    let mut events = indicator_events("t", 3);
    events[2].set_index("threatbeat-threatintel.misp");
    let mut output =
        output(json!({"hosts": [cluster.url()], "index": "threatbeat-%{[event.module]}-%{+yyyy.MM.dd}"}));
    output.publish_events(events).await.unwrap();
    assert_eq!(cluster.document_count("threatbeat-threatintel-2026.01.02"), 2);
    assert_eq!(cluster.document_count("threatbeat-threatintel.misp"), 1);
}

#[tokio::test]
async fn setup_twice_changes_nothing_and_creates_data_streams() {
    let cluster = ElasticsearchSimulator::start().await;
    scenarios::setup_is_idempotent(json!({"hosts": [cluster.url()]}), "threatbeat", "threatbeat-*").await;
    assert_eq!(cluster.request_count("PUT _index_template"), 2);
    assert_eq!(cluster.request_count("PUT _ilm/policy"), 1);
    let template = cluster.index_template("threatbeat").unwrap();
    let indicator =
        &template["template"]["mappings"]["properties"]["threat"]["properties"]["indicator"]["properties"];
    assert_eq!(indicator["ip"]["type"], "ip");
    assert_eq!(indicator["first_seen"]["type"], "date");
    assert_eq!(indicator["geo"]["properties"]["location"]["type"], "geo_point");
    assert_eq!(indicator["url"]["properties"]["full"]["type"], "wildcard");
    assert_eq!(
        template["template"]["settings"]["index"]["lifecycle"]["name"],
        "threatbeat"
    );

    let settings = SetupSettings {
        data_streams: vec!["threatbeat-threatintel.misp".into()],
        ..SetupSettings::default()
    };
    let config = output_config(json!({"hosts": [cluster.url()]}));
    let report = threatbeat_outputs::elasticsearch::setup(&config, &BuildContext::default(), &settings)
        .await
        .unwrap();
    assert!(report.changed_anything(), "{report:?}");
    assert!(cluster.is_data_stream("threatbeat-threatintel.misp"));
    let again = threatbeat_outputs::elasticsearch::setup(&config, &BuildContext::default(), &settings)
        .await
        .unwrap();
    assert!(!again.changed_anything(), "{again:?}");

    // Data streams take `create` with the fixed _id.
    let mut output = output(json!({"hosts": [cluster.url()], "index": "threatbeat-threatintel.misp"}));
    output.publish_events(indicator_events("ds", 5)).await.unwrap();
    assert_eq!(cluster.document_count("threatbeat-threatintel.misp"), 5);
}

#[tokio::test]
async fn check_connection_reports_version_and_write_access() {
    let cluster = ElasticsearchSimulator::start_with_credentials(vec![
        basic("elastic", "changeme"),
        Credential::Basic {
            username: "reader".into(),
            password: "r".into(),
            can_write: false,
        },
    ])
    .await;
    let context = BuildContext::default();
    let writer =
        output_config(json!({"hosts": [cluster.url()], "username": "elastic", "password": "changeme"}));
    let report = check_connection(&writer, &context).await.unwrap();
    assert_eq!(report.version, "8.7.1");
    assert_eq!(report.write_access, WriteAccess::Allowed);
    assert_eq!(report.index_patterns, ["threatbeat-*"]);
    assert!(report.to_string().contains("version 8.7.1"), "{report}");

    let reader = output_config(json!({"hosts": [cluster.url()], "username": "reader", "password": "r"}));
    let report = check_connection(&reader, &context).await.unwrap();
    assert!(
        matches!(report.write_access, WriteAccess::Denied(ref missing) if !missing.is_empty()),
        "{report:?}"
    );
    assert!(report.to_string().contains("NO"), "{report}");

    let wrong = output_config(json!({"hosts": [cluster.url()], "username": "elastic", "password": "nope"}));
    let error = check_connection(&wrong, &context).await.unwrap_err();
    assert!(matches!(error, SetupError::Credentials { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("rejected the credentials") && message.contains("401"),
        "{message}"
    );
    assert!(!message.contains("nope"), "the password never appears: {message}");
    let encoded = base64::engine::general_purpose::STANDARD.encode("elastic:nope");
    assert!(!message.contains(&encoded));
}

#[tokio::test]
async fn check_connection_without_security() {
    let cluster = ElasticsearchSimulator::start().await;
    let report = check_connection(
        &output_config(json!({"hosts": [cluster.url()]})),
        &BuildContext::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.cluster_name, "threatbeat-simulator");
    assert!(matches!(
        report.write_access,
        WriteAccess::Allowed | WriteAccess::SecurityDisabled
    ));
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error() {
    let mut cluster = ElasticsearchSimulator::start().await;
    let url = cluster.url();
    cluster.stop().await;
    let error = check_connection(
        &output_config(json!({"hosts": [url.clone()]})),
        &BuildContext::default(),
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&url) && message.contains("cannot connect"),
        "{message}"
    );
}

#[test]
fn the_registry_builds_it_and_tls_problems_are_config_errors() {
    let registry = threatbeat_outputs::registry();
    assert!(registry.contains("elasticsearch"));
    assert!(registry
        .build(
            &output_config(json!({"hosts": ["localhost:9200"]})),
            &BuildContext::default()
        )
        .is_ok());
    let error = registry
        .build(
            &output_config(json!({"hosts": ["https://localhost:9200"], "ssl.certificate_authorities": ["/nonexistent/ca.pem"]})),
            &BuildContext::default(),
        )
        .err()
        .unwrap();
    assert_eq!(error.key, "output.elasticsearch.ssl.certificate_authorities.0");
    assert!(error.reason.contains("/nonexistent/ca.pem"), "{error}");
    let error = registry
        .build(
            &output_config(json!({"hosts": ["h"], "ssl.certificate_authorities": ["-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"]})),
            &BuildContext::default(),
        )
        .err()
        .unwrap();
    assert_eq!(error.key, "output.elasticsearch.ssl.certificate_authorities.0");
    assert!(error.reason.contains("PEM certificate"), "{error}");
}

#[tokio::test]
async fn workers_send_bulk_requests_concurrently() {
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_delay(Some(Duration::from_millis(300)));
    let mut output =
        output(json!({"hosts": [cluster.url()], "index": INDEX, "bulk_max_size": 10, "worker": 4}));
    output.publish_events(indicator_events("w", 80)).await.unwrap();
    assert_eq!(cluster.document_count(INDEX), 80);
    assert!(
        cluster.max_concurrent_requests() >= 2,
        "{}",
        cluster.max_concurrent_requests()
    );
    assert!(
        cluster.max_concurrent_requests() <= 4,
        "{}",
        cluster.max_concurrent_requests()
    );
}
