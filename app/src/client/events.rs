//! Applying what the server says to the model.

use std::collections::HashMap;

use leptos::prelude::*;

use super::{outbox::Attempt, platform, ChatClient, ConnState, Purpose, NOTICES_FETCHED, TYPING_SHOWN_MS};
use crate::{
    protocol::{
        ChatMessage, ClientMsg, ErrorCode, Limits, MemberReceipt, MessageKind, RequestId, RoomId, RoomKind, RoomSummary, Seq, ServerMsg, UserRef,
        UNREAD_REPORTED,
    },
    text::mentions,
};

impl ChatClient {
    /// Applies one frame from the server.
    pub fn apply(&self, msg: ServerMsg) {
        match msg {
            ServerMsg::Hello { me, rooms, default_room, limits, .. } => self.greeted(me, rooms, default_room, limits),
            ServerMsg::Pong { id } => {
                self.forget(id);
            }
            ServerMsg::Error { id, code, message, retry_after_ms } => self.refused(id, code, message, retry_after_ms),
            ServerMsg::Rooms { id, rooms } => {
                self.forget(id);
                self.directory.set(Some(rooms));
            }
            ServerMsg::Users { id, users } => {
                self.forget(id);
                self.found_users.set(Some(users));
            }
            ServerMsg::RoomJoined { id, room } => self.joined(id, room),
            ServerMsg::RoomLeft { id, room_id } => self.left(id, room_id),
            ServerMsg::Sent { id, message } => {
                self.forget(id);
                self.arrived(message);
            }
            ServerMsg::Message { message } => self.arrived(message),
            ServerMsg::History { id, room_id, messages, has_more, receipts } => {
                self.forget(id);
                self.merge_receipts(room_id, receipts);
                let mut hole_after = None;
                self.timelines.update(|timelines| {
                    let timeline = timelines.entry(room_id).or_default();
                    let older = timeline.loading_older
                        && messages.last().zip(timeline.first_seq()).is_some_and(|(last, first)| last.seq < first);
                    if older {
                        timeline.merge_older(messages, has_more);
                    } else {
                        hole_after = timeline.merge_latest(messages, has_more);
                    }
                });
                if let Some(after_seq) = hole_after {
                    // Live messages held from before the page leave a hole after it.
                    self.catch_up(room_id, after_seq);
                }
            }
            ServerMsg::Catchup { id, room_id, messages, has_more, receipts } => {
                if let Some(Purpose::Notify { seq }) = self.forget(id) {
                    return self.fetched_to_notify(room_id, seq, messages);
                }
                self.merge_receipts(room_id, receipts);
                let last = messages.last().map(|m| m.seq);
                for message in messages {
                    self.arrived(message);
                }
                if let (true, Some(last)) = (has_more, last) {
                    self.catch_up(room_id, last);
                }
            }
            ServerMsg::Receipt { room_id, user, delivered_seq, read_seq } => {
                let user_id = user.id;
                self.receipts.update(|all| {
                    // Only rooms whose positions were loaded with their history; a
                    // member new since then is added.
                    if let Some(members) = all.get_mut(&room_id) {
                        let member = members.entry(user_id).or_insert(MemberReceipt { user, delivered_seq: 0, read_seq: 0 });
                        member.delivered_seq = member.delivered_seq.max(delivered_seq);
                        member.read_seq = member.read_seq.max(read_seq);
                    }
                });
                // One's own position moving (in another tab) clears unread counts here.
                if self.is_me(user_id) {
                    self.set_own_read(room_id, read_seq);
                }
            }
            ServerMsg::Typing { room_id, users } => users.into_iter().for_each(|user| self.someone_typing(room_id, user)),
            ServerMsg::Online { id, room_id, users, total, has_more } => {
                let more = matches!(self.forget(id), Some(Purpose::Online { more: true }));
                self.online_page(room_id, more, users, total, has_more);
            }
            ServerMsg::Presence { room_id, total, detailed, came, went } => self.presence_changed(room_id, total, detailed, came, went),
        }
    }

