//! Secret masking of step output. Output arrives in chunks of bytes that can cut a line (and a
//! secret) anywhere; [`LineSplitter`] reassembles lines first, then [`Masker`] replaces every
//! secret in a whole line, so a value split across two writes is still found. A multi-line value
//! is masked line by line, and the forms `sh -x` prints of a value (quoted) are masked too.
//!
//! Programs print secrets in other forms than as they are, so each value of at least
//! [`MIN_ENCODED_LEN`] characters is also masked as: base64 (standard and URL-safe alphabets,
//! at each of the three byte offsets it can have inside a longer base64 text, so it is found
//! wherever it stands in an encoded blob), hex (lower and upper case), upper and lower case,
//! URL-encoded (`%2F`, `%2f`, `+` for spaces), JSON-escaped (`\"`, `\\`, `\/`, `\uXXXX`) and
//! HTML-escaped (`&amp;`, `&quot;`, `&#39;`…). Not masked: other encodings (gzip, encryption,
//! ROT13, …), a value printed in pieces shorter than [`MIN_SPLIT_LEN`], and shorter values in
//! encoded form.
//!
//! A value printed in two pieces that end up on two lines — half on stdout and half on stderr,
//! which are split into lines each on its own — is caught at the lines' edges: a line that ends
//! with the start of a value, or starts with its end, has that piece masked, when the piece
//! has at least [`MIN_SPLIT_LEN`] characters (and the value at least [`MIN_ENCODED_LEN`]).

use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "***";
/// Pieces of a multi-line secret shorter than this are not masked on their own (masking every
/// `}` in a log would hide everything and protect nothing).
pub const MIN_PIECE_LEN: usize = 3;
/// Values shorter than this are masked only as written: encoded, a short value would match
/// ordinary text.
pub const MIN_ENCODED_LEN: usize = 6;
/// A piece of a value at a line's edge shorter than this is not masked.
pub const MIN_SPLIT_LEN: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a value is masked whole before any of its pieces.
    patterns: Vec<String>,
    /// Single-line values long enough to be looked for in pieces at line edges.
    whole: Vec<String>,
    /// All patterns in one automaton: a line is scanned once to learn whether any is in it
    /// (most lines hold none), however many forms each secret has.
    any: Option<aho_corasick::AhoCorasick>,
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut whole: Vec<String> = Vec::new();
        let mut add = |p: String, min: usize| {
            if p.chars().count() >= min && !patterns.contains(&p) {
                patterns.push(p);
            }
        };
        for value in values {
            let trimmed = value.trim_end_matches(['\n', '\r']);
            if trimmed.is_empty() {
                continue;
            }
            if trimmed.contains(['\n', '\r']) {
                for piece in trimmed.split(['\n', '\r']) {
                    add(piece.to_string(), MIN_PIECE_LEN);
                    add(piece.trim().to_string(), MIN_PIECE_LEN);
                }
            } else {
                add(trimmed.to_string(), 1);
            }
            // How shells print a value holding a single quote under `set -x`.
            if trimmed.contains('\'') && !trimmed.contains('\n') {
                add(trimmed.replace('\'', "'\\''"), 1);
                add(trimmed.replace('\'', "'\"'\"'"), 1);
            }
            if trimmed.chars().count() >= MIN_ENCODED_LEN && !trimmed.contains(['\n', '\r']) {
                whole.push(trimmed.to_string());
            }
            if trimmed.chars().count() >= MIN_ENCODED_LEN {
                for form in encoded_forms(trimmed) {
                    add(form, MIN_ENCODED_LEN);
                }
            }
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let any = (!patterns.is_empty())
            .then(|| aho_corasick::AhoCorasick::new(&patterns).ok())
            .flatten();
        Self {
            patterns,
            whole,
            any,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The length in bytes of the longest pattern (0 when there is none).
    pub fn longest(&self) -> usize {
        self.patterns.first().map_or(0, String::len)
    }

    /// The line with every secret replaced by [`MASK`].
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(line);
        if self.any.as_ref().is_none_or(|a| a.is_match(line)) {
            for p in &self.patterns {
                if out.contains(p.as_str()) {
                    out = Cow::Owned(out.replace(p.as_str(), MASK));
                }
            }
        }
        for v in &self.whole {
            if let Some(k) = piece_at_end(&out, v) {
                let keep = out.len() - k;
                out = Cow::Owned(format!("{}{MASK}", &out[..keep]));
            }
            if let Some(k) = piece_at_start(&out, v) {
                out = Cow::Owned(format!("{MASK}{}", &out[k..]));
            }
        }
        out
    }

    /// Where a long partial line may be cut without cutting through a secret: the largest cut
    /// `<= want` such that no occurrence of a pattern starts before it and ends after it.
    fn safe_cut(&self, text: &str, want: usize) -> usize {
        let mut cut = want;
        for p in &self.patterns {
            let mut from = 0;
            while let Some(i) = text[from..].find(p.as_str()) {
                let start = from + i;
                let end = start + p.len();
                if start < cut && end > cut {
                    cut = start;
                }
                from = start + 1;
                while !text.is_char_boundary(from) {
                    from += 1;
                }
                if from >= text.len() {
                    break;
                }
            }
        }
        cut
    }
}

