//! Field primitives shared by the pipeline checker (YAML) and the server config checker (TOML):
//! what a value must look like and what to say when it does not. Each checker reads its own
//! syntax tree and reports the problem at its own position; the wording lives here once.

use crate::diagnostic::suggest;
use gantry_model::duration::parse_duration;
use std::time::Duration;

/// What is wrong with a value, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    fn new(message: impl Into<String>, help: Option<String>) -> Self {
        Self {
            message: message.into(),
            help,
        }
    }
}

/// A key that `known` does not list, in `what` ("a job", "[[projects]]"). Also returns the key
/// it was probably taken for, if any.
pub(crate) fn unknown_key<'k>(
    name: &str,
    known: &[&'k str],
    what: &str,
) -> (Problem, Option<&'k str>) {
    let guess = suggest(name, known.iter().copied());
    let help = match guess {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("known keys: {}", known.join(", ")),
    };
    (
        Problem::new(format!("unknown key `{name}` in {what}"), Some(help)),
        guess,
    )
}

/// A duration such as `90s` or `1h30m`; `examples` is the hint in this file's own syntax.
/// Zero is refused unless `zero_ok`.
pub(crate) fn duration(text: &str, zero_ok: bool, examples: &str) -> Result<Duration, Problem> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() && !zero_ok => {
            Err(Problem::new("a duration must be greater than zero", None))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(Problem::new(
            format!("invalid duration: {e}"),
            Some(format!("examples: {examples}")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_suggest_the_nearest_known_one() {
        let (p, guess) = unknown_key("step", &["steps", "run"], "a job");
        assert_eq!(p.message, "unknown key `step` in a job");
        assert_eq!(p.help.as_deref(), Some("did you mean `steps`?"));
        assert_eq!(guess, Some("steps"));
        let (p, guess) = unknown_key("zzz", &["steps", "run"], "a job");
        assert_eq!(p.help.as_deref(), Some("known keys: steps, run"));
        assert_eq!(guess, None);
    }

    #[test]
    fn durations_refuse_zero_only_where_asked() {
        assert_eq!(duration("90s", false, "x"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("0s", true, "x"), Ok(Duration::ZERO));
        let zero = duration("0s", false, "x").unwrap_err();
        assert_eq!(zero.message, "a duration must be greater than zero");
        let bad = duration("soon", true, "90s, 10m").unwrap_err();
        assert!(bad.message.starts_with("invalid duration: "), "{bad:?}");
        assert_eq!(bad.help.as_deref(), Some("examples: 90s, 10m"));
    }
}
