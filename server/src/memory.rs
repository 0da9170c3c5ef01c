//! Hands back to the system the memory a crowd of sockets coming or going left free.
//!
//! A socket's handshake allocates buffers that are freed once it is open, between the
//! allocations that stay for the socket's life. glibc's allocator keeps the free pages
//! inside its heaps for later rather than returning them, so after a reconnect storm
//! about 1 KiB per socket stays resident for nothing (docs/benchmarks.md: 8.1–8.3
//! against 7.3 KiB per idle socket). `malloc_trim` returns every whole free page, but it
//! walks each heap under that heap's lock, stalling allocations meanwhile: it runs
//! once a crowd has come or gone and things have quietened, never per socket.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How often the count of sockets that came and went is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Sockets opened or closed since the last trim that make one worth its stall: a
/// trim after a handful would give back next to nothing.
const TRIM_AFTER: u64 = 1_000;

/// Below this many sockets opened or closed in the last look, the crowd has passed:
/// trimming in the middle of a storm would give back pages the next handshakes take
/// again, and stall them.
const QUIET_BELOW: u64 = 100;

/// Decides when to trim from a running count of sockets opened plus sockets closed.
#[derive(Debug, Default)]
pub struct Churn {
    last_seen: u64,
    since_trim: u64,
}

impl Churn {
    /// Starts counting from `seen`, the sockets that came and went so far.
    pub fn from(seen: u64) -> Self {
        Churn { last_seen: seen, since_trim: 0 }
    }

    /// Takes a new look at the running count; true when a trim is due now (and counts
    /// from zero again).
    pub fn trim_due(&mut self, seen: u64) -> bool {
        let lately = seen.saturating_sub(self.last_seen);
        self.last_seen = seen;
        self.since_trim += lately;
        if self.since_trim >= TRIM_AFTER && lately < QUIET_BELOW {
            self.since_trim = 0;
            return true;
        }
        false
    }
}

/// Trims after each crowd of sockets until the server stops.
pub async fn run_trims(hub: Arc<Hub>, stop: CancellationToken) {
    if !can_trim() {
        return;
    }
    let mut churn = Churn::from(hub.sockets_come_and_gone());
    let mut every = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        if churn.trim_due(hub.sockets_come_and_gone()) {
            // Off the async threads: the walk over the heaps takes milliseconds.
            let started = std::time::Instant::now();
            if tokio::task::spawn_blocking(trim).await.is_ok() {
                crate::metrics::memory_trimmed();
                tracing::debug!(took = ?started.elapsed(), "gave freed memory back to the system");
            }
        }
    }
}

/// Whether this build's allocator can give memory back on request.
fn can_trim() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases pages the allocator
    // holds free; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_is_trimmed_after_once_it_has_passed() {
        let mut churn = Churn::from(0);
        assert!(!churn.trim_due(600), "in the middle of the storm");
        assert!(!churn.trim_due(1_200), "still coming");
        assert!(churn.trim_due(1_210), "the storm has passed");
        assert!(!churn.trim_due(1_210), "nothing since");
    }

    #[test]
    fn a_trickle_is_trimmed_after_once_it_adds_up() {
        let mut churn = Churn::from(5_000);
        let mut seen = 5_000;
        let mut trims = 0;
        for _ in 0..100 {
            seen += 50;
            trims += usize::from(churn.trim_due(seen));
        }
        assert_eq!(trims, 5, "one trim per thousand sockets that came or went");
    }

    #[test]
    fn a_few_sockets_are_not_worth_a_trim() {
        let mut churn = Churn::from(0);
        assert!(!churn.trim_due(999));
        assert!(!churn.trim_due(999));
    }
}
