//! What the simulated cluster holds (indices, data streams, templates,
//! policies) and the faults it is told to inject.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value};

/// A document rule that makes indexing fail like a mapping conflict does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingRule {
    /// The dotted field is mapped as `ip`: a value that is not a single IP
    /// address (a CIDR such as `10.0.0.0/8`) fails with `mapper_parsing_exception`.
    IpField(String),
}

impl MappingRule {
    /// The `(field, value)` that breaks this rule in `document`, if any.
    pub(crate) fn violation(&self, document: &Map<String, Value>) -> Option<(String, String)> {
        match self {
            MappingRule::IpField(field) => {
                let value = lookup(document, field)?;
                let values = match value {
                    Value::Array(values) => values.iter().collect(),
                    single => vec![single],
                };
                values.into_iter().find_map(|value| {
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Null => return None,
                        other => other.to_string(),
                    };
                    (text.parse::<IpAddr>().is_err()).then(|| (field.clone(), text))
                })
            }
        }
    }
}

/// Finds a dotted field either nested (`{"a":{"b":1}}`) or flat (`{"a.b":1}`).
pub(crate) fn lookup<'a>(document: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    if let Some(value) = document.get(dotted) {
        return Some(value);
    }
    let (head, rest) = dotted.split_once('.')?;
    lookup(document.get(head)?.as_object()?, rest)
}

/// Credentials the simulated cluster accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
        /// Whether the user holds write privileges on every index.
        can_write: bool,
    },
    /// `Authorization: ApiKey base64(id:key)`.
    ApiKey {
        /// The API key id.
        id: String,
        /// The API key secret.
        key: String,
        /// Whether the key holds write privileges on every index.
        can_write: bool,
    },
}

/// Faults the simulator injects; change them at any time through the simulator.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every request with 503.
    pub unavailable: bool,
    /// Fraction (0.0–1.0) of bulk items answered with a per-item 429.
    pub item_rejection_rate: f64,
    /// Delay before every answer.
    pub delay: Option<Duration>,
    /// Bodies larger than this many bytes (as sent, after compression) get 413.
    pub max_content_length: Option<usize>,
    /// Documents breaking one of these rules fail with a 400 mapping error.
    pub mapping_rules: Vec<MappingRule>,
    /// Answer `_bulk` with `200` and this body, storing nothing (a proxy or
    /// an impostor in front of the cluster).
    pub hollow_bulk_answer: Option<Value>,
}

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    /// The `_id`.
    pub id: String,
    /// The `_source`.
    pub source: Value,
}

/// One index (or data stream backing index) with documents by `_id`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    pub uuid: String,
    pub documents: BTreeMap<String, Value>,
    /// The `_version` of every `_id` ever written, deleted ones included (a
    /// delete leaves a tombstone, so re-creating continues the count).
    pub versions: BTreeMap<String, u64>,
    pub data_stream: bool,
    pub next_seq_no: u64,
}

impl Index {
    /// The current `_version` of `id` (0 when never written).
    pub fn version(&self, id: &str) -> u64 {
        self.versions.get(id).copied().unwrap_or(0)
    }

    /// Stores (`Some`) or deletes (`None`) `id`: one more version and one
    /// more sequence number, as every write and delete, found or not, takes.
    /// Returns `(_version, _seq_no)`.
    pub fn write(&mut self, id: &str, document: Option<Value>) -> (u64, u64) {
        let version = self.version(id) + 1;
        self.versions.insert(id.to_owned(), version);
        match document {
            Some(document) => {
                self.documents.insert(id.to_owned(), document);
            }
            None => {
                self.documents.remove(id);
            }
        }
        self.next_seq_no += 1;
        (version, self.next_seq_no - 1)
    }

    /// The `_index` an answer shows: the backing index of a data stream.
    pub fn shown_name(&self, name: &str) -> String {
        if self.data_stream {
            format!(".ds-{name}-2026.01.01-000001")
        } else {
            name.to_owned()
        }
    }
}

/// Everything the simulated cluster stores, plus counters for assertions.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub indices: BTreeMap<String, Index>,
    pub index_templates: BTreeMap<String, Value>,
    pub ilm_policies: BTreeMap<String, (u64, Value)>,
    pub credentials: Vec<Credential>,
    pub faults: Faults,
    /// Requests by `METHOD /path-kind` (`POST _bulk`, `PUT _index_template`).
    pub request_counts: HashMap<String, u64>,
    pub bulk_items_received: u64,
    pub items_rejected_429: u64,
    pub random_state: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub id_counter: u64,
}

