//! What threatbeat's tests share: simulators of every feed's API and of
//! Elasticsearch (faithful to the vendors' documented requests, envelopes and
//! errors), running the real binary, the vendored test data and the golden
//! comparison. The product binary never links this crate.
pub mod abusech;
pub mod agent;
pub mod blocklist;
pub mod data;
pub mod elasticsearch;
pub mod golden;
pub mod hostile;
pub mod kibana;
pub mod misp;
pub mod misp_feed;
pub mod otx;
pub mod recordedfuture;
pub mod rules;
pub mod server;
pub mod taxii;
pub mod taxii21;
pub mod threatq;
pub mod tls;
