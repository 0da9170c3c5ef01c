//! Who is connected, as whom, and which rooms each connection hears.
//!
//! Plain data, no locking and no I/O: [`super::Hub`] owns one behind a mutex and keeps
//! every critical section to a few map operations. Presence falls out of the same
//! maps: a user is online in a room while at least one of their connections is in it.
//! Each room also keeps its online people in name order, so a page of them is a range
//! read rather than a sort, and notes who came or went since presence was last told.
//!
//! With several nodes, people online elsewhere count too: each other node tells which
//! rooms each of its people has sockets in (see `crate::cluster`), and a person is
//! online in a room while they have a socket in it here or on any other node. A room's
//! online count per person is the number of such sources, so every change is a few map
//! operations, never a recount.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    ops::Bound,
    sync::Arc,
    time::Instant,
};

use app::protocol::{RoomId, UserId, UserRef};

use super::{
    heard::Heard,
    outbound::{CloseSignal, OutboundSender},
};
use crate::cluster::NodeId;

pub type ConnId = u64;

/// Typists kept per room and window (see [`Registry::note_typing`]).
const TYPISTS_REMEMBERED: usize = 2 * super::TYPING_NAMED;

/// Ids kept sorted in a vector, for what one socket or one person holds (a socket's
/// rooms; a person's sockets, at most their socket allowance). Every idle socket
/// keeps one of each: a vector is half a hash set's size, and a binary search through
/// even a few thousand rooms (direct conversations have no allowance) is quick.
#[derive(Debug, Clone)]
pub struct FewIds<T>(Vec<T>);

impl<T> Default for FewIds<T> {
    fn default() -> Self {
        FewIds(Vec::new())
    }
}

impl<T: Copy + Ord> FewIds<T> {
    /// False if it was there already.
    pub fn insert(&mut self, id: T) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, id);
                true
            }
        }
    }

    /// False if it was not there.
    pub fn remove(&mut self, id: &T) -> bool {
        match self.0.binary_search(id) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, id: &T) -> bool {
        self.0.binary_search(id).is_ok()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives back the room a run of inserts left spare.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl<T: Copy + Ord> FromIterator<T> for FewIds<T> {
    fn from_iter<I: IntoIterator<Item = T>>(ids: I) -> Self {
        let mut ids: Vec<T> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.shrink_to_fit();
        FewIds(ids)
    }
}

/// One open socket.
#[derive(Debug)]
pub struct ConnEntry {
    pub user_id: UserId,
    pub session_id: i64,
    pub rooms: FewIds<RoomId>,
    pub outbound: OutboundSender,
    pub close: CloseSignal,
}

/// How many of a person's connections here hear a room. Their tabs are told of each
/// join and leave, but a tab that opened meanwhile was greeted with the rooms as they
/// were then: one socket can hear a room while another does not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Following {
    None,
    Some,
    All,
}

/// Where a person sorts in an online list: by display name ignoring letter case, then
/// by id so that equal names still have one order.
pub type NameKey = (Arc<str>, UserId);

/// The sort position of a user in online lists ([`UserRef::sort_key`], shared with
/// the browser, which pages with the last user it holds).
pub fn name_key(user: &UserRef) -> NameKey {
    let (name, id) = user.sort_key();
    (Arc::from(name), id)
}

#[derive(Debug)]
struct UserEntry {
    user: UserRef,
    key: NameKey,
    conns: FewIds<ConnId>,
}

/// Someone with sockets on other nodes: per node, which rooms those are in and how
/// many there are.
#[derive(Debug)]
struct RemoteUser {
    user: UserRef,
    key: NameKey,
    nodes: HashMap<NodeId, (HashSet<RoomId>, u32)>,
}

/// A person's presence on one node: who, in which rooms, with how many sockets.
pub type NodePresence = (UserRef, Vec<RoomId>, u32);

#[derive(Debug, Default)]
struct RoomEntry {
    conns: HashSet<ConnId>,
    /// Per user: open connections here in this room, plus other nodes where they have
    /// one in it. A user is online here while > 0.
    online: HashMap<UserId, usize>,
    /// The same users, in name order.
    by_name: BTreeSet<NameKey>,
}

/// What presence has to tell a room: each user whose state changed since the last
/// notice, and whether they are online now (the last change wins).
pub type PresenceChanges = HashMap<UserId, bool>;

