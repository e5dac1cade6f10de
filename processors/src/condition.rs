//! Beats-style `when` conditions, compiled once when the pipeline is built.
//!
//! ```yaml
//! when:
//!   and:
//!     - equals: {misp.attribute.type: md5}
//!     - not: {has_fields: [threat.indicator.ip]}
//! ```
//! Supported: `equals`, `contains`, `regexp`, `has_fields`, `range`,
//! `network`, `and`, `or`, `not`. Several fields inside one `equals` (or
//! `contains`, `regexp`, `range`, `network`) must all match, as in Beats.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use regex::Regex;
use serde_json::{Map, Value};
use threatbeat_core::{ConfigError, Event, FieldPath, Origin};

use crate::common::path_at;

/// A compiled condition.
#[derive(Debug)]
pub enum Condition {
    /// Every field equals its value (numbers compare numerically; a list
    /// field matches when one element equals).
    Equals(Vec<(FieldPath, Value)>),
    /// Every field's string (or one element of a string list) contains the text.
    Contains(Vec<(FieldPath, String)>),
    /// Every field's string (or one element) matches the pattern (unanchored).
    Regexp(Vec<(FieldPath, Regex)>),
    /// Every field exists.
    HasFields(Vec<FieldPath>),
    /// Every field's number (or numeric string) lies in its bounds.
    Range(Vec<(FieldPath, Bounds)>),
    /// Every field's IP lies in one of its networks.
    Network(Vec<(FieldPath, Vec<NetworkMatcher>)>),
    /// All sub-conditions match.
    And(Vec<Condition>),
    /// At least one sub-condition matches.
    Or(Vec<Condition>),
    /// The sub-condition does not match.
    Not(Box<Condition>),
}

/// Numeric bounds of a `range` condition.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bounds {
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

/// A CIDR or one of Beats' named networks.
#[derive(Debug, Clone)]
pub enum NetworkMatcher {
    /// A CIDR block.
    Cidr(IpNet),
    /// A named class (`private`, `loopback`, ...).
    Named(NamedNetwork),
}

/// Beats' named network classes.
#[derive(Debug, Clone, Copy)]
pub enum NamedNetwork {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// Any unicast address.
    Unicast,
    /// Any multicast address.
    Multicast,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocalUnicast,
    /// RFC 1918 and fc00::/7.
    Private,
    /// Unicast, not private, loopback, link-local or unspecified.
    Public,
    /// 0.0.0.0, ::.
    Unspecified,
}

const KNOWN: &str = "equals, contains, regexp, has_fields, range, network, and, or, not";

