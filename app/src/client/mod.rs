//! The browser's model of the chat: rooms and conversations, timelines, receipts,
//! presence, typing and the outbox, kept up to date from the socket. Components read
//! these signals; only [`ChatClient`]'s methods change them.
//!
//! Created once per page load in [`crate::App`] (so it survives moving between chat
//! pages) and on the server too, where it stays empty: the server renders the empty
//! state and the browser fills it in after hydration, so the two never disagree.

mod events;
mod outbox;
mod pacing;
pub(crate) mod platform;
mod presence;
mod receipts;
pub mod timeline;
#[cfg(feature = "hydrate")]
mod connection;
#[cfg(feature = "hydrate")]
mod wire;

use std::collections::{HashMap, VecDeque};

use leptos::prelude::*;

use crate::protocol::{ClientMsg, Limits, MemberReceipt, RequestId, RoomId, RoomKind, RoomSummary, Seq, UserId, UserRef};
pub use events::{room_path, sidebar_name};
pub use outbox::{Outgoing, MAX_SEND_ATTEMPTS};
pub use presence::RoomPresence;
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
    /// The server was updated to a protocol this page does not speak: no reconnecting
    /// until the page is reloaded.
    Outdated,
}

/// How far one of your messages has got, as the sender of a direct message sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Stored,
    Delivered,
    Read,
}

/// What a request was for, so its reply (or error) can be put in the right place.
#[derive(Debug, Clone)]
enum Purpose {
    Send { client_id: String },
    /// Creating, joining or opening a conversation: show it when it is ready.
    Navigate,
    /// A page of a room's history: the newest (`before_seq: None`) or an older one.
    History { room_id: RoomId, before_seq: Option<Seq> },
    /// What a room missed after `after_seq`.
    Catchup { room_id: RoomId, after_seq: Seq },
    /// The message `seq` of a conversation with no timeline here, to notify of.
    Notify { seq: Seq },
    /// Receipts and typing notices: answered only when refused.
    Receipt { room_id: RoomId, delivered: Option<Seq>, read: Option<Seq> },
    Typing,
    /// A page of a room's online list: the first, or `more` after those held.
    Online { more: bool },
    Other,
}

impl Purpose {
    /// Requests the server answers only with an error, never on success.
    fn is_silent(&self) -> bool {
        matches!(self, Purpose::Receipt { .. } | Purpose::Typing)
    }
}

/// Silent requests remembered in case the server refuses one. The server answers in
/// order and at once, so only the latest few can still be refused.
const SILENT_REMEMBERED: usize = 64;

/// Conversations whose newest unnotified message is fetched at a reconnect, at most:
/// notifications replace each other, so a few are as good as all.
const NOTICES_FETCHED: usize = 3;

/// Typing notices count for this long after the last one.
const TYPING_SHOWN_MS: f64 = 5_000.0;
/// Send a typing notice at most this often while typing.
const TYPING_EVERY_MS: f64 = 3_000.0;

#[derive(Clone, Copy)]
pub struct ChatClient {
    pub conn: RwSignal<ConnState>,
    pub me: RwSignal<Option<UserRef>>,
    /// Rooms and direct conversations the user is in.
    pub rooms: RwSignal<Vec<RoomSummary>>,
    /// Every public room, once the user has asked to browse them.
    pub directory: RwSignal<Option<Vec<RoomSummary>>>,
    /// Results of the latest user search.
    pub found_users: RwSignal<Option<Vec<UserRef>>>,
    pub timelines: RwSignal<HashMap<RoomId, Timeline>>,
    /// Each member's delivered/read positions, for rooms whose history is loaded.
    pub receipts: RwSignal<HashMap<RoomId, HashMap<UserId, MemberReceipt>>>,
    pub presence: RwSignal<HashMap<RoomId, RoomPresence>>,
    /// Who is typing where, with when their notice runs out (ms since the epoch).
    pub typing: RwSignal<HashMap<RoomId, Vec<(UserRef, f64)>>>,
    pub outbox: RwSignal<Vec<Outgoing>>,
    pub limits: RwSignal<Limits>,
    /// The room every account starts in (shown at `/`), as the server names it.
    pub default_room: RwSignal<Option<RoomId>>,
    /// The latest problem to tell the user about.
    pub alert: RwSignal<Option<String>>,
    /// A page to move to (set after creating, joining or opening a conversation).
    pub goto: RwSignal<Option<String>>,
    /// Whether the page is visible and focused, so what is on screen counts as read.
    pub attentive: RwSignal<bool>,
    /// Browser notification permission ("default", "granted", "denied"), once known.
    pub notification_permission: RwSignal<Option<String>>,
    requests: StoredValue<HashMap<RequestId, Purpose>>,
    /// The latest silent requests (receipts, typing), oldest first.
    silent_requests: StoredValue<VecDeque<(RequestId, Purpose)>>,
    next_request: StoredValue<RequestId>,
    /// Frames for the socket writer; `None` while disconnected.
    /// Thread-safe storage: the model is also created during server rendering, where
    /// its owner may be cleaned up on another worker thread than the one that made it
    /// (thread-local storage panics when dropped there).
    link: StoredValue<Option<futures::channel::mpsc::UnboundedSender<ClientMsg>>>,
    started: StoredValue<bool>,
    /// Receipts waiting for the next batch: room → (delivered, read).
    unsent_receipts: StoredValue<HashMap<RoomId, (Option<Seq>, Option<Seq>)>>,
    typing_sent_at: StoredValue<HashMap<RoomId, f64>>,
    /// Whether messages go one at a time (the server said "too fast").
    pacing: StoredValue<pacing::Pacing>,
    /// What was typed and not sent, per conversation, so switching rooms keeps it.
    drafts: StoredValue<HashMap<RoomId, String>>,
    /// Per conversation, the newest message a notification was shown for: one that
    /// reaches the page twice, or after a newer one, is not told of again.
    notified_through: StoredValue<HashMap<RoomId, Seq>>,
}

