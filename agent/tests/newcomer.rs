//! What a new user hit trying the README against the simulators (the "Deploy
//! like Filebeat" issue), through the real binary: the shipped module file
//! against a plain-HTTP lab MISP, a scheme put into `MISP_HOST`, and a bad
//! `var.*` value reported where the user wrote it.

use std::process::{Command, Output};
use std::time::Duration;

use threatbeat_test_support::agent::{stderr_text, wait_until, AgentHome};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{generate_events, MispSimulator, API_KEY};

/// The shipped `modules.d/threatintel.yml.disabled`, as the README has users copy it.
const SHIPPED_THREATINTEL: &str = include_str!("../../modules.d/threatintel.yml.disabled");
/// The shipped `modules.d/misp.yml.disabled`.
const SHIPPED_MISP: &str = include_str!("../../modules.d/misp.yml.disabled");

const MAIN: &str = "path.data: data\noutput.file:\n  path: out\n  filename: documents\n";

/// A home holding `threatbeat.yml` and `modules.d/<name>` written as given.
fn home_with(module_file: &str, name: &str) -> AgentHome {
    let home = AgentHome::new(env!("CARGO_BIN_EXE_threatbeat").as_ref());
    home.write("threatbeat.yml", MAIN);
    home.write(&format!("modules.d/{name}"), module_file);
    home
}

/// `home`'s binary with `args` and exactly the MISP variables in `env`
/// (the caller's own `MISP_*` never leak in: `real_misp` uses them).
fn run(home: &AgentHome, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command: Command = home.command();
    for name in ["MISP_URL", "MISP_HOST", "MISP_API_KEY"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied()).args(args);
    command.output().expect("the binary runs")
}

#[test]
fn a_scheme_in_misp_host_is_refused_naming_the_file_and_key() {
    let home = home_with(SHIPPED_THREATINTEL, "threatintel.yml");
    let output = run(
        &home,
        &["test", "config"],
        &[
            ("MISP_HOST", "http://127.0.0.1:8080"),
            ("MISP_API_KEY", "lab-api-key-0123"),
        ],
    );
    let stderr = stderr_text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("modules.d/threatintel.yml"), "{stderr}");
    assert!(stderr.contains("key `0.misp.var.url`"), "{stderr}");
    assert!(
        stderr.contains("https://http://127.0.0.1:8080/events/restSearch"),
        "{stderr}"
    );
    assert!(stderr.contains("second scheme"), "{stderr}");

    // The older misp module's file: the same check, its own key.
    let home = home_with(SHIPPED_MISP, "misp.yml");
    let output = run(
        &home,
        &["test", "config"],
        &[("MISP_HOST", "http://lab"), ("MISP_API_KEY", "lab-api-key-0123")],
    );
    let stderr = stderr_text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("modules.d/misp.yml"), "{stderr}");
    assert!(stderr.contains("key `0.threat.var.url`"), "{stderr}");
}

