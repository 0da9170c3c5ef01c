//! The storage suite, run against both backends on real databases: SQLite in a
//! temporary file and the local PostgreSQL in a fresh schema per test.

mod support;

use std::sync::Arc;

use app::protocol::{MessageKind, RoomSummary, UserRef};
use server::storage::{Posted, Store, StoreError};
use support::databases::TestDb;

/// Defines `mod $name { sqlite, postgres }`, each running `$body(store)`.
macro_rules! on_both_backends {
    ($($name:ident => $body:expr;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let db = TestDb::sqlite().await;
                ($body)(db.open().await).await;
                db.remove().await;
            }

            #[tokio::test]
            async fn postgres() {
                let db = TestDb::postgres().await;
                ($body)(db.open().await).await;
                db.remove().await;
            }
        }
    )*};
}

async fn user(store: &Arc<dyn Store>, name: &str) -> UserRef {
    store.create_user(name, &format!("{name} display"), "hash", 1).await.unwrap()
}

/// Quotes, comment markers, wildcards, non-ASCII and NUL.
const INJECTION: &str = "Robert'); DROP TABLE messages;-- \"quoted\" \\ %_ ?; ünï \u{1F600} \0 \u{202e}";

on_both_backends! {
    usernames_are_unique_ignoring_case => |store: Arc<dyn Store>| async move {
        let alice = store.create_user("Alice", "Alice L.", "h1", 10).await.unwrap();
        assert_eq!((alice.username.as_str(), alice.display_name.as_str()), ("Alice", "Alice L."));
        assert!(matches!(store.create_user("alice", "x", "h2", 11).await, Err(StoreError::Conflict)));
        let found = store.credentials("ALICE").await.unwrap().expect("found ignoring case");
        assert_eq!((found.user.id, found.password_hash.as_str()), (alice.id, "h1"));
        assert!(store.credentials("bob").await.unwrap().is_none());
        assert_eq!(store.user(alice.id).await.unwrap(), Some(alice));
    };

    the_directory_lists_the_rooms_most_people_are_in_by_name => |store: Arc<dyn Store>| async move {
        let people = [user(&store, "ana").await, user(&store, "bia").await, user(&store, "caio").await];
        let mut rooms = Vec::new();
        for (name, members) in [("zeta", 3), ("alpha", 1), ("mid", 2)] {
            let (room, _) = store.create_room(name, &people[0], 1).await.unwrap();
            for person in &people[1..members] {
                store.join(room.id, person, 2).await.unwrap();
            }
            rooms.push(room);
        }
        let names = |listed: Vec<RoomSummary>| listed.into_iter().map(|r| (r.name, r.member_count)).collect::<Vec<_>>();
        assert_eq!(names(store.public_rooms(people[2].id, 2).await.unwrap()), vec![("mid".into(), 2), ("zeta".into(), 3)]);
        assert_eq!(names(store.public_rooms(people[2].id, 100).await.unwrap()).len(), 3, "all of them");
    };

    sessions_expire_and_are_revoked => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let id = store.create_session(alice.id, "hash-a", 100, 1_000).await.unwrap();
        let live = store.session("hash-a", 500).await.unwrap().expect("live");
        assert_eq!((live.session_id, live.user.id, live.last_seen_at), (id, alice.id, 100));
        assert!(store.session("hash-a", 1_000).await.unwrap().is_none(), "past absolute expiry");
        store.touch_sessions(&[id], 400).await.unwrap();
        assert_eq!(store.session("hash-a", 500).await.unwrap().unwrap().last_seen_at, 400);
        store.touch_sessions(&[id], 300).await.unwrap();
        assert_eq!(store.session("hash-a", 500).await.unwrap().unwrap().last_seen_at, 400, "never moves back");
        store.touch_sessions(&[], 450).await.unwrap();
        assert_eq!(store.revoke_session("hash-a", 600).await.unwrap(), Some(id));
        assert!(store.session("hash-a", 601).await.unwrap().is_none());
        assert_eq!(store.revoke_session("hash-a", 700).await.unwrap(), None, "already revoked");
        assert!(store.session("no-such-hash", 1).await.unwrap().is_none());
    };

    many_sessions_are_touched_at_once => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        // More than one statement's worth, and one the others must not move back.
        let mut ids = Vec::new();
        for n in 0..1_203 {
            ids.push(store.create_session(alice.id, &format!("hash-{n}"), 100, 10_000).await.unwrap());
        }
        store.touch_sessions(&[ids[7]], 900).await.unwrap();
        store.touch_sessions(&ids, 800).await.unwrap();
        for (n, expected) in [(0, 800), (7, 900), (499, 800), (500, 800), (1_202, 800)] {
            assert_eq!(store.session(&format!("hash-{n}"), 850).await.unwrap().unwrap().last_seen_at, expected, "session {n}");
        }
        let untouched = store.create_session(alice.id, "hash-other", 100, 10_000).await.unwrap();
        store.touch_sessions(&ids[..3], 950).await.unwrap();
        assert_eq!(store.session("hash-other", 960).await.unwrap().unwrap().last_seen_at, 100, "not listed: {untouched}");
    };

    rooms_have_unique_names_and_track_members => |store: Arc<dyn Store>| async move {
        let general = store.ensure_public_room("general", 1).await.unwrap();
        assert_eq!(store.ensure_public_room("General", 2).await.unwrap(), general, "idempotent, case-insensitive");
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;

        let (rust, notice) = store.create_room("Rust", &alice, 5).await.unwrap();
        assert_eq!((notice.seq, notice.kind, notice.sender.id), (1, MessageKind::Joined, alice.id));
        assert_eq!(rust.last_seq, 1);
        assert!(matches!(store.create_room("rust", &bob, 6).await, Err(StoreError::Conflict)));
        assert!(store.is_member(rust.id, alice.id).await.unwrap());
        assert!(!store.is_member(rust.id, bob.id).await.unwrap());

        let joined = store.join(rust.id, &bob, 7).await.unwrap().expect("first join writes a notice");
        assert_eq!((joined.seq, joined.kind), (2, MessageKind::Joined));
        assert_eq!(store.join(rust.id, &bob, 8).await.unwrap(), None, "joining twice changes nothing");
        let members: Vec<i64> = store.members(rust.id).await.unwrap().iter().map(|u| u.id).collect();
        assert_eq!(members, vec![alice.id, bob.id]);

        let listed = store.public_rooms(bob.id, 100).await.unwrap();
        let names: Vec<(&str, bool, i64)> = listed.iter().map(|r| (r.name.as_str(), r.joined, r.member_count)).collect();
        assert_eq!(names, vec![("general", false, 0), ("Rust", true, 2)]);
        let mine: Vec<&str> = store.rooms_of(bob.id).await.unwrap().iter().map(|r| r.name.clone().leak() as &str).collect();
        assert_eq!(mine, vec!["Rust"]);
        let summary = store.room_summary(rust.id, bob.id).await.unwrap().unwrap();
        assert_eq!((summary.last_seq, summary.joined), (2, true));

        let left = store.leave(rust.id, &bob, 9).await.unwrap().expect("leaving writes a notice");
        assert_eq!((left.seq, left.kind), (3, MessageKind::Left));
        assert_eq!(store.leave(rust.id, &bob, 10).await.unwrap(), None);
        assert!(!store.is_member(rust.id, bob.id).await.unwrap());
        assert!(matches!(store.join(9_999, &bob, 11).await, Err(StoreError::NotFound)));
    };

    posts_are_numbered_without_gaps_and_retries_are_idempotent => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let (room, _) = store.create_room("room", &alice, 1).await.unwrap();
        let first = store.post(room.id, &alice, "c1", "hello", 2).await.unwrap();
        let Posted::New(first) = first else { panic!("first post is new") };
        assert_eq!((first.seq, first.text.as_str(), first.client_id.as_deref()), (2, "hello", Some("c1")));

        let again = store.post(room.id, &alice, "c1", "hello (retry)", 3).await.unwrap();
        assert_eq!(again, Posted::Duplicate(first.clone()), "the original comes back unchanged");
        let Posted::New(second) = store.post(room.id, &alice, "c2", "world", 4).await.unwrap() else { panic!() };
        assert_eq!(second.seq, 3, "the retry consumed no number");
        assert_eq!(store.room(room.id).await.unwrap().unwrap().last_seq, 3);
        assert!(matches!(store.post(9_999, &alice, "c3", "x", 5).await, Err(StoreError::NotFound)));

        let (elsewhere, _) = store.create_room("elsewhere", &alice, 6).await.unwrap();
        assert!(
            matches!(store.post(elsewhere.id, &alice, "c1", "hello", 7).await, Err(StoreError::Conflict)),
            "a client id reused in another room is refused, not answered with the first room's message"
        );
        assert_eq!(store.room(elsewhere.id).await.unwrap().unwrap().last_seq, 1, "nothing was stored there");
    };

    posts_sent_together_share_commits_and_a_failing_one_fails_alone => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let (open, _) = store.create_room("open", &alice, 1).await.unwrap();
        let (closed, _) = store.create_room("closed", &alice, 1).await.unwrap();
        store.join(open.id, &bob, 2).await.unwrap();
        let last_seq = |room_id| { let store = store.clone(); async move { store.room(room_id).await.unwrap().unwrap().last_seq } };
        let before = [last_seq(open.id).await, last_seq(closed.id).await];
        // Sent all at once, so they wait for commits together: bob is no member of
        // `closed`, and alice uses client id k0 in both rooms.
        let posts = (0..40i64).map(|n| {
            let room_id = if n % 2 == 0 { open.id } else { closed.id };
            let poster = if n % 10 == 3 { bob.clone() } else { alice.clone() };
            let client_id = if n == 9 { "k0".to_string() } else { format!("k{n}") };
            let store = store.clone();
            async move { store.post(room_id, &poster, &client_id, &format!("Ótimo {n} ação 🎉"), 10 + n).await }
        });
        let outcomes = futures::future::join_all(posts).await;
        let mut stored = [Vec::new(), Vec::new()];
        for (n, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(Posted::New(message)) => stored[n % 2].push(message),
                Err(StoreError::NotMember) => assert_eq!(n % 10, 3, "post {n}"),
                // Whichever of the two k0 posts came second is refused.
                Err(StoreError::Conflict) => assert!(n == 9 || n == 0, "post {n}"),
                other => panic!("post {n}: {other:?}"),
            }
        }
        assert_eq!(stored[0].len() + stored[1].len(), 40 - 4 - 1, "all but bob's four in `closed` and one k0");
        for ((room_id, messages), before) in [open.id, closed.id].into_iter().zip(&stored).zip(before) {
            let mut seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
            seqs.sort_unstable();
            let expected: Vec<i64> = (before + 1..=before + messages.len() as i64).collect();
            assert_eq!(seqs, expected, "room {room_id}: the refused posts took no numbers");
            let history = store.history_after(room_id, before, 100).await.unwrap();
            assert_eq!(history.len(), messages.len(), "room {room_id}: exactly what was acknowledged is stored");
        }
    };

    history_pages_are_complete_and_ordered => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let (room, _) = store.create_room("busy", &alice, 1).await.unwrap();
        for n in 0..120 {
            store.post(room.id, &alice, &format!("c{n}"), &format!("message {n}"), 10 + n).await.unwrap();
        }
        // 1 join notice + 120 messages = seq 1..=121, paged back 50 at a time.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store.history_before(room.id, before, 50).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "each page is ascending and contiguous");
            before = Some(page[0].seq);
            seen.splice(0..0, page.into_iter().map(|m| m.seq));
        }
        assert_eq!(seen, (1..=121).collect::<Vec<_>>());
        let after: Vec<i64> = store.history_after(room.id, 100, 10).await.unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(after, (101..=110).collect::<Vec<_>>());
    };

    concurrent_posts_get_distinct_consecutive_numbers => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let (room, _) = store.create_room("race", &alice, 1).await.unwrap();
        let posts = (0..40).map(|n| {
            let (store, alice) = (store.clone(), alice.clone());
            tokio::spawn(async move { store.post(room.id, &alice, &format!("c{n}"), "x", 2).await.unwrap() })
        });
        let mut seqs: Vec<i64> = futures::future::join_all(posts).await.into_iter().map(|p| p.unwrap().message().seq).collect();
        seqs.sort();
        assert_eq!(seqs, (2..=41).collect::<Vec<_>>());
    };

    direct_conversations_are_one_per_pair => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let (room, created) = store.open_direct(&alice, &bob, 1).await.unwrap();
        assert!(created);
        let (same, created_again) = store.open_direct(&bob, &alice, 2).await.unwrap();
        assert_eq!((same.id, created_again), (room.id, false));
        assert_eq!(room.kind, app::protocol::RoomKind::Direct);
        let bobs = store.rooms_of(bob.id).await.unwrap();
        let dm = bobs.iter().find(|r| r.id == room.id).unwrap();
        assert_eq!(dm.peer.as_ref().map(|p| p.id), Some(alice.id));
        assert_eq!(dm.member_count, 2);
        assert!(store.public_rooms(bob.id, 100).await.unwrap().iter().all(|r| r.id != room.id), "not listed publicly");
    };

    mentions_of_members_are_counted_until_read => |store: Arc<dyn Store>| async move {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let carol = user(&store, "carol").await;
        let (room, _) = store.create_room("talk", &alice, 1).await.unwrap();
        store.join(room.id, &bob, 2).await.unwrap();
        let Posted::New(ping) = store.post(room.id, &alice, "c1", "@BOB and @carol, look", 3).await.unwrap() else { panic!() };
        store.post(room.id, &alice, "c2", "@alice talks to herself", 4).await.unwrap();
        let bobs = store.rooms_of(bob.id).await.unwrap();
        assert_eq!(bobs[0].mention_seqs, vec![ping.seq], "mentioned, and case is ignored");
        assert_eq!(bobs[0].unread(), 2);
        assert!(store.rooms_of(carol.id).await.unwrap().is_empty(), "carol is not a member, so not mentioned");
        assert!(store.rooms_of(alice.id).await.unwrap()[0].mention_seqs.is_empty(), "self-mentions do not count");
        assert_eq!(store.advance_receipt(room.id, bob.id, None, Some(ping.seq)).await.unwrap(), Some((ping.seq, ping.seq)));
        let bobs = store.rooms_of(bob.id).await.unwrap();
        assert!(bobs[0].mention_seqs.is_empty());
        assert_eq!(bobs[0].unread(), 1);
        assert_eq!(store.advance_receipt(room.id, carol.id, None, Some(1)).await.unwrap(), None, "not a member");
    };

    the_newest_mentions_are_reported_when_there_are_too_many => |store: Arc<dyn Store>| async move {
        // The page fetches the newest one to notify of after a reconnect, and reading
        // leaves the newest ones counted.
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let (room, _) = store.create_room("talk", &alice, 1).await.unwrap();
        store.join(room.id, &bob, 2).await.unwrap();
        let mut seqs = Vec::new();
        for n in 0..120 {
            let Posted::New(ping) = store.post(room.id, &alice, &format!("c{n}"), &format!("@bob ação {n}"), 3).await.unwrap() else { panic!() };
            seqs.push(ping.seq);
        }
        let bobs = store.rooms_of(bob.id).await.unwrap();
        assert_eq!(bobs[0].mention_seqs, seqs[seqs.len() - 99..], "the newest 99, oldest first");
    };

    any_text_is_stored_byte_for_byte => |store: Arc<dyn Store>| async move {
        let ana = user(&store, "ana").await;
        let (room, _) = store.create_room("texts", &ana, 1).await.unwrap();
        let texts = ["Ótimo, tudo bem?", "😀 hi", "\0", "a\0b\0", "\u{200f}\u{202e}x", "e\u{301}", "\u{10ffff}\u{fffd}"];
        for (n, text) in texts.iter().enumerate() {
            let Posted::New(message) = store.post(room.id, &ana, &format!("c{n}"), text, 2).await.unwrap() else { panic!() };
            assert_eq!(message.text, *text);
        }
        let emoji = "😀".repeat(4000);
        store.post(room.id, &ana, "emoji", &emoji, 3).await.unwrap();
        let stored: Vec<String> =
            store.history_after(room.id, 1, 100).await.unwrap().into_iter().map(|m| m.text).collect();
        let mut expected: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        expected.push(emoji);
        assert_eq!(stored, expected);
    };

    unread_positions_are_messages_from_other_people_only => |store: Arc<dyn Store>| async move {
        let ana = user(&store, "ana").await;
        let bob = user(&store, "bob").await;
        let carla = user(&store, "carla").await;
        let (room, _) = store.create_room("counts", &ana, 1).await.unwrap();
        store.join(room.id, &bob, 2).await.unwrap();
        let Posted::New(first) = store.post(room.id, &ana, "a1", "one", 3).await.unwrap() else { panic!() };
        store.join(room.id, &carla, 4).await.unwrap();
        store.leave(room.id, &carla, 5).await.unwrap();
        let Posted::New(second) = store.post(room.id, &ana, "a2", "two", 6).await.unwrap() else { panic!() };
        store.post(room.id, &bob, "b1", "bob's own", 7).await.unwrap();
        let bobs = store.rooms_of(bob.id).await.unwrap();
        // Bob's own post moved his read position past ana's messages.
        assert_eq!(bobs[0].unread(), 0);
        let Posted::New(third) = store.post(room.id, &ana, "a3", "three", 8).await.unwrap() else { panic!() };
        store.join(room.id, &carla, 9).await.unwrap();
        let bobs = store.rooms_of(bob.id).await.unwrap();
        assert_eq!(bobs[0].unread_seqs, vec![third.seq], "notices and own messages are not unread");
        assert_eq!(bobs[0].unread(), 1);
        assert!(first.seq < second.seq);
        // A reader far behind gets the newest positions, capped.
        let dora = user(&store, "dora").await;
        store.join(room.id, &dora, 10).await.unwrap();
        for n in 0..(app::protocol::UNREAD_REPORTED + 5) {
            store.post(room.id, &ana, &format!("m{n}"), "more", 11).await.unwrap();
        }
        let doras = store.rooms_of(dora.id).await.unwrap();
        assert_eq!(doras[0].unread_seqs.len(), app::protocol::UNREAD_REPORTED);
        assert_eq!(doras[0].unread_seqs.last(), Some(&doras[0].last_seq), "the newest ones");
    };

    member_counts_follow_joins_and_leaves => |store: Arc<dyn Store>| async move {
        let ana = user(&store, "ana").await;
        let bob = user(&store, "bob").await;
        let count = |rooms: Vec<app::protocol::RoomSummary>, id: i64| rooms.into_iter().find(|r| r.id == id).unwrap().member_count;
        let (room, _) = store.create_room("counted", &ana, 1).await.unwrap();
        assert_eq!(count(store.rooms_of(ana.id).await.unwrap(), room.id), 1);
        store.join(room.id, &bob, 2).await.unwrap();
        store.join(room.id, &bob, 3).await.unwrap();
        assert_eq!(count(store.public_rooms(ana.id, 100).await.unwrap(), room.id), 2, "joining twice counts once");
        store.leave(room.id, &bob, 4).await.unwrap();
        store.leave(room.id, &bob, 5).await.unwrap();
        assert_eq!(count(store.public_rooms(ana.id, 100).await.unwrap(), room.id), 1, "leaving twice counts once");
        let (dm, _) = store.open_direct(&ana, &bob, 6).await.unwrap();
        store.open_direct(&bob, &ana, 7).await.unwrap();
        assert_eq!(count(store.rooms_of(bob.id).await.unwrap(), dm.id), 2);
    };

    only_members_can_post => |store: Arc<dyn Store>| async move {
        let ana = user(&store, "ana").await;
        let bob = user(&store, "bob").await;
        let (room, _) = store.create_room("members", &ana, 1).await.unwrap();
        assert!(matches!(store.post(room.id, &bob, "b1", "let me in", 2).await, Err(StoreError::NotMember)));
        store.join(room.id, &bob, 3).await.unwrap();
        store.post(room.id, &bob, "b2", "in", 4).await.unwrap();
        store.leave(room.id, &bob, 5).await.unwrap();
        assert!(matches!(store.post(room.id, &bob, "b3", "after leaving", 6).await, Err(StoreError::NotMember)));
        let seqs: Vec<i64> = store.history_after(room.id, 0, 10).await.unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "refused posts used no sequence number");
    };

    receipts_list_the_furthest_readers_first => |store: Arc<dyn Store>| async move {
        let ana = user(&store, "ana").await;
        let (room, _) = store.create_room("readers", &ana, 1).await.unwrap();
        let mut readers = Vec::new();
        for name in ["r1", "r2", "r3"] {
            let reader = user(&store, name).await;
            store.join(room.id, &reader, 2).await.unwrap();
            readers.push(reader);
        }
        for n in 0..5 {
            store.post(room.id, &ana, &format!("c{n}"), "x", 3).await.unwrap();
        }
        store.advance_receipt(room.id, readers[1].id, Some(9), Some(9)).await.unwrap();
        store.advance_receipt(room.id, readers[2].id, Some(8), Some(7)).await.unwrap();
        let top: Vec<i64> = store.receipts(room.id, 2).await.unwrap().iter().map(|r| r.user.id).collect();
        assert_eq!(top, [ana.id, readers[1].id], "ana read her own newest message; r2 read to 9");
        assert_eq!(store.receipts(room.id, 10).await.unwrap().len(), 4);
    };

    people_are_found_by_prefix => |store: Arc<dyn Store>| async move {
        for name in ["anna", "annabel", "bob", "an_na"] {
            user(&store, name).await;
        }
        let names = |users: Vec<UserRef>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
        assert_eq!(names(store.find_users("ANN", 10).await.unwrap()), ["anna", "annabel"]);
        assert_eq!(names(store.find_users("an_", 10).await.unwrap()), ["an_na"], "_ is not a wildcard");
        assert_eq!(names(store.find_users("bob d", 10).await.unwrap()), ["bob"], "display names match too");
        assert_eq!(store.find_users("a", 1).await.unwrap().len(), 1);
    };

    hostile_text_is_stored_byte_for_byte => |store: Arc<dyn Store>| async move {
        let name = "x'); DROP TABLE users;--";
        // Display names refuse control characters (validation), so NUL stays out of them.
        let display = INJECTION.replace('\0', "");
        let sneaky = store.create_user(name, &display, "h", 1).await.unwrap();
        assert_eq!(store.credentials(name).await.unwrap().unwrap().user.display_name, display);
        let (room, _) = store.create_room("r'--", &sneaky, 2).await.unwrap();
        store.post(room.id, &sneaky, "injection", INJECTION, 3).await.unwrap();
        let history = store.history_before(room.id, None, 10).await.unwrap();
        assert_eq!(history.last().unwrap().text, INJECTION);
        store.post(room.id, &sneaky, &display, "client ids are text too", 4).await.unwrap();
        let history = store.history_before(room.id, None, 10).await.unwrap();
        assert_eq!(history.last().unwrap().client_id.as_deref(), Some(display.as_str()));
        assert_eq!(store.room(room.id).await.unwrap().unwrap().name, "r'--");
    };
}

