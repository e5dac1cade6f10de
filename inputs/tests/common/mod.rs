//! Test helpers: a module manifest rendered the way the agent renders it,
//! and a tiny pipeline that collects events and stores the cursor in a
//! `CursorStore` before it acknowledges each batch (the real contract).

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Map, Value};
use threatbeat_core::{
    Batch, BuildContext, CursorStore, Event, Input, InputContext, InputError, Origin, PluginConfig,
    PublishError, Publisher,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Renders `modules.d/definitions/<module>/<fileset>/manifest.yml` with
/// `vars` over its defaults, as the agent does (a string that is exactly one
/// `{{ expr }}` keeps the value's type; null removes the key), and returns
/// the chosen input's config.
pub fn manifest_input(module_fileset: &str, vars: Value) -> PluginConfig {
    let path = repo_root()
        .join("modules.d/definitions")
        .join(module_fileset)
        .join("manifest.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: Value = serde_yaml::from_str(&text).unwrap();
    let mut all_vars = manifest["var"].as_object().cloned().unwrap_or_default();
    for (key, value) in vars.as_object().cloned().unwrap_or_default() {
        all_vars.insert(key, value);
    }
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    let context = minijinja::context! { var => minijinja::Value::from_serialize(&all_vars) };
    let input_type = all_vars["input"].as_str().unwrap().to_owned();
    let settings = render(&environment, &context, &manifest["input"][&input_type]).unwrap_or(Value::Null);
    PluginConfig {
        type_name: input_type.clone(),
        settings,
        origin: Origin::file(&path).child(format!("input.{input_type}")),
    }
}

fn render(environment: &Environment, context: &minijinja::Value, value: &Value) -> Option<Value> {
    match value {
        Value::String(text) if text.contains("{{") => {
            let trimmed = text.trim();
            let single =
                trimmed.starts_with("{{") && trimmed.ends_with("}}") && trimmed[2..].find("{{").is_none();
            if single {
                let expression = environment
                    .compile_expression(&trimmed[2..trimmed.len() - 2])
                    .unwrap();
                let result = expression.eval(context).unwrap();
                if result.is_undefined() || result.is_none() {
                    return None;
                }
                return Some(serde_json::to_value(&result).unwrap());
            }
            Some(Value::String(environment.render_str(text, context).unwrap()))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|item| render(environment, context, item))
                .collect(),
        )),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter_map(|(key, item)| render(environment, context, item).map(|item| (key.clone(), item)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Sets `settings.<dotted path>` (test-only overrides such as retry timing).
pub fn override_setting(config: &mut PluginConfig, path: &str, value: Value) {
    let mut current = &mut config.settings;
    let segments: Vec<&str> = path.split('.').collect();
    for segment in &segments[..segments.len() - 1] {
        current = match current {
            Value::Array(items) => &mut items[segment.parse::<usize>().unwrap()],
            other => other
                .as_object_mut()
                .unwrap()
                .entry(segment.to_string())
                .or_insert_with(|| json!({})),
        };
    }
    current
        .as_object_mut()
        .unwrap()
        .insert(segments[segments.len() - 1].to_owned(), value);
}

/// Fast retries for tests.
pub fn fast_retries(config: &mut PluginConfig, attempts: u32) {
    override_setting(
        config,
        "request.retry",
        json!({"max_attempts": attempts, "wait_min": "10ms", "wait_max": "50ms"}),
    );
}

/// What the test pipeline saw.
#[derive(Default)]
pub struct Collected {
    /// Every event acknowledged, in order.
    pub events: Vec<Event>,
    /// Every batch's (event count, cursor).
    pub batches: Vec<(usize, Option<Value>)>,
    /// Every batch's `Batch::fetched_again_until_cursor`.
    pub fetched_again: Vec<bool>,
    /// The summary a discarding pipeline keeps instead of the events.
    pub discarded: Discarded,
}

/// What a discarding pipeline ([`TestPipeline::new_discarding`]) keeps.
#[derive(Debug, Default, Clone)]
pub struct Discarded {
    /// Events received.
    pub events: usize,
    /// Whether the attribute uuids' indexes went 0, 1, 2, ... without a gap.
    pub ids_in_order: bool,
    /// The last attribute uuid.
    pub last_uuid: Option<String>,
    /// Whether every record carried a non-empty `Event.Tag`.
    pub every_record_has_the_tags: bool,
}

/// A pipeline: stores the cursor, then acks. `fail_after` batches it refuses
/// further batches (the publish fails and nothing is stored).
pub struct TestPipeline {
    /// `path.data` of the pipeline (cursors, dead-letter files).
    pub data: std::path::PathBuf,
    pub collected: Arc<Mutex<Collected>>,
    pub store: CursorStore,
    pub id: String,
    task: JoinHandle<()>,
    pub publisher: Publisher,
}

impl TestPipeline {
    pub fn new(data: &Path, id: &str, fail_after: Option<usize>) -> Self {
        Self::spawn(data, id, fail_after, |collected, batch| {
            collected.batches.push((batch.events.len(), batch.cursor.clone()));
            collected.fetched_again.push(batch.fetched_again_until_cursor);
            collected.events.extend(batch.events);
        })
    }

    /// A pipeline that stores cursors and acknowledges every batch at once,
    /// keeping only a summary of its MISP records ([`Discarded`]): what it
    /// holds does not grow with what it receives.
    pub fn new_discarding(data: &Path, id: &str) -> Self {
        let mut last_index: Option<usize> = None;
        Self::spawn(data, id, None, move |collected, batch| {
            let summary = &mut collected.discarded;
            if summary.events == 0 {
                summary.ids_in_order = true;
                summary.every_record_has_the_tags = true;
            }
            for event in &batch.events {
                summary.events += 1;
                let misp_event = event.fields.get("Event");
                let uuid = misp_event
                    .and_then(|misp_event| misp_event.pointer("/Attribute/uuid"))
                    .and_then(Value::as_str);
                // The simulator's uuids end in the attribute's index.
                let index = uuid
                    .and_then(|uuid| uuid.rsplit('-').next())
                    .and_then(|digits| digits.parse::<usize>().ok());
                let expected = last_index.map_or(0, |last| last + 1);
                summary.ids_in_order &= index == Some(expected);
                last_index = index;
                summary.last_uuid = uuid.map(str::to_owned);
                summary.every_record_has_the_tags &= misp_event
                    .and_then(|misp_event| misp_event.get("Tag"))
                    .and_then(Value::as_array)
                    .is_some_and(|tags| !tags.is_empty());
            }
        })
    }

    /// The pipeline task: refuses batches after `fail_after`, else stores the
    /// batch's cursor, hands the batch to `keep`, and acknowledges it.
    fn spawn(
        data: &Path,
        id: &str,
        fail_after: Option<usize>,
        mut keep: impl FnMut(&mut Collected, Batch) + Send + 'static,
    ) -> Self {
        let (publisher, mut receiver) = Publisher::channel(1);
        let collected = Arc::new(Mutex::new(Collected::default()));
        let store = CursorStore::new(data);
        let (sink, cursor_store, pipeline_id) = (collected.clone(), store.clone(), id.to_owned());
        let task = tokio::spawn(async move {
            let mut accepted = 0;
            while let Some(request) = receiver.recv().await {
                if fail_after.is_some_and(|limit| accepted >= limit) {
                    let _ = request
                        .ack
                        .send(Err(PublishError::Failed("output unavailable".into())));
                    continue;
                }
                accepted += 1;
                let mut batch = request.batch;
                // As the real pipeline does before its processors.
                batch.events.iter_mut().for_each(Event::assemble);
                if let Some(cursor) = &batch.cursor {
                    cursor_store.store(&pipeline_id, cursor).unwrap();
                }
                keep(&mut sink.lock().unwrap(), batch);
                let _ = request.ack.send(Ok(()));
            }
        });
        Self {
            data: data.to_owned(),
            collected,
            store,
            id: id.to_owned(),
            task,
            publisher,
        }
    }

    /// What a discarding pipeline saw.
    pub fn discarded(&self) -> Discarded {
        self.collected.lock().unwrap().discarded.clone()
    }

    pub fn stored_cursor(&self) -> Option<Value> {
        self.store.load(&self.id).unwrap()
    }

    pub fn event_count(&self) -> usize {
        self.collected.lock().unwrap().events.len()
    }

    pub fn events(&self) -> Vec<Event> {
        self.collected.lock().unwrap().events.clone()
    }

    pub fn context(&self, run_once: bool, shutdown: CancellationToken) -> InputContext {
        InputContext {
            id: self.id.clone(),
            publisher: self.publisher.clone(),
            cursor: self.stored_cursor(),
            shutdown,
            run_once,
        }
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds an input from `config` with the inputs registry, its `path.data`
/// a folder of the system's temporary one.
pub fn build_input(config: &PluginConfig) -> Box<dyn Input> {
    build_input_in(config, &std::env::temp_dir().join("threatbeat-inputs-tests"))
}

/// Builds an input from `config` with `data` as its `path.data`.
pub fn build_input_in(config: &PluginConfig, data: &Path) -> Box<dyn Input> {
    let context = BuildContext {
        pipeline_id: "threatintel/misp".into(),
        data_path: data.to_owned(),
        ..BuildContext::default()
    };
    match threatbeat_inputs::registry().build(config, &context) {
        Ok(input) => input,
        Err(error) => panic!("input does not build: {error}"),
    }
}

/// One complete pass (`run_once`).
pub async fn run_once(config: &PluginConfig, pipeline: &TestPipeline) -> Result<(), InputError> {
    let input = build_input_in(config, &pipeline.data);
    tokio::time::timeout(
        Duration::from_secs(120),
        input.run(pipeline.context(true, CancellationToken::new())),
    )
    .await
    .expect("one pass finishes within 120 s")
}

/// Polls `condition` every 20 ms for up to `seconds`.
pub async fn wait_until(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// The attribute uuid of a split MISP record (plain or object attribute, or an attributes-API row).
pub fn attribute_uuid(event: &Event) -> String {
    let fields = &event.fields;
    let value = fields
        .get("Event")
        .and_then(|e| {
            e.get("Attribute")
                .and_then(|a| a.get("uuid"))
                .or_else(|| e.get("Object")?.get("Attribute")?.get("uuid"))
        })
        .or_else(|| fields.get("uuid"));
    value.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Every attribute uuid held by `events` (bare event maps).
pub fn all_attribute_uuids(events: &[Map<String, Value>]) -> Vec<String> {
    let mut uuids = Vec::new();
    for event in events {
        for attribute in event
            .get("Attribute")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            uuids.push(attribute["uuid"].as_str().unwrap().to_owned());
        }
        for object in event
            .get("Object")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for attribute in object
                .get("Attribute")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                uuids.push(attribute["uuid"].as_str().unwrap().to_owned());
            }
        }
    }
    uuids
}
