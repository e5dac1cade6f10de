//! The index template and ILM policy `threatbeat setup` installs: ECS
//! mappings for the fields the shipped threat-intel modules produce.

use serde_json::{json, Value};

/// The mappings: `ip` for addresses, `date` for times, `geo_point` for
/// locations, `wildcard` for the URL fields the indicator-match rules
/// query, `long` for counts, keywords for every other string.
pub fn mappings() -> Value {
    json!({
        "date_detection": false,
        "dynamic_templates": [
            {"strings_as_keyword": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}}
        ],
        "properties": {
            "@timestamp": {"type": "date"},
            "message": {"type": "match_only_text"},
            "tags": {"type": "keyword", "ignore_above": 1024},
            "labels": {"type": "object"},
            "ecs": {"properties": {"version": {"type": "keyword"}}},
            "event": {"properties": {
                "created": {"type": "date"},
                "ingested": {"type": "date"},
                "start": {"type": "date"},
                "end": {"type": "date"},
                "severity": {"type": "long"},
                "risk_score": {"type": "float"},
                "original": {"type": "keyword", "index": false, "doc_values": false}
            }},
            "related": {"properties": {"ip": {"type": "ip"}}},
            "threat": {"properties": {
                "feed": {"properties": {
                    "name": {"type": "keyword"}, "dashboard_id": {"type": "keyword"},
                    "description": {"type": "keyword"}, "reference": {"type": "keyword"}
                }},
                "indicator": indicator_mappings()
            }}
        }
    })
}

/// `threat.indicator.*`, split out to keep each `json!` within the macro recursion limit.
fn indicator_mappings() -> Value {
    let mut properties = json!({
                    // An address for the IP rule; a network (MISP `ip-dst`,
                    // STIX `ipv4-addr` CIDRs, Spamhaus DROP) is kept in the
                    // keyword sub-field instead of failing its document, as
                    // Elastic's own `logs@settings` ignores malformed values.
                    "ip": {
                        "type": "ip",
                        "ignore_malformed": true,
                        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}
                    },
                    "port": {"type": "long"},
                    "first_seen": {"type": "date"},
                    "last_seen": {"type": "date"},
                    "modified_at": {"type": "date"},
                    "sightings": {"type": "long"},
                    "scanner_stats": {"type": "long"},
                    "type": {"type": "keyword"},
                    "provider": {"type": "keyword"},
                    "confidence": {"type": "keyword"},
                    "description": {"type": "keyword"},
                    "marking": {"properties": {"tlp": {"type": "keyword"}}},
                    "email": {"properties": {"address": {"type": "keyword"}}},
                    "as": {"properties": {"number": {"type": "long"}}},
                    "geo": {"properties": {"location": {"type": "geo_point"}}},
                    "registry": {"properties": {
                        "path": {"type": "keyword"}, "key": {"type": "keyword"}, "value": {"type": "keyword"},
                        "data": {"properties": {"strings": {"type": "wildcard"}}}
                    }},
                    "x509": {"properties": {
                        "not_before": {"type": "date"}, "not_after": {"type": "date"}
                    }}
    });
    properties["file"] = json!({"properties": {
        "size": {"type": "long"},
        "hash": {"properties": {
            "md5": {"type": "keyword"}, "sha1": {"type": "keyword"}, "sha256": {"type": "keyword"},
            "sha384": {"type": "keyword"}, "sha512": {"type": "keyword"},
            "ssdeep": {"type": "keyword"}, "tlsh": {"type": "keyword"}
        }},
        "pe": {"properties": {"imphash": {"type": "keyword"}}}
    }});
    properties["url"] = json!({"properties": {
        "full": {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}},
        "original": {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}},
        "path": {"type": "wildcard"},
        "port": {"type": "long"},
        "domain": {"type": "keyword"},
        "scheme": {"type": "keyword"}
    }});
    json!({ "properties": properties })
}

/// The composable index template for `patterns`, applying `policy`.
pub fn index_template(patterns: &[String], priority: u32, data_stream: bool, policy: Option<&str>) -> Value {
    let mut settings = json!({
        "index": {
            "refresh_interval": "5s",
            "mapping": {"total_fields": {"limit": 10000}}
        }
    });
    if let Some(policy) = policy {
        settings["index"]["lifecycle"] = json!({"name": policy});
    }
    let mut template = json!({
        "index_patterns": patterns,
        "priority": priority,
        "template": {"settings": settings, "mappings": mappings()},
        "_meta": {"managed_by": "threatbeat", "description": "threat-intel indicators written by threatbeat"}
    });
    if data_stream {
        template["data_stream"] = json!({});
    }
    template
}

/// The default pattern of the current-state indices, one per fileset
/// (`logs-ti_threatbeat_latest.<fileset>`): inside the rules' `logs-ti_*`,
/// outside the data streams' `logs-ti_threatbeat.*-*`.
pub const LATEST_PATTERN: &str = "logs-ti_threatbeat_latest.*";

/// The composable template of the current-state indices: regular indices
/// (no `data_stream`: they take `index`, `update` and `delete`), no ILM
/// (a rollover would split one document per `_id` over two indices), the
/// same ECS mappings as the data streams: `threat.indicator.ip` an `ip`
/// (the IP rule needs it) with `ignore_malformed`, so a CIDR neither fails
/// its document nor, through it, a lifecycle update of it, and a `keyword`
/// sub-field `threat.indicator.ip.keyword` that indexes any value, CIDRs
/// included.
pub fn latest_index_template(patterns: &[String], priority: u32) -> Value {
    let mappings = mappings();
    json!({
        "index_patterns": patterns,
        "priority": priority,
        "template": {
            "settings": {"index": {"refresh_interval": "5s", "mapping": {"total_fields": {"limit": 10000}}}},
            "mappings": mappings
        },
        "_meta": {"managed_by": "threatbeat", "description": "current state of threat-intel indicators (one document per indicator) written by threatbeat"}
    })
}

/// The ILM policy: hot phase rolling over at 50 GB per primary shard or 30
/// days (libbeat's default), deleted after `delete_after` when set.
pub fn ilm_policy(delete_after: Option<&str>) -> Value {
    let mut phases = json!({
        "hot": {"actions": {"rollover": {"max_primary_shard_size": "50gb", "max_age": "30d"}}}
    });
    if let Some(age) = delete_after {
        phases["delete"] = json!({"min_age": age, "actions": {"delete": {}}});
    }
    json!({"phases": phases, "_meta": {"managed_by": "threatbeat"}})
}

/// A stable fingerprint of a JSON body, stored in the installed object so a
/// second `setup` can tell that nothing changed.
pub fn fingerprint(body: &Value) -> u32 {
    // serde_json serializes maps in a stable order, so equal bodies hash equal.
    crc32fast::hash(body.to_string().as_bytes()) & 0x7fff_ffff
}
