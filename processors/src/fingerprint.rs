//! `fingerprint`: a hash of listed fields, by default into `@metadata._id`,
//! so that fetching the same indicator again overwrites instead of duplicating.
//!
//! Two byte layouts:
//! * `elasticsearch` reproduces Elasticsearch's ingest `fingerprint`
//!   processor exactly (field names sorted, each scalar fed as `0x00` + its
//!   bytes; strings UTF-8, booleans `0x01`/`0x02`, integers and doubles
//!   little-endian; lists in order; maps by sorted key as `0x00` + key then
//!   the value; field names not hashed), so ids equal those Elastic makes;
//! * `beats` reproduces Beats' `fingerprint` processor (`|name|value` per
//!   sorted field, then a closing `|`).

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha1::Digest;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, write, Step, StepConfig};

/// The hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Method {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Xxhash,
}

/// How the digest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

/// Which byte layout feeds the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Layout {
    #[default]
    Elasticsearch,
    Beats,
}

/// `fingerprint` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FingerprintConfig {
    fields: Vec<String>,
    #[serde(default = "default_target")]
    target_field: String,
    #[serde(default = "default_method")]
    method: Method,
    encoding: Option<Encoding>,
    #[serde(default)]
    layout: Layout,
    #[serde(default)]
    salt: String,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_target() -> String {
    "@metadata._id".to_owned()
}

fn default_method() -> Method {
    Method::Sha256
}

pub(crate) struct Fingerprint {
    /// Sorted by name, as both Elasticsearch and Beats do.
    fields: Vec<FieldPath>,
    target: FieldPath,
    method: Method,
    encoding: Encoding,
    layout: Layout,
    salt: Vec<u8>,
    ignore_missing: bool,
}

impl StepConfig for FingerprintConfig {
    const NAME: &'static str = "fingerprint";
    type Step = Fingerprint;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Fingerprint, ConfigError> {
        if self.fields.is_empty() {
            return Err(origin
                .child("fields")
                .error("list at least one field to fingerprint"));
        }
        let mut names = self.fields.clone();
        names.sort();
        names.dedup();
        let fields = names
            .iter()
            .map(|raw| path_at(raw, &origin.child("fields")))
            .collect::<Result<Vec<_>, _>>()?;
        if self.layout == Layout::Beats && !self.salt.is_empty() {
            return Err(origin
                .child("salt")
                .error("`salt` exists only in the `elasticsearch` layout"));
        }
        Ok(Fingerprint {
            fields,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            method: self.method,
            // Elasticsearch writes Base64, Beats hex: each layout defaults to its own.
            encoding: self.encoding.unwrap_or(match self.layout {
                Layout::Elasticsearch => Encoding::Base64,
                Layout::Beats => Encoding::Hex,
            }),
            layout: self.layout,
            salt: self.salt.into_bytes(),
            ignore_missing: self.ignore_missing,
        })
    }
}

/// The running hash, whichever the method.
enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Xxhash(xxhash_rust::xxh64::Xxh64),
}

