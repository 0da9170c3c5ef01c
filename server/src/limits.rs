//! Rate limits and connection counts: what keeps one client (or one address) from
//! taking more than its share. Token buckets come from `governor`; everything here is
//! in memory and per server node, which is enough to blunt floods and guessing.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
};

use app::protocol::MAX_CLIENT_ID_LEN;

use crate::config::LimitsConfig;

/// How long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, at least one, for a `Retry-After` header.
    pub fn header_secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least one")
}

/// A bucket of `burst` tokens refilled at `per_second`.
fn quota(burst: u32, per_second: f64) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second.max(0.000_1));
    Quota::with_period(period).expect("the period is positive").allow_burst(nonzero(burst))
}

fn check_keyed<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), RetryAfter> {
    limiter.check_key(key).map_err(|not_until| RetryAfter(not_until.wait_time_from(limiter.clock().now())))
}

/// The limits shared by all requests.
pub struct Limiters {
    http_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    logins_by_account: DefaultKeyedRateLimiter<String>,
    logins_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    registrations_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    sockets_by_ip: Slots<IpAddr>,
    sockets_by_user: Slots<i64>,
    /// Shared by every connection's buckets: making a clock reads the CPU's features
    /// (`cpuid`, which traps to the hypervisor on a virtual machine), too slow to do
    /// per connection, let alone per frame.
    clock: DefaultClock,
    config: LimitsConfig,
}

impl Limiters {
    pub fn new(config: &LimitsConfig) -> Self {
        let per_minute = Quota::per_minute(nonzero(config.logins_per_minute));
        Limiters {
            http_by_ip: RateLimiter::keyed(quota(config.http_burst, config.http_per_second)),
            logins_by_account: RateLimiter::keyed(per_minute),
            logins_by_ip: RateLimiter::keyed(per_minute),
            registrations_by_ip: RateLimiter::keyed(Quota::per_hour(nonzero(config.registrations_per_hour))),
            sockets_by_ip: Slots::new(config.sockets_per_ip),
            sockets_by_user: Slots::new(config.sockets_per_user),
            clock: DefaultClock::default(),
            config: config.clone(),
        }
    }

    pub fn http(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        check_keyed(&self.http_by_ip, &ip)
    }

    /// Counts a login attempt against the address, then the account; both must have
    /// room, whether or not the password turns out to be right. An address already
    /// over its limit is refused before it can use up the account's attempts, so one
    /// noisy address cannot lock the owner out for long.
    pub fn login(&self, username: &str, ip: IpAddr) -> Result<(), RetryAfter> {
        check_keyed(&self.logins_by_ip, &ip)?;
        check_keyed(&self.logins_by_account, &account_key(username))
    }

    pub fn registration(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        check_keyed(&self.registrations_by_ip, &ip)
    }

    /// Reserves one of the address's socket slots until the returned guard drops.
    pub fn socket_slot(&self, ip: IpAddr) -> Option<Slot<IpAddr>> {
        self.sockets_by_ip.acquire(ip)
    }

    /// Reserves one of the user's socket slots. Taken at the handshake, before the
    /// socket exists, so a quick burst of handshakes cannot slip past the count.
    pub fn user_socket_slot(&self, user_id: i64) -> Option<Slot<i64>> {
        self.sockets_by_user.acquire(user_id)
    }

    /// Forgets buckets that are full again, so idle addresses cost no memory.
    pub fn forget_idle(&self) {
        self.http_by_ip.retain_recent();
        self.logins_by_account.retain_recent();
        self.logins_by_ip.retain_recent();
        self.registrations_by_ip.retain_recent();
    }

    /// Buckets for one new connection.
    pub fn connection(&self) -> ConnectionLimits {
        ConnectionLimits {
            messages: RateLimiter::direct_with_clock(quota(self.config.messages_burst, self.config.messages_per_second), self.clock.clone()),
            frames: RateLimiter::direct_with_clock(quota(self.config.frames_burst, self.config.frames_per_second), self.clock.clone()),
            refused_in_a_row: 0,
            abuse_close_after: self.config.abuse_close_after.max(1),
            owed_turn: None,
        }
    }
}

/// The login limiter's key for a username as typed: letter case ignored, and no longer
/// than a username can be (plus one, so an over-long name keeps its own bucket), so a
/// megabyte "username" cannot become a megabyte key.
pub fn account_key(username: &str) -> String {
    let longest = app::validation::USERNAME_MAX + 1;
    // Cut before lowercasing (cheap on a huge input) and after (a lowercase letter can
    // be two characters, as `İ` is).
    let start: String = username.chars().take(longest).collect();
    start.to_lowercase().chars().take(longest).collect()
}

/// Counted claims per key (address, user), at most `limit` at a time.
#[derive(Clone)]
struct Slots<K> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    limit: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Slots<K> {
    fn new(limit: usize) -> Self {
        Slots { counts: Arc::new(Mutex::new(HashMap::new())), limit }
    }

    fn acquire(&self, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot { key, counts: self.counts.clone() })
    }
}

