//! The running pipelines, started and stopped one by one: at startup, by hot
//! reload, and all together at shutdown. The queue and the output outlive them all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use threatbeat_core::{Backoff, CursorError, CursorStore, Input, InputContext, InputError, Publisher};
use threatbeat_outputs::queue::QueueHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::CurrentState;
use crate::pipeline::{Pipeline, Sink};
use crate::supervisor::{InputFactory, PipelinePlan, PipelineSummary};
use crate::telemetry::{PipelineCounts, PipelineEvent, PipelineTelemetry};

/// How many batches may wait between an input and its pipeline.
const PUBLISH_QUEUE: usize = 4;

/// Where a pipeline was configured: hot reload only touches modules.d files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `threatbeat.modules` / `filebeat.modules` in the main file (not reloaded).
    Main,
    /// A file in modules.d.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Main => f.write_str("the main config file"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What the HTTP endpoint reads: every pipeline's telemetry, and the queue.
#[derive(Debug)]
pub struct Status {
    pipelines: RwLock<BTreeMap<String, Arc<PipelineTelemetry>>>,
    /// The counts of pipelines stopped by a reload, by id (added to those of
    /// a pipeline started again under the same id, so counters only grow).
    stopped: Mutex<BTreeMap<String, StoppedPipeline>>,
    queue: OnceLock<QueueHandle>,
    /// When the agent started.
    pub started: SystemTime,
    /// Where events go.
    pub output_description: String,
    /// `http.max_queue_age`: an older un-acknowledged queued event is unhealthy.
    pub max_queue_age: Option<Duration>,
}

/// What is kept of a pipeline a reload stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoppedPipeline {
    /// Its counts.
    pub counts: PipelineCounts,
    /// Unix seconds of its last written batch, if any.
    pub last_publish: Option<u64>,
}

impl Status {
    /// An empty status for an agent writing to `output_description`.
    pub fn new(output_description: String) -> Self {
        Self {
            pipelines: RwLock::default(),
            stopped: Mutex::default(),
            queue: OnceLock::new(),
            started: SystemTime::now(),
            output_description,
            max_queue_age: None,
        }
    }

    /// The same status, unhealthy once the queue's oldest event is older than `limit`.
    pub fn with_max_queue_age(mut self, limit: Duration) -> Self {
        self.max_queue_age = Some(limit);
        self
    }

    /// The running pipelines' telemetry, by id.
    pub fn pipelines(&self) -> BTreeMap<String, Arc<PipelineTelemetry>> {
        self.pipelines.read().map(|map| map.clone()).unwrap_or_default()
    }

    /// What is kept of the pipelines a reload stopped, by id.
    pub fn stopped(&self) -> BTreeMap<String, StoppedPipeline> {
        self.stopped.lock().map(|map| map.clone()).unwrap_or_default()
    }

    /// How long the queue's oldest unacknowledged event has waited (zero
    /// without a queue, or with an empty one).
    pub fn oldest_queued_event_age(&self) -> Duration {
        self.queue
            .get()
            .map_or(Duration::ZERO, QueueHandle::oldest_event_age)
    }

    /// The queue the pipelines write into, for its age.
    pub(crate) fn watch_queue(&self, queue: QueueHandle) {
        let _ = self.queue.set(queue);
    }

    #[cfg(test)]
    pub(crate) fn insert_for_tests(&self, id: &str, telemetry: Arc<PipelineTelemetry>) {
        self.insert(id, telemetry);
    }

    #[cfg(test)]
    pub(crate) fn remove_for_tests(&self, id: &str) {
        self.remove(id);
    }

    fn insert(&self, id: &str, telemetry: Arc<PipelineTelemetry>) {
        if let Ok(mut map) = self.pipelines.write() {
            map.insert(id.to_owned(), telemetry);
        }
    }

    fn remove(&self, id: &str) {
        let removed = self.pipelines.write().ok().and_then(|mut map| map.remove(id));
        if let (Some(telemetry), Ok(mut stopped)) = (removed, self.stopped.lock()) {
            let kept = stopped.entry(id.to_owned()).or_default();
            kept.counts = kept.counts.plus(telemetry.counts());
            kept.last_publish = telemetry.last_publish().or(kept.last_publish);
        }
    }
}

struct RunningPipeline {
    source: Source,
    fingerprint: String,
    stop: CancellationToken,
    telemetry: Arc<PipelineTelemetry>,
    input_task: JoinHandle<Result<(), InputError>>,
    pipeline_task: JoinHandle<()>,
}

/// The pipelines that run, keyed by id.
pub struct PipelineSet {
    output: Sink,
    cursors: CursorStore,
    shutdown: CancellationToken,
    once: bool,
    status: Arc<Status>,
    running: BTreeMap<String, RunningPipeline>,
    /// Summaries of pipelines stopped before the end (reload).
    stopped: Vec<PipelineSummary>,
}

