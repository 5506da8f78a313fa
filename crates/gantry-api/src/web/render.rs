//! What pages show, made into text: ANSI colours as HTML, durations, sizes, times, and the
//! small charts drawn as inline SVG. Pure functions, tested here.

use std::fmt::Write;

/// `text` with `&<>"'` escaped for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A log line's text as HTML: escaped, with SGR colours (30–37, 90–97) and bold as spans of
/// classes `c0`–`c15` and `b`; every other escape sequence is dropped.
pub fn ansi_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut colour: Option<u8> = None;
    let mut bold = false;
    let mut open = false;
    let mut chars = text.chars().peekable();
    let mut plain = String::new();
    let flush = |out: &mut String, plain: &mut String| {
        out.push_str(&escape(plain));
        plain.clear();
    };
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        flush(&mut out, &mut plain);
        if chars.peek() != Some(&'[') {
            chars.next();
            continue;
        }
        chars.next();
        let mut params = String::new();
        let mut end = None;
        for p in chars.by_ref() {
            if p.is_ascii_digit() || p == ';' {
                params.push(p);
            } else {
                end = Some(p);
                break;
            }
        }
        if end != Some('m') {
            continue;
        }
        for code in params.split(';') {
            match code.parse::<u8>().unwrap_or(0) {
                0 => {
                    colour = None;
                    bold = false;
                }
                1 => bold = true,
                22 => bold = false,
                39 => colour = None,
                n @ 30..=37 => colour = Some(n - 30),
                n @ 90..=97 => colour = Some(n - 90 + 8),
                _ => {}
            }
        }
        if open {
            out.push_str("</span>");
            open = false;
        }
        if colour.is_some() || bold {
            out.push_str("<span class=\"");
            if let Some(c) = colour {
                let _ = write!(out, "c{c}");
            }
            if bold {
                out.push_str(if colour.is_some() { " b" } else { "b" });
            }
            out.push_str("\">");
            open = true;
        }
    }
    flush(&mut out, &mut plain);
    if open {
        out.push_str("</span>");
    }
    out
}

/// `1.2 s`, `3 min 4 s`, `2 h 5 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

/// How long ago `at` was, from `now` (milliseconds since the epoch).
pub fn ago(at: i64, now: i64) -> String {
    let s = (now - at).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    if b < 1024.0 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// The first 12 hex digits of a `sha256:` digest.
pub fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// A line chart of `points` (x in any unit, increasing; y ≥ 0) as an inline SVG of `w`×`h`,
/// with `label` for screen readers and the last value written beside it.
pub fn sparkline(points: &[(f64, f64)], w: u32, h: u32, label: &str, last: &str) -> String {
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!("{label}: {last}"))
    );
    let _ = write!(
        svg,
        "<rect class=\"frame\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\"></rect>"
    );
    if points.len() >= 2 {
        let (x0, x1) = (points[0].0, points[points.len() - 1].0);
        let top = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let span = (x1 - x0).max(1e-9);
        let scale = if top > 0.0 { top } else { 1.0 };
        let mut coords = String::new();
        for (x, y) in points {
            let px = (x - x0) / span * f64::from(w);
            let py = f64::from(h) - 2.0 - (y / scale) * f64::from(h - 4);
            let _ = write!(coords, "{px:.1},{py:.1} ");
        }
        let _ = write!(
            svg,
            "<polyline class=\"line\" points=\"{}\"></polyline>",
            coords.trim_end()
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The split of traffic as one bar: `shares` are (label, percent, class) that sum to 100.
pub fn split_bar(shares: &[(String, u32, &str)]) -> String {
    let label = shares
        .iter()
        .map(|(l, p, _)| format!("{l} {p}%"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut svg = format!(
        "<svg class=\"split\" viewBox=\"0 0 100 8\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"traffic: {}\">",
        escape(&label)
    );
    let mut x = 0u32;
    for (_, p, class) in shares {
        let _ = write!(
            svg,
            "<rect class=\"{class}\" x=\"{x}\" y=\"0\" width=\"{p}\" height=\"8\"></rect>"
        );
        x += p;
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_becomes_spans_and_stays_escaped() {
        let cases = [
            ("plain <b>", "plain &lt;b&gt;"),
            (
                "\u{1b}[31mred\u{1b}[0m after",
                "<span class=\"c1\">red</span> after",
            ),
            ("\u{1b}[1;92mok\u{1b}[m", "<span class=\"c10 b\">ok</span>"),
            ("\u{1b}[2Kcleared", "cleared"),
            ("\u{1b}[33munclosed", "<span class=\"c3\">unclosed</span>"),
            (
                "\u{1b}[1mbold\u{1b}[22m no",
                "<span class=\"b\">bold</span> no",
            ),
            ("a\u{1b}", "a"),
        ];
        for (input, want) in cases {
            assert_eq!(ansi_html(input), want, "{input:?}");
        }
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(1_250), "1.2 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(ago(0, 90_000), "1 min ago");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(url_encode("/ui/runs/1?job=a b"), "/ui/runs/1%3Fjob%3Da%20b");
    }

    #[test]
    fn charts_are_labelled_svg() {
        let svg = sparkline(
            &[(0.0, 1.0), (1.0, 3.0), (2.0, 0.0)],
            100,
            20,
            "rate",
            "3/s",
        );
        assert!(svg.contains("aria-label=\"rate: 3/s\""), "{svg}");
        assert!(
            svg.contains("points=\"0.0,12.7 50.0,2.0 100.0,18.0\""),
            "{svg}"
        );
        let empty = sparkline(&[], 100, 20, "rate", "no data");
        assert!(!empty.contains("polyline"));
        let bar = split_bar(&[("stable".into(), 90, "s"), ("canary".into(), 10, "c")]);
        assert!(bar.contains("x=\"90\" y=\"0\" width=\"10\""), "{bar}");
    }
}
