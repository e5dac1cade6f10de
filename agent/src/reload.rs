//! Hot reload of modules.d (`threatbeat.config.modules.reload.*`): on a
//! file-system notification, and every `reload.period` as Beats does (a
//! missed notification costs one period), the enabled module files are
//! resolved again and only the pipelines whose configuration changed are
//! started, restarted or stopped. Cursors live per pipeline id, so a
//! restarted pipeline resumes where it stopped. A file that does not load is
//! rejected with a logged error naming the file and key, and the pipelines it
//! configured before keep running.
//!
//! A rescan can also be asked for (SIGHUP, `systemctl reload`): it runs at
//! once, whether or not watching is on. With `reload.enabled: false` the
//! reloader does not watch and rescans only when asked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use threatbeat_core::ConfigError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{redact_text, LoadedConfig};
use crate::modules::{assign_pipeline_ids, resolve_entries, Definitions, ResolvedFileset};
use crate::running::{PipelineSet, Source, Status};
use crate::supervisor::{build_pipeline, duplicate_pipeline, fingerprint, PipelinePlan};

/// Bursts of notifications (an editor's save, a rename) settle within this.
const SETTLE: Duration = Duration::from_millis(250);

/// How often a reloader that does not watch checks whether every input stopped.
const INPUTS_CHECK: Duration = Duration::from_secs(1);

/// Watches modules.d and applies its changes to the running pipelines.
pub struct Reloader {
    config: LoadedConfig,
    period: Duration,
    stop_timeout: Duration,
    /// The error last logged per rejected file, so a rescan does not repeat it.
    rejected: BTreeMap<PathBuf, String>,
    /// Values masked in logged errors.
    secrets: Vec<String>,
    /// Watch the folder and rescan every `period` (`reload.enabled`).
    watch: bool,
    /// Rescans asked for from outside (SIGHUP).
    requests: Option<mpsc::Receiver<()>>,
    /// Without watching: the status whose pipelines' inputs, once all stopped, end `run`.
    inputs: Option<Arc<Status>>,
}

/// What one rescan did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Pipelines started (new ones).
    pub started: Vec<String>,
    /// Pipelines restarted with a new configuration.
    pub restarted: Vec<String>,
    /// Pipelines stopped (their file was deleted or disabled, or no longer enables them).
    pub stopped: Vec<String>,
    /// Files rejected, with the error.
    pub rejected: Vec<(PathBuf, String)>,
}

impl Reloader {
    /// A reloader for `config`; stopping a pipeline waits at most `stop_timeout`.
    pub fn new(config: LoadedConfig, stop_timeout: Duration) -> Self {
        let period = config.settings.threatbeat.config.modules.reload.period.0;
        Self {
            secrets: config.known_secrets(),
            config,
            period: period.max(Duration::from_millis(100)),
            stop_timeout,
            rejected: BTreeMap::new(),
            watch: true,
            requests: None,
            inputs: None,
        }
    }

