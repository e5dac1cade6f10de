//! Hostile servers, broken records and misbehaving peers, caused for real
//! against the binary: each test reproduces one input that used to lose data,
//! stall a feed or leak a secret, and asserts on what the index (or the
//! output, or the log) holds.

// The end-to-end helpers are shared with end_to_end.rs; this file uses a part.
#[allow(dead_code)]
mod e2e;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use e2e::{assert_exactly_once, expected_records, misp_events, wait_for, Workspace, PATIENCE};
use serde_json::json;
use threatbeat_test_support::agent::{stderr_text, AgentHome};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::MispSimulator;

/// A `_bulk` answered `200 {}` or `{"errors": false, "items": []}` stored
/// nothing: the events stay queued and are sent again, never counted as
/// acknowledged, and arrive once the cluster answers for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_answer_without_its_items_acknowledges_nothing() {
    let misp = MispSimulator::start(misp_events(6, 5)).await;
    let expected = expected_records(&misp);
    for hollow in [json!({}), json!({"errors": false, "items": []})] {
        let cluster = ElasticsearchSimulator::start().await;
        cluster.set_hollow_bulk_answer(Some(hollow.clone()));
        let mut workspace = Workspace::new(&misp, &cluster.url());
        let mut agent = workspace.spawn(false);
        assert!(
            wait_for(PATIENCE, || cluster.bulk_request_count() >= 3).await,
            "the agent never retried: {}",
            agent.log_tail()
        );
        assert_eq!(cluster.document_count("logs-ti_threatbeat.misp-default"), 0);
        let log = agent.log();
        assert!(
            log.contains("not a bulk response") || log.contains("items for"),
            "{hollow}: {log}"
        );

        cluster.set_hollow_bulk_answer(None);
        assert!(
            wait_for(PATIENCE, || cluster
                .document_count("logs-ti_threatbeat.misp-default")
                >= expected.len())
            .await,
            "{hollow}: the queued events never arrived: {}",
            agent.log_tail()
        );
        agent.terminate();
        assert_exactly_once(&cluster, &expected);
    }
}

/// A home with a blocklist read from a file into the file output, with a
/// disk queue under `path.data`.
fn list_home() -> AgentHome {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write("lists/list.txt", "192.0.2.1\n192.0.2.2\n");
    home.write(
        "threatbeat.yml",
        "path.data: data
path.logs: logs
queue.disk: {}
threatbeat.modules:
  - module: threatintel
    blocklist:
      var.input: file
      var.paths: [lists/list.txt]
output.file: {path: out, filename: docs}
",
    );
    home
}

/// Every file the agent wrote is its user's only (0600), every folder too
/// (0700): queue segments hold TLP:RED indicators, the keystore secrets.
#[test]
fn what_the_agent_writes_is_for_its_user_only() {
    let home = list_home();
    // Without -e: the log file is written too.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_threatbeat"))
        .current_dir(home.root())
        .args(["-c", "threatbeat.yml", "run", "--once"])
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{}", stderr_text(&output));
    let mut checked = 0;
    for top in ["data", "logs", "out"] {
        let mut pending = vec![home.path(top)];
        while let Some(path) = pending.pop() {
            let metadata = std::fs::metadata(&path).expect("metadata");
            let mode = metadata.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
            checked += 1;
            if metadata.is_dir() {
                pending.extend(
                    std::fs::read_dir(&path)
                        .expect("a folder")
                        .map(|entry| entry.expect("an entry").path()),
                );
            }
        }
    }
    assert!(checked >= 8, "only {checked} paths checked");
    assert!(
        home.path("logs").read_dir().expect("logs").next().is_some(),
        "no log file"
    );
}

