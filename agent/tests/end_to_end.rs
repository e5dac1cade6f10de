//! End to end through the real binary: MISP simulator → `threatbeat run` →
//! disk queue → Elasticsearch simulator. Every MISP attribute must become
//! exactly one document, whatever fails in between (issue 5), and the
//! httpjson cursor must survive kills and restarts (issue 3).

mod e2e;

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{
    assert_current_state, assert_exactly_once, chrono_now, expected_records, fresh_events, misp_events,
    wait_for, Random, Workspace, INDEX, PAGE_LIMIT, PATIENCE,
};
use serde_json::Value;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{Fault, MispSimulator, RequestRecord};

fn page(request: &RequestRecord) -> i64 {
    request.body["page"].as_i64().unwrap_or(-1)
}

fn window_start(request: &RequestRecord) -> Option<i64> {
    request.body["timestamp"].as_i64()
}

/// The answered searches of each poll: a poll starts at every page-1 request.
fn polls(searches: &[RequestRecord]) -> Vec<Vec<RequestRecord>> {
    let mut polls: Vec<Vec<RequestRecord>> = Vec::new();
    for search in searches.iter().filter(|search| search.status != 0) {
        match polls.last_mut() {
            Some(current) if page(search) != 1 => current.push(search.clone()),
            _ => polls.push(vec![search.clone()]),
        }
    }
    polls
}

/// A poll that ran to its end: pages 1, 2, 3, … in order, all 200, the same
/// window start on every page, and only the last page empty.
fn assert_complete_poll(poll: &[RecordView], events: usize) {
    let pages: Vec<i64> = poll.iter().map(|request| request.page).collect();
    let expected: Vec<i64> = (1..=(events.div_ceil(PAGE_LIMIT) + 1) as i64).collect();
    assert_eq!(
        pages, expected,
        "each page asked once, in order, until the first empty one"
    );
    assert!(poll.iter().all(|request| request.status == 200), "{poll:?}");
    let starts: std::collections::BTreeSet<Option<i64>> = poll.iter().map(|request| request.start).collect();
    assert_eq!(starts.len(), 1, "the same timestamp on every page: {starts:?}");
    let (last, full) = poll.split_last().unwrap();
    assert_eq!(last.items, 0, "the loop ends on the first empty page");
    assert!(full.iter().all(|request| request.items > 0), "{poll:?}");
}

/// What the assertions need from one logged request.
#[derive(Debug)]
struct RecordView {
    page: i64,
    start: Option<i64>,
    status: u16,
    items: usize,
}

fn view(poll: &[RequestRecord]) -> Vec<RecordView> {
    poll.iter()
        .map(|request| RecordView {
            page: page(request),
            start: window_start(request),
            status: request.status,
            items: request.items,
        })
        .collect()
}

/// Issue 5, first "Done when", and issue 3's single-pass guarantees: N
/// attributes over many pages become N documents with N distinct `_id`s;
/// later polls add nothing; a graceful stop leaves the queue empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_becomes_exactly_one_document() {
    let misp = MispSimulator::start(misp_events(70, 4)).await;
    let cluster = ElasticsearchSimulator::start().await;
    let expected = expected_records(&misp);
    let events = misp.events().len();
    assert!(
        expected.len() >= 300 && events > 10 * PAGE_LIMIT,
        "{} attributes",
        expected.len()
    );
    let mut workspace = Workspace::new(&misp, &cluster.url());

    let mut agent = workspace.spawn(false);
    let delivered = wait_for(PATIENCE, || cluster.document_count(INDEX) >= expected.len()).await;
    assert!(
        delivered,
        "{} of {} documents\n{}",
        cluster.document_count(INDEX),
        expected.len(),
        agent.log_tail()
    );

    // Two more polls (each re-reads the newest event from the cursor) add nothing.
    let polled_again = wait_for(PATIENCE, || polls(&misp.searches()).len() >= 3).await;
    assert!(polled_again, "{}", agent.log_tail());
    let status = tokio::task::block_in_place(|| agent.terminate());
    assert!(status.success(), "{status}\n{}", agent.log_tail());

    assert_exactly_once(&cluster, &expected);
    assert_current_state(&cluster, &misp, chrono_now());
    assert_eq!(
        workspace.queue_pending_events(),
        0,
        "the queue is empty after a graceful stop"
    );

    let all = polls(&misp.searches());
    assert_complete_poll(&view(&all[0]), events);
    let cursor = workspace.cursor().expect("a cursor was stored");
    let newest = misp
        .events()
        .iter()
        .filter_map(|event| event["timestamp"].as_str()?.parse::<i64>().ok())
        .max()
        .unwrap();
    assert_eq!(
        cursor["timestamp"], newest,
        "the cursor is the newest Event.timestamp"
    );
    for poll in &all[1..all.len() - 1] {
        let poll = view(poll);
        assert_eq!(
            poll[0].start,
            Some(newest),
            "later polls start at the cursor: {poll:?}"
        );
        assert!(
            poll.iter().all(|request| request.start == Some(newest)),
            "{poll:?}"
        );
    }
}

