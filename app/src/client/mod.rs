//! The browser's model of the chat: rooms, timelines, presence and the outbox, kept
//! up to date from the socket. Components read these signals; only [`ChatClient`]'s
//! methods change them.
//!
//! Created once per page load in [`crate::App`] (so it survives moving between chat
//! pages) and on the server too, where it stays empty: the server renders the empty
//! state and the browser fills it in after hydration, so the two never disagree.

pub mod timeline;
#[cfg(feature = "hydrate")]
mod connection;

use std::collections::HashMap;

use leptos::prelude::*;

use crate::protocol::{ChatMessage, ClientMsg, ErrorCode, Limits, RequestId, RoomId, RoomSummary, ServerMsg, UserRef};
pub use timeline::Timeline;

/// What the connection indicator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Not yet started (what the server renders), or first attempt in progress.
    Connecting,
    Online,
    /// The connection dropped; a new attempt is scheduled.
    Reconnecting,
    /// The session ended (logout elsewhere, expiry): no reconnecting until login.
    SignedOut,
}

/// A message written here and not yet acknowledged as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub client_id: String,
    pub room_id: RoomId,
    pub text: String,
    /// Why the server refused it, if it did; it stays visible until retried or removed.
    pub failed: Option<String>,
}

/// What a request was for, so its reply (or error) can be put in the right place.
#[derive(Debug, Clone)]
enum Purpose {
    Send { client_id: String },
    Navigate,
    Other,
}

#[derive(Clone, Copy)]
pub struct ChatClient {
    pub conn: RwSignal<ConnState>,
    pub me: RwSignal<Option<UserRef>>,
    /// Rooms the user is a member of, by name.
    pub rooms: RwSignal<Vec<RoomSummary>>,
    /// Every public room, once the user has asked to browse them.
    pub directory: RwSignal<Option<Vec<RoomSummary>>>,
    pub timelines: RwSignal<HashMap<RoomId, Timeline>>,
    pub presence: RwSignal<HashMap<RoomId, Vec<UserRef>>>,
    pub outbox: RwSignal<Vec<Outgoing>>,
    pub limits: RwSignal<Limits>,
    /// The latest problem to tell the user about.
    pub alert: RwSignal<Option<String>>,
    /// A page to move to (set after creating or joining a room).
    pub goto: RwSignal<Option<String>>,
    requests: StoredValue<HashMap<RequestId, Purpose>>,
    next_request: StoredValue<RequestId>,
    /// Frames for the socket writer; `None` while disconnected.
    link: StoredValue<Option<futures::channel::mpsc::UnboundedSender<ClientMsg>>, LocalStorage>,
    started: StoredValue<bool>,
}

impl ChatClient {
    pub fn new() -> Self {
        ChatClient {
            conn: RwSignal::new(ConnState::Connecting),
            me: RwSignal::new(None),
            rooms: RwSignal::new(Vec::new()),
            directory: RwSignal::new(None),
            timelines: RwSignal::new(HashMap::new()),
            presence: RwSignal::new(HashMap::new()),
            outbox: RwSignal::new(Vec::new()),
            limits: RwSignal::new(Limits { max_message_chars: 4000, history_page: 50 }),
            alert: RwSignal::new(None),
            goto: RwSignal::new(None),
            requests: StoredValue::new(HashMap::new()),
            next_request: StoredValue::new(1),
            link: StoredValue::new_local(None),
            started: StoredValue::new(false),
        }
    }

    /// Connects (once) if not already connected; chat pages call this after hydration.
    pub fn start(&self) {
        if self.started.get_value() {
            return;
        }
        self.started.set_value(true);
        #[cfg(feature = "hydrate")]
        connection::run(*self);
    }

