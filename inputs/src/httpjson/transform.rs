//! The request being built (URL, parameters, headers, body) and the
//! `set` / `append` / `delete` transforms that change it.

use serde_json::{Map, Value};
use threatbeat_core::{ConfigError, FieldPath, Origin};
use url::Url;

use super::config::{TransformConfig, ValueType};
use super::template::{Context, TemplateBuilder, TemplateId, Templates};

/// One HTTP request, before it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestState {
    /// The URL without its query.
    pub url: Url,
    /// Query parameters, in order.
    pub params: Vec<(String, String)>,
    /// Headers, in order (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// The body object.
    pub body: Map<String, Value>,
}

impl RequestState {
    /// A state from a URL (its query becomes `params`).
    pub fn new(mut url: Url, headers: Vec<(String, String)>, body: Map<String, Value>) -> Self {
        let params = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        Self {
            url,
            params,
            headers,
            body,
        }
    }

    /// The full URL with the query.
    pub fn full_url(&self) -> Url {
        let mut url = self.url.clone();
        if !self.params.is_empty() {
            url.query_pairs_mut().extend_pairs(self.params.iter());
        }
        url
    }

    /// The request as template context (`last_request`): `url.value`, `url.params`, `header`, `body`.
    pub fn to_context(&self) -> Value {
        let mut params = Map::new();
        for (key, value) in &self.params {
            params.insert(key.clone(), Value::String(value.clone()));
        }
        let mut headers = Map::new();
        for (key, value) in &self.headers {
            headers.insert(key.clone(), Value::String(value.clone()));
        }
        serde_json::json!({
            "url": {"value": self.full_url().as_str(), "params": params},
            "header": headers,
            "body": self.body,
        })
    }
}

/// Where a transform writes.
#[derive(Debug, Clone)]
pub enum Target {
    /// `body.<path>`.
    Body(FieldPath),
    /// `header.<name>`.
    Header(String),
    /// `url.params.<name>`.
    Param(String),
    /// `url.value`: the whole URL.
    Url,
}

impl Target {
    /// Parses `body.a.b`, `header.X`, `url.params.p`, `url.value`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(path) = raw.strip_prefix("body.") {
            return FieldPath::parse(path)
                .map(Target::Body)
                .map_err(|error| error.to_string());
        }
        if let Some(name) = raw.strip_prefix("header.").filter(|name| !name.is_empty()) {
            return Ok(Target::Header(name.to_owned()));
        }
        if let Some(name) = raw.strip_prefix("url.params.").filter(|name| !name.is_empty()) {
            return Ok(Target::Param(name.to_owned()));
        }
        if raw == "url.value" {
            return Ok(Target::Url);
        }
        Err(format!(
            "unknown target `{raw}`; use `body.<path>`, `header.<name>`, `url.params.<name>` or `url.value`"
        ))
    }
}

/// A value: a literal, or a template rendered at request time.
#[derive(Debug, Clone)]
enum ValueSource {
    Literal(Value),
    Template(TemplateId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Set,
    Append,
    Delete,
}

/// A compiled transform.
#[derive(Debug, Clone)]
pub struct Transform {
    operation: Operation,
    target: Target,
    target_name: String,
    value: Option<ValueSource>,
    default: Option<ValueSource>,
    value_type: ValueType,
    fail_on_template_error: bool,
}

/// What applying a transform gave.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// The request was changed (or left alone by a `delete` of nothing).
    Done,
    /// The value and its default were empty; nothing was set.
    Empty,
}

fn compile_value(
    raw: &Option<Value>,
    templates: &mut TemplateBuilder,
    origin: &Origin,
) -> Result<Option<ValueSource>, ConfigError> {
    Ok(match raw {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.contains("[[") || text.contains("[%") => Some(
            ValueSource::Template(templates.add(text).map_err(|reason| origin.error(reason))?),
        ),
        Some(other) => Some(ValueSource::Literal(other.clone())),
    })
}

