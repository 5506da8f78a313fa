//! The contract every state-store backend meets, run against each backend: claims are
//! exclusive, uniqueness holds under concurrent inserts, leases expire (and only expired ones
//! are taken over), owners' leases renew until removed, the history of releases only grows,
//! and paging is stable while runs are added. A backend joins by one `contract!` line at the
//! end of this file, naming how to open a fresh, empty store in a temporary directory.
//!
//! Everything here goes through the engine's ports (`Arc<dyn StateStore>`), never a backend's
//! own methods, so a passing backend is a drop-in replacement.

use gantry_engine::ports::{
    CanaryProgress, EnvLock, NewLogLine, NewRelease, NewRun, NewStage, OwnerLease, QueuedRun,
    RunFilter, SessionRecord, StateStore, Stream,
};
use gantry_engine::release::{ReleaseKind, ReleaseState};
use gantry_model::{RunStatus, StepStatus};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

fn queued(project: &str, n: usize, key: Option<String>) -> QueuedRun {
    QueuedRun {
        project: project.into(),
        repo: "/srv/repo".into(),
        commit: format!("{n:040}"),
        branch: Some("main".into()),
        trigger: "poll".into(),
        event: "push".into(),
        vars: Default::default(),
        trigger_key: key,
        created_at: n as i64,
    }
}

fn release(env: &str, n: i64) -> NewRelease {
    NewRelease {
        project: "p".into(),
        environment: env.into(),
        kind: ReleaseKind::Deploy,
        source: None,
        artifact: "app".into(),
        digest: format!("sha256:{n:064}"),
        run_id: None,
        commit: None,
        created_by: "contract".into(),
        created_at: n,
        reason: None,
    }
}

fn lock(owner: &str, at: i64, lease: i64) -> EnvLock {
    EnvLock {
        project: "p".into(),
        environment: "prod".into(),
        owner: owner.into(),
        purpose: format!("deploy by {owner}"),
        acquired_at: at,
        expires_at: at + lease,
    }
}

/// Six claimers race over thirty queued runs: every run is claimed exactly once, by one of
/// them, and none is left queued.
pub async fn claims_are_exclusive(store: Arc<dyn StateStore>) {
    for n in 0..30 {
        store
            .enqueue_run(queued("p", n, Some(format!("p/main/{n}"))))
            .await
            .unwrap()
            .expect("a new key queues a run");
    }
    let claimers = (0..6).map(|c| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            // Bounded: never more claims than runs.
            for _ in 0..31 {
                match store
                    .claim_next_run(&format!("claimer-{c}"), 100)
                    .await
                    .unwrap()
                {
                    Some(run) => {
                        assert_eq!(run.owner.as_deref(), Some(format!("claimer-{c}").as_str()));
                        mine.push(run.id)
                    }
                    None => break,
                }
            }
            mine
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 30, "claims: {all:?}");
    assert_eq!(unique.len(), 30, "a run was claimed twice: {all:?}");
    assert!(store.claim_next_run("late", 200).await.unwrap().is_none());
}

/// Sixteen deliveries of the same commit at once (a webhook retried while a poll sees it):
/// one run, and every other insert says so.
pub async fn a_trigger_key_makes_one_run_under_concurrent_inserts(store: Arc<dyn StateStore>) {
    let inserts = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .enqueue_run(queued("p", 7, Some("p/main/7".into())))
                .await
                .unwrap()
        })
    });
    let mut made = Vec::new();
    for i in inserts {
        made.extend(i.await.unwrap());
    }
    assert_eq!(made.len(), 1, "runs made: {made:?}");
    assert_eq!(
        store.run_by_trigger_key("p/main/7").await.unwrap(),
        Some(made[0])
    );
    assert_eq!(store.run_by_trigger_key("p/main/8").await.unwrap(), None);
    let runs = store
        .list_runs(&RunFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    // Runs without a key (manual triggers) are never deduplicated.
    assert!(
        store
            .enqueue_run(queued("p", 7, None))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .enqueue_run(queued("p", 7, None))
            .await
            .unwrap()
            .is_some()
    );
}

