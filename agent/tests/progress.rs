//! A first sync one can watch: `run --once` on a terminal redraws a progress
//! line per pipeline that ends at every document; without a terminal the
//! log carries the same figures as structured lines.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use threatbeat_test_support::agent::{stderr_text, AgentHome, PATIENCE};
use threatbeat_test_support::misp::{generate_events, MispSimulator, API_KEY};

const EVENTS: usize = 1_000;
const ATTRIBUTES: usize = 50;
const TOTAL: u64 = (EVENTS * ATTRIBUTES) as u64;

/// A simulator holding 1000 events of 50 attributes, each page answered
/// after a short delay so that the sync lasts long enough to be watched.
async fn misp() -> MispSimulator {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    let misp = MispSimulator::start(generate_events(EVENTS, ATTRIBUTES, now - 7200)).await;
    misp.set_delay(Some(Duration::from_millis(40)));
    misp
}

/// A home polling `misp` 20 events (1000 attributes) a page into the file
/// output, logging to `logs/threatbeat.log` unless run with `-e`.
fn home(misp: &MispSimulator, extra: &str) -> AgentHome {
    let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
    home.write(
        "threatbeat.yml",
        &format!(
            "path.data: data
path.logs: logs
{extra}
threatbeat.modules:
  - module: threatintel
    misp:
      var.url: {url}
      var.api_token: {API_KEY}
      var.limit: 20
      var.current_state: false
output.file: {{path: out, filename: docs}}
",
            url = misp.url("/events/restSearch"),
        ),
    );
    home
}

/// Runs `command` with stdout and stderr on a new pseudo-terminal; its exit
/// status and everything it wrote there.
fn run_on_terminal(mut command: Command) -> (ExitStatus, String) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers we pass; the
    // name, termios and window size are optional and left null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let stdout = slave.try_clone().expect("a second descriptor of the terminal");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(slave));
    let mut child = command.spawn().expect("the binary starts");
    // Our copies of the terminal's descriptors go with the command: the
    // reader sees the end (EIO) when the agent exits.
    drop(command);
    let reader = std::thread::spawn(move || {
        let mut master = File::from(master);
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 8192];
        // Linux answers EIO once every descriptor of the terminal is closed.
        while let Ok(read @ 1..) = master.read(&mut buffer) {
            bytes.extend_from_slice(&buffer[..read]);
        }
        bytes
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the agent can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("run --once did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let bytes = reader.join().expect("the reader thread");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The text without ANSI control sequences (`ESC [ ... letter`).
fn without_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(char) = chars.next() {
        if char != '\x1b' {
            plain.push(char);
            continue;
        }
        if chars.next() == Some('[') {
            for char in chars.by_ref() {
                if char.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    plain
}

/// The published count of a terminal progress line of `pipeline`, e.g.
/// `threatintel/misp: 3 pages, 3000 records, 2500 published, 1234/s`.
fn published_on_line(line: &str, pipeline: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix(pipeline)?.strip_prefix(": ")?;
    let published = rest
        .split(", ")
        .find_map(|part| part.strip_suffix(" published"))?;
    published.parse().ok()
}

/// The value of `field=` on a text log line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_progress_line_advances_in_place_to_every_attribute() {
    let misp = misp().await;
    let home = home(&misp, "");
    let mut command = Command::new(env!("CARGO_BIN_EXE_threatbeat"));
    // No `-e`: the log goes to its file and the terminal shows the progress.
    command
        .current_dir(home.root())
        .arg("-c")
        .arg(home.path("threatbeat.yml"))
        .args(["run", "--once"])
        .env_remove("RUST_LOG");
    let (status, screen) = tokio::task::spawn_blocking(move || run_on_terminal(command))
        .await
        .expect("the terminal run");
    let log = std::fs::read_to_string(home.path("logs/threatbeat.log")).unwrap_or_default();
    assert!(status.success(), "{screen}\n{log}");
    assert!(screen.contains("\r\x1b[2K"), "redrawn in place: {screen:?}");

    let lines: Vec<String> = screen
        .split(['\r', '\n'])
        .map(without_escapes)
        .filter(|line| !line.trim().is_empty())
        .collect();
    let states: Vec<u64> = lines
        .iter()
        .filter_map(|line| published_on_line(line, "threatintel/misp"))
        .collect();
    assert!(
        states.windows(2).all(|pair| pair[0] <= pair[1]),
        "the count never goes back: {states:?}"
    );
    let mut distinct = states.clone();
    distinct.dedup();
    let between = distinct
        .iter()
        .filter(|published| (1..TOTAL).contains(*published))
        .count();
    assert!(between >= 2, "several states on the way: {distinct:?}");
    assert_eq!(states.last(), Some(&TOTAL), "{lines:#?}");
    let last = lines
        .iter()
        .rfind(|line| published_on_line(line, "threatintel/misp").is_some())
        .expect("a final line");
    assert!(
        last.contains(&format!("{TOTAL} records")) && last.contains("done in"),
        "{last}"
    );
    // The final line stays: the cursor is left below it.
    let after_last = &screen[screen.rfind("done in").expect("the final line")..];
    assert!(after_last.contains('\n'), "{after_last:?}");
    assert_eq!(home.documents().len() as u64, TOTAL);
    assert!(!log.contains("progress"), "drawn, not logged: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_log_has_progress_lines() {
    let misp = misp().await;
    let home = home(&misp, "logging.metrics.period: 1s");
    let output = home.run_once_async().await;
    let log = stderr_text(&output);
    assert!(output.status.success(), "{log}");
    assert!(!log.contains("\x1b["), "no terminal drawing in a log: {log}");
    let progress: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" progress") && line.contains("pipeline=threatintel/misp"))
        .collect();
    let last = progress.last().expect("progress lines in the log");
    assert!(last.contains("progress at the end"), "{last}");
    assert_eq!(field(last, "published"), Some(TOTAL), "{last}");
    assert_eq!(field(last, "records"), Some(TOTAL), "{last}");
    assert!(
        field(last, "pages").is_some_and(|pages| pages >= (EVENTS / 20) as u64),
        "{last}"
    );
    assert!(field(last, "rate").is_some_and(|rate| rate > 0), "{last}");
    // The run lasts over a second (50 pages, each answered after 40 ms):
    // lines come while it runs, not only at its end.
    let during: Vec<u64> = progress
        .iter()
        .filter(|line| !line.contains("progress at the end"))
        .filter_map(|line| field(line, "published"))
        .collect();
    assert!(!during.is_empty(), "{log}");
    assert!(during.iter().all(|published| *published <= TOTAL), "{during:?}");
}
