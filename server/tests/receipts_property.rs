//! Property test: under any sequence of posts and receipts, read and delivered
//! positions only move forward, stay within the room, and unread = latest − read.

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn positions_only_move_forward_and_unread_is_latest_minus_read(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let db = TestDb::sqlite().await;
            let store = db.open().await;
            let writer = store.create_user("writer", "Writer", "h", 1).await.unwrap();
            let reader = store.create_user("reader", "Reader", "h", 1).await.unwrap();
            let (room, _) = store.create_room("prop", &writer, 1).await.unwrap();
            store.join(room.id, &reader, 2).await.unwrap();
            let summary = |rooms: Vec<RoomSummary>| rooms.into_iter().find(|r| r.id == room.id).unwrap();
            let start = summary(store.rooms_of(reader.id).await.unwrap());
            let (mut delivered, mut read) = (start.read_seq, start.read_seq);
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Post => {
                        store.post(room.id, &writer, &format!("c{n}"), "x", 3).await.unwrap();
                    }
                    Op::Receipt { delivered: d, read: r } => {
                        let moved = store.advance_receipt(room.id, reader.id, d, r).await.unwrap();
                        let positions = store.receipts(room.id).await.unwrap();
                        let mine = positions.iter().find(|p| p.user.id == reader.id).unwrap();
                        assert!(mine.read_seq >= read && mine.delivered_seq >= delivered, "never backwards");
                        assert!(mine.delivered_seq >= mine.read_seq, "read implies delivered");
                        assert_eq!(moved.is_some(), (mine.delivered_seq, mine.read_seq) != (delivered, read));
                        delivered = mine.delivered_seq;
                        read = mine.read_seq;
                    }
                }
                let room_now = summary(store.rooms_of(reader.id).await.unwrap());
                assert!(room_now.read_seq <= room_now.last_seq, "never past the newest message");
                assert_eq!(room_now.read_seq, read);
                assert_eq!(room_now.unread(), room_now.last_seq - read);
            }
            db.remove().await;
        });
    }
}
