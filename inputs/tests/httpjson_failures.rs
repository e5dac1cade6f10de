//! Faults caused on purpose: failing requests, an API that goes away, bad
//! bodies, rate limits. Nothing is lost, the cursor never moves past a
//! failure, the input never gives up for good.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::{json, Value};
use threatbeat_core::PluginConfig;
use threatbeat_test_support::misp::{generate_events, Fault, MispSimulator, API_KEY};
use tokio_util::sync::CancellationToken;

fn misp_config(misp: &MispSimulator, extra: Value) -> PluginConfig {
    let mut vars = json!({"url": misp.url("/events/restSearch"), "api_token": API_KEY, "limit": 5});
    for (key, value) in extra.as_object().unwrap() {
        vars[key] = value.clone();
    }
    manifest_input("threatintel/misp", vars)
}

#[tokio::test]
async fn thirty_percent_failing_requests_still_deliver_every_attribute() {
    let misp = MispSimulator::start(generate_events(40, 3, Utc::now().timestamp() - 3600)).await;
    let all: HashSet<String> = all_attribute_uuids(&misp.events()).into_iter().collect();
    misp.set_failure_rate(
        30,
        vec![
            Fault::InternalError,
            Fault::ConnectionReset,
            Fault::Slow(Duration::from_millis(1500)),
        ],
        7,
    );
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = misp_config(&misp, json!({"http_client_timeout": "500ms"}));
    fast_retries(&mut config, 12);
    run_once(&config, &pipeline).await.unwrap();
    let delivered: HashSet<String> = pipeline.events().iter().map(attribute_uuid).collect();
    assert_eq!(delivered, all);
    assert_eq!(pipeline.event_count(), all.len(), "retries do not duplicate");
    let statuses: Vec<u16> = misp.searches().iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().filter(|s| **s == 500).count() >= 1,
        "faults were injected: {statuses:?}"
    );
    assert!(misp.searches().len() > 9, "failed requests were retried");
}