    /// Members' positions that came with history or catch-up; they only move forward.
    fn merge_receipts(&self, room_id: RoomId, receipts: Vec<MemberReceipt>) {
        if receipts.is_empty() {
            return;
        }
        self.receipts.update(|all| {
            let members = all.entry(room_id).or_default();
            for receipt in receipts {
                let member = members.entry(receipt.user.id).or_insert(MemberReceipt { delivered_seq: 0, read_seq: 0, ..receipt.clone() });
                member.delivered_seq = member.delivered_seq.max(receipt.delivered_seq);
                member.read_seq = member.read_seq.max(receipt.read_seq);
            }
        });
    }

    fn forget(&self, id: RequestId) -> Option<Purpose> {
        let mut purpose = None;
        self.requests.update_value(|requests| purpose = requests.remove(&id));
        if purpose.is_none() {
            self.silent_requests.update_value(|silent| {
                if let Some(at) = silent.iter().position(|(silent_id, _)| *silent_id == id) {
                    purpose = silent.remove(at).map(|(_, purpose)| purpose);
                }
            });
        }
        purpose
    }

    fn is_me(&self, user_id: i64) -> bool {
        self.me.with_untracked(|me| me.as_ref().is_some_and(|me| me.id == user_id))
    }

    fn greeted(&self, me: UserRef, mut rooms: Vec<RoomSummary>, default_room: Option<RoomId>, limits: Limits) {
        // Requests of the previous connection will never be answered.
        self.requests.set_value(HashMap::new());
        self.silent_requests.set_value(Default::default());
        let changed_user = self.me.with_untracked(|old| old.as_ref().is_some_and(|old| old.id != me.id));
        if changed_user {
            self.reset();
        }
        let reconnected = self.me.with_untracked(Option::is_some);
        // Read positions moved here but not yet stored (sent just before the socket
        // dropped, or while it was down) stay, and go to the server again: the
        // greeting's older ones must not bring unread badges back.
        let held_reads: HashMap<RoomId, i64> = self.rooms.with_untracked(|held| held.iter().map(|r| (r.id, r.read_seq)).collect());
        for room in &mut rooms {
            if let Some(&held) = held_reads.get(&room.id).filter(|held| **held > room.read_seq) {
                room.read_seq = held;
                room.unread_seqs.retain(|seq| *seq > held);
                room.mention_seqs.retain(|seq| *seq > held);
                self.queue_receipt(room.id, None, Some(held));
            }
        }
        self.me.set(Some(me));
        self.limits.set(limits);
        self.default_room.set(default_room);
        let joined: Vec<RoomId> = rooms.iter().map(|r| r.id).collect();
        let direct: Vec<RoomId> = rooms.iter().filter(|r| r.kind == RoomKind::Direct).map(|r| r.id).collect();
        if reconnected {
            self.fetch_what_to_notify(&rooms);
        } else {
            // What came before this page did shows as counts and is never notified.
            self.notified_through.set_value(rooms.iter().map(|r| (r.id, r.last_seq)).collect());
        }
        self.rooms.set(rooms);
        // Conversations left while away are dropped; the others catch up on exactly
        // what they missed, from the last message held, in pages until complete.
        self.timelines.update(|timelines| {
            timelines.retain(|room, _| joined.contains(room));
            timelines.values_mut().for_each(|t| t.loading_older = false);
        });
        let timelines_held: Vec<(RoomId, Option<i64>)> = self
            .timelines
            .with_untracked(|t| t.iter().map(|(room, t)| (*room, t.last_seq().filter(|_| t.loaded))).collect());
        for (room_id, last) in timelines_held {
            match last {
                Some(last) => {
                    if direct.contains(&room_id) {
                        // Everything held has reached this device.
                        self.queue_receipt(room_id, Some(last), None);
                    }
                    self.catch_up(room_id, last);
                }
                None => self.request(Purpose::History { room_id, before_seq: None }, |id| {
                    ClientMsg::History { id, room_id, before_seq: None }
                }),
            }
        }
        self.conn.set(ConnState::Online);
        // Unacknowledged messages go out again; the server drops any it already has.
        self.resend_outbox();
        self.flush_receipts();
    }

