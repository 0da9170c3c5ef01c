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

pub mod outbound;
mod registry;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use app::protocol::{RequestId, RoomId, ServerMsg, UserId, UserRef};
use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

pub use outbound::{CloseReason, CloseSignal, OutboundReceiver, Outgoing, QueueLimits};
pub use registry::ConnId;
use registry::{ConnEntry, PresenceChanges, Registry};

use crate::metrics::{self, FrameKind};

/// How long presence changes in a room are gathered before they are announced.
pub const PRESENCE_WINDOW: Duration = Duration::from_millis(250);
/// Rooms with more people online than this get presence as a count only: naming
/// everyone who came and went would cost every member bytes for each of them.
pub const PRESENCE_DETAIL_LIMIT: usize = 100;
/// Most people one typing notice names.
pub const TYPING_NAMED: usize = 10;

/// Shared by all connection tasks; cheap operations under one short-lived lock.
pub struct Hub {
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    limits: QueueLimits,
    /// Set (under the registry lock) by [`Hub::shutdown`]: a socket that registers
    /// afterwards (its handshake was under way) is told to reconnect at once.
    closing: AtomicBool,
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
        Hub { registry: Mutex::new(Registry::default()), next_conn: AtomicU64::new(1), limits, closing: AtomicBool::new(false) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain maps behind, still consistent
        // enough to serve; refusing every later connection would be worse.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a socket for `user`, subscribed to the rooms they are a member of.
    /// Rooms where they were not online yet hear of it with the next presence notice.
    pub fn connect(&self, user: &UserRef, session_id: i64, rooms: &[RoomId]) -> Connection {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = outbound::queue(self.limits);
        let close = CloseSignal::default();
        let entry = ConnEntry {
            user_id: user.id,
            session_id,
            rooms: rooms.iter().copied().collect(),
            outbound: sender,
            close: close.clone(),
        };
        let mut registry = self.lock();
        registry.add(id, user, entry);
        if self.closing.load(Ordering::Relaxed) {
            close.close(CloseReason::ShuttingDown);
        }
        drop(registry);
        Connection { id, outbound: receiver, close }
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
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.room_conns(room_id).filter(|id| Some(*id) != origin).collect();
        Self::deliver(&mut registry, &targets, &frame, frame_kind(msg), committed_at);
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

    /// Sends an event to every connection of a user, except `origin`.
    pub fn send_to_user(&self, user_id: UserId, msg: &ServerMsg, origin: Option<ConnId>) {
        let frame = encode(msg);
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.user_conns(user_id).into_iter().filter(|id| Some(*id) != origin).collect();
        Self::deliver(&mut registry, &targets, &frame, frame_kind(msg), None);
    }

    /// Sends an event to every connection of each user named (each once), encoded once.
    pub fn send_to_users(&self, user_ids: &[UserId], msg: &ServerMsg) {
        let frame = encode(msg);
        let mut registry = self.lock();
        let mut targets: Vec<ConnId> = Vec::new();
        for user_id in user_ids.iter().collect::<std::collections::BTreeSet<_>>() {
            targets.extend(registry.user_conns(*user_id));
        }
        Self::deliver(&mut registry, &targets, &frame, frame_kind(msg), None);
    }

    /// The user became a member of a room: all their sockets start hearing it.
    pub fn join(&self, user_id: UserId, room_id: RoomId) {
        self.lock().subscribe_user(user_id, room_id);
    }

    /// The user left a room: none of their sockets hear it any more.
    pub fn leave(&self, user_id: UserId, room_id: RoomId) {
        self.lock().unsubscribe_user(user_id, room_id);
    }

    /// Closes every socket opened with this session (logout, expiry).
    pub fn end_session(&self, session_id: i64) {
        let registry = self.lock();
        for id in registry.session_conns(session_id) {
            if let Some(conn) = registry.conn(id) {
                conn.close.close(CloseReason::SessionEnded);
            }
        }
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
        self.lock().note_typing(room_id, user_id);
    }

    pub fn connection_count(&self) -> usize {
        self.lock().connection_count()
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
        let mut registry = self.lock();
        let mut notices = Vec::new();
        for (room_id, changes) in registry.take_presence_changes() {
            notices.push((room_id, Self::presence_notice(&registry, room_id, changes)));
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

    fn presence_notice(registry: &Registry, room_id: RoomId, changes: PresenceChanges) -> ServerMsg {
        let total = registry.online_count(room_id);
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
}
