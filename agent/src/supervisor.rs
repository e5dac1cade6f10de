//! Builds every pipeline from the loaded configuration (so every config
//! error surfaces before anything starts), then runs them, each writing
//! into the one queue in front of the output, until shutdown, or for one
//! pass with `--once`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use threatbeat_core::{
    BuildContext, ConfigError, CursorError, CursorStore, Input, Origin, Output, OutputError, PluginConfig,
};
use threatbeat_processors::Chain;
use tokio_util::sync::CancellationToken;

use threatbeat_outputs::queue::{QueueError, QueueSettings, QueuedOutput};

use crate::config::LoadedConfig;
use crate::lifecycle::{store_path, CurrentStateSettings};
use crate::modules::{assign_pipeline_ids, resolve_entries, Definitions, ResolvedFileset};
use crate::pipeline::Sink;
use crate::reload::Reloader;
use crate::running::{PipelineSet, Source, Status};

/// Everything `run` needs, built and checked.
pub struct Plan {
    /// The pipelines, one per enabled fileset.
    pub pipelines: Vec<PipelinePlan>,
    /// The output every pipeline writes to.
    pub output: Box<dyn Output>,
    /// Where the output writes, for the summary (`stdout`, a file path, `output.elasticsearch`).
    pub output_description: String,
    /// Where cursors are stored.
    pub cursors: CursorStore,
    /// The queue put in front of the output (`queue.*`); `None` writes to the
    /// output directly (tests), so a batch is durable once the output accepted it.
    pub queue: Option<QueueSettings>,
}

/// One pipeline, built but not started.
pub struct PipelinePlan {
    /// `module/fileset`, or `module/fileset/<instance>` when configured several times.
    pub id: String,
    /// `module/fileset`, whose cursor an instance may adopt (see `running.rs`).
    pub base_id: String,
    /// The digest of the instance's source settings.
    pub source_key: String,
    /// The current-state index the pipeline maintains, and where its store lives.
    pub current_state: Option<(CurrentStateSettings, PathBuf)>,
    /// The input.
    pub input: Box<dyn Input>,
    /// Builds the input again, to restart it after a panic; `None`: a
    /// panicked input stays stopped.
    pub rebuild: Option<InputFactory>,
    /// The processor chains, in order: the definition's, the user's, the global ones.
    pub chains: Vec<Chain>,
    /// The index set on events that have none.
    pub index: Option<String>,
    /// Where it was configured.
    pub source: Source,
    /// Identifies the resolved configuration: reload restarts the pipeline when it changes.
    pub fingerprint: String,
}

/// Builds a pipeline's input afresh from its configuration.
pub type InputFactory = Arc<dyn Fn() -> Result<Box<dyn Input>, ConfigError> + Send + Sync>;

/// Why the agent could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stored cursor could not be read.
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

/// Resolves every enabled fileset of `config`.
pub fn resolve_filesets(config: &LoadedConfig) -> Result<Vec<ResolvedFileset>, ConfigError> {
    Ok(resolve_by_source(config)?
        .into_iter()
        .flat_map(|(_, filesets)| filesets)
        .collect())
}

/// Resolves every enabled fileset of `config`, grouped by where it was configured;
/// a pipeline id configured twice is an error naming the second place.
pub fn resolve_by_source(config: &LoadedConfig) -> Result<Vec<(Source, Vec<ResolvedFileset>)>, ConfigError> {
    let definitions = Definitions::load(&config.paths.config)?;
    let mut sources = vec![(
        Source::Main,
        resolve_entries(&config.inline_module_entries()?, &definitions)?,
    )];
    for file in config.module_files()? {
        let filesets = resolve_entries(&config.module_file_entries(&file)?, &definitions)?;
        sources.push((Source::File(file), filesets));
    }
    // Instances of one fileset may sit in different files: ids are given
    // across all of them.
    assign_pipeline_ids(sources.iter_mut().flat_map(|(_, filesets)| filesets.iter_mut()))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeMap::new();
    for fileset in sources.iter().flat_map(|(_, filesets)| filesets) {
        if !seen.insert(fileset.id.clone()) {
            return Err(duplicate_pipeline(fileset));
        }
        // Distinct ids whose state files would be one (`a/b_c`, `a_b/c`).
        let name = threatbeat_core::state_name(&fileset.id);
        if let Some(other) = names.insert(name.clone(), fileset.id.clone()) {
            return Err(fileset.input.origin.error(format!(
                "pipelines {other} and {} would share one cursor file (registry/{name}.json); give one of them another `id:`",
                fileset.id
            )));
        }
    }
    Ok(sources)
}

/// The error for a fileset enabled in two places (they would share one cursor).
pub fn duplicate_pipeline(fileset: &ResolvedFileset) -> ConfigError {
    fileset.input.origin.error(format!(
        "{} is enabled in more than one place; its pipelines would share one cursor: give each entry its own `id:`, or enable it once",
        fileset.id
    ))
}