#[test]
fn the_shipped_files_take_a_whole_url_and_still_read_misp_host() {
    for (file, name, path) in [
        (SHIPPED_THREATINTEL, "threatintel.yml", "/events/restSearch"),
        (SHIPPED_MISP, "misp.yml", "/attributes/restSearch"),
    ] {
        let home = home_with(file, name);
        for (env, url) in [
            (
                ("MISP_URL", "http://misp.lab:8080"),
                format!("http://misp.lab:8080{path}"),
            ),
            (
                ("MISP_HOST", "misp.example.org"),
                format!("https://misp.example.org{path}"),
            ),
        ] {
            let output = run(
                &home,
                &["export", "config"],
                &[env, ("MISP_API_KEY", "lab-api-key-0123")],
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{}", stderr_text(&output));
            assert!(stdout.contains(&url), "{name} with {env:?}: {stdout}");
            let output = run(
                &home,
                &["test", "config"],
                &[env, ("MISP_API_KEY", "lab-api-key-0123")],
            );
            assert!(
                output.status.success(),
                "{name} with {env:?}: {}",
                stderr_text(&output)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_file_polls_a_plain_http_misp_given_misp_url() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let misp = MispSimulator::start(generate_events(3, 2, now - 3600)).await;
    let home = home_with(SHIPPED_THREATINTEL, "threatintel.yml");
    let base = misp.url("");
    let output = tokio::task::block_in_place(|| {
        run(
            &home,
            &["run", "--once"],
            &[("MISP_URL", base.as_str()), ("MISP_API_KEY", API_KEY)],
        )
    });
    assert!(output.status.success(), "{}", stderr_text(&output));
    let history: Vec<_> = home
        .documents()
        .into_iter()
        .filter(|document| document["@metadata"]["index"] == "logs-ti_threatbeat.misp-default")
        .collect();
    assert_eq!(history.len(), 6, "3 events of 2 attributes each");
    assert!(misp
        .requests()
        .iter()
        .all(|request| request.path == "/events/restSearch"));
}

#[test]
fn a_bad_interval_names_the_users_file_and_var_key() {
    let home = home_with(
        "- module: threatintel\n  misp:\n    var.url: http://127.0.0.1:9/events/restSearch\n    var.api_token: k\n    var.interval: 5 minutes\n",
        "threatintel.yml",
    );
    let output = run(&home, &["test", "config"], &[]);
    let stderr = stderr_text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("modules.d/threatintel.yml"), "{stderr}");
    assert!(stderr.contains("key `0.misp.var.interval`"), "{stderr}");
    assert!(stderr.contains("5 minutes"), "{stderr}");
    assert!(!stderr.contains("key `input.httpjson.interval`"), "{stderr}");

    // The first window, used inside a runtime template of the first request.
    let home = home_with(
        "- module: threatintel\n  misp:\n    var.url: http://127.0.0.1:9/events/restSearch\n    var.api_token: k\n    var.first_interval: 1 year\n",
        "threatintel.yml",
    );
    let output = run(&home, &["test", "config"], &[]);
    let stderr = stderr_text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("key `0.misp.var.first_interval`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_server_says_so() {
    let misp = MispSimulator::start(Vec::new()).await;
    let home = home_with(SHIPPED_THREATINTEL, "threatintel.yml");
    let wrong = format!("https://{}", misp.address());
    let output = tokio::task::block_in_place(|| {
        run(
            &home,
            &["run", "--once"],
            &[("MISP_URL", wrong.as_str()), ("MISP_API_KEY", API_KEY)],
        )
    });
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains("the server answered plain HTTP; use http:// or check the port"),
        "{stderr}"
    );
    assert!(home.documents().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_poll_is_retried_long_before_the_interval() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let misp = MispSimulator::start(generate_events(2, 2, now - 3600)).await;
    // A key MISP does not know yet (403, not retried within the poll): the
    // first poll fails; the key is then added, as an admin would.
    let key = "NewcomerKey0123456789abcdefABCDEF0123456";
    let mut home = home_with(
        &format!(
            "- module: threatintel\n  misp:\n    var.url: {}\n    var.api_token: {key}\n    var.interval: 60m\n",
            misp.url("/events/restSearch")
        ),
        "threatintel.yml",
    );
    let mut agent = home.spawn();
    let failed = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || agent.log().contains("poll failed"))
    });
    assert!(failed, "{}", agent.log_tail());
    misp.add_api_key(key);
    let delivered =
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(40), || home.documents().len() >= 4));
    let log = agent.log();
    assert!(delivered, "not retried before the 60m interval:\n{log}");
    assert!(log.contains("next_poll_in=10s"), "{log}");
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_cursor_is_announced_and_registry_reset_removes_it() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let misp = MispSimulator::start(generate_events(2, 2, now - 3600)).await;
    let mut home = home_with(
        &format!(
            "- module: threatintel\n  misp:\n    var.url: {}\n    var.api_token: {API_KEY}\n",
            misp.url("/events/restSearch")
        ),
        "threatintel.yml",
    );
    let hint = "`threatbeat registry reset threatintel/misp`";
    let first = tokio::task::block_in_place(|| run(&home, &["run", "--once"], &[]));
    assert!(first.status.success(), "{}", stderr_text(&first));
    assert!(!stderr_text(&first).contains(hint), "no cursor yet");
    assert!(home.cursor("threatintel/misp").is_some());
    let second = tokio::task::block_in_place(|| run(&home, &["run", "--once"], &[]));
    let stderr = stderr_text(&second);
    assert!(
        stderr.contains(hint) && stderr.contains("var.first_interval"),
        "{stderr}"
    );

    // Refused while an agent holds the data folder; the cursor stays.
    let mut agent = home.spawn();
    let started = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || {
            agent.log().contains("pipeline started")
        })
    });
    assert!(started, "{}", agent.log_tail());
    let refused = run(&home, &["registry", "reset", "threatintel/misp"], &[]);
    assert!(!refused.status.success());
    assert!(
        stderr_text(&refused).contains("already locked"),
        "{}",
        stderr_text(&refused)
    );
    assert!(home.cursor("threatintel/misp").is_some());
    agent.terminate();

    let reset = run(&home, &["registry", "reset", "threatintel/misp"], &[]);
    assert!(reset.status.success(), "{}", stderr_text(&reset));
    assert!(String::from_utf8_lossy(&reset.stdout).contains("Removed the cursor of threatintel/misp"));
    assert_eq!(home.cursor("threatintel/misp"), None);
    let again = run(&home, &["registry", "reset", "threatintel/misp"], &[]);
    assert!(!again.status.success());
    assert!(
        stderr_text(&again).contains("no stored cursor for threatintel/misp"),
        "{}",
        stderr_text(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elasticsearch_outage_is_logged_once_and_its_end_with_the_backlog() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let misp = MispSimulator::start(generate_events(3, 2, now - 3600)).await;
    let cluster = ElasticsearchSimulator::start().await;
    cluster.set_unavailable(true);
    let mut home = home_with(
        &format!(
            "- module: threatintel\n  misp:\n    var.url: {}\n    var.api_token: {API_KEY}\n",
            misp.url("/events/restSearch")
        ),
        "threatintel.yml",
    );
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data\noutput.elasticsearch:\n  hosts: [\"{}\"]\n  backoff.init: 100ms\n  backoff.max: 300ms\n",
            cluster.url()
        ),
    );
    let mut agent = home.spawn();
    let retried = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || cluster.bulk_request_count() >= 4)
    });
    assert!(retried, "{}", agent.log_tail());
    cluster.set_unavailable(false);
    let delivered = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || {
            agent.log().contains("Elasticsearch accepts events again")
        })
    });
    let log = agent.log();
    agent.terminate();
    assert!(delivered, "{log}");
    assert_eq!(log.matches("Elasticsearch is unavailable").count(), 1, "{log}");
    let recovery = log
        .lines()
        .find(|line| line.contains("Elasticsearch accepts events again"))
        .unwrap_or_default();
    assert!(
        recovery.contains("INFO") && recovery.contains("down_for="),
        "{recovery}"
    );
    assert!(recovery.contains("backlog="), "{recovery}");
    let backlog: u64 = recovery
        .split("backlog=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0);
    assert!(
        backlog >= 6,
        "the queued events, the delivered batch included: {recovery}"
    );
}

