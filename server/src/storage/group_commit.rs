//! Group commit for posts. Each commit waits for the disk (SQLite's full sync, or
//! PostgreSQL's WAL flush), so committing every post on its own caps a node at one
//! post per sync, and posts queue behind each other's syncs. Instead, posts that
//! arrive while a commit is under way wait in a queue and the next commit takes them
//! all: one transaction and one sync for many posts, each still answered only after
//! the commit that stored it. A post that fails (not a member, a reused client id)
//! rolls back to its own savepoint and leaves the others in its batch alone.

use app::protocol::UserRef;
use tokio::sync::{mpsc, oneshot};

use super::{Posted, StoreResult};

/// Posts in one transaction at most, so one commit never holds the write lock long.
/// Each post's savepoint is a subtransaction on PostgreSQL, which caches 64 of them per
/// transaction; past that every other session's visibility checks get slower until
/// the commit.
pub(crate) const MAX_POSTS_PER_COMMIT: usize = 64;
/// Posts that may wait for a commit before posting waits to join the queue.
pub(crate) const POSTS_WAITING: usize = 4_096;

/// One post waiting for a commit, and where its outcome goes.
pub(crate) struct PostJob {
    pub room_id: i64,
    pub sender: UserRef,
    pub client_id: String,
    pub text: String,
    pub now: i64,
    pub reply: oneshot::Sender<StoreResult<Posted>>,
}

pub(crate) type PostQueue = mpsc::Sender<PostJob>;

/// The next batch: the first post to arrive and every post already waiting behind it,
/// ordered by room (stably, so each room's posts keep their order). Every commit then
/// takes room locks in the same order, so two nodes' commits on PostgreSQL do not wait
/// on each other in a circle over rooms. (One circle remains possible: the same
/// client id reused in two rooms on two nodes at once. PostgreSQL then fails one of the
/// batches, and its posts are answered with an error, not stored.) `None` once the
/// store is gone.
pub(crate) async fn next_batch(jobs: &mut mpsc::Receiver<PostJob>) -> Option<Vec<PostJob>> {
    let first = jobs.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_POSTS_PER_COMMIT {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch.sort_by_key(|job| job.room_id);
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(room_id: i64, client_id: &str) -> PostJob {
        let sender = UserRef {
            id: 1,
            username: "ana".into(),
            display_name: "Ana".into(),
        };
        PostJob {
            room_id,
            sender,
            client_id: client_id.into(),
            text: "Ótimo!".into(),
            now: 0,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_everything_waiting_in_room_order_keeping_each_rooms_order() {
        let (queue, mut jobs) = mpsc::channel(16);
        for (room, id) in [(3, "a"), (1, "b"), (3, "c"), (2, "d"), (1, "e")] {
            queue.send(job(room, id)).await.unwrap();
        }
        let batch = next_batch(&mut jobs).await.unwrap();
        let order: Vec<(i64, &str)> = batch
            .iter()
            .map(|job| (job.room_id, job.client_id.as_str()))
            .collect();
        assert_eq!(order, [(1, "b"), (1, "e"), (2, "d"), (3, "a"), (3, "c")]);
        drop(queue);
        assert!(next_batch(&mut jobs).await.is_none());
    }

    #[tokio::test]
    async fn a_batch_is_bounded() {
        let (queue, mut jobs) = mpsc::channel(MAX_POSTS_PER_COMMIT + 5);
        for n in 0..MAX_POSTS_PER_COMMIT + 5 {
            queue.send(job(1, &n.to_string())).await.unwrap();
        }
        assert_eq!(
            next_batch(&mut jobs).await.unwrap().len(),
            MAX_POSTS_PER_COMMIT
        );
        assert_eq!(next_batch(&mut jobs).await.unwrap().len(), 5);
    }
}
