//! The threatbeat agent: configuration, the module loader, the CLI and the
//! pipelines that connect inputs, processors and the output.

pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod cursor_reset;
pub mod data_lock;
pub mod http;
pub mod keystore;
pub mod kibana;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod modules;
pub mod modules_dir;
pub mod pipeline;
pub mod progress;
pub mod reload;
pub mod running;
pub mod supervisor;
pub mod telemetry;
pub mod test_modules;
