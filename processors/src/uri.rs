//! `uri_parts`: a URL string into ECS `url.*` fields, as Elasticsearch's
//! processor of the same name does (`original`, `scheme`, `domain`, `port`,
//! `path`, `extension`, `query`, `fragment`, `username`, `password`,
//! `user_info`), parsed with the `url` crate.

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};
use url::{Host, Url};

use crate::common::{missing, path_at, write, Step, StepConfig};

/// `uri_parts` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UriPartsConfig {
    field: String,
    #[serde(default = "default_target")]
    target_field: String,
    #[serde(default = "crate::common::yes")]
    keep_original: bool,
    #[serde(default)]
    remove_if_successful: bool,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_target() -> String {
    "url".to_owned()
}

pub(crate) struct UriParts {
    field: FieldPath,
    target: FieldPath,
    keep_original: bool,
    remove_if_successful: bool,
    ignore_missing: bool,
}

impl StepConfig for UriPartsConfig {
    const NAME: &'static str = "uri_parts";
    type Step = UriParts;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<UriParts, ConfigError> {
        Ok(UriParts {
            field: path_at(&self.field, &origin.child("field"))?,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            keep_original: self.keep_original,
            remove_if_successful: self.remove_if_successful,
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for UriParts {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let original = match event.get(&self.field) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None if self.ignore_missing => return Ok(ProcessOutcome::Keep),
            Some(Value::Null) | None => return Err(missing(&self.field)),
            Some(other) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] holds a {}, not a URL string",
                    self.field,
                    threatbeat_core::path::json_kind(other)
                )))
            }
        };
        let mut parts = url_parts(&original)
            .ok_or_else(|| ProcessorError::new(format!("unable to parse URI [{original}]")))?;
        if self.keep_original {
            parts.insert("original".to_owned(), Value::String(original));
        }
        // Merge into an existing object rather than replacing it.
        let merged = match event.remove(&self.target) {
            Some(Value::Object(mut existing)) => {
                existing.extend(parts);
                existing
            }
            _ => parts,
        };
        write(event, &self.target, Value::Object(merged))?;
        if self.remove_if_successful && self.field != self.target {
            event.remove(&self.field);
        }
        Ok(ProcessOutcome::Keep)
    }
}

/// The ECS parts of `text`, or `None` when it cannot be read as a URL.
///
/// Real MISP `url` attributes often lack a scheme (`evil.example/x.js`,
/// `203.0.113.9`). Such a value is read authority-first as if it began with
/// `http://`, without reporting a `scheme`; a value starting with `/`, or
/// whose first segment has no dot, is a relative reference: only its path,
/// query and fragment are reported.
pub(crate) fn url_parts(text: &str) -> Option<Map<String, Value>> {
    let text = text.trim();
    match Url::parse(text) {
        Ok(parsed) => Some(absolute_parts(&parsed, text, true)),
        Err(url::ParseError::RelativeUrlWithoutBase) if !text.contains(char::is_whitespace) => {
            let first_segment = text.split(['/', '?', '#']).next().unwrap_or_default();
            if !text.starts_with('/') && first_segment.contains('.') {
                let parsed = Url::parse(&format!("http://{text}")).ok()?;
                Some(absolute_parts(&parsed, &format!("http://{text}"), false))
            } else {
                let base = Url::parse("relative:///").ok()?;
                let joined = base.join(text).ok()?;
                let mut parts = Map::new();
                let path = if text.starts_with('/') {
                    joined.path().to_owned()
                } else {
                    joined.path().trim_start_matches('/').to_owned()
                };
                insert_path(&mut parts, path);
                insert_query_fragment(&mut parts, &joined);
                Some(parts)
            }
        }
        Err(_) => None,
    }
}

