//! The pipeline contract end to end: a cursor is stored only once the output
//! accepted the batch it covers; a refused batch fails its publish and leaves
//! the stored cursor where it was; shutdown stops a long-running input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use threatbeat::supervisor::{run, PipelinePlan, Plan, RunOptions};
use threatbeat_core::{
    Batch, BuildContext, CursorStore, EncodedEvent, Event, Input, InputContext, InputError, Origin, Output,
    OutputError, PublishError,
};
use threatbeat_processors::Chain;
use tokio_util::sync::CancellationToken;

/// Publishes fixed batches in order and records what each publish answered
/// and which cursor it started from.
struct ScriptedInput {
    batches: Vec<Batch>,
    answers: Arc<Mutex<Vec<Result<(), PublishError>>>>,
    started_from: Arc<Mutex<Option<Value>>>,
}

#[async_trait]
impl Input for ScriptedInput {
    async fn run(self: Box<Self>, context: InputContext) -> Result<(), InputError> {
        *self.started_from.lock().unwrap() = context.cursor.clone();
        for batch in self.batches {
            let answer = context.publisher.publish(batch).await;
            let failed = answer.is_err();
            self.answers.lock().unwrap().push(answer);
            if failed {
                break;
            }
        }
        Ok(())
    }
}

/// Accepts the first `accept` batches, refuses the rest; keeps what it accepted.
struct FlakyOutput {
    accept: usize,
    written: Arc<Mutex<Vec<Event>>>,
    calls: usize,
}

#[async_trait]
impl Output for FlakyOutput {
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        self.calls += 1;
        if self.calls > self.accept {
            return Err(OutputError::Write("simulated: disk full".into()));
        }
        let decoded = events.iter().map(|event| event.decode().unwrap());
        self.written.lock().unwrap().extend(decoded);
        Ok(())
    }
}

fn batch(values: &[&str], cursor: i64) -> Batch {
    Batch {
        events: values
            .iter()
            .map(|value| Event::from_value(json!({"threat": {"indicator": {"ip": value}}})))
            .collect(),
        cursor: Some(json!({"timestamp": cursor})),
        ..Batch::default()
    }
}

struct Harness {
    answers: Arc<Mutex<Vec<Result<(), PublishError>>>>,
    started_from: Arc<Mutex<Option<Value>>>,
    written: Arc<Mutex<Vec<Event>>>,
}

fn plan(data: &std::path::Path, batches: Vec<Batch>, accept: usize) -> (Plan, Harness) {
    let harness = Harness {
        answers: Arc::default(),
        started_from: Arc::default(),
        written: Arc::default(),
    };
    let input = ScriptedInput {
        batches,
        answers: Arc::clone(&harness.answers),
        started_from: Arc::clone(&harness.started_from),
    };
    let output = FlakyOutput {
        accept,
        written: Arc::clone(&harness.written),
        calls: 0,
    };
    let chain = Chain::build(&Value::Null, &Origin::named("test"), &BuildContext::default()).unwrap();
    let plan = Plan {
        pipelines: vec![PipelinePlan {
            id: "test/feed".into(),
            base_id: "test/feed".into(),
            source_key: String::new(),
            current_state: None,
            input: Box::new(input),
            rebuild: None,
            chains: vec![chain],
            index: Some("threatbeat-test".into()),
            source: threatbeat::running::Source::Main,
            fingerprint: String::new(),
        }],
        output: Box::new(output),
        output_description: "test output".into(),
        cursors: CursorStore::new(data),
        queue: None,
    };
    (plan, harness)
}

