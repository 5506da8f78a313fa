//! The runners' job queue: one claim per job under racing runners, labels respected, leases
//! renewed until they pass, a lost job stays lost, cancels reach queued and claimed jobs.

use gantry_engine::ports::{
    JobClaim, LeaseRenewal, NewJob, NewQueuedJob, NewRun, NewStage, QueuedJobState, StateStore,
};
use gantry_model::RunStatus;
use std::collections::HashSet;
use std::sync::Arc;

/// A run of owner `server-a` with `jobs` jobs in one stage, in `status`; the jobs' ids.
async fn run_with_jobs(
    store: &Arc<dyn StateStore>,
    jobs: usize,
    status: RunStatus,
) -> (i64, Vec<i64>) {
    let ids = store
        .create_run(NewRun {
            project: "p".into(),
            repo: "/srv/repo".into(),
            commit: "0".repeat(40),
            branch: Some("main".into()),
            pipeline_file: "gantry.yml".into(),
            trigger: "cli".into(),
            event: "manual".into(),
            vars: Default::default(),
            status,
            created_at: 1,
            owner: Some("server-a".into()),
            stages: vec![NewStage {
                name: "build".into(),
                kind: "jobs",
                jobs: (0..jobs)
                    .map(|i| NewJob {
                        name: format!("job-{i}"),
                        allow_failure: false,
                        waits_for: vec![],
                    })
                    .collect(),
            }],
        })
        .await
        .unwrap();
    (ids.run, ids.jobs[0].clone())
}

fn job(run: i64, job: i64, labels: &[&str]) -> NewQueuedJob {
    NewQueuedJob {
        run_id: run,
        job_id: job,
        attempt: 1,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        payload: format!("{{\"job\":{job}}}"),
        queued_at: 10,
    }
}

fn claim(runner: &str, labels: &[&str], at: i64) -> JobClaim {
    JobClaim {
        runner: runner.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        lease_hash: format!("hash-of-{runner}-{at}"),
        at,
        until: at + 1_000,
    }
}

/// Six runners race over forty jobs, half of which need `big`: every job is claimed once, the
/// three runners without `big` never get one that needs it, and a job of a run that is not
/// running is never handed out.
pub async fn queued_jobs_are_claimed_once_by_runners_with_their_labels(store: Arc<dyn StateStore>) {
    let (stopped, stopped_jobs) = run_with_jobs(&store, 1, RunStatus::Interrupted).await;
    store
        .enqueue_job(job(stopped, stopped_jobs[0], &[]))
        .await
        .unwrap();
    let (run, jobs) = run_with_jobs(&store, 40, RunStatus::Running).await;
    let mut big = HashSet::new();
    for (i, id) in jobs.iter().enumerate() {
        let labels: &[&str] = if i % 2 == 0 { &["big"] } else { &[] };
        let queued = store.enqueue_job(job(run, *id, labels)).await.unwrap();
        if i % 2 == 0 {
            big.insert(queued);
        }
    }
    let runners = (0..6).map(|r| {
        let store = store.clone();
        tokio::spawn(async move {
            let labels: &[&str] = if r < 3 { &["big", "linux"] } else { &["linux"] };
            let mut mine = Vec::new();
            // Bounded: never more claims than jobs.
            for n in 0..41 {
                match store
                    .claim_job(&claim(&format!("runner-{r}"), labels, 100 + n))
                    .await
                    .unwrap()
                {
                    Some(j) => {
                        assert_eq!(j.state, QueuedJobState::Claimed);
                        assert_eq!(j.runner.as_deref(), Some(format!("runner-{r}").as_str()));
                        assert_eq!(j.payload, format!("{{\"job\":{}}}", j.job_id));
                        mine.push(j.id)
                    }
                    None => break,
                }
            }
            (r, mine)
        })
    });
    let mut all = Vec::new();
    for r in runners {
        let (r, mine) = r.await.unwrap();
        if r >= 3 {
            assert!(
                mine.iter().all(|id| !big.contains(id)),
                "runner-{r} without `big` got a job that needs it: {mine:?}"
            );
        }
        all.extend(mine);
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "claims: {all:?}");
    assert_eq!(unique.len(), 40, "a job was claimed twice: {all:?}");
    assert!(
        store
            .claim_job(&claim("late", &["big"], 500))
            .await
            .unwrap()
            .is_none()
    );
}

