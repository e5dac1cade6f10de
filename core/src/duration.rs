//! Durations as users write them: `30s`, `60m`, `24h`, `2d`, `1h30m`, `500ms`, or `0`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration accepted: 100 years. Longer ones are typing slips,
/// and would overflow the clock arithmetic they feed (`now - first_interval`).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `30s`, `60m`, `24h`, `2d`, `1h30m`, `250ms`; a bare `0` means zero.
/// Units: `ms`, `s`, `m` (minutes), `h`, `d`. At most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration; write e.g. `30s`, `60m`, `24h` or `2d`".to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number before `{rest}`"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: `{}` is not a number", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit (ms, s, m, h or d)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ))
            }
        };
        let part = Duration::try_from_secs_f64(number * seconds_per_unit)
            .map_err(|_| format!("invalid duration `{text}`: out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration `{text}`: out of range"))?;
        rest = &rest[unit_len..];
    }
    if total > MAX_DURATION {
        return Err(format!(
            "invalid duration `{text}`: longer than 100 years, the limit"
        ));
    }
    Ok(total)
}

/// Serde helper: a duration written as text (`60m`) or as a number of
/// seconds (`90`, `0.5`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|duration| *duration <= MAX_DURATION)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{seconds} is not a valid number of seconds (0 to 100 years)"
                ))
            }),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// Serde helper for an optional duration.
pub fn deserialize_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapper(#[serde(deserialize_with = "deserialize")] Duration);
    Option::<Wrapper>::deserialize(deserializer).map(|wrapper| wrapper.map(|Wrapper(duration)| duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_users_write() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_what_misp_would_silently_misread() {
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit `w`"));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999999d")
            .unwrap_err()
            .contains("out of range"));
        // Representable, but absurd: it used to wrap `now - first_interval` around.
        assert!(parse_duration("10000000000000000000s")
            .unwrap_err()
            .contains("100 years"));
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
    }

    #[test]
    fn numbers_are_seconds() {
        #[derive(Deserialize)]
        struct Setting(#[serde(deserialize_with = "deserialize")] Duration);
        let parse = |json: &str| serde_json::from_str::<Setting>(json).map(|Setting(duration)| duration);
        assert_eq!(parse("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("\"1m\"").unwrap(), Duration::from_secs(60));
        assert!(parse("-1").is_err());
    }
}
