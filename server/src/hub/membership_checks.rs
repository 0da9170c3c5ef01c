//! Joins and leaves made on other nodes, waiting to be checked against the database.
//!
//! Two nodes can hear one person's join and leave in opposite orders (a leave in a tab
//! on one node and a join in a tab on another, each stored before the other node heard
//! of the first), so a node does not follow another's change as it arrives. It notes
//! the person and room here, and `Chat::run_membership_checks` reads the membership
//! back from the database under the person's lock. A pair already waiting is not noted
//! twice: one read after the latest change settles them all, so the queue holds at most
//! one entry per person and room however many changes arrive while the database is slow.

use std::{
    collections::{hash_map::Entry, HashMap, VecDeque},
    sync::Mutex,
};

use app::protocol::{RoomId, Seq, UserId};
use tokio::sync::Notify;

/// Whose membership of which room: what a check is about, and what one waiting is
/// merged by.
pub type MembershipKey = (UserId, RoomId);

/// A person's membership of a room that may have changed elsewhere. No more than
/// that, since what is checked is the database, not what was heard; but for a join,
/// the room's newest message at the join (`joined_after`, the earliest of the joins
/// merged; a join's own notice is in the summary its tabs are told): the messages after it went out before this node's sockets heard the room,
/// and the check sends them the newest of those (a direct conversation's first
/// message, typically, which should reach the other person's tabs as it does the
/// ones on the node where it was opened).
///
/// `tell_every_socket`: tell each of the person's sockets here where they stand, not
/// only those that hear the room otherwise (a join made here could not read the room
/// to tell its tabs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipCheck {
    pub user_id: UserId,
    pub room_id: RoomId,
    pub joined_after: Option<Seq>,
    pub tell_every_socket: bool,
}

impl MembershipCheck {
    /// A check with nothing known of a join.
    pub fn of(user_id: UserId, room_id: RoomId) -> Self {
        MembershipCheck { user_id, room_id, joined_after: None, tell_every_socket: false }
    }

    /// A check after a join made on another node, whose room's newest message at the
    /// join is `through` (if the node said).
    pub fn joined(user_id: UserId, room_id: RoomId, through: Option<Seq>) -> Self {
        MembershipCheck { joined_after: through, ..Self::of(user_id, room_id) }
    }

    pub fn key(&self) -> MembershipKey {
        (self.user_id, self.room_id)
    }
}

/// The checks waiting, oldest first, each person and room once.
#[derive(Default)]
pub struct PendingChecks {
    waiting: Mutex<Waiting>,
    added: Notify,
}

#[derive(Default)]
struct Waiting {
    order: VecDeque<MembershipKey>,
    noted: HashMap<MembershipKey, Noted>,
}

/// What a waiting check carries: see [`MembershipCheck`].
#[derive(Clone, Copy)]
struct Noted {
    joined_after: Option<Seq>,
    tell_every_socket: bool,
}

impl PendingChecks {
    /// Notes a check, or merges it into the one of the same person and room waiting:
    /// from the earliest join heard, unless a leave was heard since (`after_a_leave`):
    /// messages from before a leave are not sent as new after the next join.
    pub fn add(&self, check: MembershipCheck, after_a_leave: bool) {
        let mut waiting = self.lock();
        let incoming = Noted { joined_after: check.joined_after, tell_every_socket: check.tell_every_socket };
        match waiting.noted.entry(check.key()) {
            Entry::Occupied(mut noted) => {
                let before = *noted.get();
                let joined_after = match (before.joined_after, incoming.joined_after) {
                    _ if after_a_leave => None,
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                noted.insert(Noted { joined_after, tell_every_socket: before.tell_every_socket || incoming.tell_every_socket });
            }
            Entry::Vacant(noted) => {
                noted.insert(incoming);
                waiting.order.push_back(check.key());
                drop(waiting);
                self.added.notify_one();
            }
        }
    }

    /// The oldest check waiting, once there is one. Taken off the list before it runs,
    /// so a change heard while it reads the database is checked again after it.
    pub async fn next(&self) -> MembershipCheck {
        loop {
            if let Some(check) = self.take() {
                return check;
            }
            // A check added since `take` left a permit: this returns at once.
            self.added.notified().await;
        }
    }

    fn take(&self) -> Option<MembershipCheck> {
        let mut waiting = self.lock();
        let (user_id, room_id) = waiting.order.pop_front()?;
        let noted = waiting.noted.remove(&(user_id, room_id))?;
        Some(MembershipCheck { user_id, room_id, joined_after: noted.joined_after, tell_every_socket: noted.tell_every_socket })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().order.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Plain collections, consistent between any two statements.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn checks_come_out_oldest_first_and_each_once_while_waiting() {
        let pending = PendingChecks::default();
        let joined = |user_id, room_id, after| MembershipCheck::joined(user_id, room_id, Some(after));
        pending.add(joined(1, 10, 7), false);
        pending.add(MembershipCheck::of(2, 10), false);
        pending.add(MembershipCheck::of(1, 10), false);
        pending.add(joined(1, 10, 5), false);
        pending.add(joined(1, 10, 6), false);
        assert_eq!(pending.len(), 2, "a check already waiting is not noted twice");
        assert_eq!(pending.next().await, joined(1, 10, 5), "merged, from the earliest join");
        // Taken, so a later change is checked again.
        pending.add(MembershipCheck::of(1, 10), false);
        assert_eq!(pending.next().await, MembershipCheck::of(2, 10));
        assert_eq!(pending.next().await, MembershipCheck::of(1, 10));
        assert_eq!(pending.len(), 0);

        // A leave forgets the join before it; one asking to tell every socket is kept.
        pending.add(joined(3, 10, 5), false);
        pending.add(MembershipCheck { tell_every_socket: true, ..MembershipCheck::of(3, 10) }, true);
        pending.add(joined(3, 10, 50), false);
        assert_eq!(pending.next().await, MembershipCheck { tell_every_socket: true, ..joined(3, 10, 50) });
    }

    #[tokio::test]
    async fn a_check_added_later_wakes_the_one_waiting() {
        let pending = std::sync::Arc::new(PendingChecks::default());
        let waiter = tokio::spawn({
            let pending = pending.clone();
            async move { pending.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending.add(MembershipCheck::of(3, 7), false);
        let check = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(check, MembershipCheck::of(3, 7));
    }
}
