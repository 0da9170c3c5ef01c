//! This user's own delivered and read positions: moved forward locally at once (so
//! badges clear without waiting), gathered into batches, and sent when connected.
//! Positions waiting while the socket is down are kept and go out after the reconnect;
//! so do positions sent just before a drop, since the greeting's older positions are
//! compared with the ones held here (see `greeted`).

use std::collections::HashMap;

use leptos::prelude::*;

use super::{platform, ChatClient, Purpose};
use crate::protocol::{ClientMsg, RoomId, Seq};

/// Receipts are gathered this long and sent together (a burst of messages is one
/// receipt, not hundreds; each costs the server a write).
const RECEIPT_BATCH_MS: u32 = 500;

impl ChatClient {
    /// Everything up to `seq` has been on screen: the room is read that far.
    pub fn mark_read(&self, room_id: RoomId, seq: Seq) {
        let ahead = self.rooms.with_untracked(|rooms| rooms.iter().any(|r| r.id == room_id && r.read_seq < seq));
        if ahead {
            self.set_own_read(room_id, seq);
            self.queue_receipt(room_id, None, Some(seq));
        }
    }

    /// Records the user's own read position locally (the server is told separately).
    pub(super) fn set_own_read(&self, room_id: RoomId, seq: Seq) {
        self.rooms.update(|rooms| {
            if let Some(room) = rooms.iter_mut().find(|r| r.id == room_id && r.read_seq < seq) {
                room.read_seq = seq;
                room.unread_seqs.retain(|unread| *unread > seq);
                room.mention_seqs.retain(|m| *m > seq);
            }
        });
    }

    pub(super) fn queue_receipt(&self, room_id: RoomId, delivered: Option<Seq>, read: Option<Seq>) {
        let mut first = false;
        self.unsent_receipts.update_value(|unsent| {
            first = unsent.is_empty();
            let entry = unsent.entry(room_id).or_default();
            entry.0 = entry.0.max(delivered);
            entry.1 = entry.1.max(read);
        });
        if first {
            let chat = *self;
            platform::after(RECEIPT_BATCH_MS, move || chat.flush_receipts());
        }
    }

    /// Sends the gathered receipts, or keeps them for the next connection.
    pub(super) fn flush_receipts(&self) {
        if !self.connected() {
            return;
        }
        let mut unsent = HashMap::new();
        self.unsent_receipts.update_value(|pending| std::mem::swap(pending, &mut unsent));
        for (room_id, (delivered_seq, read_seq)) in unsent {
            let purpose = Purpose::Receipt { room_id, delivered: delivered_seq, read: read_seq };
            self.request(purpose, |id| ClientMsg::Receipt { id, room_id, delivered_seq, read_seq });
        }
    }
}
