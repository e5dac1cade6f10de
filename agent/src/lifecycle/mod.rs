//! The current state of a fileset's indicators, maintained by the agent (the
//! IOC lifecycle), so that Kibana's prebuilt Indicator Match rules see every
//! valid indicator exactly once and no expired one, with no transform.
//!
//! Besides each poll's documents (the *history*, marked
//! `labels.is_ioc_transform_source: "true"` so the rules skip them), a fileset
//! with a `current_state:` block keeps one document per indicator in a
//! regular index (`logs-ti_threatbeat_latest.<fileset>`):
//!
//! * written with `index` by a stable `_id` derived from the indicator's
//!   identity fields, `@timestamp` = when it was written, the feed's own time
//!   kept in `threat.indicator.modified` — an edit replaces it;
//! * refreshed (`update` of `@timestamp`) before it leaves the rules'
//!   `now-30d` window, while the indicator is valid;
//! * deleted once its expiry passes, or when a poll delivers it already expired.
//!
//! All of it goes through the same output and disk queue as the history, and
//! the [`store`] remembers which indicators have a document, what it holds
//! and when it expires, so that a record read again unchanged is not written
//! again. Order of writes: a batch's documents and deletes are queued, then
//! the store records them, then the input's cursor moves. A crash before the
//! store has recorded a batch leaves its cursor behind, so the input delivers
//! the records again and they are written and recorded then; expiry and
//! refresh steps are recorded after they are queued and simply redone.

pub mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use threatbeat_core::{deserialize_at, ConfigError, EncodedEvent, Event, FieldPath, OpType, Origin};

pub use self::store::{Entry, IndicatorStore, Key, Reader, StoreError};

/// The label that tells the rules a document is a history copy.
const TRANSFORM_SOURCE_LABEL: &str = "labels.is_ioc_transform_source";
/// How many due indicators one sweep step handles.
const SWEEP_BATCH: usize = 1000;

/// `current_state:` in a fileset manifest, after templating.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentStateConfig {
    /// Maintain the current-state index (default true).
    #[serde(default = "yes", deserialize_with = "threatbeat_core::deserialize_switch")]
    pub enabled: bool,
    /// Keep sending each poll's documents to the data stream (default true).
    #[serde(default = "yes", deserialize_with = "threatbeat_core::deserialize_switch")]
    pub history: bool,
    /// The current-state index.
    pub index: String,
    /// The fields whose values identify an indicator (its `_id`).
    pub id_fields: Vec<String>,
    /// A date field (RFC 3339 or epoch seconds) holding when the indicator
    /// expires, set by the fileset's processors; without it, never.
    #[serde(default)]
    pub expires_at_field: Option<String>,
    /// How long an indicator whose record has no expiry stays valid after
    /// the poll that last delivered it (feeds without dates); without it,
    /// such an indicator never expires.
    #[serde(default)]
    pub valid_for: Option<String>,
    /// How long a written document may go without a refresh (default `7d`);
    /// must stay well under the rules' 30 days.
    #[serde(default = "seven_days")]
    pub refresh_after: String,
    /// How often expiry and refresh are checked (the fileset's interval).
    pub check_interval: String,
    /// Every complete poll answers the source's whole list (a blocklist):
    /// an indicator that a complete poll no longer holds has ended and its
    /// document is deleted. Default false.
    #[serde(default, deserialize_with = "threatbeat_core::deserialize_switch")]
    pub full_list: bool,
    /// Fields set on every current-state document (dotted names), e.g. the
    /// `event.module` the rules read where the history keeps another one.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

fn yes() -> bool {
    true
}

fn seven_days() -> String {
    "7d".to_owned()
}

/// [`CurrentStateConfig`] checked: paths parsed, durations read.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentStateSettings {
    /// Keep the history stream.
    pub history: bool,
    /// The current-state index.
    pub index: String,
    /// The identity fields.
    pub id_fields: Vec<FieldPath>,
    /// The expiry field.
    pub expires_at: Option<FieldPath>,
    /// The validity of an indicator whose record has no expiry, from when it was read.
    pub valid_for: Option<Duration>,
    /// Refresh a document written longer ago than this.
    pub refresh_after: Duration,
    /// Check expiry and refresh this often.
    pub check_interval: Duration,
    /// Fields set on every current-state document.
    pub fields: Vec<(FieldPath, Value)>,
    /// A complete poll is the whole list: what it lacks has ended.
    pub full_list: bool,
}