impl Condition {
    /// Compiles a condition written at `origin`; unknown condition names, bad
    /// regular expressions and bad CIDRs are config errors naming the key.
    pub fn compile(value: &Value, origin: &Origin) -> Result<Condition, ConfigError> {
        let map = value.as_object().filter(|map| map.len() == 1).ok_or_else(|| {
            origin.error(format!(
                "a condition is a map with exactly one key, one of: {KNOWN}"
            ))
        })?;
        let (kind, body) = map.iter().next().expect("the map has one entry");
        let origin = origin.child(kind);
        match kind.as_str() {
            "equals" => Ok(Condition::Equals(fields(
                body,
                &origin,
                |value, origin| match value {
                    Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null | Value::Array(_) => {
                        Ok(value.clone())
                    }
                    Value::Object(_) => Err(origin.error("`equals` compares with a scalar or a list")),
                },
            )?)),
            "contains" => Ok(Condition::Contains(fields(body, &origin, |value, origin| {
                value
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| origin.error("`contains` needs a string"))
            })?)),
            "regexp" => Ok(Condition::Regexp(fields(body, &origin, |value, origin| {
                let pattern = value
                    .as_str()
                    .ok_or_else(|| origin.error("`regexp` needs a string pattern"))?;
                Regex::new(pattern)
                    .map_err(|error| origin.error(format!("invalid regular expression: {error}")))
            })?)),
            "has_fields" => {
                let list = body
                    .as_array()
                    .ok_or_else(|| origin.error("`has_fields` needs a list of field names"))?;
                let paths = list
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        let origin = origin.child(index);
                        let raw = item
                            .as_str()
                            .ok_or_else(|| origin.error("expected a field name"))?;
                        path_at(raw, &origin)
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Condition::HasFields(paths))
            }
            "range" => compile_range(body, &origin),
            "network" => Ok(Condition::Network(fields(body, &origin, |value, origin| {
                let items: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    single => vec![single],
                };
                items
                    .into_iter()
                    .map(|item| {
                        let raw = item
                            .as_str()
                            .ok_or_else(|| origin.error("`network` needs a CIDR or a network name"))?;
                        NetworkMatcher::parse(raw).map_err(|reason| origin.error(reason))
                    })
                    .collect()
            })?)),
            "and" | "or" => {
                let list = body
                    .as_array()
                    .filter(|list| !list.is_empty())
                    .ok_or_else(|| origin.error(format!("`{kind}` needs a non-empty list of conditions")))?;
                let parts = list
                    .iter()
                    .enumerate()
                    .map(|(index, item)| Condition::compile(item, &origin.child(index)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if kind == "and" {
                    Condition::And(parts)
                } else {
                    Condition::Or(parts)
                })
            }
            "not" => Ok(Condition::Not(Box::new(Condition::compile(body, &origin)?))),
            other => Err(origin.error(format!("unknown condition `{other}`; known conditions: {KNOWN}"))),
        }
    }

    /// Whether `event` satisfies the condition.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Condition::Equals(checks) => checks
                .iter()
                .all(|(path, expected)| event.get(path).is_some_and(|actual| equals(actual, expected))),
            Condition::Contains(checks) => checks
                .iter()
                .all(|(path, needle)| any_string(event.get(path), |text| text.contains(needle.as_str()))),
            Condition::Regexp(checks) => checks
                .iter()
                .all(|(path, pattern)| any_string(event.get(path), |text| pattern.is_match(text))),
            Condition::HasFields(paths) => paths.iter().all(|path| event.get(path).is_some()),
            Condition::Range(checks) => checks.iter().all(|(path, bounds)| {
                event
                    .get(path)
                    .and_then(as_number)
                    .is_some_and(|n| bounds.contains(n))
            }),
            Condition::Network(checks) => checks.iter().all(|(path, networks)| {
                any_string(event.get(path), |text| {
                    IpAddr::from_str(text).is_ok_and(|ip| networks.iter().any(|network| network.contains(ip)))
                })
            }),
            Condition::And(parts) => parts.iter().all(|part| part.matches(event)),
            Condition::Or(parts) => parts.iter().any(|part| part.matches(event)),
            Condition::Not(part) => !part.matches(event),
        }
    }
}

/// Compiles the `field: value` map of a leaf condition.
fn fields<T>(
    body: &Value,
    origin: &Origin,
    compile: impl Fn(&Value, &Origin) -> Result<T, ConfigError>,
) -> Result<Vec<(FieldPath, T)>, ConfigError> {
    let map: &Map<String, Value> = body
        .as_object()
        .filter(|map| !map.is_empty())
        .ok_or_else(|| origin.error("expected a map of field names to values"))?;
    map.iter()
        .map(|(field, value)| {
            let origin = origin.child(field);
            Ok((path_at(field, &origin)?, compile(value, &origin)?))
        })
        .collect()
}

