//! The MISP pages and the MISP fileset's split and processors, as the
//! micro-benchmarks and the instruction-count example use them. Included with
//! `#[path]` by `benches/micro.rs` and `examples/chain_instructions.rs`: it
//! needs the agent's crates, which are dev-dependencies of this package.

use serde_json::{json, Map, Value};
use threatbeat::modules::{builtin_definition, resolve};
use threatbeat_core::{BuildContext, Origin};
use threatbeat_inputs::split::{Split, SplitConfig};
use threatbeat_processors::Chain;
use threatbeat_test_support::misp::{fixtures_dir, generate_events, load_events, Store};

/// 100 generated events of 10 attributes: 1 000 records.
pub fn generated_page() -> Vec<u8> {
    page(generate_events(100, 10, 1_700_000_000))
}

/// The real events of `test-support/data/misp` (galaxies, objects, tags).
pub fn real_page() -> Vec<u8> {
    page(load_events(&fixtures_dir()).expect("the MISP fixtures load"))
}

/// A `restSearch` answer of `events` as the simulator serves it (ids assigned).
fn page(events: Vec<Value>) -> Vec<u8> {
    let mut store = Store::default();
    store.add(events);
    let response: Vec<Value> = store
        .events
        .into_iter()
        .map(|event| json!({"Event": Value::Object(event)}))
        .collect();
    serde_json::to_vec(&json!({ "response": response })).unwrap()
}

/// The MISP fileset's record split and processor chain, built from the
/// builtin definition with default vars.
pub struct Misp {
    /// `response.split` of the httpjson input.
    pub split: Split,
    /// The fileset's processors.
    pub chain: Chain,
}

/// Builds [`Misp`] from `threatintel/misp`.
pub fn misp_fileset() -> Misp {
    let definition = builtin_definition("threatintel", "misp").unwrap();
    let origin = Origin::named("bench");
    let resolved = resolve(&definition, &Map::new(), &origin).unwrap();
    let split_settings = resolved.input.settings["response"]["split"].clone();
    let split_config: SplitConfig = serde_json::from_value(split_settings).unwrap();
    Misp {
        split: Split::build(&split_config, &origin).unwrap(),
        chain: Chain::build(
            &resolved.processors,
            &resolved.processors_origin,
            &BuildContext::default(),
        )
        .unwrap(),
    }
}

/// Decodes a page and splits it into one record per attribute.
pub fn records(misp: &Misp, body: &[u8]) -> Vec<Value> {
    let document: Value = serde_json::from_slice(body).unwrap();
    let mut out = Vec::new();
    misp.split.apply(&document, &mut out, &mut Vec::new()).unwrap();
    out
}
