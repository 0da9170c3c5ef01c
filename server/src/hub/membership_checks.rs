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
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use app::protocol::{RoomId, UserId};
use tokio::sync::Notify;

/// A person's membership of a room that may have changed elsewhere: `(user, room)`.
/// No more than that, since what is checked is the database, not what was heard.
pub type MembershipCheck = (UserId, RoomId);

/// The checks waiting, oldest first, each once.
#[derive(Default)]
pub struct PendingChecks {
    waiting: Mutex<Waiting>,
    added: Notify,
}

#[derive(Default)]
struct Waiting {
    order: VecDeque<MembershipCheck>,
    noted: HashSet<MembershipCheck>,
}

impl PendingChecks {
    /// Notes a check, unless the same one is waiting already.
    pub fn add(&self, check: MembershipCheck) {
        let mut waiting = self.lock();
        if waiting.noted.insert(check) {
            waiting.order.push_back(check);
            drop(waiting);
            self.added.notify_one();
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
        let check = waiting.order.pop_front()?;
        waiting.noted.remove(&check);
        Some(check)
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
        pending.add((1, 10));
        pending.add((2, 10));
        pending.add((1, 10));
        assert_eq!(pending.len(), 2, "a check already waiting is not noted twice");
        assert_eq!(pending.next().await, (1, 10));
        // Taken, so a later change is checked again.
        pending.add((1, 10));
        assert_eq!(pending.next().await, (2, 10));
        assert_eq!(pending.next().await, (1, 10));
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
        pending.add((3, 7));
        let check = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(check, (3, 7));
    }
}
