//! Messages written here and not yet stored: shown at once as "Sending…", sent now or
//! on reconnect with the same client id (so at most one copy is ever stored), and
//! given up after [`MAX_SEND_ATTEMPTS`] tries without an answer, to be retried or
//! discarded by hand rather than resent forever. Written faster than the server
//! allows, they go one at a time, the refused one first and then the oldest
//! ([`Pacing`]), so they are stored in the order they were written.

use leptos::prelude::*;

use super::{pacing::Pacing, platform, ChatClient, Purpose};
use crate::protocol::{ClientMsg, RoomId};

/// Tries (first send, resends after reconnects, retries after server errors) before a
/// message is shown as not sent.
pub const MAX_SEND_ATTEMPTS: u32 = 4;

/// Messages resent at once after a reconnect, the server's usual allowance; the rest
/// follow one at a time ([`Pacing`]). All at once, a long outbox would be refused
/// a hundred times in a row, and the socket closed for it.
const RESENT_AT_ONCE: usize = 10;

/// A message written here and not yet acknowledged as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub client_id: String,
    pub room_id: RoomId,
    pub text: String,
    /// Why it was not sent, if it was given up; it stays visible until retried or
    /// discarded.
    pub failed: Option<String>,
    /// Times it was handed to a live connection without being acknowledged.
    pub attempts: u32,
}

/// Whether a resend counts against [`MAX_SEND_ATTEMPTS`]. Waiting out a rate limit is
/// not a failure; a resend after a dropped connection or a server error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    Counted,
    Free,
}

impl ChatClient {
    /// Sends a message: it shows at once as pending, and goes out now or on reconnect.
    pub fn send_message(&self, room_id: RoomId, text: String) {
        let item = Outgoing { client_id: platform::new_client_id(), room_id, text, failed: None, attempts: 0 };
        let client_id = item.client_id.clone();
        self.outbox.update(|outbox| outbox.push(item));
        self.typing_sent_at.update_value(|sent| {
            sent.remove(&room_id);
        });
        self.send_in_turn(&client_id);
    }

    /// Sends a message now, or in its turn while paced.
    fn send_in_turn(&self, client_id: &str) {
        if self.pacing.with_value(Pacing::is_on) {
            self.send_next_paced();
        } else {
            self.send_outgoing(client_id, Attempt::Counted);
        }
    }

    /// Sends a message that was given up again, by hand, with a fresh allowance of tries.
    pub fn retry(&self, client_id: &str) {
        self.outbox.update(|outbox| {
            if let Some(item) = outbox.iter_mut().find(|o| o.client_id == client_id) {
                item.failed = None;
                item.attempts = 0;
            }
        });
        self.send_in_turn(client_id);
    }

    pub fn discard(&self, client_id: &str) {
        self.outbox.update(|outbox| outbox.retain(|o| o.client_id != client_id));
        self.send_next_paced();
    }

    /// The server refused `client_id` as sent too fast: from now on messages go one at
    /// a time, the one owed the turn (else the oldest) once `wait_ms` is over ([`Pacing`]).
    pub(super) fn sent_too_fast(&self, client_id: &str, wait_ms: u32) {
        let waiting = self.waiting_to_send();
        let new_wait = self.pacing.try_update_value(|pacing| pacing.refused(client_id, &waiting));
        if let Some(Some(generation)) = new_wait {
            let chat = *self;
            platform::after(wait_ms, move || {
                if chat.pacing.try_update_value(|pacing| pacing.wait_over(generation)) == Some(true) {
                    chat.send_next_paced();
                }
            });
        }
    }

    /// While paced, sends the message whose turn it is, if any ([`Pacing::next`]).
    /// Called whenever the outbox moves on (a message stored, given up, discarded or
    /// added).
    pub(super) fn send_next_paced(&self) {
        if self.pacing.try_with_value(Pacing::is_on) != Some(true) {
            return;
        }
        let waiting = self.waiting_to_send();
        if let Some(Some(next)) = self.pacing.try_update_value(|pacing| pacing.next(&waiting)) {
            self.send_outgoing(&next, Attempt::Free);
        }
    }

    /// Every message still waiting goes out again, in the order written (after a
    /// reconnect: a new allowance), the first [`RESENT_AT_ONCE`] at once.
    pub(super) fn resend_outbox(&self) {
        self.pacing.update_value(Pacing::restart);
        let waiting = self.waiting_to_send();
        let at_once = waiting.len().min(RESENT_AT_ONCE);
        for client_id in &waiting[..at_once] {
            self.send_outgoing(client_id, Attempt::Counted);
        }
        // Paced only after they went: one given up meanwhile sends nothing more now.
        self.pacing.update_value(|pacing| pacing.resent(&waiting, at_once));
    }

    /// The messages not stored and not given up, oldest first.
    fn waiting_to_send(&self) -> Vec<String> {
        self.outbox.with_untracked(|outbox| outbox.iter().filter(|o| o.failed.is_none()).map(|o| o.client_id.clone()).collect())
    }

    /// Hands a waiting message to the connection, if there is one. A counted attempt
    /// beyond the allowance marks the message as not sent instead.
    pub(super) fn send_outgoing(&self, client_id: &str, attempt: Attempt) {
        if !self.connected() {
            // Sent when the connection is back; nothing was tried.
            return;
        }
        let (mut to_send, mut given_up) = (None, false);
        self.outbox.update(|outbox| {
            let Some(item) = outbox.iter_mut().find(|o| o.client_id == client_id && o.failed.is_none()) else { return };
            if attempt == Attempt::Counted {
                if item.attempts >= MAX_SEND_ATTEMPTS {
                    item.failed = Some(format!("no answer from the server after {MAX_SEND_ATTEMPTS} tries"));
                    given_up = true;
                    return;
                }
                item.attempts += 1;
            }
            to_send = Some(item.clone());
        });
        if given_up {
            self.send_next_paced();
        }
        if let Some(item) = to_send {
            self.request(Purpose::Send { client_id: item.client_id.clone() }, |id| ClientMsg::Send {
                id,
                room_id: item.room_id,
                client_id: item.client_id,
                text: item.text,
            });
        }
    }

    /// The server could not take the message now (an internal error): try again a
    /// little later, as long as tries remain.
    pub(super) fn send_later(&self, client_id: String, wait_ms: u32, attempt: Attempt) {
        let chat = *self;
        platform::after(wait_ms, move || {
            // Paced since: it goes in its turn, not beside the one that is on its way.
            if chat.pacing.try_with_value(|pacing| pacing.lets_go_on_its_own(&client_id)) != Some(false) {
                chat.send_outgoing(&client_id, attempt);
            }
        });
    }

    /// The server refused the message for good (it breaks a rule): show why.
    pub(super) fn send_refused(&self, client_id: &str, reason: String) {
        self.outbox.update(|outbox| {
            if let Some(item) = outbox.iter_mut().find(|o| o.client_id == client_id) {
                item.failed = Some(reason);
            }
        });
        self.send_next_paced();
    }
}