/// Two agents started at the same moment on one `path.data`: every time,
/// one runs and the other exits at once naming the folder.
#[test]
fn two_agents_on_one_data_folder_never_both_run() {
    let mut home = list_home();
    for trial in 0..10 {
        let mut first = home.spawn();
        let mut second = home.spawn();
        let deadline = std::time::Instant::now() + PATIENCE;
        let (mut refused, mut running) = loop {
            match (first.is_running(), second.is_running()) {
                (true, false) => break (second, first),
                (false, true) => break (first, second),
                (false, false) => panic!("trial {trial}: both exited:\n{}\n{}", first.log(), second.log()),
                (true, true) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "trial {trial}: both run:\n{}\n{}",
                        first.log(),
                        second.log()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let log = refused.log();
        assert!(
            log.contains("already locked") && log.contains(&home.path("data").display().to_string()),
            "trial {trial}: {log}"
        );
        assert!(!refused.wait_exit().success());
        // The survivor keeps running and stops cleanly; its lock goes with it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(running.is_running(), "trial {trial}: {}", running.log());
        assert!(running.terminate().success(), "{}", running.log());
    }
}

/// An OAuth2 token whose `expires_in` is absurd (2^63 − 1 seconds) or a
/// string (Azure AD v1's `"3599"`) authenticates and the poll publishes:
/// it used to panic (`overflow when adding duration to instant`) or never
/// authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_oauth2_token_lifetimes_still_authenticate() {
    use threatbeat_test_support::threatq::{ThreatqSimulator, CLIENT_ID, CLIENT_SECRET, COLLECTION};
    for lifetime in [json!(9_223_372_036_854_775_807_u64), json!("3599")] {
        let tq = ThreatqSimulator::start().await;
        tq.set_token_lifetime(lifetime.clone());
        tq.add_indicators(vec![json!({
            "id": 1, "value": "192.0.2.10", "class": "network", "score": 45,
            "type": {"id": 15, "name": "IP Address", "class": "network"},
            "status": {"id": 1, "name": "Active", "description": "Poses a threat."},
            "created_at": "2024-01-02 03:04:05", "updated_at": "2024-01-02 03:04:05",
        })]);
        let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
        home.write(
            "threatbeat.yml",
            &format!(
                "path.data: data
threatbeat.modules:
  - module: threatintel
    threatq:
      var.host: {host}
      var.token_url: {token_url}
      var.client_id: {CLIENT_ID}
      var.client_secret: {CLIENT_SECRET}
      var.data_collection_id: {COLLECTION}
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
output.file: {{path: out, filename: docs}}
",
                host = tq.url("/"),
                token_url = tq.url("/api/token"),
            ),
        );
        let output = home.run_once_async().await;
        let log = stderr_text(&output);
        assert!(output.status.success(), "{lifetime}: {log}");
        assert!(!log.contains("panicked"), "{lifetime}: {log}");
        assert!(
            home.documents()
                .iter()
                .any(|document| document["threat"]["indicator"]["ip"] == "192.0.2.10"),
            "{lifetime}: {log}"
        );
    }
}

/// `var.first_interval: 10000000000000000000s` is refused with the limit in
/// the message, and no request asks for a wrapped-around time (it used to
/// ask `timestamp: 8446744075505932552`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_first_interval_is_refused_not_wrapped_around() {
    let misp = MispSimulator::start(misp_events(2, 2)).await;
    let home = misp_home(
        &misp.url("/events/restSearch"),
        "      var.first_interval: 10000000000000000000s",
    );
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("100 years"), "{log}");
    // `test config` says so too: the first request is built as a dry run.
    let checked = home
        .command()
        .args(["test", "config"])
        .output()
        .expect("the binary runs");
    let checked_log = stderr_text(&checked);
    assert!(!checked.status.success(), "{checked_log}");
    assert!(
        checked_log.contains("100 years") && checked_log.contains("request.transforms"),
        "{checked_log}"
    );
    let now = chrono::Utc::now().timestamp();
    for request in misp.requests() {
        let asked = request.body["timestamp"].as_i64().unwrap_or(0);
        assert!(asked <= now, "asked for timestamp {asked}: {log}");
    }
}

/// A MISP home polling `url` once, failing fast.
fn misp_home(url: &str, extra: &str) -> AgentHome {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
threatbeat.modules:
  - module: threatintel
    misp:
      var.url: {url}
      var.api_token: {key}
      input.request.retry: {{max_attempts: 3, wait_min: 10ms, wait_max: 10ms}}
{extra}
output.file: {{path: out, filename: docs}}
",
            key = threatbeat_test_support::misp::API_KEY,
        ),
    );
    home
}

/// The peak resident memory of the largest child this test process has
/// reaped, in bytes.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

/// A 0.5 MB gzip answer that inflates to 256 MiB: read up to the limit and
/// no further, refused with the limit, the module and the URL in the log,
/// not retried (each retry inflated it again), nothing published, no cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_bomb_stops_at_the_body_limit() {
    use threatbeat_test_support::hostile::{gzip_bomb, Canned, HostileServer};
    let server = HostileServer::start().await;
    let bomb = tokio::task::spawn_blocking(|| gzip_bomb(256 << 20))
        .await
        .expect("the bomb");
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    server.answer("/events/restSearch", Canned::gzip(bomb));
    // A MISP page is split while it arrives: its limit is the streamed one.
    let home = misp_home(
        &server.url("/events/restSearch"),
        "      input.response.max_streamed_body_bytes: 16777216",
    );
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("response.max_streamed_body_bytes"), "{log}");
    assert!(
        log.contains("threatintel/misp") && log.contains("/events/restSearch"),
        "{log}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "a refused bomb is not fetched again: {log}"
    );
    assert!(home.documents().is_empty());
    assert!(home.cursor("threatintel/misp").is_none());
    assert!(
        children_peak_rss() < 200 << 20,
        "peak RSS {} MiB",
        children_peak_rss() >> 20
    );
}

