//! One poll with offset/link paging: the first request from the request
//! transforms, then one request per page from the pagination transforms,
//! until a transform renders empty (the API has no more pages) or
//! `page_limit` is hit. Each page is published as one batch with the cursor
//! evaluated after it; the in-memory cursor moves only once that batch was
//! accepted, so a failed page leaves it where the last durable page put it.
//!
//! Every page request is derived from the previous *request* (not from the
//! cursor), so values such as MISP's `timestamp` stay the same on every page
//! of a poll even though the cursor moves while pages are published. That
//! also lets the next page be requested while the current one is published
//! ([`HttpJsonInput::publish_and_prefetch`]).

use serde_json::{json, Map, Value};
use threatbeat_core::{Batch, Event, InputContext, PublishError};

use super::fetch::{FetchError, Response};
use super::template::Context;
use super::transform::{typed, Applied, RequestState};
use super::HttpJsonInput;

/// Events per published batch when a page is larger (see [`HttpJsonInput::publish`]).
/// Half of a default MISP page (100 events of about 10 attributes): memory
/// halves, while each slice still amortises its queue fsync over 500 events.
pub(super) const PUBLISH_SLICE: usize = 500;

/// Why a poll ended early.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The input is stopping.
    #[error("shutting down")]
    Shutdown,
    /// A request failed for good.
    #[error("page {page}: {reason}")]
    Fetch {
        /// 1-based page number.
        page: u32,
        /// What failed.
        reason: String,
    },
    /// Building a request failed (a template error, a bad value).
    #[error("building the request for page {page}: {reason}")]
    Request {
        /// 1-based page number.
        page: u32,
        /// What failed.
        reason: String,
    },
    /// The response did not have the expected shape.
    #[error("page {page}: {reason}")]
    Response {
        /// 1-based page number.
        page: u32,
        /// What failed.
        reason: String,
    },
    /// The pipeline did not take the batch.
    #[error("page {page}: publishing failed: {source}")]
    Publish {
        /// 1-based page number.
        page: u32,
        /// The pipeline's error.
        source: PublishError,
    },
}

/// What a successful poll did.
#[derive(Debug, Default)]
pub struct PollSummary {
    /// Pages fetched.
    pub pages: u32,
    /// Events published.
    pub events: usize,
}

pub(super) fn fetch_error(page: u32, error: FetchError) -> PollError {
    match error {
        FetchError::Shutdown => PollError::Shutdown,
        FetchError::Failed { reason, .. } => PollError::Fetch { page, reason },
    }
}

impl HttpJsonInput {
    /// Builds the first request of a poll from the request transforms.
    pub(super) fn first_request(&self, cursor: &Map<String, Value>) -> Result<RequestState, PollError> {
        let context = Context::new(json!({"cursor": cursor}));
        let mut request = self.base_request.clone();
        for transform in &self.request_transforms {
            transform
                .apply(&mut request, &self.templates, &context)
                .map_err(|reason| PollError::Request {
                    page: 1,
                    reason: format!("transform on `{}`: {reason}", transform.target_name()),
                })?;
        }
        Ok(request)
    }

    /// Response transforms (they change `body`), then the split.
    pub(super) fn records(&self, body: &mut Value, page: u32) -> Result<Vec<Value>, PollError> {
        if !self.response_transforms.is_empty() {
            let Value::Object(map) = std::mem::take(body) else {
                return Err(PollError::Response {
                    page,
                    reason: "response transforms need a JSON object body".to_owned(),
                });
            };
            let mut holder = RequestState::new(self.base_request.url.clone(), Vec::new(), map);
            for transform in &self.response_transforms {
                let template_context = Context::new(json!({"body": holder.body}));
                transform
                    .apply(&mut holder, &self.templates, &template_context)
                    .map_err(|reason| PollError::Response { page, reason })?;
            }
            *body = Value::Object(holder.body);
        }
        let mut records = Vec::new();
        match &self.split {
            Some(split) => split
                .apply(body, &mut records)
                .map_err(|error| PollError::Response {
                    page,
                    reason: error.to_string(),
                })?,
            None => records.push(body.clone()),
        }
        Ok(records)
    }

