//! Chaos through the real binary (the hardening issue): MISP simulator →
//! `threatbeat run` → disk queue → Elasticsearch simulator, with every fault
//! at once in one run — ≥ 20 `kill -9` at random moments, a 60 s cluster
//! outage, 20 % of bulk items answered 429, 30 % of MISP requests failing,
//! MISP data edited while it runs — and a full disk in the middle of a run.
//! Both end with 0 lost and 0 duplicated documents and the current state
//! right. Run with `--nocapture` for the figures; `THREATBEAT_E2E_SEED`
//! replays a run.

// The end-to-end helpers are shared with end_to_end.rs; this file uses a part.
#[allow(dead_code)]
mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::versions::{
    assert_history_exactly_once, attribute_versions, count_history, indexed_versions, Version,
};
use e2e::{
    assert_current_state, chrono_now, fresh_events, indexed_records, misp_events, valid_records, wait_for,
    AgentProcess, Random, Workspace, INDEX, LATEST_INDEX, PATIENCE,
};
use serde_json::Value;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{Edit, Fault, MispSimulator};

const KILLS: usize = 22;
const OUTAGE: Duration = Duration::from_secs(60);
const MISP_FAILURE_PERCENT: u32 = 30;
const ITEM_429_RATE: f64 = 0.2;

/// The MISP failures mixed into the 30 %: server errors, proxy pages, a
/// connection dropped mid-body and a body cut short. All are retried by
/// the input; none of them may move the cursor.
fn misp_failures() -> Vec<Fault> {
    vec![
        Fault::InternalError,
        Fault::ServiceUnavailableHtml,
        Fault::BadGatewayHtml,
        Fault::ConnectionReset,
        Fault::TruncatedJson,
    ]
}

/// `events` as MISP stores events created at `now`: the event and every
/// attribute stamped with the creation time (never older than a cursor
/// taken before, never in the future).
fn stamped(mut events: Vec<Value>, now: i64) -> Vec<Value> {
    for event in &mut events {
        event["timestamp"] = Value::String(now.to_string());
        for attribute in event["Attribute"].as_array_mut().into_iter().flatten() {
            attribute["timestamp"] = Value::String(now.to_string());
        }
    }
    events
}

/// What happens at a moment of the chaos run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    OutageStart,
    OutageEnd,
    Edit,
    Kill,
}

/// Kills on a jittered grid over `window` (one in each slot, at a random
/// point of it: spread over the run, yet random), the outage, and MISP edits
/// every few seconds, in time order.
fn schedule(random: &mut Random, outage_start: Duration, window: Duration) -> Vec<(Duration, Step)> {
    let mut steps = vec![
        (outage_start, Step::OutageStart),
        (outage_start + OUTAGE, Step::OutageEnd),
    ];
    let slot = window.as_millis() as u64 / KILLS as u64;
    for kill in 0..KILLS as u64 {
        let at = kill * slot + random.between(slot / 5, slot);
        steps.push((Duration::from_millis(at), Step::Kill));
    }
    let mut at = random.between(2_000, 5_000);
    while at < window.as_millis() as u64 - 5_000 {
        steps.push((Duration::from_millis(at), Step::Edit));
        at += random.between(2_000, 6_000);
    }
    steps.sort();
    steps
}

/// MISP data changing while the agent runs, kept checkable: an attribute is
/// edited at most once, and only after its current version was delivered,
/// so every version MISP ever held is history that must arrive exactly once
/// (an edit between two unread versions would make the first unobservable).
#[derive(Default)]
struct Edits {
    /// Every attribute version MISP held just before an edit: an added
    /// event's attribute edited later had a first version that is history
    /// too, though it is neither in the initial data nor in the final one.
    held: BTreeSet<Version>,
    edited: BTreeSet<String>,
    added_events: u32,
    touched_events: usize,
    touched_attributes: usize,
    deleted_attributes: usize,
}

