//! Test databases on the PostgreSQL cluster that `GANTRY_TEST_POSTGRES` names (`.ci/postgres`
//! starts one on 127.0.0.1 and prints its URL; `.ci/run` exports it). Each test gets a database
//! of its own, dropped (with its connections) when the test ends.

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

impl TestDatabase {
    pub async fn create() -> Self {
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
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to GANTRY_TEST_POSTGRES ({admin}): {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: Drop may run inside the test's runtime, which cannot be
        // blocked on.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            })
        })
        .join();
    }
}
