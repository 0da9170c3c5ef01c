//! The wire protocol between the browser and the server.
//!
//! Both sides compile this one module, so a message cannot be spelled one way by the
//! client and another by the server. Frames are JSON text. What the browser sends is
//! tagged inside by `type`, `{"type":"ping","id":7}`, which lets the server name the
//! request of a frame it refuses. What the server sends is tagged outside,
//! `{"pong":{"id":7}}`: serde can decode an enum tagged inside only by buffering each
//! frame first, and that buffering costs the browser's WASM about 4 KB compressed.
//!
//! A page names the protocol it speaks when it opens its socket ([`socket_path`]); one
//! left open across a deploy that changed the protocol is told it is out of date
//! ([`close_code::OUTDATED`]) and offers a reload, rather than misreading frames.

use serde::{Deserialize, Serialize};

/// Bumped whenever a change would confuse an older client: a page speaking an older
/// version is closed with [`close_code::OUTDATED`] (a newer one, which reached a node
/// not updated yet, with 1013: try again). Also sent in [`ServerMsg::Hello`].
pub const PROTOCOL_VERSION: u32 = 3;

/// The chat socket's path and query: the protocol this page speaks, and `resume=1` when
/// the page had a socket before (the server counts reconnects apart from opens).
pub fn socket_path(resuming: bool) -> String {
    let resume = if resuming { "&resume=1" } else { "" };
    format!("/ws?protocol={PROTOCOL_VERSION}{resume}")
}

/// Close codes with which the server tells a page what to do next (4000–4999 are for
/// applications in RFC 6455), where reconnecting would not help.
pub mod close_code {
    /// The session was logged out, expired, or never valid: log in again.
    pub const SESSION_ENDED: u16 = 4001;
    /// The page speaks an older protocol version than the server (it was loaded before
    /// a deploy): reload it.
    pub const OUTDATED: u16 = 4009;
}

/// Chosen by the client for each request; every reply to that request carries it back
/// so the client can match answers to questions even when events interleave.
///
/// Every integer on the wire stays below 2^53 (ids and positions count up from 1, times
/// are milliseconds): the page reads frames with the browser's JSON, whose numbers are
/// doubles, and refuses a frame holding one it cannot represent exactly.
pub type RequestId = u64;
pub type RoomId = i64;
pub type UserId = i64;
/// Position of a message in its room: 1, 2, 3… with no gaps, assigned by the server.
pub type Seq = i64;

/// Who someone is, as shown next to their messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserRef {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
}

impl UserRef {
    /// Where this person sorts in lists of people: by display name ignoring letter
    /// case, then by id. The server pages online lists in this order and the browser
    /// keeps them in it, so both use this one definition (its case folding is the
    /// browser's own in the WASM, the same mapping: see [`crate::text::lowercase`]).
    pub fn sort_key(&self) -> (String, UserId) {
        (crate::text::lowercase(&self.display_name), self.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Listed for everyone; anyone may join.
    Public,
    /// A private conversation between two people.
    Direct,
}

/// A room as one user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub id: RoomId,
    pub name: String,
    pub kind: RoomKind,
    pub topic: String,
    /// Sequence number of the newest message.
    pub last_seq: Seq,
    pub member_count: i64,
    /// Whether the user this summary was made for is a member.
    pub joined: bool,
    /// For a direct conversation: the other person.
    pub peer: Option<UserRef>,
    /// The newest message this user has read here.
    pub read_seq: Seq,
    /// Positions of the unread messages people wrote here (not join or leave notices,
    /// not this user's own), the newest [`UNREAD_REPORTED`] of them at most. Kept as
    /// positions rather than a count so that a message arriving twice (live and in a
    /// catch-up) is counted once, and reading up to any point leaves the right number.
    pub unread_seqs: Vec<Seq>,
    /// Unread messages here that @mention this user, the newest 99 of them at most.
    pub mention_seqs: Vec<Seq>,
}

/// Most unread positions a summary carries: the badge shows "99+" beyond.
pub const UNREAD_REPORTED: usize = 100;

impl RoomSummary {
    /// Unread messages from people, after this user's read position (at most
    /// [`UNREAD_REPORTED`]).
    pub fn unread(&self) -> i64 {
        self.unread_seqs.iter().filter(|seq| **seq > self.read_seq).count() as i64
    }

