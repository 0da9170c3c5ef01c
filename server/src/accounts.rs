//! Registration, login, logout and session checks.
//!
//! A session is 256 random bits in an `HttpOnly`, `SameSite=Lax` cookie; the database
//! keeps only its SHA-256, so a leaked database holds no usable cookie. Sessions end
//! after an idle period and at an absolute lifetime, both configurable; logout revokes
//! the session on the server and closes the sockets it opened.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use app::{auth::FormRefusal, protocol::UserRef, validation};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    chat::Chat,
    error::AppError,
    hub::Hub,
    password,
    storage::{SessionRecord, Store, StoreError},
    time::unix_millis,
};

pub const SESSION_COOKIE: &str = "parley_session";

/// Touching `last_seen_at` on every request would be a write per page view; once a
/// minute is plenty to enforce an idle timeout measured in hours or days.
const TOUCH_INTERVAL_MS: i64 = 60_000;
/// How often the sessions used since are noted in the database, together.
const TOUCHES_WRITTEN_EVERY: Duration = Duration::from_secs(1);

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
    /// Adds `Secure` to the cookie: set when the site is served over TLS.
    pub secure_cookie: bool,
}

/// A newly created session, ready to be put into a cookie.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: String,
    pub user: UserRef,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    chat: Arc<Chat>,
    policy: SessionPolicy,
    /// Sessions used since their use was last written. Written together every
    /// [`TOUCHES_WRITTEN_EVERY`]: after a restart every page reconnects at once, and a
    /// write (with a sync) per session took the server from 2,600 connects a second
    /// to 1,100. A crash loses at most that second's notes: a session then looks idle a
    /// minute longer than it was, against an idle limit of hours.
    touched: Mutex<HashSet<i64>>,
    /// Held while writing them, so the last write at shutdown follows one under way.
    writing_touches: tokio::sync::Mutex<()>,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, chat: Arc<Chat>, policy: SessionPolicy) -> Self {
        Accounts { store, hub, chat, policy, touched: Mutex::default(), writing_touches: tokio::sync::Mutex::const_new(()) }
    }

    /// Writes the sessions used lately every [`TOUCHES_WRITTEN_EVERY`] until `stop`;
    /// the server writes the last ones itself when it has stopped serving.
    pub async fn run_touches(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(TOUCHES_WRITTEN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.write_touches().await,
                () = stop.cancelled() => return,
            }
        }
    }

    /// Notes in the database, in one transaction, that the sessions used since the last
    /// call were used now. Kept for the next call if the database fails.
    pub async fn write_touches(&self) {
        let _one_at_a_time = self.writing_touches.lock().await;
        // Copied, not taken: until written, a session stays noted as used (so it is
        // not mistaken for idle meanwhile), and is written again if this fails.
        let mut session_ids: Vec<i64> = self.touches().iter().copied().collect();
        if session_ids.is_empty() {
            return;
        }
        session_ids.sort_unstable();
        match self.store.touch_sessions(&session_ids, unix_millis()).await {
            Ok(()) => {
                let mut touched = self.touches();
                for session_id in &session_ids {
                    touched.remove(session_id);
                }
            }
            Err(err) => tracing::warn!(error = %err, sessions = session_ids.len(), "cannot note sessions' use; trying again"),
        }
    }

    fn touches(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        // A set of ids is whole whatever a panicking holder did.
        self.touched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn register(&self, username: &str, display_name: &str, password: String) -> Result<IssuedSession, AppError> {
        validation::check_username(username).map_err(AppError::Invalid)?;
        let display_name = validation::normalize_display_name(display_name, username).map_err(AppError::Invalid)?;
        validation::check_password(&password).map_err(AppError::Invalid)?;
        let password_hash = password::hash(password).await?;
        let now = unix_millis();
        let user = match self.store.create_user(username, &display_name, &password_hash, now).await {
            Ok(user) => user,
            // Said as the form says it when it comes back without its script.
            Err(StoreError::Conflict) => return Err(AppError::Conflict(FormRefusal::Taken.text())),
            Err(err) => return Err(err.into()),
        };
        self.chat.add_member(&user, self.chat.default_room()).await?;
        tracing::info!(user = user.id, "account registered");
        self.issue(user).await
    }

    pub async fn login(&self, username: &str, password: String) -> Result<IssuedSession, AppError> {
        // Refuse absurd input before spending argon2 time on it.
        if password.len() > validation::PASSWORD_MAX * 4 || username.len() > validation::USERNAME_MAX * 4 {
            return Err(AppError::Unauthorized);
        }
        let credentials = self.store.credentials(username).await?;
        let (user, stored_hash) = match credentials {
            Some(found) => (Some(found.user), Some(found.password_hash)),
            None => (None, None),
        };
        let verified = password::verify(password, stored_hash).await?;
        match user {
            Some(user) if verified => {
                tracing::info!(user = user.id, "logged in");
                self.issue(user).await
            }
            _ => Err(AppError::Unauthorized),
        }
    }

    async fn issue(&self, user: UserRef) -> Result<IssuedSession, AppError> {
        let token = new_token();
        let now = unix_millis();
        let expires_at = now + self.policy.absolute.as_millis() as i64;
        self.store.create_session(user.id, &token_hash(&token), now, expires_at).await?;
        Ok(IssuedSession { token, user })
    }

    /// Revokes the session and closes its sockets. Unknown tokens are ignored: logging
    /// out twice is not an error.
    pub async fn logout(&self, token: &str) -> Result<(), AppError> {
        if let Some(session_id) = self.store.revoke_session(&token_hash(token), unix_millis()).await? {
            self.hub.end_session(session_id);
            tracing::info!(session = session_id, "logged out");
        }
        Ok(())
    }

    /// The live session for a cookie token, or `None` if it is unknown, revoked,
    /// expired or idle for too long (an idle session is revoked on the spot).
    pub async fn authenticate(&self, token: &str) -> Result<Option<SessionRecord>, AppError> {
        let hash = token_hash(token);
        let now = unix_millis();
        let Some(session) = self.store.session(&hash, now).await? else {
            return Ok(None);
        };
        // A use noted but not written yet counts: it was within the last second or so.
        let idle = now - session.last_seen_at > self.policy.idle.as_millis() as i64;
        if idle && !self.touches().contains(&session.session_id) {
            self.store.revoke_session(&hash, now).await?;
            self.hub.end_session(session.session_id);
            return Ok(None);
        }
        if now - session.last_seen_at > TOUCH_INTERVAL_MS {
            self.touches().insert(session.session_id);
        }
        Ok(Some(session))
    }

    /// The `Set-Cookie` value that stores a session in the browser.
    pub fn session_cookie(&self, token: &str) -> String {
        self.cookie(token.to_string(), self.policy.absolute)
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clearing_cookie(&self) -> String {
        self.cookie(String::new(), Duration::ZERO)
    }

    fn cookie(&self, value: String, max_age: Duration) -> String {
        Cookie::build((SESSION_COOKIE, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.policy.secure_cookie)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
            .build()
            .to_string()
    }
}

/// 256 bits from the operating system's generator, hex-encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The session token from a request's cookies, if there is one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|cookie| cookie.value().to_string())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed_for_storage() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }

    /// A session used just inside its idle limit and used again just past it, before
    /// the first use was written: that use counts, and the session lives on.
    #[tokio::test]
    async fn a_use_not_written_yet_keeps_a_session_from_looking_idle() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("parley.db").display());
        let store = crate::storage::open(&url, &crate::storage::StoreOptions { max_connections: 2, sqlite_full_sync: false })
            .await
            .unwrap();
        let hub = Arc::new(Hub::new(crate::hub::QueueLimits { max_frames: 8, max_bytes: 1 << 16 }));
        let limits = app::protocol::Limits { max_message_chars: 100, history_page: 10 };
        let chat = Arc::new(Chat::new(store.clone(), hub.clone(), limits, 1 << 14, 10, 1));
        let idle = Duration::from_secs(100);
        let accounts = Accounts::new(store.clone(), hub, chat, SessionPolicy { idle, absolute: idle * 10, secure_cookie: false });
        let alice = store.create_user("alice", "Alice", "not-a-hash", 1).await.unwrap();
        let token = new_token();
        // Last seen a moment less than the idle limit ago.
        let last_seen = unix_millis() - idle.as_millis() as i64 + 300;
        store.create_session(alice.id, &token_hash(&token), last_seen, i64::MAX).await.unwrap();

        assert!(accounts.authenticate(&token).await.unwrap().is_some(), "within the limit; its use is noted");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(accounts.authenticate(&token).await.unwrap().is_some(), "its noted use counts");
        accounts.write_touches().await;
        assert!(store.session(&token_hash(&token), unix_millis()).await.unwrap().unwrap().last_seen_at > last_seen + 300);
        assert!(accounts.authenticate(&token).await.unwrap().is_some());
    }

    #[test]
    fn the_session_token_is_found_among_other_cookies() {
        let headers = |cookie: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::COOKIE, cookie.parse().unwrap());
            headers
        };
        assert_eq!(session_token(&headers("theme=dark; parley_session=abc; x=1")), Some("abc".into()));
        assert_eq!(session_token(&headers("parley_session=")), None);
        assert_eq!(session_token(&headers("other=1")), None);
        assert_eq!(session_token(&HeaderMap::new()), None);
    }
}
