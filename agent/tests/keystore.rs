//! `threatbeat keystore create|add|list|remove` through the real binary, and
//! `${KEY}` references resolved from the keystore before the environment.

mod ops_support;

use std::io::Write;
use std::process::{Output, Stdio};

use ops_support::Home;

const MAIN: &str = "
path.data: data
output.console: {}
threatbeat.modules:
  - module: test
    alpha:
      var.paths: [\"feeds/${FEED_NAME}/*.ndjson\"]
      var.label: ${LABEL_TOKEN}
";

fn run(home: &Home, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut child = home
        .command(env)
        .args(args)
        .args(["-c", "threatbeat.yml"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn keystore_commands_store_secrets_privately_and_config_reads_them_first() {
    let home = Home::new(MAIN);
    // A config referencing keys not added yet still lets the keystore be managed.
    let created = run(&home, &["keystore", "create"], &[], None);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let again = run(&home, &["keystore", "create"], &[], None);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("--force"), "{}", text(&again.stderr));

    let added = run(
        &home,
        &["keystore", "add", "LABEL_TOKEN", "--stdin"],
        &[],
        Some("t0p-s3cret\n"),
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let added = run(
        &home,
        &["keystore", "add", "FEED_NAME", "--stdin"],
        &[],
        Some("from-keystore"),
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let duplicate = run(
        &home,
        &["keystore", "add", "FEED_NAME", "--stdin"],
        &[],
        Some("x"),
    );
    assert!(
        text(&duplicate.stderr).contains("already exists"),
        "{}",
        text(&duplicate.stderr)
    );

    let keystore = home.path("data/threatbeat.keystore");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keystore).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(!std::fs::read_to_string(&keystore).unwrap().contains("t0p-s3cret"));

    let listed = run(&home, &["keystore", "list"], &[], None);
    assert_eq!(text(&listed.stdout), "FEED_NAME\nLABEL_TOKEN\n");

    // The keystore wins over the environment; every keystore value is a secret, so redacted.
    let exported = run(
        &home,
        &["export", "config"],
        &[("FEED_NAME", "from-env"), ("LABEL_TOKEN", "env-token")],
        None,
    );
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let stdout = text(&exported.stdout);
    assert!(stdout.contains("feeds/[REDACTED]/*.ndjson"), "{stdout}");
    assert!(
        !stdout.contains("from-env") && !stdout.contains("from-keystore"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("t0p-s3cret") && !stdout.contains("env-token"),
        "{stdout}"
    );

    let removed = run(&home, &["keystore", "remove", "FEED_NAME"], &[], None);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let exported = run(&home, &["export", "config"], &[("FEED_NAME", "from-env")], None);
    assert!(
        text(&exported.stdout).contains("feeds/from-env/*.ndjson"),
        "{}",
        text(&exported.stdout)
    );
    let missing = run(&home, &["test", "config"], &[], None);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("threatbeat keystore add FEED_NAME"),
        "{}",
        text(&missing.stderr)
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keystore, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = run(&home, &["test", "config"], &[("FEED_NAME", "x")], None);
        assert!(!refused.status.success());
        assert!(
            text(&refused.stderr).contains("chmod 600"),
            "{}",
            text(&refused.stderr)
        );
    }
}
