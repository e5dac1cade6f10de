//! The README's first command, on the bundled real MISP feed: one pass of
//! threatintel/misp with the `file` input into `output.file`, redirected to a
//! temporary folder so the test leaves the checkout clean.

use std::fs;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_readme_demo_writes_real_indicators_with_stable_distinct_ids() {
    let out = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.yml");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_threatbeat"))
            .args(["run", "--once", "-c", demo, "-e"])
            .arg("-E")
            .arg(format!("path.data={}", out.path().join("state").display()))
            .arg("-E")
            .arg(format!("output.file.path={}", out.path().display()))
            .output()
            .unwrap()
    };
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("threatintel/misp: "), "{stdout}");
    assert!(stdout.contains("indicators: "), "{stdout}");

    let written = out.path().join("threatintel-misp.ndjson");
    let documents: Vec<Value> = fs::read_to_string(&written)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(documents.len() >= 40, "{} documents", documents.len());
    let indicator = |document: &Value, pointer: &str| {
        document
            .pointer(&format!("/threat/indicator/{pointer}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // Elastic's MISP mapping puts domains in threat.indicator.url.domain.
    let domains: Vec<String> = documents
        .iter()
        .filter_map(|document| indicator(document, "url/domain"))
        .collect();
    let ips: Vec<String> = documents
        .iter()
        .filter_map(|document| indicator(document, "ip"))
        .collect();
    assert!(
        domains.iter().any(|domain| domain == "javacdnupdate.com"),
        "{domains:?}"
    );
    assert!(ips.iter().any(|ip| ip == "94.75.207.3"), "{ips:?}");
    for document in &documents {
        assert_eq!(
            document["@metadata"]["index"], "logs-ti_threatbeat.misp-default",
            "{document}"
        );
        assert!(document["@metadata"]["_id"].is_string(), "{document}");
    }
    // Every document has a distinct, stable id.
    let mut ids: Vec<&str> = documents
        .iter()
        .map(|d| d["@metadata"]["_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), documents.len());
}

/// Guarantee 1 through the real binary: with the output failing, the batch is
/// durable in the disk queue, so the cursor moves; the next start delivers the
/// queued events even though the input has nothing new.
#[test]
fn events_queued_while_the_output_fails_are_delivered_by_the_next_run() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out");
    fs::write(&target, b"a file where the output folder should be").unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.yml");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_threatbeat"))
            .args(["run", "--once", "-c", demo, "-e"])
            .arg("-E")
            .arg(format!("path.data={}", out.path().join("state").display()))
            .arg("-E")
            .arg(format!("output.file.path={}", target.display()))
            .args(["-E", "queue.disk.shutdown_timeout=2s"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let cursor = out.path().join("state/registry/threatintel_misp.json");
    assert!(
        cursor.is_file(),
        "the cursor moved once the events were in the queue"
    );

    fs::remove_file(&target).unwrap();
    let second = run();
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stdout.contains("threatintel/misp: 0 events"),
        "nothing new was read: {stdout}"
    );
    let written = fs::read_to_string(target.join("threatintel-misp.ndjson")).unwrap();
    assert_eq!(
        written.lines().count(),
        55,
        "every queued event was delivered once"
    );
}
