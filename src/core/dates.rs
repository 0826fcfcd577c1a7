//! Dates for the `date:<format>` mapping transform and the `date` template filter:
//! parsing the shapes events carry (RFC 3339, ISO, JavaScript `Date.toString()`,
//! epoch seconds or milliseconds) and formatting them with strftime, in UTC. Both
//! `mapping` and `template` use it, so neither depends on the other for dates.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use serde_json::Value;

/// Refuse a strftime format that is empty, invalid, or cannot be displayed.
pub fn check_date_format(fmt: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if fmt.is_empty() {
        return Err("date: the format is empty (e.g. date:%Y-%m-%d)".into());
    }
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        return Err(format!("date: \"{fmt}\" is not a valid strftime format"));
    }
    // Some specifiers parse but cannot be displayed (`%#z` is for parsing only):
    // chrono then fails inside `Display`, which `to_string` turns into a panic.
    write_date(&DateTime::<Utc>::UNIX_EPOCH, fmt)
        .map(|_| ())
        .map_err(|()| format!("date: \"{fmt}\" cannot be used to format a date"))
}

fn write_date(dt: &DateTime<Utc>, fmt: &str) -> Result<String, ()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    write!(out, "{}", dt.format(fmt)).map_err(|_| ())?;
    Ok(out)
}

/// Parse a date (RFC 3339, ISO date/datetime, JavaScript `Date.toString()`, or epoch
/// seconds/milliseconds) and format it with a strftime `fmt`, in UTC.
pub fn format_date(v: &Value, fmt: &str) -> Result<String, String> {
    check_date_format(fmt)?;
    let dt = parse_date(v).ok_or_else(|| format!("date: cannot read {v} as a date"))?;
    write_date(&dt, fmt).map_err(|()| format!("date: \"{fmt}\" cannot be used to format a date"))
}

fn parse_date(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64()?;
            // Heuristic shared with most CDPs: values past year 5138 in seconds are milliseconds.
            let ms = if f.abs() >= 1e11 { f } else { f * 1000.0 };
            Utc.timestamp_millis_opt(ms as i64).single()
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                return Some(d.with_timezone(&Utc));
            }
            if let Ok(d) = DateTime::parse_from_rfc2822(s) {
                return Some(d.with_timezone(&Utc));
            }
            for f in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S",
            ] {
                if let Ok(d) = NaiveDateTime::parse_from_str(s, f) {
                    return Some(d.and_utc());
                }
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
            }
            // JavaScript's Date.toString(): "Thu Mar 24 2016 17:46:45 GMT+0000 (UTC)".
            let js = s.split(" (").next().unwrap_or(s);
            if let Ok(d) = DateTime::parse_from_str(js, "%a %b %d %Y %H:%M:%S GMT%z") {
                return Some(d.with_timezone(&Utc));
            }
            s.parse::<f64>().ok().and_then(|f| {
                parse_date(&serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number))
            })
        }
        _ => None,
    }
}
