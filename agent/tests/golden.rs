//! Golden tests: Elastic's own sample input/expected pairs
//! (`shared/fixtures/filebeat-threatintel/<feed>/`) replayed through the
//! resolved fileset's processors, compared field by field.
//!
//! Each `*.log` line is one API record after Filebeat's split; each
//! `*.log-expected.json` holds the documents Filebeat's harness read back
//! from Elasticsearch. Later feeds reuse [`run_golden_folder`] by naming a
//! fixture folder and a fileset.
//!
//! Run: `cargo test -p threatbeat --test golden -- --nocapture` (prints the
//! per-file summary: documents matched / fields compared / mismatches).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use threatbeat::modules::{builtin_definition, resolve};
use threatbeat_core::{BuildContext, Event, Origin};
use threatbeat_processors::Chain;
use threatbeat_test_support::golden::{compare, Report};

/// Fields the golden files hold that only Filebeat's harness, its `log`
/// input or Elasticsearch's ingest node produce, plus what the harness
/// itself strips (reference §1.1). Nothing else is ignored.
const IGNORED: &[&str] = &[
    // Added by Filebeat's `log` input and module framework in the test run.
    "input.type",
    "log.offset",
    "log.file.path",
    "fileset.name",
    "service.type",
    // `add_locale` on the test machine (`-02:00`): host-dependent.
    "event.timezone",
    // Ingest time: never reproducible.
    "event.ingested",
    "event.created",
    // Removed by the Filebeat harness before writing the golden files.
    "ecs.version",
    "agent.*",
    "host.name",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/filebeat-threatintel")
}

/// Builds the chain of `module/fileset` with `overrides` as the user's vars.
fn fileset_chain(module: &str, fileset: &str, overrides: &Map<String, Value>) -> Chain {
    let definition = builtin_definition(module, fileset)
        .unwrap_or_else(|| panic!("no built-in definition {module}/{fileset}"));
    let origin = Origin::named("agent/tests/golden.rs").child(format!("{module}.{fileset}"));
    let resolved = resolve(&definition, overrides, &origin).unwrap_or_else(|error| panic!("{error}"));
    Chain::build(
        &resolved.processors,
        &resolved.processors_origin,
        &BuildContext::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Replays one `.log` file through `chain` and compares with its expected
/// file, ignoring [`IGNORED`] plus `extra_ignored`.
fn run_golden_file(chain: &Chain, log: &Path, extra_ignored: &[&str]) -> Report {
    let text = fs::read_to_string(log).unwrap();
    let expected_path = PathBuf::from(format!("{}-expected.json", log.display()));
    let expected: Vec<Value> = serde_json::from_str(&fs::read_to_string(&expected_path).unwrap()).unwrap();
    // Filebeat's `log` input does not read a last line without a newline.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut actual = Vec::new();
    for (number, line) in complete
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("{}:{}: not JSON: {error}", log.display(), number + 1));
        if let Some(event) = chain.run(Event::from_value(record)) {
            actual.push(Value::Object(event.fields));
        }
    }
    // The harness reads back at most 100 documents.
    actual.truncate(100);
    let name = log.file_name().unwrap().to_string_lossy().into_owned();
    let ignored: Vec<&str> = IGNORED.iter().chain(extra_ignored).copied().collect();
    compare(&name, &actual, &expected, &ignored)
}

