//! Fresh, real databases for tests: a SQLite file in a temporary folder, or a private
//! schema in the local PostgreSQL (`PARLEY_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped when the test is done.

#![allow(dead_code)]

use std::sync::Arc;

use server::storage::{self, PostgresStore, Store, StoreOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub fn postgres_url() -> String {
    std::env::var("PARLEY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn options() -> StoreOptions {
    StoreOptions { max_connections: 8, sqlite_full_sync: false }
}

/// A database that exists for one test.
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir },
    Postgres { schema: String },
}

impl TestDb {
    pub async fn sqlite() -> Self {
        TestDb::Sqlite { dir: tempfile::tempdir().unwrap() }
    }

    /// Creates an empty schema; connections opened through [`TestDb::url`] use it.
    pub async fn postgres() -> Self {
        let schema = format!("parley_test_{}", random_suffix());
        let admin = PgPoolOptions::new().max_connections(1).connect(&postgres_url()).await.unwrap_or_else(|err| {
            panic!("PostgreSQL at {} is needed for the storage tests: {err}", postgres_url())
        });
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
        admin.close().await;
        TestDb::Postgres { schema }
    }

    /// The URL the server would be configured with for this database.
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite { dir } => format!("sqlite://{}", dir.path().join("parley.db").display()),
            TestDb::Postgres { schema } => {
                // libpq's `options` parameter: every connection starts in the schema.
                format!("{}?options=-c%20search_path%3D{schema}", postgres_url())
            }
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            TestDb::Sqlite { .. } => storage::open(&self.url(), &options()).await.unwrap(),
            TestDb::Postgres { schema } => {
                let connect: PgConnectOptions = postgres_url().parse().unwrap();
                // Named after the schema, so a test can find its own connections.
                let connect = connect.options([("search_path", schema.as_str())]).application_name(schema);
                let pool = PgPoolOptions::new().max_connections(8).connect_with(connect).await.unwrap();
                Arc::new(PostgresStore::from_pool(pool).await.unwrap())
            }
        }
    }

    /// Drops the PostgreSQL schema (SQLite's folder goes with the value).
    pub async fn remove(self) {
        if let TestDb::Postgres { schema } = self {
            let admin = PgPoolOptions::new().max_connections(1).connect(&postgres_url()).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
        }
    }
}

fn random_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000, n)
}
