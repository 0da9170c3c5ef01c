//! Group commit for posts. Each commit waits for the disk (SQLite's full sync, or
//! PostgreSQL's WAL flush), so committing every post on its own caps a node at one
//! post per sync, and posts queue behind each other's syncs. Instead, posts that
//! arrive while a commit is under way wait in a queue and the next commit takes them
//! all: one transaction and one sync for many posts, each still answered only after
//! the commit that stored it, and answered in the order it was queued. A post that
//! cannot be stored (not a member, a reused client id) is set aside before anything
//! is written and leaves the others in its batch alone.

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{AfterCommit, NewPost, Posted, StoreResult};

/// Posts in one transaction at most: one commit never holds the write lock long, and
/// a batch's statements stay far below either database's limit on parameters.
pub(crate) const MAX_POSTS_PER_COMMIT: usize = 64;
/// Posts that may wait for a commit before queueing one more waits.
pub(crate) const POSTS_WAITING: usize = 4_096;

/// One post waiting for a commit, and what to do with its outcome.
pub(crate) struct PostJob {
    pub post: NewPost,
    pub after_commit: AfterCommit,
}

/// Work for the committing task to do while no batch of posts is being written.
pub(crate) type Between = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// What the committing task is handed.
pub(crate) enum Queued {
    Post(PostJob),
    /// Answered once every post queued before it is committed and announced.
    Barrier(oneshot::Sender<()>),
    /// Done after the batch it arrives with, before the next one begins.
    Between(Between),
}

pub(crate) type PostQueue = mpsc::Sender<Queued>;

/// Posts to commit together, in the order they were queued, and what came with them.
pub(crate) struct Batch {
    pub posts: Vec<PostJob>,
    /// Barriers to answer once the batch's posts are announced. A barrier rides along
    /// rather than ending the batch: whoever waits on it holds its room's lock, so
    /// nothing queued after it is for that room.
    pub settled: Vec<oneshot::Sender<()>>,
    pub between: Vec<Between>,
}

/// The next batch: the first item to arrive and everything already waiting behind it,
/// up to [`MAX_POSTS_PER_COMMIT`] posts. `None` once the store is gone.
pub(crate) async fn next_batch(queue: &mut mpsc::Receiver<Queued>) -> Option<Batch> {
    let mut batch = Batch { posts: Vec::new(), settled: Vec::new(), between: Vec::new() };
    let mut next = Some(queue.recv().await?);
    while let Some(queued) = next.take() {
        match queued {
            Queued::Post(job) => batch.posts.push(job),
            Queued::Barrier(waiting) => batch.settled.push(waiting),
            Queued::Between(work) => batch.between.push(work),
        }
        if batch.posts.len() < MAX_POSTS_PER_COMMIT {
            next = queue.try_recv().ok();
        }
    }
    Some(batch)
}

/// The order to write a batch's posts in: by room, each room's posts in queue order.
/// Every commit then takes room locks in the same order, so two nodes' commits on
/// PostgreSQL do not wait on each other in a circle over rooms. (One circle remains
/// possible: the same client id reused in two rooms on two nodes at once; PostgreSQL
/// then aborts one transaction, and its batch is tried again.)
pub(crate) fn write_order(posts: &[NewPost]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..posts.len()).collect();
    order.sort_by_key(|&index| posts[index].room_id);
    order
}

/// After a batch is announced: the work waiting for the writer to be idle, then the
/// barriers.
pub(crate) async fn settle(settled: Vec<oneshot::Sender<()>>, between: Vec<Between>) {
    for work in between {
        work().await;
    }
    for waiting in settled {
        let _ = waiting.send(());
    }
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
    async fn a_batch_takes_everything_waiting_in_queue_order_and_writes_it_by_room() {
        let (queue, mut jobs) = mpsc::channel(16);
        for (room, id) in [(3, "a"), (1, "b"), (3, "c"), (2, "d"), (1, "e")] {
            queue.send(job(room, id)).await.unwrap();
        }
        let batch = next_batch(&mut jobs).await.unwrap();
        assert_eq!(order(&batch), [(3, "a"), (1, "b"), (3, "c"), (2, "d"), (1, "e")]);
        let posts: Vec<NewPost> = batch.posts.into_iter().map(|job| job.post).collect();
        assert_eq!(write_order(&posts), [1, 4, 3, 0, 2], "by room, each room's posts in order");
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
    async fn barriers_ride_along_and_are_answered_after_the_work_between_batches() {
        let (queue, mut jobs) = mpsc::channel(16);
        let (barrier, settled) = oneshot::channel();
        let (done, mut finished) = oneshot::channel::<()>();
        queue.send(job(2, "a")).await.unwrap();
        queue.send(Queued::Barrier(barrier)).await.unwrap();
        queue.send(Queued::Between(Box::new(move || Box::pin(async move { drop(done) })))).await.unwrap();
        queue.send(job(1, "b")).await.unwrap();

        let batch = next_batch(&mut jobs).await.unwrap();
        assert_eq!(order(&batch), [(2, "a"), (1, "b")], "a barrier does not split the batch");
        assert_eq!((batch.settled.len(), batch.between.len()), (1, 1));
        assert!(matches!(finished.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        settle(batch.settled, batch.between).await;
        assert!(matches!(finished.try_recv(), Err(oneshot::error::TryRecvError::Closed)), "the work ran");
        settled.await.expect("the barrier is answered");
    }
}