impl CurrentStateSettings {
    /// Checks `value` (a manifest's templated `current_state:`); `None` when
    /// the block is absent or `enabled: false`.
    pub fn parse(value: &Value, origin: &Origin) -> Result<Option<Self>, ConfigError> {
        if value.is_null() {
            return Ok(None);
        }
        let config: CurrentStateConfig = deserialize_at(value, origin)?;
        if !config.enabled {
            return Ok(None);
        }
        if config.id_fields.is_empty() {
            return Err(origin
                .child("id_fields")
                .error("name at least one field that identifies an indicator"));
        }
        let path = |text: &str, key: String| {
            FieldPath::parse(text).map_err(|error| origin.child(key).error(error.to_string()))
        };
        let id_fields = config
            .id_fields
            .iter()
            .enumerate()
            .map(|(position, field)| path(field, format!("id_fields.{position}")))
            .collect::<Result<_, _>>()?;
        let expires_at = config
            .expires_at_field
            .as_deref()
            .map(|field| path(field, "expires_at_field".to_owned()))
            .transpose()?;
        let duration = |text: &str, key: &str| {
            threatbeat_core::duration::parse_duration(text).map_err(|error| origin.child(key).error(error))
        };
        let refresh_after = duration(&config.refresh_after, "refresh_after")?;
        let valid_for = config
            .valid_for
            .as_deref()
            .map(|text| duration(text, "valid_for"))
            .transpose()?;
        if refresh_after.is_zero() || refresh_after >= Duration::from_secs(30 * 86_400) {
            return Err(origin.child("refresh_after").error(
                "must be more than 0 and less than 30d, the window of the prebuilt rules' threat query",
            ));
        }
        let fields = config
            .fields
            .iter()
            .map(|(name, value)| Ok((path(name, format!("fields.{name}"))?, value.clone())))
            .collect::<Result<_, ConfigError>>()?;
        Ok(Some(Self {
            fields,
            full_list: config.full_list,
            history: config.history,
            index: config.index,
            id_fields,
            expires_at,
            valid_for,
            refresh_after,
            check_interval: duration(&config.check_interval, "check_interval")?.max(Duration::from_secs(1)),
        }))
    }
}

/// The current state of one pipeline: its settings and its store.
pub struct CurrentState {
    settings: CurrentStateSettings,
    store: IndicatorStore,
    /// With `full_list`: the indicators the poll in progress delivered so
    /// far, from its first batch; `None` until a poll's first batch is seen
    /// (after a restart, the poll under way may have begun before it).
    listing: Mutex<Option<HashSet<Key>>>,
    /// `threat.indicator.modified`, where a current-state document keeps the feed's time.
    modified: FieldPath,
    /// [`TRANSFORM_SOURCE_LABEL`].
    history_label: FieldPath,
    /// The top-level fields a current-state document changes (`@timestamp`,
    /// `threat`, those of the configured `fields`): only they are copied
    /// from the history document, the rest is written from it as it is.
    changed_roots: Vec<String>,
}

/// A batch (or part of one) ready to publish, and what to record once it is queued.
pub struct Prepared {
    /// The history events, labelled, in the batch's order (none with
    /// `history: false`); written first.
    pub history: Vec<Event>,
    /// Current-state documents and deletes, in the batch's order, serialised;
    /// written after the history.
    pub state: Vec<EncodedEvent>,
    /// What to record once they are queued.
    pub pending: Pending,
}

/// What to record of a prepared batch once it is queued ([`CurrentState::commit`]).
#[derive(Default)]
pub struct Pending {
    /// What to record of the written indicators.
    pub records: Vec<(String, Entry)>,
    /// Indicators whose delete was written: forgotten.
    pub deleted: Vec<String>,
    /// Every valid indicator the batch held, written or not.
    pub listed: Vec<Key>,
}

impl Pending {
    /// Adds what a later part of the same batch holds.
    pub fn join(&mut self, later: Pending) {
        self.records.extend(later.records);
        self.deleted.extend(later.deleted);
        self.listed.extend(later.listed);
    }
}

