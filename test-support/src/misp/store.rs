//! The simulator's data: MISP events loaded from the real fixtures (all
//! three wrappers) or generated, renumbered with server-local ids the way a
//! MISP server would hold them, plus the edits tests make between requests.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// The folder of real MISP events (`test-support/data/misp/events`).
pub fn fixtures_dir() -> PathBuf {
    crate::data::misp_events_dir()
}

/// Reads every `*.json` file under `dir` (recursively), sorted by path, and
/// unwraps `{"response": [{"Event": ...}]}`, `{"Event": ...}` and bare events.
pub fn load_events(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files = Vec::new();
    collect_json_files(dir, &mut files)?;
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))?;
        events.extend(unwrap_events(value));
    }
    Ok(events)
}

fn collect_json_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// The bare event objects inside any of the three wrappers.
pub fn unwrap_events(value: Value) -> Vec<Value> {
    match value {
        Value::Object(mut map) => {
            if let Some(Value::Array(items)) = map.remove("response") {
                return items.into_iter().flat_map(unwrap_events).collect();
            }
            if let Some(event) = map.remove("Event") {
                return vec![event];
            }
            if map.contains_key("uuid") && (map.contains_key("Attribute") || map.contains_key("info")) {
                return vec![Value::Object(map)];
            }
            Vec::new()
        }
        Value::Array(items) => items.into_iter().flat_map(unwrap_events).collect(),
        _ => Vec::new(),
    }
}

/// A deterministic uuid-shaped string.
pub fn fake_uuid(kind: u32, number: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{number:012x}")
}

/// Events with `attributes` plain attributes each (alternating `ip-dst`,
/// `domain`, `sha256`, `url`), event `i` stamped `start + i`.
pub fn generate_events(count: usize, attributes: usize, start: i64) -> Vec<Value> {
    let types = ["ip-dst", "domain", "sha256", "url"];
    (0..count)
        .map(|index| {
            let timestamp = (start + index as i64).to_string();
            let attributes: Vec<Value> = (0..attributes)
                .map(|attribute| {
                    let number = (index * attributes + attribute) as u64;
                    let kind = types[attribute % types.len()];
                    let value = match kind {
                        "ip-dst" => format!("198.51.{}.{}", (number / 250) % 250, number % 250 + 1),
                        "domain" => format!("host{number}.example.org"),
                        "sha256" => format!("{number:064x}"),
                        _ => format!("https://bad{number}.example.net/x"),
                    };
                    json!({
                        "uuid": fake_uuid(2, number), "type": kind, "category": "Network activity",
                        "to_ids": true, "value": value, "timestamp": timestamp, "comment": "",
                        "deleted": false, "distribution": "5", "first_seen": null, "last_seen": null,
                        "object_relation": null, "disable_correlation": false, "sharing_group_id": "0"
                    })
                })
                .collect();
            json!({
                "uuid": fake_uuid(1, index as u64), "info": format!("generated event {index}"),
                "date": "2024-05-01", "threat_level_id": "2", "analysis": "2", "published": true,
                "timestamp": timestamp, "publish_timestamp": timestamp, "distribution": "3",
                "Orgc": {"id": "1", "name": "SIM", "uuid": fake_uuid(9, 1), "local": true},
                "Org": {"id": "1", "name": "SIM", "uuid": fake_uuid(9, 1), "local": true},
                "Tag": [{"id": "1", "name": "tlp:white", "colour": "#ffffff", "exportable": true}],
                "Attribute": attributes, "Object": [], "Galaxy": []
            })
        })
        .collect()
}

/// The server's event table.
#[derive(Debug, Default, Clone)]
pub struct Store {
    /// Bare event objects (no wrapper), in id order.
    pub events: Vec<Map<String, Value>>,
    next_event_id: u64,
    next_attribute_id: u64,
    next_object_id: u64,
}

fn as_list_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

impl Store {
    /// Adds events, assigning server-local ids (as MISP does on import).
    pub fn add(&mut self, events: Vec<Value>) {
        for event in events {
            let Value::Object(mut event) = event else { continue };
            self.next_event_id += 1;
            let event_id = self.next_event_id.to_string();
            event.insert("id".into(), json!(event_id));
            event.entry("org_id").or_insert(json!("1"));
            event.entry("orgc_id").or_insert(json!("1"));
            event.entry("distribution").or_insert(json!("3"));
            event.entry("published").or_insert(json!(false));
            event.entry("Galaxy").or_insert(json!([]));
            let event_timestamp = event.get("timestamp").cloned().unwrap_or(json!("0"));
            let mut attribute_count = 0;
            for attribute in as_list_mut(&mut event, "Attribute") {
                self.next_attribute_id += 1;
                attribute.insert("id".into(), json!(self.next_attribute_id.to_string()));
                attribute.insert("event_id".into(), json!(event_id));
                attribute.insert("object_id".into(), json!("0"));
                attribute.entry("timestamp").or_insert(event_timestamp.clone());
                attribute.entry("deleted").or_insert(json!(false));
                attribute_count += 1;
            }
            let mut objects = Vec::new();
            for object in as_list_mut(&mut event, "Object") {
                self.next_object_id += 1;
                let object_id = self.next_object_id.to_string();
                object.insert("id".into(), json!(object_id));
                object.insert("event_id".into(), json!(event_id));
                object.entry("timestamp").or_insert(event_timestamp.clone());
                objects.push(object_id.clone());
                for attribute in as_list_mut(object, "Attribute") {
                    self.next_attribute_id += 1;
                    attribute.insert("id".into(), json!(self.next_attribute_id.to_string()));
                    attribute.insert("event_id".into(), json!(event_id));
                    attribute.insert("object_id".into(), json!(object_id));
                    attribute.entry("timestamp").or_insert(event_timestamp.clone());
                    attribute.entry("deleted").or_insert(json!(false));
                    attribute_count += 1;
                }
            }
            event.insert("attribute_count".into(), json!(attribute_count.to_string()));
            self.events.push(event);
        }
    }

