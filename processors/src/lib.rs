//! Processor plugins and the chain that runs them.
//!
//! Every processor is registered in [`registry`], one line each.

pub mod chain;

pub use chain::Chain;

use threatbeat_core::{Processor, Registry};

/// All processor types, by the name users write in YAML.
pub fn registry() -> Registry<dyn Processor> {
    Registry::new("processor")
}
