//! `when:` and `if:` on a stage or a job: which branches, tags and events it runs for, and an
//! expression over the run's variables ([`gantry_model::expr`]).

use super::*;
use gantry_model::{Rules, TriggerEvent};

pub const WHEN_KEYS: &[&str] = &["branch", "tag", "event"];

impl Checker {
    /// `when: { branch: pattern | [patterns], tag: pattern | [patterns], event: name | [names] }`.
    /// Every condition given must hold; a list holds when any of its items does. Conditions
    /// that can never hold together (a branch and a tag; a tag and events without `tag`) are
    /// errors.
    pub(super) fn when(&mut self, node: &Node, path: &str) -> Option<Rules> {
        let what = "`when`";
        let fields = self.fields(node, path, what, WHEN_KEYS)?;
        if fields.entries.is_empty() {
            if fields.suggested.is_empty() {
                self.error(
                    node,
                    path,
                    "`when` names no condition",
                    Some(format!(
                        "give one of {}, or leave `when` out to run always",
                        WHEN_KEYS.join(", ")
                    )),
                );
            }
            return None;
        }
        let patterns = |c: &mut Self, key: &str| match fields.get(key) {
            Some(n) => c.conditions(n, &fields.field(key), key, |c, item, f, text| {
                match ref_pattern_problem(text, key) {
                    Some(problem) => {
                        c.error(item, f, problem, None);
                        None
                    }
                    None => Some(text.to_string()),
                }
            }),
            None => Some(Vec::new()),
        };
        let branches = patterns(self, "branch");
        let tags = patterns(self, "tag");
        let events = match fields.get("event") {
            Some(n) => self.conditions(n, &fields.field("event"), "event", |c, item, f, text| {
                let known = TriggerEvent::ALL.iter().map(|e| e.as_str());
                let parsed = text.parse::<TriggerEvent>().ok();
                if parsed.is_none() {
                    let lower = text.to_ascii_lowercase();
                    let help = if ["pr", "merge_request", "pull-request", "mr"].contains(&lower.as_str()) {
                        "did you mean `pull_request`? (GitLab's merge requests are pull_request runs too)".to_string()
                    } else {
                        match suggest(text, known.clone()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("events are {}", known.collect::<Vec<_>>().join(", ")),
                        }
                    };
                    c.error(item, f, format!("unknown event `{text}`"), Some(help));
                }
                parsed
            }),
            None => Some(Vec::new()),
        };
        let rules = Rules {
            branches: branches?,
            tags: tags?,
            events: events?,
            condition: None,
        };
        if let (Some(_), Some(tag)) = (fields.get("branch"), fields.get("tag")) {
            self.error(
                tag,
                &fields.field("tag"),
                "`branch` and `tag` never hold together: a run is of a branch or of a tag",
                Some("write two stages, or keep one of the two".into()),
            );
            return None;
        }
        if let Some(event) = fields.get("event")
            && !rules.tags.is_empty()
            && !rules.events.contains(&TriggerEvent::Tag)
        {
            self.error(
                event,
                &fields.field("event"),
                "a `tag` condition holds only for tag runs, and these events leave them out",
                Some("add `tag` to the events, or leave `event` out".into()),
            );
            return None;
        }
        Some(rules)
    }

    /// `when:` and `if:` of a stage or a job, together: `None` when neither is written (or
    /// either is wrong, which is reported).
    pub(super) fn rules_of(
        &mut self,
        when: Option<&Node>,
        cond: Option<&Node>,
        path: &str,
    ) -> Result<Option<Rules>, ()> {
        // Both are checked, so that the problems of both are said.
        let rules = when.map(|n| self.when(n, &join(path, "when")));
        let condition = cond.map(|n| self.condition(n, &join(path, "if")));
        match (rules, condition) {
            (Some(None), _) | (_, Some(None)) => Err(()),
            (None, None) => Ok(None),
            (rules, condition) => Ok(Some(Rules {
                condition: condition.flatten(),
                ..rules.flatten().unwrap_or_default()
            })),
        }
    }

    /// `if: "$GANTRY_BRANCH == 'main'"`: parsed, its problems at their column, and every
    /// `$GANTRY_*` it reads one that gantry sets.
    fn condition(&mut self, node: &Node, field: &str) -> Option<gantry_model::expr::Condition> {
        use gantry_model::expr::{Condition, Expr, KNOWN};
        let Value::Scalar { text, plain } = &node.value else {
            self.error(
                node,
                field,
                format!(
                    "`if` is an expression in a string, found {}",
                    node.kind_name()
                ),
                Some("for example if: \"$GANTRY_BRANCH == 'main'\"".into()),
            );
            return None;
        };
        // Where character `at` of the text is in the file (a quoted one starts after its quote).
        let at = |at: usize| {
            let mut n = node.clone();
            n.pos.col += at + usize::from(!*plain);
            n.width = 1;
            n
        };
        let expr = match Expr::parse(text) {
            Ok(e) => e,
            Err(e) => {
                self.error(
                    &at(e.at),
                    field,
                    format!("in `if`: {}", e.message),
                    Some("the language: $VAR, 'text', ==, !=, !, &&, || and ( )".into()),
                );
                return None;
            }
        };
        let mut ok = true;
        for var in expr.vars() {
            if var.starts_with("GANTRY_") && !KNOWN.contains(&var) {
                let offset = text.find(&format!("${var}")).unwrap_or(0);
                let help = match suggest(var, KNOWN.iter().copied()) {
                    Some(s) => format!("did you mean `${s}`?"),
                    None => format!("gantry sets {}", KNOWN.join(", ")),
                };
                self.error(
                    &at(offset),
                    field,
                    format!("`${var}` is not a variable gantry sets"),
                    Some(help),
                );
                ok = false;
            }
        }
        ok.then(|| Condition {
            text: text.clone(),
            expr,
        })
    }

    /// One condition of `when`: a string or a non-empty list (an empty one would match
    /// nothing), each item read by `read` (which reports its own problems and gives `None`),
    /// none listed twice. `None` when anything was wrong.
    fn conditions<T: PartialEq>(
        &mut self,
        node: &Node,
        field: &str,
        key: &str,
        mut read: impl FnMut(&mut Self, &Node, &str, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        if matches!(&node.value, Value::Seq(items) if items.is_empty()) {
            self.error(
                node,
                field,
                format!("an empty `{key}` list matches nothing, so the stage would never run"),
                Some(format!("leave `{key}` out to match any {key}")),
            );
            return None;
        }
        let before = self.diags.len();
        let items = self.string_list(node, field);
        let mut ok = self.diags.len() == before;
        let mut out = Vec::new();
        for (i, (text, item)) in items.into_iter().enumerate() {
            let f = format!("{field}[{i}]");
            match read(self, &item, &f, &text) {
                Some(v) if out.contains(&v) => {
                    self.error(&item, &f, format!("`{text}` is listed twice"), None);
                    ok = false;
                }
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Why a branch or tag pattern (`what`) can never match a name git allows, if it cannot.
fn ref_pattern_problem(p: &str, what: &str) -> Option<String> {
    if p.trim().is_empty() {
        return Some(format!(
            "a {what} pattern may not be empty: write a name or `*`"
        ));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "`{}` has a space or control character, which no {what} name has",
            p.escape_debug()
        ));
    }
    if p.starts_with("refs/") {
        let example = if what == "tag" {
            "`v1.2.0`, `v*`"
        } else {
            "`main`, `release/*`"
        };
        return Some(format!(
            "`{p}` is a full ref: write the {what} name ({example})"
        ));
    }
    None
}
