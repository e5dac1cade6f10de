//! Several instances of one fileset (two MISP servers) through the real
//! binary: each its own pipeline and cursor, across restarts, a renamed
//! module file and an edited setting; the instance that ran alone before
//! keeps its cursor when the second one is added.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};
use threatbeat_core::CursorStore;
use threatbeat_test_support::agent::{document_ids, AgentHome};
use threatbeat_test_support::misp::{fake_uuid, generate_events, MispSimulator, API_KEY};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// `count` events of 3 attributes stamped from `start`, with uuids unique to `server` and `batch`.
fn events(server: u32, batch: u32, count: usize, start: i64) -> Vec<Value> {
    let mut events = generate_events(count, 3, start);
    for (event_number, event) in events.iter_mut().enumerate() {
        let salt = server * 16 + batch;
        event["uuid"] = json!(fake_uuid(0x1000 + salt, event_number as u64));
        for (attribute_number, attribute) in event["Attribute"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            attribute["uuid"] = json!(fake_uuid(
                0x2000 + salt,
                (event_number * 3 + attribute_number) as u64
            ));
        }
    }
    events
}

fn module_file(misp: &MispSimulator, interval: &str) -> String {
    format!(
        "- module: threatintel\n  misp:\n    var.url: {}\n    var.api_token: {API_KEY}\n    var.first_interval: 4000d\n    var.limit: 5\n    var.interval: {interval}\n",
        misp.url("/events/restSearch")
    )
}

/// `run --once`, asserting success.
async fn run_once(home: &AgentHome) {
    let output = tokio::task::block_in_place(|| home.run_once());
    assert!(
        output.status.success(),
        "run --once failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Distinct ids of the history documents and of the current-state
/// documents written so far.
fn ids_by_stream(home: &AgentHome) -> (BTreeSet<String>, BTreeSet<String>) {
    let documents = home.documents();
    let ids_in = |index: &str| -> BTreeSet<String> {
        let in_index: Vec<Value> = documents
            .iter()
            .filter(|document| document["@metadata"]["index"] == index)
            .cloned()
            .collect();
        document_ids(&in_index).into_iter().collect()
    };
    (
        ids_in("logs-ti_threatbeat.misp-default"),
        ids_in("logs-ti_threatbeat_latest.misp"),
    )
}

/// The `timestamp` each `/events/restSearch` request of `misp` asked from, in order.
fn asked_from(misp: &MispSimulator) -> Vec<i64> {
    misp.searches()
        .iter()
        .filter_map(|search| search.body["timestamp"].as_i64())
        .collect()
}

/// The pipeline ids holding a cursor: the cursor files' names.
fn cursor_pipelines(home: &AgentHome) -> BTreeSet<String> {
    std::fs::read_dir(home.path("data/registry"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    entry
                        .file_name()
                        .to_str()
                        .and_then(|name| name.strip_suffix(".json"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_misp_servers_each_keep_their_own_cursor() {
    let start = now() - 3600;
    let server_a = MispSimulator::start(events(1, 0, 12, start)).await;
    let server_b = MispSimulator::start(events(2, 0, 7, start + 100)).await;
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write(
        "threatbeat.yml",
        "path.data: data\noutput.file:\n  path: out\n  filename: documents\n",
    );

    // Alone, server A's fileset is the pipeline `threatintel/misp`.
    home.write("modules.d/server-a.yml", &module_file(&server_a, "60m"));
    run_once(&home).await;
    let (ids, current) = ids_by_stream(&home);
    assert_eq!(ids.len(), 36);
    assert_eq!(
        current.len(),
        36,
        "every attribute is recent: one current-state document each"
    );
    let cursors = CursorStore::new(&home.path("data"));
    let alone = cursors
        .load("threatintel/misp")
        .unwrap()
        .expect("the cursor of the single instance");
    let a_cursor = alone["timestamp"].as_i64().unwrap();
    assert_eq!(a_cursor, start + 11, "the newest event of server A");

    // A second server: two pipelines. A's instance continues from the cursor
    // it had alone; B's starts from `first_interval`.
    home.write("modules.d/server-b.yml", &module_file(&server_b, "60m"));
    server_a.clear_log();
    run_once(&home).await;
    let (ids, current) = ids_by_stream(&home);
    assert_eq!(ids.len(), 36 + 21, "every attribute of both servers, once");
    assert_eq!(
        current.len(),
        36 + 21,
        "one current-state document per attribute of both servers"
    );
    assert_eq!(
        asked_from(&server_a).first(),
        Some(&a_cursor),
        "A continues from its cursor"
    );
    let b_first = *asked_from(&server_b).first().unwrap();
    assert!(
        b_first < start - 3000 * 86_400,
        "B starts from first_interval: {b_first}"
    );
    let instances: Vec<String> = cursor_pipelines(&home)
        .into_iter()
        .filter(|name| name.starts_with("threatintel_misp_"))
        .collect();
    assert_eq!(instances.len(), 2, "one cursor per instance: {instances:?}");

    // New events on both; the module file of A renamed, B's interval edited:
    // each instance asks from its own cursor and gets only what is new.
    server_a.add_events(events(1, 1, 2, now() - 60));
    server_b.add_events(events(2, 1, 3, now() - 50));
    server_a.clear_log();
    server_b.clear_log();
    std::fs::rename(
        home.path("modules.d/server-a.yml"),
        home.path("modules.d/primary.yml"),
    )
    .unwrap();
    home.write("modules.d/server-b.yml", &module_file(&server_b, "5m"));
    run_once(&home).await;
    let (ids, current) = ids_by_stream(&home);
    assert_eq!(ids.len(), 36 + 21 + 6 + 9);
    assert_eq!(current.len(), 36 + 21 + 6 + 9);
    assert_eq!(asked_from(&server_a).first(), Some(&a_cursor));
    assert_eq!(
        asked_from(&server_b).first(),
        Some(&(start + 106)),
        "B's newest event before"
    );
    assert_eq!(
        cursor_pipelines(&home).len(),
        3,
        "the two instances and the one A had alone"
    );
}

#[test]
fn two_entries_with_the_same_source_are_refused_by_test_config() {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write("threatbeat.yml", "output.console: {}\n");
    let entry = "- module: threatintel\n  misp:\n    var.url: https://misp.example/events/restSearch\n    var.api_token: k\n";
    home.write("modules.d/one.yml", entry);
    home.write("modules.d/two.yml", entry);
    let output = home.command().args(["test", "config"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("two.yml"), "{stderr}");
    assert!(
        stderr.contains("threatintel/misp is enabled twice with the same source"),
        "{stderr}"
    );
    assert!(stderr.contains("give each entry its own `id:`"), "{stderr}");

    home.write(
        "modules.d/two.yml",
        &entry.replace("misp:\n", "misp:\n    id: second\n"),
    );
    let output = home.command().args(["test", "config"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
