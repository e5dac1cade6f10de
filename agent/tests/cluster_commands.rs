//! `threatbeat setup` and `threatbeat test output`, run as the real binary
//! against the Elasticsearch simulator: setup installs the template and ILM
//! policy once and changes nothing the second time; `test output` prints the
//! version and write access, and fails on wrong credentials or read-only users.

use std::fs;
use std::process::{Command, Output};

use threatbeat_test_support::elasticsearch::{Credential, ElasticsearchSimulator};

fn config(url: &str, username: &str, password: &str) -> String {
    format!(
        "output.elasticsearch:\n  hosts: [\"{url}\"]\n  username: {username}\n  password: {password}\n\
         threatbeat.modules:\n  - module: threatintel\n    misp:\n      enabled: true\n      \
         var.url: http://127.0.0.1:9/events/restSearch\n"
    )
}

/// Runs the binary off the async runtime (the simulator must keep answering).
async fn threatbeat(main: String, args: &'static [&'static str]) -> (Output, String) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("threatbeat.yml"), main).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_threatbeat"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .arg("-c")
            .arg("threatbeat.yml")
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output, text)
    })
    .await
    .unwrap()
}

fn writer() -> Credential {
    Credential::Basic {
        username: "writer".into(),
        password: "writer-password-1".into(),
        can_write: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_twice_changes_nothing_the_second_time() {
    let cluster = ElasticsearchSimulator::start_with_credentials(vec![writer()]).await;
    let main = config(&cluster.url(), "writer", "writer-password-1");

    let (first, text) = threatbeat(main.clone(), &["setup"]).await;
    assert!(first.status.success(), "{text}");
    assert!(text.contains("installed"), "{text}");
    let template = cluster
        .index_template("threatbeat")
        .expect("the template is installed");
    let patterns = template["index_patterns"].to_string();
    assert!(
        patterns.contains("logs-ti_threatbeat.*-*"),
        "the modules' data streams are covered: {patterns}"
    );
    assert!(cluster.ilm_policy("threatbeat").is_some());
    let latest = cluster
        .index_template("threatbeat-latest")
        .expect("the current-state template is installed");
    assert_eq!(
        latest["index_patterns"],
        serde_json::json!(["logs-ti_threatbeat_latest.*"])
    );
    assert!(latest.get("data_stream").is_none(), "regular indices: {latest}");

    let (second, text) = threatbeat(main, &["setup", "--index-management"]).await;
    assert!(second.status.success(), "{text}");
    assert!(
        !text.contains(": installed"),
        "the second run changed something:\n{text}"
    );
    assert_eq!(cluster.request_count("PUT _index_template"), 2);
    assert_eq!(cluster.request_count("PUT _ilm/policy"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_output_reports_version_and_rejects_bad_credentials() {
    let reader = Credential::Basic {
        username: "reader".into(),
        password: "reader-password-1".into(),
        can_write: false,
    };
    let cluster = ElasticsearchSimulator::start_with_credentials(vec![writer(), reader]).await;

    let (ok, text) = threatbeat(
        config(&cluster.url(), "writer", "writer-password-1"),
        &["test", "output"],
    )
    .await;
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("version"), "{text}");
    assert!(text.contains(": yes"), "{text}");

    let (read_only, text) = threatbeat(
        config(&cluster.url(), "reader", "reader-password-1"),
        &["test", "output"],
    )
    .await;
    assert!(!read_only.status.success(), "a read-only user must fail:\n{text}");
    assert!(text.contains("NO"), "{text}");

    let (wrong, text) = threatbeat(
        config(&cluster.url(), "writer", "not-the-password"),
        &["test", "output"],
    )
    .await;
    assert!(!wrong.status.success(), "{text}");
    assert!(text.contains("rejected the credentials"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password must not be printed:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_needs_the_elasticsearch_output() {
    let main =
        "output.console: {}\nthreatbeat.modules:\n  - module: threatintel\n    misp:\n      enabled: true\n"
            .to_owned();
    let (output, text) = threatbeat(main, &["setup"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("enable `output.elasticsearch`"), "{text}");
}
