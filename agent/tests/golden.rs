//! Golden tests: Elastic's own input/expected pairs of Filebeat's
//! `threatintel` module (`test-support/data/filebeat-threatintel/<fileset>/`)
//! through the real binary, each fileset read by its own input, compared
//! field by field.
//!
//! Each `*.log` line is one API record after Filebeat's split; each
//! `*.log-expected.json` holds the documents Filebeat's harness read back
//! from Elasticsearch. The MISP records are put back together into the MISP
//! events they were split from and served by the MISP simulator to the
//! fileset's httpjson input; the other feeds' records are read by the
//! fileset's `file` input (`var.input: file`, NDJSON of the API's records).
//!
//! Run: `cargo test -p threatbeat --test golden -- --nocapture` (prints the
//! per-file summary: documents matched / fields compared / mismatches).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use threatbeat::modules::{builtin_definition, resolve};
use threatbeat_core::{BuildContext, Event, Origin};
use threatbeat_processors::Chain;
use threatbeat_test_support::agent::{read_ndjson, AgentHome};
use threatbeat_test_support::data::filebeat_threatintel;
use threatbeat_test_support::golden::{
    compare, compare_unordered, expected_documents, filebeat_ignored, harness_lines, history_documents,
    Report,
};
use threatbeat_test_support::misp::{MispSimulator, API_KEY};

/// The `.log` files of a fixture folder that have an expected file, sorted.
fn golden_logs(fileset: &str, extension: &str) -> Vec<PathBuf> {
    let directory = filebeat_threatintel(fileset);
    let mut logs: Vec<PathBuf> = fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(extension))
        .filter(|path| PathBuf::from(format!("{}-expected.json", path.display())).is_file())
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no golden pairs in {}", directory.display());
    logs
}

/// Runs `threatbeat run --once` in `home` and returns the file output's documents.
fn run_once(home: &AgentHome) -> Vec<Value> {
    let output = home.run_once();
    assert!(
        output.status.success(),
        "threatbeat run --once failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    read_ndjson(&home.path("out"))
}

/// The main file: the module entry `entry` (indented under `threatbeat.modules:`),
/// documents written to `out/`.
fn main_config(entry: &str) -> String {
    format!("path.data: data\nthreatbeat.modules:\n{entry}output.file:\n  path: out\n  filename: documents\n")
}

/// The documents `threatintel/<fileset>` produces from the records of the
/// golden `log` read by its `file` input: NDJSON records, or a CSV file
/// (header row first) for `*.csv.log` goldens, which the input decodes by the
/// `.csv` extension.
fn through_file_input(fileset: &str, log: &Path) -> Vec<Value> {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    let records = match log.to_string_lossy().ends_with(".csv.log") {
        true => "records.csv",
        false => "records.ndjson",
    };
    home.write(records, &(harness_lines(log).join("\n") + "\n"));
    let entry = format!(
        "  - module: threatintel\n    {fileset}:\n      var.input: file\n      var.paths: [{records}]\n"
    );
    home.write("threatbeat.yml", &main_config(&entry));
    run_once(&home)
}

/// Prints every report and fails with the diffs of those that differ.
fn assert_all_passed(reports: &[Report]) {
    for report in reports {
        println!("{}", report.summary());
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|report| !report.passed())
        .map(|report| format!("{}\n{}", report.summary(), report.diff()))
        .collect();
    assert!(failed.is_empty(), "golden mismatches:\n{}", failed.join("\n"));
}

/// Every golden pair of `fileset` through its `file` input. Returns the
/// documents matched.
fn file_input_goldens(fileset: &str) -> usize {
    let reports: Vec<Report> = golden_logs(fileset, ".log")
        .iter()
        .map(|log| {
            let documents = history_documents(through_file_input(fileset, log));
            // Data streams refuse documents without a time: the mapping's, or
            // the time the record was read (Filebeat's too).
            for document in &documents {
                let stamp = document["@timestamp"].as_str().unwrap_or_default();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
                    "{fileset}: no @timestamp in {document}"
                );
            }
            let name = log
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            compare_unordered(
                &name,
                &documents,
                &expected_documents(log),
                &filebeat_ignored(fileset),
            )
        })
        .collect();
    assert_all_passed(&reports);
    reports.iter().map(|report| report.documents_matched).sum()
}

