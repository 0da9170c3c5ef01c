//! What a greeting and a post cost the database, counted in statements. Every socket
//! that connects is greeted with the person's rooms and their unread positions, so
//! after a restart this runs once per person in the reconnect storm: a statement per
//! unread room would make the storm's cost grow with how behind people are. Posts are
//! the steady load.
//!
//! Statements are counted from sqlx's own log of each one it runs (target
//! `sqlx::query`), through a global subscriber: hence a test binary of its own, with
//! one test, so nothing else runs statements while it counts.

mod support;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use app::protocol::UserRef;
use server::storage::{Posted, Store};
use support::databases::TestDb;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};

static STATEMENTS: AtomicUsize = AtomicUsize::new(0);

/// Counts the statements sqlx reports running, but for those that are the same for
/// any transaction (begin, commit, rollback: sqlx logs SQLite's commit from its worker
/// thread, sometimes after the caller has gone on) and SQLite's pragmas: checkpoints (a
/// task of their own runs them every second and between batches of posts) and the
/// settings of a connection the pool opens, whenever it happens to need one.
struct CountStatements;

impl<S: tracing::Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut not_counted = NotCounted(false);
            event.record(&mut not_counted);
            if !not_counted.0 {
                STATEMENTS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Whether a statement logged is left out of the count, from its summary.
struct NotCounted(bool);

impl tracing::field::Visit for NotCounted {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            let summary = format!("{value:?}");
            let statement = summary.trim_matches('"');
            self.0 = statement.starts_with("PRAGMA") || ["BEGIN", "COMMIT", "ROLLBACK"].contains(&statement);
        }
    }
}

/// One more than the rooms one statement gathers (100), so the chunking shows.
const UNREAD_ROOMS: usize = 101;

async fn user(store: &Arc<dyn Store>, name: &str) -> UserRef {
    store.create_user(name, &format!("{name} display"), "hash", 1).await.unwrap()
}

/// Bia is in `UNREAD_ROOMS` rooms with unread messages and a mention in each, plus one
/// room she has read to its end; she is greeted with all of it in three statements
/// (her rooms, then the unread positions of 100 rooms and of the last one), and each
/// room gets its own positions.
async fn a_person_behind_in_many_rooms_is_greeted_in_few_statements(db: TestDb) {
    let store = db.open().await;
    let ana = user(&store, "ana").await;
    let bia = user(&store, "bia").await;
    let mut expected = Vec::new();
    for n in 0..UNREAD_ROOMS {
        let (room, _) = store.create_room(&format!("sala {n}"), &ana, 1).await.unwrap();
        store.join(room.id, &bia, 2).await.unwrap();
        let mut unread = Vec::new();
        let mut mentions = Vec::new();
        for m in 0..=n % 3 {
            let text = if m == 0 { format!("@bia, ação {n} 😀") } else { format!("Ótimo! {m}") };
            let Posted::New(message) = store.post(room.id, &ana, &format!("c{n}-{m}"), &text, 3).await.unwrap() else {
                panic!("stored before?")
            };
            unread.push(message.seq);
            if m == 0 {
                mentions.push(message.seq);
            }
        }
        expected.push((room.id, unread, mentions));
    }
    let (read, _) = store.create_room("lida", &ana, 1).await.unwrap();
    store.join(read.id, &bia, 2).await.unwrap();
    let Posted::New(seen) = store.post(read.id, &ana, "seen", "@bia já viu", 3).await.unwrap() else { panic!() };
    store.advance_receipt(read.id, bia.id, Some(seen.seq), Some(seen.seq)).await.unwrap();

    let before = STATEMENTS.load(Ordering::SeqCst);
    let rooms = store.rooms_of(bia.id).await.unwrap();
    let statements = STATEMENTS.load(Ordering::SeqCst) - before;

    assert_eq!(rooms.len(), UNREAD_ROOMS + 1);
    for (room_id, unread, mentions) in expected {
        let room = rooms.iter().find(|room| room.id == room_id).unwrap();
        assert_eq!((&room.unread_seqs, &room.mention_seqs), (&unread, &mentions), "room {}", room.name);
    }
    let read = rooms.iter().find(|room| room.id == read.id).unwrap();
    assert!(read.unread_seqs.is_empty() && read.mention_seqs.is_empty(), "read to its end");
    assert_eq!(statements, 3, "statements for a greeting with {UNREAD_ROOMS} unread rooms");
    db.remove().await;
}

/// The statements one post costs, with the commit around it: every statement is a
/// hand-off to SQLite's worker thread and back. A new post from a member, the usual
/// one, is stored without first looking up the membership and the client id (the
/// insert skips what it must not store); a repeat or a stranger's post then takes the
/// careful way, and nothing about the room's numbering shows it.
async fn a_new_post_is_stored_in_few_statements(db: TestDb) {
    let store = db.open().await;
    let ana = user(&store, "ana").await;
    let stranger = user(&store, "cau").await;
    let (room, _) = store.create_room("sala", &ana, 1).await.unwrap();

    let before = STATEMENTS.load(Ordering::SeqCst);
    let Posted::New(first) = store.post(room.id, &ana, "c1", "Ótimo! ação 😀", 2).await.unwrap() else { panic!("new") };
    let statements = STATEMENTS.load(Ordering::SeqCst) - before;
    assert_eq!(statements, 3, "the room's number, the insert, the sender's positions");

    let again = store.post(room.id, &ana, "c1", "Ótimo! ação 😀", 3).await.unwrap();
    assert!(matches!(&again, Posted::Duplicate(message) if message.seq == first.seq && message.id == first.id));
    assert!(matches!(store.post(room.id, &stranger, "s1", "olá", 4).await, Err(server::storage::StoreError::NotMember)));
    let Posted::New(second) = store.post(room.id, &ana, "c2", "e agora", 5).await.unwrap() else { panic!("new") };
    assert_eq!(second.seq, first.seq + 1, "no number was taken by the repeat or the stranger");
    let history = store.history_after(room.id, first.seq - 1, 10).await.unwrap();
    let texts: Vec<(i64, &str)> = history.iter().map(|message| (message.seq, message.text.as_str())).collect();
    assert_eq!(texts, [(first.seq, "Ótimo! ação 😀"), (second.seq, "e agora")]);
    db.remove().await;
}

#[tokio::test]
async fn statements_on_both_databases() {
    tracing_subscriber::registry().with(CountStatements).init();
    a_person_behind_in_many_rooms_is_greeted_in_few_statements(TestDb::sqlite().await).await;
    a_person_behind_in_many_rooms_is_greeted_in_few_statements(TestDb::postgres().await).await;
    a_new_post_is_stored_in_few_statements(TestDb::sqlite().await).await;
    a_new_post_is_stored_in_few_statements(TestDb::postgres().await).await;
}
