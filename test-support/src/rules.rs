//! The project's own evaluator of the threat side of Kibana's prebuilt
//! "Threat Intel … Indicator Match" rules (elastic/detection-rules,
//! `rules/threat_intel/threat_intel_indicator_match_*.toml`), run over the
//! simulator's final state: which indicator documents would the five rules
//! read?
//!
//! Each rule reads `threat_index = ["filebeat-*", "logs-ti_*"]` with
//!
//! ```text
//! @timestamp >= "now-30d/d" and event.module:(threatintel or ti_*)
//!   and <indicator field>:* and not labels.is_ioc_transform_source:"true"
//! ```
//!
//! plus three `match_phrase` filters: `event.category: threat`,
//! `event.kind: enrichment`, `event.type: indicator`. The indicator field is
//! per rule:
//!
//! | rule | field |
//! | --- | --- |
//! | IP (`0c41e478-5263-4c69-8f9e-7dfd2c22da64`) | `threat.indicator.ip` |
//! | URL (`f3e22c8b-ea47-45d1-b502-b57b6de950b3`) | `threat.indicator.url.full` |
//! | hash (`aab184d3-72b3-4639-b242-6597c99d8bca`) | `threat.indicator.file.hash.*` or `threat.indicator.file.pe.imphash` |
//! | registry (`a61809f3-fb5b-465c-8bff-23a8a068ac60`) | `threat.indicator.registry.path` |
//! | email (`fcf18de8-ad7d-4d01-b3f7-a11d5b3883af`) | `threat.indicator.email.address` |
//!
//! How the clauses are read, as Elasticsearch evaluates them:
//!
//! - a field is found nested (`{"a": {"b": 1}}`), dotted (`{"a.b": 1}`) or
//!   any mix, and arrays (also of objects) are flattened: a field has every
//!   value found under its path; `null` is no value;
//! - `now-30d/d`: 30 days before `now`, rounded down to the start of the
//!   day (UTC); `@timestamp` is an ISO 8601 date (with or without time and
//!   zone; no zone means UTC) or epoch milliseconds; any of its values in
//!   range matches;
//! - `event.module:(threatintel or ti_*)`: a value equal to `threatintel` or
//!   starting with `ti_` (keyword: case-sensitive);
//! - `<field>:*` (exists): the field has a value; for `threat.indicator.ip`
//!   (mapped `ip`) only a single IP address counts: a CIDR is refused or,
//!   under `ignore_malformed`, not indexed, so no rule can see it;
//! - `not labels.is_ioc_transform_source:"true"`: no value equal to the
//!   string `"true"` (or the boolean `true`, which a keyword stores as `"true"`);
//! - filters: the value, or a list containing it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::elasticsearch::ElasticsearchSimulator;

/// The index patterns every rule reads (`threat_index`).
pub const THREAT_INDEX: [&str; 2] = ["filebeat-*", "logs-ti_*"];

/// One of the five prebuilt indicator-match rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Threat Intel IP Address Indicator Match.
    Ip,
    /// Threat Intel URL Indicator Match.
    Url,
    /// Threat Intel Hash Indicator Match.
    Hash,
    /// Threat Intel Windows Registry Indicator Match.
    Registry,
    /// Threat Intel Email Indicator Match.
    Email,
}

impl Rule {
    /// All five.
    pub const ALL: [Rule; 5] = [Rule::Ip, Rule::Url, Rule::Hash, Rule::Registry, Rule::Email];

