//! Input plugins. Every input is registered in [`registry`], one line each.

use threatbeat_core::{Input, Registry};

/// All input types, by the name users write in YAML.
pub fn registry() -> Registry<dyn Input> {
    Registry::new("input")
}