/// Builds one pipeline (input and processor chains) from a resolved fileset.
pub fn build_pipeline(
    config: &LoadedConfig,
    source: Source,
    fileset: ResolvedFileset,
) -> Result<PipelinePlan, ConfigError> {
    let context = BuildContext {
        data_path: config.paths.data.clone(),
        config_path: config.paths.config.clone(),
        pipeline_id: fileset.id.clone(),
    };
    let global_origin = Origin::file(&config.file).child("processors");
    let fingerprint = fingerprint(&fileset);
    let input = threatbeat_inputs::registry()
        .build(&fileset.input, &context)
        .map_err(|error| fileset.attribute_input_error(error))?;
    let rebuild: InputFactory = {
        let (input_config, context) = (fileset.input.clone(), context.clone());
        Arc::new(move || threatbeat_inputs::registry().build(&input_config, &context))
    };
    let chains = vec![
        Chain::build(&fileset.processors, &fileset.processors_origin, &context)?,
        Chain::build(
            &fileset.user_processors,
            &fileset.user_processors_origin,
            &context,
        )?,
        Chain::build(&config.settings.processors, &global_origin, &context)?,
    ];
    let current_state = CurrentStateSettings::parse(&fileset.current_state, &fileset.current_state_origin)?
        .map(|settings| (settings, store_path(&config.paths.data, &fileset.id)));
    Ok(PipelinePlan {
        current_state,
        base_id: fileset.base_id(),
        source_key: fileset.source_key.clone(),
        id: fileset.id,
        input,
        rebuild: Some(rebuild),
        chains,
        index: fileset.index,
        source,
        fingerprint,
    })
}

/// Everything that shapes a pipeline, as text (never logged: it may hold secrets).
pub fn fingerprint(fileset: &ResolvedFileset) -> String {
    format!("{fileset:?}")
}

