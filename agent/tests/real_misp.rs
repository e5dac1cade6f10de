//! One `run --once` pass of `threatintel/misp` through the real binary, with
//! the documents checked for the fields Kibana's indicator rules need and for
//! distinct ids. Against a real MISP when `MISP_URL` and `MISP_API_KEY` are
//! set (read-only: it only searches); otherwise against the MISP simulator
//! serving the 73 real fixture events, so the same assertions always run.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use serde_json::Value;
use threatbeat_test_support::misp::{MispSimulator, API_KEY};

struct Target {
    url: String,
    api_key: String,
    first_interval: String,
    verify_tls: bool,
    expected_attributes: Option<usize>,
}

async fn target() -> (Target, Option<MispSimulator>) {
    if let (Ok(url), Ok(api_key)) = (std::env::var("MISP_URL"), std::env::var("MISP_API_KEY")) {
        eprintln!("real_misp: polling the MISP at {url}");
        let target = Target {
            url: format!("{}/events/restSearch", url.trim_end_matches('/')),
            api_key,
            first_interval: std::env::var("MISP_FIRST_INTERVAL").unwrap_or_else(|_| "24h".to_owned()),
            verify_tls: std::env::var("MISP_SSL_VERIFICATION").as_deref() != Ok("none"),
            expected_attributes: None,
        };
        return (target, None);
    }
    eprintln!("real_misp: MISP_URL/MISP_API_KEY not set; running against the MISP simulator");
    let simulator = MispSimulator::start_with_fixtures().await;
    let target = Target {
        url: simulator.url("/events/restSearch"),
        api_key: API_KEY.to_owned(),
        // The fixture events date from 2014 on.
        first_interval: "120000h".to_owned(),
        verify_tls: true,
        expected_attributes: Some(simulator.attribute_count()),
    };
    (target, Some(simulator))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_of_the_misp_module_yields_ecs_indicators_with_distinct_ids() {
    let (target, _simulator) = target().await;
    let dir = tempfile::tempdir().unwrap();
    let ssl = if target.verify_tls {
        ""
    } else {
        "      var.ssl: {verification_mode: none}\n"
    };
    let main = format!(
        "path.data: {data}\noutput.file:\n  path: {out}\n  filename: misp\n  rotate_every_kb: 1048576\n\
         threatbeat.modules:\n  - module: threatintel\n    misp:\n      enabled: true\n\
         \x20     var.url: {url}\n      var.api_token: ${{MISP_TEST_KEY}}\n\
         \x20     var.first_interval: {first}\n      var.limit: 50\n{ssl}",
        data = dir.path().join("data").display(),
        out = dir.path().join("out").display(),
        url = target.url,
        first = target.first_interval,
    );
    fs::write(dir.path().join("threatbeat.yml"), main).unwrap();

    let api_key = target.api_key.clone();
    let config_dir = dir.path().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_threatbeat"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MISP_TEST_KEY", api_key)
            .current_dir(&config_dir)
            .args(["-c", "threatbeat.yml", "run", "--once", "-e"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "run --once failed:\n{log}");
    assert!(!log.contains(&target.api_key), "the API key reached the logs");

    let written = fs::read_to_string(dir.path().join("out/misp.ndjson")).unwrap_or_default();
    let documents: Vec<Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    if let Some(expected) = target.expected_attributes {
        assert_eq!(documents.len(), expected, "one document per attribute");
    }
    let mut ids = BTreeSet::new();
    for document in &documents {
        assert_eq!(document["event"]["kind"], "enrichment", "{document}");
        assert_eq!(document["event"]["category"], "threat", "{document}");
        assert_eq!(document["event"]["type"], "indicator", "{document}");
        assert_eq!(document["event"]["module"], "threatintel", "{document}");
        assert!(document["threat"]["indicator"]["type"].is_string(), "{document}");
        let id = document["@metadata"]["_id"]
            .as_str()
            .expect("every document has an _id");
        ids.insert(id.to_owned());
    }
    assert_eq!(ids.len(), documents.len(), "ids are distinct");
    eprintln!(
        "real_misp: {} documents, {} distinct ids",
        documents.len(),
        ids.len()
    );
}
