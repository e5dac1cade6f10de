//! Simulators of MISP and Elasticsearch for threatbeat's tests, faithful to
//! the facts in `shared/reference/`. The product binary never links this crate.
pub mod agent;
pub mod data;
pub mod elasticsearch;
pub mod golden;
pub mod misp;
pub mod rules;
pub mod tls;
