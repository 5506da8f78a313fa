//! A run's own variables: the names gantry sets for what started the run, and the rules for
//! the ones a person gives (`gantry trigger --var K=V`).

/// The tag of a tag run.
pub const TAG: &str = "GANTRY_TAG";
/// The number of the pull (merge) request a run is of.
pub const PR: &str = "GANTRY_PR";
/// The branch the pull request would merge into.
pub const PR_BASE: &str = "GANTRY_PR_BASE";
/// The pull request's own branch.
pub const PR_HEAD: &str = "GANTRY_PR_HEAD";
/// `true` when the pull request comes from a fork: such a run gets no secrets.
pub const PR_FORK: &str = "GANTRY_PR_FORK";

/// The schedule (its cron expression) that started a run.
pub const SCHEDULE: &str = "GANTRY_SCHEDULE";
/// The tick of the schedule that started a run, in RFC 3339 (UTC).
pub const SCHEDULED_AT: &str = "GANTRY_SCHEDULED_AT";

/// The most variables one trigger may give, and the longest value.
pub const MAX_GIVEN: usize = 64;
pub const MAX_VALUE_BYTES: usize = 4096;

/// Whether `name` may be given by a person: a variable name (`[A-Za-z_][A-Za-z0-9_]*`, at
/// most 128 bytes) that is not gantry's own (`GANTRY_*`, `CI`), so that nobody can pretend a
/// run is of a tag or of a fork's pull request.
pub fn check_given(name: &str, value: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(format!(
            "`{}` is not a variable name: letters, digits and _, not starting with a digit",
            name.chars().take(130).collect::<String>()
        ));
    }
    if name.to_ascii_uppercase().starts_with("GANTRY_") || name == "CI" {
        return Err(format!(
            "`{name}` is gantry's own variable: name yours otherwise"
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value of `{name}` is {} bytes; at most {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of `{name}` holds a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_given;

    #[test]
    fn given_variables() {
        let cases: &[(&str, &str, bool)] = &[
            ("VERSION", "1.2", true),
            ("_x9", "", true),
            ("deploy_note", "hello world", true),
            ("", "x", false),
            ("9LIVES", "x", false),
            ("A-B", "x", false),
            ("A B", "x", false),
            ("GANTRY_TAG", "v1", false),
            ("gantry_pr_fork", "false", false),
            ("CI", "false", false),
            ("OK", "a\0b", false),
        ];
        for (name, value, ok) in cases {
            assert_eq!(check_given(name, value).is_ok(), *ok, "{name}={value:?}");
        }
        assert!(check_given("BIG", &"x".repeat(5000)).is_err());
        assert!(check_given(&"N".repeat(129), "x").is_err());
    }
}