/// One MISP event of 40 000 attributes (about 15 MB of JSON, `Tag` after
/// the attributes) through the real binary with `response.max_body_bytes`
/// at 1 MiB: the page is split while it arrives, so the whole-body limit
/// does not apply; every attribute becomes one document carrying the
/// event's TLP, and the cursor is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_larger_than_the_body_limit_is_split_while_it_arrives() {
    use threatbeat_test_support::misp::large::{attribute_uuid, LargeEventServer};
    const ATTRIBUTES: usize = 40_000;
    let misp = LargeEventServer::serve(ATTRIBUTES).await;
    let home = misp_home(
        &misp.url("/events/restSearch"),
        "      var.current_state: false\n      input.response.max_body_bytes: 1048576",
    );
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    let page_bytes = misp.state().page_bytes;
    assert!(
        page_bytes > 8 << 20,
        "the page is larger than what is read whole: {page_bytes}"
    );
    let documents = home.documents();
    assert_eq!(documents.len(), ATTRIBUTES, "{log}");
    // The file output rotates: its files are read newest first, so the
    // order is checked by inputs/tests/memory_bound.rs, the set here.
    let mut uuids: Vec<&str> = documents
        .iter()
        .map(|document| document["misp"]["attribute"]["uuid"].as_str().unwrap_or_default())
        .collect();
    uuids.sort_unstable();
    let expected: Vec<String> = (0..ATTRIBUTES).map(attribute_uuid).collect();
    assert!(uuids.iter().eq(expected.iter()), "every attribute once");
    assert!(
        documents
            .iter()
            .all(|document| document["threat"]["indicator"]["marking"]["tlp"] == json!(["green"])),
        "the event's tags, written after its attributes, reach every document"
    );
    assert!(home.cursor("threatintel/misp").is_some(), "{log}");
}

/// Credentials written inline — a `user:password@` URL, a literal API
/// token, a custom auth header, a proxy with userinfo — reach no log line
/// (debug included, a failing run included), no file the run leaves, and no
/// line of `export config`; the server still receives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_credentials_reach_no_log_and_no_export() {
    use threatbeat_test_support::hostile::{Canned, HostileServer};
    const SECRETS: [&str; 4] = [
        "hunter2",
        "literal-api-token-123",
        "custom-header-secret",
        "proxy-pass",
    ];
    let server = HostileServer::start().await;
    server.answer("/events/restSearch", Canned::json(json!({"response": []})));
    let url = server
        .url("/events/restSearch")
        .replace("http://", "http://misp-user:hunter2@");
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    let write_config = |proxy: &str| {
        home.write(
            "threatbeat.yml",
            &format!(
                "path.data: data
path.logs: logs
logging.level: debug
threatbeat.modules:
  - module: threatintel
    misp:
      var.url: {url}
      var.api_token: literal-api-token-123
      input.request.headers: {{X-Custom-Auth: custom-header-secret}}
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
{proxy}
output.file: {{path: out, filename: docs}}
"
            ),
        )
    };
    write_config("");
    let binary = Path::new(env!("CARGO_BIN_EXE_threatbeat"));
    let run = |args: &[&str]| {
        std::process::Command::new(binary)
            .current_dir(home.root())
            .args(["-c", "threatbeat.yml"])
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("the binary runs")
    };
    let good = tokio::task::block_in_place(|| run(&["run", "--once"]));
    assert!(good.status.success(), "{}", stderr_text(&good));
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].header("authorization").is_some());
    assert_eq!(seen[0].header("x-custom-auth"), Some("custom-header-secret"));

    // A failing run (the proxy refuses) logs its errors too.
    write_config("      input.request.proxy_url: http://proxy-user:proxy-pass@127.0.0.1:9");
    let failing = tokio::task::block_in_place(|| run(&["-e", "run", "--once"]));
    assert!(!failing.status.success());
    let exported = tokio::task::block_in_place(|| run(&["export", "config"]));
    assert!(exported.status.success(), "{}", stderr_text(&exported));

    let failing_log = String::from_utf8_lossy(&failing.stderr).into_owned();
    assert!(failing_log.contains("[REDACTED]"), "{failing_log}");
    let mut searched = vec![
        (
            "stdout and stderr of the runs".to_owned(),
            [good.stdout, good.stderr, failing.stdout, failing.stderr].concat(),
        ),
        (
            "export config".to_owned(),
            [exported.stdout.clone(), exported.stderr].concat(),
        ),
    ];
    let mut pending = vec![home.path("data"), home.path("logs"), home.path("out")];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .expect("a folder")
                    .map(|entry| entry.expect("an entry").path()),
            );
        } else if path.is_file() {
            searched.push((path.display().to_string(), std::fs::read(&path).expect("a file")));
        }
    }
    let log = std::fs::read_to_string(home.path("logs/threatbeat.log")).expect("the log file");
    assert!(log.contains("DEBUG") && log.contains("127.0.0.1"), "{log}");
    for (name, content) in &searched {
        let text = String::from_utf8_lossy(content);
        for secret in SECRETS {
            assert!(!text.contains(secret), "{name} holds {secret}:\n{text}");
        }
    }
    let exported = String::from_utf8_lossy(&exported.stdout);
    assert!(
        exported.contains("misp-user:[REDACTED]@") && exported.contains("proxy-user:[REDACTED]@"),
        "{exported}"
    );
}

