//! `ioc_expiration`: when an indicator stops being active, as Elastic's
//! `ti_misp` `threat_attributes` pipeline computes it.
//!
//! * If the attribute carries MISP decay scores and at least half of the
//!   models say `decayed: true`, it is decayed now: `decayed = true`,
//!   `decayed_at = now - 2 minutes` (so a `latest` transform's retention
//!   removes it at once).
//! * Otherwise `decayed_at = max(timestamp fields) + duration` and
//!   `decayed = decayed_at < now`.
//!
//! The duration (`90d`, `12h`, `30m`) is checked when the pipeline is built;
//! Elastic falls back to 90 days at run time instead.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{path_at, paths_at, write, Step, StepConfig};
use crate::convert::{format_date, parse_date, DateFormat};

/// `ioc_expiration` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IocExpirationConfig {
    /// Fields holding the indicator's last activity (epoch seconds or ISO dates); the latest wins.
    timestamp_fields: Vec<String>,
    /// How long an indicator stays active after its last activity.
    duration: String,
    /// A list of `{decayed: bool, ...}` decay-model results (MISP `decay_score`).
    decay_scores_field: Option<String>,
    target_field: String,
    decayed_field: String,
}

pub(crate) struct IocExpiration {
    timestamp_fields: Vec<FieldPath>,
    duration: Duration,
    decay_scores: Option<FieldPath>,
    target: FieldPath,
    decayed: FieldPath,
    formats: Vec<DateFormat>,
}

/// Parses `90d`, `12h`, `30m`.
pub(crate) fn parse_expiration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let amount: i64 = number.parse().ok().filter(|amount| *amount >= 0)?;
    match unit {
        "d" => Duration::try_days(amount),
        "h" => Duration::try_hours(amount),
        "m" => Duration::try_minutes(amount),
        _ => None,
    }
}

impl StepConfig for IocExpirationConfig {
    const NAME: &'static str = "ioc_expiration";
    type Step = IocExpiration;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<IocExpiration, ConfigError> {
        let duration = parse_expiration(&self.duration).ok_or_else(|| {
            origin.child("duration").error(format!(
                "`{}` is not a duration such as 90d, 12h or 30m",
                self.duration
            ))
        })?;
        let timestamp_fields = paths_at(&self.timestamp_fields, &origin.child("timestamp_fields"))?;
        if timestamp_fields.is_empty() {
            return Err(origin
                .child("timestamp_fields")
                .error("list at least one timestamp field"));
        }
        Ok(IocExpiration {
            timestamp_fields,
            duration,
            decay_scores: self
                .decay_scores_field
                .map(|raw| path_at(&raw, &origin.child("decay_scores_field")))
                .transpose()?,
            target: path_at(&self.target_field, &origin.child("target_field"))?,
            decayed: path_at(&self.decayed_field, &origin.child("decayed_field"))?,
            formats: vec![DateFormat::Unix, DateFormat::Iso8601],
        })
    }
}

impl IocExpiration {
    /// Decides for `event` as of `now`.
    fn decide(&self, event: &mut Event, now: DateTime<Utc>) -> Result<(), ProcessorError> {
        if let Some(scores) = self
            .decay_scores
            .as_ref()
            .and_then(|path| event.get(path)?.as_array())
        {
            if !scores.is_empty() {
                let decayed = scores
                    .iter()
                    .filter(|score| score.get("decayed") == Some(&Value::Bool(true)))
                    .count();
                if decayed as f64 >= scores.len() as f64 / 2.0 {
                    write(event, &self.decayed, Value::Bool(true))?;
                    write(
                        event,
                        &self.target,
                        Value::String(format_date(&(now - Duration::minutes(2)))),
                    )?;
                    return Ok(());
                }
            }
        }
        let latest = self
            .timestamp_fields
            .iter()
            .filter_map(|path| event.get(path))
            .filter_map(|value| parse_date(value, &self.formats))
            .max()
            .ok_or_else(|| {
                ProcessorError::new(format!(
                    "no parsable date in {}",
                    self.timestamp_fields
                        .iter()
                        .map(FieldPath::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        // A date near the end of chrono's range (year 262142) plus the
        // duration does not exist: such a record never expires.
        let decayed_at = latest
            .checked_add_signed(self.duration)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        write(event, &self.target, Value::String(format_date(&decayed_at)))?;
        write(event, &self.decayed, Value::Bool(decayed_at < now))?;
        Ok(())
    }
}

impl Step for IocExpiration {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        self.decide(event, Utc::now())?;
        Ok(ProcessOutcome::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{chain, run};
    use serde_json::json;

    fn expiry(duration: &str) -> serde_json::Value {
        json!([{"ioc_expiration": {
            "timestamp_fields": ["a.timestamp", "a.last_seen"], "duration": duration,
            "decay_scores_field": "a.decay_score", "target_field": "a.decayed_at", "decayed_field": "a.decayed"
        }}])
    }

    #[test]
    fn expires_after_the_latest_activity() {
        let c = chain(expiry("90d"));
        let out = run(
            &c,
            json!({"a": {"timestamp": "1621588162", "last_seen": "2021-06-01T00:00:00.000000+00:00"}}),
        );
        assert_eq!(out["a"]["decayed_at"], json!("2021-08-30T00:00:00.000Z"));
        assert_eq!(out["a"]["decayed"], json!(true), "2021 + 90 days is in the past");
        let future = (Utc::now().timestamp() + 3600).to_string();
        let out = run(&c, json!({"a": {"timestamp": future}}));
        assert_eq!(out["a"]["decayed"], json!(false));
    }

    #[test]
    fn decay_models_majority_decays_now() {
        let c = chain(expiry("12h"));
        let now = Utc::now();
        let out = run(
            &c,
            json!({"a": {"timestamp": (now.timestamp() + 10_000).to_string(),
                         "decay_score": [{"decayed": true}, {"decayed": false}]}}),
        );
        assert_eq!(out["a"]["decayed"], json!(true));
        let at = DateTime::parse_from_rfc3339(out["a"]["decayed_at"].as_str().unwrap()).unwrap();
        assert!(at < now, "decayed_at is set just before now");
        let out = run(
            &c,
            json!({"a": {"timestamp": (now.timestamp() + 10_000).to_string(),
                         "decay_score": [{"decayed": true}, {"decayed": false}, {"decayed": false}]}}),
        );
        assert_eq!(
            out["a"]["decayed"],
            json!(false),
            "a minority of models is not enough"
        );
    }

    #[test]
    fn a_date_at_the_end_of_time_does_not_overflow() {
        let c = chain(expiry("90d"));
        // Near the largest time chrono holds (year 262142): + 90 days overflows.
        let end = (DateTime::<Utc>::MAX_UTC.timestamp() - 10).to_string();
        let out = run(&c, json!({"a": {"timestamp": end}}));
        assert_eq!(out["a"]["decayed"], json!(false), "{out}");
    }

    #[test]
    fn durations_are_checked_at_build_time() {
        assert_eq!(parse_expiration("30m"), Some(Duration::minutes(30)));
        assert_eq!(parse_expiration("2w"), None);
        let error = crate::test_util::build_error(expiry("90 days"));
        assert_eq!(error.key, "processors.0.ioc_expiration.duration");
    }
}