#[tokio::test]
async fn api_down_for_several_intervals_then_back_resumes_by_itself() {
    let mut misp = MispSimulator::start(generate_events(6, 2, Utc::now().timestamp() - 60)).await;
    misp.stop().await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = misp_config(&misp, json!({"interval": "150ms"}));
    fast_retries(&mut config, 2);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(build_input(&config).run(pipeline.context(false, shutdown.clone())));
    // Several intervals with the API gone (connection refused).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(pipeline.event_count(), 0);
    assert!(pipeline.stored_cursor().is_none(), "no cursor from failed polls");
    assert!(!task.is_finished(), "the input did not give up");
    misp.restart().await;
    assert!(
        wait_until(30, || pipeline.event_count() == 12).await,
        "polling resumed once the API came back"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Runs one pass against a simulator that answers `fault` once, with a
/// cursor stored beforehand; returns the error text. Asserts that nothing
/// was published and that the cursor did not move.
async fn bad_response(fault: Fault) -> String {
    let misp = MispSimulator::start(generate_events(3, 1, Utc::now().timestamp() - 60)).await;
    misp.push_faults([fault]);
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let before = json!({"timestamp": Utc::now().timestamp() - 3600});
    pipeline.store.store(&pipeline.id, &before).unwrap();
    let mut config = misp_config(&misp, json!({}));
    fast_retries(&mut config, 1);
    let error = run_once(&config, &pipeline)
        .await
        .expect_err("the poll fails")
        .to_string();
    assert_eq!(pipeline.event_count(), 0);
    assert_eq!(pipeline.stored_cursor(), Some(before), "the cursor did not move");
    assert!(
        error.contains(&misp.url("/events/restSearch")),
        "names the URL: {error}"
    );
    assert!(error.contains("threatintel/misp"), "names the module: {error}");
    error
}

#[tokio::test]
async fn html_login_page_is_a_clear_error() {
    let error = bad_response(Fault::LoginPageHtml).await;
    assert!(error.contains("body is HTML, not JSON"), "{error}");
}

#[tokio::test]
async fn proxy_502_html_is_a_clear_error() {
    let error = bad_response(Fault::BadGatewayHtml).await;
    assert!(error.contains("502 Bad Gateway"), "{error}");
}

#[tokio::test]
async fn truncated_json_is_a_clear_error() {
    let error = bad_response(Fault::TruncatedJson).await;
    assert!(error.contains("truncated JSON"), "{error}");
}

#[tokio::test]
async fn invalid_utf8_is_a_clear_error() {
    let error = bad_response(Fault::InvalidUtf8).await;
    assert!(error.contains("not valid UTF-8"), "{error}");
}

#[tokio::test]
async fn empty_body_is_a_clear_error() {
    let error = bad_response(Fault::EmptyBody).await;
    assert!(error.contains("empty body"), "{error}");
}

#[tokio::test]
async fn misp_error_object_is_a_clear_error() {
    let error = bad_response(Fault::ErrorObject).await;
    assert!(
        error.contains("MISP error: An Internal Error Has Occurred."),
        "{error}"
    );
}

#[tokio::test]
async fn internal_server_error_is_a_clear_error() {
    let error = bad_response(Fault::InternalError).await;
    assert!(
        error.contains("500 Internal Server Error: An Internal Error Has Occurred."),
        "{error}"
    );
}

#[tokio::test]
async fn connection_reset_is_a_clear_error() {
    let error = bad_response(Fault::ConnectionReset).await;
    assert!(
        error.contains("reading the response body failed")
            || error.contains("connection closed before message completed"),
        "{error}"
    );
}

#[tokio::test]
async fn an_empty_response_list_is_an_empty_page_and_keeps_the_cursor() {
    let misp = MispSimulator::start(Vec::new()).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let before = json!({"timestamp": Utc::now().timestamp() - 3600});
    pipeline.store.store(&pipeline.id, &before).unwrap();
    run_once(&misp_config(&misp, json!({})), &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), 0);
    assert_eq!(pipeline.stored_cursor(), Some(before));
    assert_eq!(misp.searches().len(), 1);
}

#[tokio::test]
async fn rate_limit_reset_is_honoured() {
    let misp = MispSimulator::start(generate_events(2, 1, Utc::now().timestamp() - 60)).await;
    misp.push_faults([Fault::RateLimited(1)]);
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = misp_config(&misp, json!({}));
    fast_retries(&mut config, 3);
    let started = std::time::Instant::now();
    run_once(&config, &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the X-Rate-Limit-Reset seconds, not the 10 ms back-off"
    );
    assert_eq!(misp.searches()[0].status, 429);
}

#[tokio::test]
async fn filebeat_bug_14_and_16_timeouts_fail_one_poll_and_the_next_interval_recovers() {
    let misp = MispSimulator::start(generate_events(4, 1, Utc::now().timestamp() - 60)).await;
    // Every attempt of the first poll is too slow.
    misp.push_faults([
        Fault::Slow(Duration::from_secs(2)),
        Fault::Slow(Duration::from_secs(2)),
    ]);
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = misp_config(
        &misp,
        json!({"interval": "300ms", "http_client_timeout": "400ms"}),
    );
    fast_retries(&mut config, 2);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(build_input(&config).run(pipeline.context(false, shutdown.clone())));
    assert!(
        wait_until(30, || pipeline.event_count() == 4).await,
        "the next poll delivered everything"
    );
    let searches = misp.searches();
    assert!(searches.len() >= 3, "two timed-out attempts, then a new poll");
    assert_eq!(
        (searches[0].status, searches[1].status),
        (0, 0),
        "the client gave up on both: {searches:?}"
    );
    assert!(!task.is_finished());
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn filebeat_bug_15_a_failed_poll_never_stalls_the_cursor_for_good() {
    let start = Utc::now().timestamp() - 600;
    let misp = MispSimulator::start(generate_events(2, 1, start)).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = misp_config(&misp, json!({}));
    fast_retries(&mut config, 1);
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    run_once(&config, &pipeline).await.unwrap();
    let after_first = pipeline.stored_cursor();
    // A failing poll: reported, cursor untouched.
    misp.push_faults([Fault::InternalError]);
    assert!(run_once(&config, &pipeline).await.is_err());
    assert_eq!(pipeline.stored_cursor(), after_first);
    // New data after the failure arrives with the next poll, without resetting anything.
    misp.add_events(vec![
        json!({"Event": {"uuid": "late", "timestamp": (start + 50).to_string(),
        "Attribute": [{"uuid": "late-attribute", "type": "domain", "value": "late.example"}]}}),
    ]);
    run_once(&config, &pipeline).await.unwrap();
    assert!(pipeline
        .events()
        .iter()
        .any(|e| attribute_uuid(e) == "late-attribute"));
    assert_eq!(pipeline.stored_cursor(), Some(json!({"timestamp": start + 50})));
}

#[tokio::test]
async fn a_failed_publish_ends_the_poll_without_moving_the_cursor() {
    let misp = MispSimulator::start(generate_events(10, 1, Utc::now().timestamp() - 60)).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", Some(1));
    let config = misp_config(&misp, json!({"limit": 3}));
    let error = run_once(&config, &pipeline).await.unwrap_err().to_string();
    assert!(error.contains("publishing failed"), "{error}");
    // Page 3 may have been requested ahead while page 2 was refused; it is never published.
    let searched = misp.searches().len();
    assert!((2..=3).contains(&searched), "{searched} requests");
    assert_eq!(pipeline.collected.lock().unwrap().batches.len(), 1);
    let stored = pipeline.stored_cursor().unwrap();
    let first_page_cursor = pipeline.collected.lock().unwrap().batches[0].1.clone().unwrap();
    assert_eq!(stored, first_page_cursor);
}

#[tokio::test]
async fn a_page_fetched_ahead_that_fails_leaves_the_page_before_it_durable() {
    let start = Utc::now().timestamp() - 60;
    let misp = MispSimulator::start(generate_events(6, 1, start)).await;
    // Page 1 is answered; page 2, requested while page 1 is published, fails.
    misp.push_faults([Fault::Slow(Duration::ZERO), Fault::InternalError]);
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = misp_config(&misp, json!({"limit": 2}));
    fast_retries(&mut config, 1);
    let error = run_once(&config, &pipeline).await.unwrap_err().to_string();
    assert!(error.contains("page 2"), "{error}");
    assert_eq!(pipeline.event_count(), 2, "page 1 was published");
    assert_eq!(pipeline.stored_cursor(), Some(json!({"timestamp": start + 1})));
}

#[tokio::test]
async fn oauth2_client_credentials_token_is_fetched_and_refreshed() {
    let misp = MispSimulator::start(generate_events(3, 1, Utc::now().timestamp() - 60)).await;
    misp.set_oauth_token_lifetime(0); // every token expires at once: one per request
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "oauth", None);
    let config = PluginConfig {
        type_name: "httpjson".into(),
        settings: json!({
            "request": {"url": misp.url("/attributes/restSearch"), "method": "POST",
                "body": {"returnFormat": "json", "limit": 2},
                "transforms": [{"set": {"target": "body.page", "value": 1}}]},
            "auth": {"oauth2": {"token_url": misp.url("/oauth2/token"), "client_id": "threatbeat", "client_secret": "s3cret", "scopes": ["read"]}},
            "response": {"split": {"target": "body.response.Attribute", "ignore_empty_value": true},
                "pagination": [{"set": {"target": "body.page", "value": "[[ last_response.page + 1 if last_response.body.response.Attribute|length > 0 else '' ]]", "value_type": "int"}}]}
        }),
        origin: threatbeat_core::Origin::named("test"),
    };
    run_once(&config, &pipeline).await.unwrap();
    assert_eq!(pipeline.event_count(), 3);
    assert_eq!(
        misp.oauth_tokens_issued(),
        3,
        "a token per request when each expires at once"
    );

    let mut bad = config.clone();
    bad.settings["auth"]["oauth2"]["client_secret"] = json!("wrong");
    let error = run_once(&bad, &pipeline).await.unwrap_err().to_string();
    assert!(
        error.contains("OAuth2 token endpoint") && error.contains("401"),
        "{error}"
    );
    assert!(!error.contains("wrong"), "the secret is not printed: {error}");
}

/// `request.timeout` bounds each wait for the server, not the whole page a
/// split reads while it arrives: a page that stalls mid-body longer than the
/// timeout is fetched again; one that keeps coming, slowly, for longer than
/// the timeout in all, is read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_stalls_is_fetched_again_and_a_slow_one_is_read_whole() {
    use threatbeat_test_support::hostile::{Canned, HostileServer};
    let events = generate_events(20, 5, Utc::now().timestamp() - 600);
    let objects: Vec<serde_json::Map<String, Value>> = events
        .iter()
        .filter_map(|event| event.as_object().cloned())
        .collect();
    let all: HashSet<String> = all_attribute_uuids(&objects).into_iter().collect();
    let page = json!({"response": events.iter().map(|event| json!({"Event": event})).collect::<Vec<_>>()});
    let server = HostileServer::start().await;
    server.answer_in_turn(
        "/events/restSearch",
        vec![
            // Half the page, then nothing for longer than the timeout.
            Canned::json(page.clone()).paced(2, Duration::from_millis(1500)),
            // Eight pieces 150 ms apart: 1 s in all, each wait under 400 ms.
            Canned::json(page).paced(8, Duration::from_millis(150)),
            Canned::json(json!({"response": []})),
        ],
    );
    let vars = json!({
        "url": server.url("/events/restSearch"),
        "api_token": API_KEY,
        "http_client_timeout": "400ms",
        "current_state": false,
    });
    let mut config = manifest_input("threatintel/misp", vars);
    fast_retries(&mut config, 3);
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    run_once(&config, &pipeline).await.unwrap();
    let delivered: HashSet<String> = pipeline.events().iter().map(attribute_uuid).collect();
    assert_eq!(delivered, all, "every attribute, from the page read whole");
    assert_eq!(
        server.requests().len(),
        3,
        "the stalled page, the slow one, the empty end"
    );
    assert!(pipeline.stored_cursor().is_some());
}