/// Compiles a transform list under `origin` (`request.transforms`).
pub fn compile(
    list: &[TransformConfig],
    templates: &mut TemplateBuilder,
    origin: &Origin,
) -> Result<Vec<Transform>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(index, config)| {
            let (operation, name, settings) = match config {
                TransformConfig::Set(settings) => (Operation::Set, "set", Some(settings)),
                TransformConfig::Append(settings) => (Operation::Append, "append", Some(settings)),
                TransformConfig::Delete(_) => (Operation::Delete, "delete", None),
            };
            let origin = origin.child(index).child(name);
            let target_name = match config {
                TransformConfig::Set(settings) | TransformConfig::Append(settings) => settings.target.clone(),
                TransformConfig::Delete(settings) => settings.target.clone(),
            };
            let target =
                Target::parse(&target_name).map_err(|reason| origin.child("target").error(reason))?;
            let (value, default, value_type, fail_on_template_error) = match settings {
                Some(settings) => (
                    compile_value(&settings.value, templates, &origin.child("value"))?,
                    compile_value(&settings.default, templates, &origin.child("default"))?,
                    settings.value_type,
                    settings.fail_on_template_error,
                ),
                None => (None, None, ValueType::String, false),
            };
            if operation != Operation::Delete && value.is_none() && default.is_none() {
                return Err(origin
                    .child("value")
                    .error("a `value` (or a `default`) is required"));
            }
            Ok(Transform {
                operation,
                target,
                target_name,
                value,
                default,
                value_type,
                fail_on_template_error,
            })
        })
        .collect()
}