    /// What came while the page was away reaches conversations it holds no timeline for
    /// only as counts in the greeting. The newest message there that would notify (a
    /// direct message, a mention) and was not told of yet is fetched so that it does: in
    /// a few conversations at most, direct ones first, and only where notifications are
    /// allowed. (Conversations with a timeline catch up on everything anyway.)
    fn fetch_what_to_notify(&self, rooms: &[RoomSummary]) {
        if !platform::notifications_allowed() {
            return;
        }
        let with_timeline: Vec<RoomId> = self.timelines.with_untracked(|t| t.keys().copied().collect());
        let mut untold: Vec<(bool, RoomId, Seq)> = self.notified_through.with_value(|told| {
            rooms
                .iter()
                .filter(|room| !with_timeline.contains(&room.id))
                .filter_map(|room| {
                    let newest = match room.kind {
                        RoomKind::Direct => room.unread_seqs.last().copied(),
                        RoomKind::Public => room.mention_seqs.last().copied(),
                    }?;
                    let told_through = told.get(&room.id).copied().unwrap_or(0);
                    (newest > told_through).then_some((room.kind == RoomKind::Public, room.id, newest))
                })
                .collect()
        });
        untold.sort_unstable();
        for (n, (_, room_id, seq)) in untold.into_iter().enumerate() {
            if n < NOTICES_FETCHED {
                self.request(Purpose::Notify { seq }, |id| ClientMsg::Catchup { id, room_id, after_seq: seq - 1 });
            } else {
                // Not told of now, and not hours later at some other reconnect either.
                self.notified_through.update_value(|told| {
                    told.insert(room_id, seq);
                });
            }
        }
    }

    /// The reply to [`Self::fetch_what_to_notify`]: only the message asked for, and only
    /// while the page still holds no timeline there (one opened since has it from its
    /// newest page, on screen).
    fn fetched_to_notify(&self, room_id: RoomId, seq: Seq, messages: Vec<ChatMessage>) {
        let without_timeline = !self.timelines.with_untracked(|t| t.contains_key(&room_id));
        if let Some(message) = messages.into_iter().find(|m| m.seq == seq).filter(|_| without_timeline) {
            self.arrived(message);
        }
    }

    fn joined(&self, id: Option<RequestId>, room: RoomSummary) {
        let navigate = id.and_then(|id| self.forget(id)).is_some_and(|p| matches!(p, Purpose::Navigate));
        if navigate {
            self.goto.set(Some(room_path(&room)));
        }
        self.directory.update(|dir| {
            if let Some(entry) = dir.as_mut().and_then(|dir| dir.iter_mut().find(|r| r.id == room.id)) {
                *entry = room.clone();
            }
        });
        self.rooms.update(|rooms| {
            rooms.retain(|r| r.id != room.id);
            rooms.push(room);
            rooms.sort_by_cached_key(|r| (r.kind == RoomKind::Direct, crate::text::lowercase(&sidebar_name(r))));
        });
    }