/// Leaving takes the room's lock before the membership's, like posting; with the
/// opposite order, two connections (or two nodes) racing a leave against a post would
/// deadlock on PostgreSQL. Each round races them from separate pools; none may hang, and
/// no message may be stored after its sender's "left" notice.
#[tokio::test]
async fn leaving_and_posting_race_without_deadlock_across_connections() {
    let db = TestDb::postgres().await;
    let (first, second) = (db.open().await, db.open().await);
    let ana = user(&first, "ana").await;
    let (room, _) = first.create_room("race", &ana, 1).await.unwrap();
    let mut racers = Vec::new();
    for n in 0..20 {
        racers.push(user(&first, &format!("racer{n}")).await);
    }
    for round in 0..10 {
        for racer in &racers {
            first.join(room.id, racer, 2).await.unwrap();
        }
        let races = racers.iter().enumerate().map(|(n, racer)| {
            let (poster, leaver) = if n % 2 == 0 { (first.clone(), second.clone()) } else { (second.clone(), first.clone()) };
            let racer = racer.clone();
            let room_id = room.id;
            async move {
                let client_id = format!("r{round}-{n}");
                let (posted, left) =
                    tokio::join!(poster.post(room_id, &racer, &client_id, "racing", 3), leaver.leave(room_id, &racer, 3));
                assert!(matches!(posted, Ok(_) | Err(StoreError::NotMember)), "{posted:?}");
                left.unwrap();
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(20), futures::future::join_all(races))
            .await
            .expect("leave racing post never deadlocks");
    }
    let history = first.history_after(room.id, 0, 100_000).await.unwrap();
    let mut gone = std::collections::HashSet::new();
    for message in &history {
        match message.kind {
            MessageKind::Left => {
                gone.insert(message.sender.id);
            }
            MessageKind::Joined => {
                gone.remove(&message.sender.id);
            }
            MessageKind::Text => assert!(!gone.contains(&message.sender.id), "seq {}: posted after leaving", message.seq),
        }
    }
    assert!(history.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "no gaps");
    db.remove().await;
}

/// One person's client ids posted at once into two rooms through two nodes (two
/// pools, each committing in batches): each rooms' lock is its own, so the two inserts
/// can meet only at the client id. Every client id ends up stored once, the other post
/// is refused as a reuse, and neither room has a gap in its numbering.
#[tokio::test]
async fn one_client_id_posted_into_two_rooms_by_two_nodes_is_stored_once() {
    let db = TestDb::postgres().await;
    let (first, second) = (db.open().await, db.open().await);
    let ana = user(&first, "ana").await;
    let (left_room, _) = first.create_room("left", &ana, 1).await.unwrap();
    let (right_room, _) = first.create_room("right", &ana, 1).await.unwrap();
    const POSTS: usize = 200;
    let side = |store: Arc<dyn Store>, room_id: i64| {
        let ana = ana.clone();
        futures::future::join_all((0..POSTS).map(move |n| {
            let (store, ana) = (store.clone(), ana.clone());
            async move { store.post(room_id, &ana, &format!("twice-{n}"), &format!("olá {n} 👋"), 2).await }
        }))
    };
    let (lefts, rights) = tokio::join!(side(first.clone(), left_room.id), side(second.clone(), right_room.id));
    for (n, (left, right)) in lefts.into_iter().zip(rights).enumerate() {
        match (left, right) {
            (Ok(Posted::New(_)), Err(StoreError::Conflict)) | (Err(StoreError::Conflict), Ok(Posted::New(_))) => {}
            other => panic!("client id {n}: {other:?}"),
        }
    }
    let mut stored = 0;
    for room_id in [left_room.id, right_room.id] {
        let history = first.history_after(room_id, 0, 100_000).await.unwrap();
        assert!(history.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "no gaps in room {room_id}");
        stored += history.iter().filter(|m| m.kind == MessageKind::Text).count();
    }
    assert_eq!(stored, POSTS, "each client id once");
    db.remove().await;
}

/// The same client id stored by another transaction (another node, another room)
/// after this batch checked it and before its insert: the insert waits for that
/// transaction, finds the id taken, and the batch starts over and answers with the
/// reuse it now sees, leaving no hole in the room's numbering.
#[tokio::test]
async fn a_client_id_stored_concurrently_after_the_check_is_answered_as_a_reuse() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let ana = user(&store, "ana").await;
    let (elsewhere, _) = store.create_room("elsewhere", &ana, 1).await.unwrap();
    let (here, _) = store.create_room("here", &ana, 1).await.unwrap();
    let before = store.room(here.id).await.unwrap().unwrap().last_seq;

    let other_node = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let mut held = other_node.begin().await.unwrap();
    let seq: i64 = sqlx::query_scalar("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq")
        .bind(elsewhere.id)
        .fetch_one(&mut *held)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO messages (room_id, seq, sender_id, kind, body, client_id, created_at) VALUES ($1, $2, $3, 'text', $4, 'held', 2)",
    )
    .bind(elsewhere.id)
    .bind(seq)
    .bind(ana.id)
    .bind("first".as_bytes())
    .execute(&mut *held)
    .await
    .unwrap();
    let posting = tokio::spawn({
        let (store, ana) = (store.clone(), ana.clone());
        async move { store.post(here.id, &ana, "held", "second", 3).await }
    });
    // Once the post waits at its insert for this transaction's row, commit it.
    let waiting = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let blocked: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted").fetch_one(&other_node).await.unwrap();
        if blocked > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < waiting, "the post never waited for the other transaction");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    held.commit().await.unwrap();

    let posted = tokio::time::timeout(std::time::Duration::from_secs(10), posting).await.expect("the post finishes").unwrap();
    assert!(matches!(posted, Err(StoreError::Conflict)), "{posted:?}");
    assert_eq!(store.room(here.id).await.unwrap().unwrap().last_seq, before, "no number taken");
    let Posted::New(next) = store.post(here.id, &ana, "next", "after", 4).await.unwrap() else { panic!("a new post") };
    assert_eq!(next.seq, before + 1);
    db.remove().await;
}

