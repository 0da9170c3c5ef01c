//! Each connection's bounded queue of frames waiting to be written to its socket.
//!
//! Fan-out never waits for a socket: it pushes into this queue and moves on. A client
//! that stops reading fills its queue; the next push fails and the connection is
//! closed as a slow consumer (it catches up from the database when it reconnects).
//! The bound is in frames *and* bytes so a few huge frames cannot pin memory either.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock},
    time::Instant,
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// How much may wait for one connection before it counts as a slow consumer.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

/// Why the server is closing a connection; each maps to a distinct close code so the
/// client can decide whether (and how) to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed first; the server completes the closing handshake.
    PeerClosed,
    /// The server is stopping or restarting (1012 "service restart"): reconnect, to
    /// this node when it is back or to another.
    ShuttingDown,
    /// The outbound queue overflowed; reconnect and resume from the database.
    SlowConsumer,
    /// The session was logged out or expired; do not reconnect without logging in.
    SessionEnded,
    /// The peer answered neither pings nor anything else for too long.
    HeartbeatTimeout,
    /// A frame over the size limit (RFC 6455 1009).
    TooBig,
    /// The client kept sending after being told to slow down (RFC 6455 1008).
    PolicyViolation,
    /// The page speaks an older protocol version (it was loaded before a deploy);
    /// reloading it gets the current one.
    Outdated,
    /// The page speaks a newer protocol version than this node: a deploy is rolling
    /// and this node is not updated yet (RFC 6455 1013, try again later). Reloading
    /// could even fetch the older page from this node, so the page only reconnects,
    /// most likely to an updated node.
    PageNewer,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ShuttingDown => 1012,
            CloseReason::PeerClosed => 1000,
            CloseReason::HeartbeatTimeout => 4000,
            CloseReason::TooBig => 1009,
            CloseReason::PolicyViolation => 1008,
            CloseReason::SessionEnded => app::protocol::close_code::SESSION_ENDED,
            CloseReason::Outdated => app::protocol::close_code::OUTDATED,
            CloseReason::PageNewer => 1013,
            CloseReason::SlowConsumer => 4008,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "bye",
            CloseReason::ShuttingDown => "service restart",
            CloseReason::SessionEnded => "session ended",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::TooBig => "message too big",
            CloseReason::PolicyViolation => "too many requests",
            CloseReason::Outdated => "page out of date",
            CloseReason::PageNewer => "server not updated yet",
        }
    }
}

/// Tells a connection's task to close, once, with the first reason given. One small
/// allocation per connection (a reason and a wake-up), where a cancellation token and
/// a separate reason cost every idle socket twice the memory.
#[derive(Debug, Clone, Default)]
pub struct CloseSignal {
    shared: Arc<Closing>,
}

#[derive(Debug, Default)]
struct Closing {
    reason: OnceLock<CloseReason>,
    woken: Notify,
}

impl CloseSignal {
    pub fn close(&self, reason: CloseReason) {
        let _ = self.shared.reason.set(reason);
        self.shared.woken.notify_waiters();
    }

    /// Resolves when [`CloseSignal::close`] is called, with the first reason given.
    pub async fn closed(&self) -> CloseReason {
        loop {
            // Registered before looking, so a close between the look and the wait
            // still wakes it.
            let woken = self.shared.woken.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            woken.await;
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().copied()
    }
}

/// One frame waiting for a socket.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub frame: Utf8Bytes,
    /// For a stored message (or its acknowledgement), when it was committed: the writer
    /// measures delivery latency from there.
    pub committed_at: Option<Instant>,
}

/// The fan-out side of a connection's queue.
#[derive(Debug)]
pub struct OutboundSender {
    shared: Arc<Shared>,
    limits: QueueLimits,
}

/// The socket-writer side of a connection's queue.
#[derive(Debug)]
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

/// A queue that holds nothing until its first frame and room for 4 frames (192 bytes)
/// once drained, rather than tokio's bounded channel: that one allocates a block of
/// 32 slots and about 500 bytes of padded counters up front, 2 KiB for every idle
/// socket. Pushes and takes hold the lock only to move a frame in or out; the writer
/// waits on `ready` when it finds the queue empty.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Queued>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queued {
    frames: VecDeque<Outgoing>,
    bytes: usize,
    /// Senders alive; with none left and nothing queued, the writer is done.
    senders: usize,
    /// The writer is gone: frames pushed now are dropped.
    receiver_gone: bool,
}

