//! Messages written here and not yet stored: shown at once as "Sending…", sent now or
//! on reconnect with the same client id (so at most one copy is ever stored), and
//! given up after [`MAX_SEND_ATTEMPTS`] tries without an answer, to be retried or
//! discarded by hand rather than resent forever. Written faster than the server
//! allows, they go one at a time, the refused one first and then the oldest
//! ([`Pacing`]), so they are stored in the order they were written.

use leptos::prelude::*;

use super::{platform, ChatClient, Purpose};
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

/// Sending once the server has said "too fast". Each message refused and retried on
/// its own timer, a later one could take the next allowance before an earlier one (a
/// person's messages were stored out of the order written, seen with ten a second).
/// So after a refusal, messages go one at a time, oldest first: the next when the one
/// before is stored (or given up), the refused one again when the wait the server
/// named is over. Until nothing is waiting, or the connection is new (a new allowance).
#[derive(Debug, Default)]
pub(super) struct Pacing {
    on: bool,
    /// A wait for the server's allowance is running.
    waiting: bool,
    /// The message sent one at a time, not yet answered.
    in_flight: Option<String>,
    /// The first message refused as too fast and not stored yet. The server keeps it
    /// its turn (any other is refused until it comes back), so it goes first when the
    /// wait is over, even before an older one retried by hand meanwhile.
    owed: Option<String>,
    /// Counts waits and restarts: a wait's timer that finds another number is from
    /// before a reconnect or logout, and must not end the wait running now.
    generation: u32,
}

impl Pacing {
    /// Free to send again, and any wait running forgotten.
    pub(super) fn restart(&mut self) {
        *self = Pacing { generation: self.generation.wrapping_add(1), ..Pacing::default() };
    }
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
        if self.pacing.with_value(|pacing| pacing.on) {
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
        let new_wait = self.pacing.try_update_value(|pacing| {
            pacing.on = true;
            // A refusal of a message sent before this one went (its answer slowed by
            // the network) does not make this one's answer any less due.
            if pacing.in_flight.as_deref() == Some(client_id) {
                pacing.in_flight = None;
            }
            pacing.owed = pacing.owed.take().filter(|owed| waiting.contains(owed)).or_else(|| Some(client_id.to_owned()));
            if std::mem::replace(&mut pacing.waiting, true) {
                return None;
            }
            pacing.generation = pacing.generation.wrapping_add(1);
            Some(pacing.generation)
        });
        if let Some(Some(generation)) = new_wait {
            let chat = *self;
            platform::after(wait_ms, move || {
                let ours = chat.pacing.try_update_value(|pacing| {
                    let ours = pacing.generation == generation;
                    if ours {
                        pacing.waiting = false;
                    }
                    ours
                });
                if ours == Some(true) {
                    chat.send_next_paced();
                }
            });
        }
    }

    /// While paced, sends the message owed the turn, else the oldest waiting, unless
    /// one is on its way or the server's wait is running; with none waiting, sending is
    /// free again. Called whenever the outbox moves on (a message stored, given up,
    /// discarded or added).
    pub(super) fn send_next_paced(&self) {
        let Some((true, false, in_flight, owed)) = self.pacing.try_with_value(|p| (p.on, p.waiting, p.in_flight.clone(), p.owed.clone()))
        else {
            return;
        };
        let waiting = self.waiting_to_send();
        if in_flight.is_some_and(|sent| waiting.contains(&sent)) {
            return;
        }
        let owed = owed.filter(|owed| waiting.contains(owed));
        match owed.clone().or_else(|| waiting.into_iter().next()) {
            Some(next) => {
                self.pacing.update_value(|pacing| {
                    pacing.in_flight = Some(next.clone());
                    pacing.owed = owed;
                });
                self.send_outgoing(&next, Attempt::Free);
            }
            None => self.pacing.update_value(Pacing::restart),
        }
    }

    /// Every message still waiting goes out again, in the order written (after a
    /// reconnect: a new allowance), the first [`RESENT_AT_ONCE`] at once.
    pub(super) fn resend_outbox(&self) {
        self.pacing.update_value(Pacing::restart);
        let waiting = self.waiting_to_send();
        for client_id in waiting.iter().take(RESENT_AT_ONCE) {
            self.send_outgoing(client_id, Attempt::Counted);
        }
        if waiting.len() > RESENT_AT_ONCE {
            // Answers come in the order sent: the last of these stored, so are the others.
            let last_at_once = waiting[RESENT_AT_ONCE - 1].clone();
            self.pacing.update_value(|pacing| {
                pacing.on = true;
                pacing.in_flight = Some(last_at_once);
            });
        }
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
            let out_of_turn = chat.pacing.try_with_value(|p| p.on && p.in_flight.as_deref() != Some(client_id.as_str()));
            if out_of_turn != Some(true) {
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
