//! `restSearch` semantics (misp-api.md §3–§8): the filters a poller uses,
//! paging, ordering, counts and response shapes.

use std::collections::HashSet;

use chrono::Utc;
use serde_json::{json, Map, Value};

use super::filters::{any_like, flag, matches_values, tag_names, time_filter, timestamp_of, Terms};
use super::store::all_attributes;

pub use super::filters::SearchError;

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/events/restSearch`.
    Events,
    /// `/attributes/restSearch`.
    Attributes,
}

/// What the search produced.
pub struct SearchResult {
    /// The JSON body.
    pub body: Value,
    /// `X-Result-Count`.
    pub result_count: usize,
    /// `X-Skipped-Elements-Count` (attributes dropped after paging).
    pub skipped: usize,
}

/// Parameters outside the filters themselves.
pub struct Hidden<'a> {
    /// Attribute uuids on a warninglist (dropped after paging).
    pub warninglisted: &'a HashSet<String>,
    /// Apply the warninglist even when the request did not ask.
    pub always_enforce: bool,
    /// Event uuids dropped after paging (blocked/proposal-style filtering).
    pub hidden_events: &'a HashSet<String>,
}

/// Runs a restSearch over `events`.
pub fn search(
    scope: Scope,
    events: &[Map<String, Value>],
    filters: &Map<String, Value>,
    hidden: &Hidden,
    now: i64,
) -> Result<SearchResult, SearchError> {
    if let Some(format) = filters.get("returnFormat").and_then(Value::as_str) {
        if !matches!(format, "json" | "download") {
            return Err(SearchError {
                status: 404,
                message: "Invalid output format.".to_owned(),
            });
        }
    }
    let timestamp = filters
        .get("timestamp")
        .map(|v| time_filter(v, now))
        .transpose()?
        .flatten();
    let event_timestamp = filters
        .get("event_timestamp")
        .map(|v| time_filter(v, now))
        .transpose()?
        .flatten();
    let types = filters.get("type").and_then(Terms::parse);
    let tags = filters
        .get("tags")
        .or_else(|| filters.get("tag"))
        .and_then(Terms::parse);
    let published = flag(filters, "published");
    let to_ids = flag(filters, "to_ids");
    let deleted = Deleted::parse(filters.get("deleted"));
    let enforce = hidden.always_enforce || flag(filters, "enforceWarninglist") == Some(true);
    let include_event_tags = flag(filters, "includeEventTags") == Some(true);
    let include_decay_score = flag(filters, "includeDecayScore") == Some(true);
    let limit = filters.get("limit").and_then(number).filter(|limit| *limit > 0);
    let page = filters.get("page").and_then(number).unwrap_or(1).max(1);
    let order = filters.get("order").and_then(|v| parse_order(v, scope));

    let event_passes = |event: &Map<String, Value>| -> bool {
        let event_stamp = timestamp_of(event);
        if event_timestamp.is_some_and(|range| !range.contains(event_stamp)) {
            return false;
        }
        if let Some(wanted) = published {
            if event.get("published").and_then(Value::as_bool).unwrap_or(false) != wanted {
                return false;
            }
        }
        true
    };

    match scope {
        Scope::Events => {
            let mut matching: Vec<&Map<String, Value>> = events
                .iter()
                .filter(|event| event_passes(event))
                .filter(|event| timestamp.is_none_or(|range| range.contains(timestamp_of(event))))
                .filter(|event| {
                    types.is_none()
                        || all_attributes(event).any(|(attribute, _)| {
                            matches_values(
                                &types,
                                attribute.get("type").and_then(Value::as_str).unwrap_or(""),
                            )
                        })
                })
                .filter(|event| match &tags {
                    None => true,
                    Some(terms) => {
                        let event_tags = tag_names(event);
                        let mut everywhere = event_tags.clone();
                        for (attribute, _) in all_attributes(event) {
                            everywhere.extend(tag_names(attribute));
                        }
                        (terms.or.is_empty() || any_like(&terms.or, &everywhere))
                            && terms
                                .and
                                .iter()
                                .all(|pattern| any_like(std::slice::from_ref(pattern), &everywhere))
                            && !any_like(&terms.not, &event_tags)
                    }
                })
                .filter(|event| {
                    to_ids.is_none_or(|wanted| {
                        all_attributes(event)
                            .any(|(a, _)| a.get("to_ids").and_then(Value::as_bool) == Some(wanted))
                    })
                })
                .collect();
            if let Some((field, descending)) = &order {
                matching.sort_by_cached_key(|event| sort_key(event, field));
                if *descending {
                    matching.reverse();
                }
            }
            let total = matching.len();
            let paged = paginate(matching, limit, page);
            let returned: Vec<Value> = paged
                .into_iter()
                .filter(|event| {
                    !hidden
                        .hidden_events
                        .contains(event.get("uuid").and_then(Value::as_str).unwrap_or(""))
                })
                .map(|event| {
                    let mut event = event.clone();
                    prune_event(
                        &mut event,
                        &tags,
                        to_ids,
                        deleted,
                        enforce.then_some(hidden.warninglisted),
                    );
                    json!({"Event": event})
                })
                .collect();
            let result_count = if limit.is_some() { total } else { returned.len() };
            Ok(SearchResult {
                body: json!({"response": returned}),
                result_count,
                skipped: 0,
            })
        }
        Scope::Attributes => {
            let mut rows: Vec<Value> = Vec::new();
            for event in events.iter().filter(|event| event_passes(event)) {
                let event_tags = tag_names(event);
                for (attribute, object) in all_attributes(event) {
                    if timestamp.is_some_and(|range| !range.contains(timestamp_of(attribute))) {
                        continue;
                    }
                    if !matches_values(
                        &types,
                        attribute.get("type").and_then(Value::as_str).unwrap_or(""),
                    ) {
                        continue;
                    }
                    if let Some(wanted) = to_ids {
                        if attribute.get("to_ids").and_then(Value::as_bool) != Some(wanted) {
                            continue;
                        }
                    }
                    let own_tags = tag_names(attribute);
                    let mut both = own_tags.clone();
                    both.extend(event_tags.iter().copied());
                    if let Some(terms) = &tags {
                        let positive = terms.or.is_empty() || any_like(&terms.or, &both);
                        let all = terms
                            .and
                            .iter()
                            .all(|pattern| any_like(std::slice::from_ref(pattern), &both));
                        if !positive || !all || any_like(&terms.not, &both) {
                            continue;
                        }
                    }
                    let mut row = attribute_row(event, attribute, object, include_event_tags);
                    // MISP computes decay scores on request; the simulator
                    // serves those its attributes were given.
                    if let (true, Some(scores), Some(row)) = (
                        include_decay_score,
                        attribute.get("decay_score"),
                        row.as_object_mut(),
                    ) {
                        row.insert("decay_score".into(), scores.clone());
                    }
                    rows.push(row);
                }
            }
            if let Some((field, descending)) = &order {
                rows.sort_by_cached_key(|row| {
                    row.as_object()
                        .map(|row| sort_key(row, field))
                        .unwrap_or_default()
                });
                if *descending {
                    rows.reverse();
                }
            }
            let paged = paginate(rows, limit, page);
            let read = paged.len();
            let full = limit.is_some_and(|limit| read as u64 == limit);
            let before = paged.len();
            let returned: Vec<Value> = paged
                .into_iter()
                .filter(|row| !(enforce && hidden.warninglisted.contains(row["uuid"].as_str().unwrap_or(""))))
                .collect();
            let skipped = before - returned.len();
            Ok(SearchResult {
                body: json!({"response": {"Attribute": returned}}),
                result_count: read + usize::from(full),
                skipped,
            })
        }
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn paginate<T>(items: Vec<T>, limit: Option<u64>, page: u64) -> Vec<T> {
    match limit {
        None => items,
        Some(limit) => items
            .into_iter()
            .skip(((page - 1) * limit) as usize)
            .take(limit as usize)
            .collect(),
    }
}

/// `order`: `Event.timestamp asc`, `timestamp desc`, `id`. Invalid → `None` (no sort, as MISP).
fn parse_order(value: &Value, scope: Scope) -> Option<(String, bool)> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.first()?.as_str()?.to_owned(),
        _ => return None,
    };
    let mut parts = text.split_whitespace();
    let field = parts.next()?;
    let descending = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return None,
    };
    let (model, name) = field.split_once('.').unwrap_or(("", field));
    let allowed: &[&str] = match scope {
        Scope::Events => &[
            "id",
            "info",
            "analysis",
            "threat_level_id",
            "distribution",
            "timestamp",
            "publish_timestamp",
        ],
        Scope::Attributes => &[
            "id",
            "event_id",
            "object_id",
            "type",
            "category",
            "value",
            "distribution",
            "timestamp",
            "object_relation",
        ],
    };
    let model_ok = model.is_empty()
        || (scope == Scope::Events && model == "Event")
        || (scope == Scope::Attributes && model == "Attribute");
    (model_ok && allowed.contains(&name)).then(|| (name.to_owned(), descending))
}

fn sort_key(item: &Map<String, Value>, field: &str) -> (i64, String) {
    let value = item
        .get(field)
        .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
        .unwrap_or_default();
    (value.parse::<i64>().unwrap_or(i64::MIN), value)
}

/// MISP's `deleted` filter: soft-deleted attributes are left out by default;
/// `[0, 1]` includes them, `1` or `"only"` gives only them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Deleted {
    Exclude,
    Include,
    Only,
}

impl Deleted {
    fn parse(value: Option<&Value>) -> Self {
        let truthy = |value: &Value| {
            matches!(value, Value::Bool(true)) || value == "1" || value == 1 || value == "only"
        };
        match value {
            Some(Value::Array(items))
                if items.iter().any(truthy) && items.iter().any(|item| !truthy(item)) =>
            {
                Self::Include
            }
            Some(Value::Array(items)) if items.iter().any(truthy) => Self::Only,
            Some(value) if truthy(value) => Self::Only,
            _ => Self::Exclude,
        }
    }

    fn keeps(self, attribute: &Map<String, Value>) -> bool {
        let is_deleted = attribute.get("deleted") == Some(&Value::Bool(true));
        match self {
            Self::Exclude => !is_deleted,
            Self::Include => true,
            Self::Only => is_deleted,
        }
    }
}

fn prune_event(
    event: &mut Map<String, Value>,
    tags: &Option<Terms>,
    to_ids: Option<bool>,
    deleted: Deleted,
    warninglist: Option<&HashSet<String>>,
) {
    let keep = |attribute: &Value| -> bool {
        let Some(attribute) = attribute.as_object() else {
            return false;
        };
        if !deleted.keeps(attribute) {
            return false;
        }
        if let Some(wanted) = to_ids {
            if attribute.get("to_ids").and_then(Value::as_bool) != Some(wanted) {
                return false;
            }
        }
        if let Some(terms) = tags {
            if any_like(&terms.not, &tag_names(attribute)) {
                return false;
            }
        }
        if let Some(list) = warninglist {
            if list.contains(attribute.get("uuid").and_then(Value::as_str).unwrap_or("")) {
                return false;
            }
        }
        true
    };
    if let Some(Value::Array(attributes)) = event.get_mut("Attribute") {
        attributes.retain(&keep);
    }
    if let Some(Value::Array(objects)) = event.get_mut("Object") {
        for object in objects.iter_mut() {
            if let Some(Value::Array(attributes)) = object.get_mut("Attribute") {
                attributes.retain(&keep);
            }
        }
        objects.retain(|object| {
            object
                .get("Attribute")
                .and_then(Value::as_array)
                .is_some_and(|list| !list.is_empty())
        });
    }
}

/// An `/attributes/restSearch` row: the attribute's own fields, the `Event`
/// stub, `Object` for object members, `Tag` only when non-empty.
fn attribute_row(
    event: &Map<String, Value>,
    attribute: &Map<String, Value>,
    object: Option<&Map<String, Value>>,
    include_event_tags: bool,
) -> Value {
    const OWN: [&str; 17] = [
        "id",
        "event_id",
        "object_id",
        "object_relation",
        "category",
        "type",
        "to_ids",
        "uuid",
        "timestamp",
        "distribution",
        "sharing_group_id",
        "comment",
        "deleted",
        "disable_correlation",
        "first_seen",
        "last_seen",
        "value",
    ];
    let mut row = Map::new();
    for key in OWN {
        row.insert(key.to_owned(), attribute.get(key).cloned().unwrap_or(Value::Null));
    }
    let mut stub = Map::new();
    for key in [
        "org_id",
        "distribution",
        "publish_timestamp",
        "id",
        "info",
        "orgc_id",
        "uuid",
    ] {
        stub.insert(key.to_owned(), event.get(key).cloned().unwrap_or(Value::Null));
    }
    row.insert("Event".into(), Value::Object(stub));
    if let Some(object) = object {
        row.insert(
            "Object".into(),
            json!({"id": object.get("id"), "distribution": object.get("distribution"), "sharing_group_id": object.get("sharing_group_id")}),
        );
    }
    let mut tags: Vec<Value> = attribute
        .get("Tag")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if include_event_tags {
        for tag in event.get("Tag").and_then(Value::as_array).into_iter().flatten() {
            let mut tag = tag.clone();
            if let Some(map) = tag.as_object_mut() {
                map.insert("inherited".into(), json!(1));
            }
            tags.push(tag);
        }
    }
    if !tags.is_empty() {
        row.insert("Tag".into(), Value::Array(tags));
    }
    Value::Object(row)
}

/// The current time, for relative filters.
pub fn now() -> i64 {
    Utc::now().timestamp()
}