/// Why a batch could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A current-state document could not be serialised.
    #[error("cannot serialise a current-state document: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One step of expiry and refresh, ready to publish.
pub struct Sweep {
    /// Deletes of expired indicators, then refreshes of stale ones.
    pub events: Vec<Event>,
    /// The expired indicators: forgotten once queued.
    pub expired: Vec<String>,
    /// The refreshed indicators: marked written once queued.
    pub refreshed: Vec<String>,
}

impl CurrentState {
    /// Opens (or creates) the store at `store_path` (see [`store_path`]).
    pub fn open(settings: CurrentStateSettings, store_path: &Path) -> Result<Self, StoreError> {
        let constant = |path: &str| FieldPath::parse(path).expect("a valid constant path");
        let modified = constant("threat.indicator.modified");
        let mut changed_roots = vec!["@timestamp".to_owned(), modified.first().to_owned()];
        for (path, _) in &settings.fields {
            if !changed_roots.iter().any(|root| root == path.first()) {
                changed_roots.push(path.first().to_owned());
            }
        }
        Ok(Self {
            store: IndicatorStore::open(store_path)?,
            settings,
            listing: Mutex::new(None),
            modified,
            history_label: constant(TRANSFORM_SOURCE_LABEL),
            changed_roots,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &CurrentStateSettings {
        &self.settings
    }

    /// The indicators with a current-state document.
    pub fn store(&self) -> &IndicatorStore {
        &self.store
    }

    /// Turns a batch of history events (or a part of one: parts of the same
    /// batch may be prepared at once, on different threads) into what to
    /// publish: the history (labelled, unless the history is switched off),
    /// one current-state document per valid indicator that is new, changed
    /// or due for a refresh, a delete per known indicator that arrived
    /// expired. Nothing is recorded until [`CurrentState::commit`].
    pub fn prepare(&self, batch: Vec<Event>, now: i64) -> Result<Prepared, PrepareError> {
        let now_text = format_unix(now);
        let known_entries = self.store.reader()?;
        let mut history = Vec::with_capacity(batch.len());
        let mut state = Vec::new();
        let mut pending = Pending::default();
        for mut event in batch {
            let mut unchanged = false;
            if let Some(id) = self.identity(&event) {
                let expires_at = self.expires_at(&event, now);
                let known = known_entries.get(&id)?;
                if expires_at > now {
                    if self.settings.full_list {
                        pending.listed.extend(store::key(&id));
                    }
                    let digest = digest(&event);
                    match known {
                        // Read again unchanged (a feed that returns its whole
                        // list, MISP's inclusive cursor) and fresh enough: the
                        // document in the index is already this one. Only a
                        // moved expiry is recorded.
                        Some(entry)
                            if entry.digest == digest
                                && now - entry.written_at < self.settings.refresh_after.as_secs() as i64 =>
                        {
                            unchanged = true;
                            if entry.expires_at != expires_at {
                                pending.records.push((id, Entry { expires_at, ..entry }));
                            }
                        }
                        _ => {
                            state.push(self.state_document(&event, &id, &now_text)?);
                            pending.records.push((
                                id,
                                Entry {
                                    expires_at,
                                    written_at: now,
                                    digest,
                                },
                            ));
                        }
                    }
                } else if known.is_some() {
                    state.push(self.delete(&id).encode()?);
                    pending.deleted.push(id);
                }
            }
            // A whole list pulled again repeats every value it still holds:
            // its history records a value when it appears or changes, not
            // at every pull.
            let repeated = self.settings.full_list && unchanged;
            if self.settings.history && !current_state_only(&event) && !repeated {
                // A path through a scalar cannot be set; the document stands.
                let _ = event.set(&self.history_label, Value::String("true".to_owned()));
                history.push(event);
            }
        }
        Ok(Prepared {
            history,
            state,
            pending,
        })
    }

    /// Notes a committed batch's place in its poll (`full_list` only): the
    /// first batch of a poll starts a new listing, every batch adds the
    /// indicators it held. Called after [`CurrentState::commit`], and for
    /// batches without events too.
    pub fn note_listing(&self, starts_poll: bool, listed: Vec<Key>) {
        if !self.settings.full_list {
            return;
        }
        let mut listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        if starts_poll {
            *listing = Some(HashSet::new());
        }
        if let Some(listing) = listing.as_mut() {
            listing.extend(listed);
        }
    }

    /// At the end of a complete poll (`full_list` only): the indicators it no
    /// longer held, whose documents are to be deleted (in steps, see
    /// [`CurrentState::ended`]). A poll whose start this process did not see
    /// ends nothing, and neither does one that listed no indicator at all:
    /// an emptied list is far more likely a broken source than the end of
    /// every threat.
    pub fn end_listing(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        if !self.settings.full_list {
            return Ok(Vec::new());
        }
        let listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(listing) = listing else {
            tracing::debug!(
                pipeline,
                "the poll began before the agent started; its list ends no indicator"
            );
            return Ok(Vec::new());
        };
        if listing.is_empty() {
            tracing::warn!(pipeline, "a complete poll listed no indicator; the current state is kept (an emptied list is more likely a broken source)");
            return Ok(Vec::new());
        }
        self.store.ids_outside(&listing)
    }

    /// The deletes of indicators that ended (no longer listed), as a sweep
    /// step that [`CurrentState::swept`] records once it is queued.
    pub fn ended(&self, ids: Vec<String>) -> Sweep {
        Sweep {
            events: ids.iter().map(|id| self.delete(id)).collect(),
            expired: ids,
            refreshed: Vec::new(),
        }
    }

    /// Records what a prepared batch wrote, once it is queued: the written
    /// indicators and their expiry, and the deleted ones forgotten. The
    /// batch's cursor must move only after this succeeded, so that a crash
    /// (or a failure here) has the input deliver the records again.
    pub fn commit(&self, pending: &Pending) -> Result<(), StoreError> {
        self.store.upsert(&pending.records)?;
        self.store.remove(&pending.deleted)
    }

    /// The next step of expiry and refresh at `now`, or `None` when nothing is due.
    pub fn sweep(&self, now: i64) -> Result<Option<Sweep>, StoreError> {
        let expired = self.store.expired(now, SWEEP_BATCH)?;
        let stale_before = now - self.settings.refresh_after.as_secs() as i64;
        let refreshed: Vec<String> = self
            .store
            .written_before(stale_before, SWEEP_BATCH)?
            .into_iter()
            .filter(|id| !expired.contains(id))
            .collect();
        if expired.is_empty() && refreshed.is_empty() {
            return Ok(None);
        }
        let now_text = format_unix(now);
        let mut events: Vec<Event> = expired.iter().map(|id| self.delete(id)).collect();
        events.extend(refreshed.iter().map(|id| self.refresh(id, &now_text)));
        Ok(Some(Sweep {
            events,
            expired,
            refreshed,
        }))
    }

    /// Records a queued sweep step.
    pub fn swept(&self, sweep: &Sweep, now: i64) -> Result<(), StoreError> {
        self.store.remove(&sweep.expired)?;
        self.store.mark_written(&sweep.refreshed, now)
    }

    /// The indicator's `_id`: a digest of its identity fields, or `None`
    /// when the event has none of them (it is not an indicator).
    fn identity(&self, event: &Event) -> Option<String> {
        let mut hasher = Sha256::new();
        let mut found = false;
        for path in &self.settings.id_fields {
            let written;
            let part = match event.get(path) {
                Some(Value::String(text)) => text.as_str(),
                Some(Value::Null) | None => "",
                Some(other) => {
                    written = other.to_string();
                    written.as_str()
                }
            };
            found |= !part.is_empty();
            hasher.update(part.as_bytes());
            // A separator no field value holds, so ("ab", "c") ≠ ("a", "bc").
            hasher.update([0x1f]);
        }
        let digest = hasher.finalize();
        found.then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..20]))
    }