fn compile_range(body: &Value, origin: &Origin) -> Result<Condition, ConfigError> {
    let map = body
        .as_object()
        .filter(|map| !map.is_empty())
        .ok_or_else(|| origin.error("`range` needs a map such as `{misp.threat_level_id.lte: 2}`"))?;
    let mut checks: Vec<(FieldPath, Bounds)> = Vec::new();
    for (key, value) in map {
        let origin = origin.child(key);
        let (field, operator) = key
            .rsplit_once('.')
            .ok_or_else(|| origin.error("expected `<field>.<gt|gte|lt|lte>`"))?;
        let bound = value
            .as_f64()
            .ok_or_else(|| origin.error("a range bound must be a number"))?;
        let path = path_at(field, &origin)?;
        let index = match checks.iter().position(|(existing, _)| existing == &path) {
            Some(index) => index,
            None => {
                checks.push((path, Bounds::default()));
                checks.len() - 1
            }
        };
        let bounds = &mut checks[index].1;
        match operator {
            "gt" => bounds.gt = Some(bound),
            "gte" => bounds.gte = Some(bound),
            "lt" => bounds.lt = Some(bound),
            "lte" => bounds.lte = Some(bound),
            other => {
                return Err(origin.error(format!(
                    "unknown range operator `{other}`; use gt, gte, lt or lte"
                )))
            }
        }
    }
    Ok(Condition::Range(checks))
}

impl Bounds {
    fn contains(&self, n: f64) -> bool {
        self.gt.is_none_or(|b| n > b)
            && self.gte.is_none_or(|b| n >= b)
            && self.lt.is_none_or(|b| n < b)
            && self.lte.is_none_or(|b| n <= b)
    }
}

impl NetworkMatcher {
    fn parse(raw: &str) -> Result<Self, String> {
        let named = match raw {
            "loopback" => Some(NamedNetwork::Loopback),
            "unicast" | "global_unicast" => Some(NamedNetwork::Unicast),
            "multicast" => Some(NamedNetwork::Multicast),
            "link_local_unicast" => Some(NamedNetwork::LinkLocalUnicast),
            "private" => Some(NamedNetwork::Private),
            "public" => Some(NamedNetwork::Public),
            "unspecified" => Some(NamedNetwork::Unspecified),
            _ => None,
        };
        if let Some(named) = named {
            return Ok(NetworkMatcher::Named(named));
        }
        if let Ok(network) = IpNet::from_str(raw) {
            return Ok(NetworkMatcher::Cidr(network));
        }
        IpAddr::from_str(raw)
            .map(|ip| NetworkMatcher::Cidr(IpNet::from(ip)))
            .map_err(|_| {
                format!(
                    "`{raw}` is neither a CIDR nor a network name (loopback, unicast, multicast, \
                 link_local_unicast, private, public, unspecified)"
                )
            })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            NetworkMatcher::Cidr(network) => network.contains(&ip),
            NetworkMatcher::Named(named) => named.contains(ip),
        }
    }
}

impl NamedNetwork {
    fn contains(self, ip: IpAddr) -> bool {
        let private = match ip {
            IpAddr::V4(v4) => v4.is_private(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        match self {
            NamedNetwork::Loopback => ip.is_loopback(),
            NamedNetwork::Multicast => ip.is_multicast(),
            NamedNetwork::Unspecified => ip.is_unspecified(),
            NamedNetwork::Private => private,
            NamedNetwork::LinkLocalUnicast => link_local,
            NamedNetwork::Unicast => !ip.is_multicast() && !ip.is_unspecified(),
            NamedNetwork::Public => {
                !ip.is_multicast() && !ip.is_unspecified() && !ip.is_loopback() && !private && !link_local
            }
        }
    }
}

/// Beats' `equals`: numbers compare by value; a list field matches when one element does.
fn equals(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(items), expected) if !expected.is_array() => {
            items.iter().any(|item| equals(item, expected))
        }
        (actual, expected) => actual == expected,
    }
}

fn any_string(value: Option<&Value>, test: impl Fn(&str) -> bool) -> bool {
    match value {
        Some(Value::String(text)) => test(text),
        Some(Value::Array(items)) => items.iter().any(|item| item.as_str().is_some_and(&test)),
        _ => false,
    }
}

