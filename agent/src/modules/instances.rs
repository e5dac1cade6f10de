//! Several instances of one fileset: two MISP servers, two OTX keys. Each
//! instance is its own pipeline with its own cursor, so each needs an id.
//!
//! A fileset configured once keeps the plain id `module/fileset` (the cursor
//! file and metrics of earlier versions stay valid). When it is configured
//! several times, each instance becomes `module/fileset/<id>`: the entry's
//! `id:` if it sets one, else a short hash of the settings that say *where
//! the data comes from* ([`SOURCE_VARS`]). Renaming a module file, moving an
//! entry, or editing any other setting (interval, tags, a key rotation)
//! keeps the id and therefore the cursor; two entries with the same source
//! and no `id` are an error that asks for one.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use threatbeat_core::ConfigError;

use super::resolve::ResolvedFileset;

/// The variables that identify a fileset instance's source. Credentials are
/// left out on purpose: a rotated key must not reset a cursor.
pub const SOURCE_VARS: &[&str] = &[
    "input",
    "url",
    "host",
    "endpoint",
    "entity",
    "list",
    "data_collection_id",
    "paths",
    "listen_address",
    "listen_port",
];

/// Checks an entry's `id:`: it becomes part of a pipeline id, a metrics
/// label and a cursor file name.
pub fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A short, stable digest of the instance's source variables (hex, 8 characters).
pub fn source_key(fileset: &ResolvedFileset) -> String {
    let mut hasher = Sha256::new();
    for name in SOURCE_VARS {
        let value = fileset.vars.get(*name).unwrap_or(&Value::Null);
        // Name, then the value's canonical JSON: unambiguous and independent
        // of key order in the user's file.
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(value.to_string().as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Gives every fileset its pipeline id (see the module docs). Fails, naming
/// the second entry and the first, when two instances end up with one id.
pub fn assign_pipeline_ids<'a>(
    filesets: impl IntoIterator<Item = &'a mut ResolvedFileset>,
) -> Result<(), ConfigError> {
    let mut by_base: BTreeMap<String, Vec<&'a mut ResolvedFileset>> = BTreeMap::new();
    for fileset in filesets {
        by_base.entry(fileset.base_id()).or_default().push(fileset);
    }
    for (base, instances) in by_base {
        let several = instances.len() > 1;
        let mut taken: BTreeMap<String, &ResolvedFileset> = BTreeMap::new();
        for fileset in instances {
            fileset.id = match (&fileset.instance, several) {
                (Some(instance), _) => format!("{base}/{instance}"),
                (None, true) => format!("{base}/{}", fileset.source_key),
                (None, false) => base.clone(),
            };
            if let Some(first) = taken.get(&fileset.id) {
                let first = &first.origin;
                let reason = match &fileset.instance {
                    Some(instance) => format!("{base} is enabled twice with the same `id: {instance}`"),
                    None => format!(
                        "{base} is enabled twice with the same source ({})",
                        describe_source(fileset)
                    ),
                };
                return Err(fileset.origin.error(format!(
                    "{reason} (also in {} key `{}`); give each entry its own `id:` to run both, or remove one",
                    first.file, first.key
                )));
            }
            taken.insert(fileset.id.clone(), fileset);
        }
    }
    Ok(())
}

/// `var.url: https://…, var.input: httpjson`: the source variables that are set.
fn describe_source(fileset: &ResolvedFileset) -> String {
    let set: Vec<String> = SOURCE_VARS
        .iter()
        .filter_map(|name| match fileset.vars.get(*name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(format!("var.{name}: {text}")),
            Some(other) => Some(format!("var.{name}: {other}")),
        })
        .collect();
    if set.is_empty() {
        "the definition's defaults".to_owned()
    } else {
        set.join(", ")
    }
}
