//! What the packages rely on, through the real binary: SIGHUP rescans
//! modules.d (`systemctl reload`), `test health` is a usable health probe
//! (the container's HEALTHCHECK), and the shell completions and man pages
//! the Debian package ships are generated from the command line.

mod ops_support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use clap::CommandFactory;
use ops_support::{module_file, Home};
use threatbeat::cli::Cli;

/// No `reload.enabled`: nothing but SIGHUP rescans modules.d.
const WITHOUT_RELOAD: &str = "
path.data: data
output.file:
  path: out
  filename: events
";

/// Watching on, but the periodic rescan an hour away.
const WATCHING_HOURLY: &str = "
path.data: data
threatbeat.config.modules:
  path: ${path.config}/modules.d/*.yml
  reload.enabled: true
  reload.period: 1h
output.file:
  path: out
  filename: events
";

fn count(records: &[(String, String)], name: &str) -> usize {
    records.iter().filter(|(n, _)| n == name).count()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn sighup_starts_a_new_module_file_when_reload_is_off() {
    let home = Home::new(WITHOUT_RELOAD);
    home.add_record("feeds/a", "a1");
    home.write("modules.d/alpha.yml", &module_file("alpha", &["feeds/a"], "one"));
    let mut agent = home.start(&[], &[]);
    agent.wait_for("alpha's first event", |agent| count(&agent.records(), "a1") == 1);
    assert!(
        agent.logs().contains("rescanned on SIGHUP only"),
        "{}",
        agent.logs()
    );

    // Without reload nothing picks the new file up: not the watcher, not a rescan.
    home.add_record("feeds/b", "b1");
    home.write("modules.d/beta.yml", &module_file("beta", &["feeds/b"], "one"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&agent.records(), "b1"), 0, "{}", agent.logs());
    assert!(!agent.logs().contains("rescanning"), "{}", agent.logs());

    agent.signal("HUP");
    agent.wait_for("beta's first event after SIGHUP", |agent| {
        count(&agent.records(), "b1") == 1
    });
    let logs = agent.logs();
    assert!(logs.contains("SIGHUP: rescanning modules.d"), "{logs}");
    assert!(logs.contains("started=[\"test/beta\"]"), "{logs}");

    // A broken file on SIGHUP is rejected; what runs keeps running.
    home.write("modules.d/beta.yml", "- module: test\n  beta:\n    var.nope: 1\n");
    agent.signal("HUP");
    agent.wait_for("the rejection of beta.yml", |agent| {
        agent.logs().contains("module file rejected") && agent.logs().contains("var.nope")
    });
    home.add_record("feeds/a", "a2");
    home.add_record("feeds/b", "b2");
    agent.wait_for("alpha and beta still running", |agent| {
        let records = agent.records();
        count(&records, "a2") == 1 && count(&records, "b2") == 1
    });

    agent.signal("TERM");
    let status = agent.wait_exit();
    assert!(status.success(), "{status}\n{}", agent.logs());
    let records = agent.records();
    for name in ["a1", "a2", "b1", "b2"] {
        assert_eq!(count(&records, name), 1, "{name} exactly once: {records:?}");
    }
}

#[test]
fn sighup_rescans_at_once_what_the_watcher_does_not_see() {
    let home = Home::new(WATCHING_HOURLY);
    home.add_record("feeds/a", "a1");
    home.write("modules.d/alpha.yml", &module_file("alpha", &["feeds/a"], "one"));
    let mut agent = home.start(&[], &[]);
    agent.wait_for("alpha's first event", |agent| {
        agent.records().contains(&("a1".to_owned(), "one".to_owned()))
    });

    // A user definition's folder is not watched and the next periodic rescan is
    // an hour away: the edit is not applied, a2 still gets the old label.
    home.write(
        "modules.d/definitions/test/alpha/processors.yml",
        "- set: {field: labels.source, value: \"edited-{{ var.label }}\"}\n",
    );
    home.add_record("feeds/a", "a2");
    agent.wait_for("a2 with the old processors", |agent| {
        count(&agent.records(), "a2") == 1
    });
    assert!(
        agent.records().contains(&("a2".to_owned(), "one".to_owned())),
        "{:?}",
        agent.records()
    );

    agent.signal("HUP");
    agent.wait_for("the restart SIGHUP asked for", |agent| {
        agent.logs().contains("restarted=[\"test/alpha\"]")
    });
    home.add_record("feeds/a", "a3");
    agent.wait_for("a3 with the edited processors", |agent| {
        agent
            .records()
            .contains(&("a3".to_owned(), "edited-one".to_owned()))
    });
    assert_eq!(count(&agent.records(), "a1"), 1, "the cursor was kept");

    agent.signal("TERM");
    assert!(agent.wait_exit().success(), "{}", agent.logs());
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap()
}

#[test]
fn test_health_follows_the_running_agent() {
    let port = free_port();
    let home = Home::new(&format!(
        "{WITHOUT_RELOAD}http.enabled: true\nhttp.host: 127.0.0.1\nhttp.port: {port}\n"
    ));
    home.add_record("feeds/a", "a1");
    home.write("modules.d/alpha.yml", &module_file("alpha", &["feeds/a"], "one"));
    let probe = || {
        home.command(&[])
            .args(["test", "health", "-c"])
            .arg(home.path("threatbeat.yml"))
            .output()
            .unwrap()
    };

    let before = probe();
    assert!(!before.status.success(), "{}", text(&before));
    assert!(
        String::from_utf8_lossy(&before.stderr)
            .contains(&format!("no answer from http://127.0.0.1:{port}/healthz")),
        "{}",
        text(&before)
    );

    let mut agent = home.start(&[], &[]);
    agent.wait_for("alpha's first event", |agent| count(&agent.records(), "a1") == 1);
    let healthy = probe();
    assert!(healthy.status.success(), "{}", text(&healthy));
    assert!(
        String::from_utf8_lossy(&healthy.stdout).contains("200 {\"status\":\"ok\"}"),
        "{}",
        text(&healthy)
    );
    agent.signal("TERM");
    assert!(agent.wait_exit().success(), "{}", agent.logs());
    assert!(
        !probe().status.success(),
        "nothing answers once the agent stopped"
    );
}

#[test]
fn test_health_fails_on_503_and_without_an_endpoint() {
    // An endpoint that answers what an unhealthy agent answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).unwrap();
        let body = r#"{"status":"unhealthy","reasons":["pipeline x: its input stopped"]}"#;
        write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let home = Home::new(WITHOUT_RELOAD);
    let unhealthy = home
        .command(&[])
        .args(["test", "health", "--url"])
        .arg(format!("http://{address}/healthz"))
        .output()
        .unwrap();
    assert_eq!(unhealthy.status.code(), Some(1), "{}", text(&unhealthy));
    assert!(
        String::from_utf8_lossy(&unhealthy.stdout).contains("503 {\"status\":\"unhealthy\""),
        "{}",
        text(&unhealthy)
    );
    assert!(server.join().unwrap().starts_with("GET /healthz HTTP/1.1"));

    // http.enabled is false by default: there is nothing to ask.
    let off = home
        .command(&[])
        .args(["test", "health", "-c"])
        .arg(home.path("threatbeat.yml"))
        .output()
        .unwrap();
    assert_eq!(off.status.code(), Some(1), "{}", text(&off));
    assert!(
        String::from_utf8_lossy(&off.stderr).contains("http.enabled is false"),
        "{}",
        text(&off)
    );
}

/// Every visible command's name, nested ones joined with spaces (`test config`).
fn visible_commands(command: &clap::Command, prefix: &str, into: &mut Vec<String>) {
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        if subcommand.get_name() == "help" {
            continue;
        }
        let name = format!("{prefix}{}", subcommand.get_name());
        visible_commands(subcommand, &format!("{name} "), into);
        into.push(name);
    }
}

fn threatbeat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_threatbeat"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn completions_cover_every_command_and_bash_parses_its_script() {
    let mut commands = Vec::new();
    visible_commands(&Cli::command(), "", &mut commands);
    let top_level: Vec<&str> = commands
        .iter()
        .filter(|name| !name.contains(' '))
        .map(String::as_str)
        .collect();
    assert!(top_level.contains(&"completion") && top_level.contains(&"keystore"));
    for shell in ["bash", "zsh", "fish"] {
        let output = threatbeat(&["completion", shell]);
        assert!(output.status.success(), "{}", text(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        for command in &top_level {
            assert!(script.contains(command), "{shell}: no `{command}`");
        }
        // Flags of nested commands are completed too.
        assert!(
            script.contains("index-management") && script.contains("stdin"),
            "{shell}"
        );
    }
    let bash = threatbeat(&["completion", "bash"]);
    let script = String::from_utf8(bash.stdout).unwrap();
    assert!(script.contains("complete -F _threatbeat"), "{script}");
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &script).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(file.path()).output().unwrap();
    assert!(parsed.status.success(), "{}", text(&parsed));

    let unknown = threatbeat(&["completion", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("bash"));
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let output = threatbeat(&["manpage", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));

    let mut commands = Vec::new();
    visible_commands(&Cli::command(), "", &mut commands);
    let mut expected: BTreeSet<String> = commands
        .iter()
        .map(|name| format!("threatbeat-{}.1", name.replace(' ', "-")))
        .collect();
    expected.insert("threatbeat.1".to_owned());
    let written: BTreeSet<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected);

    let main = fs::read_to_string(dir.path().join("threatbeat.1")).unwrap();
    assert!(
        main.starts_with(".ie") && main.contains(".TH threatbeat 1"),
        "{main}"
    );
    for section in [
        ".SH SYNOPSIS",
        ".SH SUBCOMMANDS",
        ".SH FILES",
        ".SH SIGNALS",
        ".SH EXIT STATUS",
    ] {
        assert!(main.contains(section), "{section}");
    }
    for command in commands.iter().filter(|name| !name.contains(' ')) {
        assert!(main.contains(&format!("threatbeat\\-{command}(1)")), "{command}");
    }
    let health = fs::read_to_string(dir.path().join("threatbeat-test-health.1")).unwrap();
    assert!(health.contains("\\-\\-url"), "{health}");
    assert!(
        !health.contains(".SH SIGNALS"),
        "only the main page has the extra sections"
    );

    // Without a folder: the main page on stdout, the same as the file.
    let stdout = threatbeat(&["manpage"]);
    assert!(stdout.status.success(), "{}", text(&stdout));
    assert_eq!(String::from_utf8(stdout.stdout).unwrap(), main);
}