impl Edits {
    fn apply(&mut self, misp: &MispSimulator, cluster: &ElasticsearchSimulator, random: &mut Random) {
        self.held.extend(attribute_versions(misp));
        let now = chrono_now();
        match random.between(0, 4) {
            0 => {
                self.added_events += 1;
                misp.add_events(stamped(fresh_events(3, 4, now, self.added_events), now));
            }
            1 => {
                // The whole event comes again: its attributes keep their
                // `_id`s, so nothing may be added to the history.
                let events = misp.events();
                let event = &events[random.between(0, events.len() as u64) as usize];
                if let Some(uuid) = event["uuid"].as_str() {
                    misp.edit(Edit::TouchEvent(uuid.to_owned(), now));
                    self.touched_events += 1;
                }
            }
            choice => {
                let Some(uuid) = self.delivered_unedited_attribute(misp, cluster, random, now) else {
                    return;
                };
                self.edited.insert(uuid.clone());
                if choice == 2 {
                    misp.edit(Edit::TouchAttribute(uuid, now));
                    self.touched_attributes += 1;
                } else {
                    misp.edit(Edit::DeleteAttribute(uuid, now));
                    self.deleted_attributes += 1;
                }
            }
        }
    }

    /// A plain attribute flagged for detection, never edited, whose current
    /// version is in the history index and older than `now`.
    fn delivered_unedited_attribute(
        &self,
        misp: &MispSimulator,
        cluster: &ElasticsearchSimulator,
        random: &mut Random,
        now: i64,
    ) -> Option<String> {
        let delivered: BTreeSet<Version> = indexed_versions(cluster, INDEX).into_iter().collect();
        let candidates: Vec<String> = misp
            .events()
            .iter()
            .flat_map(|event| {
                let event_uuid = event["uuid"].as_str().unwrap_or_default().to_owned();
                event
                    .get("Attribute")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |attribute| (event_uuid.clone(), attribute))
            })
            .filter(|(event_uuid, attribute)| {
                let text = |name: &str| attribute[name].as_str().unwrap_or_default().to_owned();
                attribute["to_ids"] == Value::Bool(true)
                    && attribute["deleted"] != Value::Bool(true)
                    && text("timestamp") != now.to_string()
                    && !self.edited.contains(&text("uuid"))
                    && delivered.contains(&(event_uuid.clone(), text("uuid"), text("timestamp")))
            })
            .filter_map(|(_, attribute)| attribute["uuid"].as_str().map(str::to_owned))
            .collect();
        (!candidates.is_empty())
            .then(|| candidates[random.between(0, candidates.len() as u64) as usize].clone())
    }
}

/// The figures of the MISP side: requests seen, and the failures injected by kind.
fn misp_figures(misp: &MispSimulator) -> (usize, BTreeMap<String, usize>) {
    let mut by_kind = BTreeMap::new();
    for fault in misp.injected_faults() {
        let kind = format!("{fault:?}");
        *by_kind.entry(kind).or_insert(0) += 1;
    }
    (misp.searches().len(), by_kind)
}

