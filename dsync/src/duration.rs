//! Durations on the command line: `30s`, `500ms`, `2m`, `1h 30m`
//! (humantime's syntax), and a bare `0`.

use std::time::Duration;

/// clap value parser for a duration flag.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} has no unit: write e.g. {s}s or {s}ms"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 30s, 500ms, 2m)"))
}

/// Whole milliseconds, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for people: `1.5s`, `250ms`, `2m5s`.
pub fn show(d: Duration) -> String {
    let ms = ms(d);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = ms as f64 / 1000.0;
        if ms >= 10_000 {
            format!("{}s", (ms + 500) / 1000)
        } else if ms % 1000 == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{s:.1}s")
        }
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000))
            .to_string()
            .replace(' ', "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn shows_short_forms() {
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_secs(30)), "30s");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show(Duration::from_secs(125)), "2m5s");
    }
}