/// Ten releases of one environment created at once get ten distinct, consecutive numbers.
pub async fn release_numbers_are_unique_under_concurrent_creates(store: Arc<dyn StateStore>) {
    let creates = (0..10).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { store.create_release(release("prod", n)).await.unwrap() })
    });
    let mut numbers = Vec::new();
    for c in creates {
        numbers.push(c.await.unwrap().number);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
    // Another environment counts on its own.
    assert_eq!(
        store
            .create_release(release("staging", 0))
            .await
            .unwrap()
            .number,
        1
    );
}

/// A lock is refused to others while its lease runs (the refusal names the holder), is taken
/// over once the lease has passed, is renewed and released only by its holder.
pub async fn leases_expire_and_only_expired_ones_are_taken_over(store: Arc<dyn StateStore>) {
    assert!(
        store
            .acquire_env_lock(&lock("a", 1_000, 30_000))
            .await
            .unwrap()
            .is_ok()
    );
    let refused = store
        .acquire_env_lock(&lock("b", 2_000, 30_000))
        .await
        .unwrap()
        .expect_err("the lease of a still runs");
    assert_eq!(refused.owner, "a");
    assert_eq!(refused.purpose, "deploy by a");
    // a renews: still a's at a time past the first lease.
    store
        .renew_env_lock("p", "prod", "a", 60_000)
        .await
        .unwrap();
    assert!(
        store
            .acquire_env_lock(&lock("b", 40_000, 30_000))
            .await
            .unwrap()
            .is_err()
    );
    // Past the renewed lease: b takes it over.
    assert!(
        store
            .acquire_env_lock(&lock("b", 60_001, 30_000))
            .await
            .unwrap()
            .is_ok()
    );
    // a, who lost it, can neither renew nor release b's lock.
    store
        .renew_env_lock("p", "prod", "a", 999_999)
        .await
        .unwrap();
    store.release_env_lock("p", "prod", "a").await.unwrap();
    let locks = store.env_locks().await.unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].owner, "b");
    assert_eq!(locks[0].expires_at, 90_001);
    store.release_env_lock("p", "prod", "b").await.unwrap();
    assert!(store.env_locks().await.unwrap().is_empty());
}

/// Deploys, switches and rollbacks add releases and change states; nothing is ever removed,
/// numbers only grow, and at most one release is live.
pub async fn the_history_of_releases_only_grows(store: Arc<dyn StateStore>) {
    let mut seen = 0;
    let mut check = async |store: &Arc<dyn StateStore>| {
        let all = store.releases("p", "prod").await.unwrap();
        assert!(
            all.len() >= seen,
            "the history shrank: {} -> {}",
            seen,
            all.len()
        );
        seen = all.len();
        let live = all.iter().filter(|r| r.state == ReleaseState::Live).count();
        assert!(live <= 1, "{live} live releases");
        all
    };
    let r1 = store.create_release(release("prod", 1)).await.unwrap();
    store
        .switch_live(r1.id, ReleaseState::Superseded, None, 10)
        .await
        .unwrap();
    check(&store).await;
    let r2 = store.create_release(release("prod", 2)).await.unwrap();
    store
        .switch_live(r2.id, ReleaseState::Superseded, None, 20)
        .await
        .unwrap();
    let all = check(&store).await;
    let state = |all: &[gantry_engine::ports::ReleaseRecord], id| {
        all.iter().find(|r| r.id == id).unwrap().state
    };
    assert_eq!(state(&all, r1.id), ReleaseState::Superseded);
    assert_eq!(state(&all, r2.id), ReleaseState::Live);
    let mut back = release("prod", 3);
    back.kind = ReleaseKind::Rollback;
    back.source = Some(r1.number);
    let r3 = store.create_release(back).await.unwrap();
    assert!(r3.number > r2.number);
    assert_eq!(r3.source, r1.number);
    store
        .switch_live(
            r3.id,
            ReleaseState::RolledBack,
            Some("rolled back by test"),
            30,
        )
        .await
        .unwrap();
    let all = check(&store).await;
    assert_eq!(state(&all, r2.id), ReleaseState::RolledBack);
    assert_eq!(state(&all, r3.id), ReleaseState::Live);
    // A failed release and a retired one stay in the history.
    let r4 = store.create_release(release("prod", 4)).await.unwrap();
    store
        .set_release_state(r4.id, ReleaseState::Failed, Some("unhealthy"), 40)
        .await
        .unwrap();
    store.mark_retired(r4.id, 50).await.unwrap();
    let all = check(&store).await;
    assert_eq!(all.len(), 4);
    let r4 = all.iter().find(|r| r.id == r4.id).unwrap();
    assert_eq!(r4.state, ReleaseState::Failed);
    assert_eq!(r4.retired_at, Some(50));
    assert!(!store.release_events(r4.id).await.unwrap().is_empty());
}

