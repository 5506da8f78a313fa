//! `when:` on a stage: which branches and which events it runs for.

use super::*;
use gantry_model::{Rules, TriggerEvent};

pub const WHEN_KEYS: &[&str] = &["branch", "event"];

impl Checker {
    /// `when: { branch: pattern | [patterns], event: name | [names] }`. Every condition given
    /// must hold; a list holds when any of its items does.
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
        let branches = match fields.get("branch") {
            Some(n) => self.conditions(n, &fields.field("branch"), "branch", |c, item, f, text| {
                match branch_pattern_problem(text) {
                    Some(problem) => {
                        c.error(item, f, problem, None);
                        None
                    }
                    None => Some(text.to_string()),
                }
            }),
            None => Some(Vec::new()),
        };
        let events = match fields.get("event") {
            Some(n) => self.conditions(n, &fields.field("event"), "event", |c, item, f, text| {
                let known = TriggerEvent::ALL.iter().map(|e| e.as_str());
                let parsed = text.parse::<TriggerEvent>().ok();
                if parsed.is_none() {
                    let help = match suggest(text, known.clone()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("events are {}", known.collect::<Vec<_>>().join(", ")),
                    };
                    c.error(item, f, format!("unknown event `{text}`"), Some(help));
                }
                parsed
            }),
            None => Some(Vec::new()),
        };
        Some(Rules {
            branches: branches?,
            events: events?,
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

/// Why a branch pattern can never match a branch git allows, if it cannot.
fn branch_pattern_problem(p: &str) -> Option<String> {
    if p.trim().is_empty() {
        return Some("a branch pattern may not be empty: write a name or `*`".into());
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "`{}` has a space or control character, which no branch name has",
            p.escape_debug()
        ));
    }
    if p.starts_with("refs/") {
        return Some(format!(
            "`{p}` is a full ref: write the branch name (`main`, `release/*`)"
        ));
    }
    None
}
