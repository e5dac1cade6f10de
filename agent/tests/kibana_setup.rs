//! `threatbeat setup --dashboards`, run as the real binary against the Kibana
//! simulator: the dashboard (Filebeat's id) and its data view for `logs-ti_*`
//! are imported, a second run overwrites the same objects, wrong credentials
//! and refused objects fail the command with a clear message and no secret.

use std::fs;
use std::process::{Command, Output};

use threatbeat_test_support::kibana::{KibanaCredential, KibanaSimulator};

const DASHBOARD_ID: &str = "ad9c7430-72de-11eb-a3e3-b3cc7c78a70f";

/// A main file with a module and `output.console` (dashboards need no Elasticsearch).
fn config(kibana: &str) -> String {
    format!(
        "output.console: {{}}\n\
         threatbeat.modules:\n  - module: threatintel\n    misp:\n      enabled: true\n      \
         var.url: http://127.0.0.1:9/events/restSearch\n{kibana}"
    )
}

fn basic(url: &str, username: &str, password: &str) -> String {
    format!("setup.kibana:\n  host: \"{url}\"\n  username: {username}\n  password: {password}\n")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_load_and_a_second_run_overwrites_them() {
    let kibana = KibanaSimulator::start(vec![KibanaCredential::basic("elastic", "kibana-password-1")]).await;
    let main = config(&basic(&kibana.url(), "elastic", "kibana-password-1"));

    let (first, text) = threatbeat(main.clone(), &["setup", "--dashboards"]).await;
    assert!(first.status.success(), "{text}");
    assert!(text.contains(&kibana.url()), "{text}");
    assert!(
        text.contains(&format!("/app/dashboards#/view/{DASHBOARD_ID}")),
        "{text}"
    );

    let dashboard = kibana
        .object("default", "dashboard", DASHBOARD_ID)
        .expect("the dashboard is stored with Filebeat's id");
    let view_ref = dashboard["references"]
        .as_array()
        .unwrap()
        .iter()
        .find(|reference| reference["type"] == "visualization" || reference["type"] == "search")
        .cloned()
        .expect("the dashboard references its panels");
    assert!(kibana
        .object(
            "default",
            view_ref["type"].as_str().unwrap(),
            view_ref["id"].as_str().unwrap()
        )
        .is_some());
    let views: Vec<_> = kibana
        .objects("default")
        .into_iter()
        .filter(|object| object["type"] == "index-pattern")
        .collect();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0]["attributes"]["title"], "logs-ti_*");
    assert_eq!(views[0]["attributes"]["timeFieldName"], "@timestamp");
    let stored = kibana.objects("default").len();
    let panels = kibana
        .objects("default")
        .iter()
        .map(ToString::to_string)
        .collect::<String>();
    for field in [
        "threat.feed.name",
        "threat.indicator.type",
        "threat.indicator.marking.tlp",
    ] {
        assert!(panels.contains(field), "a panel shows {field}");
    }

    let (second, text) = threatbeat(main, &["setup", "--dashboards"]).await;
    assert!(second.status.success(), "{text}");
    assert!(
        text.contains(&format!("{stored} saved objects loaded ({stored} replaced")),
        "the second run replaces the same objects:\n{text}"
    );
    assert_eq!(kibana.objects("default").len(), stored, "nothing was added");

    let requests = kibana.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/saved_objects/_import");
        assert_eq!(request.query, "overwrite=true");
        assert_eq!(request.principal.as_deref(), Some("basic:elastic"));
        assert_eq!(request.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_and_a_space_from_filebeats_settings() {
    let kibana = KibanaSimulator::start(vec![KibanaCredential::api_key("key-id", "key-secret-1")]).await;
    kibana.add_space("secops");
    // Dotted keys as in filebeat.yml; plain `setup` with dashboards enabled but
    // only --dashboards asked: index management (which needs Elasticsearch) is skipped.
    let main = config(&format!(
        "setup.kibana.host: \"{}\"\nsetup.kibana.api_key: \"key-id:key-secret-1\"\n\
         setup.kibana.space.id: secops\nsetup.dashboards.enabled: true\n",
        kibana.url()
    ));
    let (output, text) = threatbeat(main, &["setup", "--dashboards"]).await;
    assert!(output.status.success(), "{text}");
    assert!(text.contains("/s/secops"), "{text}");
    assert!(kibana.object("secops", "dashboard", DASHBOARD_ID).is_some());
    assert!(kibana.objects("default").is_empty(), "only the space was written");
    let request = &kibana.requests()[0];
    assert_eq!(request.path, "/s/secops/api/saved_objects/_import");
    assert_eq!(request.principal.as_deref(), Some("api_key:key-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_name_kibana_and_never_show_the_password() {
    let kibana = KibanaSimulator::start(vec![KibanaCredential::basic("elastic", "kibana-password-1")]).await;
    let main = config(&basic(&kibana.url(), "elastic", "not-the-password"));
    let (output, text) = threatbeat(main, &["setup", "--dashboards"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("Kibana at {}", kibana.url())), "{text}");
    assert!(text.contains("rejected the credentials"), "{text}");
    assert!(
        text.contains("setup.kibana.username"),
        "says which settings to fix: {text}"
    );
    assert!(
        !text.contains("not-the-password"),
        "the password must not be printed:\n{text}"
    );
    assert!(kibana.objects("default").is_empty());
    assert_eq!(kibana.requests()[0].status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_object_is_reported_and_fails_the_command() {
    let kibana = KibanaSimulator::start(Vec::new()).await;
    kibana.fail_object("dashboard", DASHBOARD_ID, "simulated mapping conflict");
    let main = config(&format!("setup.kibana.host: \"{}\"\n", kibana.url()));
    let (output, text) = threatbeat(main, &["setup", "--dashboards"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!("dashboard {DASHBOARD_ID}")),
        "names the object: {text}"
    );
    assert!(
        text.contains("simulated mapping conflict"),
        "gives Kibana's reason: {text}"
    );
    assert!(text.contains(&kibana.url()), "{text}");
    assert!(kibana.object("default", "dashboard", DASHBOARD_ID).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_space_and_an_unknown_setting_are_clear_errors() {
    let kibana = KibanaSimulator::start(Vec::new()).await;
    let main = config(&format!(
        "setup.kibana.host: \"{}\"\nsetup.kibana.space.id: nosuchspace\n",
        kibana.url()
    ));
    let (output, text) = threatbeat(main, &["setup", "--dashboards"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("HTTP 404") && text.contains("setup.kibana.space.id"),
        "{text}"
    );

    let main = config(&format!(
        "setup.kibana.host: \"{}\"\nsetup.dashboards.directory: /tmp\n",
        kibana.url()
    ));
    let (output, text) = threatbeat(main, &["setup", "--dashboards"]).await;
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("setup.dashboards") && text.contains("directory"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_setup_does_index_management_and_enabled_dashboards() {
    use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
    let cluster = ElasticsearchSimulator::start().await;
    let kibana = KibanaSimulator::start(Vec::new()).await;
    let main = format!(
        "output.elasticsearch:\n  hosts: [\"{}\"]\n\
         setup.kibana.host: \"{}\"\nsetup.dashboards.enabled: true\nsetup.template.name: threatbeat\n\
         threatbeat.modules:\n  - module: threatintel\n    misp:\n      enabled: true\n      \
         var.url: http://127.0.0.1:9/events/restSearch\n",
        cluster.url(),
        kibana.url()
    );
    let (output, text) = threatbeat(main.clone(), &["setup"]).await;
    assert!(output.status.success(), "{text}");
    assert!(cluster.index_template("threatbeat").is_some(), "{text}");
    assert!(
        kibana.object("default", "dashboard", DASHBOARD_ID).is_some(),
        "{text}"
    );

    // --index-management alone leaves Kibana alone (and accepts setup.kibana.*).
    let (output, text) = threatbeat(main, &["setup", "--index-management"]).await;
    assert!(output.status.success(), "{text}");
    assert_eq!(kibana.requests().len(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_ssl_settings_of_the_output() {
    use threatbeat_test_support::tls::{ca_file, https_front};
    let kibana = KibanaSimulator::start(Vec::new()).await;
    let port = https_front("localhost", kibana.address()).await;
    let host = format!("setup.kibana.host: \"https://localhost:{port}\"\n");

    let (output, text) = threatbeat(config(&host), &["setup", "--dashboards"]).await;
    assert!(!output.status.success(), "an unknown CA is refused:\n{text}");
    assert!(
        text.contains("cannot reach Kibana at https://localhost"),
        "{text}"
    );

    let trusted = format!(
        "{host}setup.kibana.ssl.certificate_authorities: [\"{}\"]\n",
        ca_file()
    );
    let (output, text) = threatbeat(config(&trusted), &["setup", "--dashboards"]).await;
    assert!(output.status.success(), "{text}");
    assert!(kibana.object("default", "dashboard", DASHBOARD_ID).is_some());
}

/// The simulator refuses what Kibana refuses, so the tests above mean something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_checks_requests_as_kibana_does() {
    use threatbeat::kibana::multipart_file;
    let kibana = KibanaSimulator::start(vec![KibanaCredential::basic("elastic", "pw")]).await;
    let client = reqwest::Client::new();
    let import = |query: &str| format!("{}/api/saved_objects/_import{query}", kibana.url());
    let send = |url: String, xsrf: bool, content_type: &str, body: Vec<u8>| {
        let mut request = client
            .post(url)
            .basic_auth("elastic", Some("pw"))
            .header("content-type", content_type.to_owned())
            .body(body);
        if xsrf {
            request = request.header("kbn-xsrf", "true");
        }
        request.send()
    };
    let form = "multipart/form-data; boundary=XyZ";
    let dangling = r#"{"type":"dashboard","id":"d1","attributes":{"title":"D"},"references":[{"name":"panel_0","type":"visualization","id":"nope"}]}"#;
    let view = r#"{"type":"index-pattern","id":"v1","attributes":{"title":"logs-ti_*"},"references":[]}"#;

    let status = |response: reqwest::Response| response.status().as_u16();
    let answer = send(import(""), false, form, multipart_file("XyZ", "a.ndjson", view))
        .await
        .unwrap();
    assert_eq!(status(answer), 400, "kbn-xsrf is required");
    let answer = client
        .post(import(""))
        .header("kbn-xsrf", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(status(answer), 401, "credentials are required");
    let answer = send(import(""), true, "application/json", view.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(status(answer), 415);
    let answer = send(import(""), true, form, multipart_file("XyZ", "a.json", view))
        .await
        .unwrap();
    assert_eq!(status(answer), 400, "the file must be .ndjson");
    let answer = send(
        import(""),
        true,
        form,
        multipart_file("XyZ", "a.ndjson", "{not json"),
    )
    .await
    .unwrap();
    assert_eq!(status(answer), 400);
    let answer = send(
        import("?overwrite=true&createNewCopies=true"),
        true,
        form,
        multipart_file("XyZ", "a.ndjson", view),
    )
    .await
    .unwrap();
    assert_eq!(status(answer), 400);

    let both = format!("{view}\n{dangling}\n");
    let answer = send(import(""), true, form, multipart_file("XyZ", "a.ndjson", &both))
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["successCount"], 1, "{body}");
    assert_eq!(body["errors"][0]["error"]["type"], "missing_references", "{body}");
    assert!(kibana.object("default", "index-pattern", "v1").is_some());

    // Importing it again without overwrite is a conflict; with overwrite it replaces.
    let answer = send(import(""), true, form, multipart_file("XyZ", "a.ndjson", view))
        .await
        .unwrap();
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["errors"][0]["error"]["type"], "conflict", "{body}");
    let answer = send(
        import("?overwrite=true"),
        true,
        form,
        multipart_file("XyZ", "a.ndjson", view),
    )
    .await
    .unwrap();
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["successResults"][0]["overwrite"], true, "{body}");
}
