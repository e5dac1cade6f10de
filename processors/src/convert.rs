//! `convert` (type conversion of fields) and `timestamp` (a field parsed as
//! a date into `@timestamp`).

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Number, Value};
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{missing, path_at, write, Step, StepConfig};

/// A target type of `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetType {
    Integer,
    Long,
    Float,
    Double,
    Boolean,
    String,
    Ip,
    Date,
}

/// Converts one value; the error says why in Elasticsearch's words.
pub(crate) fn convert_value(value: &Value, to: TargetType, formats: &[DateFormat]) -> Result<Value, String> {
    let text = || match value {
        Value::String(text) => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    };
    let not_convertible = || format!("unable to convert [{}] to {}", display(value), name(to));
    match to {
        TargetType::Integer | TargetType::Long => {
            let parsed = match value {
                Value::Number(number) => number
                    .as_i64()
                    .or_else(|| number.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
                Value::String(text) => text.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(not_convertible)?;
            if to == TargetType::Integer && i32::try_from(parsed).is_err() {
                return Err(not_convertible());
            }
            Ok(Value::Number(parsed.into()))
        }
        TargetType::Float | TargetType::Double => {
            let parsed = match value {
                Value::Number(number) => number.as_f64(),
                Value::String(text) => text.trim().parse::<f64>().ok(),
                _ => None,
            };
            parsed
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(not_convertible)
        }
        TargetType::Boolean => match value {
            Value::Bool(flag) => Ok(Value::Bool(*flag)),
            Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(not_convertible()),
        },
        TargetType::String => text().map(Value::String).ok_or_else(not_convertible),
        TargetType::Ip => match value {
            Value::String(text) if text.trim().parse::<IpAddr>().is_ok() => {
                Ok(Value::String(text.trim().to_owned()))
            }
            _ => Err(format!("'{}' is not an IP string literal", display(value))),
        },
        TargetType::Date => parse_date(value, formats)
            .map(|date| Value::String(format_date(&date)))
            .ok_or_else(|| format!("unable to parse date [{}]", display(value))),
    }
}

fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn name(to: TargetType) -> &'static str {
    match to {
        TargetType::Integer => "integer",
        TargetType::Long => "long",
        TargetType::Float => "float",
        TargetType::Double => "double",
        TargetType::Boolean => "boolean",
        TargetType::String => "string",
        TargetType::Ip => "ip",
        TargetType::Date => "date",
    }
}

/// How a date is written in the source.
#[derive(Debug, Clone)]
pub(crate) enum DateFormat {
    /// Epoch seconds, possibly fractional (`UNIX`).
    Unix,
    /// Epoch milliseconds (`UNIX_MS`).
    UnixMs,
    /// Epoch microseconds, as MISP's `first_seen`/`last_seen` (`UNIX_US`).
    UnixUs,
    /// RFC 3339 / ISO 8601 with an offset (`ISO8601`, `RFC3339`).
    Iso8601,
    /// A chrono `strftime` pattern; without an offset the time is UTC.
    Pattern(String),
}

impl DateFormat {
    pub(crate) fn parse(raw: &str) -> DateFormat {
        match raw {
            "UNIX" => DateFormat::Unix,
            "UNIX_MS" => DateFormat::UnixMs,
            "UNIX_US" => DateFormat::UnixUs,
            "ISO8601" | "RFC3339" => DateFormat::Iso8601,
            pattern => DateFormat::Pattern(pattern.to_owned()),
        }
    }
}

/// The dates formats to try, in order; the default is `UNIX` then `ISO8601`.
pub(crate) fn date_formats(raw: &[String]) -> Vec<DateFormat> {
    if raw.is_empty() {
        vec![DateFormat::Unix, DateFormat::Iso8601]
    } else {
        raw.iter().map(|format| DateFormat::parse(format)).collect()
    }
}

/// Parses `value` with the first format that fits.
pub(crate) fn parse_date(value: &Value, formats: &[DateFormat]) -> Option<DateTime<Utc>> {
    formats.iter().find_map(|format| parse_one(value, format))
}

fn parse_one(value: &Value, format: &DateFormat) -> Option<DateTime<Utc>> {
    let number = || crate::condition::as_number(value);
    match format {
        DateFormat::Unix => {
            let seconds = number()?;
            let whole = seconds.floor();
            let nanos = ((seconds - whole) * 1e9).round() as u32;
            Utc.timestamp_opt(whole as i64, nanos.min(999_999_999)).single()
        }
        DateFormat::UnixMs => Utc.timestamp_millis_opt(number()? as i64).single(),
        DateFormat::UnixUs => DateTime::from_timestamp_micros(number()? as i64),
        DateFormat::Iso8601 => DateTime::parse_from_rfc3339(value.as_str()?.trim())
            .ok()
            .map(|date| date.with_timezone(&Utc)),
        DateFormat::Pattern(pattern) => {
            let text = value.as_str()?.trim();
            if let Ok(date) = DateTime::parse_from_str(text, pattern) {
                return Some(date.with_timezone(&Utc));
            }
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, pattern) {
                return Some(naive.and_utc());
            }
            NaiveDate::parse_from_str(text, pattern)
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
                .map(|naive| naive.and_utc())
        }
    }
}