    /// The connection loop has stopped (signed out); a later [`ChatClient::start`]
    /// may begin a new one, for example after logging in again.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn stopped(&self) {
        self.started.set_value(false);
    }

    pub fn room_by_name(&self, name: &str) -> Option<RoomSummary> {
        self.rooms.with(|rooms| rooms.iter().find(|room| room.name.eq_ignore_ascii_case(name)).cloned())
    }

    // ----- requests -------------------------------------------------------------

    fn request(&self, purpose: Purpose, build: impl FnOnce(RequestId) -> ClientMsg) {
        let id = self.next_request.get_value();
        self.next_request.set_value(id + 1);
        self.requests.update_value(|requests| {
            requests.insert(id, purpose);
        });
        self.transmit(build(id));
    }

    /// Hands a frame to the socket; dropped while offline (everything that matters is
    /// re-requested on reconnect, and unsent messages wait in the outbox).
    fn transmit(&self, msg: ClientMsg) {
        self.link.with_value(|link| {
            if let Some(link) = link {
                let _ = link.unbounded_send(msg);
            }
        });
    }

    /// Sends a message: it shows at once as pending, and goes out now or on reconnect.
    pub fn send_message(&self, room_id: RoomId, text: String) {
        let item = Outgoing { client_id: new_client_id(), room_id, text, failed: None };
        self.outbox.update(|outbox| outbox.push(item.clone()));
        self.transmit_outgoing(item);
    }

    /// Sends a refused or stuck message again, with the same client id (so at most one
    /// copy can ever be stored).
    pub fn retry(&self, client_id: &str) {
        let Some(item) = self.outbox.with(|outbox| outbox.iter().find(|o| o.client_id == client_id).cloned()) else {
            return;
        };
        self.outbox.update(|outbox| {
            if let Some(o) = outbox.iter_mut().find(|o| o.client_id == client_id) {
                o.failed = None;
            }
        });
        self.transmit_outgoing(item);
    }

    fn transmit_outgoing(&self, item: Outgoing) {
        self.request(Purpose::Send { client_id: item.client_id.clone() }, |id| ClientMsg::Send {
            id,
            room_id: item.room_id,
            client_id: item.client_id,
            text: item.text,
        });
    }

    pub fn discard(&self, client_id: &str) {
        self.outbox.update(|outbox| outbox.retain(|o| o.client_id != client_id));
    }

    /// Loads the newest page of a room unless it is already loaded.
    pub fn open_room(&self, room_id: RoomId) {
        let loaded = self.timelines.with(|t| t.get(&room_id).is_some_and(|t| t.loaded));
        if !loaded {
            self.request(Purpose::Other, |id| ClientMsg::History { id, room_id, before_seq: None });
        }
    }

    /// Loads the page before the oldest message held.
    pub fn load_older(&self, room_id: RoomId) {
        let mut before = None;
        let mut wanted = false;
        self.timelines.update(|timelines| {
            let timeline = timelines.entry(room_id).or_default();
            if timeline.has_more_before && !timeline.loading_older {
                timeline.loading_older = true;
                before = timeline.first_seq();
                wanted = true;
            }
        });
        if wanted {
            self.request(Purpose::Other, |id| ClientMsg::History { id, room_id, before_seq: before });
        }
    }

    pub fn create_room(&self, name: String) {
        self.request(Purpose::Navigate, |id| ClientMsg::CreateRoom { id, name });
    }

    pub fn join_room(&self, room_id: RoomId) {
        self.request(Purpose::Navigate, |id| ClientMsg::JoinRoom { id, room_id });
    }

    pub fn leave_room(&self, room_id: RoomId) {
        self.request(Purpose::Other, |id| ClientMsg::LeaveRoom { id, room_id });
    }

    pub fn browse_rooms(&self) {
        self.request(Purpose::Other, |id| ClientMsg::ListRooms { id });
    }

    // ----- events -----------------------------------------------------------------

    /// Applies one frame from the server.
    pub fn apply(&self, msg: ServerMsg) {
        match msg {
            ServerMsg::Hello { me, rooms, limits, .. } => self.greeted(me, rooms, limits),
            ServerMsg::Pong { id } => {
                self.forget(id);
            }
            ServerMsg::Error { id, code, message } => self.refused(id, code, message),
            ServerMsg::Rooms { id, rooms } => {
                self.forget(id);
                self.directory.set(Some(rooms));
            }
            ServerMsg::RoomJoined { id, room } => {
                let navigate = id.and_then(|id| self.forget(id)).is_some_and(|p| matches!(p, Purpose::Navigate));
                if navigate {
                    self.goto.set(Some(format!("/r/{}", room.name)));
                }
                self.directory.update(|dir| {
                    if let Some(entry) = dir.as_mut().and_then(|dir| dir.iter_mut().find(|r| r.id == room.id)) {
                        *entry = room.clone();
                    }
                });
                self.rooms.update(|rooms| {
                    rooms.retain(|r| r.id != room.id);
                    rooms.push(room);
                    rooms.sort_by_key(|r| r.name.to_lowercase());
                });
            }
            ServerMsg::RoomLeft { id, room_id } => {
                if let Some(id) = id {
                    self.forget(id);
                }
                self.rooms.update(|rooms| rooms.retain(|r| r.id != room_id));
                self.timelines.update(|t| {
                    t.remove(&room_id);
                });
                self.directory.update(|dir| {
                    if let Some(entry) = dir.as_mut().and_then(|dir| dir.iter_mut().find(|r| r.id == room_id)) {
                        entry.joined = false;
                    }
                });
            }
            ServerMsg::Sent { id, message } => {
                self.forget(id);
                self.delivered(message);
            }
            ServerMsg::Message { message } => self.delivered(message),
            ServerMsg::History { id, room_id, messages, has_more } => {
                self.forget(id);
                self.timelines.update(|timelines| {
                    let timeline = timelines.entry(room_id).or_default();
                    let older = timeline.loading_older
                        && messages.last().zip(timeline.first_seq()).is_some_and(|(last, first)| last.seq < first);
                    if older {
                        timeline.merge_older(messages, has_more);
                    } else {
                        timeline.merge_latest(messages, has_more);
                    }
                });
            }
            ServerMsg::Presence { room_id, online } => self.presence.update(|p| {
                p.insert(room_id, online);
            }),
        }
    }

    fn forget(&self, id: RequestId) -> Option<Purpose> {
        let mut purpose = None;
        self.requests.update_value(|requests| purpose = requests.remove(&id));
        purpose
    }

    fn greeted(&self, me: UserRef, rooms: Vec<RoomSummary>, limits: Limits) {
        // Requests of the previous connection will never be answered.
        self.requests.set_value(HashMap::new());
        let changed_user = self.me.with_untracked(|old| old.as_ref().is_some_and(|old| old.id != me.id));
        if changed_user {
            self.reset();
        }
        self.me.set(Some(me));
        self.limits.set(limits);
        let joined: Vec<RoomId> = rooms.iter().map(|r| r.id).collect();
        self.rooms.set(rooms);
        // Rooms left while away are dropped; the ones still held are refreshed from
        // their newest page, which fills in whatever arrived during the outage.
        self.timelines.update(|timelines| {
            timelines.retain(|room, _| joined.contains(room));
            timelines.values_mut().for_each(|t| t.loading_older = false);
        });
        let held: Vec<RoomId> = self.timelines.with_untracked(|t| t.keys().copied().collect());
        for room_id in held {
            self.request(Purpose::Other, |id| ClientMsg::History { id, room_id, before_seq: None });
        }
        // Unacknowledged messages go out again; the server drops any it already has.
        for item in self.outbox.get_untracked().into_iter().filter(|item| item.failed.is_none()) {
            self.transmit_outgoing(item);
        }
        self.conn.set(ConnState::Online);
    }

    /// A stored message arrived (own acknowledgement or someone's event).
    fn delivered(&self, message: ChatMessage) {
        if let Some(client_id) = &message.client_id {
            if self.me.with_untracked(|me| me.as_ref().is_some_and(|me| me.id == message.sender.id)) {
                self.outbox.update(|outbox| outbox.retain(|o| &o.client_id != client_id));
            }
        }
        let room_id = message.room_id;
        let seq = message.seq;
        self.rooms.update(|rooms| {
            if let Some(room) = rooms.iter_mut().find(|r| r.id == room_id) {
                room.last_seq = room.last_seq.max(seq);
            }
        });
        self.timelines.update(|timelines| {
            // Only rooms whose history is on screen keep live messages; the others
            // load their newest page when opened.
            if let Some(timeline) = timelines.get_mut(&room_id).filter(|t| t.loaded) {
                timeline.insert(message);
            }
        });
    }

    fn refused(&self, id: Option<RequestId>, code: ErrorCode, message: String) {
        match id.and_then(|id| self.forget(id)) {
            Some(Purpose::Send { client_id }) => self.outbox.update(|outbox| {
                if let Some(item) = outbox.iter_mut().find(|o| o.client_id == client_id) {
                    item.failed = Some(message);
                }
            }),
            _ => {
                if code != ErrorCode::BadRequest || id.is_some() {
                    self.alert.set(Some(message));
                }
            }
        }
    }

    /// Forgets everything about the previous user.
    fn reset(&self) {
        self.me.set(None);
        self.rooms.set(Vec::new());
        self.directory.set(None);
        self.timelines.set(HashMap::new());
        self.presence.set(HashMap::new());
        self.outbox.set(Vec::new());
    }
}

impl Default for ChatClient {
    fn default() -> Self {
        Self::new()
    }
}

/// 128 random bits, hex: unique enough that two messages never share an id.
fn new_client_id() -> String {
    #[cfg(feature = "hydrate")]
    {
        let mut bytes = [0u8; 16];
        if let Some(crypto) = window().crypto().ok() {
            let _ = crypto.get_random_values_with_u8_array(&mut bytes);
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        String::new()
    }
}
