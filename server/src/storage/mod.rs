//! Durable state: users, sessions, rooms, memberships and messages.
//!
//! The database is the source of truth; everything in memory (the hub, presence) can be
//! rebuilt from it. One [`Store`] trait, two backends: SQLite (embedded default, WAL)
//! and PostgreSQL. Both run the very same SQL (see `sql.rs`), so they cannot drift.

mod body;
mod group_commit;
mod measured;
mod sql;

use std::sync::Arc;

use app::protocol::{ChatMessage, MemberReceipt, RoomKind, RoomSummary, Seq, UserRef};
use async_trait::async_trait;

pub use measured::MeasuredStore;
pub use sql::{PostgresStore, SqliteStore};

/// Storage failures. `Conflict` and `NotFound` are normal outcomes callers branch on;
/// the others are faults that are logged and shown to users only as "internal error".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    /// The user is not a member of the room they wrote to.
    #[error("not a member")]
    NotMember,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A user's name and password hash, for checking a login.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: UserRef,
    pub password_hash: String,
}

/// A live session found by its token.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub session_id: i64,
    pub user: UserRef,
    pub last_seen_at: i64,
}

/// A room as stored, before any per-user view of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub id: i64,
    pub name: String,
    pub kind: RoomKind,
    pub last_seq: i64,
}

/// What posting a message did: stored it now, or found it stored by an earlier try
/// with the same client id (then nothing new was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    New(ChatMessage),
    Duplicate(ChatMessage),
}

impl Posted {
    pub fn message(&self) -> &ChatMessage {
        match self {
            Posted::New(message) | Posted::Duplicate(message) => message,
        }
    }

    /// A retry must name the same conversation as the original: a client id reused
    /// for another room is a client bug, and answering with a message from elsewhere
    /// would file it under the wrong conversation.
    pub(crate) fn duplicate_in(room_id: i64, original: ChatMessage) -> StoreResult<Posted> {
        if original.room_id == room_id {
            Ok(Posted::Duplicate(original))
        } else {
            Err(StoreError::Conflict)
        }
    }
}

/// A message to store, as its sender wrote it.
#[derive(Debug, Clone)]
pub struct NewPost {
    pub room_id: i64,
    pub sender: UserRef,
    pub client_id: String,
    pub text: String,
    pub now: i64,
}

/// What to do with a post's outcome once its commit is over (see [`Store::queue_post`]).
/// It runs on the committing task, so it must not block.
pub type AfterCommit = Box<dyn FnOnce(StoreResult<Posted>) + Send>;

/// How many database connections a store holds, and how many wait unused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub size: u32,
    pub idle: usize,
}