/// Elasticsearch's date rendering: `2017-08-28T14:24:36.000Z`.
pub(crate) fn format_date(date: &DateTime<Utc>) -> String {
    date.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------- convert

/// One conversion, Beats-style.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConvertField {
    from: String,
    to: Option<String>,
    #[serde(rename = "type")]
    to_type: TargetType,
}

/// `convert`: `fields: [{from, to, type}]` (Beats) or `field`, `target_field`,
/// `type` (Elasticsearch); `formats` for `date`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConvertConfig {
    fields: Option<Vec<ConvertField>>,
    field: Option<String>,
    target_field: Option<String>,
    #[serde(rename = "type")]
    to_type: Option<TargetType>,
    #[serde(default)]
    formats: Vec<String>,
    #[serde(default)]
    ignore_missing: bool,
}

pub(crate) struct Convert {
    conversions: Vec<(FieldPath, Option<FieldPath>, TargetType)>,
    formats: Vec<DateFormat>,
    ignore_missing: bool,
}

impl StepConfig for ConvertConfig {
    const NAME: &'static str = "convert";
    type Step = Convert;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Convert, ConfigError> {
        let conversions = match (self.fields, self.field, self.to_type) {
            (Some(list), None, None) if !list.is_empty() => list
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    let origin = origin.child("fields").child(index);
                    let to = item.to.map(|to| path_at(&to, &origin.child("to"))).transpose()?;
                    Ok((path_at(&item.from, &origin.child("from"))?, to, item.to_type))
                })
                .collect::<Result<Vec<_>, ConfigError>>()?,
            (None, Some(field), Some(to_type)) => {
                let to = self
                    .target_field
                    .map(|to| path_at(&to, &origin.child("target_field")))
                    .transpose()?;
                vec![(path_at(&field, &origin.child("field"))?, to, to_type)]
            }
            _ => return Err(origin.error("give either `fields: [{from, to, type}]` or `field` and `type`")),
        };
        Ok(Convert {
            conversions,
            formats: date_formats(&self.formats),
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for Convert {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        for (from, to, to_type) in &self.conversions {
            match to {
                // Converted where it is: one walk to the value, not two.
                None => match event.get_mut(from) {
                    None | Some(Value::Null) if self.ignore_missing => {}
                    None | Some(Value::Null) => return Err(missing(from)),
                    Some(value) => *value = self.converted(value, *to_type)?,
                },
                Some(to) => {
                    let converted = match event.get(from) {
                        None | Some(Value::Null) if self.ignore_missing => continue,
                        None | Some(Value::Null) => return Err(missing(from)),
                        Some(value) => self.converted(value, *to_type)?,
                    };
                    write(event, to, converted)?;
                }
            }
        }
        Ok(ProcessOutcome::Keep)
    }
}

impl Convert {
    /// `value` as `to_type`; a list item by item.
    fn converted(&self, value: &Value, to_type: TargetType) -> Result<Value, ProcessorError> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(|item| convert_value(item, to_type, &self.formats))
                .collect::<Result<_, _>>()
                .map(Value::Array)
                .map_err(ProcessorError::new),
            value => convert_value(value, to_type, &self.formats).map_err(ProcessorError::new),
        }
    }
}

// ---------------------------------------------------------------- timestamp

/// `timestamp`: parses `field` with `layouts` (`UNIX`, `UNIX_MS`, `UNIX_US`,
/// `ISO8601`, or chrono patterns) into `target_field` (default `@timestamp`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimestampConfig {
    field: String,
    #[serde(default = "default_timestamp_target")]
    target_field: String,
    #[serde(default, alias = "formats")]
    layouts: Vec<String>,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_timestamp_target() -> String {
    "@timestamp".to_owned()
}

pub(crate) struct Timestamp {
    field: FieldPath,
    target: FieldPath,
    layouts: Vec<DateFormat>,
    ignore_missing: bool,
}

