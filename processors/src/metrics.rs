//! Prometheus metrics of the processor chains, registered in
//! `prometheus::default_registry()` (the agent's `/metrics` serves that registry).
//! Every metric is listed in `docs/operations.md`.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, Opts};

/// `threatbeat_processor_errors_total{pipeline,processor}`: the handle of one
/// processor of one pipeline, resolved once when the chain is built.
pub fn processor_errors(pipeline: &str, processor: &str) -> IntCounter {
    static ERRORS: OnceLock<IntCounterVec> = OnceLock::new();
    ERRORS
        .get_or_init(|| {
            let errors = IntCounterVec::new(
                Opts::new(
                    "threatbeat_processor_errors_total",
                    "Processor failures recorded in an event's error.message (the event is kept).",
                ),
                &["pipeline", "processor"],
            )
            .expect("a valid metric definition");
            // Registration fails only for a duplicate name, which `OnceLock` rules out;
            // the metric still counts, it is just not exported then.
            if let Err(error) = prometheus::default_registry().register(Box::new(errors.clone())) {
                tracing::warn!(%error, "a metric could not be registered");
            }
            errors
        })
        .with_label_values(&[pipeline, processor])
}