impl State {
    /// A deterministic pseudo-random number in [0, 1) (xorshift64*), so a
    /// 20 % rejection rate rejects the same items on every run.
    pub fn next_unit(&mut self) -> f64 {
        if self.random_state == 0 {
            self.random_state = 0x9E37_79B9_7F4A_7C15;
        }
        let mut x = self.random_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random_state = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An auto-generated `_id` (20 characters, like Elasticsearch's).
    pub fn generate_id(&mut self) -> String {
        self.id_counter += 1;
        format!("sim{:017}", self.id_counter)
    }

    /// Whether a composable template with `data_stream` matches `name`.
    pub fn template_wants_data_stream(&self, name: &str) -> bool {
        self.matching_template(name)
            .map(|template| template.get("data_stream").is_some())
            .unwrap_or(false)
    }

    /// The highest-priority template whose `index_patterns` match `name`.
    pub fn matching_template(&self, name: &str) -> Option<&Value> {
        self.index_templates
            .values()
            .filter(|template| {
                template
                    .get("index_patterns")
                    .and_then(Value::as_array)
                    .map(|patterns| {
                        patterns
                            .iter()
                            .filter_map(Value::as_str)
                            .any(|p| wildcard_match(p, name))
                    })
                    .unwrap_or(false)
            })
            .max_by_key(|template| template.get("priority").and_then(Value::as_i64).unwrap_or(0))
    }

    /// Dotted names of the fields the matching template maps as `ip` and
    /// that refuse malformed values (no `ignore_malformed`, neither on the
    /// field nor as the index setting `index.mapping.ignore_malformed`).
    pub fn template_ip_fields(&self, name: &str) -> Vec<String> {
        let mut fields = Vec::new();
        let Some(template) = self.matching_template(name) else {
            return fields;
        };
        let settings = template.pointer("/template/settings");
        let index_ignores = settings.is_some_and(|settings| {
            [
                settings.pointer("/index/mapping/ignore_malformed"),
                settings.get("index.mapping.ignore_malformed"),
                settings.pointer("/index.mapping/ignore_malformed"),
            ]
            .into_iter()
            .flatten()
            .any(is_true)
        });
        if let Some(properties) = template.pointer("/template/mappings/properties") {
            collect_ip_fields(properties, "", index_ignores, &mut fields);
        }
        fields
    }

    /// The index `name`, created on first use (as `action.auto_create_index` does).
    pub fn index_mut(&mut self, name: &str) -> &mut Index {
        if !self.indices.contains_key(name) {
            let data_stream = self.template_wants_data_stream(name);
            let uuid = format!("uuid-{}-{}", name.len(), self.indices.len());
            self.indices.insert(
                name.to_owned(),
                Index {
                    uuid,
                    data_stream,
                    ..Index::default()
                },
            );
        }
        self.indices.get_mut(name).expect("inserted above")
    }
}

fn is_true(value: &Value) -> bool {
    value.as_bool() == Some(true) || value.as_str() == Some("true")
}

fn collect_ip_fields(properties: &Value, prefix: &str, index_ignores: bool, out: &mut Vec<String>) {
    let Some(properties) = properties.as_object() else {
        return;
    };
    for (name, mapping) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let ignores = mapping.get("ignore_malformed").map_or(index_ignores, is_true);
        if mapping.get("type").and_then(Value::as_str) == Some("ip") && !ignores {
            out.push(path.clone());
        }
        if let Some(children) = mapping.get("properties") {
            collect_ip_fields(children, &path, index_ignores, out);
        }
    }
}

/// `*`-wildcard matching as used by index patterns.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            if !name.starts_with(prefix) {
                return false;
            }
            let remainder = &name[prefix.len()..];
            if rest.is_empty() {
                return true;
            }
            (0..=remainder.len())
                .filter(|&start| remainder.is_char_boundary(start))
                .any(|start| wildcard_match(rest, &remainder[start..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards_and_lookups() {
        assert!(wildcard_match("threatbeat-*", "threatbeat-2026.01.01"));
        assert!(wildcard_match("logs-ti_*-*", "logs-ti_misp.threat-default"));
        assert!(!wildcard_match("logs-*", "threatbeat-x"));
        let document = json!({"threat": {"indicator": {"ip": "10.0.0.0/8"}}, "a.b": 1});
        let document = document.as_object().unwrap();
        assert_eq!(lookup(document, "a.b"), Some(&json!(1)));
        let rule = MappingRule::IpField("threat.indicator.ip".into());
        assert_eq!(
            rule.violation(document),
            Some(("threat.indicator.ip".into(), "10.0.0.0/8".into()))
        );
    }

    #[test]
    fn unit_random_is_in_range() {
        let mut state = State::default();
        let rejected = (0..10_000).filter(|_| state.next_unit() < 0.2).count();
        assert!((1_700..2_300).contains(&rejected), "{rejected}");
    }
}
