//! The diagnoser: fed the facts of a failed run (step exit codes, timeouts, signals, recorded
//! errors) and the log lines of its failed jobs, one at a time, it keeps a bounded amount of
//! evidence per rule and, at the end, names the one category that best explains the failure.
//! All patterns are matched in one pass per line (Aho-Corasick, ASCII case-insensitive), so a
//! 100 MB log costs one read and constant memory.

use super::rules::{Category, Rule};
use super::test_names::FailingTests;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Matched lines kept per rule.
const EVIDENCE_PER_RULE: usize = 5;
/// Lines kept from the end of the failing output, for when no rule matches.
const TAIL: usize = 10;

/// Something known about the failed run besides its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A step timed out (gantry stopped it).
    TimedOut { job: String, step: String },
    /// A step exited with this code (128 + n for signal n).
    Exit {
        job: String,
        step: String,
        code: i64,
    },
    /// An error gantry recorded on a job or the run (missing secret, invalid pipeline file, ...).
    Error { job: Option<String>, text: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Evidence {
    pub job: Option<String>,
    pub step: Option<String>,
    /// 1-based line number in the step's log (0 for a recorded error).
    pub line: i64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Diagnosis {
    pub category: Category,
    pub sentence: String,
    pub fix: String,
    /// The rule that decided, if one did.
    pub rule: Option<String>,
    pub evidence: Vec<Evidence>,
    /// Test names parsed from the output of known test runners.
    pub failing_tests: Vec<String>,
}

struct Hits {
    count: usize,
    first: Vec<Evidence>,
}

pub struct Diagnoser {
    rules: Vec<Rule>,
    matcher: AhoCorasick,
    /// Pattern index -> rule index.
    pattern_rule: Vec<usize>,
    hits: Vec<Hits>,
    order: Vec<usize>,
    facts: Vec<Fact>,
    tail: VecDeque<Evidence>,
    tests: FailingTests,
}

impl Diagnoser {
    /// A diagnoser with `rules` (built-in rules first, then the user's).
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut patterns = Vec::new();
        let mut pattern_rule = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for p in &r.patterns {
                patterns.push(p.clone());
                pattern_rule.push(i);
            }
        }
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("the rule patterns are plain strings");
        let hits = rules
            .iter()
            .map(|_| Hits {
                count: 0,
                first: Vec::new(),
            })
            .collect();
        Self {
            rules,
            matcher,
            pattern_rule,
            hits,
            order: Vec::new(),
            facts: Vec::new(),
            tail: VecDeque::new(),
            tests: FailingTests::default(),
        }
    }

    pub fn fact(&mut self, fact: Fact) {
        if let Fact::Error { job, text } = &fact {
            for line in text.lines() {
                self.match_line(Evidence {
                    job: job.clone(),
                    step: None,
                    line: 0,
                    text: line.to_string(),
                });
            }
        }
        self.facts.push(fact);
    }

    /// One log line of a failed job. Runs for every line of the log: it allocates nothing
    /// unless the line matches a rule (the tail reuses its buffers).
    pub fn line(&mut self, job: &str, step: &str, line: i64, text: &str) {
        self.tests.line(text);
        let mut slot = if self.tail.len() == TAIL {
            self.tail.pop_front().expect("the tail is full")
        } else {
            Evidence {
                job: Some(String::new()),
                step: Some(String::new()),
                line: 0,
                text: String::new(),
            }
        };
        for (buf, value) in [(&mut slot.job, job), (&mut slot.step, step)] {
            let b = buf.get_or_insert_with(String::new);
            b.clear();
            b.push_str(value);
        }
        slot.line = line;
        slot.text.clear();
        slot.text.push_str(text);
        self.tail.push_back(slot);
        if self.matcher.is_match(text) {
            let ev = Evidence {
                job: Some(job.to_string()),
                step: Some(step.to_string()),
                line,
                text: text.to_string(),
            };
            self.match_line(ev);
        }
    }

    fn match_line(&mut self, ev: Evidence) {
        let mut matched: Vec<usize> = Vec::new();
        for m in self.matcher.find_overlapping_iter(ev.text.as_str()) {
            let rule = self.pattern_rule[m.pattern().as_usize()];
            if !matched.contains(&rule) {
                matched.push(rule);
            }
        }
        for rule in matched {
            let h = &mut self.hits[rule];
            if h.count == 0 {
                self.order.push(rule);
            }
            h.count += 1;
            if h.first.len() < EVIDENCE_PER_RULE {
                h.first.push(ev.clone());
            }
        }
    }

    fn best_rule(&self, among: impl Fn(&Rule) -> bool) -> Option<usize> {
        // The heaviest rule that matched; among equals, the one that matched first.
        self.order
            .iter()
            .copied()
            .filter(|i| among(&self.rules[*i]))
            .enumerate()
            .max_by_key(|(pos, i)| (self.rules[*i].weight, std::cmp::Reverse(*pos)))
            .map(|(_, i)| i)
    }

    fn diagnosis_by_rule(&self, i: usize, category: Category) -> Diagnosis {
        let r = &self.rules[i];
        Diagnosis {
            category,
            sentence: r.sentence.clone(),
            fix: r.fix.clone(),
            rule: Some(r.id.clone()),
            evidence: self.hits[i].first.clone(),
            failing_tests: self.tests.names(),
        }
    }

    fn diagnosis_by_fact(
        &self,
        category: Category,
        sentence: String,
        fix: &str,
        evidence: Vec<Evidence>,
    ) -> Diagnosis {
        Diagnosis {
            category,
            sentence,
            fix: fix.to_string(),
            rule: None,
            evidence,
            failing_tests: self.tests.names(),
        }
    }

    pub fn finish(self) -> Diagnosis {
        let tail: Vec<Evidence> = self.tail.iter().cloned().collect();
        // Facts gantry observed itself are certain: they come first.
        for f in &self.facts {
            if let Fact::TimedOut { job, step } = f {
                return self.diagnosis_by_fact(
                    Category::Timeout,
                    format!("Step `{step}` of job `{job}` ran past its time limit and was stopped."),
                    "Find what the step waited on (the last lines below); raise `timeout` only if the work really takes longer.",
                    tail,
                );
            }
        }
        for f in &self.facts {
            if let Fact::Exit {
                job,
                step,
                code: 127,
            } = f
            {
                let ev = self
                    .best_rule(|r| r.category == Category::CommandNotFound)
                    .map(|i| self.hits[i].first.clone())
                    .unwrap_or(tail.clone());
                return self.diagnosis_by_fact(
                    Category::CommandNotFound,
                    format!("Step `{step}` of job `{job}` called a program that is not installed (exit code 127)."),
                    "Install the program on the runner (or in the job's image), or fix its name or PATH.",
                    ev,
                );
            }
        }
        if let Some(i) = self.best_rule(|r| r.category == Category::OutOfMemory) {
            return self.diagnosis_by_rule(i, Category::OutOfMemory);
        }
        for f in &self.facts {
            if let Fact::Exit {
                job,
                step,
                code: 137,
            } = f
            {
                return self.diagnosis_by_fact(
                    Category::OutOfMemory,
                    format!("Step `{step}` of job `{job}` was killed with SIGKILL (exit code 137), the mark of the out-of-memory killer."),
                    "Give the job more memory, or make the step use less; check the runner's kernel log (dmesg) for the OOM kill.",
                    tail,
                );
            }
        }
        if !self.tests.names().is_empty()
            && let Some(i) = self.best_rule(|r| r.category == Category::TestFailure)
        {
            // Failing tests are named: a test failure, unless a heavier cause explains the run.
            let heavier = self.best_rule(|r| r.category != Category::TestFailure && r.weight > 90);
            if heavier.is_none() {
                return self.diagnosis_by_rule(i, Category::TestFailure);
            }
        }
        if let Some(i) = self.best_rule(|_| true) {
            return self.diagnosis_by_rule(i, self.rules[i].category);
        }
        let exit = self.facts.iter().find_map(|f| match f {
            Fact::Exit { job, step, code } => Some(format!(
                "Step `{step}` of job `{job}` exited with code {code}"
            )),
            _ => None,
        });
        let sentence = match exit {
            Some(e) => format!("{e}; its output matches no known failure."),
            None => "The run failed; its output matches no known failure.".to_string(),
        };
        self.diagnosis_by_fact(
            Category::Unknown,
            sentence,
            "Read the last lines below; if this failure recurs, add a rule for it.",
            tail,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::why::rules::builtin;

    fn diagnose(lines: &[&str], facts: Vec<Fact>) -> Diagnosis {
        let mut d = Diagnoser::new(builtin());
        for f in facts {
            d.fact(f);
        }
        for (i, l) in lines.iter().enumerate() {
            d.line("job", "step", i as i64 + 1, l);
        }
        d.finish()
    }

    fn check(lines: &[&str], facts: Vec<Fact>, expect: Category) {
        let got = diagnose(lines, facts);
        assert_eq!(got.category, expect, "{lines:?}: {got:?}");
    }

    fn exit(code: i64) -> Vec<Fact> {
        vec![Fact::Exit {
            job: "job".into(),
            step: "step".into(),
            code,
        }]
    }

    #[test]
    fn categories() {
        check(
            &["fatal: repository 'http://x/y.git/' not found"],
            exit(128),
            Category::RepositoryAccess,
        );
        check(
            &["sh: 1: foo: not found"],
            exit(127),
            Category::CommandNotFound,
        );
        check(&["anything"], exit(137), Category::OutOfMemory);
        // A file missing while the workspace is made is not a missing program.
        check(
            &["preparing the workspace: unpacking `app`: No such file or directory (os error 2)"],
            vec![],
            Category::Workspace,
        );
        check(
            &["running `deploy.sh`: No such file or directory (os error 2)"],
            exit(1),
            Category::CommandNotFound,
        );
        check(
            &[
                "An error occurred (AccessDenied) when calling the PutObject operation: Access Denied",
            ],
            exit(1),
            Category::Permission,
        );
        check(
            &["Error: listen EADDRINUSE: address already in use :::3000"],
            exit(1),
            Category::Conflict,
        );
        check(
            &["dd: error writing '/dev/full': No space left on device"],
            exit(1),
            Category::DiskFull,
        );
        // Gantry's data directory full: the run's recorded error, not the steps' output.
        let full = diagnose(
            &["all good"],
            vec![Fact::Error {
                job: None,
                text: "the run's log could not be stored: storing log lines: no space left on the file system of /srv/gantry (the data directory): error returned from database: (code: 13) database or disk is full; free space there, then run again".into(),
            }],
        );
        assert_eq!(full.category, Category::DiskFull, "{full:?}");
        assert_eq!(full.rule.as_deref(), Some("data-dir-full"), "{full:?}");
        // The artifact store full: on gantry's side too, though the message has ENOSPC in it.
        let store = diagnose(
            &["built"],
            vec![Fact::Error {
                job: Some("build".into()),
                text: "storing artifact app: no space left on the file system of /srv/gantry/artifacts (the artifact store): packing: No space left on device (os error 28); free space there (`gantry gc` removes what retention no longer keeps), then run again".into(),
            }],
        );
        assert_eq!(store.category, Category::DiskFull, "{store:?}");
        assert_eq!(
            store.rule.as_deref(),
            Some("artifact-store-full"),
            "{store:?}"
        );
        check(
            &["curl: (7) Failed to connect to 127.0.0.1 port 1: Connection refused"],
            exit(7),
            Category::Network,
        );
        // The lambda target's errors, as it words them (code, AWS's message, request id).
        for (line, category) in [
            (
                "the lambda target could not start it: uploading the code of web: AccessDeniedException: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: lambda:UpdateFunctionCode (request id 1f2e)",
                Category::Permission,
            ),
            (
                "the lambda target could not start it: moving alias live: ResourceConflictException: The operation cannot be performed at this time. An update is in progress (request id 9a8b)",
                Category::Conflict,
            ),
            (
                "the lambda target could not start it: reading the function web: ExpiredTokenException: The security token included in the request is expired (request id 77aa)",
                Category::Expired,
            ),
            (
                "the lambda target could not start it: reading the function web: cannot reach Lambda in region eu-mars-1 (target.lambda.region): dispatch failure",
                Category::Config,
            ),
            (
                "the lambda target could not start it: publishing a version of web: CodeStorageExceededException: Code storage limit exceeded. (request id 5c5c)",
                Category::Quota,
            ),
        ] {
            check(&[line], exit(1), category);
        }
        check(&["something odd happened"], exit(3), Category::Unknown);
        check(
            &["x"],
            vec![Fact::TimedOut {
                job: "j".into(),
                step: "s".into(),
            }],
            Category::Timeout,
        );
        check(
            &[],
            vec![Fact::Error {
                job: Some("j".into()),
                text: "secret `API_TOKEN` is not set: export API_TOKEN".into(),
            }],
            Category::Config,
        );
    }

    #[test]
    fn named_failing_tests_make_a_test_failure_even_with_other_noise() {
        let d = diagnose(
            &[
                "running 2 tests",
                "test tests::adds ... ok",
                "test tests::subtracts ... FAILED",
                "Permission denied (a log line of the test)",
                "test result: FAILED. 1 passed; 1 failed",
            ],
            exit(101),
        );
        assert_eq!(d.category, Category::TestFailure);
        assert_eq!(d.failing_tests, ["tests::subtracts"]);
    }

    #[test]
    fn evidence_is_bounded() {
        let lines: Vec<String> = (0..10_000)
            .map(|i| format!("Connection refused {i}"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let d = diagnose(&refs, exit(1));
        assert_eq!(d.evidence.len(), EVIDENCE_PER_RULE);
        assert_eq!(d.evidence[0].line, 1);
    }
}