    /// Unread mentions of this user.
    pub fn unread_mentions(&self) -> usize {
        self.mention_seqs.iter().filter(|seq| **seq > self.read_seq).count()
    }
}

/// How far one member has received and read a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReceipt {
    pub user: UserRef,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Something a person wrote.
    Text,
    /// Notice that the sender joined the room.
    Joined,
    /// Notice that the sender left the room.
    Left,
}

/// One entry of a room's history, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Server-wide id.
    pub id: i64,
    pub room_id: RoomId,
    pub seq: Seq,
    pub kind: MessageKind,
    pub sender: UserRef,
    /// The sender's own id for the message, used to make retries harmless.
    pub client_id: Option<String>,
    /// Plain text, always displayed as text (never parsed as HTML).
    pub text: String,
    /// Server time of storage, Unix milliseconds.
    pub sent_at: i64,
}

/// Limits the client should respect before the server has to refuse something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_message_chars: u32,
    pub history_page: u32,
}

/// Longest client-chosen message id the server accepts.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Everything a browser may say to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Liveness and latency probe; answered by [`ServerMsg::Pong`].
    Ping { id: RequestId },
    /// Every public room, joined or not; answered by [`ServerMsg::Rooms`].
    ListRooms { id: RequestId },
    /// Creates a public room and joins it; answered by [`ServerMsg::RoomJoined`].
    CreateRoom { id: RequestId, name: String },
    /// Answered by [`ServerMsg::RoomJoined`] (also when already a member).
    JoinRoom { id: RequestId, room_id: RoomId },
    /// Answered by [`ServerMsg::RoomLeft`].
    LeaveRoom { id: RequestId, room_id: RoomId },
    /// Posts a message; answered by [`ServerMsg::Sent`] once it is stored.
    /// Sending the same `client_id` again returns the stored message, never a copy.
    Send { id: RequestId, room_id: RoomId, client_id: String, text: String },
    /// One page of history before `before_seq` (the newest page when absent);
    /// answered by [`ServerMsg::History`].
    History { id: RequestId, room_id: RoomId, before_seq: Option<Seq> },
    /// Messages after `after_seq`, oldest first, for catching up after a reconnect;
    /// answered by [`ServerMsg::Catchup`]. Repeat from the last one while `has_more`.
    Catchup { id: RequestId, room_id: RoomId, after_seq: Seq },
    /// Opens (creating if needed) the direct conversation with a user; answered by
    /// [`ServerMsg::RoomJoined`].
    OpenDirect { id: RequestId, user_id: UserId },
    /// Users whose username or display name starts with `query`; answered by
    /// [`ServerMsg::Users`].
    FindUsers { id: RequestId, query: String },
    /// Moves this user's delivered and/or read position forward (never back). No
    /// reply unless it fails; the change is announced as [`ServerMsg::Receipt`].
    Receipt { id: RequestId, room_id: RoomId, delivered_seq: Option<Seq>, read_seq: Option<Seq> },
    /// "I am typing here"; sent at most every few seconds while typing. No reply.
    Typing { id: RequestId, room_id: RoomId },
    /// Who is online in a room, by name, a page at a time: from the start, or after
    /// the last person of the previous page. Answered by [`ServerMsg::Online`]; from
    /// then on [`ServerMsg::Presence`] tells what changes.
    Online { id: RequestId, room_id: RoomId, after: Option<UserRef> },
}

