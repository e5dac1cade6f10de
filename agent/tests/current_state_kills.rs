//! The current state survives `kill -9` at random moments — during a sync
//! (pages arriving slowly, bulk answers delayed) and during refreshes (every
//! document due for one each second) — and ends equal to a clean run's.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use threatbeat_test_support::agent::{stderr_text, wait_until_async, AgentHome, PATIENCE};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{fake_uuid, generate_events, Fault, MispSimulator, API_KEY};

const LATEST: &str = "logs-ti_threatbeat_latest.misp";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// 40 events of 5 attributes: 10 last active 200 days ago (expired under
/// the default 90 days), 5 whose validity ends `expiring_in` seconds from
/// now, 25 active in the past hour.
fn events(expiring_in: i64) -> Vec<Value> {
    let start = now();
    let recent = start - 3600;
    let mut events = generate_events(40, 5, recent);
    for (number, event) in events.iter_mut().enumerate() {
        event["uuid"] = json!(fake_uuid(0x91, number as u64));
        let stamp = match number {
            0..10 => recent - 200 * 86_400 + number as i64,
            10..15 => start - 90 * 86_400 + expiring_in,
            _ => recent + number as i64,
        };
        event["timestamp"] = json!(stamp.to_string());
        for (position, attribute) in event["Attribute"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            attribute["uuid"] = json!(fake_uuid(0x92, (number * 5 + position) as u64));
            attribute["timestamp"] = json!(stamp.to_string());
        }
    }
    events
}

fn home(misp: &MispSimulator, cluster: &ElasticsearchSimulator) -> AgentHome {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
output.elasticsearch:
  hosts: [\"{es}\"]
  bulk_max_size: 10
  backoff.init: 50ms
  backoff.max: 500ms
queue.disk:
  path: diskqueue
  flush.min_events: 10
  flush.timeout: 20ms
threatbeat.modules:
  - module: threatintel
    misp:
      var.url: {url}
      var.api_token: {API_KEY}
      var.first_interval: 6000h
      var.interval: 1s
      var.limit: 4
      var.current_state_refresh: 1s
",
            es = cluster.url(),
            url = misp.url("/events/restSearch"),
        ),
    );
    home
}

/// The (`_id`, attribute uuid) of every current-state document.
fn current_state(cluster: &ElasticsearchSimulator) -> BTreeSet<(String, String)> {
    cluster
        .documents(LATEST)
        .into_iter()
        .map(|document| {
            let uuid = document.source["misp"]["attribute"]["uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (document.id, uuid)
        })
        .collect()
}

/// Whether a log line says `key` followed by a number above zero
/// (`expired=25`), as the current-state check logs what it did.
fn logged_more_than_zero(log: &str, key: &str) -> bool {
    log.split(key).skip(1).any(|rest| {
        rest.chars()
            .next()
            .is_some_and(|first| ('1'..='9').contains(&first))
    })
}

/// A small deterministic generator; the seed is printed so a failure can be replayed.
fn random_pauses(rounds: usize) -> Vec<u64> {
    let seed = std::env::var("THREATBEAT_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| now() as u64);
    eprintln!("THREATBEAT_TEST_SEED={seed}");
    let mut state = seed | 1;
    (0..rounds)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            100 + state % 1400
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_syncs_and_refreshes_ends_in_a_clean_runs_state() {
    let start = now();
    // The agent killed ten times at random moments: while pages arrive
    // slowly and bulk answers are delayed, while every written document is
    // due for a refresh each second, and while five events' attributes
    // expire (2 s after the start) and are deleted.
    let misp = MispSimulator::start(events(2)).await;
    misp.set_failure_rate(100, vec![Fault::Slow(Duration::from_millis(120))], 7);
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_delay(Some(Duration::from_millis(15)));
    let mut agent_home = home(&misp, &cluster);
    let mut refreshed_before_a_kill = false;
    let mut deleted_before_a_kill = false;
    for pause in random_pauses(10) {
        let searches = misp.searches().len();
        let mut agent = agent_home.spawn();
        let polled = wait_until_async(PATIENCE, || misp.searches().len() > searches).await;
        assert!(polled, "{}", agent.log_tail());
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let log = agent.log();
        refreshed_before_a_kill |= logged_more_than_zero(&log, "refreshed=");
        deleted_before_a_kill |= logged_more_than_zero(&log, "expired=");
        agent.kill_9();
    }
    assert!(
        now() >= start + 4,
        "the expiring attributes expired during the kills"
    );

    // Then one undisturbed run to the end.
    misp.clear_failures();
    cluster.set_delay(None);
    let output = agent_home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));

    // A clean run over the same data now.
    let clean_misp = MispSimulator::start(events(2 - (now() - start))).await;
    let clean_cluster = ElasticsearchSimulator::start().await;
    let clean = home(&clean_misp, &clean_cluster);
    let output = clean.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let expected = current_state(&clean_cluster);
    assert_eq!(expected.len(), 25 * 5, "the recent attributes only");

    let got = current_state(&cluster);
    let extra: Vec<_> = got.difference(&expected).take(5).collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "not a clean run's state: extra (first 5) {extra:?}, missing (first 5) {missing:?}"
    );
    assert!(
        refreshed_before_a_kill && deleted_before_a_kill,
        "kills landed after refreshes and deletions had begun (refreshed {refreshed_before_a_kill}, deleted {deleted_before_a_kill})"
    );
}