/// A lease renews while it holds; once it has passed it is gone, the job can be called lost
/// (only then), and its runner can no longer say how it ended. Cancelling a queued job ends
/// it; cancelling a claimed one reaches its runner at the next renewal.
pub async fn leases_renew_until_they_pass_and_lost_jobs_stay_lost(store: Arc<dyn StateStore>) {
    let (run, jobs) = run_with_jobs(&store, 3, RunStatus::Running).await;
    let first = store.enqueue_job(job(run, jobs[0], &[])).await.unwrap();
    let c = claim("r1", &[], 100);
    let claimed = store.claim_job(&c).await.unwrap().expect("a job");
    assert_eq!(claimed.id, first);
    assert_eq!(claimed.lease_until, Some(1_100));
    // Someone else's lease, or a renewal after it passed: gone.
    assert_eq!(
        store.renew_job(first, "forged", 200, 1_200).await.unwrap(),
        LeaseRenewal::Gone
    );
    assert_eq!(
        store
            .renew_job(first, &c.lease_hash, 600, 1_600)
            .await
            .unwrap(),
        LeaseRenewal::Held { cancel: false }
    );
    assert!(
        !store.lose_job(first, 1_500, "too early").await.unwrap(),
        "the lease holds until 1600"
    );
    assert_eq!(
        store
            .renew_job(first, &c.lease_hash, 1_601, 2_601)
            .await
            .unwrap(),
        LeaseRenewal::Gone
    );
    assert!(
        store
            .lose_job(first, 1_601, "runner r1 stopped answering")
            .await
            .unwrap()
    );
    assert!(!store.lose_job(first, 1_700, "twice").await.unwrap());
    assert!(
        !store
            .finish_job(first, &c.lease_hash, "succeeded", Some(0), None, 1_800)
            .await
            .unwrap()
    );
    let lost = store.queued_job(first).await.unwrap().unwrap();
    assert_eq!(lost.state, QueuedJobState::Lost);
    assert_eq!(lost.error.as_deref(), Some("runner r1 stopped answering"));

    // Finished by its holder, with how it ended.
    let second = store.enqueue_job(job(run, jobs[1], &[])).await.unwrap();
    let c2 = claim("r2", &[], 2_000);
    assert_eq!(store.claim_job(&c2).await.unwrap().unwrap().id, second);
    assert!(
        store
            .finish_job(
                second,
                &c2.lease_hash,
                "failed",
                Some(3),
                Some("step `x` exited with code 3"),
                2_100
            )
            .await
            .unwrap()
    );
    let done = store.queued_job(second).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.outcome.as_deref(), done.exit_code),
        (QueuedJobState::Finished, Some("failed"), Some(3))
    );

    // Cancelled while queued: never handed out; while claimed: the runner is told.
    let third = store.enqueue_job(job(run, jobs[2], &[])).await.unwrap();
    assert_eq!(
        store.cancel_job(third, 2_200).await.unwrap(),
        Some(QueuedJobState::Cancelled)
    );
    assert!(
        store
            .claim_job(&claim("r3", &[], 2_300))
            .await
            .unwrap()
            .is_none()
    );
    let mut again = job(run, jobs[2], &[]);
    again.attempt = 2;
    let fourth = store.enqueue_job(again).await.unwrap();
    let c4 = claim("r4", &[], 2_400);
    assert_eq!(store.claim_job(&c4).await.unwrap().unwrap().id, fourth);
    assert_eq!(
        store.cancel_job(fourth, 2_500).await.unwrap(),
        Some(QueuedJobState::Claimed)
    );
    assert_eq!(
        store
            .renew_job(fourth, &c4.lease_hash, 2_600, 3_600)
            .await
            .unwrap(),
        LeaseRenewal::Held { cancel: true }
    );
    let counts = store.count_jobs_by_state().await.unwrap();
    for (state, n) in [
        (QueuedJobState::Lost, 1),
        (QueuedJobState::Finished, 1),
        (QueuedJobState::Cancelled, 1),
        (QueuedJobState::Claimed, 1),
    ] {
        assert!(counts.contains(&(state, n)), "{counts:?}");
    }
}

/// The share-link key servers on one store sign with: the first candidate is kept, later ones
/// get it (also when they race), and a rotation replaces it for everyone.
pub async fn the_share_key_is_stored_once_and_replaced_by_a_rotation(store: Arc<dyn StateStore>) {
    assert_eq!(store.stored_share_key().await.unwrap(), None);
    let racers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.share_key_or(&[i; 32], 1).await.unwrap() })
        })
        .collect();
    let mut got = HashSet::new();
    for r in racers {
        got.insert(r.await.unwrap());
    }
    assert_eq!(
        got.len(),
        1,
        "every server gets the one stored key: {got:?}"
    );
    let kept = got.into_iter().next().unwrap();
    assert_eq!(store.stored_share_key().await.unwrap(), Some(kept.clone()));
    assert_eq!(store.share_key_or(&[99; 32], 2).await.unwrap(), kept);

    store.set_share_key(&[7; 32], 3).await.unwrap();
    assert_eq!(store.stored_share_key().await.unwrap(), Some(vec![7; 32]));
    assert_eq!(store.share_key_or(&[99; 32], 4).await.unwrap(), vec![7; 32]);
}