#[derive(Debug, Default)]
pub struct Registry {
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<UserId, UserEntry>,
    rooms: HashMap<RoomId, RoomEntry>,
    /// Rooms whose online set changed since presence was last announced.
    changed: HashMap<RoomId, PresenceChanges>,
    /// When each crowded room (told a count, not names) was last told it, so its
    /// next count waits out [`super::count_window`].
    counted_at: HashMap<RoomId, Instant>,
    /// Sessions ended lately, and when (see [`super::ENDED_SESSION_MEMORY`]); the
    /// same in the order they ended, so the oldest are forgotten from the front.
    ended_sessions: HashMap<i64, Instant>,
    ended_in_order: VecDeque<(Instant, i64)>,
    /// Whose each session with a socket here is: a session's end finds its sockets
    /// among its person's few, not by a look at every socket (a crowd of expired
    /// sessions turned away in a reconnect storm would cost sockets² otherwise).
    session_users: HashMap<i64, UserId>,
    /// Who started or went on typing in each room since typing was last announced.
    typing: HashMap<RoomId, Vec<UserId>>,
    /// People online on other nodes.
    remote: HashMap<UserId, RemoteUser>,
    /// People whose rooms on this node changed since other nodes were last told.
    local_changed: HashMap<UserId, UserRef>,
    /// How far each room's sockets here have been sent its messages: where to catch
    /// them up from if events from other nodes may have been lost.
    heard: HashMap<RoomId, Heard>,
    /// The newest message announced here in each room, whether or not it had sockets
    /// to hear it: a socket greeted from the database before an announcement and
    /// registered after it has missed that message. One number per room that has
    /// spoken since the start; rooms are never deleted, so neither is this.
    announced: HashMap<RoomId, i64>,
    /// Connections removed since the start: with the ids handed out, how much coming
    /// and going there has been.
    removed: u64,
}

impl Registry {
    /// Adds a connection subscribed to its entry's rooms.
    pub fn add(&mut self, id: ConnId, user: &UserRef, entry: ConnEntry) {
        let rooms: Vec<RoomId> = entry.rooms.iter().copied().collect();
        self.session_users.insert(entry.session_id, user.id);
        self.conns.insert(id, ConnEntry { rooms: FewIds::default(), ..entry });
        let user_entry = self
            .users
            .entry(user.id)
            .or_insert_with(|| UserEntry { user: user.clone(), key: name_key(user), conns: FewIds::default() });
        user_entry.conns.insert(id);
        self.local_changed.insert(user.id, user.clone());
        for room in rooms {
            self.subscribe(id, room);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.rooms.shrink_to_fit();
        }
    }

    /// Removes a connection; returns it.
    pub fn remove(&mut self, id: ConnId) -> Option<ConnEntry> {
        let rooms: Vec<RoomId> = self.conns.get(&id)?.rooms.iter().copied().collect();
        for room in rooms {
            self.unsubscribe(id, room);
        }
        let entry = self.conns.remove(&id)?;
        self.removed += 1;
        if let Some(user) = self.users.get_mut(&entry.user_id) {
            self.local_changed.insert(entry.user_id, user.user.clone());
            user.conns.remove(&id);
            if user.conns.is_empty() {
                self.users.remove(&entry.user_id);
            }
        }
        if self.session_conns(entry.session_id).is_empty() {
            self.session_users.remove(&entry.session_id);
        }
        Some(entry)
    }

    /// Subscribes one connection to a room, noting it if its user came online there;
    /// false if it was subscribed already (or is gone).
    fn subscribe(&mut self, id: ConnId, room_id: RoomId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if !conn.rooms.insert(room_id) {
            return false;
        }
        let user_id = conn.user_id;
        self.rooms.entry(room_id).or_default().conns.insert(id);
        if let Some(user) = self.users.get(&user_id) {
            let key = user.key.clone();
            self.local_changed.insert(user_id, user.user.clone());
            self.gain(room_id, user_id, key);
        }
        true
    }

    /// One more source (a connection here, or another node) has the user in the room.
    fn gain(&mut self, room_id: RoomId, user_id: UserId, key: NameKey) {
        let room = self.rooms.entry(room_id).or_default();
        let count = room.online.entry(user_id).or_insert(0);
        *count += 1;
        if *count == 1 {
            room.by_name.insert(key);
            self.changed.entry(room_id).or_default().insert(user_id, true);
        }
    }

