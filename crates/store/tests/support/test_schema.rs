//! A Postgres schema of its own per test, dropped at the end: what the store crate's
//! Postgres tests and the end-to-end Postgres tests (`tests/postgres.rs` at the workspace
//! root, which includes this file) stand on.
//!
//! The server is `FINCODE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Without one, [`TestSchema::new`] says so on
//! stderr and the test passes; under `CI=true` it fails instead.

use tokio_postgres::Row;
use tokio_postgres::types::{FromSqlOwned, ToSql};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub(crate) fn url() -> String {
    std::env::var("FINCODE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A plain connection for the test's own look-ups; `None` (said loudly) without a
/// server, a panic under `CI=true`.
async fn admin() -> Option<tokio_postgres::Client> {
    let url = url();
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Some(client)
        }
        Err(error) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no Postgres at {url} ({error}), and CI=true: the Postgres tests must run"
            );
            eprintln!(
                "SKIPPING a Postgres test: no server at {url} ({error}); set \
                 FINCODE_TEST_POSTGRES_URL to run it"
            );
            None
        }
    }
}

/// A fresh schema name and a connection to look into it; the schema (created by the
/// store under test) is dropped with everything in it when the test ends, even by a
/// panic.
pub(crate) struct TestSchema {
    pub(crate) name: String,
    pub(crate) admin: tokio_postgres::Client,
}

// === impl TestSchema ===

impl TestSchema {
    /// `None` without a server: the test returns (see [`admin`]).
    pub(crate) async fn new() -> Option<Self> {
        let admin = admin().await?;
        let name = format!("fincode_test_{}", uuid::Uuid::now_v7().simple());
        Some(Self { name, admin })
    }

    /// The rows `sql` returns; `sql` may name the schema as `{schema}`.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Row> {
        let sql = sql.replace("{schema}", &self.name);
        self.admin.query(&sql, &[]).await.unwrap()
    }

    /// The first column of the one row `sql` returns; `sql` may name the schema as
    /// `{schema}`.
    pub(crate) async fn value<T: FromSqlOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> T {
        let sql = sql.replace("{schema}", &self.name);
        self.admin.query_one(&sql, params).await.unwrap().get(0)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Drop cannot await: a thread with its own runtime and connection does it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client.batch_execute(&sql).await.unwrap();
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}