#[test]
fn commands_without_the_output_do_not_need_its_secret() {
    let home = home_with(SHIPPED_THREATINTEL, "threatintel.yml.disabled");
    home.write(
        "threatbeat.yml",
        "output.elasticsearch:\n  hosts: [\"https://127.0.0.1:9\"]\n  api_key: ${ES_API_KEY}\n",
    );
    let listed = run(&home, &["modules", "list"], &[]);
    assert!(listed.status.success(), "{}", stderr_text(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("threatintel"));
    let enabled = run(&home, &["modules", "enable", "threatintel"], &[]);
    assert!(enabled.status.success(), "{}", stderr_text(&enabled));
    // A command that uses the output still needs it, and says where it looked.
    let checked = run(
        &home,
        &["test", "config"],
        &[("MISP_API_KEY", "lab-api-key-0123")],
    );
    let stderr = stderr_text(&checked);
    assert!(!checked.status.success());
    assert!(stderr.contains("`ES_API_KEY` is not set"), "{stderr}");
    let keystore = home.path("data/threatbeat.keystore");
    assert!(
        stderr.contains(&format!("neither in the keystore {}", keystore.display())),
        "{stderr}"
    );
}

#[test]
fn path_data_moves_the_keystore_and_errors_say_where() {
    let home = home_with(
        "- module: threatintel\n  misp:\n    var.url: http://127.0.0.1:9/events/restSearch\n    var.api_token: ${MISP_API_KEY}\n",
        "threatintel.yml",
    );
    let elsewhere = home.path("elsewhere");
    let elsewhere = elsewhere.to_str().unwrap();
    let created = run(&home, &["--path.data", elsewhere, "keystore", "create"], &[]);
    assert!(created.status.success(), "{}", stderr_text(&created));
    let keystore = format!("{elsewhere}/threatbeat.keystore");
    assert!(String::from_utf8_lossy(&created.stdout).contains(&keystore));
    let removed = run(
        &home,
        &["--path.data", elsewhere, "keystore", "remove", "NOPE"],
        &[],
    );
    assert!(!removed.status.success());
    assert!(
        stderr_text(&removed).contains(&format!("key `NOPE` is not in the keystore {keystore}")),
        "{}",
        stderr_text(&removed)
    );
    let checked = run(&home, &["--path.data", elsewhere, "test", "config"], &[]);
    assert!(
        stderr_text(&checked).contains(&format!("neither in the keystore {keystore} nor")),
        "{}",
        stderr_text(&checked)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_modules_tells_a_wrong_key_from_a_good_one() {
    let misp = MispSimulator::start(Vec::new()).await;
    let module = |key: &str| {
        format!(
            "- module: threatintel\n  misp:\n    var.url: {}\n    var.api_token: {key}\n  abuseurl:\n    var.input: file\n    var.paths: [feeds]\n",
            misp.url("/events/restSearch")
        )
    };
    let home = home_with(
        &module("WrongKey0123456789abcdefABCDEF0123456789"),
        "threatintel.yml",
    );
    let wrong = tokio::task::block_in_place(|| run(&home, &["test", "modules"], &[]));
    let stdout = String::from_utf8_lossy(&wrong.stdout).into_owned();
    assert!(!wrong.status.success(), "{stdout}");
    assert!(stdout.contains("threatintel/misp\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("request: POST {}", misp.url("/events/restSearch"))),
        "{stdout}"
    );
    assert!(stdout.contains("reachable... OK"), "{stdout}");
    assert!(stdout.contains("HTTP status... 403 Forbidden"), "{stdout}");
    assert!(stdout.contains("auth... REJECTED"), "{stdout}");
    assert!(stdout.contains("result... FAILED"), "{stdout}");
    assert!(
        !stdout.contains("WrongKey0123"),
        "the key is never printed: {stdout}"
    );
    let searches = misp.requests().len();
    assert_eq!(searches, 1, "one request, no retries");

    home.write("modules.d/threatintel.yml", &module(API_KEY));
    let good = tokio::task::block_in_place(|| run(&home, &["test", "modules"], &[]));
    let stdout = String::from_utf8_lossy(&good.stdout).into_owned();
    assert!(good.status.success(), "{stdout}{}", stderr_text(&good));
    assert!(
        stdout.contains("HTTP status... 200 OK") && stdout.contains("auth... OK"),
        "{stdout}"
    );
    assert!(stdout.contains("threatintel/abuseurl\n  skipped"), "{stdout}");
    assert_eq!(home.cursor("threatintel/misp"), None, "nothing stored");
    // The first poll's body: the look-back window, as the first poll sends it.
    let request = misp.requests().pop().expect("the second probe");
    assert!(request.body["timestamp"].is_i64(), "{}", request.body);

    drop(misp);
    let down = tokio::task::block_in_place(|| run(&home, &["test", "modules"], &[]));
    let stdout = String::from_utf8_lossy(&down.stdout).into_owned();
    assert!(!down.status.success());
    assert!(stdout.contains("reachable... ERROR"), "{stdout}");
}
