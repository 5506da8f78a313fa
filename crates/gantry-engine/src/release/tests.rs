//! Release decisions on hand-written histories.

use super::*;
use crate::ports::ReleaseRecord;
use ReleaseState::*;

/// A history builder: `deploy`/`rollback` append releases the way the deploy manager does.
#[derive(Default)]
struct History(Vec<ReleaseRecord>);

impl History {
    fn push(
        &mut self,
        kind: ReleaseKind,
        source: Option<i64>,
        state: ReleaseState,
        run: i64,
    ) -> i64 {
        let number = self.0.len() as i64 + 1;
        let went_live = matches!(state, Live | Superseded | RolledBack);
        if went_live {
            for r in self.0.iter_mut().filter(|r| r.state == Live) {
                r.state = if kind == ReleaseKind::Rollback {
                    RolledBack
                } else {
                    Superseded
                };
            }
        }
        self.0.push(ReleaseRecord {
            id: number,
            project: "p".into(),
            environment: "prod".into(),
            number,
            kind,
            source: source.unwrap_or(number),
            artifact: "app".into(),
            digest: format!("sha256:{run}"),
            run_id: Some(run),
            commit: Some(format!("c{run}")),
            created_by: "test".into(),
            created_at: number,
            state,
            reason: None,
            live_at: went_live.then_some(number),
            ended_at: None,
            retired_at: None,
        });
        number
    }
    fn deploy(&mut self, run: i64) -> i64 {
        self.push(ReleaseKind::Deploy, None, Live, run)
    }
    fn failed(&mut self, run: i64) -> i64 {
        self.push(ReleaseKind::Deploy, None, Failed, run)
    }
    fn rollback(&mut self, to: Option<i64>) -> i64 {
        let target = rollback_target(&self.0, to).expect("rollback allowed");
        let (source, run) = (target.number, target.run_id.unwrap());
        self.push(ReleaseKind::Rollback, Some(source), Live, run)
    }
    fn retire(&mut self, number: i64) {
        self.0[number as usize - 1].retired_at = Some(99);
    }
    fn live_source(&self) -> i64 {
        live(&self.0).unwrap().source
    }
}

#[test]
fn rollback_returns_to_the_previous_deploy_and_the_history_only_grows() {
    let mut h = History::default();
    let v1 = h.deploy(1);
    let v2 = h.deploy(2);
    let back = h.rollback(None);
    assert_eq!(h.live_source(), v1);
    assert_eq!(h.0[v2 as usize - 1].state, RolledBack);
    // Forward again to v2: it can still be chosen.
    let fwd = h.rollback(Some(v2));
    assert_eq!(h.live_source(), v2);
    assert_eq!(h.0.len(), 4);
    assert_eq!((back, fwd), (3, 4));
    assert_eq!(h.0[back as usize - 1].state, RolledBack);
}

#[test]
fn repeated_rollbacks_walk_back_through_deployments() {
    let mut h = History::default();
    let v1 = h.deploy(1);
    let v2 = h.deploy(2);
    h.deploy(3);
    h.rollback(None);
    assert_eq!(h.live_source(), v2);
    h.rollback(None);
    assert_eq!(h.live_source(), v1);
    assert_eq!(
        rollback_target(&h.0, None).unwrap_err(),
        RollbackRefusal::NothingEarlier { live: 5 }
    );
}

#[test]
fn failed_deploys_are_skipped_by_rollback_and_do_not_count_toward_keep() {
    let mut h = History::default();
    let v1 = h.deploy(1);
    let v2 = h.deploy(2);
    for run in 3..8 {
        h.failed(run);
    }
    assert_eq!(rollback_target(&h.0, None).unwrap().number, v1);
    assert_eq!(kept(&h.0, 3), vec![v2, v1]);
    // The failed ones are retired, the healthy ones stay.
    assert_eq!(to_retire(&h.0, 3), vec![3, 4, 5, 6, 7]);
}