    /// The rule's `rule_id`.
    pub fn rule_id(self) -> &'static str {
        match self {
            Rule::Ip => "0c41e478-5263-4c69-8f9e-7dfd2c22da64",
            Rule::Url => "f3e22c8b-ea47-45d1-b502-b57b6de950b3",
            Rule::Hash => "aab184d3-72b3-4639-b242-6597c99d8bca",
            Rule::Registry => "a61809f3-fb5b-465c-8bff-23a8a068ac60",
            Rule::Email => "fcf18de8-ad7d-4d01-b3f7-a11d5b3883af",
        }
    }

    /// Whether `leaves` satisfy the rule's `<indicator field>:*` clause.
    fn indicator_exists(self, leaves: &[(String, &Value)]) -> bool {
        let has = |field: &str| leaves.iter().any(|(path, _)| path == field);
        match self {
            Rule::Ip => leaves.iter().any(|(path, value)| {
                path == "threat.indicator.ip"
                    && scalar_text(value).is_some_and(|text| text.parse::<IpAddr>().is_ok())
            }),
            Rule::Url => has("threat.indicator.url.full"),
            Rule::Hash => {
                leaves
                    .iter()
                    .any(|(path, _)| path.starts_with("threat.indicator.file.hash."))
                    || has("threat.indicator.file.pe.imphash")
            }
            Rule::Registry => has("threat.indicator.registry.path"),
            Rule::Email => has("threat.indicator.email.address"),
        }
    }
}

/// A document one rule would read as an indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Visible {
    /// The index (or data stream) holding it.
    pub index: String,
    /// Its `_id`.
    pub id: String,
    /// The rule that reads it.
    pub rule: Rule,
    /// Its `_source`.
    pub document: Value,
}

/// Every `(document, rule)` pair the five rules would read from the
/// simulator's current documents at `now`. A document read by two rules
/// (an IP and a URL) appears twice, once per rule.
pub fn visible_indicators(cluster: &ElasticsearchSimulator, now: DateTime<Utc>) -> Vec<Visible> {
    let documents = cluster.indices().into_iter().flat_map(|index| {
        cluster
            .documents(&index)
            .into_iter()
            .map(move |document| (index.clone(), document.id, document.source))
    });
    visible_in(documents, now)
}

/// [`visible_indicators`] over any `(index, _id, _source)` triples.
pub fn visible_in(
    documents: impl IntoIterator<Item = (String, String, Value)>,
    now: DateTime<Utc>,
) -> Vec<Visible> {
    let window_start = window_start(now);
    let mut visible = Vec::new();
    for (index, id, document) in documents {
        if !THREAT_INDEX.iter().any(|pattern| wildcard(pattern, &index)) {
            continue;
        }
        let leaves = leaves(&document);
        if !threat_query_common(&leaves, window_start) || !threat_filters(&leaves) {
            continue;
        }
        for rule in Rule::ALL {
            if rule.indicator_exists(&leaves) {
                visible.push(Visible {
                    index: index.clone(),
                    id: id.clone(),
                    rule,
                    document: document.clone(),
                });
            }
        }
    }
    visible
}

/// For every value of `key_field` (e.g. `misp.attribute.uuid`), how many
/// distinct documents (`index`, `_id`) carrying it some rule reads: 1 is
/// right, 2 or more means the rules see that indicator in several
/// documents (duplicates), and an indicator missing from the map is not
/// seen at all.
pub fn visibility_counts(visible: &[Visible], key_field: &str) -> BTreeMap<String, usize> {
    let mut documents_by_key: BTreeMap<String, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for item in visible {
        for (path, value) in leaves(&item.document) {
            if path == key_field {
                if let Some(key) = scalar_text(value) {
                    documents_by_key
                        .entry(key)
                        .or_default()
                        .insert((item.index.as_str(), item.id.as_str()));
                }
            }
        }
    }
    documents_by_key
        .into_iter()
        .map(|(key, documents)| (key, documents.len()))
        .collect()
}

/// `now-30d/d`: the start (UTC) of the day 30 days before `now`.
pub fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let day = (now - Duration::days(30)).date_naive();
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// The clauses every rule's `threat_query` shares.
fn threat_query_common(leaves: &[(String, &Value)], window_start: DateTime<Utc>) -> bool {
    fn values<'a, 'b>(
        leaves: &'b [(String, &'a Value)],
        field: &'b str,
    ) -> impl Iterator<Item = &'a Value> + 'b {
        leaves
            .iter()
            .filter(move |(path, _)| path == field)
            .map(|(_, value)| *value)
    }
    let recent = values(leaves, "@timestamp")
        .filter_map(parse_date)
        .any(|timestamp| timestamp >= window_start);
    let module = values(leaves, "event.module")
        .filter_map(scalar_text)
        .any(|module| module == "threatintel" || module.starts_with("ti_"));
    let transform_source = values(leaves, "labels.is_ioc_transform_source")
        .filter_map(scalar_text)
        .any(|flag| flag == "true");
    recent && module && !transform_source
}