/// The database drops every connection of the node, the one that writes posts
/// included (as when PostgreSQL restarts): the next post is still stored, on a new
/// connection, and answered once.
#[tokio::test]
async fn posts_are_stored_after_the_database_drops_the_connections() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let ana = user(&store, "ana").await;
    let (room, _) = store.create_room("restarts", &ana, 1).await.unwrap();
    assert!(matches!(store.post(room.id, &ana, "before", "antes da queda", 2).await, Ok(Posted::New(_))));

    let TestDb::Postgres { schema } = &db else { unreachable!("a PostgreSQL database") };
    let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&support::databases::postgres_url()).await.unwrap();
    let dropped: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1")
        .bind(schema)
        .fetch_all(&admin)
        .await
        .unwrap();
    assert!(!dropped.is_empty() && dropped.iter().all(|&ok| ok), "the node's connections were dropped");
    admin.close().await;

    let after = store.post(room.id, &ana, "after", "depois da queda ✅", 3).await;
    assert!(matches!(after, Ok(Posted::New(_))), "{after:?}");
    let texts: Vec<String> = store
        .history_after(room.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == MessageKind::Text)
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["antes da queda", "depois da queda ✅"]);
    db.remove().await;
}

/// A fresh SQLite database with a room of ana's, for the tests that watch its files.
async fn sqlite_room(name: &str) -> (TestDb, Arc<dyn Store>, UserRef, i64) {
    let db = TestDb::sqlite().await;
    let store = db.open().await;
    let ana = user(&store, "ana").await;
    let (room, _) = store.create_room(name, &ana, 1).await.unwrap();
    (db, store, ana, room.id)
}

