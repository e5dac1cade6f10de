//! Graceful shutdown through the real binary: SIGTERM in the middle of a large
//! poll loses and duplicates nothing across a restart; a second signal exits at once.

mod ops_support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;

use ops_support::{module_file, read_documents, Home};

const FILES: usize = 1500;
const RECORDS_PER_FILE: usize = 4;

const MAIN: &str = "
path.data: data
threatbeat.shutdown_timeout: 60s
output.file:
  path: out
  filename: events
";

#[test]
fn sigterm_during_a_large_poll_then_a_restart_delivers_everything_exactly_once() {
    let home = Home::new(MAIN);
    let feed = home.path("feeds/big");
    fs::create_dir_all(&feed).unwrap();
    for file in 0..FILES {
        let mut out = File::create(feed.join(format!("{file:05}.ndjson"))).unwrap();
        for record in 0..RECORDS_PER_FILE {
            writeln!(out, "{{\"n\": \"{file}-{record}\"}}").unwrap();
        }
    }
    home.write(
        "modules.d/alpha.yml",
        &module_file("alpha", &["feeds/big"], "one"),
    );

    let mut agent = home.start(&[], &[]);
    agent.wait_for("the first events", |agent| !agent.documents().is_empty());
    agent.signal("TERM");
    let status = agent.wait_exit();
    assert!(status.success(), "{status}\n{}", agent.logs());
    let logs = agent.logs();
    assert!(logs.contains("shutdown requested"), "{logs}");
    let first_run = read_documents(&agent.output).len();
    println!(
        "first run wrote {first_run} of {} events before SIGTERM",
        FILES * RECORDS_PER_FILE
    );
    assert!(
        home.path("data/registry/test_alpha.json").is_file(),
        "the cursor was persisted"
    );
    drop(agent);

    // The restart reads only what the first run had not finished.
    let output = home
        .command(&[])
        .args(["run", "--once", "-e", "-c"])
        .arg(home.path("threatbeat.yml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for document in read_documents(&home.path("out/events.ndjson")) {
        *seen
            .entry(document["n"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), FILES * RECORDS_PER_FILE, "every event arrived");
    let duplicated: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
}

#[test]
fn a_second_signal_exits_at_once_while_the_first_is_still_flushing() {
    // Elasticsearch is down (nothing listens on port 1): the graceful shutdown
    // would wait for the queue to drain for up to a minute.
    let home = Home::new(
        "
path.data: data
threatbeat.shutdown_timeout: 60s
queue.disk.shutdown_timeout: 60s
output.elasticsearch:
  hosts: [\"http://127.0.0.1:1\"]
  backoff: {init: 100ms, max: 200ms}
",
    );
    home.add_record("feeds/a", "a1");
    home.write("modules.d/alpha.yml", &module_file("alpha", &["feeds/a"], "one"));
    let mut agent = home.start(&[], &[]);
    agent.wait_for("the batch in the queue", |agent| {
        agent.logs().contains("batch published")
    });
    agent.signal("TERM");
    agent.wait_for("the graceful shutdown", |agent| {
        agent.logs().contains("shutdown requested")
    });
    assert!(
        agent.process.is_running(),
        "still flushing after the first signal"
    );
    agent.signal("TERM");
    let status = agent.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", agent.logs());
    assert!(agent.logs().contains("second signal"), "{}", agent.logs());
}