    /// Adds events exactly as written, ids included, as `misp-sim
    /// --events-file` serves them: for records whose server-local ids are
    /// part of an expected output (Elastic's golden files).
    pub fn add_verbatim(&mut self, events: Vec<Value>) {
        self.events
            .extend(events.into_iter().filter_map(|event| match event {
                Value::Object(event) => Some(event),
                _ => None,
            }));
    }

    /// Total attributes (plain and in objects, deleted excluded).
    pub fn attribute_count(&self) -> usize {
        self.events
            .iter()
            .map(|event| all_attributes(event).count())
            .sum()
    }

    /// Sets an attribute's timestamp (and its event's: MISP bumps the event on
    /// any change). Returns false when the uuid is unknown.
    pub fn touch_attribute(&mut self, uuid: &str, timestamp: i64) -> bool {
        let stamp = json!(timestamp.to_string());
        for event in &mut self.events {
            let mut found = false;
            for attribute in as_list_mut(event, "Attribute") {
                if attribute.get("uuid").and_then(Value::as_str) == Some(uuid) {
                    attribute.insert("timestamp".into(), stamp.clone());
                    found = true;
                }
            }
            for object in as_list_mut(event, "Object") {
                for attribute in as_list_mut(object, "Attribute") {
                    if attribute.get("uuid").and_then(Value::as_str) == Some(uuid) {
                        attribute.insert("timestamp".into(), stamp.clone());
                        found = true;
                    }
                }
            }
            if found {
                event.insert("timestamp".into(), stamp);
                return true;
            }
        }
        false
    }

    /// Sets one field of the attribute `uuid` (plain or in an object).
    /// Returns false when the uuid is unknown.
    pub fn set_attribute_field(&mut self, uuid: &str, field: &str, value: Value) -> bool {
        let mut found = false;
        for event in &mut self.events {
            let objects: Vec<&mut Map<String, Value>> = as_list_mut(event, "Object").collect();
            for object in objects {
                for attribute in as_list_mut(object, "Attribute") {
                    if attribute.get("uuid").and_then(Value::as_str) == Some(uuid) {
                        attribute.insert(field.to_owned(), value.clone());
                        found = true;
                    }
                }
            }
            for attribute in as_list_mut(event, "Attribute") {
                if attribute.get("uuid").and_then(Value::as_str) == Some(uuid) {
                    attribute.insert(field.to_owned(), value.clone());
                    found = true;
                }
            }
        }
        found
    }

    /// Sets an event's timestamp. Returns false when the uuid is unknown.
    pub fn touch_event(&mut self, uuid: &str, timestamp: i64) -> bool {
        for event in &mut self.events {
            if event.get("uuid").and_then(Value::as_str) == Some(uuid) {
                event.insert("timestamp".into(), json!(timestamp.to_string()));
                return true;
            }
        }
        false
    }
}

/// Every non-deleted attribute of an event, plain ones first, each with its object if any.
pub fn all_attributes(
    event: &Map<String, Value>,
) -> impl Iterator<Item = (&Map<String, Value>, Option<&Map<String, Value>>)> {
    let plain = event
        .get("Attribute")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|attribute| (attribute, None));
    let in_objects = event
        .get("Object")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|object| {
            object
                .get("Attribute")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(move |attribute| (attribute, Some(object)))
        });
    plain
        .chain(in_objects)
        .filter(|(attribute, _)| attribute.get("deleted") != Some(&Value::Bool(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_all_fixture_events_from_the_three_wrappers() {
        let events = load_events(&fixtures_dir()).unwrap();
        assert_eq!(events.len(), 73);
        let mut store = Store::default();
        store.add(events);
        assert_eq!(store.attribute_count(), 5389);
        let ids: std::collections::HashSet<_> =
            store.events.iter().map(|event| event["id"].clone()).collect();
        assert_eq!(ids.len(), 73);
    }
}
