//! Several nodes as one chat, through Redis.
//!
//! Each node publishes what its hub publishes (messages, notices, receipts, typing,
//! membership changes, ended sessions, and whose rooms changed on it) to one Redis
//! channel, and hands what other nodes publish to its own hub. The database stays the
//! source of truth: Redis pub/sub delivers at most once, so nothing depends on it for
//! correctness. (A logout elsewhere closes this node's sockets through it at once; if
//! that event is lost, their heartbeat's session check closes them within an interval.)
//!
//! - Lost events are found out and made good from the database. A node whose link to
//!   Redis broke (or whose outgoing queue overflowed) says `CatchUp` once it is back,
//!   and a node whose subscription broke catches up by itself: every node then sends
//!   each room's sockets the messages stored after the newest one they were sent.
//!   Clients also fill any hole they see in a room's sequence numbers.
//! - Presence is the union of the nodes. Each node keeps a hash in Redis of who has
//!   sockets on it and in which rooms, refreshed with a heartbeat and expiring with
//!   it; changes also go out as events. A node that stops beating is forgotten by the
//!   others within `presence_ttl_secs`, so its people go offline even if it died
//!   without a word.
//!
//! - Limits a person could multiply by spreading over nodes are shared: logins and
//!   registrations are counted in Redis ([`SharedLimits`]), sockets per person from
//!   the presence each node reports.
//!
//! [`link`] owns the Redis connections and tasks; [`wire`] the payload layout;
//! [`other_half`] when a deploy's other half has left and the database has the rest.

mod limits;
mod link;
mod other_half;
pub mod wire;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

pub use limits::SharedLimits;
pub use link::{start, ClusterError, Settings};
pub use wire::{Event, NodeId, WireKind};

/// Whether the link to the other nodes works, for `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct ClusterHealth {
    connected: AtomicBool,
    /// The events channel's subscription is live (a reconnect whose resubscription
    /// failed answers pings but hears nothing).
    subscribed: AtomicBool,
}

impl ClusterHealth {
    /// Redis answers and this node's subscription is live.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire)
    }

    fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
    }

    fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::AcqRel);
        if was != connected {
            if connected {
                tracing::info!("linked to the other nodes through Redis");
            } else {
                tracing::warn!("lost the link to Redis: serving this node's sockets alone until it is back");
            }
        }
    }
}

/// A running link, kept by the application state.
pub struct Cluster {
    pub node: NodeId,
    pub health: Arc<ClusterHealth>,
    pub limits: SharedLimits,
}