/// The enabled output's config: exactly one of `output.*` must be enabled.
pub fn select_output(config: &LoadedConfig) -> Result<PluginConfig, ConfigError> {
    let main = Origin::file(&config.file);
    let mut enabled = Vec::new();
    for (name, settings) in &config.settings.output {
        let origin = main.child(format!("output.{name}"));
        let mut settings = match settings {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            _ => return Err(origin.error("output settings must be a map")),
        };
        let on = match settings.remove("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(on)) => on,
            Some(other) => {
                return Err(origin
                    .child("enabled")
                    .error(format!("expected true or false, found {other}")))
            }
        };
        if on {
            enabled.push(PluginConfig {
                type_name: name.clone(),
                settings: substitute_paths(Value::Object(settings), config),
                origin,
            });
        }
    }
    let known = threatbeat_outputs::registry()
        .names()
        .collect::<Vec<_>>()
        .join(", ");
    match enabled.len() {
        1 => Ok(enabled.remove(0)),
        0 => Err(main
            .child("output")
            .error(format!("no output is enabled; configure exactly one of: {known}"))),
        _ => Err(main.child("output").error(format!(
            "several outputs are enabled ({}); enable exactly one and set `enabled: false` on the others",
            enabled
                .iter()
                .map(|output| output.type_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Builds the output and every pipeline; nothing runs yet.
pub fn prepare(config: &LoadedConfig) -> Result<Plan, PrepareError> {
    let output_config = select_output(config)?;
    let context = |pipeline_id: &str| BuildContext {
        data_path: config.paths.data.clone(),
        config_path: config.paths.config.clone(),
        pipeline_id: pipeline_id.to_owned(),
    };
    let output = threatbeat_outputs::registry().build(&output_config, &context("output"))?;
    let output_description = describe_output(&output_config, config);
    let queue_value = match config.settings.queue.is_empty() {
        true => Value::Null,
        false => Value::Object(config.settings.queue.clone()),
    };
    let queue_origin = Origin::file(&config.file).child("queue");
    let queue = QueueSettings::parse(&queue_value, &queue_origin, &context("queue"))?;

    let mut pipelines = Vec::new();
    for (source, filesets) in resolve_by_source(config)? {
        for fileset in filesets {
            pipelines.push(build_pipeline(config, source.clone(), fileset)?);
        }
    }
    Ok(Plan {
        pipelines,
        output,
        output_description,
        cursors: CursorStore::new(&config.paths.data),
        queue: Some(queue),
    })
}

/// How `run` behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// One pass of every input, then return.
    pub once: bool,
    /// Cancelled on Ctrl-C / SIGTERM.
    pub shutdown: CancellationToken,
    /// How long pipelines get to finish in-flight batches after shutdown.
    pub shutdown_timeout: Duration,
}

/// What a long-running agent adds to `run`: hot reload and the status the HTTP endpoint reads.
#[derive(Default)]
pub struct Services {
    /// Applies modules.d changes while running (ignored with `once`).
    pub reloader: Option<Reloader>,
    /// Filled with the running pipelines for `/`, `/metrics` and `/healthz`.
    pub status: Option<Arc<Status>>,
}

/// What each pipeline did.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSummary {
    /// `module/fileset`.
    pub id: String,
    /// Events the output accepted.
    pub published: u64,
    /// Events dropped by processors.
    pub dropped: u64,
    /// Batches the output refused.
    pub failed_batches: u64,
    /// Whether the last batch was refused (refusals it recovered from, a
    /// full disk or an outage, leave the run clean).
    pub last_batch_failed: bool,
    /// A few indicator values that went out.
    pub samples: Vec<String>,
    /// Why the input stopped on its own, if it did.
    pub input_error: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// One entry per pipeline (pipelines stopped by reload first, then by id).
    pub pipelines: Vec<PipelineSummary>,
    /// Where the events went.
    pub output_description: String,
    /// Whether some pipelines had to be abandoned at the shutdown deadline.
    pub timed_out: bool,
}

impl RunSummary {
    /// Whether every input finished cleanly and no pipeline ended on a
    /// refused batch (an earlier refusal it recovered from does not count).
    pub fn is_clean(&self) -> bool {
        !self.timed_out
            && self
                .pipelines
                .iter()
                .all(|pipeline| pipeline.input_error.is_none() && !pipeline.last_batch_failed)
    }
}

/// Runs every pipeline of `plan` until shutdown (or one pass with `once`).
/// Fails only when the queue cannot be opened (another process holds it).
pub async fn run(plan: Plan, options: RunOptions) -> Result<RunSummary, QueueError> {
    run_with(plan, options, Services::default()).await
}

/// [`run`], plus hot reload and a status for the HTTP endpoint.
pub async fn run_with(plan: Plan, options: RunOptions, services: Services) -> Result<RunSummary, QueueError> {
    let status = services
        .status
        .unwrap_or_else(|| Arc::new(Status::new(plan.output_description.clone())));
    // Each pipeline writes into the queue itself; the queue's consumer owns
    // the output. Without a queue the pipelines share the output.
    let (sink, outlet) = match plan.queue {
        Some(settings) => {
            let queued = QueuedOutput::start(settings, plan.output)?;
            status.watch_queue(queued.handle());
            (Sink::Queue(queued.handle()), Outlet::Queued(queued))
        }
        None => {
            let output = Arc::new(tokio::sync::Mutex::new(plan.output));
            (Sink::Direct(Arc::clone(&output)), Outlet::Direct(output))
        }
    };
    let mut pipelines = PipelineSet::new(sink, plan.cursors, options.shutdown.clone(), options.once, status);
    for pipeline in plan.pipelines {
        pipelines.start(pipeline);
    }
    if let Some(reloader) = services.reloader.filter(|_| !options.once) {
        reloader.run(&mut pipelines, &options.shutdown).await;
    }

    // One deadline for the whole shutdown, `shutdown_timeout` after it was requested.
    let deadline = CancellationToken::new();
    let deadline_timer = tokio::spawn({
        let (shutdown, deadline, timeout) = (
            options.shutdown.clone(),
            deadline.clone(),
            options.shutdown_timeout,
        );
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(timeout).await;
            deadline.cancel();
        }
    });
    let (summaries, mut timed_out) = pipelines.finish_all(&deadline).await;
    // The queue delivers what it holds (within its shutdown_timeout), then
    // the output closes.
    tokio::select! {
        closed = outlet.close() => {
            if let Err(error) = closed {
                tracing::error!(%error, "closing the output failed");
            }
        }
        () = deadline.cancelled() => timed_out = true,
    }
    deadline_timer.abort();
    Ok(RunSummary {
        pipelines: summaries,
        output_description: plan.output_description,
        timed_out,
    })
}

/// What the pipelines write through, closed once they all ended.
enum Outlet {
    /// The queue and its consumer, which owns the output.
    Queued(QueuedOutput),
    /// The output, shared by the pipelines.
    Direct(Arc<tokio::sync::Mutex<Box<dyn Output>>>),
}

impl Outlet {
    async fn close(self) -> Result<(), OutputError> {
        match self {
            Outlet::Queued(mut queued) => queued.close().await,
            Outlet::Direct(output) => output.lock().await.close().await,
        }
    }
}

/// `${path.*}` references in output settings, filled with the resolved paths.
fn substitute_paths(value: Value, config: &LoadedConfig) -> Value {
    match value {
        Value::String(text) if text.contains("${path.") => Value::String(config.paths.substitute(&text)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| substitute_paths(item, config))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (key, substitute_paths(item, config)))
                .collect(),
        ),
        other => other,
    }
}

fn describe_output(output: &PluginConfig, config: &LoadedConfig) -> String {
    match output.type_name.as_str() {
        "console" => "stdout".to_owned(),
        "file" => {
            let directory = match output.settings.get("path").and_then(Value::as_str) {
                Some(path) => config.paths.config.join(path),
                None => config.paths.data.clone(),
            };
            let filename = output
                .settings
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or("threatbeat");
            let path: PathBuf = threatbeat_outputs::file::file_path(&directory, filename, 0);
            crate::config::normalize(path).display().to_string()
        }
        other => format!("output.{other}"),
    }
}
