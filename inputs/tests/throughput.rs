//! Throughput figures (not assertions): run with
//! `cargo test --release -p threatbeat-inputs --test throughput -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::*;
use serde_json::json;
use threatbeat_test_support::misp::{generate_events, MispSimulator, API_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand in release mode"]
async fn misp_events_poll_throughput() {
    for (events, attributes, limit) in [(2_000, 50, 100), (200, 500, 10)] {
        let misp = MispSimulator::start(generate_events(
            events,
            attributes,
            chrono::Utc::now().timestamp() - 3600,
        ))
        .await;
        let data = tempfile::tempdir().unwrap();
        let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
        let vars = json!({"url": misp.url("/events/restSearch"), "api_token": API_KEY, "limit": limit});
        let config = manifest_input("threatintel/misp", vars);
        let started = Instant::now();
        run_once(&config, &pipeline).await.unwrap();
        let elapsed = started.elapsed();
        let count = pipeline.event_count();
        assert_eq!(count, events * attributes);
        println!(
            "{events} events x {attributes} attributes, limit {limit}: {count} records in {elapsed:?} = {:.0} records/s (simulator included)",
            count as f64 / elapsed.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand in release mode"]
async fn real_fixture_corpus_poll() {
    let misp = MispSimulator::start_with_fixtures().await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "threatintel/misp", None);
    let mut config = manifest_input(
        "threatintel/misp",
        json!({"url": misp.url("/events/restSearch"), "api_token": API_KEY}),
    );
    override_setting(&mut config, "request.transforms.4.set.default", json!("1"));
    let started = Instant::now();
    run_once(&config, &pipeline).await.unwrap();
    println!(
        "73 real events, {} records in {:?}",
        pipeline.event_count(),
        started.elapsed()
    );
}
