//! A pipeline's processors, built once from a YAML list such as
//! `[{"rename": {...}}, {"fingerprint": {...}}]`, run on every event.

use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, Origin, PluginConfig, ProcessOutcome, Processor};

/// The compiled processors of one pipeline, in order.
pub struct Chain {
    processors: Vec<Box<dyn Processor>>,
}

impl Chain {
    /// Builds the chain from a YAML list in which each item is a one-key map
    /// naming the processor type. `origin` is where the list was written.
    pub fn build(list: &Value, origin: &Origin, context: &BuildContext) -> Result<Chain, ConfigError> {
        let registry = crate::registry();
        let items = match list {
            Value::Null => return Ok(Chain { processors: Vec::new() }),
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
            let entry = match item.as_object() {
                Some(map) if map.len() == 1 => map,
                _ => {
                    return Err(item_origin.error(
                        "each processor must be a map with exactly one key, the processor type (`- rename: {...}`)",
                    ))
                }
            };
            let (type_name, settings) = entry.iter().next().expect("the map has one entry");
            let plugin = PluginConfig {
                type_name: type_name.clone(),
                settings: settings.clone(),
                origin: item_origin.child(type_name),
            };
            processors.push(registry.build(&plugin, context)?);
        }
        Ok(Chain { processors })
    }

    /// Runs every processor on `event`; `None` when one dropped it.
    pub fn run(&self, mut event: Event) -> Option<Event> {
        for processor in &self.processors {
            match processor.process(&mut event) {
                Ok(ProcessOutcome::Keep) => {}
                Ok(ProcessOutcome::Drop) => return None,
                Err(error) => {
                    let message = format!("{}: {error}", processor.name());
                    let _ = event.set(
                        &threatbeat_core::FieldPath::parse("error.message").expect("valid path"),
                        Value::String(message),
                    );
                }
            }
        }
        Some(event)
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
