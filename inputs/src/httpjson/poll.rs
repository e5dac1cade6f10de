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

use std::sync::Arc;

use serde_json::{json, Map, Value};
use threatbeat_core::{Batch, Event, InputContext, PublishError};

use super::fetch::{FetchError, Fetcher, Head, Response};
use super::template::Context;
use super::transform::{typed, Applied, RequestState};
use super::HttpJsonInput;
use crate::split::StreamPlan;

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
    /// A chained request failed for good, or its answer was not usable.
    #[error("chain step {step}: {method} {url}: {reason}")]
    Chain {
        /// 1-based step number.
        step: usize,
        /// `GET` or `POST`.
        method: &'static str,
        /// The request's URL, without its query (which may hold a key).
        url: String,
        /// What failed.
        reason: String,
    },
    /// A chain step's `when` or URL could not be evaluated for a record.
    #[error("chain step {step}: {reason}")]
    ChainStep {
        /// 1-based step number.
        step: usize,
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

/// How far ahead of the clock a server's time may be (clock skew) before a
/// `not_in_future` cursor value is clamped.
pub(super) const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The value to store instead of `value` when it is a time later than
/// `now` + [`CLOCK_SKEW`]: `now`, in the same unit (epoch seconds or
/// milliseconds, as a number or a string of digits) or as RFC 3339; `None`
/// when `value` is not in the future (or no time).
pub(super) fn clamp_to_now(value: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<Value> {
    let limit = now + CLOCK_SKEW;
    let epoch = |number: i64| -> Option<i64> {
        // Milliseconds from 2001-09-09 (1e12) on; seconds below.
        let millis = number >= 1_000_000_000_000;
        let ahead = if millis {
            number > limit.timestamp_millis()
        } else {
            number > limit.timestamp()
        };
        ahead.then(|| {
            if millis {
                now.timestamp_millis()
            } else {
                now.timestamp()
            }
        })
    };
    match value {
        Value::Number(number) => {
            if let Some(seconds) = number.as_i64() {
                epoch(seconds).map(Value::from)
            } else {
                // An integer beyond i64 (or a float): far in the future if positive.
                number
                    .as_f64()
                    .filter(|f| *f > limit.timestamp() as f64)
                    .map(|_| Value::from(now.timestamp()))
            }
        }
        Value::String(text) if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) => {
            match text.parse::<i64>() {
                Ok(number) => epoch(number).map(|now| Value::String(now.to_string())),
                Err(_) => Some(Value::String(now.timestamp().to_string())),
            }
        }
        Value::String(text) => {
            let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
            (time > limit).then(|| {
                let format = if text.contains('.') {
                    "%Y-%m-%dT%H:%M:%S%.6fZ"
                } else {
                    "%Y-%m-%dT%H:%M:%SZ"
                };
                Value::String(now.format(format).to_string())
            })
        }
        _ => None,
    }
}

/// Where a page stands in its poll.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PagePlace {
    /// The page's number in the poll (1-based).
    pub number: u32,
    /// The poll's first page (its first batch says [`Batch::starts_poll`]).
    pub starts_poll: bool,
    /// The poll's last page, after which the source had nothing more.
    pub ends_poll: bool,
}

impl PagePlace {
    /// A page in the middle of a poll, or of one that is not a whole listing.
    pub fn within(number: u32) -> Self {
        Self {
            number,
            ..Self::default()
        }
    }
}