    /// Also rescans each time `requests` yields (the agent sends one per SIGHUP).
    pub fn on_request(mut self, requests: mpsc::Receiver<()>) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Whether to watch modules.d and rescan it every `reload.period` (the
    /// default); without, only requests rescan. A reloader that does not watch
    /// ends once every input of `status` stopped, so that an agent without
    /// `reload.enabled` still exits when its inputs failed (as it did without a
    /// reloader), for its supervisor to restart it.
    pub fn watching(mut self, watch: bool, status: Arc<Status>) -> Self {
        self.watch = watch;
        self.inputs = (!watch).then_some(status);
        self
    }

    /// Applies changes until `shutdown` is cancelled (or, without watching,
    /// until every input stopped).
    pub async fn run(mut self, pipelines: &mut PipelineSet, shutdown: &CancellationToken) {
        let directory = self.directory();
        let mut requests = self.requests.take();
        if !self.watch {
            return self
                .on_requests_only(pipelines, shutdown, requests, &directory)
                .await;
        }
        let (notify_sender, mut notifications) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                // A full channel already holds a wake-up: nothing is lost.
                let _ = notify_sender.try_send(());
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&directory, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        let _watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(
                    directory = %directory.display(), %error, period = ?self.period,
                    "cannot watch modules.d; changes are picked up by the periodic rescan only"
                );
                None
            }
        };
        tracing::info!(directory = %directory.display(), period = ?self.period, "watching modules.d for changes");
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
                Some(()) = notifications.recv() => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(SETTLE) => {}
                    }
                    while notifications.try_recv().is_ok() {}
                }
                Some(()) = next_request(&mut requests) => {
                    tracing::info!(directory = %directory.display(), "rescanning modules.d on request");
                }
            }
            self.reload(pipelines).await;
        }
    }

    /// `run` without watching: rescans only when asked.
    async fn on_requests_only(
        mut self,
        pipelines: &mut PipelineSet,
        shutdown: &CancellationToken,
        mut requests: Option<mpsc::Receiver<()>>,
        directory: &Path,
    ) {
        tracing::info!(
            directory = %directory.display(),
            "modules.d is rescanned on SIGHUP only (reload.enabled is false)"
        );
        let mut checks = tokio::time::interval(INPUTS_CHECK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = next_request(&mut requests) => {}
                _ = checks.tick() => {
                    if self.every_input_stopped() {
                        return;
                    }
                    continue;
                }
            }
            tracing::info!(directory = %directory.display(), "rescanning modules.d on request");
            self.reload(pipelines).await;
        }
    }

    /// Whether the agent has pipelines and none of their inputs still runs.
    /// With none at all (every module file removed), it waits for the next request.
    fn every_input_stopped(&self) -> bool {
        let Some(status) = &self.inputs else {
            return false;
        };
        let pipelines = status.pipelines();
        !pipelines.is_empty() && pipelines.values().all(|telemetry| !telemetry.input_running())
    }

    /// The folder holding the module files.
    pub fn directory(&self) -> PathBuf {
        let glob = self.config.modules_glob();
        glob.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// One rescan: resolves every enabled module file and applies the differences.
    pub async fn reload(&mut self, pipelines: &mut PipelineSet) -> ReloadOutcome {
        let mut outcome = ReloadOutcome::default();
        let desired = match self.desired(pipelines, &mut outcome) {
            Ok(desired) => desired,
            Err(error) => {
                self.reject(PathBuf::from("modules.d"), &error, &mut outcome);
                self.count(&outcome);
                return outcome;
            }
        };
        let current: Vec<(String, Source)> = pipelines
            .running()
            .map(|(id, source, _)| (id.to_owned(), source.clone()))
            .collect();
        // Stop what is gone, or changed (the new one starts from the cursor the old one stored).
        let mut to_stop: Vec<(String, bool)> = Vec::new();
        for (id, source) in &current {
            let Source::File(file) = source else {
                continue;
            };
            match desired.get(file) {
                Some(Desired::Keep) => {}
                Some(Desired::Apply(desired)) => {
                    if !desired.unchanged.contains(id) {
                        let restart = desired.plans.iter().any(|plan| plan.id == *id);
                        to_stop.push((id.clone(), restart));
                    }
                }
                None => to_stop.push((id.clone(), false)),
            }
        }
        for (id, restart) in to_stop {
            pipelines.stop(&id, self.stop_timeout).await;
            match restart {
                true => outcome.restarted.push(id),
                false => outcome.stopped.push(id),
            }
        }
        let still_running: BTreeSet<String> = pipelines.running().map(|(id, _, _)| id.to_owned()).collect();
        for desired in desired.into_values() {
            let Desired::Apply(desired) = desired else {
                continue;
            };
            for plan in desired.plans {
                if still_running.contains(&plan.id) {
                    continue;
                }
                if !outcome.restarted.contains(&plan.id) {
                    outcome.started.push(plan.id.clone());
                }
                pipelines.start(plan);
            }
        }
        let changed =
            !(outcome.started.is_empty() && outcome.restarted.is_empty() && outcome.stopped.is_empty());
        if changed {
            tracing::info!(
                started = ?outcome.started, restarted = ?outcome.restarted, stopped = ?outcome.stopped,
                "modules.d reloaded"
            );
        }
        self.count(&outcome);
        outcome
    }

    fn count(&self, outcome: &ReloadOutcome) {
        let reloads = &crate::metrics::agent().reloads;
        if !(outcome.started.is_empty() && outcome.restarted.is_empty() && outcome.stopped.is_empty()) {
            reloads.with_label_values(&["success"]).inc();
        }
        if !outcome.rejected.is_empty() {
            reloads.with_label_values(&["error"]).inc();
        }
    }

    /// What each enabled module file asks for. Only the plans of files whose
    /// resolved configuration differs from what runs are built.
    fn desired(
        &mut self,
        pipelines: &PipelineSet,
        outcome: &mut ReloadOutcome,
    ) -> Result<BTreeMap<PathBuf, Desired>, ConfigError> {
        let definitions = Definitions::load(&self.config.paths.config)?;
        let files = self.config.module_files()?;
        let running: BTreeMap<&str, (&Source, &str)> = pipelines
            .running()
            .map(|(id, source, fingerprint)| (id, (source, fingerprint)))
            .collect();
        // Ids the main file configures can never be taken by a module file.
        let mut claimed: BTreeMap<String, Source> = running
            .iter()
            .filter(|(_, (source, _))| **source == Source::Main)
            .map(|(id, (source, _))| ((*id).to_owned(), (*source).clone()))
            .collect();
        let mut desired = BTreeMap::new();
        let mut resolved: Vec<(PathBuf, Result<Vec<ResolvedFileset>, ConfigError>)> = files
            .iter()
            .map(|file| {
                let filesets = self
                    .config
                    .module_file_entries(file)
                    .and_then(|entries| resolve_entries(&entries, &definitions));
                (file.clone(), filesets)
            })
            .collect();
        self.assign_ids_across_files(&definitions, &mut resolved);
        // A file keeps the ids it already runs; a newcomer claiming one of them is the one rejected.
        resolved.sort_by_key(|(file, _)| {
            !running
                .values()
                .any(|(source, _)| **source == Source::File(file.clone()))
        });
        for (file, filesets) in resolved {
            let source = Source::File(file.clone());
            let result = filesets.and_then(|filesets| {
                if let Some(taken) = filesets
                    .iter()
                    .find(|fileset| claimed.get(&fileset.id).is_some_and(|owner| *owner != source))
                {
                    return Err(duplicate_pipeline(taken));
                }
                self.plans(&file, filesets, &running)
            });
            match result {
                Ok(plans) => {
                    self.rejected.remove(&file);
                    for id in plans.ids() {
                        claimed.insert(id, source.clone());
                    }
                    desired.insert(file, plans);
                }
                Err(error) => {
                    // The file's running pipelines keep their ids.
                    for (id, (owner, _)) in &running {
                        if **owner == source {
                            claimed.insert((*id).to_owned(), source.clone());
                        }
                    }
                    self.reject(file.clone(), &error, outcome);
                    desired.insert(file, Desired::Keep);
                }
            }
        }
        Ok(desired)
    }

    /// Gives pipeline ids across the main file and every module file that
    /// loads, as at start: instances of one fileset may sit in different
    /// files. A file whose instance cannot be told apart from another's is
    /// rejected (its running pipelines stay) and the others are numbered again.
    fn assign_ids_across_files(
        &self,
        definitions: &Definitions,
        resolved: &mut [(PathBuf, Result<Vec<ResolvedFileset>, ConfigError>)],
    ) {
        let mut main = self
            .config
            .inline_module_entries()
            .and_then(|entries| resolve_entries(&entries, definitions))
            .unwrap_or_default();
        for _ in 0..=resolved.len() {
            let loaded = resolved
                .iter_mut()
                .filter_map(|(_, filesets)| filesets.as_mut().ok())
                .flat_map(|filesets| filesets.iter_mut());
            let Err(error) = assign_pipeline_ids(main.iter_mut().chain(loaded)) else {
                return;
            };
            match resolved
                .iter_mut()
                .find(|(file, filesets)| filesets.is_ok() && file.to_string_lossy() == error.file)
            {
                Some((_, filesets)) => *filesets = Err(error),
                // The main file's own instances collide: it loaded at start, so
                // this cannot happen until the agent restarts; keep what runs.
                None => return,
            }
        }
    }

    /// Builds the plans of one file; unchanged pipelines get a plan without building.
    fn plans(
        &self,
        file: &Path,
        filesets: Vec<ResolvedFileset>,
        running: &BTreeMap<&str, (&Source, &str)>,
    ) -> Result<Desired, ConfigError> {
        let source = Source::File(file.to_path_buf());
        let mut plans = Vec::new();
        let mut unchanged = Vec::new();
        for fileset in filesets {
            let fingerprint = fingerprint(&fileset);
            match running.get(fileset.id.as_str()) {
                Some((owner, current)) if **owner == source && *current == fingerprint => {
                    unchanged.push(fileset.id);
                }
                _ => plans.push(build_pipeline(&self.config, source.clone(), fileset)?),
            }
        }
        Ok(Desired::Apply(DesiredPlans { plans, unchanged }))
    }

    fn reject(&mut self, file: PathBuf, error: &ConfigError, outcome: &mut ReloadOutcome) {
        let message = redact_text(&error.to_string(), &self.secrets);
        if self.rejected.get(&file) != Some(&message) {
            tracing::error!(
                file = %file.display(), error = %message,
                "module file rejected; the pipelines it configured before keep running"
            );
            self.rejected.insert(file.clone(), message.clone());
        }
        outcome.rejected.push((file, message));
    }
}

/// The next rescan request; never, without a channel or once its senders are gone.
async fn next_request(requests: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match requests {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// What one module file asks for.
enum Desired {
    /// It does not load: leave its pipelines as they are.
    Keep,
    /// These pipelines, exactly.
    Apply(DesiredPlans),
}

struct DesiredPlans {
    /// Pipelines to start (new or changed).
    plans: Vec<PipelinePlan>,
    /// Running pipelines that stay as they are.
    unchanged: Vec<String>,
}

impl Desired {
    fn ids(&self) -> Vec<String> {
        match self {
            Desired::Keep => Vec::new(),
            Desired::Apply(desired) => desired
                .plans
                .iter()
                .map(|plan| plan.id.clone())
                .chain(desired.unchanged.iter().cloned())
                .collect(),
        }
    }
}
