//! Errors and warnings about a configuration file, each with its position and the field it is
//! about, rendered the way compilers do: a `file:line:col:` first line editors can jump to, the
//! source line with a caret under the spot, and a help line.

use crate::yaml::Pos;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub pos: Pos,
    /// Characters to underline from `pos` (at least one caret is drawn).
    pub width: usize,
    /// The field, as a path: `stages[test].jobs[unit].timeout`.
    pub field: String,
    pub message: String,
    pub help: Option<String>,
}

/// Every diagnostic of one file, with the source to quote from.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub source: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    fn render(&self, d: &Diagnostic, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let field = if d.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", d.field)
        };
        writeln!(
            f,
            "{}:{}:{}: {kind}: {field}{}",
            self.file,
            d.pos.line,
            d.pos.col,
            shorten(&d.message, MAX_MESSAGE)
        )?;
        if let Some(line) = self.source.lines().nth(d.pos.line.saturating_sub(1)) {
            let num = d.pos.line.to_string();
            let pad = " ".repeat(num.len());
            let (shown, col) = window(line.trim_end(), d.pos.col);
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {shown}")?;
            let indent: String = shown
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let width = d.width.clamp(1, WINDOW);
            writeln!(f, "{pad} | {indent}{}", "^".repeat(width))?;
            if let Some(help) = &d.help {
                writeln!(f, "{pad} = help: {help}")?;
            }
        } else if let Some(help) = &d.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// Characters of a source line quoted around the spot; a longer line is cut to this many.
const WINDOW: usize = 120;
/// Characters of a message shown (a message can quote a value of any length).
const MAX_MESSAGE: usize = 400;

/// The part of `line` to quote so that column `col` shows, and the column within it: the
/// whole line when short, else `WINDOW` characters around the column with `…` at the cuts.
fn window(line: &str, col: usize) -> (String, usize) {
    let count = line.chars().count();
    if count <= WINDOW {
        return (line.to_string(), col);
    }
    let start = col
        .saturating_sub(WINDOW / 2)
        .min(count.saturating_sub(WINDOW));
    let mut shown: String = line.chars().skip(start).take(WINDOW).collect();
    let mut col = col - start;
    if start > 0 {
        shown.insert(0, '…');
        col += 1;
    }
    if start + WINDOW < count {
        shown.push('…');
    }
    (shown, col)
}

/// `text` cut to `max` characters, saying how much was left out.
fn shorten(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} more characters)", count - max)
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            self.render(d, f)?;
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        if errors > 0 {
            let s = if errors == 1 { "" } else { "s" };
            writeln!(f, "\n{errors} error{s} in {}", self.file)?;
        } else if warnings > 0 {
            let s = if warnings == 1 { "" } else { "s" };
            writeln!(f, "\n{warnings} warning{s} in {}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to a misspelled `word`, if one is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_l = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word_l, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(dist, c)| *dist <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("step", ["steps", "run", "name"]), Some("steps"));
        assert_eq!(suggest("stage", ["stages", "env"]), Some("stages"));
        assert_eq!(suggest("timout", ["timeout", "retries"]), Some("timeout"));
        assert_eq!(suggest("zzz", ["steps", "run"]), None);
    }
}
