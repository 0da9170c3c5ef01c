//! The hub: live fan-out of chat events to the sockets that should see them.
//!
//! Layered like mini-redis: [`registry`] knows who is connected where (and so who is
//! online), [`outbound`] owns each connection's bounded queue, and this module ties
//! them together behind one small API. The hub never touches the database: callers
//! store first and publish after, so anything the hub drops can be re-read from there.

pub mod outbound;
mod registry;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use app::protocol::{RoomId, ServerMsg, UserId, UserRef};
use axum::extract::ws::Utf8Bytes;

pub use outbound::{CloseReason, CloseSignal, OutboundReceiver, QueueLimits};
pub use registry::ConnId;
use registry::{ConnEntry, Registry};

/// Shared by all connection tasks; cheap operations under one short-lived lock.
pub struct Hub {
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    limits: QueueLimits,
}

/// What a connection task gets from [`Hub::connect`].
pub struct Connection {
    pub id: ConnId,
    /// Frames to write to the socket, in order.
    pub outbound: OutboundReceiver,
    /// Fires when the hub wants this connection closed, with the reason.
    pub close: CloseSignal,
}

impl Hub {
    pub fn new(limits: QueueLimits) -> Self {
        Hub { registry: Mutex::new(Registry::default()), next_conn: AtomicU64::new(1), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain maps behind, still consistent
        // enough to serve; refusing every later connection would be worse.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a socket for `user`, subscribed to the rooms they are a member of,
    /// and announces them online where they were not already.
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
        let changed = registry.add(id, user, entry);
        self.announce_presence(&mut registry, changed);
        Connection { id, outbound: receiver, close }
    }

    /// Forgets a socket (its task is ending) and announces presence changes.
    pub fn disconnect(&self, id: ConnId) {
        let mut registry = self.lock();
        if let Some((_, changed)) = registry.remove(id) {
            self.announce_presence(&mut registry, changed);
        }
    }

    /// Sends an event to every connection in a room, except `origin` (which gets its
    /// own acknowledgement instead).
    pub fn publish(&self, room_id: RoomId, msg: &ServerMsg, origin: Option<ConnId>) {
        let frame = encode(msg);
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.room_conns(room_id).into_iter().filter(|id| Some(*id) != origin).collect();
        self.deliver(&mut registry, &targets, &frame);
    }

    /// Sends a frame to one connection (replies, presence snapshots).
    pub fn send_to(&self, conn: ConnId, msg: &ServerMsg) {
        let frame = encode(msg);
        let mut registry = self.lock();
        self.deliver(&mut registry, &[conn], &frame);
    }

    /// Sends an event to every connection of a user, except `origin`.
    pub fn send_to_user(&self, user_id: UserId, msg: &ServerMsg, origin: Option<ConnId>) {
        let frame = encode(msg);
        let mut registry = self.lock();
        let targets: Vec<ConnId> = registry.user_conns(user_id).into_iter().filter(|id| Some(*id) != origin).collect();
        self.deliver(&mut registry, &targets, &frame);
    }

    /// The user became a member of a room: all their sockets start hearing it.
    pub fn join(&self, user_id: UserId, room_id: RoomId) {
        let mut registry = self.lock();
        let changed = registry.subscribe_user(user_id, room_id);
        self.announce_presence(&mut registry, changed.into_iter().collect());
    }

    /// The user left a room: none of their sockets hear it any more.
    pub fn leave(&self, user_id: UserId, room_id: RoomId) {
        let mut registry = self.lock();
        let changed = registry.unsubscribe_user(user_id, room_id);
        self.announce_presence(&mut registry, changed.into_iter().collect());
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

    /// Asks every socket to close because the server is stopping.
    pub fn shutdown(&self) {
        let registry = self.lock();
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

    /// Who is online in a room now.
    pub fn online(&self, room_id: RoomId) -> Vec<UserRef> {
        self.lock().online(room_id)
    }

    pub fn connection_count(&self) -> usize {
        self.lock().connection_count()
    }

    /// Pushes `frame` to each target. A target whose queue overflows is a slow
    /// consumer: it is told to close and removed at once, so fan-out stops spending
    /// work on it, and its departure may in turn change presence.
    fn deliver(&self, registry: &mut Registry, targets: &[ConnId], frame: &Utf8Bytes) {
        let mut slow = Vec::new();
        for id in targets {
            if let Some(conn) = registry.conn(*id) {
                if conn.outbound.push(frame.clone()).is_err() {
                    slow.push(*id);
                }
            }
        }
        for id in slow {
            if let Some((conn, changed)) = registry.remove(id) {
                tracing::warn!(conn = id, user = conn.user_id, "closing slow consumer: outbound queue full");
                conn.close.close(CloseReason::SlowConsumer);
                self.announce_presence(registry, changed);
            }
        }
    }

    fn announce_presence(&self, registry: &mut Registry, rooms: Vec<RoomId>) {
        for room_id in rooms {
            let msg = ServerMsg::Presence { room_id, online: registry.online(room_id) };
            let targets = registry.room_conns(room_id);
            self.deliver(registry, &targets, &encode(&msg));
        }
    }
}

fn encode(msg: &ServerMsg) -> Utf8Bytes {
    Utf8Bytes::from(msg.encode())
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
        let frame = conn.outbound.recv().await.expect("frame queued");
        serde_json::from_str(frame.as_str()).unwrap()
    }

    fn drain(conn: &mut Connection) -> Vec<ServerMsg> {
        let mut frames = Vec::new();
        while let Some(Some(frame)) = futures::FutureExt::now_or_never(conn.outbound.recv()) {
            frames.push(serde_json::from_str(frame.as_str()).unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn publish_reaches_the_room_but_not_the_origin() {
        let hub = hub();
        let mut alice = hub.connect(&user(1, "alice"), 1, &[7]);
        let mut bob = hub.connect(&user(2, "bob"), 2, &[7]);
        let mut carol = hub.connect(&user(3, "carol"), 3, &[8]);
        drain(&mut alice);
        drain(&mut bob);
        drain(&mut carol);

        hub.publish(7, &ServerMsg::Pong { id: 1 }, Some(alice.id));
        assert_eq!(next(&mut bob).await, ServerMsg::Pong { id: 1 });
        assert!(drain(&mut alice).is_empty());
        assert!(drain(&mut carol).is_empty(), "carol is not in room 7");
    }

    #[tokio::test]
    async fn presence_is_announced_when_someone_comes_and_goes() {
        let hub = hub();
        let mut alice = hub.connect(&user(1, "alice"), 1, &[7]);
        assert_eq!(next(&mut alice).await, ServerMsg::Presence { room_id: 7, online: vec![user(1, "alice")] });
        let bob = hub.connect(&user(2, "bob"), 2, &[7]);
        assert_eq!(
            next(&mut alice).await,
            ServerMsg::Presence { room_id: 7, online: vec![user(1, "alice"), user(2, "bob")] }
        );
        hub.disconnect(bob.id);
        assert_eq!(next(&mut alice).await, ServerMsg::Presence { room_id: 7, online: vec![user(1, "alice")] });
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
    async fn ending_a_session_closes_only_its_sockets() {
        let hub = hub();
        let first = hub.connect(&user(1, "alice"), 41, &[]);
        let second = hub.connect(&user(1, "alice"), 42, &[]);
        hub.end_session(41);
        assert_eq!(first.close.reason(), Some(CloseReason::SessionEnded));
        assert_eq!(second.close.reason(), None);
    }
}
