//! `lookup` (a table from a field's value to fields to set and to where a
//! value goes) and `split` (a composite `a|b` value into several fields).
//!
//! `lookup` is how a MISP attribute type becomes ECS in one hash lookup:
//! ```yaml
//! - lookup:
//!     field: misp.attribute.type
//!     source: misp.attribute.value
//!     table:
//!       md5: {set: {threat.indicator.type: file}, target: threat.indicator.file.hash.md5}
//!       ip-dst|port:
//!         set: {threat.indicator.type: ipv4-addr}
//!         target: [threat.indicator.ip, threat.indicator.port]   # split on `separator`
//!         convert: [ip, long]
//!         on_invalid: skip
//!     prefixes:
//!       - {prefix: email, set: {threat.indicator.type: email-message}}
//!     default: {set: {threat.indicator.type: unknown}}
//! ```
//! Exact keys win over prefixes; prefixes are tried in order; `default`
//! applies when nothing matched.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, paths_at, write, Step, StepConfig};
use crate::convert::{convert_value, TargetType};

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(item) => vec![item],
            OneOrMany::Many(items) => items,
        }
    }
}

/// What to do when the routed value cannot be split or converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnInvalid {
    /// Mark the event with `error.message` (the default).
    #[default]
    Fail,
    /// Write none of the targets and say nothing (Elastic's grok `ip|port` behaviour).
    Skip,
}

/// One row of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryConfig {
    #[serde(default)]
    set: Map<String, Value>,
    target: Option<OneOrMany<String>>,
    convert: Option<OneOrMany<TargetType>>,
    #[serde(default)]
    on_invalid: OnInvalid,
}

/// A prefix row. (Unknown keys are caught by the flattened entry: serde
/// cannot combine `deny_unknown_fields` with `flatten` on the outer struct.)
#[derive(Debug, Deserialize)]
pub(crate) struct PrefixConfig {
    prefix: String,
    #[serde(flatten)]
    entry: EntryConfig,
}

/// `lookup` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LookupConfig {
    field: String,
    source: Option<String>,
    #[serde(default = "default_separator")]
    separator: String,
    #[serde(default)]
    table: HashMap<String, EntryConfig>,
    #[serde(default)]
    prefixes: Vec<PrefixConfig>,
    default: Option<EntryConfig>,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_separator() -> String {
    "|".to_owned()
}

/// A compiled row.
struct Entry {
    set: Vec<(FieldPath, Value)>,
    routing: Option<Routing>,
}

/// Where the source value goes: one target, or split over several.
pub(crate) struct Routing {
    targets: Vec<FieldPath>,
    /// One type per target, or empty for no conversion.
    types: Vec<TargetType>,
    on_invalid: OnInvalid,
}

pub(crate) struct Lookup {
    field: FieldPath,
    source: Option<FieldPath>,
    separator: String,
    table: HashMap<String, Entry>,
    prefixes: Vec<(String, Entry)>,
    default: Option<Entry>,
    ignore_missing: bool,
}

fn compile_entry(config: EntryConfig, origin: &Origin, has_source: bool) -> Result<Entry, ConfigError> {
    let set = config
        .set
        .into_iter()
        .map(|(field, value)| Ok((path_at(&field, &origin.child("set").child(&field))?, value)))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let routing = match config.target {
        None => {
            if config.convert.is_some() {
                return Err(origin.child("convert").error("`convert` needs a `target`"));
            }
            None
        }
        Some(_) if !has_source => {
            return Err(origin
                .child("target")
                .error("a `target` needs the lookup's `source` field to be set"))
        }
        Some(target) => {
            let targets = target
                .into_vec()
                .iter()
                .map(|raw| path_at(raw, &origin.child("target")))
                .collect::<Result<Vec<_>, _>>()?;
            Some(compile_routing(
                targets,
                config.convert,
                config.on_invalid,
                origin,
            )?)
        }
    };
    Ok(Entry { set, routing })
}

pub(crate) fn compile_routing(
    targets: Vec<FieldPath>,
    convert: Option<OneOrMany<TargetType>>,
    on_invalid: OnInvalid,
    origin: &Origin,
) -> Result<Routing, ConfigError> {
    if targets.is_empty() {
        return Err(origin.child("target").error("list at least one target field"));
    }
    let types = match convert.map(OneOrMany::into_vec) {
        None => Vec::new(),
        Some(types) if types.len() == 1 => vec![types[0]; targets.len()],
        Some(types) if types.len() == targets.len() => types,
        Some(_) => {
            return Err(origin
                .child("convert")
                .error("give one type, or one type per target field"))
        }
    };
    Ok(Routing {
        targets,
        types,
        on_invalid,
    })
}

