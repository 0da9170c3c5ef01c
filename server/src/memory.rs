//! Hands back to the system the memory a crowd of sockets coming or going left free.
//!
//! A socket's handshake allocates buffers that are freed once it is open, between the
//! allocations that stay for the socket's life. glibc's allocator keeps the free pages
//! inside its heaps for later rather than returning them, so after a reconnect storm
//! 0.7–1.5 KiB per socket stays resident for nothing (docs/benchmarks.md: 8.0–8.9
//! against 7.1–7.7 KiB per idle socket). `malloc_trim` returns every whole free page,
//! but it walks each heap under that heap's lock (2–3 ms at 10,000 sockets), and an
//! allocation on another thread waits meanwhile: it runs only once a crowd has come or
//! gone and things have quietened, at most once a minute, and not while the server is
//! stopping.

use std::{sync::Arc, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How often the count of sockets that came and went is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Sockets opened or closed since the last trim that make one worth its stall: a
/// trim after a handful would give back next to nothing.
const TRIM_AFTER: u64 = 1_000;

/// Below this many sockets opened or closed since the last look (a second ago), the
/// crowd has passed: trimming in the middle of a storm would give back pages the next
/// handshakes take again, and stall them.
const QUIET_BELOW: u64 = 100;

/// Looks between two trims at least: steady coming and going adds up to a thousand
/// now and then, and that is not worth a stall more often than this.
const LOOKS_BETWEEN_TRIMS: u32 = 60;

/// Decides when to trim from a running count of sockets opened plus sockets closed.
#[derive(Debug)]
pub(crate) struct Churn {
    last_seen: u64,
    since_trim: u64,
    looks_since_trim: u32,
}

impl Churn {
    /// Starts counting from `seen`, the sockets that came and went so far.
    pub(crate) fn starting_at(seen: u64) -> Self {
        Churn { last_seen: seen, since_trim: 0, looks_since_trim: LOOKS_BETWEEN_TRIMS }
    }

    /// Takes a new look at the running count; true when a trim is due now (and counts
    /// from zero again).
    pub(crate) fn trim_due(&mut self, seen: u64) -> bool {
        let lately = seen.saturating_sub(self.last_seen);
        self.last_seen = seen;
        self.since_trim += lately;
        self.looks_since_trim = self.looks_since_trim.saturating_add(1);
        if self.since_trim >= TRIM_AFTER && lately < QUIET_BELOW && self.looks_since_trim >= LOOKS_BETWEEN_TRIMS {
            self.since_trim = 0;
            self.looks_since_trim = 0;
            return true;
        }
        false
    }
}

/// Trims after each crowd of sockets until the server begins to stop (its last closes
/// are a crowd too, and a trim then would only hold up the drain).
pub(crate) async fn run_trims(hub: Arc<Hub>, stopping: CancellationToken) {
    if trim().is_none() {
        return;
    }
    let mut churn = Churn::starting_at(hub.sockets_come_and_gone());
    let mut every = tokio::time::interval(LOOK_EVERY);
    // Looks a late tick would bunch up find nothing came "since the last look", in
    // the middle of a storm: each look is a second after the one before.
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopping.cancelled() => return,
        }
        if churn.trim_due(hub.sockets_come_and_gone()) {
            // On the blocking pool, so the walk itself does not hold up sockets' tasks
            // (an allocation meanwhile still waits for the heap being walked).
            let started = std::time::Instant::now();
            if let Ok(Some(released)) = tokio::task::spawn_blocking(trim).await {
                crate::metrics::memory_trimmed(released);
                tracing::info!(took = ?started.elapsed(), released, "gave freed memory back to the system");
            }
        }
    }
}

/// Gives whole free pages back; whether any were, or `None` where the allocator
/// cannot be asked (anything but glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> Option<bool> {
    // SAFETY: malloc_trim takes no pointers and only releases pages the allocator
    // holds free; glibc allows it from any thread at any time.
    Some(unsafe { libc::malloc_trim(0) } == 1)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> Option<bool> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_is_trimmed_after_once_it_has_passed() {
        let mut churn = Churn::starting_at(0);
        assert!(!churn.trim_due(600), "in the middle of the storm");
        assert!(!churn.trim_due(1_200), "still coming");
        assert!(churn.trim_due(1_210), "the storm has passed");
        assert!(!churn.trim_due(1_210), "nothing since");
    }

    #[test]
    fn a_trickle_is_trimmed_after_once_it_adds_up_and_at_most_once_a_minute() {
        let mut churn = Churn::starting_at(5_000);
        let mut seen = 5_000;
        let mut trimmed_at = Vec::new();
        for look in 1..=200 {
            seen += 50;
            if churn.trim_due(seen) {
                trimmed_at.push(look);
            }
        }
        assert_eq!(trimmed_at, [20, 80, 140, 200]);
    }

    #[test]
    fn a_second_crowd_within_the_minute_waits_for_it() {
        let mut churn = Churn::starting_at(0);
        assert!(!churn.trim_due(2_000));
        assert!(churn.trim_due(2_000));
        assert!(!churn.trim_due(4_000), "a second storm");
        let trims_in_the_minute = (3..LOOKS_BETWEEN_TRIMS + 1).filter(|_| churn.trim_due(4_000)).count();
        assert_eq!(trims_in_the_minute, 0);
        assert!(churn.trim_due(4_000), "a minute after the first trim");
    }

    #[test]
    fn a_few_sockets_are_not_worth_a_trim() {
        let mut churn = Churn::starting_at(0);
        assert!(!churn.trim_due(999));
        assert!(!churn.trim_due(999));
    }
}
