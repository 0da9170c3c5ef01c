//! Each connection's bounded queue of frames waiting to be written to its socket.
//!
//! Fan-out never waits for a socket: it pushes into this queue and moves on. A client
//! that stops reading fills its queue; the next push fails and the connection is
//! closed as a slow consumer (it catches up from the database when it reconnects).
//! The bound is in frames *and* bytes so a few huge frames cannot pin memory either.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Instant,
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ShuttingDown => 1012,
            CloseReason::PeerClosed => 1000,
            CloseReason::HeartbeatTimeout => 4000,
            CloseReason::TooBig => 1009,
            CloseReason::PolicyViolation => 1008,
            CloseReason::SessionEnded => 4001,
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
        }
    }
}

/// Tells a connection's task to close, once, with the first reason given.
#[derive(Debug, Clone, Default)]
pub struct CloseSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<CloseReason>>,
}

impl CloseSignal {
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves when [`CloseSignal::close`] is called, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(CloseReason::ShuttingDown)
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
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
#[derive(Debug, Clone)]
pub struct OutboundSender {
    frames: mpsc::Sender<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The socket-writer side of a connection's queue.
#[derive(Debug)]
pub struct OutboundReceiver {
    frames: mpsc::Receiver<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
}

/// The queue is full: the connection is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

pub fn queue(limits: QueueLimits) -> (OutboundSender, OutboundReceiver) {
    let (tx, rx) = mpsc::channel(limits.max_frames.max(1));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        OutboundSender { frames: tx, queued_bytes: queued_bytes.clone(), max_bytes: limits.max_bytes },
        OutboundReceiver { frames: rx, queued_bytes },
    )
}

impl OutboundSender {
    /// Queues a frame without waiting. A connection whose writer has already gone
    /// accepts silently: it is being torn down and will resume from the database.
    pub fn push(&self, frame: Utf8Bytes, committed_at: Option<Instant>) -> Result<(), Overflow> {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes && before > 0 {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(Overflow);
        }
        match self.frames.try_send(Outgoing { frame, committed_at }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                Err(Overflow)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                Ok(())
            }
        }
    }
}

impl OutboundSender {
    /// Frames and bytes waiting now.
    pub fn queued(&self) -> (usize, usize) {
        (self.frames.max_capacity() - self.frames.capacity(), self.queued_bytes.load(Ordering::Acquire))
    }
}

impl OutboundReceiver {
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let outgoing = self.frames.recv().await?;
        self.queued_bytes.fetch_sub(outgoing.frame.len(), Ordering::AcqRel);
        Some(outgoing)
    }

    /// The next frame if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let outgoing = self.frames.try_recv().ok()?;
        self.queued_bytes.fetch_sub(outgoing.frame.len(), Ordering::AcqRel);
        Some(outgoing)
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

    #[tokio::test]
    async fn close_keeps_the_first_reason() {
        let signal = CloseSignal::default();
        signal.close(CloseReason::SlowConsumer);
        signal.close(CloseReason::ShuttingDown);
        assert_eq!(signal.closed().await, CloseReason::SlowConsumer);
    }
}