/// Types rendered text as `value_type` says. Empty text is `None`.
pub fn typed(text: String, value_type: ValueType) -> Result<Option<Value>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match value_type {
        ValueType::String => Ok(Some(Value::String(text))),
        ValueType::Int => {
            if let Ok(number) = text.parse::<i64>() {
                return Ok(Some(Value::from(number)));
            }
            match text.parse::<f64>() {
                Ok(number) if number.fract() == 0.0 => Ok(Some(Value::from(number as i64))),
                _ => Err(format!("`{text}` is not an integer")),
            }
        }
        ValueType::Json => serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| format!("`{text}` is not JSON: {error}")),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Transform {
    /// The target as written, for messages.
    pub fn target_name(&self) -> &str {
        &self.target_name
    }

    fn resolve(
        &self,
        source: &ValueSource,
        templates: &Templates,
        context: &Context,
    ) -> Result<Option<Value>, String> {
        match source {
            ValueSource::Literal(Value::String(text)) => typed(text.clone(), self.value_type),
            ValueSource::Literal(value) => Ok(Some(value.clone())),
            ValueSource::Template(id) => typed(templates.render(id, context)?, self.value_type),
        }
    }

    /// The value this transform would write, if any.
    fn value(&self, templates: &Templates, context: &Context) -> Result<Option<Value>, String> {
        let primary = match &self.value {
            Some(source) => match self.resolve(source, templates, context) {
                Ok(value) => value,
                Err(error) if self.fail_on_template_error => return Err(error),
                Err(_) => None,
            },
            None => None,
        };
        match (primary, &self.default) {
            (Some(value), _) => Ok(Some(value)),
            (None, Some(default)) => self.resolve(default, templates, context),
            (None, None) => Ok(None),
        }
    }

    /// Applies the transform to `request`.
    pub fn apply(
        &self,
        request: &mut RequestState,
        templates: &Templates,
        context: &Context,
    ) -> Result<Applied, String> {
        if self.operation == Operation::Delete {
            match &self.target {
                Target::Body(path) => {
                    path.remove(&mut request.body);
                }
                Target::Header(name) => request.headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name)),
                Target::Param(name) => request.params.retain(|(key, _)| key != name),
                Target::Url => return Err("`url.value` cannot be deleted".to_owned()),
            }
            return Ok(Applied::Done);
        }
        let Some(value) = self.value(templates, context)? else {
            return Ok(Applied::Empty);
        };
        let append = self.operation == Operation::Append;
        match &self.target {
            Target::Body(path) => {
                let new = if append {
                    match path.get(&request.body).cloned() {
                        Some(Value::Array(mut items)) => {
                            items.push(value);
                            Value::Array(items)
                        }
                        Some(Value::Null) | None => Value::Array(vec![value]),
                        Some(existing) => Value::Array(vec![existing, value]),
                    }
                } else {
                    value
                };
                path.set(&mut request.body, new)
                    .map_err(|error| error.to_string())?;
            }
            Target::Header(name) => {
                if !append {
                    request.headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
                }
                request.headers.push((name.clone(), scalar_text(&value)));
            }
            Target::Param(name) => {
                if !append {
                    request.params.retain(|(key, _)| key != name);
                }
                request.params.push((name.clone(), scalar_text(&value)));
            }
            Target::Url => {
                let text = scalar_text(&value);
                let url = request
                    .url
                    .join(&text)
                    .map_err(|error| format!("`{text}` is not a URL: {error}"))?;
                let body = std::mem::take(&mut request.body);
                let headers = std::mem::take(&mut request.headers);
                *request = RequestState::new(url, headers, body);
            }
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Configs arrive as JSON values (the agent parses YAML into JSON first).
    fn parse(yaml: &str) -> Vec<TransformConfig> {
        serde_json::from_value(serde_yaml::from_str::<Value>(yaml).unwrap()).unwrap()
    }

    fn build(yaml: &str) -> (Vec<Transform>, Templates) {
        let list = parse(yaml);
        let mut builder = TemplateBuilder::new();
        let transforms = compile(
            &list,
            &mut builder,
            &Origin::named("t").child("request.transforms"),
        )
        .unwrap();
        (transforms, builder.finish())
    }

    fn state() -> RequestState {
        RequestState::new(
            Url::parse("https://misp.test/events/restSearch?x=1").unwrap(),
            vec![],
            Map::new(),
        )
    }

    #[test]
    fn set_keeps_json_types_and_uses_defaults() {
        let (transforms, templates) = build(
            r#"
- set: {target: body.page, value: 1}
- set: {target: body.limit, value: "[[ limit ]]", value_type: int}
- set: {target: body.timestamp, value: "[[ cursor.timestamp ]]", default: "[[ 100 + 5 ]]", value_type: int}
- set: {target: body.returnFormat, value: json}
- set: {target: body.type, value: '["ip-dst", "domain"]', value_type: json}
- set: {target: url.params.timestamp, value: "[[ 7 ]]"}
- append: {target: header.X-Tag, value: a}
- append: {target: header.X-Tag, value: b}
- delete: {target: url.params.x}
"#,
        );
        let mut request = state();
        for transform in &transforms {
            transform
                .apply(
                    &mut request,
                    &templates,
                    &Context::new(json!({"limit": "50", "cursor": {}})),
                )
                .unwrap();
        }
        assert_eq!(
            Value::Object(request.body.clone()),
            json!({"page": 1, "limit": 50, "timestamp": 105, "returnFormat": "json", "type": ["ip-dst", "domain"]})
        );
        assert_eq!(
            request.full_url().as_str(),
            "https://misp.test/events/restSearch?timestamp=7"
        );
        assert_eq!(
            request.headers,
            vec![("X-Tag".into(), "a".into()), ("X-Tag".into(), "b".into())]
        );
    }

    #[test]
    fn empty_value_without_default_is_reported() {
        let (transforms, templates) = build("- set: {target: body.page, value: \"[[ nothing ]]\"}");
        assert_eq!(
            transforms[0]
                .apply(&mut state(), &templates, &Context::new(json!({})))
                .unwrap(),
            Applied::Empty
        );
    }

    #[test]
    fn bad_targets_are_config_errors_with_the_key() {
        let list = parse("- set: {target: bdy.page, value: 1}");
        let error = compile(
            &list,
            &mut TemplateBuilder::new(),
            &Origin::named("m.yml").child("request.transforms"),
        )
        .unwrap_err();
        assert_eq!(error.key, "request.transforms.0.set.target");
        assert!(error.reason.contains("unknown target `bdy.page`"));
    }

    #[test]
    fn url_value_replaces_url_and_params() {
        let (transforms, templates) = build("- set: {target: url.value, value: \"[[ next ]]\"}");
        let mut request = state();
        transforms[0]
            .apply(
                &mut request,
                &templates,
                &Context::new(json!({"next": "https://misp.test/next?page=2"})),
            )
            .unwrap();
        assert_eq!(request.params, vec![("page".into(), "2".into())]);
    }
}
