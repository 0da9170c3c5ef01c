//! Who is connected, as whom, and which rooms each connection hears.
//!
//! Plain data, no locking and no I/O: [`super::Hub`] owns one behind a mutex and keeps
//! every critical section to a few map operations. Presence falls out of the same
//! maps: a user is online in a room while at least one of their connections is in it.

use std::collections::{HashMap, HashSet};

use app::protocol::{RoomId, UserId, UserRef};

use super::outbound::{CloseSignal, OutboundSender};

pub type ConnId = u64;

/// One open socket.
#[derive(Debug)]
pub struct ConnEntry {
    pub user_id: UserId,
    pub session_id: i64,
    pub rooms: HashSet<RoomId>,
    pub outbound: OutboundSender,
    pub close: CloseSignal,
}

#[derive(Debug)]
struct UserEntry {
    user: UserRef,
    conns: HashSet<ConnId>,
}

#[derive(Debug, Default)]
struct RoomEntry {
    conns: HashSet<ConnId>,
    /// Open connections in this room per user; a user is online here while > 0.
    online: HashMap<UserId, usize>,
}

/// A room whose set of online users changed, so its presence must be re-announced.
pub type PresenceChanged = RoomId;

#[derive(Debug, Default)]
pub struct Registry {
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<UserId, UserEntry>,
    rooms: HashMap<RoomId, RoomEntry>,
}

impl Registry {
    /// Adds a connection subscribed to `rooms`; returns rooms where its user came online.
    pub fn add(&mut self, id: ConnId, user: &UserRef, entry: ConnEntry) -> Vec<PresenceChanged> {
        let rooms: Vec<RoomId> = entry.rooms.iter().copied().collect();
        self.conns.insert(id, ConnEntry { rooms: HashSet::new(), ..entry });
        let user_entry = self
            .users
            .entry(user.id)
            .or_insert_with(|| UserEntry { user: user.clone(), conns: HashSet::new() });
        // The newest name wins, in case it changed since their other tab connected.
        user_entry.user = user.clone();
        user_entry.conns.insert(id);
        rooms.into_iter().filter(|room| self.subscribe(id, *room)).collect()
    }

    /// Removes a connection; returns it and the rooms where its user went offline.
    pub fn remove(&mut self, id: ConnId) -> Option<(ConnEntry, Vec<PresenceChanged>)> {
        let rooms: Vec<RoomId> = self.conns.get(&id)?.rooms.iter().copied().collect();
        let changed = rooms.into_iter().filter(|room| self.unsubscribe(id, *room)).collect();
        let entry = self.conns.remove(&id)?;
        if let Some(user) = self.users.get_mut(&entry.user_id) {
            user.conns.remove(&id);
            if user.conns.is_empty() {
                self.users.remove(&entry.user_id);
            }
        }
        Some((entry, changed))
    }

