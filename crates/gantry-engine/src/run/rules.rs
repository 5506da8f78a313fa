//! `when:` rules: whether a stage applies to a run, and if not, why (the reason is recorded as
//! the skipped stage's note). A deploy stage never applies to a pull request's run unless its
//! `when:` names the `pull_request` event: code nobody has merged does not reach users by
//! default.

use gantry_model::{Rules, Stage, StageKind, TriggerEvent, pattern_matches};

/// What rules are judged against: the run's branch or tag, what started it, and the variables
/// an `if:` reads (the run's own, as its steps see them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub branch: Option<String>,
    /// The tag of a tag run.
    pub tag: Option<String>,
    pub event: TriggerEvent,
    pub vars: std::collections::BTreeMap<String, String>,
}

/// `Ok` when `stage` runs in a run started by `trigger`; else why not.
pub fn stage_applies(stage: &Stage, trigger: &Trigger) -> Result<(), String> {
    let names_pull_requests = stage
        .when
        .as_ref()
        .is_some_and(|r| r.events.contains(&TriggerEvent::PullRequest));
    if matches!(stage.kind, StageKind::Deploy(_))
        && trigger.event == TriggerEvent::PullRequest
        && !names_pull_requests
    {
        return Err(
            "a deploy stage does not run for a pull request unless its when: names event pull_request"
                .into(),
        );
    }
    match &stage.when {
        Some(rules) => applies(rules, trigger),
        None => Ok(()),
    }
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
    if !rules.tags.is_empty() {
        let listed = rules.tags.join(", ");
        match &trigger.tag {
            Some(t) if rules.tags.iter().any(|p| pattern_matches(p, t)) => {}
            Some(t) => return Err(format!("when: tag `{t}` is not one of {listed}")),
            None => return Err(format!("when: the run is not of a tag (wants {listed})")),
        }
    }
    if let Some(c) = &rules.condition
        && !c.expr.holds(&trigger.vars)
    {
        return Err(format!("if: `{}` does not hold", c.text));
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

    fn strings(of: &[&str]) -> Vec<String> {
        of.iter().map(|s| s.to_string()).collect()
    }

    fn rules(branches: &[&str], events: &[TriggerEvent]) -> Rules {
        Rules {
            branches: strings(branches),
            tags: Vec::new(),
            events: events.to_vec(),
            condition: None,
        }
    }

    fn trigger(branch: Option<&str>, event: TriggerEvent) -> Trigger {
        Trigger {
            branch: branch.map(str::to_string),
            tag: None,
            event,
            vars: Default::default(),
        }
    }

    fn tagged(tag: &str) -> Trigger {
        Trigger {
            branch: None,
            tag: Some(tag.into()),
            event: TriggerEvent::Tag,
            vars: Default::default(),
        }
    }

    #[test]
    fn tag_rules_as_a_table() {
        use TriggerEvent::{Push, Tag};
        let on_tags = |tags: &[&str], events: &[TriggerEvent]| Rules {
            tags: strings(tags),
            ..rules(&[], events)
        };
        let cases: &[(Rules, Trigger, Result<(), &str>)] = &[
            (on_tags(&["v*"], &[]), tagged("v1.2.0"), Ok(())),
            (on_tags(&[], &[Tag]), tagged("anything"), Ok(())),
            (
                on_tags(&["v*"], &[]),
                tagged("nightly"),
                Err("when: tag `nightly` is not one of v*"),
            ),
            (
                on_tags(&["v*", "release-*"], &[]),
                trigger(Some("main"), Push),
                Err("when: the run is not of a tag (wants v*, release-*)"),
            ),
            (
                on_tags(&[], &[Push]),
                tagged("v1"),
                Err("when: event `tag` is not one of push"),
            ),
            (
                rules(&["main"], &[]),
                tagged("v1"),
                Err("when: the run has no branch (wants main)"),
            ),
        ];
        for (r, t, want) in cases {
            assert_eq!(applies(r, t), want.map_err(str::to_string), "{r:?} {t:?}");
        }
    }

    #[test]
    fn if_conditions_read_the_run_variables() {
        let cond = |text: &str| Rules {
            condition: Some(gantry_model::expr::Condition {
                text: text.into(),
                expr: gantry_model::expr::Expr::parse(text).unwrap(),
            }),
            ..Rules::default()
        };
        let mut t = trigger(Some("main"), TriggerEvent::Push);
        t.vars.insert("GANTRY_BRANCH".into(), "main".into());
        assert_eq!(applies(&cond("$GANTRY_BRANCH == 'main'"), &t), Ok(()));
        assert_eq!(
            applies(&cond("$DEPLOY == 'yes'"), &t),
            Err("if: `$DEPLOY == 'yes'` does not hold".into())
        );
        t.vars.insert("DEPLOY".into(), "yes".into());
        assert_eq!(applies(&cond("$DEPLOY == 'yes'"), &t), Ok(()));
    }

    #[test]
    fn deploy_stages_skip_pull_requests_unless_their_rules_name_them() {
        use TriggerEvent::{PullRequest, Push};
        use gantry_model::{DeploySpec, Stage, StageKind};
        let deploy = |when: Option<Rules>| Stage {
            name: "production".into(),
            kind: StageKind::Deploy(DeploySpec {
                environments: vec!["production".into()],
                artifact: "app".into(),
                bake: None,
            }),
            when,
        };
        let jobs = Stage {
            name: "test".into(),
            kind: StageKind::Jobs(Vec::new()),
            when: None,
        };
        let pr = trigger(None, PullRequest);
        let refused = "a deploy stage does not run for a pull request unless its when: names event pull_request";
        assert_eq!(stage_applies(&jobs, &pr), Ok(()));
        assert_eq!(stage_applies(&deploy(None), &pr), Err(refused.into()));
        assert_eq!(
            stage_applies(&deploy(Some(rules(&[], &[Push]))), &pr).unwrap_err(),
            refused
        );
        assert_eq!(
            stage_applies(&deploy(Some(rules(&[], &[Push, PullRequest]))), &pr),
            Ok(())
        );
        assert_eq!(
            stage_applies(&deploy(None), &trigger(Some("main"), Push)),
            Ok(())
        );
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