/// What the pagination transforms make of a page.
pub(super) enum NextPage {
    /// Another page to fetch.
    Request(RequestState),
    /// The source has nothing more: the poll ended normally.
    End,
    /// The poll stopped with pages left (a loop, `page_limit`).
    Cut,
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
        let mut rejected = Vec::new();
        match &self.split {
            Some(split) => {
                split
                    .apply(body, &mut records, &mut rejected)
                    .map_err(|error| PollError::Response {
                        page,
                        reason: error.to_string(),
                    })?
            }
            None => records.push(body.clone()),
        }
        self.dead_letter.record(self.base_request.url.as_str(), rejected);
        Ok(records)
    }

    /// Publishes a page's `records` and then its `cursor`; waits until the
    /// pipeline made them durable. A large page goes out in slices of
    /// [`PUBLISH_SLICE`] events, the cursor riding on the last one, so that
    /// processed events are queued and freed while the rest of the page waits
    /// (memory is bounded by the slice, not the page); a crash between slices
    /// replays the page, whose events keep their ids, so the earlier slices
    /// may be made durable with the last one
    /// ([`Batch::fetched_again_until_cursor`]).
    /// `cursor` is `None` when the page leaves the cursor as it was (an empty
    /// page that only marks where the poll starts or ends).
    pub(super) async fn publish(
        &self,
        context: &InputContext,
        records: Vec<Event>,
        cursor: Option<&Map<String, Value>>,
        page: PagePlace,
    ) -> Result<(), PollError> {
        let mut records = records.into_iter().peekable();
        let mut first = true;
        let PagePlace {
            number: page,
            starts_poll,
            ends_poll,
        } = page;
        loop {
            let events: Vec<Event> = records.by_ref().take(PUBLISH_SLICE).collect();
            let last = records.peek().is_none();
            let count = events.len();
            let batch = Batch {
                events,
                cursor: cursor
                    .filter(|_| last)
                    .map(|cursor| Value::Object(cursor.clone())),
                starts_poll: first && starts_poll,
                ends_poll: last && ends_poll,
                // The page is fetched again until its last slice stores the cursor.
                fetched_again_until_cursor: !last,
            };
            first = false;
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
    pub(super) fn next_cursor(
        &self,
        current: &Map<String, Value>,
        template_context: &Context,
    ) -> Map<String, Value> {
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
            let value = match value {
                Some(value) if field.not_in_future => Some(self.not_in_future(&field.name, value)),
                other => other,
            };
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

    /// `value`, a time from the server, or now when it is later than now
    /// plus [`CLOCK_SKEW`] (in the value's own unit and form).
    fn not_in_future(&self, field: &str, value: Value) -> Value {
        let now = chrono::Utc::now();
        let Some(clamped) = clamp_to_now(&value, now) else {
            return value;
        };
        tracing::warn!(input = %self.fetcher.id, cursor_field = field, value = %value, stored = %clamped, "the server sent a time in the future; the cursor stores now instead, so later records are not skipped");
        clamped
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
        // Whether the poll's first batch is still to be published.
        let mut starts_poll = true;
        loop {
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                None => self.fetch_page(&request, context).await,
            };
            let PageRecords {
                body,
                headers,
                records,
                first,
                last,
                count,
            } = self
                .page_records(fetched, &request, context, page, &mut starts_poll)
                .await?;
            if first_event.is_null() {
                if let Some(first) = first {
                    first_event = first;
                }
            }
            if let Some(last) = last {
                last_event = last;
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
            let next = self.next_request(&request, &template_context, context, page);
            // The page body is not needed any more: free it before the next one arrives.
            drop(template_context);
            let place = PagePlace {
                number: page,
                starts_poll: std::mem::take(&mut starts_poll),
                ends_poll: matches!(next, NextPage::End),
            };
            let next_request = match next {
                NextPage::Request(request) => Some(request),
                NextPage::End | NextPage::Cut => None,
            };
            let prefetch = next_request.as_ref().map(|next| self.fetch_page(next, context));
            prefetched = self
                .publish_then(context, records, cursor, next_cursor, place, prefetch)
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

    /// Sends a page's request: up to its headers when the page is split
    /// while it arrives, else with its body decoded whole.
    async fn fetch_page(&self, request: &RequestState, context: &InputContext) -> Fetched {
        match &self.stream {
            Some(plan) => Fetched::Head(
                Arc::clone(plan),
                self.fetcher.fetch_head(request, &context.shutdown).await,
            ),
            None => Fetched::Whole(self.fetcher.fetch(request, &context.shutdown).await),
        }
    }

    /// The records of one fetched page. A page split while it arrives has
    /// its early slices published here (never with a cursor).
    async fn page_records(
        &self,
        fetched: Fetched,
        request: &RequestState,
        context: &InputContext,
        page: u32,
        starts_poll: &mut bool,
    ) -> Result<PageRecords, PollError> {
        match fetched {
            Fetched::Head(plan, head) => {
                let (headers, streamed) = self
                    .fetch_streamed_page(&plan, head, request, context, page, starts_poll)
                    .await?;
                Ok(PageRecords {
                    body: streamed.skeleton,
                    headers,
                    records: streamed.records,
                    first: streamed.first,
                    last: streamed.last,
                    count: streamed.count,
                })
            }
            Fetched::Whole(fetched) => {
                let Response { mut body, headers } = fetched.map_err(|error| fetch_error(page, error))?;
                let records = self.records(&mut body, page)?;
                Ok(PageRecords {
                    first: records.first().cloned(),
                    last: records.last().cloned(),
                    count: records.len(),
                    body,
                    headers,
                    records: records.into_iter().map(Event::from_value).collect(),
                })
            }
        }
    }

    /// What follows `page`, from the pagination transforms.
    pub(super) fn next_request(
        &self,
        request: &RequestState,
        template_context: &Context,
        context: &InputContext,
        page: u32,
    ) -> NextPage {
        if self.pagination.is_empty() {
            return NextPage::End;
        }
        let mut next = request.clone();
        for transform in &self.pagination {
            match transform.apply(&mut next, &self.templates, template_context) {
                Ok(Applied::Done) => {}
                Ok(Applied::Empty) => return NextPage::End,
                Err(reason) => {
                    tracing::debug!(input = %context.id, page, target = transform.target_name(), reason, "pagination template failed; no more pages");
                    return NextPage::End;
                }
            }
        }
        if next == *request {
            tracing::warn!(input = %context.id, page, "pagination produced the same request again; stopping this poll");
            return NextPage::Cut;
        }
        if page >= self.page_limit {
            tracing::warn!(input = %context.id, page_limit = self.page_limit, "page_limit reached with more pages announced; the rest is fetched by the next poll");
            return NextPage::Cut;
        }
        NextPage::Request(next)
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
        records: Vec<Event>,
        cursor: &mut Map<String, Value>,
        next_cursor: Map<String, Value>,
        page: PagePlace,
        next: Option<&RequestState>,
    ) -> Result<Option<Result<Response, FetchError>>, PollError> {
        self.publish_and_prefetch_with(&self.fetcher, context, records, cursor, next_cursor, page, next)
            .await
    }

    /// [`Self::publish_and_prefetch`] with the `next` request sent by
    /// `fetcher` (a chain step's, whose method and headers are its own).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn publish_and_prefetch_with(
        &self,
        fetcher: &Fetcher,
        context: &InputContext,
        records: Vec<Event>,
        cursor: &mut Map<String, Value>,
        next_cursor: Map<String, Value>,
        page: PagePlace,
        next: Option<&RequestState>,
    ) -> Result<Option<Result<Response, FetchError>>, PollError> {
        let prefetch = next.map(|request| fetcher.fetch(request, &context.shutdown));
        self.publish_then(context, records, cursor, next_cursor, page, prefetch)
            .await
    }

    /// Publishes a page's `records` with `next_cursor` (see
    /// [`Self::publish_and_prefetch`]) while `prefetch` runs; returns what
    /// it gave.
    pub(super) async fn publish_then<Prefetched>(
        &self,
        context: &InputContext,
        records: Vec<Event>,
        cursor: &mut Map<String, Value>,
        next_cursor: Map<String, Value>,
        page: PagePlace,
        prefetch: Option<impl std::future::Future<Output = Prefetched>>,
    ) -> Result<Option<Prefetched>, PollError> {
        // An empty page still tells the pipeline where a poll starts or ends.
        let publishing = !records.is_empty() || next_cursor != *cursor || page.starts_poll || page.ends_poll;
        // The futures borrow `next_cursor`: they end with this block.
        let fetched = {
            let publish = async {
                if publishing {
                    let moved = (!records.is_empty() || next_cursor != *cursor).then_some(&next_cursor);
                    self.publish(context, records, moved, page).await
                } else {
                    Ok(())
                }
            };
            let prefetch = async {
                match prefetch {
                    Some(prefetch) => Some(prefetch.await),
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

/// A page's answer: up to its headers (split while it arrives) or whole.
pub(super) enum Fetched {
    /// Up to the headers; the body is read by the plan's split.
    Head(Arc<StreamPlan>, Result<Head, FetchError>),
    /// The body decoded whole.
    Whole(Result<Response, FetchError>),
}

/// What the poll needs of one page.
struct PageRecords {
    /// The body (a streamed page's skeleton), for `last_response.body`.
    body: Value,
    headers: Map<String, Value>,
    /// The records still to publish with the page's cursor.
    records: Vec<Event>,
    first: Option<Value>,
    last: Option<Value>,
    /// Records of the page, those published early included.
    count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn server_times_in_the_future_are_clamped_to_now_in_their_own_form() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap();
        let seconds = now.timestamp();
        // MISP stamping one event 2147483647 (2038).
        assert_eq!(clamp_to_now(&json!(2_147_483_647), now), Some(json!(seconds)));
        assert_eq!(
            clamp_to_now(&json!("2147483647"), now),
            Some(json!(seconds.to_string()))
        );
        assert_eq!(
            clamp_to_now(&json!(4_102_444_800_000_i64), now),
            Some(json!(now.timestamp_millis()))
        );
        assert_eq!(clamp_to_now(&json!(u64::MAX), now), Some(json!(seconds)));
        assert_eq!(
            clamp_to_now(&json!("2099-01-01T00:00:00.123456Z"), now),
            Some(json!("2026-12-04T12:00:00.000000Z"))
        );
        // Now, within the skew, the past, and what is no time at all stay.
        for kept in [
            json!(seconds),
            json!(seconds + 200),
            json!(1_700_000_000),
            json!("2026-12-04T12:04:00Z"),
            json!("abc"),
            json!(null),
            json!(12),
        ] {
            assert_eq!(clamp_to_now(&kept, now), None, "{kept}");
        }
    }
}
