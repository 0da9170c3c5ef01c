//! Group commit for posts. Each commit waits for the disk (SQLite's full sync, or
//! PostgreSQL's WAL flush), so committing every post on its own caps a node at one
//! post per sync, and posts queue behind each other's syncs. Instead, posts that
//! arrive while a commit is under way wait in a queue and the next commit takes them
//! all: one transaction and one sync for many posts, each still answered only after
//! the commit that stored it. A post that fails (not a member, a reused client id)
//! rolls back to its own savepoint and leaves the others in its batch alone.

use tokio::sync::{mpsc, oneshot};

use super::{AfterCommit, NewPost, Posted, StoreResult};

/// Posts in one transaction at most, so one commit never holds the write lock long.
/// Each post's savepoint is a subtransaction on PostgreSQL, which caches 64 of them per
/// transaction; past that every other session's visibility checks get slower until
/// the commit.
pub(crate) const MAX_POSTS_PER_COMMIT: usize = 64;
/// Posts that may wait for a commit before queueing one more waits.
pub(crate) const POSTS_WAITING: usize = 4_096;

/// One post waiting for a commit, and what to do with its outcome.
pub(crate) struct PostJob {
    pub post: NewPost,
    pub after_commit: AfterCommit,
}

/// What the committing task is handed.
pub(crate) enum Queued {
    Post(PostJob),
    /// Answered once everything queued before it is committed and announced.
    Barrier(oneshot::Sender<()>),
}

pub(crate) type PostQueue = mpsc::Sender<Queued>;

/// Posts to commit together, and the barrier that ended the batch, if one did.
pub(crate) struct Batch {
    pub posts: Vec<PostJob>,
    pub then: Option<oneshot::Sender<()>>,
}

/// The next batch: the first post to arrive and every post already waiting behind it,
/// up to a barrier. Posts are ordered by room (stably, so each room's posts keep their
/// order). Every commit then takes room locks in the same order, so two nodes'
/// commits on PostgreSQL do not wait on each other in a circle over rooms. (One circle
/// remains possible: the same client id reused in two rooms on two nodes at once.
/// PostgreSQL then fails one of the batches, and its posts are answered with an
/// error, not stored.) `None` once the store is gone.
pub(crate) async fn next_batch(queue: &mut mpsc::Receiver<Queued>) -> Option<Batch> {
    let mut batch = Batch { posts: Vec::new(), then: None };
    let mut next = Some(queue.recv().await?);
    while let Some(queued) = next.take() {
        match queued {
            Queued::Post(job) => batch.posts.push(job),
            Queued::Barrier(waiting) => {
                batch.then = Some(waiting);
                break;
            }
        }
        if batch.posts.len() < MAX_POSTS_PER_COMMIT {
            next = queue.try_recv().ok();
        }
    }
    batch.posts.sort_by_key(|job| job.post.room_id);
    Some(batch)
}

/// Hands a post's outcome to what its poster asked for. A panic in there is contained:
/// it would otherwise end the committing task, and with it every later post.
pub(crate) fn announce(room_id: i64, after_commit: AfterCommit, outcome: StoreResult<Posted>) {
    let announced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || after_commit(outcome)));
    if announced.is_err() {
        tracing::error!(room = room_id, "announcing a committed post panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use app::protocol::UserRef;

    fn job(room_id: i64, client_id: &str) -> Queued {
        let sender = UserRef {
            id: 1,
            username: "ana".into(),
            display_name: "Ana".into(),
        };
        let post = NewPost {
            room_id,
            sender,
            client_id: client_id.into(),
            text: "Ótimo!".into(),
            now: 0,
        };
        Queued::Post(PostJob {
            post,
            after_commit: Box::new(drop),
        })
    }

    fn order(batch: &Batch) -> Vec<(i64, &str)> {
        batch
            .posts
            .iter()
            .map(|job| (job.post.room_id, job.post.client_id.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_takes_everything_waiting_in_room_order_keeping_each_rooms_order() {
        let (queue, mut jobs) = mpsc::channel(16);
        for (room, id) in [(3, "a"), (1, "b"), (3, "c"), (2, "d"), (1, "e")] {
            queue.send(job(room, id)).await.unwrap();
        }
        let batch = next_batch(&mut jobs).await.unwrap();
        assert_eq!(order(&batch), [(1, "b"), (1, "e"), (2, "d"), (3, "a"), (3, "c")]);
        assert!(batch.then.is_none());
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
            next_batch(&mut jobs).await.unwrap().posts.len(),
            MAX_POSTS_PER_COMMIT
        );
        assert_eq!(next_batch(&mut jobs).await.unwrap().posts.len(), 5);
    }

    #[tokio::test]
    async fn a_barrier_ends_its_batch_and_what_follows_it_waits_for_the_next() {
        let (queue, mut jobs) = mpsc::channel(16);
        queue.send(job(2, "a")).await.unwrap();
        queue.send(job(1, "b")).await.unwrap();
        let (barrier, settled) = oneshot::channel();
        queue.send(Queued::Barrier(barrier)).await.unwrap();
        queue.send(job(1, "c")).await.unwrap();

        let first = next_batch(&mut jobs).await.unwrap();
        assert_eq!(order(&first), [(1, "b"), (2, "a")]);
        first.then.expect("the barrier ends the batch").send(()).unwrap();
        settled.await.unwrap();
        assert_eq!(order(&next_batch(&mut jobs).await.unwrap()), [(1, "c")]);

        // A barrier with nothing before it is a batch of its own.
        queue.send(Queued::Barrier(oneshot::channel().0)).await.unwrap();
        let alone = next_batch(&mut jobs).await.unwrap();
        assert!(alone.posts.is_empty() && alone.then.is_some());
    }
}