/// The MISP events the records of a golden `.log` were split from: each
/// record is one event with `Attribute` (and `Object.Attribute`) reduced to
/// one element, or the cross product of both; the distinct elements are
/// gathered back into lists, in the order they first appear.
fn misp_events(lines: &[String]) -> Vec<Value> {
    struct Gathered {
        event: Map<String, Value>,
        attributes: Vec<Value>,
        objects: Vec<(Map<String, Value>, Vec<Value>)>,
    }
    fn uuid(value: &Value) -> Option<&str> {
        value.get("uuid").and_then(Value::as_str)
    }
    let mut events: Vec<Gathered> = Vec::new();
    for line in lines {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON: {error}"));
        let Some(Value::Object(mut event)) = record.get("Event").cloned() else {
            panic!("a MISP record without Event: {line}");
        };
        let attribute = event.remove("Attribute");
        let object = event.remove("Object");
        let position = match events
            .iter()
            .position(|gathered| gathered.event.get("uuid") == event.get("uuid"))
        {
            Some(position) => position,
            None => {
                events.push(Gathered {
                    event,
                    attributes: Vec::new(),
                    objects: Vec::new(),
                });
                events.len() - 1
            }
        };
        let gathered = &mut events[position];
        if let Some(attribute) = attribute.filter(Value::is_object) {
            if !gathered
                .attributes
                .iter()
                .any(|known| uuid(known) == uuid(&attribute))
            {
                gathered.attributes.push(attribute);
            }
        }
        if let Some(Value::Object(mut object)) = object {
            let member = object.remove("Attribute").filter(Value::is_object);
            let index = match gathered
                .objects
                .iter()
                .position(|(known, _)| known.get("uuid") == object.get("uuid"))
            {
                Some(index) => index,
                None => {
                    gathered.objects.push((object, Vec::new()));
                    gathered.objects.len() - 1
                }
            };
            let members = &mut gathered.objects[index].1;
            if let Some(member) = member {
                if !members.iter().any(|known| uuid(known) == uuid(&member)) {
                    members.push(member);
                }
            }
        }
    }
    events
        .into_iter()
        .map(|gathered| {
            let mut event = gathered.event;
            event.insert("Attribute".into(), Value::Array(gathered.attributes));
            let objects = gathered.objects.into_iter().map(|(mut object, members)| {
                object.insert("Attribute".into(), Value::Array(members));
                Value::Object(object)
            });
            event.insert("Object".into(), Value::Array(objects.collect()));
            json!({ "Event": event })
        })
        .collect()
}

/// The documents `threatintel/misp` produces when the MISP simulator serves
/// `events` to its httpjson input.
async fn through_misp_api(events: Vec<Value>) -> Vec<Value> {
    let misp = MispSimulator::start_verbatim(events).await;
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    let entry = format!(
        "  - module: threatintel\n    misp:\n      var.url: {url}\n      var.api_token: {API_KEY}\n      var.first_interval: 400000h\n      var.limit: 2\n",
        url = misp.url("/events/restSearch")
    );
    home.write("threatbeat.yml", &main_config(&entry));
    let documents = tokio::task::spawn_blocking(move || run_once(&home))
        .await
        .expect("the agent run finishes");
    history_documents(documents)
}