impl StepConfig for TimestampConfig {
    const NAME: &'static str = "timestamp";
    type Step = Timestamp;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<Timestamp, ConfigError> {
        Ok(Timestamp {
            field: path_at(&self.field, &origin.child("field"))?,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            layouts: date_formats(&self.layouts),
            ignore_missing: self.ignore_missing,
        })
    }
}

impl Step for Timestamp {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let value = match event.get(&self.field) {
            None | Some(Value::Null) if self.ignore_missing => return Ok(ProcessOutcome::Keep),
            None | Some(Value::Null) => return Err(missing(&self.field)),
            Some(value) => value,
        };
        let date = parse_date(value, &self.layouts)
            .ok_or_else(|| ProcessorError::new(format!("unable to parse date [{}]", display(value))))?;
        write(event, &self.target, Value::String(format_date(&date)))?;
        Ok(ProcessOutcome::Keep)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{chain, run};
    use serde_json::json;

    #[test]
    fn converts_types_like_elasticsearch() {
        let c = chain(json!([{"convert": {"fields": [
            {"from": "a", "type": "long"},
            {"from": "b", "to": "bb", "type": "boolean"},
            {"from": "c", "type": "float"},
            {"from": "d", "type": "string"},
            {"from": "e", "type": "ip"},
            {"from": "f", "type": "date", "to": "ff"},
        ]}}]));
        let out = run(
            &c,
            json!({"a": "3", "b": "TRUE", "c": "0.5", "d": 7, "e": "::1", "f": "1503930272"}),
        );
        assert_eq!(
            out,
            json!({"a": 3, "b": "TRUE", "bb": true, "c": 0.5, "d": "7", "e": "::1", "f": "1503930272",
                   "ff": "2017-08-28T14:24:32.000Z"})
        );
    }

    #[test]
    fn failed_conversion_marks_or_is_ignored() {
        let c = chain(json!([{"convert": {"field": "as", "type": "long"}}]));
        let out = run(&c, json!({"as": "AS1234"}));
        assert_eq!(
            out["error"]["message"],
            json!("convert: unable to convert [AS1234] to long")
        );
        assert_eq!(out["as"], json!("AS1234"), "the value stays as it was");
        let c = chain(json!([{"convert": {"field": "as", "type": "long", "ignore_failure": true}}]));
        assert_eq!(run(&c, json!({"as": "AS1234"})), json!({"as": "AS1234"}));
        let c = chain(json!([{"convert": {"field": "ip", "type": "ip", "drop_on_failure": true}}]));
        assert!(c
            .run(threatbeat_core::Event::from_value(json!({"ip": "10.0.0.0/8"})))
            .is_none());
    }

    #[test]
    fn a_list_is_converted_where_it_is_or_left_whole() {
        let c = chain(json!([{"convert": {"field": "ports", "type": "long"}}]));
        assert_eq!(
            run(&c, json!({"ports": ["80", 443]})),
            json!({"ports": [80, 443]})
        );
        let out = run(&c, json!({"ports": ["80", "http"]}));
        assert_eq!(
            out["ports"],
            json!(["80", "http"]),
            "no item changes when one fails"
        );
        assert_eq!(
            out["error"]["message"],
            json!("convert: unable to convert [http] to long")
        );
    }

    #[test]
    fn timestamp_layouts() {
        let c = chain(json!([
            {"timestamp": {"field": "t", "layouts": ["UNIX"]}},
            {"timestamp": {"field": "ms", "target_field": "m", "layouts": ["UNIX_MS"]}},
            {"timestamp": {"field": "us", "target_field": "u", "layouts": ["UNIX_US"]}},
            {"timestamp": {"field": "d", "target_field": "day", "layouts": ["%Y-%m-%d"]}},
            {"timestamp": {"field": "iso", "target_field": "i", "layouts": ["ISO8601"]}},
        ]));
        let out = run(
            &c,
            json!({"t": "1621588162", "ms": 1621588162123_i64, "us": "1621588162123456", "d": "2021-05-21",
                   "iso": "2021-05-21T11:09:22+02:00"}),
        );
        assert_eq!(out["@timestamp"], json!("2021-05-21T09:09:22.000Z"));
        assert_eq!(out["m"], json!("2021-05-21T09:09:22.123Z"));
        assert_eq!(out["u"], json!("2021-05-21T09:09:22.123Z"));
        assert_eq!(out["day"], json!("2021-05-21T00:00:00.000Z"));
        assert_eq!(out["i"], json!("2021-05-21T09:09:22.000Z"));
        let out = run(&c, json!({"t": "yesterday"}));
        assert_eq!(
            out["error"]["message"][0],
            json!("timestamp: unable to parse date [yesterday]")
        );
    }
}