impl StepConfig for LookupConfig {
    const NAME: &'static str = "lookup";
    type Step = Lookup;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Lookup, ConfigError> {
        let has_source = self.source.is_some();
        if self.separator.is_empty() {
            return Err(origin.child("separator").error("the separator must not be empty"));
        }
        let table = self
            .table
            .into_iter()
            .map(|(key, entry)| {
                let entry = compile_entry(entry, &origin.child("table").child(&key), has_source)?;
                Ok((key, entry))
            })
            .collect::<Result<HashMap<_, _>, ConfigError>>()?;
        let prefixes = self
            .prefixes
            .into_iter()
            .enumerate()
            .map(|(index, row)| {
                let entry = compile_entry(row.entry, &origin.child("prefixes").child(index), has_source)?;
                Ok((row.prefix, entry))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let default = self
            .default
            .map(|entry| compile_entry(entry, &origin.child("default"), has_source))
            .transpose()?;
        if table.is_empty() && prefixes.is_empty() && default.is_none() {
            return Err(origin.error("give at least one of `table`, `prefixes` and `default`"));
        }
        Ok(Lookup {
            field: path_at(&self.field, &origin.child("field"))?,
            source: self
                .source
                .map(|raw| path_at(&raw, &origin.child("source")))
                .transpose()?,
            separator: self.separator,
            table,
            prefixes,
            default,
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for Lookup {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let entry = match event.get(&self.field) {
            Some(Value::String(key)) => self.table.get(key.as_str()).or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| key.starts_with(prefix.as_str()))
                    .map(|(_, entry)| entry)
            }),
            Some(Value::Null) | None if !self.ignore_missing => return Err(missing(&self.field)),
            Some(Value::Null) | None => None,
            Some(other) => {
                let key = other.to_string();
                self.table.get(&key)
            }
        }
        .or(self.default.as_ref());
        let Some(entry) = entry else {
            return Ok(ProcessOutcome::Keep);
        };
        for (path, value) in &entry.set {
            write(event, path, value.clone())?;
        }
        if let (Some(routing), Some(source)) = (&entry.routing, &self.source) {
            let value = match event.get(source) {
                Some(Value::Null) | None if self.ignore_missing => return Ok(ProcessOutcome::Keep),
                Some(Value::Null) | None => return Err(missing(source)),
                Some(value) => value.clone(),
            };
            route(event, value, source, &self.separator, SplitAt::First, routing)?;
        }
        Ok(ProcessOutcome::Keep)
    }
}

/// Where a value is cut when it has more separators than targets need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SplitAt {
    /// At the first separators; the last target takes the rest (default).
    #[default]
    First,
    /// At the last separators; the first target takes the rest
    /// (`2001:db8::5:443` → address, port).
    Last,
}

/// Writes `value` into the routing's targets: as is for one target, split
/// on `separator` for several (first separator, then the rest; or from the
/// end with [`SplitAt::Last`]).
pub(crate) fn route(
    event: &mut Event,
    value: Value,
    source: &FieldPath,
    separator: &str,
    split_at: SplitAt,
    routing: &Routing,
) -> Result<(), ProcessorError> {
    let invalid = |reason: String| -> Result<(), ProcessorError> {
        match routing.on_invalid {
            OnInvalid::Fail => Err(ProcessorError::new(reason)),
            OnInvalid::Skip => Ok(()),
        }
    };
    let parts: Vec<Value> = if routing.targets.len() == 1 {
        vec![value]
    } else {
        let Some(text) = value.as_str() else {
            return invalid(format!("field [{source}] is not a string and cannot be split"));
        };
        let pieces: Vec<&str> = match split_at {
            SplitAt::First => text.splitn(routing.targets.len(), separator).collect(),
            SplitAt::Last => {
                let mut pieces: Vec<&str> = text.rsplitn(routing.targets.len(), separator).collect();
                pieces.reverse();
                pieces
            }
        };
        if pieces.len() != routing.targets.len() {
            return invalid(format!(
                "field [{source}] value [{text}] does not have {} parts separated by `{separator}`",
                routing.targets.len()
            ));
        }
        pieces
            .into_iter()
            .map(|piece| Value::String(piece.to_owned()))
            .collect()
    };
    let mut converted = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        match routing.types.get(index) {
            None => converted.push(part),
            Some(to) => match convert_value(&part, *to, &[]) {
                Ok(value) => converted.push(value),
                Err(reason) => return invalid(format!("field [{source}]: {reason}")),
            },
        }
    }
    for (target, value) in routing.targets.iter().zip(converted) {
        write(event, target, value)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- split

/// `split`: a composite value (`filename|sha256`) into several fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitConfig {
    field: String,
    #[serde(default = "default_separator")]
    separator: String,
    targets: Vec<String>,
    convert: Option<OneOrMany<TargetType>>,
    #[serde(default)]
    on_invalid: OnInvalid,
    #[serde(default)]
    ignore_missing: bool,
    /// `first` (default) or `last`: where a value with more separators than
    /// targets need is cut.
    #[serde(default)]
    split_at: SplitAt,
}

pub(crate) struct Split {
    field: FieldPath,
    separator: String,
    split_at: SplitAt,
    routing: Routing,
    ignore_missing: bool,
}

impl StepConfig for SplitConfig {
    const NAME: &'static str = "split";
    type Step = Split;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Split, ConfigError> {
        if self.separator.is_empty() {
            return Err(origin.child("separator").error("the separator must not be empty"));
        }
        let targets = paths_at(&self.targets, &origin.child("targets"))?;
        if targets.len() < 2 {
            return Err(origin.child("targets").error("list at least two target fields"));
        }
        Ok(Split {
            field: path_at(&self.field, &origin.child("field"))?,
            separator: self.separator,
            split_at: self.split_at,
            routing: compile_routing(targets, self.convert, self.on_invalid, origin)?,
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for Split {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let value = match event.get(&self.field) {
            Some(Value::Null) | None if self.ignore_missing => return Ok(ProcessOutcome::Keep),
            Some(Value::Null) | None => return Err(missing(&self.field)),
            Some(value) => value.clone(),
        };
        route(
            event,
            value,
            &self.field,
            &self.separator,
            self.split_at,
            &self.routing,
        )?;
        Ok(ProcessOutcome::Keep)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{build_error, chain, run};
    use serde_json::json;

    fn types() -> crate::Chain {
        chain(json!([{"lookup": {
            "field": "t", "source": "v",
            "table": {
                "md5": {"set": {"kind": "file"}, "target": "hash.md5"},
                "ip|port": {"set": {"kind": "ip"}, "target": ["ip", "port"], "convert": ["ip", "long"], "on_invalid": "skip"},
                "domain|ip": {"set": {"kind": "domain"}, "target": ["domain", "ip"], "convert": ["string", "ip"]},
            },
            "prefixes": [{"prefix": "email", "set": {"kind": "email-message"}}],
            "default": {"set": {"kind": "unknown"}}
        }}]))
    }

    #[test]
    fn exact_prefix_and_default_rows() {
        let c = types();
        assert_eq!(
            run(&c, json!({"t": "md5", "v": "abc"})),
            json!({"t": "md5", "v": "abc", "kind": "file", "hash": {"md5": "abc"}})
        );
        assert_eq!(
            run(&c, json!({"t": "email-body", "v": "x"}))["kind"],
            json!("email-message")
        );
        assert_eq!(run(&c, json!({"t": "mutex", "v": "x"}))["kind"], json!("unknown"));
        assert_eq!(
            run(&c, json!({"v": "x"}))["error"]["message"],
            json!("lookup: field [t] not present")
        );
    }

    #[test]
    fn composite_values_split_convert_skip_or_fail() {
        let c = types();
        let out = run(&c, json!({"t": "ip|port", "v": "62.38.114.12|2222"}));
        assert_eq!((&out["ip"], &out["port"]), (&json!("62.38.114.12"), &json!(2222)));
        let out = run(&c, json!({"t": "ip|port", "v": "146.88.240.0/24|80"}));
        assert!(
            out.get("ip").is_none() && out.get("port").is_none() && out.get("error").is_none(),
            "{out}"
        );
        let out = run(&c, json!({"t": "domain|ip", "v": "a.example|not-an-ip"}));
        assert!(out.get("domain").is_none());
        assert!(
            out["error"]["message"].as_str().unwrap().contains("not an IP"),
            "{out}"
        );
        let split = chain(json!([{"split": {"field": "v", "targets": ["name", "sha"]}}]));
        let out = run(&split, json!({"v": "a|b.exe|ff"}));
        assert_eq!((&out["name"], &out["sha"]), (&json!("a"), &json!("b.exe|ff")));
    }

    #[test]
    fn unknown_field_in_a_lookup_row_names_the_key() {
        let error = build_error(json!([{"lookup": {"field": "t", "source": "v",
            "table": {"md5": {"set": {"kind": "file"}, "taget": "hash.md5"}}}}]));
        assert_eq!(error.file, "test.yml");
        assert!(
            error.key.starts_with("processors.0.lookup.table.md5"),
            "{}",
            error.key
        );
        assert!(error.reason.contains("unknown field `taget`"), "{}", error.reason);
        let error = build_error(json!([{"lookup": {"field": "t", "tabel": {}}}]));
        assert_eq!(error.key, "processors.0.lookup.tabel");
    }
}