/// The three MISP golden files through the MISP simulator and the fileset's
/// httpjson input. `misp_sample_with_ext_attributes` holds Filebeat's cross
/// product of plain and object attributes; our split gives one document per
/// attribute instead (docs/inputs/httpjson.md, "Sibling splits"), so there
/// `misp.context.attribute.*` is not compared and the plain attributes of
/// events with objects are the only extra documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threatintel_misp_matches_elastic_goldens_through_its_api() {
    let mut reports = Vec::new();
    let mut matched = 0;
    for log in golden_logs("misp", ".log") {
        let name = log
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let events = misp_events(&harness_lines(&log));
        let documents = through_misp_api(events.clone()).await;
        let expected = expected_documents(&log);
        let cross_product = name.contains("ext_attributes");
        let mut ignored = filebeat_ignored("misp");
        if cross_product {
            ignored.push("misp.context.attribute.*");
        }
        let mut report = compare_unordered(&name, &documents, &expected, &ignored);
        if cross_product {
            // The extra documents are exactly the plain attributes of the
            // events that also hold objects: each an indicator of its own.
            let plain_beside_objects: BTreeSet<String> = events
                .iter()
                .filter(|event| {
                    event["Event"]["Object"]
                        .as_array()
                        .is_some_and(|objects| !objects.is_empty())
                })
                .flat_map(|event| {
                    event["Event"]["Attribute"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|attribute| attribute["uuid"].as_str().map(str::to_owned))
                .collect();
            let expected_uuids: BTreeSet<&str> = expected
                .iter()
                .filter_map(|document| document["misp.attribute.uuid"].as_str())
                .collect();
            let extra: BTreeSet<String> = documents
                .iter()
                .filter_map(|document| document["misp"]["attribute"]["uuid"].as_str())
                .filter(|uuid| !expected_uuids.contains(uuid))
                .map(str::to_owned)
                .collect();
            assert!(!plain_beside_objects.is_empty());
            assert_eq!(extra, plain_beside_objects, "{name}: the extra documents");
            assert_eq!(documents.len(), expected.len() + plain_beside_objects.len());
            report.actual_documents = expected.len();
        }
        matched += report.documents_matched;
        reports.push(report);
    }
    assert_all_passed(&reports);
    assert_eq!(
        reports.len(),
        3,
        "misp_sample, misp_sample_cidr, misp_sample_with_ext_attributes"
    );
    assert_eq!(matched, 15 + 1 + 26);
}

/// The MISP records read from an NDJSON file by the fileset's `file` input:
/// the restSearch-shaped split serves exported events, so the records are
/// written as one restSearch answer, as a MISP export holds them.
#[test]
fn threatintel_misp_file_input_matches_elastic_goldens() {
    let log = filebeat_threatintel("misp").join("misp_sample.ndjson.log");
    let events = misp_events(&harness_lines(&log));
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write("export.json", &json!({ "response": events }).to_string());
    let entry = "  - module: threatintel\n    misp:\n      var.input: file\n      var.paths: [export.json]\n";
    home.write("threatbeat.yml", &main_config(entry));
    let documents = history_documents(run_once(&home));
    let report = compare_unordered(
        "misp_sample.ndjson.log (file input)",
        &documents,
        &expected_documents(&log),
        &filebeat_ignored("misp"),
    );
    assert_all_passed(&[report]);
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

/// `log`'s records through `chain`, compared position by position.
fn chain_report(chain: &Chain, log: &Path) -> Report {
    let actual: Vec<Value> = harness_lines(log)
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|record| chain.run(Event::from_value(record)))
        .map(|event| Value::Object(event.fields))
        .collect();
    compare(
        "misp_sample.ndjson.log",
        &actual,
        &expected_documents(log),
        &filebeat_ignored("misp"),
    )
}

/// The harness must notice a difference: switching on our tag-append
/// improvement changes `tags` of the tagged events, and nothing else.
#[test]
fn appending_tags_is_a_visible_switchable_deviation() {
    let mut overrides = Map::new();
    overrides.insert("var.append_event_tags".into(), Value::Bool(true));
    let chain = fileset_chain("threatintel", "misp", &overrides);
    let report = chain_report(
        &chain,
        &filebeat_threatintel("misp").join("misp_sample.ndjson.log"),
    );
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
    let lines = harness_lines(&filebeat_threatintel("misp").join("misp_sample_cidr.ndjson.log"));
    let record: Value = serde_json::from_str(&lines[0]).unwrap();
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
        let lines = harness_lines(&filebeat_threatintel("misp").join(name));
        records.extend(
            lines
                .iter()
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

#[test]
fn abuseurl_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("abuseurl"), 100);
}

#[test]
fn abusemalware_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("abusemalware"), 25);
}

#[test]
fn malwarebazaar_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("malwarebazaar"), 11);
}

#[test]
fn otx_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("otx"), 83);
}

#[test]
fn anomali_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("anomali"), 100);
}

#[test]
fn anomalithreatstream_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("anomalithreatstream"), 100);
}

/// The 7.x search API's records (`rf_assorted.json.log`) and Filebeat 8's
/// CSV risk lists of the four entity types.
#[test]
fn recordedfuture_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("recordedfuture"), 40 + 4 * 9);
}

#[test]
fn threatq_matches_elastic_goldens() {
    assert_eq!(file_input_goldens("threatq"), 9);
}