/// Paging backwards from the newest run with `before` returns every run once, newest first,
/// even while new runs are queued between pages.
/// A canary's progress is kept with its release, replaced as it moves, read back as written by
/// any connection, and cleared; another release's is its own.
pub async fn a_canarys_progress_is_kept_with_its_release(store: Arc<dyn StateStore>) {
    let r1 = store.create_release(release("prod", 1)).await.unwrap();
    let r2 = store.create_release(release("prod", 2)).await.unwrap();
    assert_eq!(store.canary_progress(r2.id).await.unwrap(), None);
    for (step, percent, since) in [(0, 10, 1_000), (1, 50, 7_000_000_000_000)] {
        let p = CanaryProgress {
            step,
            percent,
            since,
        };
        store.set_canary_progress(r2.id, Some(p)).await.unwrap();
        assert_eq!(store.canary_progress(r2.id).await.unwrap(), Some(p));
    }
    assert_eq!(store.canary_progress(r1.id).await.unwrap(), None);
    store.set_canary_progress(r2.id, None).await.unwrap();
    assert_eq!(store.canary_progress(r2.id).await.unwrap(), None);
    assert_eq!(store.canary_progress(9_999).await.unwrap(), None);
}

pub async fn paging_is_stable_while_runs_are_added(store: Arc<dyn StateStore>) {
    for n in 0..25 {
        store.enqueue_run(queued("p", n, None)).await.unwrap();
    }
    let mut pages = Vec::new();
    let mut before = None;
    for page in 0..10 {
        let runs = store
            .list_runs(&RunFilter {
                before,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        if runs.is_empty() {
            break;
        }
        assert!(runs.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        before = runs.last().map(|r| r.id);
        pages.extend(runs.into_iter().map(|r| r.id));
        if page == 0 {
            // A run queued while paging lands before the first page, not inside the next.
            store.enqueue_run(queued("p", 99, None)).await.unwrap();
        }
    }
    let unique: HashSet<i64> = pages.iter().copied().collect();
    assert_eq!(pages.len(), 25, "{pages:?}");
    assert_eq!(unique.len(), 25);
    // Filters page the same way.
    store.enqueue_run(queued("other", 1, None)).await.unwrap();
    let other = store
        .list_runs(&RunFilter {
            project: Some("other".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].project, "other");
}

/// An owner's lease row: registered, renewed only while it exists, replaced by a second
/// registration of the same name, and gone once removed (renewing then says so).
pub async fn owner_leases_renew_until_removed(store: Arc<dyn StateStore>) {
    let lease = OwnerLease {
        name: "owner-1-2.lock".into(),
        host: "build-1".into(),
        pid: 42,
        started_at: 1_000,
        expires_at: 31_000,
    };
    store.register_owner(&lease).await.unwrap();
    assert_eq!(store.owner(&lease.name).await.unwrap(), Some(lease.clone()));
    assert!(store.renew_owner(&lease.name, 61_000).await.unwrap());
    assert_eq!(
        store.owner(&lease.name).await.unwrap().unwrap().expires_at,
        61_000
    );
    let again = OwnerLease {
        host: "build-2".into(),
        ..lease.clone()
    };
    store.register_owner(&again).await.unwrap();
    assert_eq!(
        store.owner(&lease.name).await.unwrap().unwrap().host,
        "build-2"
    );
    assert!(store.owner("someone-else").await.unwrap().is_none());
    store.remove_owner(&lease.name).await.unwrap();
    assert!(store.owner(&lease.name).await.unwrap().is_none());
    assert!(!store.renew_owner(&lease.name, 91_000).await.unwrap());
}

/// A run with one job and one step that printed `lines` lines, finished at `finished`
/// (still running when None).
async fn run_with_log(store: &Arc<dyn StateStore>, lines: i64, finished: Option<i64>) -> i64 {
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
            status: RunStatus::Running,
            created_at: 1,
            owner: None,
            stages: vec![NewStage {
                name: "build".into(),
                kind: "jobs",
                jobs: vec![gantry_engine::ports::NewJob {
                    name: "job".into(),
                    allow_failure: false,
                    waits_for: vec!["build".into()],
                }],
            }],
        })
        .await
        .unwrap();
    let step = store
        .start_step(ids.jobs[0][0], 1, 0, "step", 2)
        .await
        .unwrap();
    let batch: Vec<NewLogLine> = (1..=lines)
        .map(|line| NewLogLine {
            step_id: step,
            line,
            at: 3,
            stream: Stream::Stdout,
            text: format!("line {line}"),
        })
        .collect();
    store.append_logs(&batch).await.unwrap();
    if let Some(at) = finished {
        store
            .finish_step(step, StepStatus::Succeeded, Some(0), at)
            .await
            .unwrap();
        store
            .set_run_status(ids.run, RunStatus::Succeeded, at, None)
            .await
            .unwrap();
    }
    ids.run
}

/// Log retention removes the lines of runs finished before the cutoff and says when, once;
/// newer runs and runs still going keep theirs.
pub async fn log_retention_removes_only_old_finished_runs_logs(store: Arc<dyn StateStore>) {
    let old = run_with_log(&store, 30, Some(100)).await;
    let newer = run_with_log(&store, 5, Some(500)).await;
    let going = run_with_log(&store, 7, None).await;
    assert_eq!(store.remove_logs_before(200, 1000).await.unwrap(), (1, 30));
    assert!(store.logs(old, None, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.logs(newer, None, 0, 100).await.unwrap().len(), 5);
    assert_eq!(store.logs(going, None, 0, 100).await.unwrap().len(), 7);
    assert_eq!(store.logs_removed_at(old).await.unwrap(), Some(1000));
    assert_eq!(store.logs_removed_at(newer).await.unwrap(), None);
    // The run itself stays; a second sweep finds nothing more.
    assert!(store.run_detail(old).await.unwrap().is_some());
    assert_eq!(store.remove_logs_before(200, 2000).await.unwrap(), (0, 0));
    assert_eq!(store.logs_removed_at(old).await.unwrap(), Some(1000));
}

/// The tail of a log and pages back from it: newest first, each page below the last, lines of
/// other runs never mixed in; a step's line number finds its id.
pub async fn logs_page_back_from_the_tail(store: Arc<dyn StateStore>) {
    let run = run_with_log(&store, 25, None).await;
    let other = run_with_log(&store, 3, None).await;
    let tail = store.logs_before(run, None, None, 10).await.unwrap();
    let texts: Vec<&str> = tail.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts[0], "line 25");
    assert_eq!(texts[9], "line 16");
    let back = store
        .logs_before(run, Some("job"), Some(tail[9].id), 10)
        .await
        .unwrap();
    assert_eq!(back[0].text, "line 15");
    let rest = store
        .logs_before(run, None, Some(back[9].id), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 5);
    assert_eq!(rest[4].text, "line 1");
    assert!(
        store
            .logs_before(run, None, Some(rest[4].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .logs_before(run, Some("nope"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .logs_before(other, None, None, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let id = store.log_line_id(run, "job", "step", 16).await.unwrap();
    assert_eq!(id, Some(tail[9].id));
    assert_eq!(
        store.log_line_id(run, "job", "step", 99).await.unwrap(),
        None
    );
    assert_eq!(
        store.log_line_id(run, "job", "other", 1).await.unwrap(),
        None
    );
}

/// A session is found until it expires or is removed; making one forgets the expired.
pub async fn sessions_live_until_they_expire_or_end(store: Arc<dyn StateStore>) {
    let session = |id: &str, created_at, expires_at| SessionRecord {
        id_hash: id.into(),
        token_hash: "t".into(),
        csrf: format!("csrf-{id}"),
        created_at,
        expires_at,
    };
    store.create_session(&session("a", 100, 200)).await.unwrap();
    store.create_session(&session("b", 100, 500)).await.unwrap();
    assert_eq!(
        store.session("a", 199).await.unwrap(),
        Some(session("a", 100, 200))
    );
    assert_eq!(store.session("a", 200).await.unwrap(), None);
    assert_eq!(store.session("nope", 150).await.unwrap(), None);
    // A new session at 300 forgets a (expired): it is not found even by an earlier clock.
    store.create_session(&session("c", 300, 900)).await.unwrap();
    assert_eq!(store.session("a", 150).await.unwrap(), None);
    assert!(store.session("b", 400).await.unwrap().is_some());
    store.remove_session("b").await.unwrap();
    store.remove_session("b").await.unwrap();
    assert_eq!(store.session("b", 400).await.unwrap(), None);
    assert!(store.session("c", 400).await.unwrap().is_some());
    // Taken once: of racing takers one gets it; an expired one is removed, not given.
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_session("c", 400).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in takers {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got, vec![session("c", 300, 900)]);
    assert_eq!(store.session("c", 400).await.unwrap(), None);
    store.create_session(&session("d", 300, 900)).await.unwrap();
    assert_eq!(store.take_session("d", 900).await.unwrap(), None);
    assert_eq!(store.session("d", 400).await.unwrap(), None);
}

/// A queued run keeps its event and variables through the claim, and a re-read.
pub async fn runs_keep_their_event_and_variables(store: Arc<dyn StateStore>) {
    let mut run = queued("p", 1, Some("p/tags/v1.0.0/1".into()));
    run.branch = None;
    run.event = "tag".into();
    run.vars = [
        ("GANTRY_TAG".to_string(), "v1.0.0".to_string()),
        ("NOTE".to_string(), "quotes \" and 'ünïcode'".to_string()),
    ]
    .into();
    let id = store.enqueue_run(run.clone()).await.unwrap().unwrap();
    let claimed = store.claim_next_run("c", 10).await.unwrap().unwrap();
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.event, "tag");
    assert_eq!(claimed.branch, None);
    assert_eq!(claimed.vars, run.vars);
    let read = store.run_detail(id).await.unwrap().unwrap().run;
    assert_eq!(read.vars, run.vars);
    assert_eq!(read.event_kind(), gantry_model::TriggerEvent::Tag);
    // A run without variables reads as an empty map.
    let plain = store
        .enqueue_run(queued("p", 2, None))
        .await
        .unwrap()
        .unwrap();
    let read = store.run_detail(plain).await.unwrap().unwrap().run;
    assert!(read.vars.is_empty());
    // A planned job keeps the jobs it waits for.
    let planned = run_with_log(&store, 0, None).await;
    let detail = store.run_detail(planned).await.unwrap().unwrap();
    assert_eq!(detail.jobs[0].waits_for, ["build"]);
}

/// Caches: eight jobs saving one key at once keep one; lookups by key, then by prefix (the
/// newest), literal `_` and `%`; caches count as users of their objects.
pub async fn caches_keep_one_per_key_and_are_found_by_prefix(store: Arc<dyn StateStore>) {
    let cache = |key: &str, digest: &str, at: i64| gantry_engine::ports::CacheRecord {
        id: 0,
        project: "p".into(),
        key: key.into(),
        digest: digest.into(),
        size: 10,
        media_type: "application/vnd.gantry.tar+zstd".into(),
        created_at: at,
        last_used_at: at,
    };
    let saves = (0..8).map(|i| {
        let store = store.clone();
        let c = cache("cargo-aa", &format!("sha256:{i:064}"), 1);
        tokio::spawn(async move { store.save_cache(&c).await.unwrap() })
    });
    let mut kept = 0;
    for s in saves {
        kept += usize::from(s.await.unwrap());
    }
    assert_eq!(kept, 1, "one save wins");
    assert!(
        store
            .save_cache(&cache("cargo-bb", "sha256:b", 5))
            .await
            .unwrap()
    );
    assert!(
        store
            .save_cache(&cache("cargo_%x", "sha256:c", 9))
            .await
            .unwrap()
    );
    let exact = store
        .find_cache("p", "cargo-aa", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exact.key, "cargo-aa");
    let by_prefix = store
        .find_cache("p", "cargo-zz", &["nothing-".into(), "cargo-".into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        by_prefix.key, "cargo-bb",
        "the newest of the first prefix that has one"
    );
    // `_` and `%` are not wildcards.
    assert!(
        store
            .find_cache("p", "x", &["cargo_%".into()])
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_cache("p", "x", &["cargo%".into()])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_cache("other", "cargo-aa", &["cargo-".into()])
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.digest_in_use("sha256:b").await.unwrap());
    store.touch_cache(exact.id, 100).await.unwrap();
    let lru: Vec<String> = store
        .caches(Some("p"))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(
        lru,
        ["cargo-bb", "cargo_%x", "cargo-aa"],
        "least recently used first"
    );
    store.remove_cache(exact.id).await.unwrap();
    assert_eq!(store.caches(None).await.unwrap().len(), 2);
    assert!(!store.digest_in_use(&exact.digest).await.unwrap());
}

/// Superseding by key prefix: only queued, older runs whose key starts with the prefix (as
/// text: `_` is no wildcard).
pub async fn queued_runs_are_superseded_by_key_prefix(store: Arc<dyn StateStore>) {
    let keyed = |n: usize, key: &str| queued("p_1", n, Some(key.to_string()));
    let a = store
        .enqueue_run(keyed(1, "p_1/pulls/7/a"))
        .await
        .unwrap()
        .unwrap();
    let b = store
        .enqueue_run(keyed(2, "p_1/pulls/70/b"))
        .await
        .unwrap()
        .unwrap();
    let c = store
        .enqueue_run(keyed(3, "pX1/pulls/7/c"))
        .await
        .unwrap()
        .unwrap();
    let d = store
        .enqueue_run(keyed(4, "p_1/pulls/7/d"))
        .await
        .unwrap()
        .unwrap();
    let gone = store
        .supersede_queued_by_key("p_1/pulls/7/", d, "superseded by a newer commit", 5)
        .await
        .unwrap();
    assert_eq!(gone, [a]);
    let status = |id| {
        let store = store.clone();
        async move { store.run_detail(id).await.unwrap().unwrap().run.status }
    };
    assert_eq!(status(a).await, RunStatus::Cancelled);
    for kept in [b, c, d] {
        assert_eq!(status(kept).await, RunStatus::Queued, "run {kept}");
    }
}

/// `contract!(name => open)`: a module `name` with one test per clause of the contract, each
/// on a fresh store that `open(dir)` makes in a temporary directory.
macro_rules! contract {
    ($backend:ident => $open:path) => {
        mod $backend {
            contract!(@tests $open;
                claims_are_exclusive,
                a_trigger_key_makes_one_run_under_concurrent_inserts,
                release_numbers_are_unique_under_concurrent_creates,
                leases_expire_and_only_expired_ones_are_taken_over,
                owner_leases_renew_until_removed,
                the_history_of_releases_only_grows,
                paging_is_stable_while_runs_are_added,
                log_retention_removes_only_old_finished_runs_logs,
                logs_page_back_from_the_tail,
                sessions_live_until_they_expire_or_end,
                runs_keep_their_event_and_variables,
                caches_keep_one_per_key_and_are_found_by_prefix,
                queued_runs_are_superseded_by_key_prefix,
                queued_jobs_are_claimed_once_by_runners_with_their_labels,
                leases_renew_until_they_pass_and_lost_jobs_stay_lost,
                the_share_key_is_stored_once_and_replaced_by_a_rotation,
                a_cancel_asked_for_elsewhere_is_found_by_the_runs_owner,
                an_environment_has_one_driver_under_a_lease,
                a_canarys_progress_is_kept_with_its_release,
                a_request_to_a_driver_is_taken_once_by_it_and_answered,
                run_filters_combine,
                log_batches_of_any_size_are_stored_whole_and_in_order);
        }
    };
    (@tests $open:path; $($clause:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $clause() {
            let dir = tempfile::tempdir().unwrap();
            let (store, _database) = $open(dir.path()).await;
            super::$clause(store.clone()).await;
            store.close().await;
        }
    )*};
}

async fn open_sqlite(dir: &Path) -> (Arc<dyn StateStore>, Option<pg::TestDatabase>) {
    let url = format!("sqlite://{}", dir.join("gantry.db").display());
    (gantry_store::open_state(&url).await.unwrap(), None)
}

/// A fresh database of the cluster `GANTRY_TEST_POSTGRES` names (`.ci/run` starts one), dropped
/// when the test ends.
async fn open_postgres(_dir: &Path) -> (Arc<dyn StateStore>, Option<pg::TestDatabase>) {
    let db = pg::TestDatabase::create();
    (gantry_store::open_state(&db.url).await.unwrap(), Some(db))
}

use gantry_store::testing as pg;

mod filters;
mod jobs;
mod shared;
pub use filters::*;
pub use jobs::*;

// The backends: one line each.
contract!(sqlite => super::open_sqlite);
contract!(postgres => super::open_postgres);