/// Room kept for frames once a queue drains: a burst's larger buffer is given back,
/// the few frames an idle socket hears now and then reuse this.
const KEPT_CAPACITY: usize = 4;

/// The queue is full: the connection is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

pub fn queue(limits: QueueLimits) -> (OutboundSender, OutboundReceiver) {
    let shared = Arc::new(Shared::default());
    shared.lock().senders = 1;
    (OutboundSender { shared: shared.clone(), limits }, OutboundReceiver { shared })
}

impl Shared {
    /// Every critical section is a few field updates with no await inside, so a panic
    /// cannot leave the queue half-changed: a poisoned lock is still sound to use.
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl OutboundSender {
    /// Queues a frame without waiting. A connection whose writer has already gone
    /// accepts silently: it is being torn down and will resume from the database.
    pub fn push(&self, frame: Utf8Bytes, committed_at: Option<Instant>) -> Result<(), Overflow> {
        let len = frame.len();
        let mut queued = self.shared.lock();
        if queued.receiver_gone {
            return Ok(());
        }
        // One frame larger than the byte bound still goes through an empty queue.
        let over_bytes = queued.bytes + len > self.limits.max_bytes && queued.bytes > 0;
        if queued.frames.len() >= self.limits.max_frames.max(1) || over_bytes {
            return Err(Overflow);
        }
        let was_empty = queued.frames.is_empty();
        queued.frames.push_back(Outgoing { frame, committed_at });
        queued.bytes += len;
        drop(queued);
        // The writer only waits after finding the queue empty; behind a frame already
        // waiting, it will take this one too without being woken.
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Frames and bytes waiting now.
    pub fn queued(&self) -> (usize, usize) {
        let queued = self.shared.lock();
        (queued.frames.len(), queued.bytes)
    }
}

impl Clone for OutboundSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        OutboundSender { shared: self.shared.clone(), limits: self.limits }
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        let mut queued = self.shared.lock();
        queued.senders -= 1;
        let last = queued.senders == 0;
        drop(queued);
        if last {
            self.shared.ready.notify_one();
        }
    }
}

/// What the writer found in the queue.
enum Taken {
    Frame(Outgoing),
    Empty,
    /// Empty, and no sender is left to fill it.
    Closed,
}