/// A number, or a string holding one (MISP sends numbers as strings).
pub(crate) fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(value: Value) -> Result<Condition, ConfigError> {
        Condition::compile(
            &value,
            &Origin::named("modules.d/misp.yml").child("processors.0.rename.when"),
        )
    }

    fn event(value: Value) -> Event {
        Event::from_value(value)
    }

    #[test]
    fn equals_contains_regexp_and_has_fields() {
        let doc = event(json!({"a": {"t": "filename|sha256", "n": 3, "tags": ["x", "tlp:amber"]}}));
        assert!(compile(json!({"equals": {"a.t": "filename|sha256", "a.n": 3}}))
            .unwrap()
            .matches(&doc));
        assert!(!compile(json!({"equals": {"a.t": "filename"}}))
            .unwrap()
            .matches(&doc));
        assert!(compile(json!({"equals": {"a.tags": "x"}})).unwrap().matches(&doc));
        assert!(
            !compile(json!({"equals": {"a.n": "3"}})).unwrap().matches(&doc),
            "types differ"
        );
        assert!(compile(json!({"contains": {"a.tags": "tlp:"}}))
            .unwrap()
            .matches(&doc));
        assert!(compile(json!({"regexp": {"a.t": "^filename\\|"}}))
            .unwrap()
            .matches(&doc));
        assert!(compile(json!({"has_fields": ["a.t", "a.n"]}))
            .unwrap()
            .matches(&doc));
        assert!(!compile(json!({"has_fields": ["a.t", "a.x"]}))
            .unwrap()
            .matches(&doc));
    }

    #[test]
    fn range_network_and_boolean_logic() {
        let doc = event(json!({"level": "2", "ip": "10.1.2.3", "v6": "fe80::1", "pub": "8.8.8.8"}));
        assert!(compile(json!({"range": {"level.gte": 1, "level.lt": 3}}))
            .unwrap()
            .matches(&doc));
        assert!(!compile(json!({"range": {"level.gt": 2}})).unwrap().matches(&doc));
        assert!(compile(json!({"network": {"ip": "10.0.0.0/8"}}))
            .unwrap()
            .matches(&doc));
        assert!(compile(json!({"network": {"ip": ["192.168.0.0/16", "private"]}}))
            .unwrap()
            .matches(&doc));
        assert!(
            compile(json!({"network": {"v6": "link_local_unicast", "pub": "public"}}))
                .unwrap()
                .matches(&doc)
        );
        assert!(!compile(json!({"network": {"pub": "private"}}))
            .unwrap()
            .matches(&doc));
        let nested = json!({"and": [
            {"or": [{"equals": {"level": "9"}}, {"has_fields": ["ip"]}]},
            {"not": {"has_fields": ["missing"]}}
        ]});
        assert!(compile(nested).unwrap().matches(&doc));
    }

    #[test]
    fn bad_conditions_name_file_and_key() {
        let error = compile(json!({"regexp": {"a.t": "(unclosed"}})).unwrap_err();
        assert_eq!(error.file, "modules.d/misp.yml");
        assert_eq!(error.key, "processors.0.rename.when.regexp.a.t");
        assert!(
            error.reason.contains("invalid regular expression"),
            "{}",
            error.reason
        );

        let error = compile(json!({"equal": {"a": 1}})).unwrap_err();
        assert_eq!(error.key, "processors.0.rename.when.equal");
        assert!(error.reason.contains("unknown condition `equal`"));

        let error = compile(json!({"network": {"ip": "10.0.0.0/33"}})).unwrap_err();
        assert_eq!(error.key, "processors.0.rename.when.network.ip");
        let error = compile(json!({"and": [{"range": {"n.between": 1}}]})).unwrap_err();
        assert_eq!(error.key, "processors.0.rename.when.and.0.range.n.between");
    }
}