impl ChatClient {
    pub fn new() -> Self {
        ChatClient {
            conn: RwSignal::new(ConnState::Connecting),
            me: RwSignal::new(None),
            rooms: RwSignal::new(Vec::new()),
            directory: RwSignal::new(None),
            found_users: RwSignal::new(None),
            timelines: RwSignal::new(HashMap::new()),
            receipts: RwSignal::new(HashMap::new()),
            presence: RwSignal::new(HashMap::new()),
            typing: RwSignal::new(HashMap::new()),
            outbox: RwSignal::new(Vec::new()),
            limits: RwSignal::new(Limits { max_message_chars: 4000, history_page: 50 }),
            default_room: RwSignal::new(None),
            alert: RwSignal::new(None),
            goto: RwSignal::new(None),
            attentive: RwSignal::new(true),
            notification_permission: RwSignal::new(None),
            requests: StoredValue::new(HashMap::new()),
            silent_requests: StoredValue::new(VecDeque::new()),
            next_request: StoredValue::new(1),
            link: StoredValue::new(None),
            started: StoredValue::new(false),
            unsent_receipts: StoredValue::new(HashMap::new()),
            typing_sent_at: StoredValue::new(HashMap::new()),
            pacing: StoredValue::new(pacing::Pacing::default()),
            drafts: StoredValue::new(HashMap::new()),
            notified_through: StoredValue::new(HashMap::new()),
        }
    }

    /// Answers the service worker's questions on any page of the site (the app calls
    /// this once it is hydrated): a tap on a notification waits for every tab's answer.
    pub fn answer_service_worker(&self) {
        platform::answer_service_worker(*self);
    }

    /// Connects (once) if not already connected; chat pages call this after hydration.
    pub fn start(&self) {
        if self.started.get_value() {
            return;
        }
        self.started.set_value(true);
        // After a sign-out, the next login's page connects anew.
        self.conn.set(ConnState::Connecting);
        platform::watch_attention(*self);
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
        self.rooms.with(|rooms| {
            rooms.iter().find(|room| room.kind == RoomKind::Public && room.name.eq_ignore_ascii_case(name)).cloned()
        })
    }

    /// The direct conversation with the user called `username`, if there is one.
    pub fn direct_with(&self, username: &str) -> Option<RoomSummary> {
        self.rooms.with(|rooms| {
            rooms
                .iter()
                .find(|room| room.peer.as_ref().is_some_and(|peer| peer.username.eq_ignore_ascii_case(username)))
                .cloned()
        })
    }

    /// Total unread messages across all conversations (for the page title).
    pub fn total_unread(&self) -> i64 {
        self.rooms.with(|rooms| rooms.iter().map(RoomSummary::unread).sum())
    }

    /// Whether the peer in a direct conversation has received / read message `seq`.
    pub fn progress(&self, room_id: RoomId, peer_id: UserId, seq: Seq) -> Progress {
        self.receipts.with(|receipts| match receipts.get(&room_id).and_then(|r| r.get(&peer_id)) {
            Some(peer) if peer.read_seq >= seq => Progress::Read,
            Some(peer) if peer.delivered_seq >= seq => Progress::Delivered,
            _ => Progress::Stored,
        })
    }