/// One event with `"Object": "not-a-list"` first on a page: it goes to the
/// dead-letter file with its error, the valid events after it are
/// published, and the cursor moves past the page (it used to fail every
/// poll on page 1 forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_record_is_set_aside_and_the_page_goes_on() {
    use threatbeat_test_support::hostile::{Canned, HostileServer};
    let now = chrono::Utc::now().timestamp();
    let event = |uuid: &str, timestamp: i64, objects: serde_json::Value| {
        json!({"Event": {
            "id": "1", "uuid": uuid, "info": "test", "timestamp": timestamp.to_string(),
            "Orgc": {"name": "ORG"}, "Tag": [],
            "Attribute": [{"uuid": format!("{uuid}-a"), "type": "ip-dst", "category": "Network activity",
                           "value": "192.0.2.77", "to_ids": true, "timestamp": timestamp.to_string(), "deleted": false}],
            "Object": objects,
        }})
    };
    let server = HostileServer::start().await;
    let page = json!({"response": [
        event("bad-event", now - 100, json!("not-a-list")),
        event("good-event", now - 50, json!([])),
    ]});
    server.answer_in_turn(
        "/events/restSearch",
        vec![Canned::json(page), Canned::json(json!({"response": []}))],
    );
    let home = misp_home(&server.url("/events/restSearch"), "      var.limit: 50");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("set aside") && log.contains("Object"), "{log}");
    let published: Vec<String> = home
        .documents()
        .iter()
        .filter_map(|document| document["misp"]["attribute"]["uuid"].as_str().map(str::to_owned))
        .collect();
    assert!(
        published.contains(&"good-event-a".to_owned()),
        "{published:?}\n{log}"
    );
    let cursor = home.cursor("threatintel/misp").expect("a cursor");
    assert!(cursor["timestamp"].as_i64().unwrap_or(0) >= now - 50, "{cursor}");
    let dead = std::fs::read_to_string(home.path("data/dead_letter/threatintel_misp.ndjson"))
        .expect("the dead-letter file");
    assert!(
        dead.contains("bad-event") && dead.contains("not-a-list"),
        "{dead}"
    );
}

/// One event stamped `2147483647` (2038): the cursor stores now, not 2038,
/// with a warning, and the next poll still asks from a time before now, so
/// events added later are fetched (it used to ask `timestamp: 2147483647`
/// forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_in_2038_does_not_move_the_cursor_past_now() {
    use threatbeat_test_support::hostile::{Canned, HostileServer};
    let now = chrono::Utc::now().timestamp();
    let server = HostileServer::start().await;
    let page = json!({"response": [{"Event": {
        "id": "1", "uuid": "future-event", "info": "test", "timestamp": "2147483647",
        "Orgc": {"name": "ORG"}, "Tag": [],
        "Attribute": [{"uuid": "future-a", "type": "ip-dst", "category": "Network activity",
                       "value": "192.0.2.78", "to_ids": true, "timestamp": "2147483647", "deleted": false}],
    }}]});
    server.answer_in_turn(
        "/events/restSearch",
        vec![Canned::json(page), Canned::json(json!({"response": []}))],
    );
    let home = misp_home(&server.url("/events/restSearch"), "");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("time in the future"), "{log}");
    let stored = home.cursor("threatintel/misp").expect("a cursor")["timestamp"]
        .as_i64()
        .unwrap_or(0);
    assert!((now..now + 300).contains(&stored), "stored {stored}, now {now}");

    let output = home.run_once_async().await;
    assert!(output.status.success(), "{}", stderr_text(&output));
    let second_poll = server.requests().into_iter().last().expect("a request");
    let asked: serde_json::Value = serde_json::from_slice(&second_poll.body).expect("a JSON body");
    let asked = asked["timestamp"].as_i64().unwrap_or(i64::MAX);
    assert!(
        asked <= chrono::Utc::now().timestamp(),
        "the next poll asked timestamp {asked}"
    );
}

