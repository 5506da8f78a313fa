//! Durations as people write them in pipeline files: `500ms`, `30s`, `10m`, `1h30m`, `2d`.

use std::time::Duration;

/// Parses `1h30m`, `45s`, `250ms`. A bare number is refused: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.contains(char::is_whitespace) {
        let joined: String = s.split_whitespace().collect();
        return Err(match parse_duration(&joined) {
            Ok(_) => format!("`{text}` has spaces in it: write `{joined}`"),
            Err(_) => format!("`{text}` is not a duration: write it without spaces, like `1h30m`"),
        });
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number at `{rest}`"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86400)),
            "" => {
                return Err(format!(
                    "`{text}` has no unit: write `{value}s`, `{value}m` or `{value}h`"
                ));
            }
            other => {
                return Err(format!(
                    "`{text}` has an unknown unit `{other}`: use ms, s, m, h or d"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Prints a duration the short way back: `1h30m`, `45s`, `1.25s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let tenths = (ms % 1000) / 10;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths:02}s")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<u64, &str>) {
        let got = parse_duration(input).map(|d| d.as_millis() as u64);
        match expect {
            Ok(ms) => assert_eq!(got, Ok(ms), "{input}"),
            Err(fragment) => {
                let err = got.expect_err(input);
                assert!(err.contains(fragment), "{input}: {err}");
            }
        }
    }

    #[test]
    fn parses() {
        check("10m", Ok(600_000));
        check("1h30m", Ok(5_400_000));
        check("250ms", Ok(250));
        check("2d", Ok(172_800_000));
        check(" 5s ", Ok(5_000));
        check("10", Err("has no unit"));
        check("10 s", Err("has spaces in it: write `10s`"));
        check("1h 30 m", Err("write `1h30m`"));
        check("10x", Err("unknown unit `x`"));
        check("m", Err("expected a number"));
        check("", Err("empty"));
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