impl PipelineSet {
    /// An empty set writing through `output`; pipelines stop when `shutdown` is cancelled.
    pub fn new(
        output: Sink,
        cursors: CursorStore,
        shutdown: CancellationToken,
        once: bool,
        status: Arc<Status>,
    ) -> Self {
        Self {
            output,
            cursors,
            shutdown,
            once,
            status,
            running: BTreeMap::new(),
            stopped: Vec::new(),
        }
    }

    /// The ids of the running pipelines with their source and fingerprint.
    pub fn running(&self) -> impl Iterator<Item = (&str, &Source, &str)> {
        self.running
            .iter()
            .map(|(id, pipeline)| (id.as_str(), &pipeline.source, pipeline.fingerprint.as_str()))
    }

    /// The stored cursor of `plan`. A fileset configured alone records its
    /// source beside its cursor; once it is configured several times, the
    /// instance with that source takes the cursor over under its new id.
    fn load_cursor(&self, plan: &PipelinePlan) -> Result<Option<Value>, CursorError> {
        if plan.id == plan.base_id {
            if let Err(error) = self.cursors.record_source(&plan.id, &plan.source_key) {
                tracing::warn!(pipeline = %plan.id, %error, "could not record the cursor's source");
            }
            return self.cursors.load(&plan.id);
        }
        if let Some(cursor) = self.cursors.load(&plan.id)? {
            return Ok(Some(cursor));
        }
        if self.cursors.recorded_source(&plan.base_id).as_deref() != Some(plan.source_key.as_str()) {
            return Ok(None);
        }
        let Some(cursor) = self.cursors.load(&plan.base_id)? else {
            return Ok(None);
        };
        self.cursors.store(&plan.id, &cursor)?;
        tracing::info!(
            pipeline = %plan.id, from = %plan.base_id,
            "this instance has the source the fileset had alone: it continues from that cursor"
        );
        Ok(Some(cursor))
    }

    /// Starts `plan` from its stored cursor.
    pub fn start(&mut self, plan: PipelinePlan) {
        let id = plan.id.clone();
        let cursor = match self.load_cursor(&plan) {
            Ok(cursor) => cursor,
            Err(error) => {
                // Starting over is safe: documents have stable ids, so a replay does not duplicate.
                tracing::warn!(pipeline = %id, %error, "starting without a cursor");
                None
            }
        };
        if cursor.as_ref().is_some_and(|cursor| !cursor.is_null()) {
            tracing::info!(pipeline = %id, "{}", crate::cursor_reset::stored_cursor_hint(&id));
        }
        let (publisher, requests) = Publisher::channel(PUBLISH_QUEUE);
        let mut pipeline = Pipeline::new(
            id.clone(),
            plan.chains,
            plan.index,
            self.cursors.clone(),
            self.output.clone(),
        );
        if let Some((settings, store_path)) = plan.current_state {
            match CurrentState::open(settings, &store_path) {
                Ok(state) => pipeline = pipeline.with_current_state(state),
                // Without its store the pipeline cannot know what it wrote:
                // it runs with the history only until the file is fixed.
                Err(error) => tracing::error!(
                    pipeline = %id, %error,
                    "the current-state index is not maintained until the agent restarts with a readable store"
                ),
            }
        }
        let telemetry = pipeline.telemetry();
        let pipeline_task = tokio::spawn(pipeline.run(requests));
        let stop = self.shutdown.child_token();
        let context = InputContext {
            id: id.clone(),
            publisher,
            cursor,
            shutdown: stop.clone(),
            run_once: self.once,
        };
        telemetry.record(PipelineEvent::InputRunning { restarted: false });
        let input_task = tokio::spawn(supervise_input(SupervisedInput {
            input: plan.input,
            rebuild: plan.rebuild,
            context,
            cursors: self.cursors.clone(),
            telemetry: Arc::clone(&telemetry),
        }));
        tracing::info!(pipeline = %id, source = %plan.source, "pipeline started");
        self.status.insert(&id, Arc::clone(&telemetry));
        self.running.insert(
            id,
            RunningPipeline {
                source: plan.source,
                fingerprint: plan.fingerprint,
                stop,
                telemetry,
                input_task,
                pipeline_task,
            },
        );
    }

    /// Stops one pipeline: its input stops polling, in-flight batches are
    /// written and their cursors stored, within `timeout`.
    pub async fn stop(&mut self, id: &str, timeout: Duration) {
        let Some(pipeline) = self.running.remove(id) else {
            return;
        };
        pipeline.stop.cancel();
        let deadline = CancellationToken::new();
        let timer = tokio::spawn({
            let deadline = deadline.clone();
            async move {
                tokio::time::sleep(timeout).await;
                deadline.cancel();
            }
        });
        let (summary, _) = finish(id.to_owned(), pipeline, &deadline).await;
        timer.abort();
        self.status.remove(id);
        tracing::info!(pipeline = %id, published = summary.published, "pipeline stopped");
        self.stopped.push(summary);
    }

