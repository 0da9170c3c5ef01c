//! Who is online in each room, as this client knows it: the count always (every
//! presence notice carries it), and the names of a first page or more, fetched when a
//! room is opened and kept current by the notices while the room is small enough for
//! them to name people. In a crowded room the names are fetched again when wanted.

use leptos::prelude::*;

use super::{ChatClient, Purpose};
use crate::protocol::{ClientMsg, RoomId, UserId, UserRef};

/// One room's online list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPresence {
    /// Everyone online there.
    pub total: u32,
    /// The first people by name (a page or more), sorted by [`UserRef::sort_key`].
    pub listed: Vec<UserRef>,
    /// More people follow the last one listed.
    pub has_more: bool,
    /// `listed` is kept up to date by presence notices; false once a notice came
    /// without names (or before any list was fetched).
    pub current: bool,
}

impl RoomPresence {
    /// Applies who came and went to the list held.
    fn apply(&mut self, came: Vec<UserRef>, went: &[UserId]) {
        self.listed.retain(|user| !went.contains(&user.id) && !came.iter().any(|c| c.id == user.id));
        for user in came {
            let key = user.sort_key();
            // Past the last one listed, someone belongs to a page not loaded yet.
            let within = !self.has_more || self.listed.last().is_some_and(|last| key < last.sort_key());
            if within {
                let at = self.listed.partition_point(|listed| listed.sort_key() < key);
                self.listed.insert(at, user);
            }
        }
    }

    /// Takes a page of the list from the server: the first replaces what was listed,
    /// a later one follows it. Someone already listed is not listed twice: a notice
    /// can have placed them before the page came, where this browser's case folding
    /// and the server's disagree (on letters newer than one side's Unicode tables).
    fn take_page(&mut self, more: bool, users: Vec<UserRef>, total: u32, has_more: bool) {
        if !more {
            self.listed.clear();
        }
        let listed: std::collections::HashSet<UserId> = self.listed.iter().map(|user| user.id).collect();
        self.listed.extend(users.into_iter().filter(|user| !listed.contains(&user.id)));
        self.total = total;
        self.has_more = has_more;
        self.current = true;
    }
}

impl ChatClient {
    /// Fetches the first page of a room's online list (on opening it, and when a list
    /// went stale in a crowded room).
    pub fn watch_presence(&self, room_id: RoomId) {
        self.request(Purpose::Online { more: false }, |id| ClientMsg::Online { id, room_id, after: None });
    }

    /// Fetches the page after the last person listed.
    pub fn more_online(&self, room_id: RoomId) {
        let last = self.presence.with_untracked(|p| p.get(&room_id).and_then(|room| room.listed.last().cloned()));
        if let Some(after) = last {
            self.request(Purpose::Online { more: true }, |id| ClientMsg::Online { id, room_id, after: Some(after) });
        }
    }

    /// A page of the online list arrived.
    pub(super) fn online_page(&self, room_id: RoomId, more: bool, users: Vec<UserRef>, total: u32, has_more: bool) {
        self.presence.update(|presence| presence.entry(room_id).or_default().take_page(more, users, total, has_more));
    }

    /// A presence notice arrived: the count, and who came and went if it names them.
    pub(super) fn presence_changed(&self, room_id: RoomId, total: u32, detailed: bool, came: Vec<UserRef>, went: Vec<UserId>) {
        self.presence.update(|presence| {
            let room = presence.entry(room_id).or_default();
            room.total = total;
            if !detailed {
                room.current = false;
            } else if room.current {
                room.apply(came, &went);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: UserId, name: &str) -> UserRef {
        UserRef { id, username: name.to_lowercase(), display_name: name.into() }
    }

    fn names(room: &RoomPresence) -> Vec<&str> {
        room.listed.iter().map(|u| u.display_name.as_str()).collect()
    }

    #[test]
    fn notices_keep_a_complete_list_sorted() {
        let mut room = RoomPresence { total: 2, listed: vec![user(1, "Ana"), user(3, "carla")], has_more: false, current: true };
        room.apply(vec![user(2, "bruno"), user(4, "Zé")], &[1]);
        assert_eq!(names(&room), ["bruno", "carla", "Zé"]);
        room.apply(vec![user(2, "bruno")], &[]);
        assert_eq!(names(&room), ["bruno", "carla", "Zé"], "someone already listed is not added twice");
    }

    #[test]
    fn a_later_page_never_lists_someone_twice() {
        let mut room = RoomPresence::default();
        room.take_page(false, vec![user(1, "a"), user(2, "b")], 4, true);
        // A notice placed "ab" within the first page, by this browser's folding;
        // the server's put them on the next page.
        room.apply(vec![user(3, "ab")], &[]);
        room.take_page(true, vec![user(3, "ab"), user(4, "d")], 4, false);
        assert_eq!(names(&room), ["a", "ab", "b", "d"]);
        room.take_page(false, vec![user(2, "b")], 1, false);
        assert_eq!(names(&room), ["b"], "a first page starts the list over");
    }

    #[test]
    fn a_partial_list_only_takes_people_within_its_pages() {
        let mut room = RoomPresence { total: 90, listed: vec![user(1, "b"), user(2, "d")], has_more: true, current: true };
        room.apply(vec![user(3, "a"), user(4, "c"), user(5, "z")], &[]);
        assert_eq!(names(&room), ["a", "b", "c", "d"], "z belongs to a later page");
    }
}
