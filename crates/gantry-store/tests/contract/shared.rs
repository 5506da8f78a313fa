//! What only a store shared between processes does, on PostgreSQL: a data directory's SQLite
//! state copied into it whole (ids, logs, releases, tokens; the next id after the last), and
//! queue signals reaching a listener through another connection.

use super::{pg, queued, release, run_with_log};
use futures_util::StreamExt;
use gantry_engine::ports::{RunFilter, StateStore};
use gantry_model::Role;
use std::sync::Arc;
use std::time::Duration;

/// Everything readable of a store, as text, for comparing two stores.
async fn everything(store: &Arc<dyn StateStore>) -> String {
    let runs = store
        .list_runs(&RunFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = format!("{runs:?}\n");
    for run in &runs {
        let detail = store.run_detail(run.id).await.unwrap();
        let logs = store.logs(run.id, None, 0, 100_000).await.unwrap();
        out += &format!("{detail:?}\n{} lines {:?}\n", logs.len(), logs.last());
    }
    let releases = store.releases("p", "prod").await.unwrap();
    out += &format!("{releases:?}\n");
    for r in &releases {
        out += &format!("{:?}\n", store.release_events(r.id).await.unwrap());
    }
    out += &format!("{:?}\n", store.token_by_hash("hash-1").await.unwrap());
    out += &format!("{:?}\n", store.list_projects().await.unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_state_is_copied_whole_with_its_ids_and_only_into_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    let old = gantry_store::open_state(&url).await.unwrap();
    // More log lines than one page of the copy, so paging is exercised.
    let first = run_with_log(&old, 25_003, Some(9)).await;
    let second = run_with_log(&old, 3, None).await;
    let queued_run = old
        .enqueue_run(queued("p", 7, None))
        .await
        .unwrap()
        .unwrap();
    let r = old.create_release(release("prod", 1)).await.unwrap();
    old.switch_live(
        r.id,
        gantry_engine::release::ReleaseState::Superseded,
        None,
        2,
    )
    .await
    .unwrap();
    old.create_release(release("prod", 3)).await.unwrap();
    old.create_token("ci", Role::Deployer, "hash-1", 5)
        .await
        .unwrap();
    let before = everything(&old).await;
    old.close().await;

    let db = pg::TestDatabase::create();
    let source = gantry_store::open_sql(&url, gantry_store::Sharing::Command)
        .await
        .unwrap();
    let target = gantry_store::open_sql(&db.url, gantry_store::Sharing::Server)
        .await
        .unwrap();
    let report = source.copy_into(&target).await.unwrap();
    let lines = report
        .tables
        .iter()
        .find(|(t, _)| t == "log_lines")
        .unwrap()
        .1;
    assert_eq!(lines, 25_006, "{report:?}");

    let new: Arc<dyn StateStore> = Arc::new(target);
    assert_eq!(everything(&new).await, before);
    // The next ids follow the copied ones.
    let next = new
        .enqueue_run(queued("p", 8, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, queued_run + 1, "runs {first}, {second}, {queued_run}");
    let next_release = new.create_release(release("prod", 4)).await.unwrap();
    assert_eq!(next_release.number, 3);

    // A second copy into the same database is refused, and changes nothing there.
    let after_first = everything(&new).await;
    let e = source
        .copy_into(
            &gantry_store::open_sql(&db.url, gantry_store::Sharing::Server)
                .await
                .unwrap(),
        )
        .await;
    let e = format!("{:#}", e.unwrap_err());
    assert!(e.contains("already holds state"), "{e}");
    assert_eq!(everything(&new).await, after_first);
    new.close().await;
    StateStore::close(&source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_through_one_connection_signals_listeners_on_another() {
    let db = pg::TestDatabase::create();
    let listener = gantry_store::open_state(&db.url).await.unwrap();
    let writer = gantry_store::open_state(&db.url).await.unwrap();
    let mut signals = listener
        .queue_signals()
        .await
        .unwrap()
        .expect("PostgreSQL signals");
    writer.enqueue_run(queued("p", 1, None)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), signals.next())
        .await
        .expect("a signal within 20 s")
        .expect("the stream goes on");
    // A run already there (the same trigger key) queues nothing, so signals nothing more
    // than what came before; a new run signals again.
    let key = Some("p/main/1".to_string());
    writer
        .enqueue_run(queued("p", 2, key.clone()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), signals.next())
        .await
        .expect("a second signal")
        .unwrap();
    assert_eq!(writer.enqueue_run(queued("p", 2, key)).await.unwrap(), None);
    let none = tokio::time::timeout(Duration::from_millis(500), signals.next()).await;
    assert!(none.is_err(), "a run not queued sent no signal");
    drop(signals);
    writer.close().await;
    listener.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_is_tls_verified_by_the_ca_the_url_names() {
    let db = pg::TestDatabase::create();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url,
        pg::ca_file()
    );
    let store = gantry_store::open_sql(&url, gantry_store::Sharing::Server)
        .await
        .unwrap();
    assert!(
        store.connection_is_tls().await.unwrap(),
        "the connection is not TLS"
    );
    // Verified against the system's roots instead, the test CA's certificate is refused.
    let refused = gantry_store::open_sql(
        &format!("{}?sslmode=verify-full", db.url),
        gantry_store::Sharing::Server,
    )
    .await
    .err()
    .expect("a certificate no system root signed is refused");
    let e = format!("{refused:#}");
    assert!(e.contains("connecting to the state database"), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    StateStore::close(&store).await;
}

#[tokio::test]
async fn sqlite_has_no_signals_and_its_workers_poll() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    let store = gantry_store::open_state(&url).await.unwrap();
    assert!(store.queue_signals().await.unwrap().is_none());
    store.close().await;
}
