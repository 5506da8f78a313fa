//! `when:` rules: whether a stage applies to a run, and if not, why (the reason is recorded as
//! the skipped stage's note).

use gantry_model::{Rules, TriggerEvent, pattern_matches};

/// What rules are judged against: the run's branch and what started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub branch: Option<String>,
    pub event: TriggerEvent,
}

/// `Ok` when every condition of `rules` holds for `trigger`; else the first that does not, in
/// words.
pub fn applies(rules: &Rules, trigger: &Trigger) -> Result<(), String> {
    if !rules.branches.is_empty() {
        let listed = rules.branches.join(", ");
        match &trigger.branch {
            Some(b) if rules.branches.iter().any(|p| pattern_matches(p, b)) => {}
            Some(b) => return Err(format!("when: branch `{b}` is not one of {listed}")),
            None => return Err(format!("when: the run has no branch (wants {listed})")),
        }
    }
    if !rules.events.is_empty() && !rules.events.contains(&trigger.event) {
        let listed: Vec<&str> = rules.events.iter().map(|e| e.as_str()).collect();
        return Err(format!(
            "when: event `{}` is not one of {}",
            trigger.event.as_str(),
            listed.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(branches: &[&str], events: &[TriggerEvent]) -> Rules {
        Rules {
            branches: branches.iter().map(|s| s.to_string()).collect(),
            events: events.to_vec(),
        }
    }

    fn trigger(branch: Option<&str>, event: TriggerEvent) -> Trigger {
        Trigger {
            branch: branch.map(str::to_string),
            event,
        }
    }

    #[test]
    fn rules_as_a_table() {
        use TriggerEvent::{Manual, Push};
        let cases: &[(Rules, Trigger, Result<(), &str>)] = &[
            (rules(&[], &[]), trigger(None, Manual), Ok(())),
            (rules(&["main"], &[]), trigger(Some("main"), Push), Ok(())),
            (
                rules(&["main", "release/*"], &[]),
                trigger(Some("release/2"), Push),
                Ok(()),
            ),
            (
                rules(&["main", "release/*"], &[]),
                trigger(Some("feature/x"), Push),
                Err("when: branch `feature/x` is not one of main, release/*"),
            ),
            (
                rules(&["main"], &[]),
                trigger(None, Manual),
                Err("when: the run has no branch (wants main)"),
            ),
            (rules(&[], &[Push]), trigger(Some("main"), Push), Ok(())),
            (
                rules(&["main"], &[Push]),
                trigger(Some("main"), Manual),
                Err("when: event `manual` is not one of push"),
            ),
            (
                rules(&["main"], &[Push, Manual]),
                trigger(Some("main"), Manual),
                Ok(()),
            ),
        ];
        for (r, t, want) in cases {
            assert_eq!(applies(r, t), want.map_err(str::to_string), "{r:?} {t:?}");
        }
    }

    #[test]
    fn events_of_triggers() {
        for (trigger, event) in [
            ("webhook", TriggerEvent::Push),
            ("poll", TriggerEvent::Push),
            ("requeue", TriggerEvent::Push),
            ("manual", TriggerEvent::Manual),
            ("rerun", TriggerEvent::Manual),
            ("cli", TriggerEvent::Manual),
        ] {
            assert_eq!(TriggerEvent::of_trigger(trigger), event, "{trigger}");
        }
    }
}
