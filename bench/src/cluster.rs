//! What several Parley nodes share on this machine: a fresh schema in the local
//! PostgreSQL (the source of truth) and a `redis-server` of the run's own (events
//! between the nodes). Both are gone when the run ends, whether it passed, failed or
//! panicked (the caller drops the schema on the way out).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::{Connection, PgConnection};

/// The PostgreSQL the tests use, unless `PARLEY_TEST_POSTGRES_URL` names another.
fn postgres_url() -> String {
    std::env::var("PARLEY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// An empty schema of the run's own, so a run never meets an earlier run's accounts.
pub struct Schema {
    name: String,
}

impl Schema {
    pub async fn create() -> Result<Schema, String> {
        let name = format!("parley_bench_{}", std::process::id());
        let mut admin = PgConnection::connect(&postgres_url())
            .await
            .map_err(|e| format!("PostgreSQL at {}: {e}", postgres_url()))?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Schema { name })
    }

    /// The database URL whose every connection starts in this schema (libpq's
    /// `options` parameter, which sqlx and the server both honour).
    pub fn url(&self) -> String {
        format!("{}?options=-c%20search_path%3D{}", postgres_url(), self.name)
    }

    /// Vacuums and analyses every table of the schema, as autovacuum would have long
    /// since on a database that grew to this size: seeding updates each room's row once
    /// per member, and until vacuumed every read of `rooms` walks those dead versions
    /// (they were most of PostgreSQL's work per connect in the first 50,000-socket run).
    pub async fn settle(&self) -> Result<(), String> {
        let mut admin = PgConnection::connect(&postgres_url())
            .await
            .map_err(|e| e.to_string())?;
        let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
            .bind(&self.name)
            .fetch_all(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        for table in tables {
            sqlx::query(&format!("VACUUM ANALYZE {}.{table}", self.name))
                .execute(&mut admin)
                .await
                .map_err(|e| format!("vacuuming {table}: {e}"))?;
        }
        Ok(())
    }

    /// Drops the schema and everything the run stored in it.
    pub async fn drop_all(self) {
        if let Ok(mut admin) = PgConnection::connect(&postgres_url()).await {
            let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
                .execute(&mut admin)
                .await;
        }
    }
}

/// A `redis-server` that keeps nothing on disk; killed when dropped.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub async fn start(dir: &Path) -> Result<Redis, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        let redis = Redis { child, port };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(redis);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("redis-server did not start on port {port}"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