/// The hardening issue's chaos run: everything at once, one run, exactly once at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_exactly_once() {
    let began = Instant::now();
    let mut random = Random::from_env_or_clock();
    let misp = MispSimulator::start(misp_events(100, 5)).await;
    let mut cluster = ElasticsearchSimulator::start().await;
    cluster.set_item_rejection_rate(ITEM_429_RATE);
    // Slow answers on both sides keep pages and bulk requests in flight
    // when a kill lands, and spread the first sync over several kills.
    cluster.set_delay(Some(Duration::from_millis(20)));
    misp.set_delay(Some(Duration::from_millis(300)));
    misp.set_exact_failure_rate(MISP_FAILURE_PERCENT, misp_failures(), random.between(1, u64::MAX));
    let initial_versions = attribute_versions(&misp);
    assert!(
        initial_versions.len() >= 400,
        "{} attributes",
        initial_versions.len()
    );
    // Keyset paging: the documented mode that never skips an event edited
    // while a poll walks the pages (offset paging can, see docs/inputs/httpjson.md).
    let mut workspace = Workspace::with_module_vars(&misp, &cluster.url(), "    var.paging: keyset\n");

    let outage_start = Duration::from_millis(random.between(8_000, 20_000));
    let window = outage_start + OUTAGE + Duration::from_secs(20);
    let steps = schedule(&mut random, outage_start, window);
    let mut edits = Edits::default();
    let mut pending_after_kills = Vec::new();
    let mut kills_during_outage = 0;
    let mut outage: Option<Instant> = None;
    let mut outage_length = Duration::ZERO;

    let chaos_start = Instant::now();
    let mut agent = workspace.spawn(false);
    for (at, step) in steps {
        tokio::time::sleep_until((chaos_start + at).into()).await;
        match step {
            Step::OutageStart => {
                cluster.stop().await;
                outage = Some(Instant::now());
                eprintln!("{:>6.1} s: cluster down", chaos_start.elapsed().as_secs_f64());
            }
            Step::OutageEnd => {
                // The outage counts from the moment the listener was closed.
                if let Some(since) = outage {
                    tokio::time::sleep_until((since + OUTAGE).into()).await;
                }
                cluster.restart().await;
                outage_length = outage.take().map_or(Duration::ZERO, |since| since.elapsed());
                eprintln!(
                    "{:>6.1} s: cluster back after {:.1} s",
                    chaos_start.elapsed().as_secs_f64(),
                    outage_length.as_secs_f64()
                );
            }
            Step::Edit => edits.apply(&misp, &cluster, &mut random),
            Step::Kill => {
                assert!(
                    agent.is_running(),
                    "the agent stopped by itself before kill {}\n{}",
                    pending_after_kills.len() + 1,
                    agent.log_tail()
                );
                agent.kill_9();
                kills_during_outage += usize::from(outage.is_some());
                pending_after_kills.push(workspace.queue_pending_events());
                eprintln!(
                    "{:>6.1} s: kill -9 #{}{}; {} events left in the queue, {} history documents, {} items 429'd so far",
                    chaos_start.elapsed().as_secs_f64(),
                    pending_after_kills.len(),
                    if outage.is_some() { " (cluster down)" } else { "" },
                    pending_after_kills.last().copied().unwrap_or(0),
                    cluster.document_count(INDEX),
                    cluster.items_rejected_with_429(),
                );
                agent = workspace.spawn(false);
            }
        }
    }
    let chaos_length = chaos_start.elapsed();
    assert_eq!(pending_after_kills.len(), KILLS);
    assert!(outage_length >= OUTAGE, "{outage_length:?}");

    // The faults stay on: the agent has to converge through them.
    let mut expected: BTreeSet<Version> = initial_versions
        .union(&attribute_versions(&misp))
        .cloned()
        .collect();
    expected.extend(edits.held.iter().cloned());
    let drained = wait_for(PATIENCE, || {
        count_history(&cluster, &expected).lost.is_empty()
            && indexed_records(&cluster, LATEST_INDEX)
                .into_iter()
                .collect::<BTreeSet<_>>()
                == valid_records(&misp, chrono_now())
    })
    .await;
    let count = count_history(&cluster, &expected);
    assert!(
        drained,
        "{} of {} versions lost after the chaos, first: {:?}\n{}",
        count.lost.len(),
        expected.len(),
        count.lost.first(),
        agent.log_tail()
    );
    // Two more polls (keyset re-reads the boundary second) must add nothing.
    let searches = misp.searches().len();
    let polled = wait_for(PATIENCE, || misp.searches().len() >= searches + 4).await;
    assert!(polled, "{}", agent.log_tail());
    let status = tokio::task::block_in_place(|| agent.terminate());
    assert!(status.success(), "{status}\n{}", agent.log_tail());
    let total = began.elapsed();

    let count = count_history(&cluster, &expected);
    let (requests, failures) = misp_figures(&misp);
    let failed: usize = failures.values().sum();
    let current = indexed_records(&cluster, LATEST_INDEX).len();
    let valid = valid_records(&misp, chrono_now()).len();
    eprintln!(
        "\nchaos figures:
  kill -9: {KILLS} ({kills_during_outage} while the cluster was down), {} with unacknowledged events in the queue
  cluster outage: {:.1} s, starting {:.1} s into the run
  bulk items answered 429: {} (rate {ITEM_429_RATE})
  MISP restSearch requests: {requests}, answered normally {}, failed on purpose {failed} ({:.1} %): {failures:?}
  MISP edits during the run: {} events added, {} events touched, {} attributes edited, {} attributes deleted
  history documents: expected {}, found {}, distinct {}, duplicates {}, lost {}, unexpected {}
  current-state documents: expected {valid}, found {current}
  chaos phase {:.1} s, total runtime {:.1} s",
        pending_after_kills.iter().filter(|pending| **pending > 0).count(),
        outage_length.as_secs_f64(),
        outage_start.as_secs_f64(),
        cluster.items_rejected_with_429(),
        requests - failed,
        100.0 * failed as f64 / requests.max(1) as f64,
        edits.added_events,
        edits.touched_events,
        edits.touched_attributes,
        edits.deleted_attributes,
        expected.len(),
        count.documents,
        count.distinct,
        count.duplicates,
        count.lost.len(),
        count.unexpected.len(),
        chaos_length.as_secs_f64(),
        total.as_secs_f64(),
    );

    assert_history_exactly_once(&cluster, &expected);
    assert_current_state(&cluster, &misp, chrono_now());
    assert_eq!(
        workspace.queue_pending_events(),
        0,
        "the queue is empty after a graceful stop"
    );
    assert!(
        pending_after_kills.iter().any(|pending| *pending > 0),
        "some kill landed with unacknowledged events in the queue: {pending_after_kills:?}"
    );
    assert!(
        kills_during_outage > 0,
        "kills landed while the cluster was down too"
    );
    assert!(cluster.items_rejected_with_429() > 0, "the 429s were exercised");
    let share = failed as f64 / requests as f64;
    assert!(
        requests >= 50 && (0.25..=0.35).contains(&share),
        "about 30 % of {requests} MISP requests failed: {failed}"
    );
    assert!(
        edits.added_events + edits.touched_attributes as u32 > 0,
        "later polls had new work"
    );
}