/// Everything the server may say to a browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMsg {
    /// First frame on every connection: who you are and where you are a member.
    Hello {
        protocol: u32,
        /// Server clock in Unix milliseconds, for showing times relative to the server.
        server_time: i64,
        me: UserRef,
        rooms: Vec<RoomSummary>,
        /// The room every account starts in, shown at `/` (if the user is in it).
        default_room: Option<RoomId>,
        limits: Limits,
    },
    /// Answer to [`ClientMsg::Ping`].
    Pong { id: RequestId },
    /// A request could not be carried out; nothing changed on the server.
    Error {
        /// The request this answers, when the frame was readable enough to have one.
        id: Option<RequestId>,
        code: ErrorCode,
        /// A sentence for people; clients branch on `code`, not on this.
        message: String,
        /// For `rate_limited`: when the request may be tried again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answer to [`ClientMsg::ListRooms`].
    Rooms { id: RequestId, rooms: Vec<RoomSummary> },
    /// You are a member of `room`: the answer to a join or create (with its id), or
    /// news from another of your tabs (without).
    RoomJoined { id: Option<RequestId>, room: RoomSummary },
    /// You are no longer a member, as [`ServerMsg::RoomJoined`] in reverse.
    RoomLeft { id: Option<RequestId>, room_id: RoomId },
    /// Your message is stored: the acknowledgement of [`ClientMsg::Send`].
    Sent { id: RequestId, message: ChatMessage },
    /// A new message (or join/leave notice) in a room you are a member of.
    Message { message: ChatMessage },
    /// Answer to [`ClientMsg::History`], oldest first.
    History {
        id: RequestId,
        room_id: RoomId,
        messages: Vec<ChatMessage>,
        /// Whether older messages exist before the first one returned.
        has_more: bool,
        /// Every member's positions, with the newest page (empty for older pages).
        receipts: Vec<MemberReceipt>,
    },
    /// Answer to [`ClientMsg::Catchup`], oldest first.
    Catchup {
        id: RequestId,
        room_id: RoomId,
        messages: Vec<ChatMessage>,
        /// Whether newer messages remain after the last one returned.
        has_more: bool,
        /// Members' positions as they are now, so that what others read while this
        /// client was away shows too (see [`ServerMsg::History`]).
        receipts: Vec<MemberReceipt>,
    },
    /// Answer to [`ClientMsg::FindUsers`].
    Users { id: RequestId, users: Vec<UserRef> },
    /// A member's delivered/read position moved forward.
    Receipt { room_id: RoomId, user: UserRef, delivered_seq: Seq, read_seq: Seq },
    /// Who typed in a room over the last short window (a few of them at most).
    Typing { room_id: RoomId, users: Vec<UserRef> },
    /// A page of the people online in a room, by name: the answer to
    /// [`ClientMsg::Online`].
    Online {
        id: RequestId,
        room_id: RoomId,
        users: Vec<UserRef>,
        /// Everyone online in the room, each person once however many tabs they have.
        total: u32,
        /// Whether more people follow the last one in this page.
        has_more: bool,
    },
    /// Who came online and who went offline in a room since the last notice, gathered
    /// over a short window (so a crowd arriving is one small frame per member, not one
    /// per arrival). In a large room only the count is sent: `detailed` is false and
    /// whoever wants the names asks with [`ClientMsg::Online`].
    Presence {
        room_id: RoomId,
        total: u32,
        detailed: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        came: Vec<UserRef>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        went: Vec<UserId>,
    },
}

/// Machine-readable reason carried by [`ServerMsg::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON, named an unknown type, or missed a field.
    BadRequest,
    /// The request was understood but breaks a rule (empty message, bad room name…).
    Invalid,
    /// You are not allowed to do this (for example, post to a room you are not in).
    Forbidden,
    NotFound,
    /// The name is taken.
    Conflict,
    /// Too many requests; wait `retry_after_ms` and try again.
    RateLimited,
    /// The server failed; the request may be retried.
    Internal,
}

