//! Output plugins. Every output is registered in [`registry`], one line each.

pub mod console;
pub mod elasticsearch;
pub mod file;
pub mod metrics;
pub mod queue;

use threatbeat_core::{Output, Registry};

/// All output types, by the name users write under `output.`.
pub fn registry() -> Registry<dyn Output> {
    let mut registry = Registry::new("output");
    registry.register("console", console::build);
    registry.register("elasticsearch", elasticsearch::build);
    registry.register("file", file::build);
    registry
}