/// A `next` link to another port, and a redirect to another port: that
/// listener receives neither the API key nor the configured headers (it
/// used to receive `X-OTX-API-KEY` and every custom header); the redirect
/// is refused with the setting that allows it in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_with_their_origin() {
    use threatbeat_test_support::hostile::{Canned, HostileServer};
    let home_server = HostileServer::start().await;
    let elsewhere = HostileServer::start().await;
    let indicator = |id: u64| json!({"id": id, "indicator": format!("192.0.2.{id}"), "type": "IPv4", "created": "2026-12-01T00:00:00"});
    home_server.answer(
        "/api/v1/indicators/export",
        Canned::json(
            json!({"results": [indicator(1)], "next": elsewhere.url("/api/v1/indicators/export?page=2")}),
        ),
    );
    elsewhere.answer(
        "/api/v1/indicators/export",
        Canned::json(json!({"results": [indicator(2)], "next": null})),
    );
    elsewhere.answer("/moved", Canned::json(json!({"results": [], "next": null})));
    home_server.answer("/moved", Canned::redirect(302, &elsewhere.url("/moved")));
    let otx_home = |url: &str| {
        let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
        home.write(
            "threatbeat.yml",
            &format!(
                "path.data: data
threatbeat.modules:
  - module: threatintel
    otx:
      var.url: {url}
      var.api_token: otx-secret-key
      input.request.headers: {{X-Custom-Token: custom-secret}}
      input.request.retry: {{max_attempts: 1, wait_min: 10ms, wait_max: 10ms}}
output.file: {{path: out, filename: docs}}
"
            ),
        );
        home
    };
    let paged = otx_home(&home_server.url("/api/v1/indicators/export"));
    let output = paged.run_once_async().await;
    let log = stderr_text(&output);
    assert!(log.contains("without credentials"), "{log}");
    let first = &home_server.requests()[0];
    assert_eq!(first.header("x-otx-api-key"), Some("otx-secret-key"));
    assert_eq!(first.header("x-custom-token"), Some("custom-secret"));

    let redirected = otx_home(&home_server.url("/moved"));
    let output = redirected.run_once_async().await;
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("request.allowed_origins"), "{log}");

    let seen = elsewhere.requests();
    assert!(!seen.is_empty(), "the link was followed (without credentials)");
    for request in &seen {
        for (name, value) in &request.headers {
            assert!(
                !value.contains("otx-secret-key") && !value.contains("custom-secret"),
                "{} {} received {name}: {value}",
                request.method,
                request.path
            );
        }
    }
    assert!(
        seen.iter().all(|request| request.path != "/moved"),
        "the redirect was followed"
    );
}

/// Two pipelines whose ids differ but whose state files would be one
/// (`threatintel/misp/attributes`, an instance of `misp`, and the fileset
/// `threatintel/misp_attributes`) are refused at load, naming both: they
/// would overwrite each other's cursor.
#[test]
fn ids_whose_state_files_collide_are_refused() {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write("feed/a.json", "{}\n");
    home.write(
        "threatbeat.yml",
        "path.data: data
threatbeat.modules:
  - module: threatintel
    misp:
      id: attributes
      var.input: file
      var.paths: [feed/a.json]
  - module: threatintel
    misp:
      id: other
      var.input: file
      var.paths: [feed/a.json]
  - module: threatintel
    misp_attributes:
      var.input: file
      var.paths: [feed/a.json]
output.file: {path: out, filename: docs}
",
    );
    let output = home
        .command()
        .args(["test", "config"])
        .output()
        .expect("the binary runs");
    let log = stderr_text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("share one cursor file")
            && log.contains("threatintel/misp/attributes")
            && log.contains("threatintel/misp_attributes"),
        "{log}"
    );
}