/// One socket's claim on an allowance, given back when dropped.
pub struct Slot<K: std::hash::Hash + Eq> {
    key: K,
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: std::hash::Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What a connection may send: chat messages (tight) and frames of any kind (looser).
pub struct ConnectionLimits {
    messages: DefaultDirectRateLimiter,
    frames: DefaultDirectRateLimiter,
    refused_in_a_row: u32,
    abuse_close_after: u32,
    /// The chat message refused as too fast that is owed the next turn. Boxed: every
    /// open socket keeps these limits, and few ever post too fast.
    owed_turn: Option<Box<OwedTurn>>,
}

/// How long a refused chat message keeps its turn past the wait it was told. What it
/// guards against is a message already on its way when the refusal reached the page,
/// so it need only outlast a slow network's round trip: after that the page sends the
/// refused message first, and a client that drops its refused messages is held back
/// no longer than this.
const TURN_KEPT: Duration = Duration::from_secs(5);

/// The least wait a message refused out of turn is told: a client that dropped the
/// refused one and keeps trying others is refused a few times, not hundreds (and
/// closed for it) while the turn is kept.
const OUT_OF_TURN_WAIT: Duration = Duration::from_millis(500);

/// A chat message refused as too fast, which is stored before any later one from the
/// same connection. The page sends its messages one at a time after a refusal, oldest
/// first, but those already on their way when the refusal reached it arrive after it,
/// and one of them could otherwise take an allowance that came back meanwhile: the
/// person's messages stored out of the order written.
struct OwedTurn {
    client_id: String,
    /// When the refused message was told it may come back.
    due: Instant,
    /// When the others may go whether or not it came back ([`TURN_KEPT`] after `due`).
    expires: Instant,
}

/// The outcome of checking one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refuse this frame; the client may retry after the given time.
    Refused(RetryAfter),
    /// The client keeps going regardless: close the connection.
    Abusive,
}

impl ConnectionLimits {
    /// Checks one frame; `is_message` for frames that write something lasting (create,
    /// join or leave a room, open a DM; a chat message goes through [`Self::check_post`]).
    pub fn check(&mut self, is_message: bool) -> Verdict {
        let result = self.frames.check().and_then(|()| if is_message { self.messages.check() } else { Ok(()) });
        match result {
            Ok(()) => {
                self.refused_in_a_row = 0;
                Verdict::Allowed
            }
            Err(not_until) => self.refuse(not_until.wait_time_from(self.frames.clock().now())),
        }
    }

    /// Checks a chat message, `client_id` the page's id for it. After one is refused as
    /// too fast, every other is refused too until that one comes back and is let
    /// through (or for [`TURN_KEPT`]), so they are stored in the order they were
    /// written ([`OwedTurn`]).
    pub fn check_post(&mut self, client_id: &str) -> Verdict {
        self.check_post_at(client_id, Instant::now())
    }

    fn check_post_at(&mut self, client_id: &str, now: Instant) -> Verdict {
        if let Some(owed) = self.owed_turn.as_deref().filter(|owed| now < owed.expires) {
            if owed.client_id != client_id {
                let wait = owed.due.saturating_duration_since(now).max(OUT_OF_TURN_WAIT);
                // Metered as a frame, without taking the allowance owed to the other.
                return match self.frames.check() {
                    Ok(()) => self.refuse(wait),
                    Err(not_until) => self.refuse(wait.max(not_until.wait_time_from(self.frames.clock().now()))),
                };
            }
        }
        let verdict = self.check(true);
        match verdict {
            Verdict::Allowed => self.owed_turn = None,
            // An id the server would refuse anyway (too long) keeps no turn.
            Verdict::Refused(RetryAfter(wait)) if client_id.len() <= MAX_CLIENT_ID_LEN => {
                let owed = OwedTurn { client_id: client_id.to_string(), due: now + wait, expires: now + wait + TURN_KEPT };
                self.owed_turn = Some(Box::new(owed));
            }
            Verdict::Refused(_) => {}
            Verdict::Abusive => {}
        }
        verdict
    }