fn sqlite_dir(db: &TestDb) -> &std::path::Path {
    let TestDb::Sqlite { dir } = db else { unreachable!("an SQLite database") };
    dir.path()
}

/// Posts `text` once under each client id, all at once (so they share commits).
async fn post_all(store: &Arc<dyn Store>, room_id: i64, ana: &UserRef, client_ids: &[String], text: &str) {
    let posts = client_ids.iter().map(|client_id| store.post(room_id, ana, client_id, text, 2));
    for posted in futures::future::join_all(posts).await {
        posted.unwrap();
    }
}

/// Under steady writing the log still starts over about every second, instead of
/// growing with everything written since the writing began.
#[tokio::test]
async fn the_sqlite_log_stays_short_under_steady_writing() {
    let (db, store, ana, room_id) = sqlite_room("steady").await;
    let log = sqlite_dir(&db).join("parley.db-wal");
    let text = "ação ".repeat(200);
    let started = tokio::time::Instant::now();
    let mut written = 0u64;
    let mut n = 0;
    while started.elapsed() < std::time::Duration::from_secs(5) {
        let client_ids: Vec<String> = (n..n + 20).map(|k| format!("c{k}")).collect();
        n += 20;
        post_all(&store, room_id, &ana, &client_ids, &text).await;
        written += 20 * text.len() as u64;
    }
    let log_bytes = std::fs::metadata(&log).unwrap().len();
    // Pages and indexes take about three times the text: a log that never starts
    // over ends far past what was written, one that does holds about a second of it.
    assert!(log_bytes < written, "the log holds {log_bytes} bytes after {written} bytes of messages in 5 s");
}