/// A tmpfs mounted on a folder for the test's life; unmounted when dropped,
/// also when the test panics.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`) on `path`, or says why it cannot.
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        fs::create_dir_all(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "threatbeat-chaos",
            ])
            .arg(path)
            .output()
            .map_err(|error| format!("mount(8) does not run: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Busy (a process still holds a file): detach it now, freed when let go.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Mounts stacked one inside the other, unmounted innermost first.
struct Mounts(Vec<Tmpfs>);

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(mount) = self.0.pop() {
            drop(mount);
        }
    }
}

/// Writes zeros to `path` until the file system says it is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = File::create(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(count) => written += count as u64,
            Err(error) if error.raw_os_error() == Some(ENOSPC) => break,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    // A partial page may still take a few bytes: write them one by one.
    while file.write(&[0u8]).is_ok_and(|count| count == 1) {
        written += 1;
    }
    written
}

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;

/// The agent's log lines that report a full disk.
fn enospc_lines(agent: &AgentProcess) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|line| line.contains("No space left on device") || line.contains("os error 28"))
        .map(str::to_owned)
        .collect()
}

/// One full-disk phase's figures.
struct Phase {
    name: &'static str,
    filler_bytes: u64,
    full_for: Duration,
    documents_when_full: usize,
    documents_when_freed: usize,
    errors: Vec<String>,
    recovered_in: Duration,
}