/// The three `match_phrase` filters.
fn threat_filters(leaves: &[(String, &Value)]) -> bool {
    [
        ("event.category", "threat"),
        ("event.kind", "enrichment"),
        ("event.type", "indicator"),
    ]
    .into_iter()
    .all(|(field, wanted)| {
        leaves
            .iter()
            .any(|(path, value)| path == field && scalar_text(value).as_deref() == Some(wanted))
    })
}

/// Every value in `document` with its full dotted path: objects are walked
/// (dotted keys simply join), arrays are flattened, nulls left out.
pub fn leaves(document: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(prefix: &str, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    walk(prefix, item, out);
                }
            }
            Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, child, out);
                }
            }
            scalar => out.push((prefix.to_owned(), scalar)),
        }
    }
    let mut out = Vec::new();
    walk("", document, &mut out);
    out
}

/// A scalar as the text a keyword field would index.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `strict_date_optional_time||epoch_millis`, Elasticsearch's default date format.
fn parse_date(value: &Value) -> Option<DateTime<Utc>> {
    let millis = |millis: i64| Utc.timestamp_millis_opt(millis).single();
    match value {
        Value::Number(number) => number.as_i64().and_then(millis),
        Value::String(text) => {
            if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
                return Some(parsed.with_timezone(&Utc));
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
                if let Ok(parsed) = NaiveDateTime::parse_from_str(text, format) {
                    return Some(Utc.from_utc_datetime(&parsed));
                }
            }
            if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                return Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?));
            }
            text.parse::<i64>().ok().and_then(millis)
        }
        _ => None,
    }
}

