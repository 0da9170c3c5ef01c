//! The hub: live fan-out of chat events to the sockets that should see them.
//!
//! Layered like mini-redis: [`registry`] knows who is connected where (and so who is
//! online), [`outbound`] owns each connection's bounded queue, and this module ties
//! them together behind one small API. The hub never touches the database: callers
//! store first and publish after, so anything the hub drops can be re-read from there.
//!
//! Presence is told in deltas, gathered per room over [`PRESENCE_WINDOW`]: a crowd
//! connecting at once costs each member one small frame per window, never a full list
//! per arrival (which made a reconnect storm cost members² bytes). Full lists are only
//! sent a page at a time to a client that asks ([`Hub::send_online_page`]). Typing
//! notices are gathered the same way, so a room where many type at once costs each
//! member one frame per window.
//!
//! With several nodes, everything published here is also handed to a [`Relay`] (the
//! cluster link), which tells the other nodes; what they publish comes back through
//! [`Hub::apply_remote`] and reaches this node's sockets the same way, except joins and
//! leaves, which are checked against the database first ([`membership_checks`]).

mod heard;
pub mod membership_checks;
pub mod outbound;
mod registry;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use app::protocol::{MessageKind, RequestId, RoomId, RoomSummary, Seq, ServerMsg, UserId, UserRef};
use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

pub use outbound::{CloseReason, CloseSignal, OutboundReceiver, Outgoing, QueueLimits};
pub use registry::ConnId;
pub use registry::NodePresence;
use membership_checks::PendingChecks;
pub use membership_checks::{MembershipCheck, MembershipKey};
pub use registry::Following;
use registry::{ConnEntry, PresenceChanges, Registry};

use crate::{
    cluster::{Event, NodeId},
    metrics::{self, FrameKind},
    recent_authors::RecentAuthors,
};

/// Where the hub sends what other nodes must hear. Called with the hub's lock held,
/// so that events leave in the order they happened here: it must only queue.
pub trait Relay: Send + Sync {
    /// An event for the other nodes, with its frame as encoded here.
    fn relay(&self, event: Event, frame: Option<Utf8Bytes>);
    /// Everyone with sockets here and their rooms, replacing what the others knew.
    fn presence_snapshot(&self, people: Vec<NodePresence>);
}

/// How long presence changes in a room are gathered before they are announced.
pub const PRESENCE_WINDOW: Duration = Duration::from_millis(250);
/// Rooms with more people online than this get presence as a count only: naming
/// everyone who came and went would cost every member bytes for each of them.
pub const PRESENCE_DETAIL_LIMIT: usize = 100;
/// People a crowded room's count notices may reach per [`PRESENCE_WINDOW`]: above
/// this the count waits longer between notices, so a reconnect storm in a room of
/// thousands costs a bounded number of frames a second, not one per member per window.
const COUNT_READERS_PER_WINDOW: usize = 2_500;
/// How long an ended session is remembered, so a socket checked against it just
/// before it ended is closed when it registers. Far longer than a handshake takes;
/// the heartbeat's session check catches anything later.
pub const ENDED_SESSION_MEMORY: Duration = Duration::from_secs(120);
/// The longest a crowded room's count waits between notices. Up to 50,000 online the
/// frames a second stay bounded; with 2 s, a reconnect storm of 50,000 people over
/// three nodes spent over a third (38 %) of a node's time writing count notices, 25,000
/// a second across the nodes.
pub const COUNT_WINDOW_MAX: Duration = Duration::from_secs(5);

/// How long a room with `online` people, told only a count, waits between notices:
/// one window up to [`COUNT_READERS_PER_WINDOW`] people, a window more per as many
/// again (10,000 online: 1 s), at most [`COUNT_WINDOW_MAX`].
pub fn count_window(online: usize) -> Duration {
    let windows = online.div_ceil(COUNT_READERS_PER_WINDOW).max(1) as u32;
    (PRESENCE_WINDOW * windows).min(COUNT_WINDOW_MAX)
}
/// Most people one typing notice names.
pub const TYPING_NAMED: usize = 10;

/// Which of a person's tabs here a join is told to ([`Hub::join_here_told`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TellJoin {
    /// The sockets that start hearing the room: a join checked from another node,
    /// where tabs greeted since were told by their greeting.
    SocketsJoined,
    /// Every socket: a join made here without a request to answer (a new account's
    /// first room, the other person of a new direct conversation), or after a summary
    /// that could not be read left them untold.
    EverySocket,
    /// Every socket, `conn` with the answer to its request `id`: a join made here.
    EverySocketAnswering { conn: ConnId, id: RequestId },
}

/// Shared by all connection tasks; cheap operations under one short-lived lock.
pub struct Hub {
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    limits: QueueLimits,
    /// Set (under the registry lock) by [`Hub::shutdown`]: a socket that registers
    /// afterwards (its handshake was under way) is told to reconnect at once.
    closing: AtomicBool,
    /// The other nodes, when there are any.
    relay: OnceLock<Arc<dyn Relay>>,
    /// Who wrote each room's last few messages, here or on another node: a read
    /// receipt in a public room is told to them only.
    recent_authors: RecentAuthors,
    /// Joins and leaves other nodes made, waiting to be checked against the database
    /// before this node's sockets follow them (see [`membership_checks`]).
    membership_checks: PendingChecks,
}

/// What a connection task gets from [`Hub::connect`].
pub struct Connection {
    pub id: ConnId,
    /// Frames to write to the socket, in order.
    pub outbound: OutboundReceiver,
    /// Fires when the hub wants this connection closed, with the reason.
    pub close: CloseSignal,
}

/// Sockets and their queues now, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    pub sockets: usize,
    /// People with at least one socket.
    pub users: usize,
    /// The most frames waiting for any one socket.
    pub queue_max_frames: usize,
    /// Bytes waiting for all sockets.
    pub queue_bytes: usize,
}

/// Not delivered: the connection does not hear that room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSubscribed;

