//! Request chaining, modelled on Filebeat's httpjson `chain`: the root
//! request's response is split into records, and each record is the parent
//! of one request per `step` (its value substituted into the step's URL);
//! the last step's records, split by the step's own `split`, are the events.
//!
//! Delivery and the cursor: the root records are processed in ascending
//! `chain_order_by` order, and each record's events are published as one
//! batch with the cursor evaluated over that record (`record`), so the
//! cursor moves per delivered record and never past one that was not
//! delivered. A chained request that fails (after its retries) fails the
//! poll with the step's URL; everything before it is durable, and the next
//! poll starts at the record that failed. `chain_max_requests` bounds the
//! requests of one poll: a first sync of thousands of records proceeds over
//! several polls, each resuming where the last stopped.
//!
//! A chained poll is not a whole listing of the source (the `when` filter
//! selects records changed since the cursor), so its batches carry no
//! poll-start or poll-end marks.

use std::cmp::Ordering;

use chrono::Utc;
use serde_json::{json, Map, Value};
use threatbeat_core::{
    deserialize_at, nest_dotted_keys, ConfigError, Event, FieldPath, InputContext, NullKeys, Origin,
};
use url::Url;

use super::config::{ChainEntryConfig, ChainStepConfig, Method};
use super::fetch::{FetchError, Fetcher, Response};
use super::poll::{fetch_error, NextPage, PagePlace, PollError, PollSummary};
use super::template::{Context, TemplateBuilder, TemplateId, Templates};
use super::transform::RequestState;
use super::HttpJsonInput;
use crate::dead_letter::DeadLetter;
use crate::split::{NestedSplit, Split};

/// A compiled `chain` with its ordering and request budget.
pub(super) struct Chain {
    /// The steps, in order; never empty.
    pub steps: Vec<Step>,
    order_by: Vec<FieldPath>,
    max_requests: u32,
}

/// One compiled `chain[].step`.
pub(super) struct Step {
    /// 1-based, for messages.
    number: usize,
    url: UrlSource,
    replace: Option<Replace>,
    when: Option<TemplateId>,
    /// Sends this step's requests (its own method; the input's client,
    /// auth, retries and rate limit).
    pub fetcher: Fetcher,
    headers: Vec<(String, String)>,
    split: StepSplit,
}

enum UrlSource {
    Text(String),
    Template(TemplateId),
}

/// `replace`: the text to find in the URL and where its value is in the record.
struct Replace {
    text: String,
    /// `None` for `$`, the record itself.
    path: Option<FieldPath>,
}

enum StepSplit {
    /// No split: the whole body is one record.
    Whole,
    One(Split),
    /// Sibling splits; each branch sees the body without the others' targets.
    Siblings(Vec<(Split, Option<FieldPath>)>),
}

/// Parses a `replace` JSONPath: `$` or `$.a.b`.
fn parse_replace(raw: &str, origin: &Origin) -> Result<Replace, ConfigError> {
    let path = match raw.strip_prefix('$') {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('.') {
            Some(path) if !path.contains('[') && !path.contains('*') => {
                Some(FieldPath::parse(path).map_err(|error| origin.error(error.to_string()))?)
            }
            _ => {
                return Err(origin.error(format!(
                    "`{raw}`: only `$` and `$.field.field` paths into the parent record are supported \
                     (the parent response is already split into records)"
                )))
            }
        },
        None => return Err(origin.error(format!("`{raw}` must be a JSONPath starting with `$`"))),
    };
    Ok(Replace {
        text: raw.to_owned(),
        path,
    })
}

/// The target path of a sibling split (`body.Event.Object` → `Event.Object`).
fn split_target(raw: &str) -> Option<FieldPath> {
    raw.strip_prefix("body.")
        .and_then(|path| FieldPath::parse(path).ok())
}

