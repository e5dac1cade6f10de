//! Keyset paging (MISP reference §13.3): fix an upper bound for the poll,
//! ask for `[lower, upper]` ordered by the sort field ascending, and move
//! the lower bound to the largest value seen instead of asking for page 2.
//! Items on the boundary are dropped when already delivered; `page` is only
//! advanced while a whole page shares the lower bound. Offset paging over
//! live data skips unchanged items when others are edited between page
//! requests; this form does not, because it never depends on offsets across
//! a changing set.

use std::collections::HashSet;

use chrono::Utc;
use serde_json::{json, Map, Value};
use threatbeat_core::{ConfigError, Event, FieldPath, InputContext, Origin};

use super::config::KeysetConfig;
use super::poll::{fetch_error, PagePlace, PollError, PollSummary};
use super::template::{Context, TemplateBuilder, TemplateId};
use super::{as_epoch, body_path, HttpJsonInput};
use crate::split::Rejected;

/// Compiled keyset settings.
pub struct Keyset {
    items: FieldPath,
    sort_field: FieldPath,
    id_field: FieldPath,
    range_target: FieldPath,
    page_target: FieldPath,
    cursor_field: String,
    initial: TemplateId,
}

impl Keyset {
    /// Compiles `config`.
    pub fn build(
        config: &KeysetConfig,
        templates: &mut TemplateBuilder,
        origin: &Origin,
    ) -> Result<Self, ConfigError> {
        let field = |raw: &str, key: &str| {
            FieldPath::parse(raw).map_err(|error| origin.child(key).error(error.to_string()))
        };
        Ok(Self {
            items: body_path(&config.items, &origin.child("items"))?,
            sort_field: field(&config.sort_field, "sort_field")?,
            id_field: field(&config.id_field, "id_field")?,
            range_target: body_path(&config.range_target, &origin.child("range_target"))?,
            page_target: body_path(&config.page_target, &origin.child("page_target"))?,
            cursor_field: config.cursor_field.clone(),
            initial: templates
                .add(&config.initial)
                .map_err(|reason| origin.child("initial").error(reason))?,
        })
    }

    fn sort_key(&self, item: &Value) -> Option<i64> {
        item.as_object()
            .and_then(|map| self.sort_field.get(map))
            .and_then(as_epoch)
    }

    fn id(&self, item: &Value) -> String {
        match item.as_object().and_then(|map| self.id_field.get(map)) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => item.to_string(),
        }
    }
}

impl HttpJsonInput {
    /// One poll with keyset paging.
    pub(super) async fn poll_keyset(
        &self,
        keyset: &Keyset,
        cursor: &mut Map<String, Value>,
        context: &InputContext,
    ) -> Result<PollSummary, PollError> {
        let base = self.first_request(cursor)?;
        let upper = Utc::now().timestamp();
        let mut lower = match cursor.get(&keyset.cursor_field).and_then(as_epoch) {
            Some(lower) => lower,
            None => {
                let text = self
                    .templates
                    .render(&keyset.initial, &Context::new(json!({"cursor": cursor})))
                    .map_err(|reason| PollError::Request {
                        page: 1,
                        reason: format!("keyset.initial: {reason}"),
                    })?;
                text.parse::<i64>().map_err(|_| PollError::Request {
                    page: 1,
                    reason: format!("keyset.initial rendered `{text}`, not epoch seconds"),
                })?
            }
        };
        let mut delivered_at_lower: HashSet<String> = HashSet::new();
        let mut page: u32 = 1;
        let mut summary = PollSummary::default();
        // The request for (`lower`, `page`), as the `request_number`th of this poll.
        let request_for = |lower: i64, page: u32, request_number: u32| {
            let mut request = base.clone();
            let range = json!([lower, upper.max(lower)]);
            for (path, value) in [(&keyset.range_target, range), (&keyset.page_target, json!(page))] {
                path.set(&mut request.body, value)
                    .map_err(|error| PollError::Request {
                        page: request_number,
                        reason: error.to_string(),
                    })?;
            }
            Ok::<_, PollError>(request)
        };
        let first = request_for(lower, page, 1)?;
        let mut prefetched = None;
        for request_number in 1..=self.page_limit {
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                // Every later request was sent ahead, while the page before it was published.
                None => self.fetcher.fetch(&first, &context.shutdown).await,
            };
            let response = fetched.map_err(|error| fetch_error(request_number, error))?;
            let mut body = response.body;
            let items = match body.as_object().and_then(|map| keyset.items.get(map)) {
                Some(Value::Array(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(map)) if map.is_empty() => Vec::new(),
                Some(other) => {
                    return Err(PollError::Response {
                        page: request_number,
                        reason: format!(
                            "keyset items `body.{}` hold a {}, not a list",
                            keyset.items.as_str(),
                            threatbeat_core::path::json_kind(other)
                        ),
                    })
                }
            };
            summary.pages = request_number;
            if items.is_empty() {
                // The whole window [lower, upper] was read: the next poll starts at `upper`.
                let mut next = cursor.clone();
                next.insert(keyset.cursor_field.clone(), json!(upper.max(lower)));
                self.publish_and_prefetch(
                    context,
                    Vec::new(),
                    cursor,
                    next,
                    PagePlace::within(request_number),
                    None,
                )
                .await?;
                return Ok(summary);
            }
            // An item without its sort key cannot be placed in the key order:
            // it is set aside (dead letter), the others page on.
            let (items, unsorted): (Vec<Value>, Vec<Value>) = items
                .into_iter()
                .partition(|item| keyset.sort_key(item).is_some());
            self.dead_letter.record(
                self.base_request.url.as_str(),
                unsorted
                    .into_iter()
                    .map(|record| Rejected {
                        record,
                        error: format!("an item has no numeric `{}`", keyset.sort_field.as_str()),
                    })
                    .collect(),
            );
            let max_key = items
                .iter()
                .filter_map(|item| keyset.sort_key(item))
                .fold(lower, i64::max);
            let fresh: Vec<Value> = items
                .iter()
                .filter(|item| {
                    !(keyset.sort_key(item) == Some(lower) && delivered_at_lower.contains(&keyset.id(item)))
                })
                .cloned()
                .collect();
            let (next_lower, next_page) = if max_key > lower {
                (max_key, 1)
            } else {
                (lower, page + 1)
            };
            if next_lower != lower {
                delivered_at_lower.clear();
            }
            for item in &items {
                if keyset.sort_key(item) == Some(next_lower) {
                    delivered_at_lower.insert(keyset.id(item));
                }
            }
            if let Some(Value::Object(map)) = Some(&mut body) {
                let _ = keyset.items.set(map, Value::Array(fresh));
            }
            let records = self.records(&mut body, request_number)?;
            drop(body);
            let count = records.len();
            let mut next = cursor.clone();
            next.insert(keyset.cursor_field.clone(), json!(next_lower));
            let next_request = if request_number < self.page_limit {
                Some(request_for(next_lower, next_page, request_number + 1)?)
            } else {
                None
            };
            prefetched = self
                .publish_and_prefetch(
                    context,
                    records.into_iter().map(Event::from_value).collect(),
                    cursor,
                    next,
                    PagePlace::within(request_number),
                    next_request.as_ref(),
                )
                .await?;
            summary.events += count;
            lower = next_lower;
            page = next_page;
        }
        tracing::warn!(input = %context.id, page_limit = self.page_limit, "page_limit reached; the rest is fetched by the next poll");
        Ok(summary)
    }
}