impl Hub {
    pub fn new(limits: QueueLimits) -> Self {
        Hub {
            registry: Mutex::new(Registry::default()),
            next_conn: AtomicU64::new(1),
            limits,
            closing: AtomicBool::new(false),
            relay: OnceLock::new(),
            recent_authors: RecentAuthors::default(),
            membership_checks: PendingChecks::default(),
        }
    }

    /// Notes that the person's membership of the room may have changed on another
    /// node (or while events were lost), to be checked against the database
    /// (`Chat::run_membership_checks`): the hub cannot tell which of two changes
    /// heard in some order was made last, the database can.
    pub fn check_membership_later(&self, check: MembershipCheck) {
        self.membership_checks.add(check, false);
    }

    /// The oldest membership check waiting, once there is one: checked in the order
    /// heard, so a person's change waits no longer than those heard before it.
    pub async fn next_membership_check(&self) -> MembershipCheck {
        self.membership_checks.next().await
    }

    /// From now on, everything published here is also relayed to other nodes.
    pub fn attach_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    fn relay(&self, event: Event, frame: Option<&Utf8Bytes>) {
        if let Some(relay) = self.relay.get() {
            relay.relay(event, frame.cloned());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain maps behind, still consistent
        // enough to serve; refusing every later connection would be worse.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// For the hub's own tests: a socket in `rooms`, greeted with empty ones.
    #[cfg(test)]
    pub fn connect(&self, user: &UserRef, session_id: i64, rooms: &[RoomId]) -> Connection {
        self.connect_greeted(user, session_id, &rooms.iter().map(|room| (*room, 0)).collect::<Vec<_>>()).0
    }

    /// Registers a socket for `user`, subscribed to the rooms they are a member of,
    /// each given with the newest message its greeting shows: where catching that
    /// room's sockets up starts if nothing was sent there before (noted in the same
    /// step, so no message slips in between). Rooms where they were not online yet
    /// hear of it with the next presence notice. Also says whether a message newer
    /// than a greeting's was announced before the socket was here to hear it: the
    /// greeting, read too early, needs reading again.
    pub fn connect_greeted(&self, user: &UserRef, session_id: i64, rooms: &[(RoomId, Seq)]) -> (Connection, bool) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = outbound::queue(self.limits);
        let close = CloseSignal::default();
        let entry = ConnEntry {
            user_id: user.id,
            session_id,
            rooms: rooms.iter().map(|(room, _)| *room).collect(),
            outbound: sender,
            close: close.clone(),
        };
        let mut registry = self.lock();
        registry.add(id, user, entry);
        let mut missed = false;
        for &(room_id, through) in rooms {
            let announced = registry.announced(room_id).unwrap_or(through);
            missed |= announced > through;
            // The greeting is read again when it missed an announcement, and a room
            // that had no sockets here then needs nothing sent again.
            registry.heard_through(room_id, through.max(announced));
        }
        if self.closing.load(Ordering::Relaxed) {
            close.close(CloseReason::ShuttingDown);
        } else if registry.session_ended_lately(session_id, Instant::now()) {
            close.close(CloseReason::SessionEnded);
        }
        drop(registry);
        (Connection { id, outbound: receiver, close }, missed)
    }

    /// Forgets a socket (its task is ending).
    pub fn disconnect(&self, id: ConnId) {
        self.lock().remove(id);
    }

    /// Sends an event to every connection in a room, except `origin` (which gets its
    /// own acknowledgement instead).
    pub fn publish(&self, room_id: RoomId, msg: &ServerMsg, origin: Option<ConnId>) {
        self.publish_committed(room_id, msg, origin, None);
    }

    /// As [`Hub::publish`], for a message committed at `committed_at` (its delivery
    /// latency is measured from there).
    pub fn publish_committed(&self, room_id: RoomId, msg: &ServerMsg, origin: Option<ConnId>, committed_at: Option<Instant>) {
        let frame = encode(msg);
        let kind = frame_kind(msg);
        let (seq, author) = match msg {
            ServerMsg::Message { message } => {
                (Some(message.seq), (message.kind == MessageKind::Text).then_some(message.sender.id))
            }
            _ => (None, None),
        };
        let mut registry = self.lock();
        if let Some(author) = author {
            registry.stop_typing(room_id, author);
        }
        // A catch-up may have read it from the database between its commit and now.
        if !seq.is_some_and(|seq| registry.was_heard(room_id, seq)) {
            let targets: Vec<ConnId> = registry.room_conns(room_id).filter(|id| Some(*id) != origin).collect();
            Self::deliver(&mut registry, &targets, &frame, kind, committed_at);
        }
        if let Some(seq) = seq {
            registry.heard(room_id, seq);
            if let Some(author) = author {
                self.recent_authors.wrote(room_id, seq, author);
            }
        }
        self.relay(Event::Room { room: room_id, kind: kind.into(), seq, author }, Some(&frame));
    }

    /// The authors of the last few messages in a room (from any node) after `from` up
    /// to `to`: those a reader moving from `from` to `to` has just read.
    pub fn authors_between(&self, room_id: RoomId, from: Seq, to: Seq) -> Vec<UserId> {
        self.recent_authors.between(room_id, from, to)
    }

    /// Sends a frame to one connection (replies).
    pub fn send_to(&self, conn: ConnId, msg: &ServerMsg) {
        self.send_committed(conn, msg, None);
    }

    /// As [`Hub::send_to`], for the acknowledgement of a message committed at
    /// `committed_at`.
    pub fn send_committed(&self, conn: ConnId, msg: &ServerMsg, committed_at: Option<Instant>) {
        let frame = encode(msg);
        let mut registry = self.lock();
        Self::deliver(&mut registry, &[conn], &frame, frame_kind(msg), committed_at);
    }

    /// Sends an event to every connection of a user on this node, except `origin`.
    /// Not relayed: it tells tabs of a join or leave, which other nodes tell theirs
    /// once they have checked it against the database.
    pub fn send_to_user_here(&self, user_id: UserId, msg: &ServerMsg, origin: Option<ConnId>) {
        let frame = encode(msg);
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.user_conns(user_id).into_iter().filter(|id| Some(*id) != origin).collect();
        Self::deliver(&mut registry, &targets, &frame, frame_kind(msg), None);
    }

    /// Sends an event to every connection of each user named (each once), encoded once.
    pub fn send_to_users(&self, user_ids: &[UserId], msg: &ServerMsg) {
        let frame = encode(msg);
        let mut registry = self.lock();
        Self::deliver_to_users(&mut registry, user_ids, &frame, frame_kind(msg));
        self.relay(Event::Users { users: user_ids.to_vec(), kind: frame_kind(msg).into() }, Some(&frame));
    }

    fn deliver_to_users(registry: &mut Registry, user_ids: &[UserId], frame: &Utf8Bytes, kind: FrameKind) {
        let mut targets: Vec<ConnId> = Vec::new();
        for user_id in user_ids.iter().collect::<std::collections::BTreeSet<_>>() {
            targets.extend(registry.user_conns(*user_id));
        }
        Self::deliver(registry, &targets, frame, kind, None);
    }

    /// The user became a member of a room, whose messages up to `through` they can
    /// read from its history: other nodes check their sockets. This node's are joined
    /// and told by [`Hub::join_here_told`].
    pub fn relay_join(&self, user_id: UserId, room_id: RoomId, through: Seq) {
        self.relay(Event::Joined { user: user_id, room: room_id, through: Some(through) }, None);
    }

    /// The user left a room: none of their sockets hear it any more, and other nodes
    /// check theirs.
    pub fn leave(&self, user_id: UserId, room_id: RoomId) {
        self.leave_here(user_id, room_id);
        self.relay(Event::Left { user: user_id, room: room_id }, None);
    }

    /// A join, made here or checked from another node: the user's sockets here that
    /// do not hear the room start to, and the tabs `tell` names are told `summary`, in
    /// one step, so that no message reaches them before the room is on their page (it
    /// would be dropped there). Unless `anyway`, nothing is done if a message newer
    /// than `summary` was announced here (`None`: read it again), since their page
    /// would not count it. The sockets that started to hear the room, and the number
    /// up to which the room's messages will not reach them live: those that went out
    /// before they heard it, or that this step counts as sent (the room had no sockets
    /// here, and the summary covers them).
    pub fn join_here_told(&self, user_id: UserId, room_id: RoomId, summary: &RoomSummary, anyway: bool, tell: TellJoin) -> Option<(Vec<ConnId>, Seq)> {
        let mut registry = self.lock();
        let announced = registry.announced(room_id).unwrap_or(summary.last_seq);
        if announced > summary.last_seq && !anyway {
            return None;
        }
        let joined = registry.subscribe_user(user_id, room_id);
        // As for a greeting: a room that had no sockets here needs nothing sent again.
        registry.heard_through(room_id, summary.last_seq.max(announced));
        let not_live = registry.heard_mark(room_id).unwrap_or(announced);
        let mut told = if tell == TellJoin::SocketsJoined { joined.clone() } else { registry.user_conns(user_id) };
        if let TellJoin::EverySocketAnswering { conn, id } = tell {
            let reply = encode(&ServerMsg::RoomJoined { id: Some(id), room: summary.clone() });
            Self::deliver(&mut registry, &[conn], &reply, FrameKind::Reply, None);
            told.retain(|told| *told != conn);
        }
        let frame = encode(&ServerMsg::RoomJoined { id: None, room: summary.clone() });
        Self::deliver(&mut registry, &told, &frame, FrameKind::Reply, None);
        Some((joined, not_live))
    }

    /// [`Hub::leave`] for this node's sockets only (another node's leave, checked, or
    /// found when this one had nothing to store): the sockets that heard the room
    /// until now.
    pub fn leave_here(&self, user_id: UserId, room_id: RoomId) -> Vec<ConnId> {
        self.lock().unsubscribe_user(user_id, room_id)
    }

    /// The user's sockets here, to tell each where they stand.
    pub fn sockets_here(&self, user_id: UserId) -> Vec<ConnId> {
        self.lock().user_conns(user_id)
    }

    /// How many of the user's sockets here hear the room; `None` when they have none.
    /// A check compares this with the database: some sockets may hear a room others do
    /// not yet (a tab greeted after the change, before the check).
    pub fn following_here(&self, user_id: UserId, room_id: RoomId) -> Option<Following> {
        self.lock().user_following(user_id, room_id)
    }

    /// Sends an event to each of these connections: the sockets a checked join or leave
    /// changed, so that those already told are not told twice.
    pub fn send_to_each(&self, conns: &[ConnId], msg: &ServerMsg) {
        let frame = encode(msg);
        let mut registry = self.lock();
        Self::deliver(&mut registry, conns, &frame, frame_kind(msg), None);
    }

    /// Closes every socket opened with this session (logout, expiry), on every node.
    pub fn end_session(&self, session_id: i64) {
        Self::close_session(&mut self.lock(), session_id);
        self.relay(Event::SessionEnded { session: session_id }, None);
    }

    /// Closes the session's sockets, and remembers for [`ENDED_SESSION_MEMORY`] that it
    /// ended: a socket whose session was checked just before the logout, still on its
    /// way to registering, is closed as it registers (instead of checking the session
    /// again in the database once registered, one query more per connect).
    fn close_session(registry: &mut Registry, session_id: i64) {
        registry.note_session_ended(session_id, Instant::now());
        for id in registry.session_conns(session_id) {
            if let Some(conn) = registry.conn(id) {
                conn.close.close(CloseReason::SessionEnded);
            }
        }
    }

    /// Applies what another node published: its events reach this node's sockets as
    /// they reached its own (the frame as it encoded it), and its people's presence
    /// joins this node's. Never relayed again.
    pub fn apply_remote(&self, node: &NodeId, event: Event, frame: Utf8Bytes) {
        let mut registry = self.lock();
        match event {
            Event::Room { room, kind, seq, author } => {
                // A catch-up may have sent it already (read from the database while
                // the event was on its way).
                if let Some(author) = author {
                    registry.stop_typing(room, author);
                }
                if seq.is_some_and(|seq| registry.was_heard(room, seq)) {
                    return;
                }
                let targets: Vec<ConnId> = registry.room_conns(room).collect();
                Self::deliver(&mut registry, &targets, &frame, kind.into(), None);
                if let Some(seq) = seq {
                    registry.heard(room, seq);
                    if let Some(author) = author {
                        self.recent_authors.wrote(room, seq, author);
                    }
                }
            }
            Event::Users { users, kind } => Self::deliver_to_users(&mut registry, &users, &frame, kind.into()),
            // Checked against the database before anything here follows it, since
            // a change made here meanwhile may be the later one.
            Event::Joined { user, room, through } => self.membership_checks.add(MembershipCheck::joined(user, room, through), false),
            Event::Left { user, room } => self.membership_checks.add(MembershipCheck::of(user, room), true),
            Event::SessionEnded { session } => Self::close_session(&mut registry, session),
            Event::Typing { room, user } => registry.note_typing(room, user.id),
            Event::Presence { user, rooms, sockets } => registry.set_remote(node, &user, &rooms, sockets),
            // About the link itself, handled by the cluster module.
            Event::NodeUp | Event::CatchUp => {}
        }
    }

    /// Replaces what this node knows of `node`'s people with `people` (read whole after
    /// losing track of it, or when it says it is back).
    pub fn replace_remote_node(&self, node: &NodeId, people: &[NodePresence]) {
        let mut registry = self.lock();
        registry.forget_node(node);
        for (user, rooms, sockets) in people {
            registry.set_remote(node, user, rooms, *sockets);
        }
    }

    /// Sockets a person has open, here and on the other nodes (as they last said).
    pub fn sockets_of(&self, user_id: UserId) -> usize {
        let registry = self.lock();
        registry.user_conns(user_id).len().saturating_add(usize::try_from(registry.sockets_elsewhere(user_id)).unwrap_or(usize::MAX))
    }

    /// Forgets a node that stopped (its people go offline here with the next notice).
    pub fn forget_remote_node(&self, node: &NodeId) {
        self.lock().forget_node(node);
    }

    /// The other nodes this one knows people on.
    pub fn remote_nodes(&self) -> std::collections::HashSet<NodeId> {
        self.lock().remote_nodes()
    }

    /// Tells the other nodes everyone with a socket here, with their rooms, in order
    /// with the presence changes relayed before and after.
    pub fn announce_presence(&self) {
        if let Some(relay) = self.relay.get() {
            relay.presence_snapshot(self.lock().local_presence());
        }
    }

    /// Rooms with sockets here, each with the message up to which they were sent all
    /// (the end of the unbroken run: a lost one holds it back).
    pub fn rooms_heard(&self) -> Vec<(RoomId, i64)> {
        self.lock().rooms_heard()
    }

    /// Sends a room's sockets messages they may have missed (read back from the
    /// database after events from other nodes were lost), skipping those they were
    /// sent; what is given counts as everything up to its last message (a client
    /// fetches any gap it sees itself). Not relayed: every node does this for its own
    /// sockets.
    pub fn resend(&self, room_id: RoomId, messages: &[app::protocol::ChatMessage]) {
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.room_conns(room_id).collect();
        for message in messages {
            if registry.was_heard(room_id, message.seq) {
                continue;
            }
            let frame = encode(&ServerMsg::Message { message: message.clone() });
            Self::deliver(&mut registry, &targets, &frame, FrameKind::Message, None);
            registry.heard(room_id, message.seq);
            if message.kind == MessageKind::Text {
                self.recent_authors.wrote(room_id, message.seq, message.sender.id);
            }
        }
        if let Some(last) = messages.last() {
            registry.heard_all_through(room_id, last.seq);
        }
    }

    /// Everyone with sockets here and the rooms they hear, each with how many of
    /// their sockets do, to be checked against the database after events that change
    /// them may have been lost.
    pub fn local_memberships(&self) -> Vec<(UserId, Vec<(RoomId, Following)>)> {
        self.lock().local_following()
    }

    /// Sends a frame to a room's sockets here only (one re-read from the database
    /// after events may have been lost; every node does this for its own).
    pub fn publish_here(&self, room_id: RoomId, msg: &ServerMsg) {
        let frame = encode(msg);
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.room_conns(room_id).collect();
        Self::deliver(&mut registry, &targets, &frame, frame_kind(msg), None);
    }

    /// Asks every socket to close because the server is stopping, and any that
    /// registers from now on.
    pub fn shutdown(&self) {
        let registry = self.lock();
        self.closing.store(true, Ordering::Relaxed);
        for id in registry.all_conns() {
            if let Some(conn) = registry.conn(id) {
                conn.close.close(CloseReason::ShuttingDown);
            }
        }
    }

    /// Whether a connection hears a room (its user is a member).
    pub fn is_subscribed(&self, conn: ConnId, room_id: RoomId) -> bool {
        self.lock().conn(conn).is_some_and(|entry| entry.rooms.contains(&room_id))
    }

    /// Answers request `id` of a connection with up to `limit` people online in a room,
    /// in name order, after `after`. Read and queued under the same lock as presence
    /// notices, so every notice about a change the page does not show comes after it.
    pub fn send_online_page(
        &self,
        conn: ConnId,
        id: RequestId,
        room_id: RoomId,
        after: Option<&UserRef>,
        limit: usize,
    ) -> Result<(), NotSubscribed> {
        let mut registry = self.lock();
        if !registry.conn(conn).is_some_and(|entry| entry.rooms.contains(&room_id)) {
            return Err(NotSubscribed);
        }
        let (users, has_more) = registry.online_page(room_id, after, limit);
        let total = registry.online_count(room_id) as u32;
        let frame = encode(&ServerMsg::Online { id, room_id, users, total, has_more });
        Self::deliver(&mut registry, &[conn], &frame, FrameKind::Reply, None);
        Ok(())
    }

    /// Notes that a user is typing in a room; told with the next window's notice.
    pub fn typing(&self, room_id: RoomId, user_id: UserId) {
        let mut registry = self.lock();
        registry.note_typing(room_id, user_id);
        if let Some(user) = registry.user(user_id).cloned() {
            self.relay(Event::Typing { room: room_id, user }, None);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.lock().connection_count()
    }

    /// Sockets registered plus sockets gone since the hub started: how much coming and
    /// going there has been (`crate::memory` trims after a crowd of it).
    pub fn sockets_come_and_gone(&self) -> u64 {
        // Each part only grows (an id is handed out before its socket registers), so
        // the sum does too.
        let removed = self.lock().connections_removed();
        (self.next_conn.load(Ordering::Relaxed) - 1) + removed
    }

    /// Sockets, people and queues now (a pass over every connection: for scrapes, not
    /// for hot paths).
    pub fn stats(&self) -> HubStats {
        let registry = self.lock();
        let mut stats = HubStats { sockets: registry.connection_count(), users: registry.user_count(), ..HubStats::default() };
        for id in registry.all_conns() {
            if let Some(conn) = registry.conn(id) {
                let (frames, bytes) = conn.outbound.queued();
                stats.queue_max_frames = stats.queue_max_frames.max(frames);
                stats.queue_bytes += bytes;
            }
        }
        stats
    }

    /// Tells each room whose online set changed since the last call who came and who
    /// went, and each room where someone typed who did: one frame per room and kind,
    /// encoded once, pushed to each of its connections.
    pub fn flush_presence(&self) {
        self.flush_presence_at(Instant::now());
    }

    /// [`Hub::flush_presence`] as if at `now` (a crowded room's count waits for its
    /// window; tests pass the time).
    fn flush_presence_at(&self, now: Instant) {
        let mut registry = self.lock();
        let mut notices = Vec::new();
        for (room_id, total, changes) in registry.take_due_presence(now) {
            notices.push((room_id, Self::presence_notice(&registry, room_id, total, changes)));
        }
        for (room_id, typists) in registry.take_typing() {
            let users: Vec<UserRef> =
                typists.iter().filter_map(|user_id| registry.user(*user_id).cloned()).take(TYPING_NAMED).collect();
            if !users.is_empty() {
                notices.push((room_id, ServerMsg::Typing { room_id, users }));
            }
        }
        for (room_id, notice) in notices {
            let targets: Vec<ConnId> = registry.room_conns(room_id).collect();
            if !targets.is_empty() {
                Self::deliver(&mut registry, &targets, &encode(&notice), frame_kind(&notice), None);
            }
        }
        // Other nodes hear whose rooms here changed, once per window too.
        if self.relay.get().is_some() {
            for (user, rooms, sockets) in registry.take_local_changes() {
                self.relay(Event::Presence { user, rooms, sockets }, None);
            }
        } else {
            registry.forget_local_changes();
        }
    }

    /// Announces presence every [`PRESENCE_WINDOW`] until `stop` is cancelled.
    pub async fn run_presence(self: Arc<Self>, stop: CancellationToken) {
        let mut every_window = tokio::time::interval(PRESENCE_WINDOW);
        every_window.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every_window.tick() => self.flush_presence(),
                () = stop.cancelled() => return,
            }
        }
    }