/// SQLite's write-ahead log is copied into the database file in the background
/// (commits never do it themselves): soon after a burst of posts, the database file
/// holds them, with nothing else asking for a checkpoint.
#[tokio::test]
async fn the_sqlite_log_is_checkpointed_in_the_background() {
    let (db, store, ana, room_id) = sqlite_room("log").await;
    let file = sqlite_dir(&db).join("parley.db");
    let text = "ação ".repeat(200);
    let client_ids: Vec<String> = (0..600).map(|n| format!("c{n}")).collect();
    post_all(&store, room_id, &ana, &client_ids, &text).await;
    let written = client_ids.len() as u64 * text.len() as u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&file).unwrap().len() < written {
        assert!(tokio::time::Instant::now() < deadline, "the database file has {} bytes", std::fs::metadata(&file).unwrap().len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

mod survives_reopening {
    use super::*;

    async fn check(db: TestDb) {
        let room_id = {
            let store = db.open().await;
            let alice = user(&store, "alice").await;
            let (room, _) = store.create_room("durable", &alice, 1).await.unwrap();
            store.post(room.id, &alice, "c1", "still here", 2).await.unwrap();
            store.create_session(alice.id, "token-hash", 3, i64::MAX).await.unwrap();
            room.id
        };
        let store = db.open().await;
        let history = store.history_before(room_id, None, 10).await.unwrap();
        assert_eq!(history.last().unwrap().text, "still here");
        assert!(store.session("token-hash", 4).await.unwrap().is_some());
        assert!(store.credentials("alice").await.unwrap().is_some());
        db.remove().await;
    }

    #[tokio::test]
    async fn sqlite() {
        check(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn postgres() {
        check(TestDb::postgres().await).await;
    }
}