/// Fills the file system holding `folder` while the agent runs and MISP
/// gets new events, holds it full, checks the agent rides it out (running,
/// no panic, a clear error in its log), frees it and waits until every
/// version is delivered and the current state right, without a restart.
async fn full_phase(
    name: &'static str,
    folder: &Path,
    misp: &MispSimulator,
    cluster: &ElasticsearchSimulator,
    workspace: &mut Workspace,
    agent: &mut AgentProcess,
    salt: u32,
) -> Phase {
    let errors_before = enospc_lines(agent).len();
    let filler = folder.join("filler");
    let filler_bytes = fill(&filler);
    let full_at = Instant::now();
    let documents_when_full = cluster.document_count(INDEX);
    // New work while it is full, so that writes are due.
    misp.add_events(stamped(fresh_events(5, 4, chrono_now(), salt), chrono_now()));
    let hit = wait_for(PATIENCE, || enospc_lines(agent).len() > errors_before).await;
    assert!(hit, "{name}: no write hit the full disk\n{}", agent.log_tail());
    // It stays full a while: the agent must ride it out, not crash or spin.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.is_running(),
        "{name}: the agent died on a full disk\n{}",
        agent.log_tail()
    );
    let log = agent.log();
    assert!(!log.contains("panicked"), "{name}: a panic on a full disk\n{log}");
    let errors = enospc_lines(agent)[errors_before..].to_vec();
    let documents_when_freed = cluster.document_count(INDEX);
    let full_for = full_at.elapsed();

    fs::remove_file(&filler).unwrap_or_else(|error| panic!("{}: {error}", filler.display()));
    let freed_at = Instant::now();
    let expected = attribute_versions(misp);
    let delivered = wait_for(PATIENCE, || {
        count_history(cluster, &expected).lost.is_empty()
            && indexed_records(cluster, LATEST_INDEX)
                .into_iter()
                .collect::<BTreeSet<_>>()
                == valid_records(misp, chrono_now())
    })
    .await;
    if !delivered {
        let count = count_history(cluster, &expected);
        let current = indexed_records(cluster, LATEST_INDEX).len();
        let log = agent.log();
        let last_error = log
            .lines()
            .rev()
            .find(|line| line.contains("ERROR"))
            .unwrap_or("");
        // Jammed or lost? A restart tells them apart.
        let status = tokio::task::block_in_place(|| agent.terminate());
        *agent = workspace.spawn(false);
        let restarted_at = Instant::now();
        let after_restart = wait_for(PATIENCE, || count_history(cluster, &expected).lost.is_empty()).await;
        panic!(
            "{name}: after the disk had room again the agent did not catch up by itself within {PATIENCE:?}: \
             {} of {} versions missing (first: {:?}), {current} current-state documents for {} valid\n\
             first full-disk error of the phase: {}\nlast error: {last_error}\n\
             stopped with {status}; after a restart everything arrived: {after_restart} ({:.1} s)",
            count.lost.len(),
            expected.len(),
            count.lost.first(),
            valid_records(misp, chrono_now()).len(),
            errors.first().map_or("", String::as_str),
            restarted_at.elapsed().as_secs_f64(),
        );
    }
    Phase {
        name,
        filler_bytes,
        full_for,
        documents_when_full,
        documents_when_freed,
        errors,
        recovered_in: freed_at.elapsed(),
    }
}