    /// Publishes a page's `records` and then its `cursor`; waits until the
    /// pipeline made them durable. A large page goes out in slices of
    /// [`PUBLISH_SLICE`] events, the cursor riding on the last one, so that
    /// processed events are queued and freed while the rest of the page waits
    /// (memory is bounded by the slice, not the page); a crash between slices
    /// replays the page, whose events keep their ids.
    async fn publish(
        &self,
        context: &InputContext,
        records: Vec<Value>,
        cursor: &Map<String, Value>,
        page: u32,
    ) -> Result<(), PollError> {
        let mut records = records.into_iter().peekable();
        loop {
            let events: Vec<Event> = records
                .by_ref()
                .take(PUBLISH_SLICE)
                .map(Event::from_value)
                .collect();
            let last = records.peek().is_none();
            let count = events.len();
            let batch = Batch {
                events,
                cursor: last.then(|| Value::Object(cursor.clone())),
            };
            tokio::select! {
                result = context.publisher.publish(batch) => {
                    result.map_err(|source| PollError::Publish { page, source })?;
                    self.fetcher.metrics.record_events(count);
                }
                _ = context.shutdown.cancelled() => return Err(PollError::Shutdown),
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Evaluates the cursor fields over `template_context`, starting from `current`.
    fn next_cursor(&self, current: &Map<String, Value>, template_context: &Context) -> Map<String, Value> {
        let mut next = current.clone();
        for field in &self.cursor_fields {
            let render = |id| {
                match self.templates.render(id, template_context) {
                Ok(text) => typed(text, field.value_type).unwrap_or_else(|reason| {
                    tracing::warn!(cursor_field = %field.name, reason, "cursor value has the wrong type; ignored");
                    None
                }),
                Err(reason) => {
                    tracing::debug!(cursor_field = %field.name, reason, "cursor template failed");
                    None
                }
            }
            };
            let value = render(&field.value).or_else(|| field.default.as_ref().and_then(render));
            match value {
                Some(value) => {
                    next.insert(field.name.clone(), value);
                }
                None if !field.ignore_empty_value => {
                    next.remove(&field.name);
                }
                None => {}
            }
        }
        next
    }

    /// One poll with offset or link paging.
    pub(super) async fn poll(
        &self,
        cursor: &mut Map<String, Value>,
        context: &InputContext,
    ) -> Result<PollSummary, PollError> {
        let mut request = self.first_request(cursor)?;
        let mut summary = PollSummary::default();
        let mut first_event = Value::Null;
        let mut last_event = Value::Null;
        let mut page: u32 = 1;
        let mut prefetched = None;
        loop {
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                None => self.fetcher.fetch(&request, &context.shutdown).await,
            };
            let Response { mut body, headers } = fetched.map_err(|error| fetch_error(page, error))?;
            let records = self.records(&mut body, page)?;
            if let Some(first) = records.first() {
                if first_event.is_null() {
                    first_event = first.clone();
                }
            }
            if let Some(last) = records.last() {
                last_event = last.clone();
            }
            let request_context = request.to_context();
            let mut last_response = json!({
                "header": headers,
                "page": page,
                "url": request_context["url"],
            });
            // Moved, not copied: `json!` would deep-copy the whole page.
            last_response["body"] = body;
            let mut template_context = json!({
                "cursor": cursor,
                "last_request": request_context,
            });
            template_context["last_response"] = last_response;
            // Absent events stay undefined (not null) so `last_event.x|default(...)` works.
            if !first_event.is_null() {
                template_context["first_event"] = first_event.clone();
                template_context["last_event"] = last_event.clone();
            }
            let template_context = Context::new(template_context);
            let next_cursor = self.next_cursor(cursor, &template_context);
            let next_request = self.next_request(&request, &template_context, context, page);
            // The page body is not needed any more: free it before the next one arrives.
            drop(template_context);
            let count = records.len();
            prefetched = self
                .publish_and_prefetch(context, records, cursor, next_cursor, page, next_request.as_ref())
                .await?;
            summary.pages = page;
            summary.events += count;
            tracing::debug!(input = %context.id, page, events = count, "page published");
            match next_request {
                Some(next) => {
                    request = next;
                    page += 1;
                }
                None => return Ok(summary),
            }
        }
    }

    /// The request for the page after `page`, from the pagination transforms,
    /// or `None` when the poll ends there.
    fn next_request(
        &self,
        request: &RequestState,
        template_context: &Context,
        context: &InputContext,
        page: u32,
    ) -> Option<RequestState> {
        if self.pagination.is_empty() {
            return None;
        }
        let mut next = request.clone();
        for transform in &self.pagination {
            match transform.apply(&mut next, &self.templates, template_context) {
                Ok(Applied::Done) => {}
                Ok(Applied::Empty) => return None,
                Err(reason) => {
                    tracing::debug!(input = %context.id, page, target = transform.target_name(), reason, "pagination template failed; no more pages");
                    return None;
                }
            }
        }
        if next == *request {
            tracing::warn!(input = %context.id, page, "pagination produced the same request again; stopping this poll");
            return None;
        }
        if page >= self.page_limit {
            tracing::warn!(input = %context.id, page_limit = self.page_limit, "page_limit reached with more pages announced; the rest is fetched by the next poll");
            return None;
        }
        Some(next)
    }

    /// Publishes a page's `records` with `next_cursor` (unless neither holds
    /// anything new) and then moves `cursor` there, while the `next` page is
    /// fetched: the API prepares page n + 1 while the processors and the
    /// queue work on page n. The next request never depends on the publish:
    /// pages are derived from the previous request.
    ///
    /// A failed publish ends the poll at once, dropping the fetch in flight;
    /// a failed fetch is returned for the caller to report after this page
    /// was made durable, as if it had been sent afterwards.
    pub(super) async fn publish_and_prefetch(
        &self,
        context: &InputContext,
        records: Vec<Value>,
        cursor: &mut Map<String, Value>,
        next_cursor: Map<String, Value>,
        page: u32,
        next: Option<&RequestState>,
    ) -> Result<Option<Result<Response, FetchError>>, PollError> {
        let publishing = !records.is_empty() || next_cursor != *cursor;
        // The futures borrow `next_cursor`: they end with this block.
        let fetched = {
            let publish = async {
                if publishing {
                    self.publish(context, records, &next_cursor, page).await
                } else {
                    Ok(())
                }
            };
            let prefetch = async {
                match next {
                    Some(request) => Some(self.fetcher.fetch(request, &context.shutdown).await),
                    None => None,
                }
            };
            tokio::pin!(publish, prefetch);
            let mut fetched = None;
            let published = loop {
                tokio::select! {
                    published = &mut publish => break published,
                    result = &mut prefetch, if fetched.is_none() => fetched = Some(result),
                }
            };
            published?;
            match fetched {
                Some(fetched) => fetched,
                None => prefetch.await,
            }
        };
        if publishing {
            *cursor = next_cursor;
        }
        Ok(fetched)
    }
}