/// Runs every `*.log` with an expected file in `folder` and fails with a
/// readable diff if any differs. Returns the reports.
///
/// `extra_ignored` is for harness quirks of one feed only: Filebeat's harness
/// deletes `@timestamp` for otx, abuseurl, abusemalware, anomali,
/// anomalithreatstream, malwarebazaar and recordedfuture (reference §1.1),
/// so those feeds pass `&["@timestamp"]`; MISP passes nothing.
fn run_golden_folder(
    folder: &str,
    module: &str,
    fileset: &str,
    overrides: &Map<String, Value>,
    extra_ignored: &[&str],
) -> Vec<Report> {
    let chain = fileset_chain(module, fileset, overrides);
    let directory = fixtures().join(folder);
    let mut logs: Vec<PathBuf> = fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .filter(|path| PathBuf::from(format!("{}-expected.json", path.display())).is_file())
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no golden pairs in {}", directory.display());
    let reports: Vec<Report> = logs
        .iter()
        .map(|log| run_golden_file(&chain, log, extra_ignored))
        .collect();
    for report in &reports {
        println!("{}", report.summary());
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|report| !report.passed())
        .map(|report| format!("{}\n{}", report.summary(), report.diff()))
        .collect();
    assert!(failed.is_empty(), "golden mismatches:\n{}", failed.join("\n"));
    reports
}

#[test]
fn threatintel_misp_matches_elastic_goldens() {
    let reports = run_golden_folder("misp", "threatintel", "misp", &Map::new(), &[]);
    let documents: usize = reports.iter().map(|report| report.documents_matched).sum();
    assert_eq!(
        reports.len(),
        3,
        "misp_sample, misp_sample_cidr, misp_sample_with_ext_attributes"
    );
    assert_eq!(documents, 15 + 1 + 26);
}

/// The harness must notice a difference: switching on our tag-append
/// improvement changes `tags` of the tagged events, and nothing else.
#[test]
fn appending_tags_is_a_visible_switchable_deviation() {
    let mut overrides = Map::new();
    overrides.insert("var.append_event_tags".into(), Value::Bool(true));
    let chain = fileset_chain("threatintel", "misp", &overrides);
    let report = run_golden_file(&chain, &fixtures().join("misp/misp_sample.ndjson.log"), &[]);
    assert!(!report.passed());
    assert_eq!(report.mismatches.len(), 15, "{}", report.diff());
    for mismatch in &report.mismatches {
        assert_eq!(mismatch.field, "tags");
        let ours = mismatch.actual.as_ref().and_then(Value::as_array).unwrap();
        assert!(ours.contains(&Value::from("forwarded")) && ours.contains(&Value::from("threatintel-misp")));
    }
}

/// The optional link back to MISP, off by default (the goldens have none).
#[test]
fn event_reference_links_to_the_misp_event_when_configured() {
    let mut overrides = Map::new();
    overrides.insert(
        "var.event_reference_base_url".into(),
        Value::from("https://misp.example/"),
    );
    let chain = fileset_chain("threatintel", "misp", &overrides);
    let line = fs::read_to_string(fixtures().join("misp/misp_sample_cidr.ndjson.log")).unwrap();
    let record: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let event = chain.run(Event::from_value(record)).unwrap();
    let id = event.fields["misp"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        event.fields["event"]["reference"],
        Value::from(format!("https://misp.example/events/view/{id}"))
    );
}

/// Throughput of the `threatintel/misp` chain on the golden records (real
/// MISP events, galaxies included). A measurement, not an assertion: run
/// `cargo test --release -p threatbeat --test golden -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run explicitly in release mode"]
fn benchmark_misp_chain_throughput() {
    let chain = fileset_chain("threatintel", "misp", &Map::new());
    let mut records = Vec::new();
    for name in [
        "misp_sample.ndjson.log",
        "misp_sample_with_ext_attributes.ndjson.log",
    ] {
        let text = fs::read_to_string(fixtures().join("misp").join(name)).unwrap();
        records.extend(
            text.lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap()),
        );
    }
    let rounds = 500;
    let mut batch: Vec<Event> = Vec::with_capacity(records.len() * rounds);
    for _ in 0..rounds {
        batch.extend(records.iter().cloned().map(Event::from_value));
    }
    let total = batch.len();
    let started = std::time::Instant::now();
    chain.run_batch(&mut batch);
    let elapsed = started.elapsed();
    assert_eq!(batch.len(), total);
    println!(
        "threatintel/misp chain: {total} documents in {:.3}s = {:.0} docs/s on one core ({} processors)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        chain.len()
    );
}