/// Issue 5, second "Done when": the cluster down for a stretch, 20 % of bulk
/// items answered 429, and the agent killed with SIGKILL at random moments and
/// restarted six times; at the end exactly N documents, N distinct `_id`s,
/// and an empty queue. The queue's compression is switched at every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_outages_and_429s_still_give_exactly_once() {
    let misp = MispSimulator::start(misp_events(60, 5)).await;
    let mut cluster = ElasticsearchSimulator::start().await;
    cluster.set_item_rejection_rate(0.2);
    // Slow bulk answers keep events in flight when a kill lands.
    cluster.set_delay(Some(Duration::from_millis(20)));
    // Slow MISP pages spread the poll over several rounds, so kills land
    // between pages as well as during delivery.
    misp.set_failure_rate(100, vec![Fault::Slow(Duration::from_millis(150))], 3);
    let expected = expected_records(&misp);
    let mut workspace = Workspace::new(&misp, &cluster.url());
    let mut random = Random::from_env_or_clock();
    let mut pending_after_kills = Vec::new();
    let mut segment_versions = BTreeSet::new();

    for round in 0..6 {
        // The queue's compression changes at every restart: each run reads
        // what the one before left in the other format.
        workspace.set_queue_compression(if round % 2 == 1 { "lz4" } else { "none" });
        let searches_before = misp.searches().len();
        let mut agent = workspace.spawn(false);
        // Once the agent is up (it asked MISP something), kill it at a random moment.
        let started = wait_for(PATIENCE, || misp.searches().len() > searches_before).await;
        assert!(
            started,
            "round {round}: the agent never polled\n{}",
            agent.log_tail()
        );
        match round {
            // The cluster refuses connections for the whole run: events pile up
            // in the queue (which fills and pauses the input), the cursor moves.
            1 => {
                cluster.stop().await;
                tokio::time::sleep(Duration::from_millis(random.between(500, 1500))).await;
            }
            // The cluster goes away and comes back while the agent runs: it
            // resumes by itself, without a restart.
            3 => {
                cluster.stop().await;
                tokio::time::sleep(Duration::from_millis(random.between(500, 1000))).await;
                cluster.restart().await;
                // Every poll re-reads the cursor's newest event, so a bulk
                // request follows even when everything was delivered already.
                let bulks = cluster.bulk_request_count();
                let resumed = wait_for(PATIENCE, || cluster.bulk_request_count() > bulks).await;
                assert!(
                    resumed,
                    "round {round}: no delivery after the outage\n{}",
                    agent.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(random.between(0, 300))).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(random.between(100, 900))).await,
        }
        assert!(
            agent.is_running(),
            "round {round}: the agent stopped by itself\n{}",
            agent.log_tail()
        );
        agent.kill_9();
        cluster.restart().await;
        segment_versions.extend(workspace.queue_segment_versions());
        pending_after_kills.push(workspace.queue_pending_events());
        eprintln!(
            "round {round}: killed; cursor {:?}, {} events left in the queue, {} of {} documents, {} items answered 429 so far",
            workspace.cursor(),
            pending_after_kills[round],
            cluster.document_count(INDEX),
            expected.len(),
            cluster.items_rejected_with_429()
        );
    }
    assert!(
        pending_after_kills.iter().any(|pending| *pending > 0),
        "some kill landed with unacknowledged events in the queue: {pending_after_kills:?}"
    );
    assert!(
        segment_versions.is_superset(&BTreeSet::from([2, 3])),
        "kills left plain and lz4 segments: {segment_versions:?}"
    );
    misp.clear_failures();

    // A last pass that exits once its poll is done and the queue drained.
    let mut agent = workspace.spawn(true);
    let status = tokio::task::block_in_place(|| agent.wait_exit());
    assert!(status.success(), "{status}\n{}", agent.log());
    assert!(cluster.items_rejected_with_429() > 0, "the 429s were exercised");
    assert_exactly_once(&cluster, &expected);
    // Killed at random moments, the current state still converges: every
    // valid attribute once, nothing else (the store and the queue agree).
    assert_current_state(&cluster, &misp, chrono_now());
    assert_eq!(
        workspace.queue_pending_events(),
        0,
        "the queue is empty at the end"
    );
}