impl ClientMsg {
    /// The request id, which every reply to this message carries back.
    pub fn id(&self) -> RequestId {
        match self {
            ClientMsg::Ping { id }
            | ClientMsg::ListRooms { id }
            | ClientMsg::CreateRoom { id, .. }
            | ClientMsg::JoinRoom { id, .. }
            | ClientMsg::LeaveRoom { id, .. }
            | ClientMsg::Send { id, .. }
            | ClientMsg::History { id, .. }
            | ClientMsg::Catchup { id, .. }
            | ClientMsg::OpenDirect { id, .. }
            | ClientMsg::FindUsers { id, .. }
            | ClientMsg::Receipt { id, .. }
            | ClientMsg::Typing { id, .. }
            | ClientMsg::Online { id, .. } => *id,
        }
    }

    /// The request's type as it is spelt on the wire, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::ListRooms { .. } => "list_rooms",
            ClientMsg::CreateRoom { .. } => "create_room",
            ClientMsg::JoinRoom { .. } => "join_room",
            ClientMsg::LeaveRoom { .. } => "leave_room",
            ClientMsg::Send { .. } => "send",
            ClientMsg::History { .. } => "history",
            ClientMsg::Catchup { .. } => "catchup",
            ClientMsg::OpenDirect { .. } => "open_direct",
            ClientMsg::FindUsers { .. } => "find_users",
            ClientMsg::Receipt { .. } => "receipt",
            ClientMsg::Typing { .. } => "typing",
            ClientMsg::Online { .. } => "online",
        }
    }

    /// Decodes one text frame. On failure the error keeps whatever request id could be
    /// read from the frame, so the client can still match the error to its request.
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        let value: serde_json::Value = serde_json::from_str(frame).map_err(|err| DecodeError {
            id: None,
            reason: format!("not valid JSON: {err}"),
        })?;
        let id = value.get("id").and_then(serde_json::Value::as_u64);
        serde_json::from_value(value).map_err(|err| DecodeError {
            id,
            reason: err.to_string(),
        })
    }
}

impl ServerMsg {
    /// The request this message answers, if it is a reply.
    pub fn reply_to(&self) -> Option<RequestId> {
        match self {
            ServerMsg::Pong { id }
            | ServerMsg::Rooms { id, .. }
            | ServerMsg::Sent { id, .. }
            | ServerMsg::History { id, .. }
            | ServerMsg::Catchup { id, .. }
            | ServerMsg::Users { id, .. }
            | ServerMsg::Online { id, .. } => Some(*id),
            ServerMsg::Error { id, .. } | ServerMsg::RoomJoined { id, .. } | ServerMsg::RoomLeft { id, .. } => *id,
            ServerMsg::Hello { .. }
            | ServerMsg::Message { .. }
            | ServerMsg::Presence { .. }
            | ServerMsg::Receipt { .. }
            | ServerMsg::Typing { .. } => None,
        }
    }

    /// Encodes a frame. Serialising these types cannot fail (no maps with non-string
    /// keys, no foreign `Serialize` impls), so this returns the text directly.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// Why a client frame was refused, in words fit to send back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub id: Option<RequestId>,
    pub reason: String,
}