    fn left(&self, id: Option<RequestId>, room_id: RoomId) {
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

    /// A stored message arrived: an acknowledgement, a live event or a catch-up page.
    fn arrived(&self, message: ChatMessage) {
        let from_me = self.is_me(message.sender.id);
        if let (true, Some(client_id)) = (from_me, &message.client_id) {
            self.outbox.update(|outbox| outbox.retain(|o| &o.client_id != client_id));
            self.send_next_paced();
        }
        let room_id = message.room_id;
        let seq = message.seq;
        let my_name = self.me.with_untracked(|me| me.as_ref().map(|me| me.username.clone())).unwrap_or_default();
        let mentions_me = !from_me && message.kind == MessageKind::Text && mentions(&message.text, &my_name);
        let is_text = message.kind == MessageKind::Text;
        let mut kind = None;
        let mut unread = false;
        self.rooms.update(|rooms| {
            if let Some(room) = rooms.iter_mut().find(|r| r.id == room_id) {
                room.last_seq = room.last_seq.max(seq);
                if from_me {
                    room.read_seq = room.read_seq.max(seq);
                }
                // Only what people write counts as unread, never join or leave notices.
                unread = is_text && !from_me && seq > room.read_seq;
                if unread {
                    if let Err(at) = room.unread_seqs.binary_search(&seq) {
                        room.unread_seqs.insert(at, seq);
                    }
                    if room.unread_seqs.len() > UNREAD_REPORTED {
                        room.unread_seqs.remove(0);
                    }
                }
                if mentions_me && seq > room.read_seq && !room.mention_seqs.contains(&seq) {
                    room.mention_seqs.push(seq);
                }
                kind = Some((room.kind, sidebar_name(room), room_path(room)));
            }
        });
        // Their message ends their typing notice.
        self.typing.update(|typing| {
            if let Some(users) = typing.get_mut(&room_id) {
                users.retain(|(user, _)| user.id != message.sender.id);
            }
        });
        let mut gap_after = None;
        self.timelines.update(|timelines| {
            // Conversations opened here keep live messages, also while their first page
            // is on its way (it is merged with them); the others load their newest page
            // when opened.
            if let Some(timeline) = timelines.get_mut(&room_id) {
                if let Some(last) = timeline.last_seq().filter(|last| timeline.loaded && seq > last + 1) {
                    gap_after = Some(last);
                }
                timeline.insert(message.clone());
            }
        });
        if let Some(last) = gap_after {
            // Something was missed (another server published first): fetch it.
            self.catch_up(room_id, last);
        }
        if !from_me {
            if let Some((room_kind, room_name, path)) = kind {
                // Delivery is shown for direct messages only (✓✓); in a room, telling
                // the server about every message would cost a write per member.
                if is_text && room_kind == RoomKind::Direct {
                    self.queue_receipt(room_id, Some(seq), None);
                }
                // Not for what was read already on another device, as when this one
                // catches up after a while away.
                if unread && (room_kind == RoomKind::Direct || mentions_me) && self.first_notice(room_id, seq) {
                    let title = match room_kind {
                        RoomKind::Direct => message.sender.display_name.clone(),
                        RoomKind::Public => format!("{} in #{room_name}", message.sender.display_name),
                    };
                    platform::notify(&title, &message.text, &path);
                }
            }
        }
    }

    /// Whether `seq` is newer than anything told of in its conversation, marking it
    /// told. A message can reach the page twice (fetched to fill a gap, then offered
    /// live as a retry's original the room never heard), or live after the
    /// conversation's newest page already brought it: either way it notifies once.
    /// One that arrives after a newer one (two servers publishing out of order) does
    /// not notify: notifications replace each other (one tag), so the newer one stays.
    fn first_notice(&self, room_id: RoomId, seq: Seq) -> bool {
        let mut first = false;
        self.notified_through.update_value(|through| {
            let mark = through.entry(room_id).or_default();
            first = seq > *mark;
            *mark = (*mark).max(seq);
        });
        first
    }

    fn someone_typing(&self, room_id: RoomId, user: UserRef) {
        if self.is_me(user.id) {
            return;
        }
        let until = platform::now_ms() + TYPING_SHOWN_MS;
        self.typing.update(|typing| {
            let users = typing.entry(room_id).or_default();
            users.retain(|(u, _)| u.id != user.id);
            users.push((user, until));
        });
        // Re-evaluate when the notice runs out, dropping every expired one.
        let chat = *self;
        platform::after(TYPING_SHOWN_MS as u32 + 50, move || {
            let now = platform::now_ms();
            chat.typing.try_update(|typing| typing.values_mut().for_each(|users| users.retain(|(_, until)| *until > now)));
        });
    }

    fn refused(&self, id: Option<RequestId>, code: ErrorCode, message: String, retry_after_ms: Option<u64>) {
        let rate_limited = code == ErrorCode::RateLimited;
        let chat = *self;
        let later = |run: Box<dyn FnOnce()>| {
            let wait = retry_after_ms.unwrap_or(1_000).clamp(100, 60_000) as u32;
            platform::after(wait, run);
        };
        match id.and_then(|id| self.forget(id)) {
            // Too fast: the message stays pending, and messages go one at a time in
            // the order written, from when allowed.
            Some(Purpose::Send { client_id }) if rate_limited => {
                self.sent_too_fast(&client_id, retry_after_ms.unwrap_or(1_000).clamp(100, 60_000) as u32)
            }
            // The server failed; it may manage next time, while tries remain.
            Some(Purpose::Send { client_id }) if code == ErrorCode::Internal => self.send_later(client_id, 2_000, Attempt::Counted),
            Some(Purpose::Send { client_id }) => self.send_refused(&client_id, message),
            Some(Purpose::History { room_id, before_seq }) => {
                // Whatever went wrong, the spinner stops, so scrolling can ask again.
                self.timelines.update(|timelines| {
                    if let Some(timeline) = timelines.get_mut(&room_id) {
                        timeline.loading_older = false;
                    }
                });
                if rate_limited {
                    later(Box::new(move || match before_seq {
                        None => chat.open_room(room_id),
                        Some(_) => chat.load_older(room_id),
                    }));
                } else {
                    self.alert.set(Some(message));
                }
            }
            // Catching up must finish, or messages stay missing: ask again when allowed.
            Some(Purpose::Catchup { room_id, after_seq }) if rate_limited => {
                later(Box::new(move || chat.catch_up(room_id, after_seq)))
            }
            Some(Purpose::Receipt { room_id, delivered, read }) if rate_limited => {
                later(Box::new(move || chat.queue_receipt(room_id, delivered, read)))
            }
            // A receipt, typing notice or online list for a conversation just left:
            // nothing to tell.
            Some(Purpose::Receipt { .. } | Purpose::Typing | Purpose::Online { .. } | Purpose::Notify { .. }) => {}
            _ => {
                if code != ErrorCode::BadRequest || id.is_some() {
                    self.alert.set(Some(message));
                }
            }
        }
    }

    /// Forgets everything about the previous user: at a greeting for someone else, and
    /// as a session ends, so that nothing of this person (their rooms, their messages,
    /// what they had not sent yet, their notifications) shows to whoever logs in next on
    /// this page.
    pub(super) fn reset(&self) {
        self.me.set(None);
        self.rooms.set(Vec::new());
        self.directory.set(None);
        self.found_users.set(None);
        self.timelines.set(HashMap::new());
        self.receipts.set(HashMap::new());
        self.presence.set(HashMap::new());
        self.typing.set(HashMap::new());
        self.outbox.set(Vec::new());
        self.pacing.update_value(super::pacing::Pacing::restart);
        self.unsent_receipts.set_value(HashMap::new());
        self.drafts.set_value(HashMap::new());
        self.notified_through.set_value(HashMap::new());
        self.goto.set(None);
        platform::close_notifications();
    }
}

/// Where a conversation lives: `/r/<name>` for rooms, `/dm/<username>` for people.
pub fn room_path(room: &RoomSummary) -> String {
    match &room.peer {
        Some(peer) if room.kind == RoomKind::Direct => format!("/dm/{}", peer.username),
        _ => format!("/r/{}", room.name),
    }
}

/// What a conversation is called in the sidebar: `#name`'s name, or the other person.
pub fn sidebar_name(room: &RoomSummary) -> String {
    match &room.peer {
        Some(peer) if room.kind == RoomKind::Direct => peer.display_name.clone(),
        _ => room.name.clone(),
    }
}
