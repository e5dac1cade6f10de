//! Output plugins. Every output is registered in [`registry`], one line each.

use threatbeat_core::{Output, Registry};

/// All output types, by the name users write under `output.`.
pub fn registry() -> Registry<dyn Output> {
    Registry::new("output")
}
