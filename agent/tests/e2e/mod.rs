//! Running the real `threatbeat` binary against the MISP and Elasticsearch
//! simulators: a home configured for them (the process guard and waits are
//! `threatbeat_test_support::agent`'s), and the expected set of (event uuid,
//! attribute uuid) pairs computed from what MISP serves.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use threatbeat_core::CursorStore;
use threatbeat_outputs::queue::{Compression, DiskQueue, DiskSettings, FsyncPolicy, QueueStore};
use threatbeat_test_support::agent::AgentHome;
pub use threatbeat_test_support::agent::{wait_until_async as wait_for, AgentProcess, PATIENCE};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{fake_uuid, fixtures_dir, generate_events, MispSimulator, API_KEY};

// History counted per attribute version, for runs that edit MISP data;
// not every test crate including this module uses it.
#[allow(dead_code)]
pub mod versions;

/// The index the MISP fileset writes to (its manifest's `index:`).
pub const INDEX: &str = "logs-ti_threatbeat.misp-default";
/// The current-state index of the MISP fileset.
pub const LATEST_INDEX: &str = "logs-ti_threatbeat_latest.misp";
/// The pipeline id, which names the cursor file.
pub const PIPELINE: &str = "threatintel/misp";
/// Events per MISP page (`var.limit`), small so that a few hundred attributes span many pages.
pub const PAGE_LIMIT: usize = 5;

const QUEUE_MAX_SIZE: u64 = 256 * 1024;
const QUEUE_SEGMENT_SIZE: u64 = 32 * 1024;

/// Generated events (4 plain attributes types, recent timestamps) plus two real
/// MISP events whose attributes sit inside objects, so both record shapes flow.
pub fn misp_events(generated: usize, attributes_each: usize) -> Vec<Value> {
    let start = chrono_now() - 3600;
    let mut events = generate_events(generated, attributes_each, start);
    for file in [
        "dcso/samples/5bf26acf-d95c-4892-a05d-4db5950d210f.json",
        "eset/cloudmensis/cloudmensis.misp.json",
    ] {
        let path = fixtures_dir().join(file);
        let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        events.push(serde_json::from_str(&text).unwrap());
    }
    events
}

/// `count` generated events stamped from `start`, with uuids no other call
/// to [`generate_events`] produces (`salt` keeps batches apart).
pub fn fresh_events(count: usize, attributes_each: usize, start: i64, salt: u32) -> Vec<Value> {
    let mut events = generate_events(count, attributes_each, start);
    for (event_number, event) in events.iter_mut().enumerate() {
        event["uuid"] = json!(fake_uuid(0x100 + salt, event_number as u64));
        event["info"] = json!(format!("fresh event {salt}/{event_number}"));
        if let Some(attributes) = event["Attribute"].as_array_mut() {
            for (attribute_number, attribute) in attributes.iter_mut().enumerate() {
                let number = (event_number * attributes_each + attribute_number) as u64;
                attribute["uuid"] = json!(fake_uuid(0x200 + salt, number));
            }
        }
    }
    events
}

/// Unix time now.
pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Every attribute MISP holds, plain and in objects, with its event's uuid;
/// deleted ones left out.
pub fn live_attributes(misp: &MispSimulator) -> Vec<(String, Value)> {
    let mut attributes = Vec::new();
    for event in misp.events() {
        let event_uuid = event["uuid"].as_str().unwrap().to_owned();
        let plain = event
            .get("Attribute")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let in_objects = event
            .get("Object")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|object| object.get("Attribute").and_then(Value::as_array))
            .flatten();
        for attribute in plain.chain(in_objects) {
            if attribute.get("deleted") != Some(&Value::Bool(true)) {
                attributes.push((event_uuid.clone(), attribute.clone()));
            }
        }
    }
    attributes
}

