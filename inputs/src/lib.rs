//! Input plugins. Every input is registered in [`registry`], one line each.
//!
//! - [`httpjson`]: polls REST APIs (MISP, abuse.ch, OTX, ...) with paging and a cursor.
//! - [`file`]: reads JSON, NDJSON and MISP feed folders through the same split.

pub mod decode;
pub mod file;
pub mod httpjson;
pub mod metrics;
pub mod split;

use threatbeat_core::{Input, Registry};

/// All input types, by the name users write in YAML.
pub fn registry() -> Registry<dyn Input> {
    let mut registry = Registry::new("input");
    registry.register("file", file::build);
    registry.register("httpjson", httpjson::build);
    registry
}