#[test]
fn keep_retires_the_oldest_healthy_releases_first() {
    let mut h = History::default();
    for run in 1..=5 {
        h.deploy(run);
    }
    assert_eq!(kept(&h.0, 3), vec![5, 4, 3]);
    assert_eq!(to_retire(&h.0, 3), vec![1, 2]);
    assert_eq!(kept(&h.0, 1), vec![5]);
}

#[test]
fn a_rollback_makes_an_old_release_recent_again() {
    let mut h = History::default();
    let v1 = h.deploy(1);
    h.deploy(2);
    h.deploy(3);
    h.rollback(Some(v1));
    // Live is v1 (source 1); then the most recently used: 3, 2.
    assert_eq!(kept(&h.0, 2), vec![v1, 3]);
    assert_eq!(to_retire(&h.0, 2), vec![2]);
}

#[test]
fn refusals_say_why() {
    let mut h = History::default();
    assert_eq!(
        rollback_target(&h.0, None).unwrap_err(),
        RollbackRefusal::NoLiveRelease
    );
    let v1 = h.deploy(1);
    let bad = h.failed(2);
    let v3 = h.deploy(3);
    assert_eq!(
        rollback_target(&h.0, Some(bad)).unwrap_err(),
        RollbackRefusal::NeverHealthy {
            number: bad,
            state: Failed
        }
    );
    assert_eq!(
        rollback_target(&h.0, Some(v3)).unwrap_err(),
        RollbackRefusal::AlreadyLive(v3)
    );
    assert_eq!(
        rollback_target(&h.0, Some(42)).unwrap_err(),
        RollbackRefusal::NoSuchRelease(42)
    );
    h.retire(v1);
    assert_eq!(
        rollback_target(&h.0, Some(v1)).unwrap_err(),
        RollbackRefusal::Retired {
            number: v1,
            source: v1
        }
    );
    assert_eq!(
        rollback_target(&h.0, None).unwrap_err(),
        RollbackRefusal::NothingEarlier { live: v3 }
    );
    for refusal in [
        RollbackRefusal::NoLiveRelease,
        RollbackRefusal::AlreadyLive(3),
    ] {
        assert!(!refusal.to_string().is_empty());
    }
}

#[test]
fn rollback_to_a_rollback_release_means_its_source() {
    let mut h = History::default();
    let v1 = h.deploy(1);
    h.deploy(2);
    let back = h.rollback(None);
    h.deploy(4);
    assert_eq!(rollback_target(&h.0, Some(back)).unwrap().number, v1);
}

#[test]
fn outdated_deploys_are_named() {
    let mut h = History::default();
    h.deploy(5);
    let live = live(&h.0);
    let same = DeployCandidate {
        run: Some(5),
        commit: Some("c5"),
        is_ancestor_of_live: None,
    };
    assert_eq!(outdated(live, &same), None);
    let newer = DeployCandidate {
        run: Some(6),
        commit: Some("c6"),
        is_ancestor_of_live: Some(false),
    };
    assert_eq!(outdated(live, &newer), None);
    let older_run = DeployCandidate {
        run: Some(4),
        commit: Some("c4"),
        is_ancestor_of_live: None,
    };
    assert!(
        outdated(live, &older_run)
            .unwrap()
            .contains("run 4 is older than run 5")
    );
    let ancestor = DeployCandidate {
        run: Some(9),
        commit: Some("c9"),
        is_ancestor_of_live: Some(true),
    };
    assert!(outdated(live, &ancestor).unwrap().contains("ancestors"));
    assert_eq!(outdated(None, &ancestor), None);
}

#[test]
fn states_round_trip_through_their_names() {
    for s in ReleaseState::ALL {
        assert_eq!(ReleaseState::parse(s.as_str()), Some(s));
    }
    assert_eq!(ReleaseKind::parse("rollback"), Some(ReleaseKind::Rollback));
    assert_eq!(ReleaseState::parse("nope"), None);
}