/// Issue 3: a kill between two pages (MISP answers slowly) loses nothing
/// across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_pagination_loses_nothing() {
    let misp = MispSimulator::start(misp_events(50, 6)).await;
    let cluster = ElasticsearchSimulator::start().await;
    let expected = expected_records(&misp);
    let mut workspace = Workspace::new(&misp, &cluster.url());

    misp.set_failure_rate(100, vec![Fault::Slow(Duration::from_millis(300))], 7);
    let mut agent = workspace.spawn(false);
    let answered = |misp: &MispSimulator| {
        misp.searches()
            .iter()
            .filter(|search| search.status == 200)
            .count()
    };
    let paged = wait_for(PATIENCE, || answered(&misp) >= 4).await;
    assert!(paged, "{}", agent.log_tail());
    agent.kill_9();
    let before_restart = misp.searches();
    assert!(
        before_restart
            .iter()
            .all(|search| search.items > 0 || search.status != 200),
        "the kill landed before the last page: {:?}",
        view(&before_restart)
    );
    assert!(
        cluster.document_count(INDEX) < expected.len(),
        "the kill landed mid-pass"
    );
    eprintln!(
        "killed after {} pages; cursor {:?}; {} of {} documents",
        before_restart.len(),
        workspace.cursor(),
        cluster.document_count(INDEX),
        expected.len()
    );

    misp.clear_failures();
    let mut agent = workspace.spawn(true);
    let status = tokio::task::block_in_place(|| agent.wait_exit());
    assert!(status.success(), "{status}\n{}", agent.log());
    assert_exactly_once(&cluster, &expected);
    assert_eq!(workspace.queue_pending_events(), 0);
}

/// Issue 3: after a completed poll, a restart asks only for what changed since
/// the stored cursor (not `now - first_interval`), and gets the new events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_completed_poll_asks_only_for_changes_since_the_cursor() {
    let misp = MispSimulator::start(misp_events(30, 4)).await;
    let cluster = ElasticsearchSimulator::start().await;
    let mut workspace = Workspace::new(&misp, &cluster.url());

    let mut agent = workspace.spawn(true);
    let status = tokio::task::block_in_place(|| agent.wait_exit());
    assert!(status.success(), "{status}\n{}", agent.log());
    assert_exactly_once(&cluster, &expected_records(&misp));
    let first_poll = misp.searches();
    let first_start = window_start(&first_poll[0]).expect("a numeric timestamp");
    let four_thousand_days = 4000 * 86_400;
    assert!(
        (first_start - (chrono_now() - four_thousand_days)).abs() < 300,
        "the first poll starts at now - first_interval: {first_start}"
    );
    let cursor = workspace.cursor().expect("a completed poll stores a cursor");
    let cursor = cursor["timestamp"].as_i64().expect("a numeric cursor");

    // New events, newer than the cursor, then a restart.
    let fresh_start = chrono_now() - 30;
    misp.add_events(fresh_events(4, 3, fresh_start, 1));
    misp.clear_log();
    let mut agent = workspace.spawn(true);
    let status = tokio::task::block_in_place(|| agent.wait_exit());
    assert!(status.success(), "{status}\n{}", agent.log());

    let second_poll = misp.searches();
    let starts: Vec<Option<i64>> = second_poll.iter().map(window_start).collect();
    assert!(!starts.is_empty());
    assert!(
        starts.iter().all(|start| *start == Some(cursor)),
        "every page of the restarted poll sends the stored cursor {cursor}: {starts:?}"
    );
    assert_ne!(Some(cursor), Some(first_start));
    // Only the cursor's event and the new ones were fetched: a page or two, not the whole history.
    let fetched: usize = second_poll.iter().map(|search| search.items).sum();
    assert!(fetched <= 5, "{fetched} events fetched after the restart");
    assert_exactly_once(&cluster, &expected_records(&misp));
    let newest = fresh_start + 3;
    assert_eq!(
        workspace.cursor().unwrap()["timestamp"],
        Value::from(newest),
        "the cursor moved on"
    );
}
