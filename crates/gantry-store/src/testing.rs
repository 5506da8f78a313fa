//! For tests (this crate's contract suite, the binary's integration tests): databases on the
//! PostgreSQL cluster that `GANTRY_TEST_POSTGRES` names (`.ci/postgres` starts one on 127.0.0.1
//! and prints its URL; `.ci/run` exports it). Each test gets a database of its own, dropped
//! (with its connections) when the test ends. Not for use outside tests: it panics on failure.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TestDatabase {
    /// The URL of the test's own database.
    pub url: String,
    admin: String,
    name: String,
}

/// The cluster's URL, or a failure that says how to get one: these tests never pass by
/// skipping.
pub fn admin_url() -> String {
    std::env::var("GANTRY_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL tests need GANTRY_TEST_POSTGRES=postgres://USER@127.0.0.1:PORT/postgres \
             (`export GANTRY_TEST_POSTGRES=$(.ci/postgres)` starts a cluster; .ci/run does it)"
        )
    })
}

/// The certificate of the CA the test cluster's TLS certificate is signed by
/// (`GANTRY_TEST_POSTGRES_CA`; `.ci/postgres ca` prints it), or a failure that says how to get it.
pub fn ca_file() -> String {
    std::env::var("GANTRY_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL TLS tests need GANTRY_TEST_POSTGRES_CA, the CA of the test cluster's certificate \
             (`export GANTRY_TEST_POSTGRES_CA=$(.ci/postgres ca)`; .ci/run does it)"
        )
    })
}

impl TestDatabase {
    /// A new, empty database. Blocks (on a thread of its own, so it may be called from inside
    /// a runtime or outside one).
    pub fn create() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let admin = admin_url();
        let name = format!(
            "gantry_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        on_own_runtime(&admin, format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("creating a test database on GANTRY_TEST_POSTGRES ({admin}): {e}")
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

/// Runs one statement on the cluster, on a thread and runtime of its own: callers may be inside
/// a runtime, which cannot be blocked on.
fn on_own_runtime(admin: &str, sql: String) -> Result<(), String> {
    let admin = admin.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = PgConnection::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            Ok(())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".into()))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = on_own_runtime(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
