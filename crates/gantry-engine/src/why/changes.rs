//! What changed between the last good run and the failed one, from inputs the caller gathers:
//! the two pipeline files, their variable and secret names, artifact digests, and tool versions
//! printed in the logs. Pure functions; values of variables and secrets never enter here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Changes {
    /// The last run of the same project and branch that succeeded.
    pub good_run: Option<i64>,
    pub good_commit: Option<String>,
    /// `<short id> <subject>` of each commit after the good one, newest first.
    pub commits: Vec<String>,
    /// Changed lines of the pipeline file, `-` old and `+` new, with line numbers.
    pub pipeline_diff: Vec<String>,
    pub env_added: Vec<String>,
    pub env_removed: Vec<String>,
    pub secrets_added: Vec<String>,
    pub secrets_removed: Vec<String>,
    /// Artifact name, digest in the good run, digest now.
    pub artifacts_changed: Vec<(String, String, String)>,
    /// Tool, version in the good run, version now.
    pub tools_changed: Vec<(String, String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
            && self.pipeline_diff.is_empty()
            && self.env_added.is_empty()
            && self.env_removed.is_empty()
            && self.secrets_added.is_empty()
            && self.secrets_removed.is_empty()
            && self.artifacts_changed.is_empty()
            && self.tools_changed.is_empty()
    }
}

/// Changed lines between two texts (a longest-common-subsequence diff; pipeline files are small).
pub fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 25_000_000 {
        return vec![format!(
            "(files too large to compare: {} and {} lines)",
            a.len(),
            b.len()
        )];
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{:>4} {}", j + 1, b[j]));
            j += 1;
        } else {
            out.push(format!("-{:>4} {}", i + 1, a[i]));
            i += 1;
        }
    }
    out
}

/// Names in `new` but not `old`, and in `old` but not `new`, sorted.
pub fn names_diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let mut added: Vec<String> = new.iter().filter(|n| !old.contains(n)).cloned().collect();
    let mut removed: Vec<String> = old.iter().filter(|n| !new.contains(n)).cloned().collect();
    added.sort();
    added.dedup();
    removed.sort();
    removed.dedup();
    (added, removed)
}

/// Tools whose version lines are recognised (`rustc 1.95.0`, `Python 3.11.7`, `go version go1.22.1`,
/// `node v20.1.0`, `git version 2.47.3`, ...).
const TOOLS: &[&str] = &[
    "rustc",
    "cargo",
    "python",
    "pip",
    "pytest",
    "node",
    "npm",
    "yarn",
    "go",
    "java",
    "openjdk",
    "javac",
    "gcc",
    "clang",
    "git",
    "terraform",
    "docker",
    "podman",
    "kubectl",
    "helm",
    "ruby",
    "bundler",
    "php",
    "dotnet",
    "make",
    "cmake",
    "aws-cli",
    "gantry",
];

fn version_token(t: &str) -> Option<String> {
    let t = t.trim_matches(|c: char| c == ',' || c == '(' || c == ')' || c == ';');
    let v = t
        .strip_prefix("go")
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(t);
    let v = v.strip_prefix('v').unwrap_or(v);
    let ok = v.split('.').count() >= 2
        && v.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c.is_ascii_alphanumeric())
        })
        && v.starts_with(|c: char| c.is_ascii_digit());
    ok.then(|| v.to_string())
}

/// Versions of known tools printed in `line`, added to `found` (first seen wins).
pub fn tool_versions(line: &str, found: &mut BTreeMap<String, String>) {
    let words: Vec<&str> = line.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        // Compared without allocating: this runs on every word of every log line.
        let w = w.trim_end_matches(':');
        let Some(tool) = TOOLS.iter().find(|t| t.eq_ignore_ascii_case(w)) else {
            continue;
        };
        if found.contains_key(*tool) {
            continue;
        }
        let mut k = i + 1;
        if words
            .get(k)
            .is_some_and(|n| n.eq_ignore_ascii_case("version"))
        {
            k += 1;
        }
        if let Some(v) = words.get(k).and_then(|n| version_token(n)) {
            found.insert(tool.to_string(), v);
        }
    }
}

/// Tools whose versions differ between the two runs' logs.
pub fn tools_diff(
    good: &BTreeMap<String, String>,
    bad: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    bad.iter()
        .filter_map(|(tool, v)| {
            good.get(tool)
                .filter(|old| *old != v)
                .map(|old| (tool.clone(), old.clone(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changed_lines_with_numbers() {
        let d = diff_lines("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, ["+   2 B", "-   2 b", "+   4 d"]);
        assert!(diff_lines("same\n", "same\n").is_empty());
    }

    #[test]
    fn versions() {
        let mut m = BTreeMap::new();
        for l in [
            "rustc 1.95.0 (59807616e 2026-04-14)",
            "Python 3.11.7",
            "go version go1.22.1 linux/amd64",
            "node v20.20.2",
            "Ran 3 tests in 0.325s",
        ] {
            tool_versions(l, &mut m);
        }
        assert_eq!(m.get("rustc").map(String::as_str), Some("1.95.0"));
        assert_eq!(m.get("python").map(String::as_str), Some("3.11.7"));
        assert_eq!(m.get("go").map(String::as_str), Some("1.22.1"));
        assert_eq!(m.get("node").map(String::as_str), Some("20.20.2"));
        assert_eq!(m.len(), 4);
        let mut good = BTreeMap::new();
        good.insert("python".to_string(), "3.11.6".to_string());
        assert_eq!(
            tools_diff(&good, &m),
            [(
                "python".to_string(),
                "3.11.6".to_string(),
                "3.11.7".to_string()
            )]
        );
    }

    #[test]
    fn names() {
        let (a, r) = names_diff(&["A".into(), "B".into()], &["B".into(), "C".into()]);
        assert_eq!((a, r), (vec!["C".to_string()], vec!["A".to_string()]));
    }
}
