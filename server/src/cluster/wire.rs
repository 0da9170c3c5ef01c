//! What nodes tell each other through Redis, and how it is laid out on the wire.
//!
//! A payload is a small JSON header, a newline, then (for events that carry one) the
//! frame exactly as the publishing node encoded it for its own sockets. The receiving
//! node pushes those bytes to its sockets as they are: an event is encoded once per
//! node, never once per socket, and never decoded and re-encoded on the way.

use std::sync::Arc;

use app::protocol::{RoomId, Seq, UserId, UserRef, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

use crate::metrics::FrameKind;

/// The version of what nodes tell each other: the browser protocol's, since events
/// carry frames encoded for pages, and under it a revision of how nodes treat each
/// other's events. Nodes that differ in it do not hear each other (it names the
/// channel) and meet only in the database, as the two halves of a rolling deploy.
/// Revision 1: a join or leave is checked against the database before another node's
/// sockets follow it, and the frames telling the person's tabs are no longer relayed
/// (a node of revision 0 would leave its tabs untold).
pub const EVENTS_VERSION: u32 = PROTOCOL_VERSION * 1_000 + 1;

/// A node's name, unique among the nodes sharing a Redis.
pub type NodeId = Arc<str>;

/// One event, as the node that published it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// A frame for every socket in a room. `seq` is set for a stored message, so a
    /// node can tell how far its sockets have heard a room; `author` for something a
    /// person wrote, so a node can tell them who read it ("Seen by").
    Room { room: RoomId, kind: WireKind, seq: Option<Seq>, author: Option<UserId> },
    /// A frame for every socket of these people.
    Users { users: Vec<UserId>, kind: WireKind },
    /// The person joined (or left) the room: each node checks their membership in the
    /// database before its sockets follow, and tells their tabs there. `through` is
    /// the room's newest message at the join (its notice, if it has one): a node sends
    /// the sockets it joins the newest of the messages since, which went out before
    /// they heard the room.
    Joined {
        user: UserId,
        room: RoomId,
        #[serde(default)]
        through: Option<Seq>,
    },
    Left { user: UserId, room: RoomId },
    /// The session ended (logout, revocation): its sockets close.
    SessionEnded { session: i64 },
    /// Someone is typing in a room.
    Typing { room: RoomId, user: UserRef },
    /// How many sockets a person has on the publishing node now, and in which rooms
    /// (no sockets: gone from that node).
    Presence { user: UserRef, rooms: Vec<RoomId>, sockets: u32 },
    /// The publishing node (re)announced itself: its presence is in its Redis hash, to
    /// be read whole.
    NodeUp,
    /// Events from the publishing node may have been lost (its link to Redis broke,
    /// or its queue to Redis overflowed): every node brings its sockets up to date
    /// from the database.
    CatchUp,
}

/// [`FrameKind`] as it travels, so the receiving node counts deliveries by kind too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireKind {
    Message,
    Receipt,
    Typing,
    Presence,
    Reply,
}

impl From<FrameKind> for WireKind {
    fn from(kind: FrameKind) -> Self {
        match kind {
            FrameKind::Message => WireKind::Message,
            FrameKind::Receipt => WireKind::Receipt,
            FrameKind::Typing => WireKind::Typing,
            FrameKind::Presence => WireKind::Presence,
            FrameKind::Reply => WireKind::Reply,
        }
    }
}

impl From<WireKind> for FrameKind {
    fn from(kind: WireKind) -> Self {
        match kind {
            WireKind::Message => FrameKind::Message,
            WireKind::Receipt => FrameKind::Receipt,
            WireKind::Typing => FrameKind::Typing,
            WireKind::Presence => FrameKind::Presence,
            WireKind::Reply => FrameKind::Reply,
        }
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    node: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Deserialize)]
struct HeaderIn {
    node: String,
    #[serde(flatten)]
    event: Event,
}

/// Lays out one event from `node`, with the frame for the events that carry one.
pub fn encode(node: &str, event: &Event, frame: &str) -> Vec<u8> {
    let header = serde_json::to_vec(&HeaderOut { node, event }).expect("headers always serialise");
    let mut payload = Vec::with_capacity(header.len() + 1 + frame.len());
    payload.extend_from_slice(&header);
    payload.push(b'\n');
    payload.extend_from_slice(frame.as_bytes());
    payload
}

/// An event read back: who sent it, what it is, and its frame (empty when it has
/// none).
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    pub node: String,
    pub event: Event,
    pub frame: String,
}

/// Why a payload could not be read (another version of Parley on the same channel, or
/// something else publishing there).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no header line")]
    NoHeader,
    #[error("bad header: {0}")]
    Header(#[from] serde_json::Error),
    #[error("the frame is not UTF-8")]
    Frame(#[from] std::string::FromUtf8Error),
}

/// Reads a payload written by [`encode`]. Never panics, whatever the bytes.
pub fn decode(payload: &[u8]) -> Result<Received, WireError> {
    let split = payload.iter().position(|byte| *byte == b'\n').ok_or(WireError::NoHeader)?;
    let (header, rest) = payload.split_at(split);
    let header: HeaderIn = serde_json::from_slice(header)?;
    // `rest` starts with the newline found above.
    let frame = String::from_utf8(rest.get(1..).unwrap_or_default().to_vec())?;
    Ok(Received { node: header.node, event: header.event, frame })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn events_come_back_as_they_were_sent_with_their_frame_untouched() {
        let user = UserRef { id: 7, username: "ana".into(), display_name: "Ána 😀".into() };
        let events = [
            Event::Room { room: 3, kind: WireKind::Message, seq: Some(42), author: Some(7) },
            Event::Users { users: vec![1, 2], kind: WireKind::Receipt },
            Event::Joined { user: 1, room: 3, through: Some(12) },
            Event::Left { user: 1, room: 3 },
            Event::SessionEnded { session: 9 },
            Event::Typing { room: 3, user: user.clone() },
            Event::Presence { user, rooms: vec![3, 4], sockets: 2 },
            Event::NodeUp,
            Event::CatchUp,
        ];
        let frame = "{\"message\":{\"text\":\"Ótimo!\\n\"}}\n";
        for event in events {
            let received = decode(&encode("node-ç", &event, frame)).unwrap();
            assert_eq!(received, Received { node: "node-ç".into(), event, frame: frame.into() });
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_without_panicking(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&payload);
        }

        #[test]
        fn any_frame_and_node_name_survive_the_trip(node in "\\PC*", frame in "\\PC*") {
            let event = Event::Room { room: 1, kind: WireKind::Message, seq: None, author: None };
            let received = decode(&encode(&node, &event, &frame)).unwrap();
            prop_assert_eq!(received.node, node);
            prop_assert_eq!(received.frame, frame);
        }
    }
}