/// The length in bytes of the longest start of `value` (at least [`MIN_SPLIT_LEN`] characters,
/// not all of it) that `line` ends with.
fn piece_at_end(line: &str, value: &str) -> Option<usize> {
    let last = *line.as_bytes().last()?;
    let bytes = value.as_bytes();
    (1..value.len()).rev().find(|&k| {
        bytes[k - 1] == last
            && value.is_char_boundary(k)
            && value[..k].chars().count() >= MIN_SPLIT_LEN
            && line.ends_with(&value[..k])
    })
}

/// The length in bytes of the longest end of `value` (at least [`MIN_SPLIT_LEN`] characters,
/// not all of it) that `line` starts with.
fn piece_at_start(line: &str, value: &str) -> Option<usize> {
    let first = *line.as_bytes().first()?;
    let bytes = value.as_bytes();
    (1..value.len()).find_map(|i| {
        (bytes[i] == first
            && value.is_char_boundary(i)
            && value[i..].chars().count() >= MIN_SPLIT_LEN
            && line.starts_with(&value[i..]))
        .then(|| value.len() - i)
    })
}

/// The forms a value takes when a program encodes it (see the module's list).
fn encoded_forms(value: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let bytes = value.as_bytes();
    let mut forms = vec![value.to_uppercase(), value.to_lowercase()];
    forms.push(hex(bytes, false));
    forms.push(hex(bytes, true));
    // Base64: with `k` bytes before the value in its 3-byte group, only the characters whose six
    // bits all come from the value are the same in every encoding that holds it.
    for k in 0..3usize {
        let mut padded = vec![0u8; k];
        padded.extend_from_slice(bytes);
        padded.extend_from_slice(&[0, 0]);
        let first = (8 * k).div_ceil(6);
        let last = 8 * (k + bytes.len()) / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            if let Some(stable) = encoded.get(first..last) {
                forms.push(stable.to_string());
            }
        }
    }
    let url = |upper: bool, plus: bool| {
        let mut out = String::new();
        for &b in bytes {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' if plus => out.push('+'),
                _ if upper => out.push_str(&format!("%{b:02X}")),
                _ => out.push_str(&format!("%{b:02x}")),
            }
        }
        out
    };
    forms.extend([
        url(true, false),
        url(false, false),
        url(true, true),
        url(false, true),
    ]);
    let json = |slash: bool, ascii: bool| {
        let mut out = String::new();
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if slash => out.push_str("\\/"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    };
    forms.extend([
        json(false, false),
        json(true, false),
        json(false, true),
        json(true, true),
    ]);
    let html = value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    forms.push(html.replace('\'', "&#39;"));
    forms.push(html.replace('\'', "&#x27;"));
    forms.retain(|f| f != value);
    forms
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// Splits a byte stream into lines. Lines end at `\n`, `\r\n` or a lone `\r` (progress bars);
/// a line longer than `max_line` bytes is emitted in pieces, each cut where no secret is cut.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    after_cr: bool,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line: max_line.max(64),
            after_cr: false,
        }
    }

    /// Feeds a chunk; returns the complete lines (masked) it finished.
    pub fn push(&mut self, chunk: &[u8], masker: &Masker) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    lines.push(self.take_line(masker));
                }
                _ => {
                    self.after_cr = false;
                    self.buf.push(b);
                    if self.buf.len() >= self.max_line + masker.longest() {
                        lines.push(self.take_partial(masker));
                    }
                }
            }
        }
        lines
    }

    /// The unfinished last line, if any (call at end of stream).
    pub fn finish(&mut self, masker: &Masker) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take_line(masker))
    }

    fn take_line(&mut self, masker: &Masker) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        masker.mask(&text).into_owned()
    }

    fn take_partial(&mut self, masker: &Masker) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        let mut want = self.max_line.min(text.len());
        while !text.is_char_boundary(want) {
            want -= 1;
        }
        let cut = masker.safe_cut(&text, want).max(1);
        let (head, tail) = text.split_at(cut);
        let out = masker.mask(head).into_owned();
        self.buf = tail.as_bytes().to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> Vec<String> {
        let masker = Masker::new(secrets.iter().copied());
        let mut split = LineSplitter::new(64);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(split.push(c.as_bytes(), &masker));
        }
        out.extend(split.finish(&masker));
        out
    }

    #[test]
    fn masks_values_split_across_chunks() {
        assert_eq!(
            run(&["hunter2"], &["pass=hun", "ter2 ok\n"]),
            ["pass=*** ok"]
        );
        assert_eq!(
            run(&["hunter2"], &["h", "u", "n", "t", "e", "r", "2"]),
            ["***"]
        );
    }

    #[test]
    fn masks_multi_line_values_line_by_line() {
        let key = "-----BEGIN KEY-----\nabcdef123456\n-----END KEY-----\n";
        assert_eq!(
            run(
                &[key],
                &["x\n-----BEGIN KEY-----\nabcdef123456\n-----END KEY-----\ny\n"]
            ),
            ["x", "***", "***", "***", "y"]
        );
    }

    #[test]
    fn masks_set_x_quoting() {
        assert_eq!(
            run(&["it's secret"], &["+ echo 'it'\\''s secret'\n"]),
            ["+ echo '***'"]
        );
        assert_eq!(
            run(&["two words"], &["+ echo 'two words'\n"]),
            ["+ echo '***'"]
        );
    }

    #[test]
    fn handles_crlf_and_lone_cr() {
        assert_eq!(run(&[], &["a\r\nb\rc\n"]), ["a", "b", "c"]);
    }

    #[test]
    fn long_lines_are_cut_outside_secrets() {
        let secret = "S3CR3T-VALUE-XYZ";
        for offset in 0..80 {
            let line = format!("{}{}{}", "a".repeat(offset), secret, "b".repeat(100));
            let out = run(&[secret], &[&line]);
            let joined = out.concat();
            assert!(!joined.contains("S3CR3T"), "offset {offset}: {out:?}");
            assert!(joined.contains(MASK), "offset {offset}");
        }
    }

    /// Every form in which `line` must leave no recoverable copy of `secret`.
    fn hides(secret: &str, line: &str) {
        let masked = Masker::new([secret]).mask(line).into_owned();
        assert!(masked.contains(MASK), "{line:?} was not masked: {masked:?}");
        for form in std::iter::once(secret.to_string()).chain(encoded_forms(secret)) {
            assert!(
                !masked.contains(&form),
                "{form:?} of the secret is still in {masked:?}"
            );
        }
    }

    #[test]
    fn encoded_forms_of_a_secret_are_masked() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let secret = "s3cr3t/Value+with space&\"quotes\"é";
        // Base64 at every offset, inside longer encoded text, both alphabets.
        for prefix in ["", "a", "ab", "abc", "Authorization: Basic user:"] {
            for engine in [&STANDARD, &URL_SAFE] {
                let blob = engine.encode(format!("{prefix}{secret} and more"));
                hides(secret, &format!("token={blob}"));
            }
        }
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        hides(secret, &format!("dump: {hex}"));
        hides(secret, &format!("DUMP: {}", hex.to_uppercase()));
        hides(secret, &format!("shouting {}", secret.to_uppercase()));
        hides(
            secret,
            "url: https://x.test/?t=s3cr3t%2FValue%2Bwith%20space%26%22quotes%22%C3%A9",
        );
        hides(
            secret,
            "form: t=s3cr3t%2fValue%2bwith+space%26%22quotes%22%c3%a9",
        );
        hides(
            secret,
            r#"{"token":"s3cr3t\/Value+with space&\"quotes\"\u00e9"}"#,
        );
        hides(secret, r#"{"token":"s3cr3t/Value+with space&\"quotes\"é"}"#);
        hides(
            secret,
            "<b>s3cr3t/Value+with space&amp;&quot;quotes&quot;é</b>",
        );
    }

    #[test]
    fn a_value_split_over_two_lines_is_masked_at_their_edges() {
        let m = Masker::new(["hunter2-split-value"]);
        // Half on stdout, half on stderr: two lines.
        assert_eq!(m.mask("token: hunter2-s"), "token: ***");
        assert_eq!(m.mask("plit-value and more"), "*** and more");
        // Pieces too short to tell from ordinary text stay.
        assert_eq!(m.mask("a hun"), "a hun");
        assert_eq!(m.mask("lue."), "lue.");
        // Whole values and ordinary lines are as before.
        assert_eq!(m.mask("x hunter2-split-value y"), "x *** y");
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert_eq!(m.mask(""), "");
        // Multi-byte characters: pieces are cut on character boundaries.
        let u = Masker::new(["pässwörd-geheim"]);
        assert_eq!(u.mask("x pässw"), "x ***");
        assert_eq!(u.mask("örd-geheim!"), "***!");
    }

    #[test]
    fn short_values_are_masked_only_as_written() {
        let m = Masker::new(["abc"]);
        assert_eq!(m.mask("abc YWJj 616263 ABC"), "*** YWJj 616263 ABC");
    }

    #[test]
    fn longest_value_wins_over_its_pieces() {
        assert_eq!(run(&["abc", "abcdef"], &["abcdef abc\n"]), ["*** ***"]);
    }
}
