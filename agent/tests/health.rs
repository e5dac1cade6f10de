//! `/healthz` and `/` against real pipelines (in process): healthy while every
//! input runs and batches are written; 503 with the reason when an input stops
//! or the output refuses a batch, and healthy again once a batch goes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use threatbeat::http::{health_problems, router};
use threatbeat::running::{Source, Status};
use threatbeat::supervisor::{run_with, PipelinePlan, Plan, RunOptions, RunSummary, Services};
use threatbeat_core::{
    Batch, BuildContext, CursorStore, EncodedEvent, Event, Input, InputContext, InputError, Origin, Output,
    OutputError,
};
use threatbeat_processors::Chain;
use tokio_util::sync::CancellationToken;

/// Publishes one batch every time `next` is set, until shut down.
struct SteadyInput {
    next: Arc<AtomicBool>,
}

#[async_trait]
impl Input for SteadyInput {
    async fn run(self: Box<Self>, context: InputContext) -> Result<(), InputError> {
        let mut sent = 0;
        loop {
            if self.next.swap(false, Ordering::SeqCst) {
                sent += 1;
                let batch = Batch {
                    events: vec![Event::from_value(json!({"n": sent}))],
                    cursor: Some(json!({"sent": sent})),
                    ..Batch::default()
                };
                let _ = context.publisher.publish(batch).await;
            }
            tokio::select! {
                () = context.shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

/// Fails as soon as it starts, as an input with an unusable setting would.
struct BrokenInput;

#[async_trait]
impl Input for BrokenInput {
    async fn run(self: Box<Self>, _context: InputContext) -> Result<(), InputError> {
        Err(InputError::Fatal(
            "simulated: the feed answered 401 for good".into(),
        ))
    }
}

/// Panics as soon as it runs, as an input with a bug would.
struct PanickingInput;

#[async_trait]
impl Input for PanickingInput {
    async fn run(self: Box<Self>, _context: InputContext) -> Result<(), InputError> {
        panic!("simulated: index out of bounds in the input");
    }
}

/// Refuses batches while `down` is set.
struct SwitchableOutput {
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Output for SwitchableOutput {
    async fn publish(&mut self, _events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(OutputError::Write("simulated: connection refused".into())),
            false => Ok(()),
        }
    }
}

fn pipeline(id: &str, input: Box<dyn Input>) -> PipelinePlan {
    PipelinePlan {
        id: id.into(),
        base_id: id.into(),
        source_key: String::new(),
        current_state: None,
        input,
        rebuild: None,
        chains: vec![Chain::build(
            &serde_json::Value::Null,
            &Origin::named("test"),
            &BuildContext::default(),
        )
        .unwrap()],
        index: None,
        source: Source::Main,
        fingerprint: String::new(),
    }
}

/// Runs `plan` in the background, reporting into `status`.
fn start(
    plan: Plan,
    status: &Arc<Status>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<RunSummary, threatbeat_outputs::queue::QueueError>>,
) {
    let shutdown = CancellationToken::new();
    let options = RunOptions {
        once: false,
        shutdown: shutdown.clone(),
        shutdown_timeout: Duration::from_secs(30),
    };
    let services = Services {
        reloader: None,
        status: Some(Arc::clone(status)),
    };
    (shutdown, tokio::spawn(run_with(plan, options, services)))
}

async fn eventually(what: &str, status: &Status, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..1200 {
        let problems = health_problems(status);
        if check(&problems) {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", health_problems(status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_inputs_and_the_output() {
    let data = tempfile::tempdir().unwrap();
    let next = Arc::new(AtomicBool::new(true));
    let down = Arc::new(AtomicBool::new(false));
    let plan = Plan {
        pipelines: vec![pipeline(
            "test/steady",
            Box::new(SteadyInput {
                next: Arc::clone(&next),
            }),
        )],
        output: Box::new(SwitchableOutput {
            down: Arc::clone(&down),
        }),
        output_description: "test output".into(),
        cursors: CursorStore::new(data.path()),
        queue: None,
    };
    let status = Arc::new(Status::new("test output".into()));
    let (shutdown, running) = start(plan, &status);

    // The first batch is written: healthy, and the summary shows it.
    let stats = loop {
        if let Some(stats) = status.pipelines().get("test/steady").cloned() {
            if stats.counts().cursor_commits == 1 {
                break stats;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(health_problems(&status).is_empty());

    // The output refuses the next batch: unhealthy, with the reason.
    down.store(true, Ordering::SeqCst);
    next.store(true, Ordering::SeqCst);
    let problems = eventually("the refused batch", &status, |problems| !problems.is_empty()).await;
    assert!(
        problems[0].contains("test/steady") && problems[0].contains("connection refused"),
        "{problems:?}"
    );

    // Back up: the next batch goes through and the agent is healthy again.
    down.store(false, Ordering::SeqCst);
    next.store(true, Ordering::SeqCst);
    eventually("recovery", &status, |problems| problems.is_empty()).await;
    assert_eq!(stats.counts().failed_batches, 1);

    // The router answers with the same view.
    let app = router(Arc::clone(&status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = http_get(address, "/healthz").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let body = http_get(address, "/").await;
    assert!(body.contains("\"test/steady\""), "{body}");

    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.pipelines[0].published, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_input_makes_the_agent_unhealthy() {
    let data = tempfile::tempdir().unwrap();
    let plan = Plan {
        pipelines: vec![
            pipeline("test/broken", Box::new(BrokenInput)),
            pipeline("test/steady", Box::new(SteadyInput { next: Arc::default() })),
        ],
        output: Box::new(SwitchableOutput { down: Arc::default() }),
        output_description: "test output".into(),
        cursors: CursorStore::new(data.path()),
        queue: None,
    };
    let status = Arc::new(Status::new("test output".into()));
    let (shutdown, running) = start(plan, &status);
    let problems = eventually("the stopped input", &status, |problems| !problems.is_empty()).await;
    assert_eq!(problems, ["pipeline test/broken: its input stopped"]);
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert!(!summary.is_clean());
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_output_cannot_drain_makes_the_agent_unhealthy() {
    let data = tempfile::tempdir().unwrap();
    let next = Arc::new(AtomicBool::new(true));
    let down = Arc::new(AtomicBool::new(true));
    let queue = threatbeat_outputs::queue::QueueSettings::parse(
        &json!({"mem": {"events": 100, "flush": {"min_events": 1, "timeout": "10ms"}}}),
        &Origin::named("test").child("queue"),
        &BuildContext::default(),
    )
    .unwrap();
    let plan = Plan {
        pipelines: vec![pipeline(
            "test/queued",
            Box::new(SteadyInput {
                next: Arc::clone(&next),
            }),
        )],
        output: Box::new(SwitchableOutput {
            down: Arc::clone(&down),
        }),
        output_description: "test output".into(),
        cursors: CursorStore::new(data.path()),
        queue: Some(queue),
    };
    let status = Arc::new(Status::new("test output".into()).with_max_queue_age(Duration::from_secs(1)));
    let (shutdown, running) = start(plan, &status);

    // The queue accepts the batch (the cursor moves) but the output refuses it:
    // once the event has waited longer than the limit, the agent is unhealthy.
    let problems = eventually("the undrained queue", &status, |problems| !problems.is_empty()).await;
    assert!(
        problems[0].contains("oldest queued event") && problems[0].contains("http.max_queue_age"),
        "{problems:?}"
    );

    // The output comes back, the queue drains: healthy again.
    down.store(false, Ordering::SeqCst);
    eventually("the drained queue", &status, |problems| problems.is_empty()).await;

    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// An input that panics is caught: the agent is unhealthy (503,
/// `threatbeat_pipeline_up` 0) while it waits, then the input is built
/// again, restarted, and the agent is healthy; the panic is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_input_is_restarted_and_health_follows() {
    let data = tempfile::tempdir().unwrap();
    let next = Arc::new(AtomicBool::new(true));
    let rebuilt = Arc::clone(&next);
    let mut plan = pipeline("test/panicky", Box::new(PanickingInput));
    plan.rebuild = Some(Arc::new(move || {
        Ok(Box::new(SteadyInput {
            next: Arc::clone(&rebuilt),
        }) as Box<dyn Input>)
    }));
    let plan = Plan {
        pipelines: vec![plan],
        output: Box::new(SwitchableOutput { down: Arc::default() }),
        output_description: "test output".into(),
        cursors: CursorStore::new(data.path()),
        queue: None,
    };
    let status = Arc::new(Status::new("test output".into()));
    let (shutdown, running) = start(plan, &status);
    // Read from /metrics as Prometheus sees it.
    let metric = |name: &str| {
        let series = format!("{name}{{pipeline=\"test/panicky\"}}");
        threatbeat::metrics::sample(&threatbeat::metrics::render(&status), &series)
    };
    let up = || metric("threatbeat_pipeline_up");
    let problems = eventually("the panic", &status, |problems| !problems.is_empty()).await;
    assert!(problems[0].contains("test/panicky"), "{problems:?}");
    assert_eq!(up(), Some(0.0));
    // Restarted after a second: healthy, up, and its first batch written.
    eventually("the restart", &status, |problems| problems.is_empty()).await;
    assert_eq!(up(), Some(1.0));
    let stats = status.pipelines().get("test/panicky").cloned().unwrap();
    for _ in 0..200 {
        if stats.counts().cursor_commits >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.counts().cursor_commits, 1);
    assert_eq!(metric("threatbeat_pipeline_panics_total"), Some(1.0));
    assert_eq!(stats.counts().panics, 1);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