impl Chain {
    /// Compiles `chain`; `fetcher` makes a step's fetcher for its method.
    /// `None` when no chain is configured.
    pub fn build(
        entries: &[ChainEntryConfig],
        order_by: &[String],
        max_requests: u32,
        root_url: &Url,
        templates: &mut TemplateBuilder,
        origin: &Origin,
        mut fetcher: impl FnMut(Method) -> Result<Fetcher, ConfigError>,
    ) -> Result<Option<Self>, ConfigError> {
        if entries.is_empty() {
            if !order_by.is_empty() {
                return Err(origin
                    .child("chain_order_by")
                    .error("orders the records of a `chain`, and none is configured"));
            }
            return Ok(None);
        }
        if max_requests == 0 {
            return Err(origin.child("chain_max_requests").error("must be at least 1"));
        }
        let order_by = order_by
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                FieldPath::parse(raw).map_err(|error| {
                    origin
                        .child("chain_order_by")
                        .child(index)
                        .error(error.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut steps = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let step_origin = origin.child("chain").child(index).child("step");
            let raw = nest_dotted_keys(entry.step.clone(), NullKeys::Drop);
            let config: ChainStepConfig = deserialize_at(&raw, &step_origin)?;
            steps.push(Step::build(
                index + 1,
                &config,
                root_url,
                templates,
                &step_origin,
                fetcher(config.request.method)?,
            )?);
        }
        Ok(Some(Self {
            steps,
            order_by,
            max_requests,
        }))
    }

    /// The order of two root records by `chain_order_by`: numbers (and
    /// numeric text) numerically, anything else as text; missing first.
    fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for path in &self.order_by {
            let field = |record: &Value| record.as_object().and_then(|map| path.get(map)).cloned();
            let (x, y) = (field(a), field(b));
            let order = match (x.as_ref().and_then(number), y.as_ref().and_then(number)) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                _ => x.as_ref().map(text).cmp(&y.as_ref().map(text)),
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// substituted value stays one path segment or query value.
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Step {
    fn build(
        number: usize,
        config: &ChainStepConfig,
        root_url: &Url,
        templates: &mut TemplateBuilder,
        origin: &Origin,
        fetcher: Fetcher,
    ) -> Result<Self, ConfigError> {
        let url_origin = origin.child("request").child("url");
        let raw_url = &config.request.url;
        let url = if raw_url.contains("[[") || raw_url.contains("[%") {
            UrlSource::Template(
                templates
                    .add(raw_url)
                    .map_err(|reason| url_origin.error(reason))?,
            )
        } else {
            UrlSource::Text(raw_url.clone())
        };
        let replace = match &config.replace {
            Some(raw) => {
                let replace = parse_replace(raw, &origin.child("replace"))?;
                if !raw_url.contains(&replace.text) {
                    return Err(url_origin.error(format!(
                        "`{raw_url}` does not contain the `replace` text `{}`",
                        replace.text
                    )));
                }
                Some(replace)
            }
            None => None,
        };
        if let UrlSource::Text(text) = &url {
            // The URL with a stand-in value must be one: a typo fails at load, not per record.
            let sample = match &replace {
                Some(replace) if *text == replace.text => "https://example.invalid/".to_owned(),
                Some(replace) => text.replace(&replace.text, "x"),
                None => text.clone(),
            };
            root_url
                .join(&sample)
                .map_err(|error| url_origin.error(format!("`{raw_url}` is not a URL: {error}")))?;
        }
        let when = match &config.when {
            Some(source) => Some(
                templates
                    .add(source)
                    .map_err(|reason| origin.child("when").error(reason))?,
            ),
            None => None,
        };
        let split_origin = origin.child("response").child("split");
        let split = match &config.response.split {
            None => StepSplit::Whole,
            Some(NestedSplit::One(split)) => StepSplit::One(Split::build(split, &split_origin)?),
            Some(NestedSplit::Siblings(branches)) => StepSplit::Siblings(
                branches
                    .iter()
                    .enumerate()
                    .map(|(index, branch)| {
                        Ok((
                            Split::build(branch, &split_origin.child(index))?,
                            split_target(&branch.target),
                        ))
                    })
                    .collect::<Result<_, ConfigError>>()?,
            ),
        };
        Ok(Self {
            number,
            url,
            replace,
            when,
            fetcher,
            headers: config
                .request
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            split,
        })
    }

    fn method(&self) -> &'static str {
        match self.fetcher.method {
            Method::GET => "GET",
            Method::POST => "POST",
        }
    }

    /// The request for `record`, or `None` when `when` skips it (or it has
    /// nothing to substitute). `base` holds the input's headers and the URL
    /// relative step URLs resolve against.
    fn request_for(
        &self,
        record: &Value,
        scope: &Scope<'_>,
        base: &RequestState,
    ) -> Result<Option<RequestState>, PollError> {
        let step = self.number;
        let needs_context = self.when.is_some() || matches!(self.url, UrlSource::Template(_));
        let template_context = needs_context
            .then(|| Context::new(json!({"record": record, "cursor": scope.cursor, "poll": scope.poll})));
        let render = |id: &TemplateId, what: &str| {
            let context = template_context
                .as_ref()
                .expect("a context is built whenever a template is rendered");
            scope
                .templates
                .render(id, context)
                .map_err(|reason| PollError::ChainStep {
                    step,
                    reason: format!("`{what}`: {reason}"),
                })
        };
        if let Some(when) = &self.when {
            match render(when, "when")?.as_str() {
                "true" => {}
                "false" | "" => return Ok(None),
                other => {
                    return Err(PollError::ChainStep {
                        step,
                        reason: format!("`when` rendered `{other}`; it must render true or false"),
                    })
                }
            }
        }
        let mut text = match &self.url {
            UrlSource::Text(text) => text.clone(),
            UrlSource::Template(id) => render(id, "request.url")?,
        };
        if let Some(replace) = &self.replace {
            let found = match &replace.path {
                None => Some(record),
                Some(path) => record.as_object().and_then(|map| path.get(map)),
            };
            let value = match found {
                Some(Value::String(value)) if !value.is_empty() => value.clone(),
                Some(value @ (Value::Number(_) | Value::Bool(_))) => value.to_string(),
                _ => {
                    // Nothing to fetch for it, now or later: skipping loses nothing.
                    tracing::warn!(input = %scope.input, step, replace = %replace.text, "a record has no usable value at the `replace` path; skipped");
                    return Ok(None);
                }
            };
            text = if text == replace.text {
                value
            } else {
                text.replace(&replace.text, &encode_component(&value))
            };
        }
        let url = base.url.join(&text).map_err(|error| PollError::ChainStep {
            step,
            reason: format!("`{text}` is not a URL: {error}"),
        })?;
        let mut headers = base.headers.clone();
        for (name, value) in &self.headers {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            headers.push((name.clone(), value.clone()));
        }
        Ok(Some(RequestState::new(url, headers, Map::new())))
    }

    /// The records of this step's answer to `request`; those a nested split
    /// cannot cut go to `dead_letter`.
    fn records(
        &self,
        request: &RequestState,
        response: Result<Response, FetchError>,
        dead_letter: &DeadLetter,
    ) -> Result<Vec<Value>, PollError> {
        let failed = |reason: String| PollError::Chain {
            step: self.number,
            method: self.method(),
            url: request.url.to_string(),
            reason,
        };
        let body = match response {
            Ok(response) => response.body,
            Err(FetchError::Shutdown) => return Err(PollError::Shutdown),
            Err(FetchError::Failed { reason, .. }) => return Err(failed(reason)),
        };
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        match &self.split {
            StepSplit::Whole => out.push(body),
            StepSplit::One(split) => split
                .apply(&body, &mut out, &mut rejected)
                .map_err(|error| failed(error.to_string()))?,
            StepSplit::Siblings(branches) => {
                for (index, (split, _)) in branches.iter().enumerate() {
                    let mut branch_body = body.clone();
                    if let Value::Object(map) = &mut branch_body {
                        for (other, (_, target)) in branches.iter().enumerate() {
                            if let (true, Some(target)) = (other != index, target) {
                                target.remove(map);
                            }
                        }
                    }
                    split
                        .apply(&branch_body, &mut out, &mut rejected)
                        .map_err(|error| failed(error.to_string()))?;
                }
            }
        }
        dead_letter.record(request.url.as_str(), rejected);
        Ok(out)
    }
}

/// What every template of a chained poll sees besides `record`.
struct Scope<'a> {
    templates: &'a Templates,
    /// The cursor as the poll started: `when` compares against it.
    cursor: &'a Map<String, Value>,
    /// `{"started": <epoch seconds>}`.
    poll: &'a Value,
    input: &'a str,
}

impl HttpJsonInput {
    /// One chained poll: root pages as `poll` fetches them; per page, its
    /// records in `chain_order_by` order, each chained and published with
    /// the cursor over it.
    pub(super) async fn poll_chain(
        &self,
        chain: &Chain,
        cursor: &mut Map<String, Value>,
        context: &InputContext,
    ) -> Result<PollSummary, PollError> {
        let poll_cursor = cursor.clone();
        let poll = json!({"started": Utc::now().timestamp()});
        let scope = Scope {
            templates: &self.templates,
            cursor: &poll_cursor,
            poll: &poll,
            input: &context.id,
        };
        let mut request = self.first_request(cursor)?;
        let mut summary = PollSummary::default();
        let mut sent: u32 = 0;
        let mut page: u32 = 1;
        let first_step = &chain.steps[0];
        'pages: loop {
            let Response { mut body, headers } = self
                .fetcher
                .fetch(&request, &context.shutdown)
                .await
                .map_err(|error| fetch_error(page, error))?;
            let mut records = self.records(&mut body, page)?;
            records.sort_by(|a, b| chain.compare(a, b));
            summary.pages = page;
            let next = if self.pagination.is_empty() {
                NextPage::End
            } else {
                let request_context = request.to_context();
                let mut last_response =
                    json!({"header": headers, "page": page, "url": request_context["url"]});
                last_response["body"] = body;
                let mut template_context = json!({"cursor": cursor, "last_request": request_context});
                template_context["last_response"] = last_response;
                if let (Some(first), Some(last)) = (records.first(), records.last()) {
                    template_context["first_event"] = first.clone();
                    template_context["last_event"] = last.clone();
                }
                self.next_request(&request, &Context::new(template_context), context, page)
            };
            let mut selected = Vec::new();
            for record in records {
                if let Some(first_request) = first_step.request_for(&record, &scope, &self.base_request)? {
                    selected.push((record, first_request));
                }
            }
            tracing::debug!(input = %context.id, page, selected = selected.len(), "chain records selected");
            let mut pending = selected.into_iter().peekable();
            let mut prefetched = None;
            while let Some((record, first_request)) = pending.next() {
                let response = match prefetched.take() {
                    Some(response) => response,
                    None => {
                        if sent >= chain.max_requests {
                            tracing::warn!(input = %context.id, chain_max_requests = chain.max_requests, "chain_max_requests reached; the records left are fetched by the next poll");
                            break 'pages;
                        }
                        sent += 1;
                        first_step.fetcher.fetch(&first_request, &context.shutdown).await
                    }
                };
                let Some(events) = self
                    .chain_record(chain, &first_request, response, &scope, &mut sent, context)
                    .await?
                else {
                    tracing::warn!(input = %context.id, chain_max_requests = chain.max_requests, "chain_max_requests reached inside a record's chain; it is fetched again by the next poll");
                    break 'pages;
                };
                let next_cursor = self.next_cursor(
                    cursor,
                    &Context::new(json!({"cursor": cursor, "record": record, "poll": poll})),
                );
                // With one step, the next record's request is on its way while
                // this record is published; it counts against the budget.
                let prefetch = match pending.peek() {
                    Some((_, next)) if chain.steps.len() == 1 && sent < chain.max_requests => {
                        sent += 1;
                        Some(next)
                    }
                    _ => None,
                };
                let count = events.len();
                prefetched = self
                    .publish_and_prefetch_with(
                        &first_step.fetcher,
                        context,
                        events.into_iter().map(Event::from_value).collect(),
                        cursor,
                        next_cursor,
                        PagePlace::within(page),
                        prefetch,
                    )
                    .await?;
                summary.events += count;
            }
            match next {
                NextPage::Request(next) => {
                    request = next;
                    page += 1;
                }
                NextPage::End | NextPage::Cut => break,
            }
        }
        // Once more without a record: a cursor default (the first look-back)
        // is stored even when nothing was selected.
        let end_cursor = self.next_cursor(cursor, &Context::new(json!({"cursor": cursor, "poll": poll})));
        if end_cursor != *cursor {
            self.publish_and_prefetch(
                context,
                Vec::new(),
                cursor,
                end_cursor,
                PagePlace::within(page),
                None,
            )
            .await?;
        }
        Ok(summary)
    }

    /// The events of one root record: its first step's `response`, then the
    /// later steps over every record before them. `None` when the request
    /// budget ran out before the chain was complete.
    async fn chain_record(
        &self,
        chain: &Chain,
        first_request: &RequestState,
        response: Result<Response, FetchError>,
        scope: &Scope<'_>,
        sent: &mut u32,
        context: &InputContext,
    ) -> Result<Option<Vec<Value>>, PollError> {
        let mut current = chain.steps[0].records(first_request, response, &self.dead_letter)?;
        for step in &chain.steps[1..] {
            let mut next = Vec::new();
            for parent in &current {
                let Some(request) = step.request_for(parent, scope, &self.base_request)? else {
                    continue;
                };
                if *sent >= chain.max_requests {
                    return Ok(None);
                }
                *sent += 1;
                let response = step.fetcher.fetch(&request, &context.shutdown).await;
                next.extend(step.records(&request, response, &self.dead_letter)?);
            }
            current = next;
        }
        Ok(Some(current))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Json, Router};
    use threatbeat_core::{BuildContext, Input, InputError, PluginConfig, Publisher};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// How an item file misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        Status500,
        Slow,
    }