/// Everything the chat keeps. All times are Unix milliseconds supplied by the caller,
/// which keeps the clock out of the storage layer and makes tests deterministic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; `Conflict` when the username is taken in any letter case.
    async fn create_user(&self, username: &str, display_name: &str, password_hash: &str, now: i64) -> StoreResult<UserRef>;
    /// The account and hash for a username, matched without regard to case.
    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>>;
    async fn user(&self, user_id: i64) -> StoreResult<Option<UserRef>>;

    async fn create_session(&self, user_id: i64, token_hash: &str, now: i64, expires_at: i64) -> StoreResult<i64>;
    /// The session for a token hash if it is neither revoked nor past its absolute expiry.
    /// Idle expiry is the caller's policy, decided from `last_seen_at`.
    async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionRecord>>;
    /// Notes that these sessions were used at `now` (never moving a session's time
    /// back), in one transaction: a reconnect storm's sessions are noted together,
    /// not with a sync each.
    async fn touch_sessions(&self, session_ids: &[i64], now: i64) -> StoreResult<()>;
    /// Revokes a session; returns its id if it was live.
    async fn revoke_session(&self, token_hash: &str, now: i64) -> StoreResult<Option<i64>>;

    /// Returns the public room with this name, creating it (with no members) if needed.
    async fn ensure_public_room(&self, name: &str, now: i64) -> StoreResult<RoomRecord>;
    /// Creates a public room and makes `creator` its first member; `Conflict` when the
    /// name is taken in any letter case. Returns the room and the creator's join notice.
    async fn create_room(&self, name: &str, creator: &UserRef, now: i64) -> StoreResult<(RoomRecord, ChatMessage)>;
    async fn room(&self, room_id: i64) -> StoreResult<Option<RoomRecord>>;
    /// One room as `user_id` sees it.
    async fn room_summary(&self, room_id: i64, user_id: i64) -> StoreResult<Option<RoomSummary>>;
    /// The `most` public rooms with the most members, by name, with whether `user_id`
    /// is a member.
    async fn public_rooms(&self, user_id: i64, most: u32) -> StoreResult<Vec<RoomSummary>>;
    /// The rooms `user_id` is a member of.
    async fn rooms_of(&self, user_id: i64) -> StoreResult<Vec<RoomSummary>>;
    async fn is_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool>;
    /// The members of a room, by display name.
    async fn members(&self, room_id: i64) -> StoreResult<Vec<UserRef>>;

    /// Adds a member and records the "joined" notice in the room's history.
    /// `None` if they were already a member (nothing is written).
    async fn join(&self, room_id: i64, user: &UserRef, now: i64) -> StoreResult<Option<ChatMessage>>;
    /// Removes a member and records the "left" notice. `None` if they were not a member.
    async fn leave(&self, room_id: i64, user: &UserRef, now: i64) -> StoreResult<Option<ChatMessage>>;

    /// Queues a message for the next commit and returns once it is queued, without
    /// waiting for the disk: `after_commit` then runs with its outcome, on the task that
    /// commits, in the order posts were queued. So a caller that queues under a room's
    /// lock releases it before the sync, posts to one room share commits, and each
    /// message is still announced only once stored, in sequence order.
    ///
    /// The message gets the room's next sequence number in a transaction that also
    /// checks the sender is a member (`NotMember` if not; `NotFound` for no such room).
    /// A second post with the same `(sender, client_id)` comes back as the first one,
    /// or `Conflict` if the first one went to another room.
    async fn queue_post(&self, post: NewPost, after_commit: AfterCommit) -> StoreResult<()>;

    /// Waits until every post queued before this call has been committed (or failed)
    /// and its `after_commit` has run: what changes a room's membership waits for
    /// the room's queued messages first, so its notice is announced after them.
    async fn posts_settled(&self) -> StoreResult<()>;

    /// [`Store::queue_post`], waiting for the outcome.
    async fn post(&self, room_id: i64, sender: &UserRef, client_id: &str, text: &str, now: i64) -> StoreResult<Posted> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let post = NewPost { room_id, sender: sender.clone(), client_id: client_id.to_owned(), text: text.to_owned(), now };
        self.queue_post(post, Box::new(move |posted| drop(reply.send(posted)))).await?;
        outcome.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
    /// Up to `limit` messages with `seq < before_seq` (newest page if `None`), oldest first.
    async fn history_before(&self, room_id: i64, before_seq: Option<i64>, limit: u32) -> StoreResult<Vec<ChatMessage>>;
    /// Up to `limit` messages with `seq > after_seq`, oldest first.
    async fn history_after(&self, room_id: i64, after_seq: i64, limit: u32) -> StoreResult<Vec<ChatMessage>>;

    /// The direct conversation between two people, created with both as members if it
    /// does not exist yet. The flag says whether it was created now.
    async fn open_direct(&self, me: &UserRef, peer: &UserRef, now: i64) -> StoreResult<(RoomRecord, bool)>;
    /// Up to `limit` users whose username or display name starts with `prefix`
    /// (letter case ignored; `%` and `_` match themselves).
    async fn find_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRef>>;
    /// Moves a member's delivered and read positions forward, never back: each is
    /// clamped to the room's newest message, and delivered is at least read. Returns the
    /// new `(delivered, read)` if either moved; `None` if nothing changed or the user
    /// is not a member.
    async fn advance_receipt(&self, room_id: i64, user_id: i64, delivered: Option<Seq>, read: Option<Seq>) -> StoreResult<Option<(Seq, Seq)>>;
    /// One member's `(delivered, read)` positions; `None` if not a member.
    async fn member_positions(&self, room_id: i64, user_id: i64) -> StoreResult<Option<(Seq, Seq)>>;
    /// Members' positions in a room, the furthest readers first, at most `limit`.
    async fn receipts(&self, room_id: i64, limit: u32) -> StoreResult<Vec<MemberReceipt>>;

    /// Whether the database answers (for readiness checks).
    async fn ping(&self) -> StoreResult<()>;
    /// The connection pool's size and idle connections now.
    fn pool_usage(&self) -> PoolUsage;
}

/// Storage settings that are not part of the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// SQLite only: `true` waits for the disk on every commit (survives power loss),
    /// `false` survives a crash of the process but not of the machine.
    pub sqlite_full_sync: bool,
}

/// Opens the database named by `url`, creating the SQLite file and folder if needed,
/// and brings its schema up to date. Its operations are measured for the metrics.
pub async fn open(url: &str, options: &StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PostgresStore::open(url, options).await?)
    } else if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::open(url, options).await?)
    } else {
        return Err(StoreError::UnsupportedUrl);
    };
    Ok(Arc::new(MeasuredStore::new(store)))
}
