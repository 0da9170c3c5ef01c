//! Property test: under any sequence of posts and receipts, on both databases, read and
//! delivered positions move exactly as the rules say: forward to what was reported
//! (clamped to the room's newest message, delivered at least read), never back, and
//! unread counts the messages after the read position.

mod support;

use app::protocol::RoomSummary;
use proptest::prelude::*;
use support::databases::TestDb;

#[derive(Debug, Clone)]
enum Op {
    /// Someone else posts a message.
    Post,
    /// The reader reports positions (possibly stale, repeated or absurd).
    Receipt { delivered: Option<i64>, read: Option<i64> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Post),
        3 => (proptest::option::of(-3i64..40), proptest::option::of(-3i64..40))
            .prop_map(|(delivered, read)| Op::Receipt { delivered, read }),
    ]
}

/// What the positions must be after a receipt, computed from the rules alone.
fn expected(current: (i64, i64), reported: (Option<i64>, Option<i64>), last_seq: i64) -> (i64, i64) {
    let read = reported.1.map_or(0, |seq| seq.clamp(0, last_seq));
    let delivered = reported.0.map_or(0, |seq| seq.clamp(0, last_seq)).max(read);
    (current.0.max(delivered), current.1.max(read))
}

async fn check(db: TestDb, ops: Vec<Op>) {
    let store = db.open().await;
    let writer = store.create_user("writer", "Writer", "h", 1).await.unwrap();
    let reader = store.create_user("reader", "Reader", "h", 1).await.unwrap();
    let (room, _) = store.create_room("prop", &writer, 1).await.unwrap();
    store.join(room.id, &reader, 2).await.unwrap();
    let summary = |rooms: Vec<RoomSummary>| rooms.into_iter().find(|r| r.id == room.id).unwrap();
    let start = summary(store.rooms_of(reader.id).await.unwrap());
    let (mut delivered, mut read) = (start.read_seq, start.read_seq);
    let mut posted = Vec::new();
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Post => {
                let message = store.post(room.id, &writer, &format!("c{n}"), "x", 3).await.unwrap();
                posted.push(message.message().seq);
            }
            Op::Receipt { delivered: d, read: r } => {
                let last_seq = store.room(room.id).await.unwrap().unwrap().last_seq;
                let want = expected((delivered, read), (d, r), last_seq);
                let moved = store.advance_receipt(room.id, reader.id, d, r).await.unwrap();
                let positions = store.receipts(room.id, 10).await.unwrap();
                let mine = positions.iter().find(|p| p.user.id == reader.id).unwrap();
                assert_eq!((mine.delivered_seq, mine.read_seq), want, "after reporting {d:?}/{r:?} at {last_seq}");
                assert_eq!(moved, (want != (delivered, read)).then_some(want), "reported a move exactly when one happened");
                (delivered, read) = want;
            }
        }
        let room_now = summary(store.rooms_of(reader.id).await.unwrap());
        assert!(room_now.read_seq <= room_now.last_seq, "never past the newest message");
        assert_eq!(room_now.read_seq, read);
        let unread = posted.iter().filter(|seq| **seq > read).count() as i64;
        assert_eq!(room_now.unread(), unread, "unread is the posts after the read position");
    }
    db.remove().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn positions_follow_the_rules_on_sqlite(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move { check(TestDb::sqlite().await, ops).await });
    }

    #[test]
    fn positions_follow_the_rules_on_postgres(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move { check(TestDb::postgres().await, ops).await });
    }
}
