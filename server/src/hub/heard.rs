//! How far a room's sockets on this node have been sent its messages, without holes.
//!
//! Events from other nodes can be lost (Redis pub/sub delivers at most once), and one
//! lost message followed by a later one must not look like "heard everything up to
//! the later one": a catch-up from the highest number seen would skip the hole for
//! good. So a room keeps the number up to which *every* message was sent
//! ([`Heard::through`]) and, apart, the few sent past a hole; a catch-up starts at
//! `through` and skips those few.

use std::collections::BTreeSet;

use app::protocol::Seq;

/// Messages past a hole remembered at most, per room. Past this the highest are
/// forgotten: a catch-up then sends them again, which clients ignore by number.
const BEYOND_LIMIT: usize = 4096;

/// The messages one room's sockets here were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    through: Seq,
    beyond: BTreeSet<Seq>,
}

impl Heard {
    /// Sockets that were given every message up to `through` (a greeting, a join).
    pub fn starting_at(through: Seq) -> Self {
        Heard { through, beyond: BTreeSet::new() }
    }

    /// Every message up to this one was sent: where a catch-up starts.
    pub fn through(&self) -> Seq {
        self.through
    }

    /// Whether message `seq` was sent already.
    pub fn has(&self, seq: Seq) -> bool {
        seq <= self.through || self.beyond.contains(&seq)
    }

    /// Counts every message up to `seq` as sent.
    pub fn skip_to(&mut self, seq: Seq) {
        if seq > self.through {
            self.beyond.retain(|&beyond| beyond > seq);
            self.through = seq;
            self.absorb_run();
        }
    }

    /// Notes that message `seq` was sent.
    pub fn note(&mut self, seq: Seq) {
        if seq <= self.through {
            return;
        }
        if seq != self.through + 1 {
            self.beyond.insert(seq);
            if self.beyond.len() > BEYOND_LIMIT {
                self.beyond.pop_last();
            }
            return;
        }
        self.through = seq;
        self.absorb_run();
    }

    /// Moves the mark over the messages sent past it that now join it.
    fn absorb_run(&mut self) {
        while self.beyond.first() == Some(&(self.through + 1)) {
            self.beyond.pop_first();
            self.through += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_lost_message_holds_the_mark_until_it_is_sent() {
        let mut heard = Heard::starting_at(4);
        heard.note(6);
        heard.note(7);
        assert_eq!(heard.through(), 4, "5 never came");
        assert!(heard.has(6) && !heard.has(5));
        heard.note(5);
        assert_eq!(heard.through(), 7);
        heard.note(3);
        assert_eq!(heard.through(), 7);
        heard.note(10);
        heard.note(12);
        heard.skip_to(10);
        assert_eq!(heard.through(), 10, "11 is still missing");
        heard.note(11);
        assert_eq!(heard.through(), 12);
        heard.note(14);
        heard.skip_to(13);
        assert_eq!(heard.through(), 14);
    }

    proptest! {
        /// Whatever order messages come in, and whichever are lost, the mark is the
        /// end of the unbroken run from the start, and every one sent is known.
        #[test]
        fn the_mark_is_the_end_of_the_unbroken_run(start in 0i64..5, sent in proptest::collection::vec(0i64..60, 0..80)) {
            let mut heard = Heard::starting_at(start);
            for &seq in &sent {
                heard.note(seq);
            }
            let mut expected = start;
            while sent.contains(&(expected + 1)) {
                expected += 1;
            }
            prop_assert_eq!(heard.through(), expected);
            for &seq in &sent {
                prop_assert!(heard.has(seq));
            }
            for seq in 0..70 {
                if seq > start && !sent.contains(&seq) {
                    prop_assert!(!heard.has(seq));
                }
            }
        }
    }
}