    fn presence_notice(registry: &Registry, room_id: RoomId, total: usize, changes: PresenceChanges) -> ServerMsg {
        let detailed = total <= PRESENCE_DETAIL_LIMIT;
        let (mut came, mut went) = (Vec::new(), Vec::new());
        if detailed {
            for (user_id, online) in changes {
                match (online, registry.user(user_id)) {
                    (true, Some(user)) => came.push(user.clone()),
                    _ => went.push(user_id),
                }
            }
            came.sort_by_key(UserRef::sort_key);
            went.sort_unstable();
        }
        ServerMsg::Presence { room_id, total: total as u32, detailed, came, went }
    }

    /// Pushes `frame` to each target. A target whose queue overflows is a slow
    /// consumer: it is told to close and removed at once, so fan-out stops spending
    /// work on it (its presence change goes out with the next notice). Counted once
    /// per call, however many targets.
    fn deliver(registry: &mut Registry, targets: &[ConnId], frame: &Utf8Bytes, kind: FrameKind, committed_at: Option<Instant>) {
        let mut slow = Vec::new();
        let mut queued = 0;
        for id in targets {
            if let Some(conn) = registry.conn(*id) {
                match conn.outbound.push(frame.clone(), committed_at) {
                    Ok(()) => queued += 1,
                    Err(_) => slow.push(*id),
                }
            }
        }
        metrics::delivered(kind, queued);
        for id in slow {
            if let Some(conn) = registry.remove(id) {
                tracing::warn!(conn = id, user = conn.user_id, "closing slow consumer: outbound queue full");
                conn.close.close(CloseReason::SlowConsumer);
            }
        }
    }
}