/// A cancel asked for through another process reaches only a running run, and its owner finds
/// it; another owner does not.
pub async fn a_cancel_asked_for_elsewhere_is_found_by_the_runs_owner(store: Arc<dyn StateStore>) {
    let (running, _) = run_with_jobs(&store, 1, RunStatus::Running).await;
    let (queued, _) = run_with_jobs(&store, 1, RunStatus::Queued).await;
    assert_eq!(
        store.cancel_requests("server-a").await.unwrap(),
        Vec::<i64>::new()
    );
    assert!(store.request_cancel(running, 5).await.unwrap());
    assert!(
        store.request_cancel(running, 6).await.unwrap(),
        "asked twice"
    );
    assert!(
        !store.request_cancel(queued, 5).await.unwrap(),
        "not running"
    );
    assert!(!store.request_cancel(9999, 5).await.unwrap(), "no such run");
    assert_eq!(
        store.cancel_requests("server-b").await.unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        store.cancel_requests("server-a").await.unwrap(),
        vec![running]
    );
}

/// An environment has one driver: racing servers get one, the others are told who; a driver
/// renews and re-claims its own; a passed lease is taken over; a handover asked for is seen by
/// the driver, and once it lets go the asker gets it.
pub async fn an_environment_has_one_driver_under_a_lease(store: Arc<dyn StateStore>) {
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let me = format!("server-{i}");
                (
                    me.clone(),
                    store
                        .claim_driver("p", "prod", &me, 1_000, 10)
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut won = Vec::new();
    for r in racers {
        let (me, got) = r.await.unwrap();
        match got {
            Ok(()) => won.push(me),
            Err(d) => assert_ne!(d.owner, me),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let driver = won[0].clone();
    let other = if driver == "server-0" {
        "server-1"
    } else {
        "server-0"
    };
    assert!(
        store
            .claim_driver("p", "prod", &driver, 1_500, 20)
            .await
            .unwrap()
            .is_ok()
    );
    store.renew_drivers(&driver, 2_000).await.unwrap();
    let held = store
        .claim_driver("p", "prod", other, 3_000, 1_999)
        .await
        .unwrap();
    assert_eq!(
        held.unwrap_err().expires_at,
        2_000,
        "held until its renewed lease"
    );

    store.request_handover("p", "prod", other).await.unwrap();
    let rows = store.env_drivers().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].owner.as_str(), rows[0].handover_to.as_deref()),
        (driver.as_str(), Some(other))
    );
    store.release_driver("p", "prod", other).await.unwrap();
    assert_eq!(
        store.env_drivers().await.unwrap().len(),
        1,
        "only its driver lets go"
    );
    store.release_driver("p", "prod", &driver).await.unwrap();
    assert!(
        store
            .claim_driver("p", "prod", other, 3_000, 100)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(store.env_drivers().await.unwrap()[0].handover_to, None);

    // Its lease passes: taken over.
    assert!(
        store
            .claim_driver("p", "prod", &driver, 9_000, 3_001)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(store.env_drivers().await.unwrap()[0].owner, driver);
}

/// What is asked of an environment's driver is taken by that driver only, once, under racing
/// takes; its answer is read back by the asker, who then forgets it.
pub async fn a_request_to_a_driver_is_taken_once_by_it_and_answered(store: Arc<dyn StateStore>) {
    store
        .claim_driver("p", "prod", "server-a", 10_000, 1)
        .await
        .unwrap()
        .unwrap();
    let first = store
        .ask_driver("p", "prod", "abort", "alice", 100)
        .await
        .unwrap();
    let second = store
        .ask_driver("p", "prod", "alarm HighErrors", "alertmanager", 101)
        .await
        .unwrap();
    let other = store
        .ask_driver("p", "staging", "promote", "bob", 102)
        .await
        .unwrap();
    assert!(
        store
            .take_env_requests("server-b", 200)
            .await
            .unwrap()
            .is_empty(),
        "only the driver takes"
    );
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_env_requests("server-a", 200).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for t in takers {
        taken.extend(t.await.unwrap());
    }
    let ids: Vec<i64> = taken.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![first, second], "each taken once, oldest first");
    assert_eq!(
        (
            taken[1].asked.as_str(),
            taken[1].by.as_str(),
            taken[1].answer.clone()
        ),
        ("alarm HighErrors", "alertmanager", None)
    );
    store
        .answer_env_request(first, false, "no canary running", 300)
        .await
        .unwrap();
    let read = store.env_request(first).await.unwrap().unwrap();
    assert_eq!(read.answer, Some((false, "no canary running".to_string())));
    store.forget_env_request(first).await.unwrap();
    assert_eq!(store.env_request(first).await.unwrap(), None);
    // An answer nobody read goes after ten minutes; a request not taken stays.
    store
        .answer_env_request(second, true, "aborting", 300)
        .await
        .unwrap();
    store
        .take_env_requests("server-a", 300 + 600_001)
        .await
        .unwrap();
    assert_eq!(store.env_request(second).await.unwrap(), None);
    assert!(store.env_request(other).await.unwrap().is_some());
}