fn absolute_parts(parsed: &Url, text: &str, with_scheme: bool) -> Map<String, Value> {
    let mut parts = Map::new();
    if with_scheme {
        parts.insert("scheme".to_owned(), Value::String(parsed.scheme().to_owned()));
    }
    match parsed.host() {
        Some(Host::Domain(domain)) => {
            parts.insert("domain".to_owned(), Value::String(domain.to_owned()));
        }
        Some(Host::Ipv4(ip)) => {
            parts.insert("domain".to_owned(), Value::String(ip.to_string()));
        }
        Some(Host::Ipv6(ip)) => {
            parts.insert("domain".to_owned(), Value::String(ip.to_string()));
        }
        None => {}
    }
    // The url crate writes "/" for an empty path of http(s) URLs; Elasticsearch
    // reports the path only when the URL has one.
    let has_path = match text.find("://") {
        Some(start) => text[start + 3..]
            .find(['/', '?', '#'])
            .is_some_and(|index| text[start + 3 + index..].starts_with('/')),
        None => !parsed.path().is_empty(),
    };
    if has_path && !parsed.path().is_empty() {
        insert_path(&mut parts, parsed.path().to_owned());
    }
    if let Some(port) = parsed.port() {
        parts.insert("port".to_owned(), Value::Number(port.into()));
    }
    insert_query_fragment(&mut parts, parsed);
    if !parsed.username().is_empty() {
        let username = parsed.username().to_owned();
        parts.insert("username".to_owned(), Value::String(username.clone()));
        let user_info = match parsed.password() {
            Some(password) => {
                parts.insert("password".to_owned(), Value::String(password.to_owned()));
                format!("{username}:{password}")
            }
            None => username,
        };
        parts.insert("user_info".to_owned(), Value::String(user_info));
    }
    parts
}

fn insert_path(parts: &mut Map<String, Value>, path: String) {
    if path.is_empty() {
        return;
    }
    if let Some(extension) = path
        .rsplit('/')
        .next()
        .and_then(|segment| segment.rsplit_once('.'))
        .map(|(_, extension)| extension)
        .filter(|extension| !extension.is_empty())
    {
        parts.insert("extension".to_owned(), Value::String(extension.to_owned()));
    }
    parts.insert("path".to_owned(), Value::String(path));
}

fn insert_query_fragment(parts: &mut Map<String, Value>, parsed: &Url) {
    if let Some(query) = parsed.query() {
        parts.insert("query".to_owned(), Value::String(query.to_owned()));
    }
    if let Some(fragment) = parsed.fragment() {
        parts.insert("fragment".to_owned(), Value::String(fragment.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn splits_urls_like_elasticsearch() {
        let c =
            chain(json!([{"uri_parts": {"field": "v", "target_field": "u", "remove_if_successful": true}}]));
        assert_eq!(
            run(&c, json!({"v": "http://get.adobe.com/stats/AbfFcBebD/?q="})),
            json!({"u": {"original": "http://get.adobe.com/stats/AbfFcBebD/?q=", "scheme": "http",
                         "domain": "get.adobe.com", "path": "/stats/AbfFcBebD/", "query": "q="}})
        );
        let out = run(&c, json!({"v": "https://user:pw@[::1]:8443/a/b.php#frag"}));
        assert_eq!(
            out["u"],
            json!({"original": "https://user:pw@[::1]:8443/a/b.php#frag", "scheme": "https", "domain": "::1",
                   "port": 8443, "path": "/a/b.php", "extension": "php", "fragment": "frag",
                   "username": "user", "password": "pw", "user_info": "user:pw"})
        );
        assert!(run(&c, json!({"v": "http://example.com"}))["u"]
            .get("path")
            .is_none());
        let out = run(&c, json!({"v": "not a url"}));
        assert_eq!(
            out["error"]["message"],
            json!("uri_parts: unable to parse URI [not a url]")
        );
        assert_eq!(out["v"], json!("not a url"), "kept when parsing fails");
    }

    #[test]
    fn scheme_less_values_from_real_misp_data() {
        let c = chain(json!([{"uri_parts": {"field": "v", "target_field": "u", "keep_original": false}}]));
        assert_eq!(
            run(&c, json!({"v": "speed.wlaspsd.com/vip.js"}))["u"],
            json!({"domain": "speed.wlaspsd.com", "path": "/vip.js", "extension": "js"})
        );
        assert_eq!(
            run(&c, json!({"v": "143.92.48.38"}))["u"],
            json!({"domain": "143.92.48.38"})
        );
        assert_eq!(
            run(&c, json!({"v": "Data/dtl.dat?x=1"}))["u"],
            json!({"path": "Data/dtl.dat", "extension": "dat", "query": "x=1"})
        );
        assert_eq!(
            run(&c, json!({"v": "/admin/login.php"}))["u"]["path"],
            json!("/admin/login.php")
        );
    }
}