    /// Subscribes one connection to a room; true if its user just came online there.
    fn subscribe(&mut self, id: ConnId, room_id: RoomId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if !conn.rooms.insert(room_id) {
            return false;
        }
        let room = self.rooms.entry(room_id).or_default();
        room.conns.insert(id);
        let count = room.online.entry(conn.user_id).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Unsubscribes one connection; true if its user just went offline in the room.
    fn unsubscribe(&mut self, id: ConnId, room_id: RoomId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if !conn.rooms.remove(&room_id) {
            return false;
        }
        let Some(room) = self.rooms.get_mut(&room_id) else { return false };
        room.conns.remove(&id);
        let mut went_offline = false;
        if let Some(count) = room.online.get_mut(&conn.user_id) {
            *count -= 1;
            if *count == 0 {
                room.online.remove(&conn.user_id);
                went_offline = true;
            }
        }
        if room.conns.is_empty() {
            self.rooms.remove(&room_id);
        }
        went_offline
    }

    /// Subscribes all of a user's connections (they joined the room).
    pub fn subscribe_user(&mut self, user_id: UserId, room_id: RoomId) -> Option<PresenceChanged> {
        let conns = self.user_conns(user_id);
        let changed = conns.into_iter().fold(false, |changed, id| self.subscribe(id, room_id) || changed);
        changed.then_some(room_id)
    }

    /// Unsubscribes all of a user's connections (they left the room).
    pub fn unsubscribe_user(&mut self, user_id: UserId, room_id: RoomId) -> Option<PresenceChanged> {
        let conns = self.user_conns(user_id);
        let changed = conns.into_iter().fold(false, |changed, id| self.unsubscribe(id, room_id) || changed);
        changed.then_some(room_id)
    }

    pub fn user_conns(&self, user_id: UserId) -> Vec<ConnId> {
        self.users.get(&user_id).map(|user| user.conns.iter().copied().collect()).unwrap_or_default()
    }

    pub fn room_conns(&self, room_id: RoomId) -> Vec<ConnId> {
        self.rooms.get(&room_id).map(|room| room.conns.iter().copied().collect()).unwrap_or_default()
    }

    pub fn session_conns(&self, session_id: i64) -> Vec<ConnId> {
        self.conns.iter().filter(|(_, conn)| conn.session_id == session_id).map(|(id, _)| *id).collect()
    }

    pub fn all_conns(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    pub fn conn(&self, id: ConnId) -> Option<&ConnEntry> {
        self.conns.get(&id)
    }

    /// The people online in a room, each once, ordered by display name.
    pub fn online(&self, room_id: RoomId) -> Vec<UserRef> {
        let Some(room) = self.rooms.get(&room_id) else { return Vec::new() };
        let mut users: Vec<UserRef> = room
            .online
            .keys()
            .filter_map(|user_id| self.users.get(user_id).map(|entry| entry.user.clone()))
            .collect();
        users.sort_by(|a, b| a.display_name.to_lowercase().cmp(&b.display_name.to_lowercase()).then(a.id.cmp(&b.id)));
        users
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbound::{queue, QueueLimits};

    fn user(id: UserId, name: &str) -> UserRef {
        UserRef { id, username: name.to_lowercase(), display_name: name.into() }
    }

    fn entry(user_id: UserId, session_id: i64, rooms: &[RoomId]) -> ConnEntry {
        let (outbound, _rx) = queue(QueueLimits { max_frames: 8, max_bytes: 1024 });
        ConnEntry { user_id, session_id, rooms: rooms.iter().copied().collect(), outbound, close: CloseSignal::default() }
    }

    #[test]
    fn a_user_with_two_tabs_is_online_once_until_both_close() {
        let alice = user(1, "Alice");
        let mut registry = Registry::default();
        assert_eq!(registry.add(10, &alice, entry(1, 100, &[7])), vec![7]);
        assert_eq!(registry.add(11, &alice, entry(1, 100, &[7])), Vec::<RoomId>::new(), "second tab changes nothing");
        assert_eq!(registry.online(7), vec![alice.clone()]);

        let (_, changed) = registry.remove(10).unwrap();
        assert!(changed.is_empty(), "still online through the other tab");
        assert_eq!(registry.online(7), vec![alice]);

        let (_, changed) = registry.remove(11).unwrap();
        assert_eq!(changed, vec![7]);
        assert!(registry.online(7).is_empty());
        assert_eq!(registry.connection_count(), 0);
    }

    #[test]
    fn joining_and_leaving_moves_every_tab_of_the_user() {
        let bob = user(2, "Bob");
        let mut registry = Registry::default();
        registry.add(20, &bob, entry(2, 200, &[]));
        registry.add(21, &bob, entry(2, 201, &[]));
        assert_eq!(registry.subscribe_user(2, 9), Some(9));
        let mut conns = registry.room_conns(9);
        conns.sort();
        assert_eq!(conns, vec![20, 21]);
        assert_eq!(registry.subscribe_user(2, 9), None, "already in the room");
        assert_eq!(registry.unsubscribe_user(2, 9), Some(9));
        assert!(registry.room_conns(9).is_empty());
    }

    #[test]
    fn online_lists_are_sorted_by_display_name() {
        let mut registry = Registry::default();
        registry.add(1, &user(3, "carol"), entry(3, 1, &[5]));
        registry.add(2, &user(1, "Alice"), entry(1, 2, &[5]));
        registry.add(3, &user(2, "bob"), entry(2, 3, &[5]));
        let names: Vec<String> = registry.online(5).into_iter().map(|u| u.display_name).collect();
        assert_eq!(names, ["Alice", "bob", "carol"]);
    }

    #[test]
    fn sessions_find_their_connections() {
        let mut registry = Registry::default();
        registry.add(1, &user(1, "a"), entry(1, 42, &[]));
        registry.add(2, &user(1, "a"), entry(1, 43, &[]));
        assert_eq!(registry.session_conns(42), vec![1]);
    }
}