    /// When the indicator expires: its expiry field; else, without one (or
    /// unreadable), `valid_for` after `now`; else never.
    fn expires_at(&self, event: &Event, now: i64) -> i64 {
        let given = self
            .settings
            .expires_at
            .as_ref()
            .and_then(|path| match event.get(path) {
                Some(Value::String(text)) => chrono::DateTime::parse_from_rfc3339(text)
                    .map(|time| time.timestamp())
                    .or_else(|_| text.trim().parse::<i64>())
                    .ok(),
                Some(Value::Number(number)) => number.as_i64(),
                _ => None,
            });
        given.unwrap_or_else(|| match self.settings.valid_for {
            Some(validity) => now.saturating_add(validity.as_secs() as i64),
            None => i64::MAX,
        })
    }

    /// The current-state document of `history`, serialised: the history's
    /// fields with `@timestamp` the time it is written, the feed's time kept
    /// in `threat.indicator.modified`, and the configured `fields`.
    fn state_document(
        &self,
        history: &Event,
        id: &str,
        now_text: &str,
    ) -> Result<EncodedEvent, serde_json::Error> {
        let mut changed = Map::new();
        for root in &self.changed_roots {
            if let Some(value) = history.fields.get(root) {
                changed.insert(root.clone(), value.clone());
            }
        }
        // The feed's own time stays with the indicator; `@timestamp` says
        // when this copy was written, which is what keeps it in the rules' window.
        if let Some(source_time) = history.fields.get("@timestamp") {
            if !self.modified.exists(&changed) {
                let _ = self.modified.set(&mut changed, source_time.clone());
            }
        }
        self.stamp(&mut changed, now_text);
        self.addressed(Map::new(), id, OpType::Index)
            .encode_as(&Overlaid {
                base: &history.fields,
                changed: &changed,
            })
    }

