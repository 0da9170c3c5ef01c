//! Who wrote the last few messages of each room, so a read receipt in a room can be
//! told to the people whose messages it reaches ("Seen by" under one's newest message)
//! instead of to every member: with thousands reading one message, that is one frame
//! per reader, not one per reader per member.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use app::protocol::{RoomId, Seq, UserId};

/// Messages remembered per room. "Seen by" shows under an author's newest message,
/// which in an active room is among the last few.
const REMEMBERED: usize = 32;

#[derive(Default)]
pub struct RecentAuthors {
    rooms: Mutex<HashMap<RoomId, VecDeque<(Seq, UserId)>>>,
}

impl RecentAuthors {
    /// Notes a message (mostly in sequence order, but one from another node or a
    /// catch-up may come late: the oldest by number is the one forgotten).
    pub fn wrote(&self, room_id: RoomId, seq: Seq, author: UserId) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let recent = rooms.entry(room_id).or_default();
        if recent.iter().any(|(noted, _)| *noted == seq) {
            return;
        }
        if recent.len() == REMEMBERED {
            let oldest = recent.iter().enumerate().min_by_key(|(_, (noted, _))| *noted).map(|(at, (noted, _))| (at, *noted));
            match oldest {
                Some((at, noted)) if noted < seq => {
                    recent.remove(at);
                }
                _ => return,
            }
        }
        recent.push_back((seq, author));
    }

    /// The authors of remembered messages after `from` up to `to`: those a reader
    /// moving from `from` to `to` has just read.
    pub fn between(&self, room_id: RoomId, from: Seq, to: Seq) -> Vec<UserId> {
        let rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut authors: Vec<UserId> = rooms
            .get(&room_id)
            .map(|recent| recent.iter().filter(|(seq, _)| *seq > from && *seq <= to).map(|(_, author)| *author).collect())
            .unwrap_or_default();
        authors.sort_unstable();
        authors.dedup();
        authors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_reach_the_authors_of_what_they_just_read() {
        let recent = RecentAuthors::default();
        for (seq, author) in [(1, 10), (2, 11), (3, 10), (4, 12)] {
            recent.wrote(7, seq, author);
        }
        assert_eq!(recent.between(7, 1, 3), [10, 11]);
        assert_eq!(recent.between(7, 3, 4), [12]);
        assert!(recent.between(7, 4, 4).is_empty());
        assert!(recent.between(8, 0, 9).is_empty());
        for seq in 5..(5 + REMEMBERED as i64) {
            recent.wrote(7, seq, 13);
        }
        assert_eq!(recent.between(7, 0, 100), [13], "only the last few are remembered");
    }

    #[test]
    fn a_late_message_does_not_push_out_newer_ones() {
        let recent = RecentAuthors::default();
        for seq in 100..100 + REMEMBERED as i64 {
            recent.wrote(7, seq, 1);
        }
        recent.wrote(7, 5, 2);
        assert!(recent.between(7, 0, 99).is_empty(), "older than all remembered: not kept");
        recent.wrote(7, 500, 3);
        assert_eq!(recent.between(7, 499, 500), [3]);
        assert_eq!(recent.between(7, 100, 500), [1, 3], "only message 100 made room");
    }
}