/// ENOSPC in the middle of a run: `path.data` on a small tmpfs, with its
/// current-state store (`current_state/`) and cursor store (`registry/`) on
/// tmpfs of their own, so that each store meets a full disk while the
/// others have room: first the whole `path.data` fills up while the first
/// sync runs (the disk queue is refused), then only the current-state
/// store, then only the cursor store. Each time the agent keeps running and says
/// why it is stuck, and once there is room again it carries on by itself;
/// at the end everything arrived exactly once and the current state is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_in_the_middle_of_a_run_loses_nothing() {
    let began = Instant::now();
    let misp = MispSimulator::start(misp_events(60, 5)).await;
    let cluster = ElasticsearchSimulator::start().await;
    // Pages come slowly, so the sync is still running when the disk fills.
    misp.set_delay(Some(Duration::from_millis(250)));
    cluster.set_delay(Some(Duration::from_millis(20)));
    let mut workspace = Workspace::new(&misp, &cluster.url());
    let data = workspace.data();
    // Declared before the agent, so dropped after it: nothing holds the
    // mounts when they are unmounted (the inner ones first).
    let mut mounts = Mounts(Vec::new());
    for (folder, size) in [("", "8m"), ("current_state", "2m"), ("registry", "1m")] {
        match Tmpfs::mount(&data.join(folder), size) {
            Ok(mount) => mounts.0.push(mount),
            Err(reason) => {
                eprintln!(
                    "SKIPPED a_full_disk_in_the_middle_of_a_run_loses_nothing: cannot mount a tmpfs on {} ({reason}); it needs root or CAP_SYS_ADMIN",
                    data.join(folder).display()
                );
                return;
            }
        }
    }

    let mut agent = workspace.spawn(false);
    let first = misp.events().len();
    let started = wait_for(PATIENCE, || cluster.document_count(INDEX) >= 60).await;
    assert!(started, "{}", agent.log_tail());
    let mut phases = Vec::new();
    for (salt, (name, folder)) in [
        ("path.data during the first sync", ""),
        ("the current-state store", "current_state"),
        ("the cursor store", "registry"),
    ]
    .into_iter()
    .enumerate()
    {
        let phase = full_phase(
            name,
            &data.join(folder),
            &misp,
            &cluster,
            &mut workspace,
            &mut agent,
            salt as u32 + 1,
        )
        .await;
        phases.push(phase);
    }
    // Everything arrived; the pipeline also needs one batch whose cursor is
    // stored after the last full disk before its run counts as clean.
    let settled = wait_for(PATIENCE, || {
        let log = agent.log();
        match (log.rfind("No space left"), log.rfind("cursor=true")) {
            (Some(error), Some(stored)) => stored > error,
            (None, _) => true,
            (Some(_), None) => false,
        }
    })
    .await;
    assert!(
        settled,
        "no batch was stored after the disk had room again:\n{}",
        agent.log_tail()
    );
    let status = tokio::task::block_in_place(|| agent.terminate());

    let expected = attribute_versions(&misp);
    let count = count_history(&cluster, &expected);
    eprintln!("\nfull-disk figures (tmpfs: path.data 8 MiB, current_state/ 2 MiB, registry/ 1 MiB):");
    for phase in &phases {
        eprintln!(
            "  {}: filler {} bytes, full {:.1} s, history documents {} when full, {} when freed; all delivered {:.1} s after; {} ENOSPC log lines, first: {}",
            phase.name,
            phase.filler_bytes,
            phase.full_for.as_secs_f64(),
            phase.documents_when_full,
            phase.documents_when_freed,
            phase.recovered_in.as_secs_f64(),
            phase.errors.len(),
            phase.errors.first().map_or("", String::as_str),
        );
    }
    eprintln!(
        "  history documents: expected {} ({first} events + 15 added while full), found {}, duplicates {}, lost {}
  exit status after SIGTERM: {status}; total runtime {:.1} s",
        expected.len(),
        count.documents,
        count.duplicates,
        count.lost.len(),
        began.elapsed().as_secs_f64(),
    );
    assert_history_exactly_once(&cluster, &expected);
    assert_current_state(&cluster, &misp, chrono_now());
    assert_eq!(
        workspace.queue_pending_events(),
        0,
        "the queue is empty after a graceful stop"
    );
    // docs/operations.md: a first SIGTERM delivers what is in flight and exits 0.
    assert!(
        status.success(),
        "a graceful stop after the disk had room again exited {status}\n{}",
        agent.log_tail()
    );
    drop(mounts);
}
