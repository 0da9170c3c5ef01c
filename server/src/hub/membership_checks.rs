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
/// the room's newest message before it (`joined_after`, the earliest of the joins
/// merged): the messages after it went out before this node's sockets heard the room,
/// and the check sends them the newest of those (a direct conversation's first
/// message, typically, which should reach the other person's tabs as it does the
/// ones on the node where it was opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipCheck {
    pub user_id: UserId,
    pub room_id: RoomId,
    pub joined_after: Option<Seq>,
}

impl MembershipCheck {
    /// A check with nothing known of a join.
    pub fn of(user_id: UserId, room_id: RoomId) -> Self {
        MembershipCheck { user_id, room_id, joined_after: None }
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
    noted: HashMap<MembershipKey, Option<Seq>>,
}

impl PendingChecks {
    /// Notes a check, or merges it into the one of the same person and room waiting.
    pub fn add(&self, check: MembershipCheck) {
        let mut waiting = self.lock();
        match waiting.noted.entry(check.key()) {
            Entry::Occupied(mut noted) => {
                let merged = match (*noted.get(), check.joined_after) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                noted.insert(merged);
            }
            Entry::Vacant(noted) => {
                noted.insert(check.joined_after);
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
        let joined_after = waiting.noted.remove(&(user_id, room_id)).flatten();
        Some(MembershipCheck { user_id, room_id, joined_after })
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
        let joined = |user_id, room_id, after| MembershipCheck { user_id, room_id, joined_after: Some(after) };
        pending.add(joined(1, 10, 7));
        pending.add(MembershipCheck::of(2, 10));
        pending.add(MembershipCheck::of(1, 10));
        pending.add(joined(1, 10, 5));
        pending.add(joined(1, 10, 6));
        assert_eq!(pending.len(), 2, "a check already waiting is not noted twice");
        assert_eq!(pending.next().await, joined(1, 10, 5), "merged, from the earliest join");
        // Taken, so a later change is checked again.
        pending.add(MembershipCheck::of(1, 10));
        assert_eq!(pending.next().await, MembershipCheck::of(2, 10));
        assert_eq!(pending.next().await, MembershipCheck::of(1, 10));
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn a_check_added_later_wakes_the_one_waiting() {
        let pending = std::sync::Arc::new(PendingChecks::default());
        let waiter = tokio::spawn({
            let pending = pending.clone();
            async move { pending.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending.add(MembershipCheck::of(3, 7));
        let check = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(check, MembershipCheck::of(3, 7));
    }
}
