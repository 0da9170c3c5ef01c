//! Sending once the server has said "too fast", decided apart from the connection and
//! the page so that the order it keeps can be tested on its own.

/// Sending once the server has said "too fast". Each message refused and retried on
/// its own timer, a later one could take the next allowance before an earlier one (a
/// person's messages were stored out of the order written, seen with ten a second).
/// So after a refusal, messages go one at a time, oldest first: the next when the one
/// before is stored (or given up), the refused one again when the wait the server
/// named is over. Until nothing is waiting, or the connection is new (a new allowance).
///
/// Every method takes `waiting`: the client ids not stored and not given up, oldest
/// first, as the outbox holds them now.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    on: bool,
    /// A wait for the server's allowance is running.
    waiting: bool,
    /// The message sent one at a time, not yet answered.
    in_flight: Option<String>,
    /// The first message refused as too fast and not stored yet. The server keeps it
    /// its turn (any other is refused until it comes back), so it goes first when the
    /// wait is over, even before an older one retried by hand meanwhile.
    owed: Option<String>,
    /// Counts waits and restarts: a wait's timer that finds another number is from
    /// before a reconnect or logout, and must not end the wait running now.
    generation: u32,
}

impl Pacing {
    /// Free to send again, and any wait running forgotten.
    pub(super) fn restart(&mut self) {
        *self = Pacing { generation: self.generation.wrapping_add(1), ..Pacing::default() };
    }

    /// Whether messages go one at a time now.
    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    /// Whether `client_id` may go now on a timer of its own (a retry after a server
    /// error): not while paced, unless it is the one on its way.
    pub(super) fn lets_go_on_its_own(&self, client_id: &str) -> bool {
        !self.on || self.in_flight.as_deref() == Some(client_id)
    }

    /// The server refused `client_id` as sent too fast. Returns the number of the wait
    /// to start (to hand back to [`Pacing::wait_over`] when it ends), or `None` when a
    /// wait is running already.
    pub(super) fn refused(&mut self, client_id: &str, waiting: &[String]) -> Option<u32> {
        self.on = true;
        // A refusal of a message sent before this one went (its answer slowed by the
        // network) does not make this one's answer any less due.
        if self.in_flight.as_deref() == Some(client_id) {
            self.in_flight = None;
        }
        self.owed = self.owed.take().filter(|owed| waiting.contains(owed)).or_else(|| Some(client_id.to_owned()));
        if std::mem::replace(&mut self.waiting, true) {
            return None;
        }
        self.generation = self.generation.wrapping_add(1);
        Some(self.generation)
    }

    /// The wait numbered `generation` is over. False when it was forgotten since (a
    /// reconnect or logout restarted pacing): then nothing is due.
    pub(super) fn wait_over(&mut self, generation: u32) -> bool {
        let ours = self.generation == generation;
        if ours {
            self.waiting = false;
        }
        ours
    }

    /// While paced, the message to send now: the one owed the turn, else the oldest
    /// waiting; none while one is on its way or the server's wait is running. With
    /// nothing waiting, sending is free again. Asked whenever the outbox moves on (a
    /// message stored, given up, discarded or added).
    pub(super) fn next(&mut self, waiting: &[String]) -> Option<String> {
        if !self.on || self.waiting {
            return None;
        }
        if self.in_flight.as_ref().is_some_and(|sent| waiting.contains(sent)) {
            return None;
        }
        let owed = self.owed.take().filter(|owed| waiting.contains(owed));
        match owed.clone().or_else(|| waiting.first().cloned()) {
            Some(next) => {
                self.in_flight = Some(next.clone());
                self.owed = owed;
                Some(next)
            }
            None => {
                self.restart();
                None
            }
        }
    }