/// Every (event uuid, attribute uuid) MISP holds, plain and object attributes,
/// deleted ones excluded: one document each is expected.
pub fn expected_records(misp: &MispSimulator) -> BTreeSet<(String, String)> {
    let records: BTreeSet<(String, String)> = live_attributes(misp)
        .into_iter()
        .map(|(event_uuid, attribute)| (event_uuid, attribute["uuid"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        records.len(),
        misp.attribute_count(),
        "attribute uuids are unique per event"
    );
    records
}

/// A field by dotted path, whether the document nests objects or uses dotted keys.
fn field<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(found) = document.get(path) {
        return Some(found);
    }
    let (head, rest) = path.split_once('.')?;
    let mut prefix = head.to_owned();
    let mut remainder = rest;
    loop {
        if let Some(inner) = document.get(&prefix) {
            if let Some(found) = field(inner, remainder) {
                return Some(found);
            }
        }
        let (next, rest) = remainder.split_once('.')?;
        prefix = format!("{prefix}.{next}");
        remainder = rest;
    }
}

/// The (event uuid, attribute uuid) of every document in `index`, one entry per document.
pub fn indexed_records(cluster: &ElasticsearchSimulator, index: &str) -> Vec<(String, String)> {
    cluster
        .documents(index)
        .iter()
        .map(|document| {
            let source = &document.source;
            let text = |path: &str| field(source, path).and_then(Value::as_str).map(str::to_owned);
            let event = text("misp.uuid").unwrap_or_else(|| panic!("no misp.uuid in {source}"));
            let attribute = text("misp.attribute.uuid")
                .or_else(|| text("misp.object.attribute.uuid"))
                .unwrap_or_else(|| panic!("no attribute uuid in {source}"));
            (event, attribute)
        })
        .collect()
}

/// Asserts the history index holds exactly one document per expected record:
/// N documents, N distinct `_id`s, and the same (event, attribute) pairs; the
/// current-state index holds at most one document per record and nothing
/// else; no document went anywhere else.
pub fn assert_exactly_once(cluster: &ElasticsearchSimulator, expected: &BTreeSet<(String, String)>) {
    let current = indexed_records(cluster, LATEST_INDEX);
    let distinct_current: BTreeSet<(String, String)> = current.iter().cloned().collect();
    assert_eq!(
        current.len(),
        distinct_current.len(),
        "one current-state document per attribute"
    );
    assert!(
        distinct_current.is_subset(expected),
        "current-state documents only of known attributes"
    );
    let records = indexed_records(cluster, INDEX);
    let distinct: BTreeSet<(String, String)> = records.iter().cloned().collect();
    assert_eq!(
        records.len(),
        distinct.len(),
        "one document per attribute, no duplicates"
    );
    let missing: Vec<_> = expected.difference(&distinct).take(5).collect();
    let unexpected: Vec<_> = distinct.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing (first 5): {missing:?}; unexpected (first 5): {unexpected:?}"
    );
    assert_eq!(cluster.document_count(INDEX), expected.len(), "N documents");
    assert_eq!(cluster.ids(INDEX).len(), expected.len(), "N distinct _ids");
    let indices = cluster.indices();
    assert!(
        indices == [INDEX] || indices == [INDEX, LATEST_INDEX],
        "nothing went elsewhere (no dead letters): {indices:?}"
    );
}

/// Every attribute of `misp` still valid at `now` (last activity within the
/// fileset's default 90 days, not deleted): what the current-state index must hold.
pub fn valid_records(misp: &MispSimulator, now: i64) -> BTreeSet<(String, String)> {
    let oldest = now - 90 * 86_400;
    live_attributes(misp)
        .into_iter()
        .filter(|(_, attribute)| {
            let stamp = attribute["timestamp"]
                .as_str()
                .and_then(|text| text.parse::<i64>().ok())
                .unwrap_or(0);
            stamp >= oldest
        })
        .map(|(event_uuid, attribute)| (event_uuid, attribute["uuid"].as_str().unwrap().to_owned()))
        .collect()
}

/// Asserts the current-state index holds exactly the attributes valid at `now`, once each.
pub fn assert_current_state(cluster: &ElasticsearchSimulator, misp: &MispSimulator, now: i64) {
    let current = indexed_records(cluster, LATEST_INDEX);
    let distinct: BTreeSet<(String, String)> = current.iter().cloned().collect();
    assert_eq!(
        current.len(),
        distinct.len(),
        "one current-state document per attribute"
    );
    let valid = valid_records(misp, now);
    assert!(!valid.is_empty());
    let missing: Vec<_> = valid.difference(&distinct).take(5).collect();
    let expired: Vec<_> = distinct.difference(&valid).take(5).collect();
    assert!(
        missing.is_empty() && expired.is_empty(),
        "current state: missing (first 5): {missing:?}; not valid (first 5): {expired:?}"
    );
}