/// `*`-wildcard matching of index patterns.
fn wildcard(pattern: &str, name: &str) -> bool {
    crate::elasticsearch::wildcard_match(pattern, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        // 2026-03-31 15:00 UTC: the window starts 2026-03-01T00:00:00Z.
        Utc.with_ymd_and_hms(2026, 3, 31, 15, 0, 0).unwrap()
    }

    fn ip_indicator() -> Value {
        json!({
            "@timestamp": "2026-03-20T10:00:00Z",
            "event": {"module": "threatintel", "category": ["threat"], "kind": "enrichment", "type": ["indicator"]},
            "threat": {"indicator": {"type": "ipv4-addr", "ip": "198.51.100.7"}},
            "misp": {"attribute": {"uuid": "u-1"}}
        })
    }

    fn rules_for(index: &str, document: Value) -> Vec<Rule> {
        visible_in([(index.to_owned(), "id".to_owned(), document)], now())
            .into_iter()
            .map(|visible| visible.rule)
            .collect()
    }

    fn set(document: &mut Value, dotted: &str, value: Value) {
        let mut current = document;
        let segments: Vec<&str> = dotted.split('.').collect();
        for segment in &segments[..segments.len() - 1] {
            current = current
                .as_object_mut()
                .unwrap()
                .entry(segment.to_string())
                .or_insert_with(|| json!({}));
        }
        let last = segments[segments.len() - 1];
        if value.is_null() {
            current.as_object_mut().unwrap().remove(last);
        } else {
            current[last] = value;
        }
    }

    #[test]
    fn a_complete_indicator_is_read_by_its_rule() {
        assert_eq!(
            rules_for("logs-ti_threatbeat.misp-default", ip_indicator()),
            [Rule::Ip]
        );
        assert_eq!(
            rules_for("logs-ti_threatbeat_latest.misp", ip_indicator()),
            [Rule::Ip]
        );
        assert_eq!(rules_for("filebeat-8.19.0", ip_indicator()), [Rule::Ip]);
    }

    #[test]
    fn every_clause_can_fail() {
        let good = "logs-ti_threatbeat.misp-default";
        // (what changes, index, field, new value or null to remove)
        let cases: Vec<(&str, &str, &str, Value)> = vec![
            (
                "index outside threat_index",
                "threatbeat-2026.03.20",
                "n",
                json!(1),
            ),
            (
                "index logs-* but not logs-ti_*",
                "logs-misp-default",
                "n",
                json!(1),
            ),
            (
                "@timestamp before the window",
                good,
                "@timestamp",
                json!("2026-02-28T23:59:59.999Z"),
            ),
            ("@timestamp missing", good, "@timestamp", Value::Null),
            ("@timestamp unparsable", good, "@timestamp", json!("yesterday")),
            ("event.module other", good, "event.module", json!("misp")),
            (
                "event.module case differs",
                good,
                "event.module",
                json!("ThreatIntel"),
            ),
            ("event.module missing", good, "event.module", Value::Null),
            (
                "indicator field missing",
                good,
                "threat.indicator.ip",
                Value::Null,
            ),
            (
                "indicator is a CIDR",
                good,
                "threat.indicator.ip",
                json!("198.51.100.0/24"),
            ),
            ("indicator null", good, "threat.indicator.ip", json!([null])),
            (
                "transform source",
                good,
                "labels.is_ioc_transform_source",
                json!("true"),
            ),
            (
                "transform source as boolean",
                good,
                "labels.is_ioc_transform_source",
                json!(true),
            ),
            ("event.category other", good, "event.category", json!(["network"])),
            ("event.category missing", good, "event.category", Value::Null),
            ("event.kind other", good, "event.kind", json!("event")),
            ("event.kind missing", good, "event.kind", Value::Null),
            ("event.type other", good, "event.type", json!("info")),
            ("event.type empty list", good, "event.type", json!([])),
        ];
        for (what, index, field, value) in cases {
            let mut document = ip_indicator();
            set(&mut document, field, value);
            assert_eq!(rules_for(index, document), [], "{what}");
        }
    }

    #[test]
    fn clauses_that_pass_in_their_other_forms() {
        let good = "logs-ti_threatbeat.misp-default";
        let cases: Vec<(&str, &str, Value)> = vec![
            (
                "window starts at midnight 30 days back",
                "@timestamp",
                json!("2026-03-01T00:00:00Z"),
            ),
            ("a zone offset", "@timestamp", json!("2026-03-01T01:30:00+01:00")),
            ("date only", "@timestamp", json!("2026-03-01")),
            ("no zone: UTC", "@timestamp", json!("2026-03-01T00:00:00.000")),
            ("epoch millis", "@timestamp", json!(1_772_323_200_000_i64)),
            (
                "several values, one recent",
                "@timestamp",
                json!(["2020-01-01T00:00:00Z", "2026-03-30T00:00:00Z"]),
            ),
            ("ti_* module", "event.module", json!("ti_misp")),
            (
                "transform flag false",
                "labels.is_ioc_transform_source",
                json!("false"),
            ),
            (
                "transform flag other case is another keyword",
                "labels.is_ioc_transform_source",
                json!("True"),
            ),
            ("category as a string", "event.category", json!("threat")),
            (
                "type in a longer list",
                "event.type",
                json!(["info", "indicator"]),
            ),
            ("IPv6", "threat.indicator.ip", json!("2001:db8::1")),
            (
                "one valid IP among values",
                "threat.indicator.ip",
                json!(["10.0.0.0/8", "10.0.0.1"]),
            ),
        ];
        for (what, field, value) in cases {
            let mut document = ip_indicator();
            set(&mut document, field, value);
            assert_eq!(rules_for(good, document), [Rule::Ip], "{what}");
        }
        // `now-30d/d` rounds the day down: one millisecond before midnight is out.
        assert_eq!(
            window_start(now()),
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            window_start(Utc.with_ymd_and_hms(2026, 3, 31, 0, 0, 0).unwrap()),
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn fields_nested_dotted_or_in_arrays_of_objects() {
        let good = "logs-ti_x";
        let dotted = json!({
            "@timestamp": "2026-03-20T10:00:00Z",
            "event.module": "threatintel", "event.category": "threat", "event.kind": "enrichment", "event.type": "indicator",
            "threat.indicator.ip": "198.51.100.7"
        });
        assert_eq!(rules_for(good, dotted), [Rule::Ip]);
        let mixed = json!({
            "@timestamp": "2026-03-20T10:00:00Z",
            "event": {"module": "threatintel", "category": "threat", "kind": "enrichment", "type.x": 1, "type": "indicator"},
            "threat.indicator": {"url.full": "http://example.test/x"}
        });
        assert_eq!(rules_for(good, mixed), [Rule::Url]);
        let array_of_objects = json!({
            "@timestamp": "2026-03-20T10:00:00Z",
            "event": [{"module": "threatintel", "category": "threat"}, {"kind": "enrichment", "type": "indicator"}],
            "threat": {"indicator": [{"email": {"address": "a@example.test"}}]}
        });
        assert_eq!(rules_for(good, array_of_objects), [Rule::Email]);
    }

    #[test]
    fn each_rule_reads_its_own_field() {
        let good = "logs-ti_x";
        let cases: Vec<(&str, Value, Vec<Rule>)> = vec![
            (
                "threat.indicator.url.full",
                json!("http://example.test/"),
                vec![Rule::Url],
            ),
            (
                "threat.indicator.file.hash.sha256",
                json!("ab".repeat(32)),
                vec![Rule::Hash],
            ),
            (
                "threat.indicator.file.hash.ssdeep",
                json!("3:a:b"),
                vec![Rule::Hash],
            ),
            (
                "threat.indicator.file.pe.imphash",
                json!("f34d5f2d4577ed6d9ceec516c1f5a744"),
                vec![Rule::Hash],
            ),
            (
                "threat.indicator.registry.path",
                json!("HKLM\\Software\\x"),
                vec![Rule::Registry],
            ),
            (
                "threat.indicator.email.address",
                json!("a@example.test"),
                vec![Rule::Email],
            ),
            // No prebuilt rule reads these.
            ("threat.indicator.url.domain", json!("example.test"), vec![]),
            (
                "threat.indicator.url.original",
                json!("http://example.test/"),
                vec![],
            ),
            ("threat.indicator.file.name", json!("x.exe"), vec![]),
            ("threat.indicator.file.hash", json!("not under hash.*"), vec![]),
        ];
        for (field, value, rules) in cases {
            let mut document = ip_indicator();
            set(&mut document, "threat.indicator.ip", Value::Null);
            set(&mut document, field, value);
            assert_eq!(rules_for(good, document), rules, "{field}");
        }
        let mut both = ip_indicator();
        set(
            &mut both,
            "threat.indicator.url.full",
            json!("http://198.51.100.7/"),
        );
        assert_eq!(rules_for(good, both), [Rule::Ip, Rule::Url]);
    }

    #[test]
    fn counts_documents_per_indicator_key() {
        let mut other = ip_indicator();
        set(&mut other, "misp.attribute.uuid", json!("u-2"));
        set(&mut other, "threat.indicator.url.full", json!("http://x.test/"));
        let mut stale = ip_indicator();
        set(&mut stale, "misp.attribute.uuid", json!("u-3"));
        set(&mut stale, "@timestamp", json!("2026-01-01T00:00:00Z"));
        let documents = vec![
            (
                "logs-ti_threatbeat.misp-default".to_owned(),
                "a".to_owned(),
                ip_indicator(),
            ),
            (
                "logs-ti_threatbeat_latest.misp".to_owned(),
                "a".to_owned(),
                ip_indicator(),
            ),
            ("logs-ti_threatbeat_latest.misp".to_owned(), "b".to_owned(), other),
            ("logs-ti_threatbeat_latest.misp".to_owned(), "c".to_owned(), stale),
        ];
        let visible = visible_in(documents, now());
        assert_eq!(visible.len(), 4, "u-2 is read by two rules");
        let counts = visibility_counts(&visible, "misp.attribute.uuid");
        assert_eq!(
            counts,
            BTreeMap::from([("u-1".to_owned(), 2), ("u-2".to_owned(), 1)]),
            "u-1 in two documents (history and latest), u-2 once however many rules, u-3 not at all"
        );
    }
}
