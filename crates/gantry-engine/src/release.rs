//! Releases of an environment as pure decisions: which release a rollback goes to, which
//! releases stay ready and which are retired, and whether a deploy is outdated. The deploy
//! manager (`gantry-deploy`) asks these questions of the release history it reads from the state
//! store, then carries out the answers.
//!
//! Vocabulary. Every deployment and every rollback adds a release with the next number, so the
//! history only grows. A deploy release runs from its own directory; a rollback release serves
//! an earlier deploy release's directory (its `source`). A release is *healthy* once it went
//! live and did not fail afterwards.

use crate::ports::ReleaseRecord;
use std::fmt;

pub use gantry_model::records::{ReleaseKind, ReleaseState};

/// Went live and did not fail afterwards.
pub fn healthy(r: &ReleaseRecord) -> bool {
    r.live_at.is_some() && r.state != ReleaseState::Failed
}

/// The live release of a history (newest first or in any order).
pub fn live(releases: &[ReleaseRecord]) -> Option<&ReleaseRecord> {
    releases.iter().find(|r| r.state == ReleaseState::Live)
}

fn by_number(releases: &[ReleaseRecord], number: i64) -> Option<&ReleaseRecord> {
    releases.iter().find(|r| r.number == number)
}

/// Why a rollback cannot happen (said to the user as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackRefusal {
    NoLiveRelease,
    NothingEarlier { live: i64 },
    NoSuchRelease(i64),
    AlreadyLive(i64),
    NeverHealthy { number: i64, state: ReleaseState },
    Retired { number: i64, source: i64 },
}

impl fmt::Display for RollbackRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackRefusal::NoLiveRelease => {
                write!(f, "the environment has no live release to roll back from")
            }
            RollbackRefusal::NothingEarlier { live } => write!(
                f,
                "release {live} is live and no earlier healthy release is kept; `gantry releases` lists them (choose one with --to)"
            ),
            RollbackRefusal::NoSuchRelease(n) => write!(f, "there is no release {n}"),
            RollbackRefusal::AlreadyLive(n) => write!(f, "release {n} is already live"),
            RollbackRefusal::NeverHealthy { number, state } => write!(
                f,
                "release {number} never served healthily (it is {state}); only releases that were live can be rolled back to"
            ),
            RollbackRefusal::Retired { number, source } => write!(
                f,
                "release {number} is no longer kept (release {source}'s directory was retired); deploy its artifact again instead"
            ),
        }
    }
}

/// Where a rollback goes. Without `to`: the newest healthy deploy release older than the one
/// the live release serves, still kept — so repeated rollbacks walk back through deployments,
/// and failed deploys never count. With `to`: that release, which must have been healthy and
/// be kept (rolling "forward" to a newer one is allowed).
pub fn rollback_target(
    releases: &[ReleaseRecord],
    to: Option<i64>,
) -> Result<&ReleaseRecord, RollbackRefusal> {
    let live = live(releases).ok_or(RollbackRefusal::NoLiveRelease)?;
    match to {
        Some(n) => {
            let r = by_number(releases, n).ok_or(RollbackRefusal::NoSuchRelease(n))?;
            if r.source == live.source {
                return Err(RollbackRefusal::AlreadyLive(live.number));
            }
            if !healthy(r) {
                return Err(RollbackRefusal::NeverHealthy {
                    number: n,
                    state: r.state,
                });
            }
            let source = by_number(releases, r.source).unwrap_or(r);
            if source.retired_at.is_some() {
                return Err(RollbackRefusal::Retired {
                    number: n,
                    source: source.number,
                });
            }
            Ok(source)
        }
        None => releases
            .iter()
            .filter(|r| {
                r.kind == ReleaseKind::Deploy
                    && r.number < live.source
                    && healthy(r)
                    && r.retired_at.is_none()
            })
            .max_by_key(|r| r.number)
            .ok_or(RollbackRefusal::NothingEarlier { live: live.number }),
    }
}

/// The deploy releases whose directories stay ready: the live one's source first, then the
/// newest healthy ones, `keep` in all. Failed releases never count.
pub fn kept(releases: &[ReleaseRecord], keep: u32) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    if let Some(l) = live(releases) {
        out.push(l.source);
    }
    // Newest use first: a rollback to an old release makes it recent again.
    let mut by_use: Vec<(i64, i64)> = Vec::new(); // (last used number, source)
    for r in releases.iter().filter(|r| healthy(r)) {
        let s = r.source;
        match by_use.iter_mut().find(|(_, src)| *src == s) {
            Some(entry) => entry.0 = entry.0.max(r.number),
            None => by_use.push((r.number, s)),
        }
    }
    by_use.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (_, s) in by_use {
        if out.len() >= keep as usize {
            break;
        }
        let retired = by_number(releases, s).is_some_and(|r| r.retired_at.is_some());
        if !out.contains(&s) && !retired {
            out.push(s);
        }
    }
    out
}

/// Deploy releases to retire now: not kept, not being deployed, not retired yet.
pub fn to_retire(releases: &[ReleaseRecord], keep: u32) -> Vec<i64> {
    let kept = kept(releases, keep);
    releases
        .iter()
        .filter(|r| {
            r.kind == ReleaseKind::Deploy
                && r.retired_at.is_none()
                && !matches!(r.state, ReleaseState::Deploying | ReleaseState::Canary)
                && !kept.contains(&r.number)
        })
        .map(|r| r.number)
        .collect()
}

/// What gantry knows about a deploy request compared to the live release.
pub struct DeployCandidate<'a> {
    pub run: Option<i64>,
    pub commit: Option<&'a str>,
    /// Whether the candidate's commit is a strict ancestor of the live commit (`None`: unknown).
    pub is_ancestor_of_live: Option<bool>,
}

/// Why a deploy would move the environment backwards, if it would. Rollback is the way back.
pub fn outdated(live: Option<&ReleaseRecord>, candidate: &DeployCandidate<'_>) -> Option<String> {
    let live = live?;
    if let (Some(c), Some(l)) = (candidate.commit, live.commit.as_deref())
        && c == l
    {
        return None;
    }
    if candidate.is_ancestor_of_live == Some(true) {
        return Some(format!(
            "commit {} is older than the live release {} (commit {}): it is one of its ancestors",
            short(candidate.commit.unwrap_or("?")),
            live.number,
            short(live.commit.as_deref().unwrap_or("?"))
        ));
    }
    if let (Some(c), Some(l)) = (candidate.run, live.run_id)
        && c < l
    {
        return Some(format!(
            "run {c} is older than run {l}, which built the live release {}",
            live.number
        ));
    }
    None
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

#[cfg(test)]
mod tests;
