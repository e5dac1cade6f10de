//! A pipeline's processors, built once from a YAML list such as
//! `[{"rename": {...}}, {"fingerprint": {...}}]`, run on every event.
//!
//! A processor that fails marks the event and the chain goes on: the message
//! lands in `error.message` (a string, or a list once there are several, as
//! Elasticsearch does), so one bad value never stops the pipeline or loses
//! the event. Processors configured with `drop_on_failure` drop it instead.

use std::sync::OnceLock;

use prometheus::IntCounter;
use serde_json::Value;
use threatbeat_core::{
    BuildContext, ConfigError, Event, FieldPath, Origin, PluginConfig, ProcessOutcome, Processor,
};

/// The compiled processors of one pipeline, in order.
pub struct Chain {
    processors: Vec<Box<dyn Processor>>,
    /// `threatbeat_processor_errors_total` of each processor, same order.
    errors: Vec<IntCounter>,
}

impl Chain {
    /// Builds the chain from a YAML list in which each item is a one-key map
    /// naming the processor type. `origin` is where the list was written.
    pub fn build(list: &Value, origin: &Origin, context: &BuildContext) -> Result<Chain, ConfigError> {
        let registry = crate::registry();
        let items = match list {
            Value::Null => {
                return Ok(Chain {
                    processors: Vec::new(),
                    errors: Vec::new(),
                })
            }
            Value::Array(items) => items,
            other => {
                return Err(origin.error(format!(
                    "expected a list of processors, found a {}",
                    threatbeat_core::path::json_kind(other)
                )))
            }
        };
        let mut processors = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            let item_origin = origin.child(position);
            let Some((type_name, settings)) = item
                .as_object()
                .filter(|map| map.len() == 1)
                .and_then(|map| map.iter().next())
            else {
                return Err(item_origin.error(
                    "each processor must be a map with exactly one key, the processor type (`- rename: {...}`)",
                ));
            };
            let plugin = PluginConfig {
                type_name: type_name.clone(),
                settings: settings.clone(),
                origin: item_origin.child(type_name),
            };
            processors.push(registry.build(&plugin, context)?);
        }
        let errors = processors
            .iter()
            .map(|processor| crate::metrics::processor_errors(&context.pipeline_id, processor.name()))
            .collect();
        Ok(Chain { processors, errors })
    }

    /// Runs every processor on `event`; `None` when one dropped it.
    pub fn run(&self, mut event: Event) -> Option<Event> {
        match self.run_in_place(&mut event) {
            ProcessOutcome::Keep => Some(event),
            ProcessOutcome::Drop => None,
        }
    }

    /// Runs every processor on a whole batch, keeping the events not dropped,
    /// in order, without reallocating the vector.
    pub fn run_batch(&self, events: &mut Vec<Event>) {
        events.retain_mut(|event| self.run_in_place(event) == ProcessOutcome::Keep);
    }

    /// Runs every processor on `event` in place and says whether to keep it.
    pub fn run_in_place(&self, event: &mut Event) -> ProcessOutcome {
        for (processor, errors) in self.processors.iter().zip(&self.errors) {
            match processor.process(event) {
                Ok(ProcessOutcome::Keep) => {}
                Ok(ProcessOutcome::Drop) => return ProcessOutcome::Drop,
                Err(error) => {
                    errors.inc();
                    tracing::debug!(processor = processor.name(), %error, "processor failed; event marked");
                    record_error(event, format!("{}: {error}", processor.name()));
                }
            }
        }
        ProcessOutcome::Keep
    }

    /// The number of processors.
    pub fn len(&self) -> usize {
        self.processors.len()
    }

    /// Whether the chain has no processors.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }
}

/// Adds `message` to `error.message`: a string for the first error, a list after.
pub(crate) fn record_error(event: &mut Event, message: String) {
    static PATH: OnceLock<FieldPath> = OnceLock::new();
    let path = PATH.get_or_init(|| FieldPath::parse("error.message").expect("a valid constant path"));
    let combined = match event.remove(path) {
        None | Some(Value::Null) => Value::String(message),
        Some(Value::Array(mut list)) => {
            list.push(Value::String(message));
            Value::Array(list)
        }
        Some(previous) => Value::Array(vec![previous, Value::String(message)]),
    };
    if event.set(path, combined.clone()).is_err() {
        // `error` holds a scalar (a source field named so): keep it, and
        // record the failure at the root so it is still visible.
        event.fields.insert("error.message".to_owned(), combined);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn failures_count_per_pipeline_and_processor() {
        let context = BuildContext {
            pipeline_id: "unit/chain-errors".to_owned(),
            ..BuildContext::default()
        };
        let list = json!([
            {"rename": {"field": "a", "target_field": "b"}},
            {"convert": {"field": "c", "type": "long"}},
        ]);
        let chain = Chain::build(&list, &Origin::named("test.yml"), &context).unwrap();
        for doc in [json!({"c": "x"}), json!({"a": 1, "c": "7"})] {
            chain.run(Event::from_value(doc));
        }
        let rename = crate::metrics::processor_errors("unit/chain-errors", "rename");
        let convert = crate::metrics::processor_errors("unit/chain-errors", "convert");
        assert_eq!((rename.get(), convert.get()), (1, 1));
    }
}