impl Hasher {
    fn new(method: Method) -> Hasher {
        match method {
            Method::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Method::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Method::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Method::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Method::Xxhash => Hasher::Xxhash(xxhash_rust::xxh64::Xxh64::new(0)),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
            Hasher::Xxhash(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            // Go's hash.Hash64 Sum appends the big-endian digest (Beats).
            Hasher::Xxhash(h) => h.digest().to_be_bytes().to_vec(),
        }
    }
}

impl Step for Fingerprint {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let mut hasher = Hasher::new(self.method);
        hasher.update(&self.salt);
        let mut fed = 0;
        for field in &self.fields {
            match event.get(field) {
                None | Some(Value::Null) if self.ignore_missing => continue,
                None | Some(Value::Null) => return Err(missing(field)),
                Some(value) => {
                    fed += 1;
                    match self.layout {
                        Layout::Elasticsearch => feed_elasticsearch(&mut hasher, value),
                        Layout::Beats => {
                            hasher.update(b"|");
                            hasher.update(field.as_str().as_bytes());
                            hasher.update(b"|");
                            match value {
                                Value::String(text) => hasher.update(text.as_bytes()),
                                other => hasher.update(other.to_string().as_bytes()),
                            }
                        }
                    }
                }
            }
        }
        if fed == 0 {
            // As Elasticsearch: nothing to hash, no id (the document gets an automatic one).
            return Ok(ProcessOutcome::Keep);
        }
        if self.layout == Layout::Beats {
            hasher.update(b"|");
        }
        let digest = hasher.finish();
        let encoded = match self.encoding {
            Encoding::Hex => digest.iter().map(|byte| format!("{byte:02x}")).collect(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
        };
        write(event, &self.target, Value::String(encoded))?;
        Ok(ProcessOutcome::Keep)
    }
}

const DELIMITER: [u8; 1] = [0];

fn feed_elasticsearch(hasher: &mut Hasher, value: &Value) {
    match value {
        Value::Null => {}
        Value::String(text) => {
            hasher.update(&DELIMITER);
            hasher.update(text.as_bytes());
        }
        Value::Bool(flag) => {
            hasher.update(&DELIMITER);
            hasher.update(&[if *flag { 1 } else { 2 }]);
        }
        Value::Number(number) => {
            hasher.update(&DELIMITER);
            // Elasticsearch reads JSON integers as Integer when they fit, else Long.
            if let Some(int) = number.as_i64() {
                match i32::try_from(int) {
                    Ok(small) => hasher.update(&small.to_le_bytes()),
                    Err(_) => hasher.update(&int.to_le_bytes()),
                }
            } else if let Some(unsigned) = number.as_u64() {
                hasher.update(&unsigned.to_le_bytes());
            } else if let Some(float) = number.as_f64() {
                hasher.update(&float.to_bits().to_le_bytes());
            }
        }
        Value::Array(items) => items.iter().for_each(|item| feed_elasticsearch(hasher, item)),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                hasher.update(&DELIMITER);
                hasher.update(key.as_bytes());
                feed_elasticsearch(hasher, &map[key]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run_event};
    use serde_json::json;

    fn misp_fingerprint() -> crate::Chain {
        chain(json!([{"fingerprint": {
            "fields": ["Event.Object.Attribute.uuid", "Event.Attribute.uuid"],
            "method": "sha1", "encoding": "base64", "layout": "elasticsearch", "ignore_missing": true
        }}]))
    }

    #[test]
    fn reproduces_elasticsearch_test_vectors() {
        let c = misp_fingerprint();
        let plain = run_event(
            &c,
            json!({"Event": {"Attribute": {"uuid": "59a427a0-f6f8-4178-9e7d-dfd702de0b81"}}}),
        );
        assert_eq!(plain.id(), Some("wI6DaovHTbVeu7FZKUiveqBQh+U="));
        let object = run_event(
            &c,
            json!({"Event": {"Attribute": {"uuid": "3b322e1a-1dd8-490c-ab96-12e1bc3ee6a3"},
                             "Object": {"Attribute": {"uuid": "657c5f2b-9d68-4ff7-a9ad-ab9e6a6c953e"}}}}),
        );
        assert_eq!(object.id(), Some("DnEa0qhGv4pi+crRMCweL0kKeXo="));
        assert!(!object.fields.contains_key("@metadata"));
    }

    #[test]
    fn nothing_to_hash_means_no_id_and_missing_fails_without_ignore() {
        assert_eq!(run_event(&misp_fingerprint(), json!({"Event": {}})).id(), None);
        let c = chain(json!([{"fingerprint": {"fields": ["a"]}}]));
        let marked = run_event(&c, json!({"b": 1}));
        assert_eq!(
            marked.fields["error"]["message"],
            json!("fingerprint: field [a] not present")
        );
    }

    #[test]
    fn methods_encodings_and_beats_layout() {
        let doc = json!({"a": "x", "b": {"k": [1, true, 2.5]}});
        let sha256 = run_event(
            &chain(json!([{"fingerprint": {"fields": ["a"], "encoding": "hex"}}])),
            doc.clone(),
        );
        // sha256(0x00 "x")
        assert_eq!(
            sha256.id(),
            Some("3c7e9bc930dc93f01fa69985ef242d9f9e861f3c5355aa24ce5ef4b4b8a70ccb")
        );
        let beats = run_event(
            &chain(json!([{"fingerprint": {"fields": ["a"], "layout": "beats", "target_field": "fp"}}])),
            doc.clone(),
        );
        // sha256("|a|x|"), Beats' documented layout.
        assert_eq!(
            beats.fields["fp"],
            json!("d14d282e1b0003b5f899ef21665e7ae6b9f2f46f21e68b11100152ffb9db2c6d")
        );
        for method in ["sha1", "sha384", "sha512", "xxhash"] {
            let c = chain(json!([{"fingerprint": {"fields": ["b", "a"], "method": method}}]));
            let first = run_event(&c, doc.clone());
            let again = run_event(&c, doc.clone());
            assert!(first.id().is_some());
            assert_eq!(first.id(), again.id(), "{method} is deterministic");
        }
    }
}
