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
            self.file, d.pos.line, d.pos.col, d.message
        )?;
        if let Some(line) = self.source.lines().nth(d.pos.line.saturating_sub(1)) {
            let num = d.pos.line.to_string();
            let pad = " ".repeat(num.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {}", line.trim_end())?;
            let indent: String = line
                .chars()
                .take(d.pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {indent}{}", "^".repeat(d.width.max(1)))?;
            if let Some(help) = &d.help {
                writeln!(f, "{pad} = help: {help}")?;
            }
        } else if let Some(help) = &d.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
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