    /// The members other than `sender` who have read message `seq` of a room.
    pub fn seen_by(&self, room_id: RoomId, sender: UserId, seq: Seq) -> Vec<UserRef> {
        self.receipts.with(|receipts| {
            receipts
                .get(&room_id)
                .map(|members| {
                    let mut readers: Vec<UserRef> = members
                        .values()
                        .filter(|m| m.user.id != sender && m.read_seq >= seq)
                        .map(|m| m.user.clone())
                        .collect();
                    readers.sort_by_cached_key(|u| crate::text::lowercase(&u.display_name));
                    readers
                })
                .unwrap_or_default()
        })
    }

    /// Who else is typing in a room now.
    pub fn typing_in(&self, room_id: RoomId) -> Vec<UserRef> {
        let now = platform::now_ms();
        self.typing.with(|typing| {
            typing
                .get(&room_id)
                .map(|users| users.iter().filter(|(_, until)| *until > now).map(|(user, _)| user.clone()).collect())
                .unwrap_or_default()
        })
    }

    // ----- requests -------------------------------------------------------------

    fn request(&self, purpose: Purpose, build: impl FnOnce(RequestId) -> ClientMsg) {
        let id = self.next_request.get_value();
        self.next_request.set_value(id + 1);
        if purpose.is_silent() {
            // Success brings no reply to clear an entry, so these are kept apart and
            // only the latest few remembered.
            self.silent_requests.update_value(|silent| {
                if silent.len() == SILENT_REMEMBERED {
                    silent.pop_front();
                }
                silent.push_back((id, purpose));
            });
        } else {
            self.requests.update_value(|requests| {
                requests.insert(id, purpose);
            });
        }
        self.transmit(build(id));
    }

    /// Hands a frame to the socket; dropped while offline. Everything that matters is
    /// kept elsewhere until it is known to have arrived: messages in the outbox,
    /// receipts in their batch, and requests are asked again after a reconnect.
    fn transmit(&self, msg: ClientMsg) {
        self.link.with_value(|link| {
            if let Some(link) = link {
                let _ = link.unbounded_send(msg);
            }
        });
    }

    /// Whether a socket is open to hand frames to.
    fn connected(&self) -> bool {
        self.link.with_value(|link| link.as_ref().is_some_and(|link| !link.is_closed()))
    }

    /// Loads the newest page of a room unless it is already loaded. Live messages that
    /// arrive before the page are held in the timeline and merged with it.
    pub fn open_room(&self, room_id: RoomId) {
        let loaded = self.timelines.with_untracked(|t| t.get(&room_id).is_some_and(|t| t.loaded));
        if !loaded {
            self.timelines.update_untracked(|timelines| {
                timelines.entry(room_id).or_default();
            });
            self.request(Purpose::History { room_id, before_seq: None }, |id| ClientMsg::History { id, room_id, before_seq: None });
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
            self.request(Purpose::History { room_id, before_seq: before }, |id| ClientMsg::History { id, room_id, before_seq: before });
        }
    }

    /// Asks for what a room missed after `after_seq` (more pages follow while needed).
    fn catch_up(&self, room_id: RoomId, after_seq: Seq) {
        self.request(Purpose::Catchup { room_id, after_seq }, |id| ClientMsg::Catchup { id, room_id, after_seq });
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

    pub fn find_users(&self, query: String) {
        self.request(Purpose::Other, |id| ClientMsg::FindUsers { id, query });
    }

    /// Opens the direct conversation with a user and goes there.
    pub fn open_direct(&self, user_id: UserId) {
        self.request(Purpose::Navigate, |id| ClientMsg::OpenDirect { id, user_id });
    }

    /// Called on each keystroke in the composer; tells the room at most every 3 s.
    pub fn typing_in_room(&self, room_id: RoomId) {
        let now = platform::now_ms();
        let due = self.typing_sent_at.with_value(|sent| sent.get(&room_id).is_none_or(|at| now - at >= TYPING_EVERY_MS));
        if due {
            self.typing_sent_at.update_value(|sent| {
                sent.insert(room_id, now);
            });
            self.request(Purpose::Typing, |id| ClientMsg::Typing { id, room_id });
        }
    }

    /// What was typed in a conversation and not sent yet.
    pub fn draft(&self, room_id: RoomId) -> String {
        self.drafts.with_value(|drafts| drafts.get(&room_id).cloned().unwrap_or_default())
    }

    pub fn set_draft(&self, room_id: RoomId, text: String) {
        self.drafts.update_value(|drafts| {
            if text.is_empty() {
                drafts.remove(&room_id);
            } else {
                drafts.insert(room_id, text);
            }
        });
    }

    /// Asks the browser for permission to show notifications (from a click).
    pub fn ask_notification_permission(&self) {
        platform::ask_notification_permission(*self);
    }
}

impl Default for ChatClient {
    fn default() -> Self {
        Self::new()
    }
}