    fn delete(&self, id: &str) -> Event {
        self.addressed(Map::new(), id, OpType::Delete)
    }

    fn refresh(&self, id: &str, now_text: &str) -> Event {
        let mut fields = Map::new();
        self.stamp(&mut fields, now_text);
        self.addressed(fields, id, OpType::Update)
    }

    /// Sets what every write of a current-state document carries: `@timestamp`
    /// the time it is written, and the configured `fields`.
    fn stamp(&self, fields: &mut Map<String, Value>, now_text: &str) {
        fields.insert("@timestamp".to_owned(), Value::String(now_text.to_owned()));
        for (path, value) in &self.settings.fields {
            // A path through a scalar cannot be set; the rest of the document stands.
            let _ = path.set(fields, value.clone());
        }
    }

    /// An event of `fields` written by `op` to the indicator `id` of the current-state index.
    fn addressed(&self, fields: Map<String, Value>, id: &str, op: OpType) -> Event {
        let mut event = Event::new(fields);
        event.set_id(id);
        event.set_index(self.settings.index.clone());
        event.set_op_type(op);
        event
    }
}

/// Where the store of `pipeline_id` lives: `<path.data>/current_state/<id>.redb`.
pub fn store_path(data_path: &Path, pipeline_id: &str) -> PathBuf {
    let name = threatbeat_core::state_name(pipeline_id);
    data_path.join("current_state").join(format!("{name}.redb"))
}

/// A digest of what the current-state document is made of: the history
/// document's fields (before the history mark).
fn digest(event: &Event) -> u64 {
    // Serialising a JSON map cannot fail; the text is only hashed.
    threatbeat_core::with_serialised(&WithoutTimestamp(&event.fields), xxhash_rust::xxh3::xxh3_64)
        .unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_64(b""))
}

/// A history document's fields with some top-level fields replaced or
/// added (`changed`), serialised as the merged map would be (keys in
/// order) without copying the rest.
struct Overlaid<'a> {
    base: &'a Map<String, Value>,
    changed: &'a Map<String, Value>,
}