    /// After a reconnect (a new allowance), once the first `at_once` of `waiting`
    /// (restarted, so unpaced) have gone: the rest follow one at a time once the last
    /// of those is stored (answers come in the order sent, so the others are stored by
    /// then).
    pub(super) fn resent(&mut self, waiting: &[String], at_once: usize) {
        if waiting.len() > at_once && at_once > 0 {
            self.on = true;
            self.in_flight = Some(waiting[at_once - 1].clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    /// What is still waiting once `stored` have been stored.
    fn without(waiting: &[String], stored: &str) -> Vec<String> {
        waiting.iter().filter(|id| *id != stored).cloned().collect()
    }

    #[test]
    fn unpaced_nothing_is_held_back() {
        let mut pacing = Pacing::default();
        assert!(!pacing.is_on());
        assert!(pacing.lets_go_on_its_own("a"));
        assert_eq!(pacing.next(&ids(&["a"])), None, "unpaced, messages go as written, not from here");
    }

    #[test]
    fn after_a_refusal_the_refused_message_goes_first_then_one_at_a_time_in_order() {
        let mut pacing = Pacing::default();
        let waiting = ids(&["a", "b", "c"]);
        let wait = pacing.refused("a", &waiting).expect("a wait starts");
        assert_eq!(pacing.next(&waiting), None, "nothing goes while the server's wait runs");
        assert!(!pacing.lets_go_on_its_own("b"), "a retry on its own timer waits its turn");
        assert!(pacing.wait_over(wait));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("a"));
        assert_eq!(pacing.next(&waiting), None, "the next waits until the one on its way is stored");
        let waiting = without(&waiting, "a");
        assert_eq!(pacing.next(&waiting).as_deref(), Some("b"));
        let waiting = without(&waiting, "b");
        assert_eq!(pacing.next(&waiting).as_deref(), Some("c"));
        let waiting = without(&waiting, "c");
        assert_eq!(pacing.next(&waiting), None);
        assert!(!pacing.is_on(), "with nothing waiting, sending is free again");
    }

    #[test]
    fn the_message_owed_the_turn_goes_before_an_older_one_retried_by_hand() {
        let mut pacing = Pacing::default();
        // "a" was given up earlier; "b" is refused; then "a" is retried by hand, so it
        // is waiting again, and older.
        let wait = pacing.refused("b", &ids(&["b"])).unwrap();
        let waiting = ids(&["a", "b"]);
        assert!(pacing.wait_over(wait));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("b"), "the server keeps the turn for the refused one");
        let waiting = without(&waiting, "b");
        assert_eq!(pacing.next(&waiting).as_deref(), Some("a"));
    }

    #[test]
    fn a_message_owed_the_turn_and_given_up_since_leaves_the_turn_to_the_oldest() {
        let mut pacing = Pacing::default();
        let wait = pacing.refused("b", &ids(&["a", "b"])).unwrap();
        assert!(pacing.wait_over(wait));
        assert_eq!(pacing.next(&ids(&["a"])).as_deref(), Some("a"));
    }

    #[test]
    fn a_late_refusal_of_an_earlier_message_keeps_the_one_on_its_way_in_flight() {
        let mut pacing = Pacing::default();
        let waiting = ids(&["a", "b", "c"]);
        let wait = pacing.refused("a", &waiting).unwrap();
        assert!(pacing.wait_over(wait));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("a"));
        // "b" had gone before pacing began; its refusal arrives only now.
        let again = pacing.refused("b", &waiting).expect("a new wait");
        assert!(pacing.wait_over(again));
        assert_eq!(pacing.next(&waiting), None, "\"a\" is still on its way: sending it twice would keep the turn from it");
        let waiting = without(&waiting, "a");
        assert_eq!(pacing.next(&waiting).as_deref(), Some("b"), "then the oldest (the one owed the turn is stored)");
    }

    #[test]
    fn a_refusal_of_the_message_on_its_way_sends_it_again_after_the_wait() {
        let mut pacing = Pacing::default();
        let waiting = ids(&["a", "b"]);
        let wait = pacing.refused("a", &waiting).unwrap();
        assert!(pacing.wait_over(wait));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("a"));
        let again = pacing.refused("a", &waiting).unwrap();
        assert!(pacing.wait_over(again));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("a"));
    }

    #[test]
    fn only_one_wait_runs_at_a_time() {
        let mut pacing = Pacing::default();
        let waiting = ids(&["a", "b"]);
        let wait = pacing.refused("a", &waiting).unwrap();
        assert_eq!(pacing.refused("b", &waiting), None, "a second refusal during the wait starts no other");
        assert!(pacing.wait_over(wait));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("a"), "the first refused keeps the turn");
    }

    #[test]
    fn a_wait_from_before_a_restart_ends_nothing() {
        let mut pacing = Pacing::default();
        let waiting = ids(&["a", "b"]);
        let old = pacing.refused("a", &waiting).unwrap();
        pacing.restart();
        let current = pacing.refused("b", &waiting).unwrap();
        assert!(!pacing.wait_over(old));
        assert_eq!(pacing.next(&waiting), None, "the current wait still runs");
        assert!(pacing.wait_over(current));
        assert_eq!(pacing.next(&waiting).as_deref(), Some("b"));
    }

    #[test]
    fn after_a_reconnect_the_first_go_at_once_and_the_rest_one_at_a_time() {
        let mut pacing = Pacing::default();
        let waiting: Vec<String> = (0..12).map(|n| format!("m{n}")).collect();
        pacing.restart();
        assert!(pacing.lets_go_on_its_own("m0"), "the first ten go at once, unpaced");
        pacing.resent(&waiting, 10);
        assert!(pacing.is_on());
        assert_eq!(pacing.next(&waiting), None, "the rest wait for the tenth to be stored");
        assert_eq!(pacing.next(&waiting[10..]).as_deref(), Some("m10"));
        assert_eq!(pacing.next(&waiting[11..]).as_deref(), Some("m11"));
    }

    #[test]
    fn after_a_reconnect_a_short_outbox_goes_at_once_unpaced() {
        let mut pacing = Pacing::default();
        let waiting = ids(&["a", "b"]);
        pacing.refused("a", &waiting);
        pacing.restart();
        pacing.resent(&waiting, 10);
        assert!(!pacing.is_on(), "a new connection is a new allowance");
    }
}
