//! Parley's accounts, rooms, sessions and history, made straight in its storage before
//! it starts: hashing thousands of passwords through the API would take minutes and
//! measure nothing the benchmark is about.

use std::path::Path;

use futures::{StreamExt, stream};
use server::storage::{self, StoreOptions};
use sha2::{Digest, Sha256};

use crate::targets::Seat;

/// The database the server started with `data_dir` uses.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("parley.db").display())
}

/// How long ago seeded sessions were last seen.
const STALE_SESSION_MS: i64 = 120_000;

/// The cookie of seat `n`'s session: every seat's token follows from its number, so a
/// process holding some of a run's sockets needs only their numbers.
pub fn session_cookie(n: usize) -> String {
    format!("parley_session={}", session_token(n))
}

fn session_token(n: usize) -> String {
    format!("{n:064x}")
}

/// Seats seeded at once: enough to keep a PostgreSQL connection pool busy, and SQLite's
/// one connection simply takes them in turn.
const SEEDING_CONCURRENCY: usize = 16;

/// One account per seat, a member of its seat's room only, with a live session, in the
/// database at `database_url` (SQLite or PostgreSQL). Returns the seats with their
/// cookies, and the ids of rooms `0..rooms`.
pub async fn parley(database_url: &str, seat_rooms: &[usize], rooms: usize) -> (Vec<Seat>, Vec<i64>) {
    let options = StoreOptions {
        max_connections: if database_url.starts_with("postgres") { 8 } else { 1 },
        sqlite_full_sync: false,
    };
    let store = storage::open(database_url, &options)
        .await
        .expect("open storage");
    let mut room_ids = Vec::with_capacity(rooms);
    for room in 0..rooms {
        room_ids.push(
            store
                .ensure_public_room(&format!("bench-{room}"), 1)
                .await
                .expect("room")
                .id,
        );
    }
    let room_ids_ref = &room_ids;
    let store = &store;
    let seats = stream::iter(seat_rooms.iter().enumerate())
        .map(|(n, &room)| async move {
            let user = store
                .create_user(
                    &format!("bench{n:06}"),
                    &format!("Bench {n}"),
                    "not-a-hash",
                    1,
                )
                .await
                .expect("user");
            store.join(room_ids_ref[room], &user, 2).await.expect("join");
            let token_hash = hex::encode(Sha256::digest(session_token(n).as_bytes()));
            // Last seen two minutes ago, as after a restart: the server notes each
            // session's use again when it reconnects, as it would in a real storm.
            store
                .create_session(user.id, &token_hash, now_millis() - STALE_SESSION_MS, i64::MAX)
                .await
                .expect("session");
            Seat {
                room,
                cookie: Some(session_cookie(n)),
            }
        })
        .buffered(SEEDING_CONCURRENCY)
        .collect()
        .await;
    (seats, room_ids)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Fills room `room_id` with `count` messages from `sender_id` in one statement (a
/// million posts one by one would take many minutes), as storage would have stored
/// them: consecutive sequence numbers and the room's last sequence number moved on.
pub async fn history(data_dir: &Path, room_id: i64, sender_id: i64, count: u64) {
    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect(&sqlite_url(data_dir))
        .await
        .expect("open database");
    let mut tx = db.begin().await.expect("begin");
    let first: i64 = sqlx::query_scalar("SELECT last_seq FROM rooms WHERE id = ?")
        .bind(room_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
         INSERT INTO messages (room_id, seq, sender_id, kind, body, client_id, created_at)
         SELECT ?1, ?4 + i, ?2, 'text', 'Mensagem de histórico número ' || i || ' — ação, Ótimo! 🎉', 'h' || i, 1700000000000 + i FROM n",
    )
    .bind(room_id)
    .bind(sender_id)
    .bind(count as i64)
    .bind(first)
    .execute(&mut *tx)
    .await
    .expect("insert history");
    sqlx::query("UPDATE rooms SET last_seq = last_seq + ? WHERE id = ?")
        .bind(count as i64)
        .bind(room_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.expect("commit");
}