    /// Waits for every pipeline to end (they end on shutdown, or after one
    /// pass with `once`), abandoning what is left when `deadline` fires.
    /// Returns the summaries and whether some pipelines were abandoned.
    pub async fn finish_all(self, deadline: &CancellationToken) -> (Vec<PipelineSummary>, bool) {
        // Pipelines stay in the status until the end: one whose input failed
        // keeps `/healthz` at 503 while the others run.
        let PipelineSet {
            running, mut stopped, ..
        } = self;
        let mut timed_out = false;
        for (id, pipeline) in running {
            let (summary, finished) = finish(id.clone(), pipeline, deadline).await;
            timed_out |= !finished;
            stopped.push(summary);
        }
        (stopped, timed_out)
    }
}

/// An input and what its supervisor needs to restart it.
struct SupervisedInput {
    input: Box<dyn Input>,
    rebuild: Option<InputFactory>,
    context: InputContext,
    cursors: CursorStore,
    telemetry: Arc<PipelineTelemetry>,
}

/// The longest wait before restarting an input that panicked.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Runs a pipeline's input until it returns. One that panics is logged with
/// its pipeline and counted (`threatbeat_pipeline_panics_total`), the
/// pipeline is down meanwhile (`/healthz` 503, `threatbeat_pipeline_up` 0),
/// and the input is built again and restarted from its stored cursor after
/// a jittered backoff (about 1 s, doubling, at most a minute) — nothing it did not deliver
/// was acknowledged, so nothing is lost.
async fn supervise_input(supervised: SupervisedInput) -> Result<(), InputError> {
    let SupervisedInput {
        mut input,
        rebuild,
        mut context,
        cursors,
        telemetry,
    } = supervised;
    let mut restarts: u32 = 0;
    let mut restart_backoff = Backoff::new(Duration::from_secs(1), MAX_RESTART_DELAY);
    loop {
        let outcome = tokio::spawn(input.run(context.clone())).await;
        telemetry.record(PipelineEvent::InputStopped);
        let panic = match outcome {
            Ok(result) => return result,
            Err(error) if error.is_panic() => panic_message(&*error.into_panic()).to_owned(),
            Err(error) => return Err(InputError::Fatal(format!("the input task ended: {error}"))),
        };
        let stopped = |reason: String| {
            Err(InputError::Fatal(format!(
                "the input panicked ({panic}); {reason}"
            )))
        };
        let Some(rebuild) = rebuild.as_ref().filter(|_| !context.run_once) else {
            telemetry.record(PipelineEvent::InputPanicked {
                panic: &panic,
                restart_in: None,
                restarts,
            });
            return stopped("not restarted".to_owned());
        };
        let delay = restart_backoff.next_wait();
        restarts += 1;
        telemetry.record(PipelineEvent::InputPanicked {
            panic: &panic,
            restart_in: Some(delay),
            restarts,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = context.shutdown.cancelled() => return stopped("the agent stopped before its restart".to_owned()),
        }
        input = match rebuild() {
            Ok(input) => input,
            Err(error) => return stopped(format!("it cannot be built again: {error}")),
        };
        context.cursor = match cursors.load(&context.id) {
            Ok(cursor) => cursor,
            Err(error) => {
                tracing::warn!(pipeline = %context.id, %error, "restarting without a cursor");
                None
            }
        };
        telemetry.record(PipelineEvent::InputRunning { restarted: true });
    }
}

/// The text a panic carried.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

/// Waits for a pipeline's input, then for its pipeline to drain; whether it finished in time.
async fn finish(
    id: String,
    pipeline: RunningPipeline,
    deadline: &CancellationToken,
) -> (PipelineSummary, bool) {
    let input_error = wait_for_input(&id, pipeline.input_task, deadline).await;
    // The input returned, so its publisher is gone: the pipeline drains and ends.
    let mut pipeline_task = pipeline.pipeline_task;
    let finished = tokio::select! {
        result = &mut pipeline_task => result.is_ok(),
        () = deadline.cancelled() => {
            pipeline_task.abort();
            false
        }
    };
    if !finished {
        tracing::error!(pipeline = %id, "the pipeline did not finish its in-flight batches in time");
        // Wait for the aborted task to be dropped, so that what it holds (the
        // current-state store's file lock) is released before a restart opens it.
        let _ = pipeline_task.await;
    }
    let telemetry = &pipeline.telemetry;
    let counts = telemetry.counts();
    let summary = PipelineSummary {
        id,
        published: counts.published,
        dropped: counts.dropped,
        failed_batches: counts.failed_batches,
        last_batch_failed: telemetry.last_failure().is_some(),
        samples: telemetry.samples(),
        input_error,
    };
    (summary, finished)
}

async fn wait_for_input(
    id: &str,
    mut input_task: JoinHandle<Result<(), InputError>>,
    deadline: &CancellationToken,
) -> Option<String> {
    let result = tokio::select! {
        result = &mut input_task => result,
        () = deadline.cancelled() => {
            input_task.abort();
            return Some("did not stop before the shutdown deadline".to_owned());
        }
    };
    match result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::error!(pipeline = %id, %error, "the input stopped");
            Some(error.to_string())
        }
        Err(error) => {
            tracing::error!(pipeline = %id, %error, "the input task failed");
            Some(format!("the input task failed: {error}"))
        }
    }
}