impl OutboundReceiver {
    /// The next frame, waiting for one; `None` once every sender is gone and the
    /// queue is empty. Cancel-safe: a frame leaves the queue only when returned.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            match self.take() {
                Taken::Frame(outgoing) => return Some(outgoing),
                Taken::Closed => return None,
                // A push between this look and the wait below leaves a permit in
                // `ready`, so the wait ends at once.
                Taken::Empty => self.shared.ready.notified().await,
            }
        }
    }

    /// The next frame if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        match self.take() {
            Taken::Frame(outgoing) => Some(outgoing),
            Taken::Empty | Taken::Closed => None,
        }
    }

    fn take(&self) -> Taken {
        let mut queued = self.shared.lock();
        match queued.frames.pop_front() {
            Some(outgoing) => {
                queued.bytes -= outgoing.frame.len();
                if queued.frames.is_empty() && queued.frames.capacity() > KEPT_CAPACITY {
                    queued.frames.shrink_to(KEPT_CAPACITY);
                }
                Taken::Frame(outgoing)
            }
            None if queued.senders == 0 => Taken::Closed,
            None => Taken::Empty,
        }
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let mut queued = self.shared.lock();
        queued.receiver_gone = true;
        let dropped = std::mem::take(&mut queued.frames);
        queued.bytes = 0;
        drop(queued);
        // A full queue can hold `max_bytes` of frames: freeing them need not keep the
        // lock that the hub's pushes wait on.
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Utf8Bytes {
        Utf8Bytes::from(text.to_string())
    }

    #[tokio::test]
    async fn frames_arrive_in_order() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 4, max_bytes: 1024 });
        tx.push(frame("a"), None).unwrap();
        tx.push(frame("b"), None).unwrap();
        assert_eq!(tx.queued(), (2, 2));
        assert_eq!(rx.recv().await.unwrap().frame.as_str(), "a");
        assert_eq!(rx.try_recv().unwrap().frame.as_str(), "b");
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.queued(), (0, 0));
    }

    #[tokio::test]
    async fn overflows_by_frame_count_and_recovers_after_draining() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 2, max_bytes: 1024 });
        tx.push(frame("1"), None).unwrap();
        tx.push(frame("2"), None).unwrap();
        assert_eq!(tx.push(frame("3"), None), Err(Overflow));
        rx.recv().await.unwrap();
        tx.push(frame("3"), None).unwrap();
    }

    #[tokio::test]
    async fn overflows_by_bytes() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 100, max_bytes: 10 });
        tx.push(frame("123456"), None).unwrap();
        assert_eq!(tx.push(frame("123456"), None), Err(Overflow), "12 bytes would exceed 10");
        rx.recv().await.unwrap();
        tx.push(frame("123456"), None).unwrap();
    }

    #[tokio::test]
    async fn one_oversized_frame_still_goes_through_an_empty_queue() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 4, max_bytes: 4 });
        tx.push(frame("larger than four"), None).unwrap();
        assert_eq!(rx.recv().await.unwrap().frame.as_str(), "larger than four");
    }

    async fn next(heard: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
        tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv()).await.expect("woken within 5 s")
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_each_frame_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 4, max_bytes: 1024 });
        let second = tx.clone();
        let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some(outgoing) = rx.recv().await {
                heard_tx.send(outgoing.frame.to_string()).unwrap();
            }
        });
        // While both senders live, only the push can wake the waiting writer.
        tokio::task::yield_now().await;
        tx.push(frame("a"), None).unwrap();
        assert_eq!(next(&mut heard).await.as_deref(), Some("a"));
        second.push(frame("b"), None).unwrap();
        assert_eq!(next(&mut heard).await.as_deref(), Some("b"));
        drop(tx);
        second.push(frame("c"), None).unwrap();
        drop(second);
        assert_eq!(next(&mut heard).await.as_deref(), Some("c"));
        tokio::time::timeout(std::time::Duration::from_secs(5), writer).await.unwrap().unwrap();
        assert_eq!(heard.recv().await, None, "the writer ended");
    }

    #[tokio::test]
    async fn a_wait_given_up_in_a_select_loses_no_frame() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 4, max_bytes: 1024 });
        {
            let waiting = rx.recv();
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            tx.push(frame("a"), None).unwrap();
            // Dropped unpolled after the push woke it, as a `select!` drops a branch.
        }
        assert_eq!(rx.try_recv().unwrap().frame.as_str(), "a");
        tx.push(frame("b"), None).unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap();
        assert_eq!(next.unwrap().frame.as_str(), "b");
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_the_room_a_burst_took() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 1_000, max_bytes: 1 << 20 });
        assert_eq!(rx.shared.lock().frames.capacity(), 0, "nothing held before the first frame");
        for n in 0..500 {
            tx.push(frame(&n.to_string()), None).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.shared.lock().frames.capacity() <= KEPT_CAPACITY);
        assert_eq!(tx.queued(), (0, 0));
    }

    #[tokio::test]
    async fn frames_pushed_after_the_writer_is_gone_are_dropped_quietly() {
        let (tx, rx) = queue(QueueLimits { max_frames: 1, max_bytes: 1024 });
        tx.push(frame("queued"), None).unwrap();
        drop(rx);
        assert_eq!(tx.push(frame("late"), None), Ok(()), "not an overflow: the socket is closing anyway");
        assert_eq!(tx.queued(), (0, 0));
    }

    #[tokio::test]
    async fn close_keeps_the_first_reason() {
        let signal = CloseSignal::default();
        signal.close(CloseReason::SlowConsumer);
        signal.close(CloseReason::ShuttingDown);
        assert_eq!(signal.closed().await, CloseReason::SlowConsumer);
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_closed_once_waiting() {
        let signal = CloseSignal::default();
        let waiting: Vec<_> = (0..2).map(|_| tokio::spawn({
            let signal = signal.clone();
            async move { signal.closed().await }
        })).collect();
        // Both are waiting (registered, nothing set) before the close.
        tokio::task::yield_now().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        signal.close(CloseReason::HeartbeatTimeout);
        for waiter in waiting {
            let reason = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert_eq!(reason.expect("woken").unwrap(), CloseReason::HeartbeatTimeout);
        }
    }
}