impl serde::Serialize for Overlaid<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        use std::cmp::Ordering;
        let mut map = serializer.serialize_map(None)?;
        let mut base = self.base.iter().peekable();
        let mut changed = self.changed.iter().peekable();
        loop {
            let next = match (base.peek(), changed.peek()) {
                (None, None) => break,
                (Some(_), None) => base.next(),
                (None, Some(_)) => changed.next(),
                (Some((base_key, _)), Some((changed_key, _))) => match base_key.cmp(changed_key) {
                    Ordering::Less => base.next(),
                    Ordering::Greater => changed.next(),
                    Ordering::Equal => {
                        base.next();
                        changed.next()
                    }
                },
            };
            if let Some((key, value)) = next {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// An event's fields but `@timestamp`, for [`digest`]: a feed without dates
/// (OTX's export, a blocklist) gets the time it was read, which changes on
/// every pull although the indicator did not; a feed's own time changes with
/// the fields it comes from.
struct WithoutTimestamp<'a>(&'a Map<String, Value>);

impl serde::Serialize for WithoutTimestamp<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.iter().filter(|(key, _)| key.as_str() != "@timestamp") {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Whether the processors said this record is for the current state only
/// (`@metadata.current_state.history: false`, e.g. a MISP attribute deleted
/// since it was sent: its document must go, but it is no history).
fn current_state_only(event: &Event) -> bool {
    event
        .metadata
        .get("current_state")
        .and_then(|state| state.get("history"))
        == Some(&Value::Bool(false))
}

/// `2024-05-20T10:00:00.000Z`, as the `timestamp` processor writes times.
pub fn format_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// [`format_time`] of Unix seconds.
fn format_unix(unix: i64) -> String {
    format_time(chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const NOW: &str = "2026-12-05T00:00:00.000Z";

    fn current_state(fields: Value) -> (tempfile::TempDir, CurrentState) {
        let dir = tempfile::tempdir().unwrap();
        let settings = CurrentStateSettings::parse(
            &json!({"index": "latest", "id_fields": ["id"], "check_interval": "1m", "fields": fields}),
            &Origin::named("manifest.yml"),
        )
        .unwrap()
        .unwrap();
        let state = CurrentState::open(settings, &dir.path().join("store.redb")).unwrap();
        (dir, state)
    }

    /// The current-state document as it was first built: the whole history
    /// tree copied, then changed, then serialised.
    fn copied_and_changed(state: &CurrentState, history: &Event) -> String {
        let mut fields = history.fields.clone();
        if let Some(source_time) = fields.get("@timestamp").cloned() {
            if !state.modified.exists(&fields) {
                let _ = state.modified.set(&mut fields, source_time);
            }
        }
        fields.insert("@timestamp".to_owned(), json!(NOW));
        for (path, value) in &state.settings.fields {
            let _ = path.set(&mut fields, value.clone());
        }
        serde_json::to_string(&fields).unwrap()
    }

    fn assert_same_as_copied(state: &CurrentState, history: Value) {
        let history = Event::from_value(history);
        let encoded = state.state_document(&history, "the-id", NOW).unwrap();
        assert_eq!(
            std::str::from_utf8(&encoded.source).unwrap(),
            copied_and_changed(state, &history)
        );
        assert_eq!(
            (encoded.id(), encoded.index(), encoded.op_type()),
            (Some("the-id"), Some("latest"), OpType::Index)
        );
    }

    #[test]
    fn a_state_document_is_its_history_document_changed_only_where_it_must_be() {
        let (_dir, state) = current_state(json!({
            "labels.current": "yes", "event.kind": "enrichment", "zz.deep.path": 1, "a": {"b": 2}
        }));
        for history in [
            json!({"@timestamp": "2024-01-01T00:00:00.000Z", "id": "1", "misp": {"x": 1},
                   "threat": {"indicator": {"ip": "1.2.3.4"}}}),
            // the feed's time already kept; a scalar where a field goes; a
            // field replaced among others
            json!({"id": "2", "threat": {"indicator": {"modified": "kept"}},
                   "labels": "a scalar", "event": {"kind": "x", "type": ["indicator"]}}),
            json!({"@timestamp": 5, "threat": "a scalar", "a": 1, "zz": {"deep": {"other": true}}}),
            json!({"@timestamp": "t", "~after": 1, "0before": 2}),
            json!({}),
        ] {
            assert_same_as_copied(&state, history);
        }
    }

    fn document() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "@timestamp",
            "threat",
            "indicator",
            "modified",
            "labels",
            "a",
            "b",
            "z",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from)
        ];
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop::collection::btree_map(key.clone().prop_map(str::to_owned), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect()))
        });
        let root_key = prop::sample::select(vec!["@timestamp", "threat", "labels", "a", "misp", "~", "0"]);
        prop::collection::btree_map(root_key.prop_map(str::to_owned), value, 0..6)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn any_state_document_is_written_as_the_copied_and_changed_one(history in document()) {
            static STATE: std::sync::LazyLock<(tempfile::TempDir, CurrentState)> = std::sync::LazyLock::new(|| {
                current_state(json!({"labels.current": "yes", "a.b": [1], "threat.feed.name": "x"}))
            });
            assert_same_as_copied(&STATE.1, history);
        }
    }
}