    /// One source fewer has the user in the room.
    fn lose(&mut self, room_id: RoomId, user_id: UserId, key: &NameKey) {
        let Some(room) = self.rooms.get_mut(&room_id) else { return };
        if let Some(count) = room.online.get_mut(&user_id) {
            *count -= 1;
            if *count == 0 {
                room.online.remove(&user_id);
                room.by_name.remove(key);
                self.changed.entry(room_id).or_default().insert(user_id, false);
            }
        }
        if room.conns.is_empty() && room.online.is_empty() {
            self.rooms.remove(&room_id);
        }
    }

    /// Unsubscribes one connection, noting it if its user went offline in the room;
    /// false if it was not subscribed (or is gone).
    fn unsubscribe(&mut self, id: ConnId, room_id: RoomId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if !conn.rooms.remove(&room_id) {
            return false;
        }
        let user_id = conn.user_id;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.conns.remove(&id);
            if room.conns.is_empty() {
                // Sockets that come later start from their own greeting (read again
                // if it missed an announcement, see `announced`).
                self.heard.remove(&room_id);
            }
        }
        if let Some(user) = self.users.get(&user_id) {
            let key = user.key.clone();
            self.local_changed.insert(user_id, user.user.clone());
            self.lose(room_id, user_id, &key);
        }
        true
    }

    /// How many of the user's connections here hear the room; `None` when they have
    /// none here.
    pub fn user_following(&self, user_id: UserId, room_id: RoomId) -> Option<Following> {
        let user = self.users.get(&user_id).filter(|user| !user.conns.is_empty())?;
        let hear = |id: &ConnId| self.conns.get(id).is_some_and(|conn| conn.rooms.contains(&room_id));
        let hearing = user.conns.iter().filter(|id| hear(id)).count();
        Some(match hearing {
            0 => Following::None,
            n if n == user.conns.len() => Following::All,
            _ => Following::Some,
        })
    }

    /// Subscribes all of a user's connections (they joined the room); those that were
    /// not yet.
    pub fn subscribe_user(&mut self, user_id: UserId, room_id: RoomId) -> Vec<ConnId> {
        self.user_conns(user_id).into_iter().filter(|id| self.subscribe(*id, room_id)).collect()
    }

    /// Unsubscribes all of a user's connections (they left the room); those that were
    /// subscribed.
    pub fn unsubscribe_user(&mut self, user_id: UserId, room_id: RoomId) -> Vec<ConnId> {
        self.user_conns(user_id).into_iter().filter(|id| self.unsubscribe(*id, room_id)).collect()
    }

    /// Notes that a session ended at `now`, forgetting those ended too long ago.
    pub fn note_session_ended(&mut self, session_id: i64, now: Instant) {
        while let Some(&(at, oldest)) = self.ended_in_order.front() {
            if now.saturating_duration_since(at) < super::ENDED_SESSION_MEMORY {
                break;
            }
            self.ended_in_order.pop_front();
            // Unless it ended again since.
            if self.ended_sessions.get(&oldest) == Some(&at) {
                self.ended_sessions.remove(&oldest);
            }
        }
        self.ended_sessions.insert(session_id, now);
        self.ended_in_order.push_back((now, session_id));
    }

    /// Whether the session ended within [`super::ENDED_SESSION_MEMORY`] before `now`.
    pub fn session_ended_lately(&self, session_id: i64, now: Instant) -> bool {
        self.ended_sessions
            .get(&session_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < super::ENDED_SESSION_MEMORY)
    }

    /// How many ended sessions are remembered.
    #[cfg(test)]
    pub fn sessions_ended_lately(&self) -> usize {
        self.ended_sessions.len()
    }

    /// Takes the presence changes of the rooms due a notice at `now`, with each room's
    /// count online. A room small enough to be told names is due at once; a crowded
    /// one only once [`super::count_window`] has passed since its last count, its
    /// changes held until then (a count that moves every 250 ms in a room of
    /// thousands costs thousands of frames each time and tells nobody anything new).
    pub fn take_due_presence(&mut self, now: Instant) -> Vec<(RoomId, usize, PresenceChanges)> {
        let mut due = Vec::new();
        let mut held = HashMap::new();
        for (room_id, changes) in std::mem::take(&mut self.changed) {
            let total = self.online_count(room_id);
            if total <= super::PRESENCE_DETAIL_LIMIT {
                self.counted_at.remove(&room_id);
                due.push((room_id, total, changes));
                continue;
            }
            match self.counted_at.get(&room_id) {
                // Half a window of slack: flushes are a window apart give or take the
                // wait for the lock, and a room due now must not slip to the next one.
                Some(at) if now.saturating_duration_since(*at) + super::PRESENCE_WINDOW / 2 < super::count_window(total) => {
                    held.insert(room_id, changes);
                }
                _ => {
                    self.counted_at.insert(room_id, now);
                    due.push((room_id, total, changes));
                }
            }
        }
        self.changed = held;
        // A room quiet for longer than any window starts afresh.
        self.counted_at.retain(|_, at| now.saturating_duration_since(*at) < super::COUNT_WINDOW_MAX);
        due
    }

    /// Notes that a user is typing in a room (each user once per window). Only the
    /// first few are kept: a notice names [`super::TYPING_NAMED`], and remembering a
    /// crowd of typists would cost a search through all of them for each keystroke
    /// notice. The slack covers those whose message or departure ends their typing.
    pub fn note_typing(&mut self, room_id: RoomId, user_id: UserId) {
        let typists = self.typing.entry(room_id).or_default();
        if typists.len() < TYPISTS_REMEMBERED && !typists.contains(&user_id) {
            typists.push(user_id);
        }
    }

    /// Forgets that the user was typing in the room: their message just went out, and
    /// a notice gathered before it would arrive after it.
    pub fn stop_typing(&mut self, room_id: RoomId, user_id: UserId) {
        if let Some(typists) = self.typing.get_mut(&room_id) {
            typists.retain(|typist| *typist != user_id);
        }
    }

    /// Takes who typed where since the last call.
    pub fn take_typing(&mut self) -> HashMap<RoomId, Vec<UserId>> {
        std::mem::take(&mut self.typing)
    }

    /// Someone online here or on another node.
    pub fn user(&self, user_id: UserId) -> Option<&UserRef> {
        self.users.get(&user_id).map(|entry| &entry.user).or_else(|| self.remote.get(&user_id).map(|remote| &remote.user))
    }

    /// Sets the rooms where `user` has sockets on `node`, and how many (none: gone
    /// from there).
    pub fn set_remote(&mut self, node: &NodeId, user: &UserRef, rooms: &[RoomId], sockets: u32) {
        let key = match self.remote.get(&user.id) {
            Some(remote) => remote.key.clone(),
            None => name_key(user),
        };
        let remote = self
            .remote
            .entry(user.id)
            .or_insert_with(|| RemoteUser { user: user.clone(), key: key.clone(), nodes: HashMap::new() });
        let (before, _) = remote.nodes.remove(node).unwrap_or_default();
        let after: HashSet<RoomId> = if sockets > 0 { rooms.iter().copied().collect() } else { HashSet::new() };
        if sockets > 0 {
            remote.nodes.insert(node.clone(), (after.clone(), sockets));
        } else if remote.nodes.is_empty() {
            self.remote.remove(&user.id);
        }
        for room_id in after.difference(&before) {
            self.gain(*room_id, user.id, key.clone());
        }
        for room_id in before.difference(&after) {
            self.lose(*room_id, user.id, &key);
        }
    }

    /// Forgets everyone `node` had (it stopped, or is about to say again who it has).
    pub fn forget_node(&mut self, node: &NodeId) {
        let users: Vec<UserRef> =
            self.remote.values().filter(|remote| remote.nodes.contains_key(node)).map(|remote| remote.user.clone()).collect();
        for user in users {
            self.set_remote(node, &user, &[], 0);
        }
    }

    /// The nodes someone here has heard from, for finding the ones that went quiet.
    pub fn remote_nodes(&self) -> HashSet<NodeId> {
        self.remote.values().flat_map(|remote| remote.nodes.keys().cloned()).collect()
    }

    /// Sockets a person has on other nodes.
    pub fn sockets_elsewhere(&self, user_id: UserId) -> u64 {
        // Counts come from other nodes through Redis: summed wide, never overflowing.
        self.remote.get(&user_id).map_or(0, |remote| remote.nodes.values().map(|(_, sockets)| u64::from(*sockets)).sum())
    }

    /// Takes the people whose sockets or rooms on this node changed since the last
    /// call, with those now (no sockets: their last one here closed).
    pub fn take_local_changes(&mut self) -> Vec<NodePresence> {
        let changed = std::mem::take(&mut self.local_changed);
        changed.into_values().map(|user| self.local_presence_of(user)).collect()
    }

    fn local_presence_of(&self, user: UserRef) -> NodePresence {
        let sockets = self.users.get(&user.id).map_or(0, |entry| entry.conns.len() as u32);
        let rooms = self.local_rooms(user.id);
        (user, rooms, sockets)
    }

    /// On a single node nobody needs to hear of them. The map is let go of, not
    /// cleared: after a reconnect storm it has room for everyone who came (64 bytes
    /// each), and `clear` would keep that room for good.
    pub fn forget_local_changes(&mut self) {
        self.local_changed = HashMap::new();
    }

    /// Everyone with a socket here, with their rooms: what another node needs to know
    /// after losing track of this one.
    pub fn local_presence(&self) -> Vec<NodePresence> {
        self.users.values().map(|entry| self.local_presence_of(entry.user.clone())).collect()
    }

    /// Everyone with a socket here, with each room any of their sockets hear and how
    /// many do.
    pub fn local_following(&self) -> Vec<(UserId, Vec<(RoomId, Following)>)> {
        self.users
            .keys()
            .map(|&user_id| {
                let rooms = self.local_rooms(user_id);
                let following = rooms.into_iter().filter_map(|room| Some((room, self.user_following(user_id, room)?))).collect();
                (user_id, following)
            })
            .collect()
    }

    /// The rooms a person's sockets here hear.
    pub fn local_rooms(&self, user_id: UserId) -> Vec<RoomId> {
        let Some(user) = self.users.get(&user_id) else { return Vec::new() };
        let rooms: BTreeSet<RoomId> =
            user.conns.iter().filter_map(|id| self.conns.get(id)).flat_map(|conn| conn.rooms.iter().copied()).collect();
        rooms.into_iter().collect()
    }

    fn has_sockets(&self, room_id: RoomId) -> bool {
        self.rooms.get(&room_id).is_some_and(|room| !room.conns.is_empty())
    }

    /// Notes that the room's sockets were sent message `seq`.
    pub fn heard(&mut self, room_id: RoomId, seq: i64) {
        let newest = self.announced.entry(room_id).or_insert(seq);
        *newest = (*newest).max(seq);
        if self.has_sockets(room_id) {
            self.heard.entry(room_id).or_insert_with(|| Heard::starting_at(seq - 1)).note(seq);
        }
    }

    /// Notes that the room's sockets were given every message up to `through` (a
    /// greeting or a join), unless the room is followed already: its sockets may be
    /// missing messages before that which this one was given.
    pub fn heard_through(&mut self, room_id: RoomId, through: i64) {
        if self.has_sockets(room_id) {
            self.heard.entry(room_id).or_insert_with(|| Heard::starting_at(through));
        }
    }

    /// Up to where the room's sockets here count as sent every message (what a
    /// message at or below it skips), if it has sockets.
    pub fn heard_mark(&self, room_id: RoomId) -> Option<i64> {
        self.heard.get(&room_id).map(Heard::through)
    }

    /// The newest message announced here in the room, if any.
    pub fn announced(&self, room_id: RoomId) -> Option<i64> {
        self.announced.get(&room_id).copied()
    }

    /// Counts every message up to `seq` as sent to the room's sockets (a catch-up left
    /// the clients to fetch any gap before it).
    pub fn heard_all_through(&mut self, room_id: RoomId, seq: i64) {
        if let Some(heard) = self.heard.get_mut(&room_id) {
            heard.skip_to(seq);
        }
    }

    /// Whether the room's sockets here were sent message `seq` already.
    pub fn was_heard(&self, room_id: RoomId, seq: i64) -> bool {
        self.heard.get(&room_id).is_some_and(|heard| heard.has(seq))
    }

    /// Rooms with sockets here, and the message up to which they were sent all.
    pub fn rooms_heard(&self) -> Vec<(RoomId, i64)> {
        self.rooms
            .iter()
            .filter(|(_, room)| !room.conns.is_empty())
            .filter_map(|(room_id, _)| self.heard.get(room_id).map(|heard| (*room_id, heard.through())))
            .collect()
    }

    pub fn user_conns(&self, user_id: UserId) -> Vec<ConnId> {
        self.users.get(&user_id).map(|user| user.conns.iter().copied().collect()).unwrap_or_default()
    }

    /// The connections subscribed to a room.
    pub fn room_conns(&self, room_id: RoomId) -> impl Iterator<Item = ConnId> + '_ {
        self.rooms.get(&room_id).into_iter().flat_map(|room| room.conns.iter().copied())
    }

    pub fn session_conns(&self, session_id: i64) -> Vec<ConnId> {
        let Some(user_id) = self.session_users.get(&session_id) else { return Vec::new() };
        let in_session = |id: &ConnId| self.conns.get(id).is_some_and(|conn| conn.session_id == session_id);
        self.users.get(user_id).map(|user| user.conns.iter().copied().filter(in_session).collect()).unwrap_or_default()
    }

    pub fn all_conns(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    pub fn conn(&self, id: ConnId) -> Option<&ConnEntry> {
        self.conns.get(&id)
    }

    /// How many people are online in a room.
    pub fn online_count(&self, room_id: RoomId) -> usize {
        self.rooms.get(&room_id).map_or(0, |room| room.online.len())
    }

    /// Up to `limit` people online in a room, in name order, starting after `after`;
    /// and whether more follow.
    pub fn online_page(&self, room_id: RoomId, after: Option<&UserRef>, limit: usize) -> (Vec<UserRef>, bool) {
        let Some(room) = self.rooms.get(&room_id) else { return (Vec::new(), false) };
        let start = match after {
            Some(user) => Bound::Excluded(name_key(user)),
            None => Bound::Unbounded,
        };
        let mut keys = room.by_name.range((start, Bound::Unbounded));
        let users: Vec<UserRef> =
            keys.by_ref().take(limit).filter_map(|(_, user_id)| self.user(*user_id).cloned()).collect();
        (users, keys.next().is_some())
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections removed since the start (each counted once, whether its task ended
    /// or the hub closed it).
    pub fn connections_removed(&self) -> u64 {
        self.removed
    }

    /// People with at least one connection here.
    pub fn user_count(&self) -> usize {
        self.users.len()
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
    fn few_ids_hold_each_id_once() {
        let mut ids: FewIds<u64> = [3, 1, 3, 2].into_iter().collect();
        assert_eq!(ids.len(), 3, "the repeated 3 is held once");
        assert!(!ids.insert(1), "already there");
        assert!(ids.insert(4));
        assert!(ids.remove(&3));
        assert!(!ids.remove(&3), "gone already");
        let held: Vec<u64> = ids.iter().copied().collect();
        assert_eq!(held, [1, 2, 4], "in order");
        assert!(ids.contains(&2) && !ids.contains(&3));
        for id in [1, 2, 4] {
            ids.remove(&id);
        }
        assert!(ids.is_empty());
    }

    #[test]
    fn a_single_node_lets_go_of_the_room_its_changes_took() {
        let mut registry = Registry::default();
        for id in 0..1_000 {
            registry.add(id, &user(id as i64, "Ana"), entry(id as i64, id as i64, &[1]));
        }
        registry.forget_local_changes();
        assert_eq!(registry.local_changed.capacity(), 0, "what a storm needed is freed");
    }

    fn changes(registry: &mut Registry, room: RoomId) -> Vec<(UserId, bool)> {
        let mut changed: Vec<(UserId, bool)> = registry
            .take_due_presence(Instant::now())
            .into_iter()
            .filter(|(room_id, ..)| *room_id == room)
            .flat_map(|(.., changes)| changes)
            .collect();
        changed.sort();
        changed
    }

    #[test]
    fn a_user_with_two_tabs_is_online_once_until_both_close() {
        let alice = user(1, "Alice");
        let mut registry = Registry::default();
        registry.add(10, &alice, entry(1, 100, &[7]));
        assert_eq!(changes(&mut registry, 7), [(1, true)]);
        registry.add(11, &alice, entry(1, 100, &[7]));
        assert!(changes(&mut registry, 7).is_empty(), "a second tab changes nothing");
        assert_eq!(registry.online_page(7, None, 10), (vec![alice.clone()], false));

        registry.remove(10).unwrap();
        assert!(changes(&mut registry, 7).is_empty(), "still online through the other tab");
        assert_eq!(registry.online_count(7), 1);

        registry.remove(11).unwrap();
        assert_eq!(changes(&mut registry, 7), [(1, false)]);
        assert_eq!(registry.online_count(7), 0);
        assert_eq!(registry.connection_count(), 0);
    }

    #[test]
    fn coming_and_going_within_one_window_leaves_the_final_state() {
        let mut registry = Registry::default();
        registry.add(1, &user(1, "a"), entry(1, 1, &[5]));
        registry.remove(1);
        registry.add(2, &user(2, "b"), entry(2, 2, &[5]));
        assert_eq!(changes(&mut registry, 5), [(1, false), (2, true)]);
    }

    #[test]
    fn joining_and_leaving_moves_every_tab_of_the_user() {
        let bob = user(2, "Bob");
        let mut registry = Registry::default();
        registry.add(20, &bob, entry(2, 200, &[]));
        registry.add(21, &bob, entry(2, 201, &[]));
        registry.subscribe_user(2, 9);
        let mut conns: Vec<ConnId> = registry.room_conns(9).collect();
        conns.sort();
        assert_eq!(conns, vec![20, 21]);
        assert_eq!(changes(&mut registry, 9), [(2, true)]);
        registry.subscribe_user(2, 9);
        assert!(changes(&mut registry, 9).is_empty(), "already in the room");
        registry.unsubscribe_user(2, 9);
        assert_eq!(registry.room_conns(9).count(), 0);
        assert_eq!(changes(&mut registry, 9), [(2, false)]);
    }

    #[test]
    fn online_lists_are_pages_in_name_order() {
        let mut registry = Registry::default();
        let names = ["carol", "Alice", "bob", "Álvaro", "alice", "dave"];
        for (n, name) in names.iter().enumerate() {
            let id = n as i64 + 1;
            registry.add(id as u64, &user(id, name), entry(id, id, &[5]));
        }
        let (first, more) = registry.online_page(5, None, 4);
        let shown: Vec<&str> = first.iter().map(|u| u.display_name.as_str()).collect();
        assert_eq!(shown, ["Alice", "alice", "bob", "carol"]);
        assert!(more);
        let (rest, more) = registry.online_page(5, first.last(), 4);
        let shown: Vec<&str> = rest.iter().map(|u| u.display_name.as_str()).collect();
        assert_eq!(shown, ["dave", "Álvaro"]);
        assert!(!more);
        assert_eq!(registry.online_count(5), 6);
    }

    #[test]
    fn a_crowd_typing_at_once_is_remembered_by_its_first_few_only() {
        let mut registry = Registry::default();
        for user_id in 1..=5_000 {
            registry.note_typing(7, user_id);
            registry.note_typing(7, user_id);
        }
        let typists = registry.take_typing().remove(&7).unwrap();
        assert_eq!(typists, (1..=TYPISTS_REMEMBERED as UserId).collect::<Vec<_>>(), "the first, each once");
    }

    #[test]
    fn sessions_find_their_connections() {
        let mut registry = Registry::default();
        registry.add(1, &user(1, "a"), entry(1, 42, &[]));
        registry.add(2, &user(1, "a"), entry(1, 43, &[]));
        registry.add(3, &user(1, "a"), entry(1, 42, &[]));
        registry.add(4, &user(2, "b"), entry(2, 44, &[]));
        assert_eq!(registry.session_conns(42), vec![1, 3]);
        assert_eq!(registry.session_conns(44), vec![4]);
        registry.remove(1);
        assert_eq!(registry.session_conns(42), vec![3]);
        registry.remove(3);
        registry.remove(4);
        assert_eq!(registry.session_conns(42), Vec::<ConnId>::new());
        assert_eq!(registry.session_conns(43), vec![2]);
        // Sessions without sockets here are forgotten with their last one.
        assert_eq!(registry.session_users.keys().copied().collect::<Vec<_>>(), vec![43]);
    }
}