impl DecodeError {
    /// The error frame the server answers an undecodable frame with.
    pub fn into_reply(self) -> ServerMsg {
        ServerMsg::Error { id: self.id, code: ErrorCode::BadRequest, message: self.reason, retry_after_ms: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_has_a_stable_wire_form() {
        let ping = ClientMsg::Ping { id: 7 };
        let text = serde_json::to_string(&ping).unwrap();
        assert_eq!(text, r#"{"type":"ping","id":7}"#);
        assert_eq!(ClientMsg::decode(&text).unwrap(), ping);
    }

    #[test]
    fn server_messages_are_tagged_outside() {
        assert_eq!(ServerMsg::Pong { id: 7 }.encode(), r#"{"pong":{"id":7}}"#);
        let typing = ServerMsg::Typing { room_id: 2, users: Vec::new() };
        assert_eq!(typing.encode(), r#"{"typing":{"room_id":2,"users":[]}}"#);
    }

    #[test]
    fn the_socket_path_names_this_protocol() {
        assert_eq!(socket_path(false), format!("/ws?protocol={PROTOCOL_VERSION}"));
        assert_eq!(socket_path(true), format!("/ws?protocol={PROTOCOL_VERSION}&resume=1"));
    }

    #[test]
    fn server_messages_round_trip() {
        let alice = UserRef { id: 1, username: "alice".into(), display_name: "Alice".into() };
        let room = RoomSummary {
            id: 2,
            name: "general".into(),
            kind: RoomKind::Public,
            topic: String::new(),
            last_seq: 9,
            member_count: 3,
            joined: true,
            peer: None,
            read_seq: 7,
            unread_seqs: vec![8, 9],
            mention_seqs: vec![8],
        };
        let message = ChatMessage {
            id: 5,
            room_id: 2,
            seq: 9,
            kind: MessageKind::Text,
            sender: alice.clone(),
            client_id: Some("c-1".into()),
            text: "<b>hi</b> \u{1F600}".into(),
            sent_at: 1_700_000_000_000,
        };
        let samples = [
            ServerMsg::Hello {
                protocol: PROTOCOL_VERSION,
                server_time: 1_700_000_000_000,
                me: alice.clone(),
                rooms: vec![room.clone()],
                default_room: Some(2),
                limits: Limits { max_message_chars: 4000, history_page: 50 },
            },
            ServerMsg::Pong { id: 3 },
            ServerMsg::Error { id: Some(4), code: ErrorCode::BadRequest, message: "nope".into(), retry_after_ms: None },
            ServerMsg::Error { id: Some(5), code: ErrorCode::RateLimited, message: "slow down".into(), retry_after_ms: Some(900) },
            ServerMsg::Rooms { id: 5, rooms: vec![room.clone()] },
            ServerMsg::RoomJoined { id: None, room },
            ServerMsg::RoomLeft { id: Some(6), room_id: 2 },
            ServerMsg::Sent { id: 7, message: message.clone() },
            ServerMsg::Message { message: message.clone() },
            ServerMsg::History {
                id: 8,
                room_id: 2,
                messages: vec![message.clone()],
                has_more: false,
                receipts: vec![MemberReceipt { user: alice.clone(), delivered_seq: 9, read_seq: 8 }],
            },
            ServerMsg::Catchup { id: 9, room_id: 2, messages: vec![message], has_more: true, receipts: Vec::new() },
            ServerMsg::Users { id: 10, users: vec![alice.clone()] },
            ServerMsg::Receipt { room_id: 2, user: alice.clone(), delivered_seq: 9, read_seq: 9 },
            ServerMsg::Typing { room_id: 2, users: vec![alice.clone()] },
            ServerMsg::Online { id: 11, room_id: 2, users: vec![alice.clone()], total: 3, has_more: true },
            ServerMsg::Presence { room_id: 2, total: 2, detailed: true, came: vec![alice], went: vec![4] },
            ServerMsg::Presence { room_id: 2, total: 900, detailed: false, came: Vec::new(), went: Vec::new() },
        ];
        for msg in samples {
            let back: ServerMsg = serde_json::from_str(&msg.encode()).unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn client_messages_round_trip() {
        let samples = [
            ClientMsg::Ping { id: 1 },
            ClientMsg::ListRooms { id: 2 },
            ClientMsg::CreateRoom { id: 3, name: "rust".into() },
            ClientMsg::JoinRoom { id: 4, room_id: 7 },
            ClientMsg::LeaveRoom { id: 5, room_id: 7 },
            ClientMsg::Send { id: 6, room_id: 7, client_id: "abc".into(), text: "hello\nworld".into() },
            ClientMsg::History { id: 7, room_id: 7, before_seq: Some(51) },
            ClientMsg::History { id: 8, room_id: 7, before_seq: None },
            ClientMsg::Catchup { id: 9, room_id: 7, after_seq: 40 },
            ClientMsg::OpenDirect { id: 10, user_id: 3 },
            ClientMsg::FindUsers { id: 11, query: "al".into() },
            ClientMsg::Receipt { id: 12, room_id: 7, delivered_seq: Some(9), read_seq: None },
            ClientMsg::Typing { id: 13, room_id: 7 },
            ClientMsg::Online { id: 14, room_id: 7, after: None },
            ClientMsg::Online { id: 15, room_id: 7, after: Some(UserRef { id: 1, username: "ana".into(), display_name: "Ana".into() }) },
        ];
        for msg in samples {
            let text = serde_json::to_string(&msg).unwrap();
            assert_eq!(ClientMsg::decode(&text).unwrap(), msg, "{text}");
        }
    }

    #[test]
    fn unread_counts_come_from_positions() {
        let room = RoomSummary {
            id: 1,
            name: "r".into(),
            kind: RoomKind::Public,
            topic: String::new(),
            last_seq: 10,
            member_count: 1,
            joined: true,
            peer: None,
            read_seq: 6,
            unread_seqs: vec![7, 9, 10],
            mention_seqs: vec![5, 7, 9],
        };
        assert_eq!((room.unread(), room.unread_mentions()), (3, 2), "a notice (seq 8) is not an unread message");
        assert_eq!(RoomSummary { read_seq: 9, ..room.clone() }.unread(), 1);
        assert_eq!(RoomSummary { read_seq: 12, ..room }.unread(), 0, "never negative");
    }

    #[test]
    fn send_has_a_stable_wire_form() {
        let frame = r#"{"type":"send","id":1,"room_id":2,"client_id":"x","text":"hi"}"#;
        assert_eq!(
            ClientMsg::decode(frame).unwrap(),
            ClientMsg::Send { id: 1, room_id: 2, client_id: "x".into(), text: "hi".into() }
        );
    }

    #[test]
    fn unexpected_fields_are_refused() {
        let err = ClientMsg::decode(r#"{"type":"ping","id":1,"admin":true}"#).unwrap_err();
        assert_eq!(err.id, Some(1));
        assert!(err.reason.contains("unknown field `admin`"), "{}", err.reason);
    }

    #[test]
    fn wrong_field_types_are_named() {
        let err = ClientMsg::decode(r#"{"type":"join_room","id":1,"room_id":"general"}"#).unwrap_err();
        assert!(err.reason.contains("invalid type"), "{}", err.reason);
    }

    mod never_panics {
        use proptest::prelude::*;

        use super::super::*;

        /// Any JSON value: what a hostile client could put in a frame.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                ".{0,12}".prop_map(serde_json::Value::from),
                prop_oneof![
                    Just("ping"), Just("send"), Just("history"), Just("receipt"), Just("typing"), Just("join_room")
                ]
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![Just("type".to_string()), Just("id".to_string()), Just("room_id".to_string()), Just("text".to_string()), ".{0,6}"],
                        inner,
                        0..6
                    )
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let frame = String::from_utf8_lossy(&bytes);
                if let Err(err) = ClientMsg::decode(&frame) {
                    let _ = err.into_reply().encode();
                }
            }

            #[test]
            fn random_json(value in json()) {
                let frame = value.to_string();
                match ClientMsg::decode(&frame) {
                    Ok(msg) => prop_assert_eq!(ClientMsg::decode(&serde_json::to_string(&msg).unwrap()).unwrap(), msg),
                    Err(err) => {
                        // The id survives whenever the frame had a usable one.
                        let id = value.get("id").and_then(serde_json::Value::as_u64);
                        prop_assert_eq!(err.id, id);
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_json_is_named_and_has_no_id() {
        let err = ClientMsg::decode("{not json").unwrap_err();
        assert_eq!(err.id, None);
        assert!(err.reason.starts_with("not valid JSON"), "{}", err.reason);
    }

    #[test]
    fn unknown_type_keeps_the_request_id() {
        let err = ClientMsg::decode(r#"{"type":"teleport","id":9}"#).unwrap_err();
        assert_eq!(err.id, Some(9));
        assert!(err.reason.contains("unknown variant `teleport`"), "{}", err.reason);
    }

    #[test]
    fn missing_field_is_named() {
        let err = ClientMsg::decode(r#"{"type":"ping"}"#).unwrap_err();
        assert!(err.reason.contains("missing field `id`"), "{}", err.reason);
    }
}