    /// A feed: `manifest.json` (uuid → `ts`) and `items/<uuid>.json`.
    #[derive(Default)]
    struct Feed {
        manifest: Map<String, Value>,
        faults: Vec<(String, Fault)>,
        log: Vec<String>,
    }

    type Shared = Arc<Mutex<Feed>>;

    async fn manifest(State(feed): State<Shared>) -> Json<Value> {
        let mut feed = feed.lock().unwrap();
        feed.log.push("manifest".to_owned());
        Json(Value::Object(feed.manifest.clone()))
    }

    async fn item(State(feed): State<Shared>, Path(file): Path<String>) -> (StatusCode, Json<Value>) {
        let uuid = file.trim_end_matches(".json").to_owned();
        let fault = {
            let mut feed = feed.lock().unwrap();
            feed.log.push(uuid.clone());
            feed.faults
                .iter()
                .find(|(id, _)| *id == uuid)
                .map(|(_, fault)| *fault)
        };
        match fault {
            Some(Fault::Status500) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "boom"}))),
            Some(Fault::Slow) => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                (StatusCode::OK, Json(json!({})))
            }
            None => (
                StatusCode::OK,
                Json(json!({"items": [{"id": format!("{uuid}-a")}, {"id": format!("{uuid}-b")}]})),
            ),
        }
    }

    async fn serve(feed: Shared) -> String {
        let router = Router::new()
            .route("/feed/manifest.json", get(manifest))
            .route("/feed/items/{file}", get(item))
            .with_state(feed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        format!("http://{address}/feed")
    }

    /// The chained config over `base`; `extra` is merged on top.
    fn config(base: &str, extra: Value) -> PluginConfig {
        let mut settings = json!({
            "interval": "1h",
            "request": {
                "url": format!("{base}/manifest.json"),
                "timeout": "500ms",
                "retry": {"max_attempts": 2, "wait_min": "1ms", "wait_max": "1ms"}
            },
            "response": {"split": {"target": "body", "type": "map", "key_field": "uuid"}},
            "chain": [{"step": {
                "request.url": format!("{base}/items/$.uuid.json"),
                "replace": "$.uuid",
                "when": "[[ record.ts|int > cursor.ts|default(0)|int or (record.ts|int == cursor.ts|default(-1)|int and record.uuid > cursor.uuid|default('')) ]]",
                "response.split": {"target": "body.items"}
            }}],
            "chain_order_by": ["ts", "uuid"],
            "cursor": {
                "ts": {"value": "[[ record.ts if record is defined else cursor.ts|default(0) ]]", "value_type": "int"},
                "uuid": {"value": "[[ record.uuid if record is defined else '' ]]"}
            }
        });
        for (key, value) in extra.as_object().unwrap() {
            settings[key] = value.clone();
        }
        PluginConfig {
            type_name: "httpjson".into(),
            settings,
            origin: Origin::named("test"),
        }
    }

    /// One `run --once` pass from `cursor`: the event ids delivered, the
    /// cursor of the last durable batch, and the outcome.
    async fn pass(
        config: &PluginConfig,
        cursor: Option<Value>,
    ) -> (Vec<String>, Option<Value>, Result<(), InputError>) {
        let context = BuildContext {
            pipeline_id: "intel/feed".into(),
            ..BuildContext::default()
        };
        let input = HttpJsonInput::build(config, &context).unwrap();
        let (publisher, mut receiver) = Publisher::channel(1);
        let collected = tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut cursor = None;
            while let Some(request) = receiver.recv().await {
                for event in &request.batch.events {
                    ids.push(event.fields["id"].as_str().unwrap().to_owned());
                }
                if request.batch.cursor.is_some() {
                    cursor = request.batch.cursor.clone();
                }
                assert!(
                    !request.batch.starts_poll && !request.batch.ends_poll,
                    "a chained poll is no whole listing"
                );
                let _ = request.ack.send(Ok(()));
            }
            (ids, cursor)
        });
        let outcome = Box::new(input)
            .run(InputContext {
                id: "intel/feed".into(),
                publisher,
                cursor: cursor.clone(),
                shutdown: CancellationToken::new(),
                run_once: true,
            })
            .await;
        let (ids, stored) = collected.await.unwrap();
        (ids, stored.or(cursor), outcome)
    }

    fn feed() -> Shared {
        let mut manifest = Map::new();
        for (uuid, ts) in [("u4", "30"), ("u2", "20"), ("u1", "10"), ("u3", "20")] {
            manifest.insert(uuid.into(), json!({"ts": ts, "info": uuid}));
        }
        Arc::new(Mutex::new(Feed {
            manifest,
            ..Feed::default()
        }))
    }

    fn ids(uuids: &[&str]) -> Vec<String> {
        uuids
            .iter()
            .flat_map(|uuid| [format!("{uuid}-a"), format!("{uuid}-b")])
            .collect()
    }

    #[tokio::test]
    async fn a_failed_chained_request_keeps_the_cursor_on_the_last_delivered_record() {
        for fault in [Fault::Status500, Fault::Slow] {
            let feed = feed();
            let base = serve(feed.clone()).await;
            feed.lock().unwrap().faults.push(("u3".into(), fault));
            let config = config(&base, json!({}));

            let (delivered, cursor, outcome) = pass(&config, None).await;
            let error = outcome.unwrap_err().to_string();
            assert!(error.contains("intel/feed"), "{error}");
            assert!(
                error.contains(&format!("chain step 1: GET {base}/items/u3.json")),
                "{error}"
            );
            assert_eq!(delivered, ids(&["u1", "u2"]), "ascending, up to the failure");
            assert_eq!(cursor, Some(json!({"ts": 20, "uuid": "u2"})));

            feed.lock().unwrap().faults.clear();
            feed.lock().unwrap().log.clear();
            let (delivered, cursor, outcome) = pass(&config, cursor).await;
            outcome.unwrap();
            assert_eq!(delivered, ids(&["u3", "u4"]), "what was missed, nothing twice");
            assert_eq!(feed.lock().unwrap().log, ["manifest", "u3", "u4"]);
            assert_eq!(cursor, Some(json!({"ts": 30, "uuid": "u4"})));

            // Nothing changed: the manifest only.
            feed.lock().unwrap().log.clear();
            let (delivered, again, outcome) = pass(&config, cursor.clone()).await;
            outcome.unwrap();
            assert!(delivered.is_empty());
            assert_eq!(again, cursor);
            assert_eq!(feed.lock().unwrap().log, ["manifest"]);
        }
    }

    #[tokio::test]
    async fn the_request_budget_ends_a_poll_where_the_next_resumes() {
        let feed = feed();
        let base = serve(feed.clone()).await;
        let config = config(&base, json!({"chain_max_requests": 3}));
        let (delivered, cursor, outcome) = pass(&config, None).await;
        outcome.unwrap();
        assert_eq!(delivered, ids(&["u1", "u2", "u3"]));
        assert_eq!(cursor, Some(json!({"ts": 20, "uuid": "u3"})));
        let (delivered, _, outcome) = pass(&config, cursor).await;
        outcome.unwrap();
        assert_eq!(delivered, ids(&["u4"]));
        assert_eq!(
            feed.lock()
                .unwrap()
                .log
                .iter()
                .filter(|entry| *entry != "manifest")
                .count(),
            4
        );
    }

    #[tokio::test]
    async fn a_changed_record_is_fetched_again_and_an_empty_poll_stores_the_default() {
        let feed = feed();
        let base = serve(feed.clone()).await;
        let settings = config(&base, json!({}));
        let (_, cursor, outcome) = pass(&settings, Some(json!({"ts": 25}))).await;
        outcome.unwrap();
        assert_eq!(cursor, Some(json!({"ts": 30, "uuid": "u4"})));
        feed.lock()
            .unwrap()
            .manifest
            .insert("u1".into(), json!({"ts": "40"}));
        let (delivered, cursor, outcome) = pass(&settings, cursor).await;
        outcome.unwrap();
        assert_eq!(delivered, ids(&["u1"]));
        assert_eq!(cursor, Some(json!({"ts": 40, "uuid": "u1"})));
        // Nothing selected and no cursor yet: the end-of-poll value is stored.
        let (delivered, cursor, outcome) = pass(
            &config(
                &base,
                json!({"chain": [{"step": {
                    "request": {"url": format!("{base}/items/$.uuid.json")},
                    "replace": "$.uuid",
                    "when": "[[ record.ts|int > 1000 ]]"
                }}]}),
            ),
            None,
        )
        .await;
        outcome.unwrap();
        assert!(delivered.is_empty());
        assert_eq!(cursor, Some(json!({"ts": 0})));
    }

    #[test]
    fn misconfigured_chains_name_the_key() {
        let build = |extra: Value| {
            HttpJsonInput::build(&config("http://feed.test", extra), &BuildContext::default())
                .err()
                .map(|error| (error.key, error.reason))
        };
        let (key, reason) = build(
            json!({"chain": [{"step": {"request.url": "http://feed.test/x.json", "replace": "$.uuid"}}]}),
        )
        .unwrap();
        assert_eq!(key, "chain.0.step.request.url");
        assert!(reason.contains("does not contain"), "{reason}");
        let (key, _) = build(json!({"chain_max_requests": 0})).unwrap();
        assert_eq!(key, "chain_max_requests");
        let (key, _) = build(json!({"chain": [{"step": {"request.url": "http://x", "bogus": 1}}]})).unwrap();
        assert!(key.starts_with("chain.0.step"), "{key}");
        let (key, _) = build(json!({"chain": [], "chain_order_by": ["ts"]})).unwrap();
        assert_eq!(key, "chain_order_by");
    }

    #[tokio::test]
    async fn a_when_that_is_not_a_boolean_fails_the_poll() {
        let feed = feed();
        let base = serve(feed.clone()).await;
        let config = config(
            &base,
            json!({"chain": [{"step": {
                "request.url": format!("{base}/items/$.uuid.json"),
                "replace": "$.uuid",
                "when": "[[ record.ts ]]"
            }}]}),
        );
        let (delivered, _, outcome) = pass(&config, None).await;
        assert!(delivered.is_empty());
        assert!(outcome
            .unwrap_err()
            .to_string()
            .contains("must render true or false"));
    }

    #[test]
    fn replace_paths_are_checked() {
        let origin = Origin::named("m.yml").child("chain.0.step.replace");
        assert!(parse_replace("$", &origin).unwrap().path.is_none());
        assert_eq!(
            parse_replace("$.links.self", &origin)
                .unwrap()
                .path
                .unwrap()
                .as_str(),
            "links.self"
        );
        let error = parse_replace("$.records[:].id", &origin).err().unwrap();
        assert_eq!(error.key, "chain.0.step.replace");
        assert!(error.reason.contains("already split"), "{}", error.reason);
        assert!(parse_replace("uuid", &origin).is_err());
    }

    #[test]
    fn substituted_values_stay_one_component() {
        assert_eq!(encode_component("5bad26c1-6a48"), "5bad26c1-6a48");
        assert_eq!(encode_component("a/b c?d#"), "a%2Fb%20c%3Fd%23");
    }

    #[test]
    fn numbers_order_numerically_then_ties_by_text() {
        let chain = Chain {
            steps: Vec::new(),
            order_by: vec![
                FieldPath::parse("timestamp").unwrap(),
                FieldPath::parse("uuid").unwrap(),
            ],
            max_requests: 1,
        };
        let mut records = [
            json!({"timestamp": "100", "uuid": "b"}),
            json!({"timestamp": "99", "uuid": "z"}),
            json!({"timestamp": 100, "uuid": "a"}),
            json!({"uuid": "missing"}),
        ];
        records.sort_by(|a, b| chain.compare(a, b));
        let order: Vec<&str> = records.iter().map(|r| r["uuid"].as_str().unwrap()).collect();
        assert_eq!(order, ["missing", "z", "a", "b"]);
    }
}
