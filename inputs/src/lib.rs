//! Input plugins. Every input is registered in [`registry`], one line each.
//!
//! - [`httpjson`]: polls REST APIs (MISP, abuse.ch, OTX, ...) with paging and a cursor.
//! - [`http_endpoint`]: listens for records pushed over HTTP(S) (webhooks, ThreatStream).
//! - [`file`]: reads JSON, NDJSON, CSV and MISP feed folders through the same split.
//! - [`csv`]: CSV into objects (httpjson `decode_as: text/csv`, file `format: csv`).
//! - [`lines`]: one value per line (httpjson `decode_as: text/plain`, file `format: lines`).

pub mod csv;
pub mod dead_letter;
pub mod decode;
pub mod file;
pub mod http_endpoint;
pub mod httpjson;
pub mod lines;
pub mod metrics;
pub mod split;

use threatbeat_core::{Input, Registry};

/// All input types, by the name users write in YAML.
pub fn registry() -> Registry<dyn Input> {
    let mut registry = Registry::new("input");
    registry.register("file", file::build);
    registry.register("http_endpoint", http_endpoint::build);
    registry.register("httpjson", httpjson::build);
    registry
}
