//! Processor plugins and the chain that runs them.
//!
//! Every processor is registered in [`registry`], one line each. Each one
//! accepts, besides its own settings, the common keys `when` (a Beats-style
//! condition), `ignore_failure`, `drop_on_failure` and `on_failure` (a list
//! of processors run instead of marking the event); see `docs/processors.md`.

pub mod chain;
pub mod condition;
pub mod metrics;

mod collect;
mod collect_by_key;
mod common;
mod convert;
mod decode_json;
mod dissect;
mod document;
mod expiry;
mod fields;
mod fingerprint;
mod format;
mod lookup;
mod split_list;
mod stix_pattern;
mod tags;
mod uri;
mod values;

pub use chain::Chain;
pub use condition::Condition;

use common::factory;
use threatbeat_core::{Processor, Registry};

/// All processor types, by the name users write in YAML.
pub fn registry() -> Registry<dyn Processor> {
    let mut registry = Registry::new("processor");
    registry
        .register("add_fields", factory::<fields::AddFieldsConfig>)
        .register("append", factory::<values::AppendConfig>)
        .register("collect", factory::<collect::CollectConfig>)
        .register("collect_by_key", factory::<collect_by_key::CollectByKeyConfig>)
        .register("convert", factory::<convert::ConvertConfig>)
        .register("copy_fields", factory::<fields::CopyFieldsConfig>)
        .register("copy_tags", factory::<tags::CopyTagsConfig>)
        .register(
            "decode_json_fields",
            factory::<decode_json::DecodeJsonFieldsConfig>,
        )
        .register("dissect", factory::<dissect::DissectConfig>)
        .register("drop_event", factory::<fields::DropEventConfig>)
        .register("drop_fields", factory::<fields::DropFieldsConfig>)
        .register("encode_json", factory::<document::EncodeJsonConfig>)
        .register("extract_tlp", factory::<tags::ExtractTlpConfig>)
        .register("fingerprint", factory::<fingerprint::FingerprintConfig>)
        .register("ioc_expiration", factory::<expiry::IocExpirationConfig>)
        .register("lookup", factory::<lookup::LookupConfig>)
        .register("lowercase", factory::<values::LowercaseConfig>)
        .register("nest", factory::<document::NestConfig>)
        .register("remove_nulls", factory::<document::RemoveNullsConfig>)
        .register("rename", factory::<fields::RenameConfig>)
        .register("set", factory::<fields::SetConfig>)
        .register("split", factory::<lookup::SplitConfig>)
        .register("split_list", factory::<split_list::SplitListConfig>)
        .register("stix_pattern", factory::<stix_pattern::StixPatternConfig>)
        .register("timestamp", factory::<convert::TimestampConfig>)
        .register("uppercase", factory::<values::UppercaseConfig>)
        .register("uri_parts", factory::<uri::UriPartsConfig>);
    registry
}

#[cfg(test)]
pub(crate) mod test_util {
    use serde_json::Value;
    use threatbeat_core::{BuildContext, ConfigError, Event, Origin};

    use crate::Chain;

    pub fn origin() -> Origin {
        Origin::named("test.yml").child("processors")
    }

    pub fn chain(list: Value) -> Chain {
        Chain::build(&list, &origin(), &BuildContext::default()).unwrap()
    }

    pub fn build_error(list: Value) -> ConfigError {
        match Chain::build(&list, &origin(), &BuildContext::default()) {
            Ok(_) => panic!("the chain should have been rejected"),
            Err(error) => error,
        }
    }

    pub fn run_event(chain: &Chain, doc: Value) -> Event {
        chain.run(Event::from_value(doc)).expect("event kept")
    }

    pub fn run(chain: &Chain, doc: Value) -> Value {
        Value::Object(run_event(chain, doc).fields)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use serde_json::json;

    #[test]
    fn common_keys_work_on_every_processor() {
        let names: Vec<&str> = super::registry().names().collect();
        assert!(names.len() >= 18);
        let c = chain(json!([
            {"set": {"field": "seen", "value": true, "when": {"equals": {"kind": "a"}}}},
            {"rename": {"field": "nope", "target_field": "x", "on_failure": [{"set": {"field": "handled", "value": 1}}]}},
            {"rename": {"field": "nope", "target_field": "x", "ignore_failure": true}},
        ]));
        assert_eq!(
            run(&c, json!({"kind": "a"})),
            json!({"kind": "a", "seen": true, "handled": 1})
        );
        assert_eq!(run(&c, json!({"kind": "b"})), json!({"kind": "b", "handled": 1}));
    }

    #[test]
    fn several_failures_become_a_list_and_the_event_is_kept() {
        let c = chain(json!([
            {"rename": {"field": "a", "target_field": "b"}},
            {"convert": {"field": "c", "type": "long"}},
            {"set": {"field": "done", "value": true}},
        ]));
        let out = run(&c, json!({"c": "x"}));
        assert_eq!(
            out["error"]["message"],
            json!([
                "rename: field [a] not present",
                "convert: unable to convert [x] to long"
            ])
        );
        assert_eq!(out["done"], json!(true));
    }

    #[test]
    fn a_scalar_error_field_does_not_hide_the_failure() {
        let c = chain(json!([{"rename": {"field": "a", "target_field": "b"}}]));
        let out = run(&c, json!({"error": "from the source"}));
        assert_eq!(out["error"], json!("from the source"));
        assert_eq!(out["error.message"], json!("rename: field [a] not present"));
    }

    #[test]
    fn conflicting_failure_policies_and_bad_when_are_config_errors() {
        let error = build_error(json!([{"rename": {"field": "a", "target_field": "b",
            "ignore_failure": true, "drop_on_failure": true}}]));
        assert_eq!(error.key, "processors.0.rename");
        let error = build_error(json!([{"drop_event": {"when": {"regexp": {"a": "["}}}}]));
        assert_eq!(error.key, "processors.0.drop_event.when.regexp.a");
        let error = build_error(json!([{"no_such": {}}]));
        assert!(error.reason.contains("unknown processor type `no_such`"));
    }
}
