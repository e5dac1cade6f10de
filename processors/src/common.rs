//! What every processor shares: the `when` condition, the failure policy
//! (`ignore_failure`, `on_failure`, `drop_on_failure`) and the glue that turns
//! a typed config into a registered [`Processor`].
//!
//! The shared keys are taken out of a processor's settings before the rest is
//! parsed with `deny_unknown_fields`, so each processor's own config stays
//! strict while every processor accepts the same common keys.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use threatbeat_core::{
    BuildContext, ConfigError, Event, Origin, PluginConfig, ProcessOutcome, Processor, ProcessorError,
};

use crate::condition::Condition;
use crate::Chain;

/// The work of one processor, without the shared options.
pub(crate) trait Step: Send + Sync + 'static {
    /// Transforms `event`; an error marks the event (or triggers the failure policy).
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError>;
}

/// A processor's typed config and how it compiles into a [`Step`].
pub(crate) trait StepConfig: DeserializeOwned + Sized {
    /// The name users write in YAML.
    const NAME: &'static str;
    /// The compiled step.
    type Step: Step;
    /// Validates the config and compiles it; `origin` points at the processor's settings.
    fn build(self, origin: &Origin, context: &BuildContext) -> Result<Self::Step, ConfigError>;
}

/// What happens when the step fails on an event.
enum FailurePolicy {
    /// Record the error in `error.message` (done by the chain) and keep the event.
    Mark,
    /// Forget the failure.
    Ignore,
    /// Drop the event.
    Drop,
    /// Run these processors instead of recording the error.
    Run(Chain),
}

/// A step with its condition and failure policy: the registered processor.
struct Wrapped<S: Step> {
    name: &'static str,
    when: Option<Condition>,
    failure: FailurePolicy,
    step: S,
}

impl<S: Step> Processor for Wrapped<S> {
    fn name(&self) -> &str {
        self.name
    }

    fn process(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        if let Some(condition) = &self.when {
            if !condition.matches(event) {
                return Ok(ProcessOutcome::Keep);
            }
        }
        match self.step.apply(event) {
            Ok(outcome) => Ok(outcome),
            Err(error) => match &self.failure {
                FailurePolicy::Mark => Err(error),
                FailurePolicy::Ignore => Ok(ProcessOutcome::Keep),
                FailurePolicy::Drop => Ok(ProcessOutcome::Drop),
                FailurePolicy::Run(chain) => Ok(chain.run_in_place(event)),
            },
        }
    }
}

/// Keys every processor accepts besides its own.
const COMMON_KEYS: [&str; 5] = [
    "when",
    "ignore_failure",
    "on_failure",
    "drop_on_failure",
    "enabled",
];

/// A processor switched off with `enabled: false` (validated, then skipped).
struct Disabled(&'static str);

impl Processor for Disabled {
    fn name(&self) -> &str {
        self.0
    }

    fn process(&self, _: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        Ok(ProcessOutcome::Keep)
    }
}

/// The registry factory of the processor configured by `C`.
pub(crate) fn factory<C: StepConfig>(
    config: &PluginConfig,
    context: &BuildContext,
) -> Result<Box<dyn Processor>, ConfigError> {
    let mut settings = match &config.settings {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        other => {
            return Err(config.origin.error(format!(
                "expected a map of settings, found a {}",
                threatbeat_core::path::json_kind(other)
            )))
        }
    };
    let common: Vec<(&str, Value)> = COMMON_KEYS
        .iter()
        .filter_map(|key| settings.remove(*key).map(|value| (*key, value)))
        .collect();
    let own = PluginConfig {
        type_name: config.type_name.clone(),
        settings: Value::Object(settings),
        origin: config.origin.clone(),
    };
    let step = own.parse::<C>()?.build(&config.origin, context)?;

    let mut when = None;
    let mut ignore_failure = false;
    let mut drop_on_failure = false;
    let mut on_failure = None;
    let mut enabled = true;
    for (key, value) in &common {
        let origin = config.origin.child(key);
        match *key {
            "when" => when = Some(Condition::compile(value, &origin)?),
            "ignore_failure" => ignore_failure = threatbeat_core::switch_at(value, &origin)?,
            "drop_on_failure" => drop_on_failure = threatbeat_core::switch_at(value, &origin)?,
            "enabled" => enabled = threatbeat_core::switch_at(value, &origin)?,
            _ => on_failure = Some(Chain::build(value, &origin, context)?),
        }
    }
    let chosen = [ignore_failure, drop_on_failure, on_failure.is_some()];
    if chosen.iter().filter(|set| **set).count() > 1 {
        return Err(config
            .origin
            .error("choose at most one of `ignore_failure`, `drop_on_failure` and `on_failure`"));
    }
    if !enabled {
        return Ok(Box::new(Disabled(C::NAME)));
    }
    let failure = match on_failure {
        Some(chain) => FailurePolicy::Run(chain),
        None if ignore_failure => FailurePolicy::Ignore,
        None if drop_on_failure => FailurePolicy::Drop,
        None => FailurePolicy::Mark,
    };
    Ok(Box::new(Wrapped {
        name: C::NAME,
        when,
        failure,
        step,
    }))
}

/// Parses a field path written in a config, naming the key on failure.
pub(crate) fn path_at(raw: &str, origin: &Origin) -> Result<threatbeat_core::FieldPath, ConfigError> {
    threatbeat_core::FieldPath::parse(raw).map_err(|error| origin.error(error.to_string()))
}

/// Parses a list of field paths; errors name the item (`fields.2`) under `origin`.
pub(crate) fn paths_at(
    raw: &[String],
    origin: &Origin,
) -> Result<Vec<threatbeat_core::FieldPath>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(index, raw)| path_at(raw, &origin.child(index)))
        .collect()
}

/// The error for a required field that is missing.
pub(crate) fn missing(path: &threatbeat_core::FieldPath) -> ProcessorError {
    ProcessorError::new(format!("field [{path}] not present"))
}

/// Writes `value` at `path`, turning a blocked write into a processor error.
pub(crate) fn write(
    event: &mut Event,
    path: &threatbeat_core::FieldPath,
    value: Value,
) -> Result<(), ProcessorError> {
    event
        .set(path, value)
        .map(|_| ())
        .map_err(|error| ProcessorError::new(error.to_string()))
}

/// A `from`/`to` pair, as Beats' `rename` and `copy_fields` write them.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FromTo {
    pub from: String,
    pub to: String,
}

/// Serde default for options that are on unless switched off.
pub(crate) fn yes() -> bool {
    true
}

/// The outcome of a processor that keeps the event.
pub(crate) const KEEP: Result<ProcessOutcome, ProcessorError> = Ok(ProcessOutcome::Keep);

/// Whether a value counts as empty for `ignore_empty_value(s)`: null or "".
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}
