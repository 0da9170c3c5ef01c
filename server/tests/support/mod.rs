//! Shared by the integration tests.
#![allow(dead_code, unused_macros)]

pub mod cluster;
pub mod crowd;
pub mod databases;
pub mod process;
pub mod server;

/// For each test function named (an `async fn(TestDb)`), defines `mod <name>` with two
/// tests: one against a server on a fresh SQLite database, one on a fresh PostgreSQL
/// schema. The socket-level suites run everything on both real databases this way.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(crate::support::databases::TestDb::sqlite().await).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(crate::support::databases::TestDb::postgres().await).await;
            }
        }
    )*};
}
