//! Hot reload through the real binary: adding, editing, breaking, disabling
//! and deleting module files in modules.d while the agent runs.

mod ops_support;

use std::fs;
use std::time::Duration;

use ops_support::{module_file, Home};

const MAIN: &str = "
path.data: data
threatbeat.config.modules:
  path: ${path.config}/modules.d/*.yml
  reload.enabled: true
  reload.period: 1s
output.file:
  path: out
  filename: events
";

fn count(records: &[(String, String)], name: &str) -> usize {
    records.iter().filter(|(n, _)| n == name).count()
}

#[test]
fn module_files_are_started_restarted_rejected_and_stopped_while_running() {
    let home = Home::new(MAIN);
    home.add_record("feeds/a", "a1");
    home.write("modules.d/alpha.yml", &module_file("alpha", &["feeds/a"], "one"));
    let mut agent = home.start(&[], &[("MODULE_TOKEN", "leaky-s3cret")]);
    agent.wait_for("alpha's first event", |agent| count(&agent.records(), "a1") == 1);

    // Add a module file: its pipeline starts within seconds.
    home.add_record("feeds/b", "b1");
    home.write("modules.d/beta.yml", &module_file("beta", &["feeds/b"], "one"));
    let latency = agent.wait_for("beta's first event", |agent| count(&agent.records(), "b1") == 1);
    println!("a new module file's first event after {latency:?}");
    assert!(latency <= Duration::from_secs(5), "took {latency:?}");

    // Edit it: the new settings are used, and its cursor is kept (b1 is not read again).
    home.add_record("feeds/b2", "b2");
    home.write(
        "modules.d/beta.yml",
        &module_file("beta", &["feeds/b", "feeds/b2"], "two"),
    );
    agent.wait_for("beta's events with the new settings", |agent| {
        agent.records().contains(&("b2".to_owned(), "two".to_owned()))
    });
    assert_eq!(count(&agent.records(), "b1"), 1, "the cursor was kept");
    assert!(
        agent.logs().contains("restarted=[\"test/beta\"]"),
        "{}",
        agent.logs()
    );

    // A broken new file is rejected, naming the file and the key; the others keep running.
    home.write(
        "modules.d/gamma.yml",
        "- module: test\n  gamma:\n    var.no_such_var: 1\n",
    );
    agent.wait_for("the rejection of gamma.yml", |agent| {
        let logs = agent.logs();
        logs.contains("module file rejected")
            && logs.contains("gamma.yml")
            && logs.contains("var.no_such_var")
    });
    // A rejection that would quote a secret-named variable's value masks it.
    home.write("modules.d/delta.yml", "- module: ${MODULE_TOKEN}\n");
    agent.wait_for("the rejection of delta.yml", |agent| {
        agent.logs().contains("delta.yml") && agent.logs().contains("unknown module")
    });
    assert!(!agent.logs().contains("leaky-s3cret"), "{}", agent.logs());
    assert!(
        agent.logs().contains("unknown module `[REDACTED]`"),
        "{}",
        agent.logs()
    );
    home.add_record("feeds/a", "a2");
    home.add_record("feeds/b2", "b3");
    agent.wait_for("alpha and beta still running", |agent| {
        let records = agent.records();
        count(&records, "a2") == 1 && count(&records, "b3") == 1
    });

    // Disable beta (rename to .disabled): it stops, alpha keeps going.
    fs::rename(
        home.path("modules.d/beta.yml"),
        home.path("modules.d/beta.yml.disabled"),
    )
    .unwrap();
    agent.wait_for("beta stopping", |agent| {
        agent.logs().contains("stopped=[\"test/beta\"]")
    });
    home.add_record("feeds/b2", "b-late");
    home.add_record("feeds/a", "a3");
    agent.wait_for("a3", |agent| count(&agent.records(), "a3") == 1);
    home.add_record("feeds/a", "a4");
    agent.wait_for("a4", |agent| count(&agent.records(), "a4") == 1);
    assert_eq!(
        count(&agent.records(), "b-late"),
        0,
        "a disabled module stopped reading"
    );

    // Fix gamma, then delete alpha: gamma starts, alpha stops.
    home.add_record("feeds/g", "g1");
    home.write("modules.d/gamma.yml", &module_file("gamma", &["feeds/g"], "one"));
    agent.wait_for("gamma's first event", |agent| count(&agent.records(), "g1") == 1);
    fs::remove_file(home.path("modules.d/alpha.yml")).unwrap();
    agent.wait_for("alpha stopping", |agent| {
        agent.logs().contains("stopped=[\"test/alpha\"]")
    });

    // Re-enabling beta resumes from its stored cursor: only what is new is read.
    fs::rename(
        home.path("modules.d/beta.yml.disabled"),
        home.path("modules.d/beta.yml"),
    )
    .unwrap();
    agent.wait_for("beta catching up", |agent| count(&agent.records(), "b-late") == 1);
    let records = agent.records();
    for name in ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "g1"] {
        assert_eq!(count(&records, name), 1, "{name} exactly once: {records:?}");
    }

    agent.signal("TERM");
    let status = agent.wait_exit();
    assert!(status.success(), "{status}\n{}", agent.logs());
}

#[test]
fn an_agent_with_reload_may_start_with_no_module_and_pick_one_up() {
    let home = Home::new(MAIN);
    fs::create_dir_all(home.path("modules.d")).unwrap();
    let mut agent = home.start(&[], &[]);
    agent.wait_for("the watcher", |agent| agent.logs().contains("watching modules.d"));
    home.add_record("feeds/a", "a1");
    home.write("modules.d/alpha.yml", &module_file("alpha", &["feeds/a"], "one"));
    agent.wait_for("alpha's first event", |agent| count(&agent.records(), "a1") == 1);
    agent.signal("INT");
    assert!(agent.wait_exit().success(), "{}", agent.logs());
}