fn once() -> RunOptions {
    RunOptions {
        once: true,
        shutdown: CancellationToken::new(),
        shutdown_timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn cursor_moves_only_after_the_output_accepted_the_batch() {
    let data = tempfile::tempdir().unwrap();
    let store = CursorStore::new(data.path());
    let batches = vec![batch(&["10.0.0.1", "10.0.0.2"], 1), batch(&["10.0.0.3"], 2)];

    // The output accepts the first batch and refuses the second.
    let (first_plan, first) = plan(data.path(), batches.clone(), 1);
    let summary = run(first_plan, once()).await.unwrap();
    let answers = first.answers.lock().unwrap().clone();
    assert_eq!(answers[0], Ok(()));
    assert!(matches!(&answers[1], Err(PublishError::Failed(reason)) if reason.contains("disk full")));
    assert_eq!(store.load("test/feed").unwrap(), Some(json!({"timestamp": 1})));
    assert_eq!(summary.pipelines[0].published, 2);
    assert_eq!(summary.pipelines[0].failed_batches, 1);
    assert!(!summary.is_clean());
    let written = first.written.lock().unwrap().clone();
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].index(), Some("threatbeat-test"));

    // The next run starts from the stored cursor; with a healthy output both batches land.
    let (second_plan, second) = plan(data.path(), batches, usize::MAX);
    let summary = run(second_plan, once()).await.unwrap();
    assert_eq!(
        *second.started_from.lock().unwrap(),
        Some(json!({"timestamp": 1}))
    );
    assert!(summary.is_clean());
    assert_eq!(store.load("test/feed").unwrap(), Some(json!({"timestamp": 2})));
    // At most two samples of one kind.
    assert_eq!(summary.pipelines[0].samples, ["10.0.0.1", "10.0.0.2"]);
}

#[tokio::test]
async fn a_batch_without_events_still_moves_the_cursor_and_a_corrupt_cursor_restarts() {
    let data = tempfile::tempdir().unwrap();
    let store = CursorStore::new(data.path());
    let path = store.file_for("test/feed");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"timest").unwrap();
    let (plan, harness) = plan(data.path(), vec![batch(&[], 7)], 0);
    let summary = run(plan, once()).await.unwrap();
    assert!(summary.is_clean(), "{summary:?}");
    assert_eq!(*harness.started_from.lock().unwrap(), None);
    assert_eq!(store.load("test/feed").unwrap(), Some(json!({"timestamp": 7})));
}

/// Publishes one batch, then waits for shutdown, as a polling input does between polls.
struct PollingInput;

#[async_trait]
impl Input for PollingInput {
    async fn run(self: Box<Self>, context: InputContext) -> Result<(), InputError> {
        context
            .publisher
            .publish(batch(&["192.0.2.1"], 5))
            .await
            .map_err(|error| InputError::Fatal(error.to_string()))?;
        context.shutdown.cancelled().await;
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_stops_a_running_input_and_keeps_its_last_cursor() {
    let data = tempfile::tempdir().unwrap();
    let (mut plan, harness) = plan(data.path(), Vec::new(), usize::MAX);
    plan.pipelines[0].input = Box::new(PollingInput);
    let shutdown = CancellationToken::new();
    let options = RunOptions {
        once: false,
        shutdown: shutdown.clone(),
        shutdown_timeout: Duration::from_secs(30),
    };
    let running = tokio::spawn(run(plan, options));
    // Wait (generously) until the batch is written, then ask to stop.
    for _ in 0..600 {
        if !harness.written.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.is_clean(), "{summary:?}");
    assert_eq!(summary.pipelines[0].published, 1);
    assert_eq!(
        CursorStore::new(data.path()).load("test/feed").unwrap(),
        Some(json!({"timestamp": 5}))
    );
}

/// Ignores shutdown, as a wedged input would.
struct StuckInput;

#[async_trait]
impl Input for StuckInput {
    async fn run(self: Box<Self>, _context: InputContext) -> Result<(), InputError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test]
async fn an_input_that_ignores_shutdown_is_abandoned_at_the_deadline() {
    let data = tempfile::tempdir().unwrap();
    let (mut plan, _harness) = plan(data.path(), Vec::new(), usize::MAX);
    plan.pipelines[0].input = Box::new(StuckInput);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let options = RunOptions {
        once: false,
        shutdown,
        shutdown_timeout: Duration::from_millis(200),
    };
    let summary = tokio::time::timeout(Duration::from_secs(60), run(plan, options))
        .await
        .expect("run returns after the shutdown deadline")
        .unwrap();
    assert!(!summary.is_clean());
    assert_eq!(
        summary.pipelines[0].input_error.as_deref(),
        Some("did not stop before the shutdown deadline")
    );
}
