//! Load-time templating of definitions with minijinja (`{{ }}` syntax)
//! against the fileset's variables.
//!
//! A string that is exactly one `{{ expr }}` becomes the expression's value
//! with its type kept; a null or undefined result removes the map key (or
//! list item). Any other string containing `{{` is rendered as text. Keys are
//! never templated. `[[ ]]` runtime templates of the httpjson input pass through.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};
use threatbeat_core::{ConfigError, Origin};

/// Renders templates inside JSON values against `var` (and, for a
/// fileset, its `module` and `fileset` names).
pub struct Templater {
    environment: Environment<'static>,
    context: minijinja::Value,
}

impl Templater {
    /// A templater whose templates see the variables as `var`.
    pub fn new(vars: &Map<String, Value>) -> Self {
        Self::with_context(minijinja::context! { var => minijinja::Value::from_serialize(vars) })
    }

    /// A templater for the fileset `module/fileset`: its templates see the
    /// variables as `var` and the names as `module` and `fileset`, so that a
    /// definition others extend can say `event.dataset: "{{ module }}.{{ fileset }}"`
    /// and each fileset gets its own.
    pub fn for_fileset(module: &str, fileset: &str, vars: &Map<String, Value>) -> Self {
        Self::with_context(minijinja::context! {
            var => minijinja::Value::from_serialize(vars),
            module => module,
            fileset => fileset,
        })
    }

    fn with_context(context: minijinja::Value) -> Self {
        let mut environment = Environment::new();
        // A misspelled `{{ var.urll }}` inside text must fail, not render as "".
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        Self { environment, context }
    }

    /// Templates every string in `value`; `None` when the whole value was a
    /// template that yielded null or undefined.
    pub fn render(&self, value: &Value, origin: &Origin) -> Result<Option<Value>, ConfigError> {
        match value {
            Value::String(text) => self.render_string(text, origin),
            Value::Array(items) => {
                let mut rendered = Vec::with_capacity(items.len());
                for (position, item) in items.iter().enumerate() {
                    if let Some(item) = self.render(item, &origin.child(position))? {
                        rendered.push(item);
                    }
                }
                Ok(Some(Value::Array(rendered)))
            }
            Value::Object(map) => {
                let mut rendered = Map::with_capacity(map.len());
                for (key, item) in map {
                    if let Some(item) = self.render(item, &origin.child(key))? {
                        rendered.insert(key.clone(), item);
                    }
                }
                Ok(Some(Value::Object(rendered)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    fn render_string(&self, text: &str, origin: &Origin) -> Result<Option<Value>, ConfigError> {
        if !text.contains("{{") {
            return Ok(Some(Value::String(text.to_owned())));
        }
        if let Some(expression) = single_expression(text) {
            let compiled = self
                .environment
                .compile_expression(expression)
                .map_err(|error| template_error(origin, text, &error))?;
            let result = compiled
                .eval(&self.context)
                .map_err(|error| template_error(origin, text, &error))?;
            if result.is_undefined() || result.is_none() {
                return Ok(None);
            }
            return serde_json::to_value(&result).map(Some).map_err(|error| {
                origin.error(format!(
                    "template `{text}` gave a value that is not JSON: {error}"
                ))
            });
        }
        self.environment
            .render_str(text, &self.context)
            .map(|rendered| Some(Value::String(rendered)))
            .map_err(|error| template_error(origin, text, &error))
    }
}

/// The expression of a string that is exactly `{{ expr }}` (whitespace-control
/// dashes allowed), else `None`.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    Some(inner.trim())
}

fn template_error(origin: &Origin, text: &str, error: &minijinja::Error) -> ConfigError {
    let mut reason = format!("template `{text}` failed: {}", error.kind());
    if let Some(detail) = error.detail() {
        reason.push_str(": ");
        reason.push_str(detail);
    }
    origin.error(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Map<String, Value> {
        json!({"url": "https://misp.local", "tags": ["a", "b"], "filters": null, "limit": 10, "on": true})
            .as_object()
            .unwrap()
            .clone()
    }

    fn render(value: Value) -> Result<Option<Value>, ConfigError> {
        Templater::new(&vars()).render(&value, &Origin::named("manifest.yml"))
    }

    #[test]
    fn single_expressions_keep_their_type() {
        let rendered = render(json!({
            "tags": "{{ var.tags }}", "limit": "{{var.limit}}", "on": "{{- var.on -}}",
            "url": "{{ var.url }}/events/restSearch", "plain": "no template", "number": 3
        }))
        .unwrap()
        .unwrap();
        assert_eq!(
            rendered,
            json!({"tags": ["a", "b"], "limit": 10, "on": true,
                   "url": "https://misp.local/events/restSearch", "plain": "no template", "number": 3})
        );
    }

    #[test]
    fn null_and_undefined_remove_the_key_and_the_item() {
        let rendered = render(json!({"body": "{{ var.filters }}", "maybe": "{{ var.nothing }}",
                                     "list": ["{{ var.filters }}", "x"]}))
        .unwrap()
        .unwrap();
        assert_eq!(rendered, json!({"list": ["x"]}));
    }

    #[test]
    fn a_filesets_templates_see_its_module_and_fileset_names() {
        let templater = Templater::for_fileset("misp", "threat", &vars());
        let rendered = templater
            .render(
                &json!({"module": "{{ module }}", "dataset": "{{ module }}.{{ fileset }}", "url": "{{ var.url }}"}),
                &Origin::named("processors.yml"),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            rendered,
            json!({"module": "misp", "dataset": "misp.threat", "url": "https://misp.local"})
        );
        // Without the names (plain `new`), they are undefined: an error inside text.
        let error = render(json!({"dataset": "{{ module }}.{{ fileset }}"})).unwrap_err();
        assert_eq!(error.key, "dataset");
    }

    #[test]
    fn runtime_templates_pass_through() {
        let text = "[[ .last_response.body.next ]]";
        assert_eq!(render(json!(text)).unwrap().unwrap(), json!(text));
    }

    #[test]
    fn errors_name_the_key_and_the_template() {
        let error = render(json!({"request": {"url": "{{ var.urll }}/x"}})).unwrap_err();
        assert_eq!(error.file, "manifest.yml");
        assert_eq!(error.key, "request.url");
        assert!(error.reason.contains("{{ var.urll }}/x"), "{}", error.reason);

        let error = render(json!({"a": "{{ var.url | nosuchfilter }}"})).unwrap_err();
        assert_eq!(error.key, "a");
        assert!(error.reason.contains("nosuchfilter"), "{}", error.reason);
    }
}
