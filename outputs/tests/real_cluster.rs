//! Opt-in: the same assertions against a real Elasticsearch cluster.
//!
//! ```text
//! ELASTICSEARCH_URL=http://localhost:9200 ELASTICSEARCH_USERNAME=elastic ELASTICSEARCH_PASSWORD=changeme \
//!     cargo test -p threatbeat-outputs --test real_cluster -- --test-threads=1
//! ```
//!
//! `ELASTICSEARCH_API_KEY=id:key` may replace username/password. Without
//! `ELASTICSEARCH_URL` every test prints why it is skipped and passes. The
//! tests create and then delete indices, templates and policies whose names
//! start with `tbrealtest-`.

mod common;

use base64::Engine;
use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Output};
use threatbeat_outputs::elasticsearch::{setup, SetupSettings};

use common::{scenarios, Probe};

/// The connection settings and a probe, or `None` (with a message) to skip.
fn cluster(test: &str) -> Option<(Value, Probe)> {
    let Ok(url) = std::env::var("ELASTICSEARCH_URL") else {
        eprintln!("skipping {test}: ELASTICSEARCH_URL is not set (see outputs/tests/real_cluster.rs)");
        return None;
    };
    let mut connection = json!({"hosts": [url], "ssl": {"verification_mode": std::env::var("ELASTICSEARCH_SSL_VERIFICATION").unwrap_or_else(|_| "full".into())}});
    let mut authorization = None;
    if let Ok(key) = std::env::var("ELASTICSEARCH_API_KEY") {
        connection["api_key"] = json!(key);
        authorization = Some(format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(&key)
        ));
    } else if let Ok(user) = std::env::var("ELASTICSEARCH_USERNAME") {
        let password = std::env::var("ELASTICSEARCH_PASSWORD").unwrap_or_default();
        connection["username"] = json!(user);
        connection["password"] = json!(password);
        authorization = Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ));
    }
    Some((connection, Probe::new(&url, authorization)))
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("tbrealtest-{name}-{nanos}")
}

#[tokio::test]
async fn real_cluster_exactly_once() {
    let Some((connection, probe)) = cluster("real_cluster_exactly_once") else {
        return;
    };
    let index = unique("once");
    scenarios::exactly_once(connection, &probe, &index).await;
    probe.delete(&index).await;
}

#[tokio::test]
async fn real_cluster_setup_is_idempotent() {
    let Some((connection, probe)) = cluster("real_cluster_setup_is_idempotent") else {
        return;
    };
    let name = unique("setup");
    scenarios::setup_is_idempotent(connection, &name, &format!("{name}-*")).await;
    probe.delete(&format!("_index_template/{name}")).await;
    probe.delete(&format!("_index_template/{name}-latest")).await;
    probe.delete(&format!("_ilm/policy/{name}")).await;
}

#[tokio::test]
async fn real_cluster_mapping_error_is_dead_lettered() {
    let Some((connection, probe)) = cluster("real_cluster_mapping_error_is_dead_lettered") else {
        return;
    };
    let name = unique("mapping");
    // Our template maps threat.indicator.ip as `ip`, so a CIDR is refused.
    let mut settings = SetupSettings::default();
    settings.template.name = name.clone();
    settings.template.patterns = vec![format!("{name}-*")];
    settings.template.data_stream = false;
    settings.template.priority = 500;
    settings.ilm.enabled = false;
    settings.latest_template.enabled = false;
    setup(
        &common::output_config(connection.clone()),
        &BuildContext::default(),
        &settings,
    )
    .await
    .unwrap();
    let index = format!("{name}-indicators");
    let dead_letter = format!("{name}-dead-letter");
    scenarios::mapping_error_is_dead_lettered(connection, &probe, &index, &dead_letter).await;
    probe.delete(&index).await;
    probe.delete(&dead_letter).await;
    probe.delete(&format!("_index_template/{name}")).await;
}

/// The threat side of Kibana's prebuilt address rule (docs/detection.md) run
/// by the cluster itself: of a current-state document, its history copy
/// (marked `labels.is_ioc_transform_source`) and a document older than the
/// window, it sees the current-state one only.
#[tokio::test]
async fn real_cluster_rule_threat_query_sees_the_current_state_only() {
    let Some((connection, probe)) = cluster("real_cluster_rule_threat_query_sees_the_current_state_only")
    else {
        return;
    };
    let index = unique("rules");
    let now = chrono::Utc::now();
    let indicator = |id: &str, timestamp: chrono::DateTime<chrono::Utc>, history: bool| {
        let mut document = json!({
            "@timestamp": timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event": {"module": "threatintel", "category": "threat", "kind": "enrichment", "type": "indicator"},
            "threat": {"indicator": {"ip": "192.0.2.1", "type": "ipv4-addr"}}
        });
        if history {
            document["labels"] = json!({"is_ioc_transform_source": "true"});
        }
        let mut event = threatbeat_core::Event::from_value(document);
        event.set_id(id);
        event.set_op_type(threatbeat_core::OpType::Index);
        event
    };
    let mut settings = connection.clone();
    settings["index"] = json!(index);
    let mut output = common::output(settings);
    output
        .publish_events(vec![
            indicator("current", now, false),
            indicator("history", now, true),
            indicator("old", now - chrono::Duration::days(40), false),
        ])
        .await
        .unwrap();
    let threat_query = json!({"bool": {
        "filter": [
            {"range": {"@timestamp": {"gte": "now-30d/d"}}},
            {"terms": {"event.module": ["threatintel"]}},
            {"exists": {"field": "threat.indicator.ip"}},
            {"term": {"event.category": "threat"}},
            {"term": {"event.kind": "enrichment"}},
            {"term": {"event.type": "indicator"}}
        ],
        "must_not": [{"term": {"labels.is_ioc_transform_source": "true"}}]
    }});
    assert_eq!(probe.count(&index).await, 3);
    assert_eq!(probe.count_matching(&index, &threat_query).await, 1);
    probe.delete(&index).await;
}