fn encode(msg: &ServerMsg) -> Utf8Bytes {
    Utf8Bytes::from(msg.encode())
}

fn frame_kind(msg: &ServerMsg) -> FrameKind {
    match msg {
        ServerMsg::Message { .. } => FrameKind::Message,
        ServerMsg::Receipt { .. } => FrameKind::Receipt,
        ServerMsg::Typing { .. } => FrameKind::Typing,
        ServerMsg::Presence { .. } => FrameKind::Presence,
        _ => FrameKind::Reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: UserId, name: &str) -> UserRef {
        UserRef { id, username: name.into(), display_name: name.into() }
    }

    fn hub() -> Hub {
        Hub::new(QueueLimits { max_frames: 4, max_bytes: 64 * 1024 })
    }

    async fn next(conn: &mut Connection) -> ServerMsg {
        let outgoing = conn.outbound.recv().await.expect("frame queued");
        serde_json::from_str(outgoing.frame.as_str()).unwrap()
    }

    fn drain(conn: &mut Connection) -> Vec<ServerMsg> {
        let mut frames = Vec::new();
        while let Some(outgoing) = conn.outbound.try_recv() {
            frames.push(serde_json::from_str(outgoing.frame.as_str()).unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn publish_reaches_the_room_but_not_the_origin() {
        let hub = hub();
        let mut alice = hub.connect(&user(1, "alice"), 1, &[7]);
        let mut bob = hub.connect(&user(2, "bob"), 2, &[7]);
        let mut carol = hub.connect(&user(3, "carol"), 3, &[8]);
        hub.flush_presence();
        drain(&mut alice);
        drain(&mut bob);
        drain(&mut carol);

        hub.publish(7, &ServerMsg::Pong { id: 1 }, Some(alice.id));
        assert_eq!(next(&mut bob).await, ServerMsg::Pong { id: 1 });
        assert!(drain(&mut alice).is_empty());
        assert!(drain(&mut carol).is_empty(), "carol is not in room 7");
    }

    fn chat_message(room_id: RoomId, seq: Seq) -> app::protocol::ChatMessage {
        app::protocol::ChatMessage {
            id: seq,
            room_id,
            seq,
            kind: app::protocol::MessageKind::Text,
            sender: user(9, "ana"),
            client_id: Some(format!("c{seq}")),
            text: format!("Ótimo {seq}"),
            sent_at: 0,
        }
    }

    /// Room 7 as its members see it, through message `last_seq`.
    fn summary(last_seq: Seq) -> RoomSummary {
        RoomSummary {
            id: 7,
            name: "geral".into(),
            kind: app::protocol::RoomKind::Public,
            topic: String::new(),
            last_seq,
            member_count: 2,
            joined: true,
            peer: None,
            read_seq: 0,
            unread_seqs: Vec::new(),
            mention_seqs: Vec::new(),
        }
    }

    fn seqs(frames: Vec<ServerMsg>) -> Vec<Seq> {
        frames
            .into_iter()
            .filter_map(|frame| match frame {
                ServerMsg::Message { message } => Some(message.seq),
                _ => None,
            })
            .collect()
    }

    /// The greeting is read from the database before the socket registers: a message
    /// announced in between reached neither, and the greeting must be read again.
    #[tokio::test]
    async fn a_greeting_read_before_a_message_announced_to_nobody_is_told_it_missed_it() {
        let hub = hub();
        hub.publish(7, &ServerMsg::Message { message: chat_message(7, 11) }, None);
        let (_early, missed) = hub.connect_greeted(&user(1, "alice"), 1, &[(8, 0), (7, 10)]);
        assert!(missed, "read at 10, announced 11 before registering");
        let (_late, missed) = hub.connect_greeted(&user(2, "bob"), 2, &[(7, 11)]);
        assert!(!missed, "read after 11 was stored");
        assert!(hub.rooms_heard().contains(&(7, 11)), "11 was announced to nobody here: nothing to send again");
    }

    /// Another node's join or leave is not followed as it arrives (a change made here
    /// meanwhile may be the later one): it waits to be checked, once per person and
    /// room. Following it after the check reaches only the sockets that differ.
    #[tokio::test]
    async fn other_nodes_joins_and_leaves_wait_for_a_check_and_reach_only_sockets_that_differ() {
        let hub = hub();
        let node: NodeId = "other".into();
        let (mut older, _) = hub.connect_greeted(&user(1, "alice"), 1, &[]);
        hub.apply_remote(&node, Event::Joined { user: 1, room: 7, through: Some(3) }, Utf8Bytes::from_static(""));
        hub.apply_remote(&node, Event::Left { user: 1, room: 7 }, Utf8Bytes::from_static(""));
        assert_eq!(hub.following_here(1, 7), Some(Following::None), "nothing followed before the check");
        assert_eq!(hub.next_membership_check().await, MembershipCheck::of(1, 7), "a leave since the join: no messages to send");
        let another = tokio::time::timeout(Duration::from_millis(20), hub.next_membership_check()).await;
        assert!(another.is_err(), "checked once");

        // A tab greeted in the room since: the older one alone is joined.
        let (mut newer, _) = hub.connect_greeted(&user(1, "alice"), 2, &[(7, 3)]);
        assert_eq!(hub.following_here(1, 7), Some(Following::Some));
        hub.publish(7, &ServerMsg::Message { message: chat_message(7, 4) }, None);
        drain(&mut older);
        drain(&mut newer);
        assert_eq!(hub.join_here_told(1, 7, &summary(3), false, TellJoin::SocketsJoined), None, "4 was announced: the summary is read again");
        assert_eq!(hub.following_here(1, 7), Some(Following::Some), "and nothing changed");
        assert_eq!(hub.join_here_told(1, 7, &summary(4), false, TellJoin::SocketsJoined), Some((vec![older.id], 4)));
        assert_eq!(hub.following_here(1, 7), Some(Following::All));
        assert!(matches!(&drain(&mut older)[..], [ServerMsg::RoomJoined { room, .. }] if room.last_seq == 4), "the older tab told once");
        assert!(drain(&mut newer).is_empty(), "the newer tab was greeted in the room");
        assert_eq!(hub.leave_here(1, 7), vec![older.id, newer.id]);
        assert_eq!(hub.following_here(2, 7), None, "no sockets here");
    }

    /// A joining socket is sent from the database only what will not reach it live:
    /// message 4, committed (so in the summary) but not yet announced here, reaches
    /// it live where the room has other sockets, and counts as sent (skipped) where
    /// it has none. Sending it from the database as well gave it twice.
    #[tokio::test]
    async fn a_join_is_sent_from_the_database_only_what_will_not_reach_it_live() {
        let hub = hub();
        let (mut bob, _) = hub.connect_greeted(&user(2, "bob"), 2, &[(7, 3)]);
        let (mut alice, _) = hub.connect_greeted(&user(1, "alice"), 1, &[]);
        assert_eq!(hub.join_here_told(1, 7, &summary(4), false, TellJoin::EverySocket), Some((vec![alice.id], 3)));
        hub.publish(7, &ServerMsg::Message { message: chat_message(7, 4) }, None);
        assert_eq!(seqs(drain(&mut alice)), [4], "heard live, once");
        assert_eq!(seqs(drain(&mut bob)), [4]);

        let (mut carol, _) = hub.connect_greeted(&user(3, "carol"), 3, &[]);
        assert_eq!(hub.join_here_told(3, 8, &RoomSummary { id: 8, ..summary(4) }, false, TellJoin::EverySocket), Some((vec![carol.id], 4)));
        hub.publish(8, &ServerMsg::Message { message: chat_message(8, 4) }, None);
        assert!(seqs(drain(&mut carol)).is_empty(), "counted as sent: the database gives it");
    }

    /// A message from another node lost on the way, then a later one arriving, leaves
    /// a hole: catching up starts below it and sends only what was missed.
    #[tokio::test]
    async fn catching_up_fills_holes_left_by_lost_events_and_sends_nothing_twice() {
        let hub = hub();
        let (mut alice, _) = hub.connect_greeted(&user(1, "alice"), 1, &[(7, 4)]);
        hub.flush_presence();
        drain(&mut alice);
        let node: NodeId = "other".into();
        for seq in [6, 8] {
            let frame = encode(&ServerMsg::Message { message: chat_message(7, seq) });
            hub.apply_remote(&node, Event::Room { room: 7, kind: crate::cluster::WireKind::Message, seq: Some(seq), author: Some(9) }, frame);
        }
        assert_eq!(seqs(drain(&mut alice)), [6, 8]);
        assert_eq!(hub.rooms_heard(), [(7, 4)], "5 and 7 never came");

        hub.resend(7, &[chat_message(7, 5), chat_message(7, 6), chat_message(7, 7)]);
        assert_eq!(seqs(drain(&mut alice)), [5, 7]);
        assert_eq!(hub.rooms_heard(), [(7, 8)]);

        // Too many missed to send: the newest alone shows clients the gap to fetch.
        hub.resend(7, &[chat_message(7, 400)]);
        assert_eq!(seqs(drain(&mut alice)), [400]);
        assert_eq!(hub.rooms_heard(), [(7, 400)]);
    }

    fn presence(total: u32, came: Vec<UserRef>, went: Vec<UserId>) -> ServerMsg {
        ServerMsg::Presence { room_id: 7, total, detailed: true, came, went }
    }

    #[tokio::test]
    async fn presence_changes_are_gathered_and_announced_together() {
        let hub = hub();
        let mut alice = hub.connect(&user(1, "alice"), 1, &[7]);
        hub.flush_presence();
        assert_eq!(next(&mut alice).await, presence(1, vec![user(1, "alice")], vec![]));
        let bob = hub.connect(&user(2, "bob"), 2, &[7]);
        let _carol = hub.connect(&user(3, "carol"), 3, &[7]);
        assert!(drain(&mut alice).is_empty(), "nothing is told before the window ends");
        hub.flush_presence();
        assert_eq!(drain(&mut alice), [presence(3, vec![user(2, "bob"), user(3, "carol")], vec![])], "one frame for both");
        hub.disconnect(bob.id);
        hub.flush_presence();
        assert_eq!(next(&mut alice).await, presence(2, vec![], vec![2]));
        hub.flush_presence();
        assert!(drain(&mut alice).is_empty(), "no change, no frame");
    }

    #[tokio::test]
    async fn a_crowded_room_hears_counts_only_and_pages_of_names_on_request() {
        let hub = Hub::new(QueueLimits { max_frames: 1000, max_bytes: 1 << 20 });
        let mut watcher = hub.connect(&user(0, "watcher"), 0, &[7]);
        let crowd: Vec<Connection> =
            (1..=PRESENCE_DETAIL_LIMIT as i64 + 5).map(|id| hub.connect(&user(id, &format!("u{id:04}")), id, &[7])).collect();
        hub.flush_presence();
        let total = crowd.len() as u32 + 1;
        assert_eq!(drain(&mut watcher), [ServerMsg::Presence { room_id: 7, total, detailed: false, came: vec![], went: vec![] }]);
        hub.send_online_page(watcher.id, 1, 7, None, 50).unwrap();
        let ServerMsg::Online { users, total: listed_total, has_more, .. } = next(&mut watcher).await else { panic!() };
        assert_eq!((users.len(), listed_total, has_more), (50, total, true));
        assert_eq!(users[0].display_name, "u0001");
        hub.send_online_page(watcher.id, 2, 7, users.last(), 50).unwrap();
        let ServerMsg::Online { users, .. } = next(&mut watcher).await else { panic!() };
        assert_eq!(users[0].display_name, "u0051");
        assert_eq!(hub.send_online_page(watcher.id, 3, 8, None, 50), Err(NotSubscribed), "not a member there");
    }

    /// A reconnect storm into a room of thousands: the count goes out once per its
    /// longer window, holding the changes between, and the last count is still told.
    #[tokio::test]
    async fn a_crowded_rooms_count_waits_for_its_window() {
        let hub = Hub::new(QueueLimits { max_frames: 1000, max_bytes: 1 << 20 });
        let mut watcher = hub.connect(&user(0, "watcher"), 0, &[7]);
        let mut crowd: Vec<Connection> = (1..=6_000).map(|id| hub.connect(&user(id, &format!("u{id:05}")), id, &[7])).collect();
        let start = Instant::now();
        hub.flush_presence_at(start);
        let count = |frames: Vec<ServerMsg>| -> Vec<u32> {
            frames.into_iter().map(|frame| match frame {
                ServerMsg::Presence { total, detailed: false, .. } => total,
                other => panic!("unexpected {other:?}"),
            }).collect()
        };
        assert_eq!(count(drain(&mut watcher)), [6_001]);
        let window = PRESENCE_WINDOW * 3; // count_window(6_001), and of 5,999

        for step in 1..3u32 {
            hub.disconnect(crowd.pop().unwrap().id);
            hub.flush_presence_at(start + PRESENCE_WINDOW * step);
            assert!(drain(&mut watcher).is_empty(), "held within the count's window (step {step})");
        }
        // A flush a little early (the last one waited for the lock) is still on time.
        hub.flush_presence_at(start + window - Duration::from_millis(20));
        assert_eq!(count(drain(&mut watcher)), [5_999], "the held changes go out when the window ends");
        hub.flush_presence_at(start + window * 2);
        assert!(drain(&mut watcher).is_empty(), "no change, no frame");
    }

    #[test]
    fn count_windows_grow_with_the_room_and_stop_at_the_maximum() {
        assert_eq!(count_window(101), PRESENCE_WINDOW);
        assert_eq!(count_window(2_500), PRESENCE_WINDOW);
        assert_eq!(count_window(10_000), Duration::from_secs(1));
        // The bound on frames holds for the largest room measured (50,000 online, over
        // three nodes: `parley-bench held`).
        assert_eq!(count_window(50_000), Duration::from_secs(5));
        assert_eq!(count_window(1_000_000), COUNT_WINDOW_MAX);
    }

    #[tokio::test]
    async fn typing_in_a_window_is_one_notice() {
        let hub = hub();
        let mut watcher = hub.connect(&user(1, "watcher"), 1, &[7]);
        let _typists: Vec<Connection> = (2..5).map(|id| hub.connect(&user(id, &format!("t{id}")), id, &[7])).collect();
        hub.flush_presence();
        drain(&mut watcher);
        for id in [2, 3, 2, 4] {
            hub.typing(7, id);
        }
        hub.flush_presence();
        assert_eq!(drain(&mut watcher), [ServerMsg::Typing { room_id: 7, users: vec![user(2, "t2"), user(3, "t3"), user(4, "t4")] }]);
    }

    /// Typing, then sending at once (as with Enter): the message ends the notice still
    /// being gathered, here and from another node, so nobody sees "is typing" after it.
    #[tokio::test]
    async fn a_message_ends_its_authors_typing_notice_before_it_goes_out() {
        let hub = hub();
        let mut watcher = hub.connect(&user(1, "watcher"), 1, &[7]);
        let _author = hub.connect(&user(9, "ana"), 9, &[7]);
        hub.flush_presence();
        drain(&mut watcher);
        hub.typing(7, 9);
        hub.publish(7, &ServerMsg::Message { message: chat_message(7, 1) }, None);
        let node: NodeId = "other".into();
        hub.apply_remote(&node, Event::Typing { room: 7, user: user(9, "ana") }, Utf8Bytes::from_static(""));
        let frame = encode(&ServerMsg::Message { message: chat_message(7, 2) });
        hub.apply_remote(&node, Event::Room { room: 7, kind: crate::cluster::WireKind::Message, seq: Some(2), author: Some(9) }, frame);
        hub.flush_presence();
        let typing: Vec<ServerMsg> = drain(&mut watcher).into_iter().filter(|msg| matches!(msg, ServerMsg::Typing { .. })).collect();
        assert!(typing.is_empty(), "{typing:?}");
    }

    #[tokio::test]
    async fn a_slow_consumer_is_closed_with_a_reason_and_stops_receiving() {
        let hub = hub();
        let slow = hub.connect(&user(1, "slow"), 1, &[7]);
        let mut fast = hub.connect(&user(2, "fast"), 2, &[7]);
        for id in 0..10 {
            hub.publish(7, &ServerMsg::Pong { id }, None);
            drain(&mut fast);
        }
        assert_eq!(slow.close.reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(hub.connection_count(), 1, "the slow consumer was removed");
        hub.publish(7, &ServerMsg::Pong { id: 99 }, None);
        assert_eq!(next(&mut fast).await, ServerMsg::Pong { id: 99 });
    }

    #[tokio::test]
    async fn a_socket_registering_after_shutdown_is_told_to_reconnect() {
        let hub = hub();
        let before = hub.connect(&user(1, "alice"), 1, &[7]);
        hub.shutdown();
        let after = hub.connect(&user(2, "bob"), 2, &[7]);
        assert_eq!(before.close.reason(), Some(CloseReason::ShuttingDown));
        assert_eq!(after.close.reason(), Some(CloseReason::ShuttingDown), "its handshake was under way");
    }

    #[tokio::test]
    async fn ending_a_session_closes_only_its_sockets() {
        let hub = hub();
        let first = hub.connect(&user(1, "alice"), 41, &[]);
        let second = hub.connect(&user(1, "alice"), 42, &[]);
        hub.end_session(41);
        assert_eq!(first.close.reason(), Some(CloseReason::SessionEnded));
        assert_eq!(second.close.reason(), None);
    }

    /// A logout between a socket's session check and its registration: the socket
    /// registers closed, here and for a logout told by another node, without asking
    /// the database again.
    #[tokio::test]
    async fn a_socket_registering_after_its_session_ended_is_closed() {
        let hub = hub();
        hub.end_session(41);
        hub.apply_remote(&"other".into(), Event::SessionEnded { session: 43 }, Utf8Bytes::from_static(""));
        let late = hub.connect(&user(1, "alice"), 41, &[7]);
        let told_by_another_node = hub.connect(&user(1, "alice"), 43, &[7]);
        let other = hub.connect(&user(1, "alice"), 42, &[7]);
        assert_eq!(late.close.reason(), Some(CloseReason::SessionEnded));
        assert_eq!(told_by_another_node.close.reason(), Some(CloseReason::SessionEnded));
        assert_eq!(other.close.reason(), None);
    }

    #[test]
    fn ended_sessions_are_remembered_for_a_while_only() {
        let mut registry = Registry::default();
        let start = Instant::now();
        registry.note_session_ended(41, start);
        assert!(registry.session_ended_lately(41, start + ENDED_SESSION_MEMORY / 2));
        registry.note_session_ended(42, start + ENDED_SESSION_MEMORY);
        assert!(!registry.session_ended_lately(41, start + ENDED_SESSION_MEMORY), "forgotten");
        assert!(registry.session_ended_lately(42, start + ENDED_SESSION_MEMORY));
        assert_eq!(registry.sessions_ended_lately(), 1, "the old entry is gone, not kept");
    }
}
