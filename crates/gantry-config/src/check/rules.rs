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
        let mut ok = true;
        let mut rules = Rules::default();
        if let Some(n) = fields.get("branch") {
            let field = fields.field("branch");
            match self.non_empty_list(n, &field, "branch") {
                Some(items) => {
                    for (i, (pattern, item)) in items.into_iter().enumerate() {
                        let f = format!("{field}[{i}]");
                        if let Some(problem) = branch_pattern_problem(&pattern) {
                            self.error(&item, &f, problem, None);
                            ok = false;
                        } else if rules.branches.contains(&pattern) {
                            self.error(&item, &f, format!("`{pattern}` is listed twice"), None);
                            ok = false;
                        } else {
                            rules.branches.push(pattern);
                        }
                    }
                }
                None => ok = false,
            }
        }
        if let Some(n) = fields.get("event") {
            let field = fields.field("event");
            match self.non_empty_list(n, &field, "event") {
                Some(items) => {
                    for (i, (name, item)) in items.into_iter().enumerate() {
                        let f = format!("{field}[{i}]");
                        match TriggerEvent::parse(&name) {
                            Some(e) if rules.events.contains(&e) => {
                                self.error(&item, &f, format!("`{name}` is listed twice"), None);
                                ok = false;
                            }
                            Some(e) => rules.events.push(e),
                            None => {
                                let known: Vec<&str> =
                                    TriggerEvent::ALL.iter().map(|e| e.as_str()).collect();
                                let help = match suggest(&name, known.iter().copied()) {
                                    Some(s) => format!("did you mean `{s}`?"),
                                    None => format!("events are {}", known.join(", ")),
                                };
                                self.error(
                                    &item,
                                    &f,
                                    format!("unknown event `{name}`"),
                                    Some(help),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(rules)
    }

    /// A string or a list of strings, refusing an empty list (it would match nothing).
    fn non_empty_list(
        &mut self,
        node: &Node,
        field: &str,
        key: &str,
    ) -> Option<Vec<(String, Node)>> {
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
        (self.diags.len() == before).then_some(items)
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