/// A small deterministic xorshift generator; the seed is printed so a failing run can be replayed.
pub struct Random(u64);

impl Random {
    /// Seeded from `THREATBEAT_E2E_SEED` or the clock.
    pub fn from_env_or_clock() -> Self {
        let seed = std::env::var("THREATBEAT_E2E_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.subsec_nanos() as u64 | 1)
            });
        eprintln!("random seed {seed} (set THREATBEAT_E2E_SEED={seed} to replay)");
        Self(seed.max(1))
    }

    /// A value in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        low + x % (high - low).max(1)
    }
}

/// A temporary agent home: `threatbeat.yml`, `modules.d/threatintel.yml`, `data/`.
pub struct Workspace {
    home: AgentHome,
    /// `threatbeat.yml` as written.
    main: String,
}

impl Workspace {
    /// Writes a config polling `misp` every second (`var.first_interval` reaching
    /// back far enough for the real events) into the cluster at `es_url`.
    pub fn new(misp: &MispSimulator, es_url: &str) -> Self {
        Self::with_module_vars(misp, es_url, "")
    }

    /// [`Workspace::new`] with more lines under the fileset (`var.paging: keyset\n`,
    /// each indented by four spaces).
    pub fn with_module_vars(misp: &MispSimulator, es_url: &str, extra_vars: &str) -> Self {
        let home = AgentHome::new(Path::new(env!("CARGO_BIN_EXE_threatbeat")));
        let main = format!(
            "logging.level: info
output.elasticsearch:
  hosts: [\"{es_url}\"]
  bulk_max_size: 25
  timeout: 5s
  backoff.init: 100ms
  backoff.max: 1s
queue.disk:
  path: diskqueue
  max_size: {QUEUE_MAX_SIZE}
  segment_size: {QUEUE_SEGMENT_SIZE}
  flush.min_events: 25
  flush.timeout: 50ms
  shutdown_timeout: 60s
"
        );
        home.write("threatbeat.yml", &main);
        let module = format!(
            "- module: threatintel
  misp:
    enabled: true
    var.url: {url}
    var.api_token: {API_KEY}
    var.interval: 1s
    var.first_interval: 4000d
    var.limit: {PAGE_LIMIT}
    var.http_client_timeout: 10s
{extra_vars}",
            url = misp.url("/events/restSearch"),
        );
        home.write("modules.d/threatintel.yml", &module);
        Self { home, main }
    }

    /// Sets `queue.disk.compression` (`none` or `lz4`) for the next agent started.
    pub fn set_queue_compression(&self, setting: &str) {
        let main = self.main.replace(
            "  path: diskqueue\n",
            &format!("  path: diskqueue\n  compression: {setting}\n"),
        );
        assert_ne!(main, self.main, "the queue section is where it was");
        self.home.write("threatbeat.yml", &main);
    }

    /// The format versions in the headers of the queue's segment files now.
    pub fn queue_segment_versions(&self) -> BTreeSet<u32> {
        let Ok(entries) = std::fs::read_dir(self.data().join("diskqueue")) else {
            return BTreeSet::new();
        };
        entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                (path.extension()? == "seg").then_some(())?;
                let bytes = std::fs::read(&path).ok()?;
                Some(u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?))
            })
            .collect()
    }

    /// `path.data`.
    pub fn data(&self) -> PathBuf {
        self.home.path("data")
    }

    /// The stored cursor of the MISP pipeline.
    pub fn cursor(&self) -> Option<Value> {
        CursorStore::new(&self.data()).load(PIPELINE).unwrap()
    }

    /// Unacknowledged events left in the disk queue (opens it, so only once the agent is gone).
    pub fn queue_pending_events(&self) -> u64 {
        let queue = DiskQueue::open(DiskSettings {
            path: self.data().join("diskqueue"),
            max_size: QUEUE_MAX_SIZE,
            segment_size: QUEUE_SEGMENT_SIZE,
            fsync: FsyncPolicy::Batch,
            compression: Compression::None,
        })
        .unwrap();
        queue.pending_events()
    }

    /// Starts `threatbeat run -e` (`--once` for one pass), logging to `run-<n>.log`.
    pub fn spawn(&mut self, once: bool) -> AgentProcess {
        match once {
            true => self.home.spawn_with(&["run", "--once"]),
            false => self.home.spawn(),
        }
    }
}