    /// Refuses a frame, which may come back after `wait`; or, after too many refusals
    /// in a row, says the client keeps going regardless.
    fn refuse(&mut self, wait: Duration) -> Verdict {
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= self.abuse_close_after {
            Verdict::Abusive
        } else {
            Verdict::Refused(RetryAfter(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LimitsConfig {
        LimitsConfig { messages_burst: 3, messages_per_second: 1.0, frames_burst: 5, abuse_close_after: 4, ..LimitsConfig::default() }
    }

    #[test]
    fn messages_beyond_the_burst_are_refused_with_a_wait() {
        let mut limits = Limiters::new(&config()).connection();
        for _ in 0..3 {
            assert_eq!(limits.check(true), Verdict::Allowed);
        }
        match limits.check(true) {
            Verdict::Refused(RetryAfter(wait)) => assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusing_again_and_again_turns_into_closing() {
        let mut limits = Limiters::new(&config()).connection();
        let verdicts: Vec<Verdict> = (0..8).map(|_| limits.check(true)).collect();
        assert!(matches!(verdicts[3], Verdict::Refused(_)));
        assert_eq!(verdicts[6], Verdict::Abusive, "the fourth refusal in a row");
    }

    /// One message at once, back every 250 ms.
    fn one_at_a_time() -> ConnectionLimits {
        let config = LimitsConfig { messages_burst: 1, messages_per_second: 4.0, ..LimitsConfig::default() };
        Limiters::new(&config).connection()
    }

    fn wait_of(verdict: Verdict) -> Duration {
        match verdict {
            Verdict::Refused(RetryAfter(wait)) => wait,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_message_refused_as_too_fast_is_let_through_before_any_later_one() {
        let mut limits = one_at_a_time();
        assert_eq!(limits.check_post("a"), Verdict::Allowed);
        let wait = wait_of(limits.check_post("b"));
        std::thread::sleep(wait + Duration::from_millis(10));
        // The allowance is back, but "b" is owed it: "c" was on its way before the
        // page heard that "b" was refused.
        assert_eq!(wait_of(limits.check_post("c")), OUT_OF_TURN_WAIT);
        assert_eq!(limits.check_post("b"), Verdict::Allowed);
        std::thread::sleep(Duration::from_millis(260));
        assert_eq!(limits.check_post("c"), Verdict::Allowed);
    }

    #[test]
    fn a_refused_message_that_never_comes_back_holds_the_others_back_for_a_while_only() {
        let mut limits = one_at_a_time();
        assert_eq!(limits.check_post("a"), Verdict::Allowed);
        let wait = wait_of(limits.check_post("b"));
        std::thread::sleep(wait + Duration::from_millis(10));
        assert!(matches!(limits.check_post_at("c", Instant::now() + TURN_KEPT / 2), Verdict::Refused(_)));
        assert_eq!(limits.check_post_at("c", Instant::now() + wait + TURN_KEPT), Verdict::Allowed);
    }

    #[test]
    fn other_requests_are_not_held_back_by_a_refused_message() {
        let mut limits = one_at_a_time();
        assert_eq!(limits.check_post("a"), Verdict::Allowed);
        let wait = wait_of(limits.check_post("b"));
        assert_eq!(limits.check(false), Verdict::Allowed, "reading history, say");
        std::thread::sleep(wait + Duration::from_millis(10));
        assert_eq!(limits.check(true), Verdict::Allowed, "joining a room");
    }

    #[test]
    fn socket_slots_are_counted_per_address_and_returned_on_drop() {
        let limiters = Limiters::new(&LimitsConfig { sockets_per_ip: 2, ..LimitsConfig::default() });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = limiters.socket_slot(ip).unwrap();
        let _second = limiters.socket_slot(ip).unwrap();
        assert!(limiters.socket_slot(ip).is_none());
        assert!(limiters.socket_slot("192.0.2.8".parse().unwrap()).is_some(), "other addresses are separate");
        drop(first);
        assert!(limiters.socket_slot(ip).is_some());
    }

    #[test]
    fn logins_count_per_account_and_per_address() {
        let limiters = Limiters::new(&LimitsConfig { logins_per_minute: 2, ..LimitsConfig::default() });
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(limiters.login("alice", a).is_ok());
        assert!(limiters.login("ALICE", b).is_ok());
        assert!(limiters.login("alice", "192.0.2.3".parse().unwrap()).is_err(), "the account is out of attempts");
        assert!(limiters.login("bob", a).is_ok());
        assert!(limiters.login("carol", a).is_err(), "the address is out of attempts");
    }

    #[test]
    fn login_keys_are_short_whatever_is_typed() {
        assert_eq!(account_key("Alice"), "alice");
        let huge = "Ó".repeat(1_000_000);
        assert_eq!(account_key(&huge).chars().count(), app::validation::USERNAME_MAX + 1);
        let limiters = Limiters::new(&LimitsConfig { logins_per_minute: 1, ..LimitsConfig::default() });
        assert!(limiters.login(&huge, "192.0.2.1".parse().unwrap()).is_ok());
        assert!(limiters.login(&format!("{huge}x"), "192.0.2.2".parse().unwrap()).is_err(), "same bucket: same first characters");
    }

    proptest::proptest! {
        #[test]
        fn any_username_makes_a_bounded_key(name in app::test_text::any_text()) {
            let key = account_key(&name);
            proptest::prop_assert!(key.chars().count() <= app::validation::USERNAME_MAX + 1);
            proptest::prop_assert_eq!(account_key(&key), key.clone(), "a key is its own key");
        }
    }

    #[test]
    fn an_address_over_its_limit_does_not_use_up_the_account() {
        let limiters = Limiters::new(&LimitsConfig { logins_per_minute: 2, ..LimitsConfig::default() });
        let (noisy, owner): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap());
        assert!(limiters.login("x", noisy).is_ok());
        assert!(limiters.login("y", noisy).is_ok());
        for _ in 0..10 {
            assert!(limiters.login("alice", noisy).is_err());
        }
        assert!(limiters.login("alice", owner).is_ok(), "alice's own attempts are untouched");
    }
}
