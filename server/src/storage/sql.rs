//! The one SQL implementation of [`Store`], instantiated for SQLite and PostgreSQL.
//!
//! Every statement is written once and runs on both databases: `$n` placeholders
//! (sqlx maps them for SQLite too), integers cast to BIGINT, `ON CONFLICT` and
//! `RETURNING` (SQLite ≥ 3.35). A macro stamps the code out for each pool type because
//! sqlx's generic executor bounds would bury the queries under trait plumbing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    str::FromStr,
    time::Duration,
};

use app::{
    protocol::{ChatMessage, MemberReceipt, MessageKind, RoomKind, RoomSummary, Seq, UserRef, UNREAD_REPORTED},
    text::mentioned_usernames,
};
use async_trait::async_trait;
use futures::FutureExt;
use sqlx::{
    pool::PoolConnection,
    postgres::{PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
    FromRow,
};

use super::{
    group_commit::{self, PostJob, PostQueue},
    body::MessageBody, AfterCommit, Credentials, NewPost, PoolUsage, Posted, RoomRecord, SessionRecord, Store, StoreError, StoreOptions, StoreResult,
};

/// The embedded default: one file, WAL so readers never wait for the writer.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    posts: PostQueue,
}

/// For deployments that run several Parley nodes against one database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    posts: PostQueue,
}

impl SqliteStore {
    pub async fn open(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.sqlite_full_sync { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .foreign_keys(true)
            // Checkpoints run in the background (see `checkpoint_in_background`).
            .pragma("wal_autocheckpoint", "0")
            // A log that grew during a burst is cut back to this when it starts over.
            .pragma("journal_size_limit", "67108864")
            // Writers queue on SQLite's single write lock; wait rather than fail.
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = connect.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|err| StoreError::Database(sqlx::Error::Io(err)))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(with_writer(options.max_connections))
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let store = SqliteStore::with_pool(pool);
        tokio::spawn(checkpoint_in_background(store.pool.clone(), store.posts.downgrade()));
        Ok(store)
    }
}

/// The pool's size: the connections configured for everything else, and one more that
/// the committing task keeps (see `commit_posts`).
fn with_writer(configured: u32) -> u32 {
    configured.max(1) + 1
}

/// How often the write-ahead log is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies the write-ahead log into the database file now and then, until the store
/// is dropped. Left to SQLite, the commit that finds the log past 1,000 pages does it
/// itself, with every post in its batch (and every post queued behind) waiting: tens
/// of milliseconds of syncing the database file, the slowest commits by far. Here a
/// passive checkpoint on a connection of its own does the copying while commits go
/// on. SQLite starts the log over only when a writer begins right after a checkpoint
/// that copied all of it, which under steady writing a checkpoint beside the writer
/// never manages (the writer always appends while it copies); so a second one
/// follows between two batches of posts, when no post is being written, with little
/// left to copy, and the next batch starts the log over. It stays about a second
/// long.
async fn checkpoint_in_background(pool: SqlitePool, store: tokio::sync::mpsc::WeakSender<group_commit::Queued>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(queue) = store.upgrade() else { return };
        if let Err(err) = checkpoint(&pool).await {
            tracing::warn!(error = %err, "checkpointing the write-ahead log failed");
            continue;
        }
        let pool = pool.clone();
        let finish: group_commit::Between = Box::new(move || {
            Box::pin(async move {
                if let Err(err) = checkpoint(&pool).await {
                    tracing::warn!(error = %err, "checkpointing the write-ahead log failed");
                }
            })
        });
        let _ = queue.send(group_commit::Queued::Between(finish)).await;
    }
}

/// A passive checkpoint: copies what it can without waiting for anyone.
async fn checkpoint(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    // Every row read, so the statement is done and holds no read lock afterwards.
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_all(pool).await?;
    Ok(())
}

impl PostgresStore {
    pub async fn open(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(with_writer(options.max_connections))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore::with_pool(pool))
    }

    /// Opens a store on an existing pool (tests point it at a private schema). The
    /// committing task keeps one of its connections, so it needs at least two.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore::with_pool(pool))
    }
}

#[derive(FromRow)]
struct UserRow {
    id: i64,
    username: String,
    display_name: String,
}

impl From<UserRow> for UserRef {
    fn from(row: UserRow) -> Self {
        UserRef { id: row.id, username: row.username, display_name: row.display_name }
    }
}

#[derive(FromRow)]
struct CredentialsRow {
    id: i64,
    username: String,
    display_name: String,
    password_hash: String,
}

#[derive(FromRow)]
struct SessionRow {
    session_id: i64,
    last_seen_at: i64,
    id: i64,
    username: String,
    display_name: String,
}

#[derive(FromRow)]
struct RoomRow {
    id: i64,
    name: String,
    kind: String,
    last_seq: i64,
}

impl From<RoomRow> for RoomRecord {
    fn from(row: RoomRow) -> Self {
        RoomRecord { id: row.id, name: row.name, kind: room_kind(&row.kind), last_seq: row.last_seq }
    }
}

fn room_kind(column: &str) -> RoomKind {
    if column == "direct" { RoomKind::Direct } else { RoomKind::Public }
}

#[derive(FromRow)]
struct RoomSummaryRow {
    id: i64,
    name: String,
    kind: String,
    topic: String,
    last_seq: i64,
    member_count: i64,
    joined: i64,
    read_seq: i64,
    peer_id: Option<i64>,
    peer_username: Option<String>,
    peer_display_name: Option<String>,
}

impl From<RoomSummaryRow> for RoomSummary {
    fn from(row: RoomSummaryRow) -> Self {
        let peer = match (row.peer_id, row.peer_username, row.peer_display_name) {
            (Some(id), Some(username), Some(display_name)) => Some(UserRef { id, username, display_name }),
            _ => None,
        };
        RoomSummary {
            id: row.id,
            name: row.name,
            kind: room_kind(&row.kind),
            topic: row.topic,
            last_seq: row.last_seq,
            member_count: row.member_count,
            joined: row.joined != 0,
            peer,
            read_seq: row.read_seq,
            unread_seqs: Vec::new(),
            mention_seqs: Vec::new(),
        }
    }
}

#[derive(FromRow)]
struct ReceiptRow {
    id: i64,
    username: String,
    display_name: String,
    delivered_seq: i64,
    read_seq: i64,
}

/// One unread position: a message from someone else, or a mention of the reader.
#[derive(FromRow)]
struct UnreadRow {
    room_id: i64,
    seq: i64,
    /// 1 for a mention, 0 for an unread message.
    mention: i64,
}

/// At most this many unread mention positions are reported per room ("99+"), the
/// newest: the page fetches the newest to notify of after a reconnect.
const MENTIONS_REPORTED: usize = 99;
/// Rooms whose unread positions one statement gathers. Each room adds two SELECTs to
/// the statement's UNION, and SQLite allows 500 in one (`SQLITE_MAX_COMPOUND_SELECT`),
/// so this must stay at 250 or below; a person in more unread rooms than this is rare.
const UNREAD_ROOMS_PER_STATEMENT: usize = 100;
/// Up to this many unread rooms, the unread statement is kept prepared on each
/// connection: one variant per count, and most greetings have one or two. Planned
/// afresh, PostgreSQL spent 0.38 ms planning it against 0.03 ms running it, on every
/// greeting of a reconnect storm.
const UNREAD_ROOMS_KEPT_PREPARED: usize = 4;

/// `LIKE` pattern matching strings that start with `prefix` literally.
fn starts_with_pattern(prefix: &str) -> String {
    let mut pattern: String = prefix
        .to_lowercase()
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    pattern.push('%');
    pattern
}

/// The name that makes a pair's direct conversation unique (in either order). It has
/// a colon, which public room names cannot, so the two never collide.
fn direct_key(a: i64, b: i64) -> String {
    format!("dm:{}:{}", a.min(b), a.max(b))
}

#[derive(FromRow)]
struct MessageRow {
    id: i64,
    room_id: i64,
    seq: i64,
    kind: String,
    body: MessageBody,
    client_id: Option<String>,
    created_at: i64,
    sender_id: i64,
    username: String,
    display_name: String,
}

impl From<MessageRow> for ChatMessage {
    fn from(row: MessageRow) -> Self {
        ChatMessage {
            id: row.id,
            room_id: row.room_id,
            seq: row.seq,
            kind: match row.kind.as_str() {
                "joined" => MessageKind::Joined,
                "left" => MessageKind::Left,
                _ => MessageKind::Text,
            },
            sender: UserRef { id: row.sender_id, username: row.username, display_name: row.display_name },
            client_id: row.client_id,
            text: row.body.0,
            sent_at: row.created_at,
        }
    }
}

fn kind_column(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Text => "text",
        MessageKind::Joined => "joined",
        MessageKind::Left => "left",
    }
}

/// Whether PostgreSQL aborted a transaction only to let another one through (a
/// deadlock broken, a serialization failure): trying again is the documented remedy.
fn is_worth_retrying(err: &StoreError) -> bool {
    let StoreError::Database(err) = err else { return false };
    err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "40P01" || code == "40001")
}

/// Whether the connection itself was lost (the database restarted or dropped it), so
/// another connection may well succeed.
fn is_connection_lost(err: &StoreError) -> bool {
    let StoreError::Database(err) = err else { return false };
    match err {
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL's classes 08 (connection exception) and 57P (the server shutting
        // down or a backend terminated).
        _ => err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| db.is_unique_violation())
}

const SELECT_MESSAGE: &str = "SELECT m.id, m.room_id, m.seq, m.kind, m.body, m.client_id, m.created_at, \
     u.id AS sender_id, u.username, u.display_name \
     FROM messages m JOIN users u ON u.id = m.sender_id";

/// A room as user `$1` sees it; for a direct conversation, the `peer_*` columns name
/// the other member. (The peer is found by a subquery that a public room never runs:
/// as a join, it would walk every member of a room of thousands at each connect.)
const SELECT_ROOM_SUMMARY: &str = "SELECT r.id, r.name, r.kind, r.topic, r.last_seq, \
     CAST(r.member_count AS BIGINT) AS member_count, \
     CAST(CASE WHEN mine.user_id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS joined, \
     CAST(COALESCE(mine.read_seq, 0) AS BIGINT) AS read_seq, \
     pu.id AS peer_id, pu.username AS peer_username, pu.display_name AS peer_display_name \
     FROM rooms r \
     LEFT JOIN memberships mine ON mine.room_id = r.id AND mine.user_id = $1 \
     LEFT JOIN users pu ON pu.id = CASE WHEN r.kind = 'direct' THEN \
       (SELECT pm.user_id FROM memberships pm WHERE pm.room_id = r.id AND pm.user_id <> $1 LIMIT 1) END";

/// Tries at one batch of posts before it fails. The first try assumes every post is
/// new and from a member (see `post_to_room`); another is needed when one is not, when
/// a concurrent transaction (another node) stored one of its client ids meanwhile,
/// when PostgreSQL aborted it to break a deadlock, or when the connection was lost.
const BATCH_TRIES: usize = 4;

/// How one try writes a batch of posts.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// The first try: supposes every post is new and from a member, which nearly every
    /// post is, and stores each room's posts in three statements.
    Hopeful,
    /// A try after one that could not store the batch: checks each post against what
    /// is stored before writing. `may_have_landed`: an earlier try sent its commit and
    /// lost the answer with the connection, so its posts may be stored already.
    Careful { may_have_landed: bool },
}

/// A try at a batch that failed, and whether its commit had been sent (a commit whose
/// answer is lost may still have landed).
struct FailedTry {
    error: StoreError,
    commit_sent: bool,
}

/// Failures before the commit, so that `?` can be used up to it.
impl From<StoreError> for FailedTry {
    fn from(error: StoreError) -> Self {
        FailedTry { error, commit_sent: false }
    }
}

impl From<sqlx::Error> for FailedTry {
    fn from(error: sqlx::Error) -> Self {
        StoreError::from(error).into()
    }
}

/// Sessions one `UPDATE` of [`Store::touch_sessions`] names (well under either
/// database's limit on bound parameters).
const TOUCHES_PER_STATEMENT: usize = 500;

/// What became of one post of a batch, decided before anything is written.
enum Plan {
    NotMember,
    /// Its client id was stored before, by this message.
    StoredBefore(ChatMessage),
    /// Stored now (its id is filled in once inserted).
    New(ChatMessage),
    /// Stored by an earlier try of this batch whose commit landed though its answer
    /// was lost with the connection: new to everyone but the database, so answered as
    /// new (and sent to the room).
    Landed(ChatMessage),
    /// A second post of the batch with the same client id as the one at this index.
    SameAs(usize),
}

/// Whether `stored` is `post` exactly as a try of its batch wrote it. A client's own
/// retry of a post is a later request, with a later time.
fn is_stored_as(post: &NewPost, stored: &ChatMessage) -> bool {
    stored.kind == MessageKind::Text && stored.room_id == post.room_id && stored.sent_at == post.now && stored.text == post.text
}

/// Whose posts an insert takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsertFor {
    /// Senders already checked to be members.
    Checked,
    /// Only those senders who are members (a sender unchecked).
    MembersOnly,
}

/// The message a post becomes at `seq` (its id is filled in once inserted).
fn new_text(post: &NewPost, seq: i64) -> ChatMessage {
    ChatMessage {
        id: 0,
        room_id: post.room_id,
        seq,
        kind: MessageKind::Text,
        sender: post.sender.clone(),
        client_id: Some(post.client_id.clone()),
        text: post.text.clone(),
        sent_at: post.now,
    }
}

/// What the poster of each planned post is told.
fn outcomes(room_id: i64, plans: &[Plan]) -> Vec<StoreResult<Posted>> {
    let outcome = |plan: &Plan| match plan {
        Plan::NotMember => Err(StoreError::NotMember),
        Plan::StoredBefore(original) => Posted::duplicate_in(room_id, original.clone()),
        Plan::New(message) | Plan::Landed(message) => Ok(Posted::New(message.clone())),
        Plan::SameAs(first) => match &plans[*first] {
            Plan::New(message) | Plan::Landed(message) => Ok(Posted::Duplicate(message.clone())),
            _ => unreachable!("a repeated post points at a new one"),
        },
    };
    plans.iter().map(outcome).collect()
}

/// Stamps out the [`Store`] implementation for one backend.
macro_rules! sql_store {
    ($store:ident, $db:ty) => {
        impl $store {
            /// The store on `pool`, with the task that commits posts in groups.
            fn with_pool(pool: sqlx::Pool<$db>) -> Self {
                let (posts, queue) = tokio::sync::mpsc::channel(group_commit::POSTS_WAITING);
                tokio::spawn(Self::commit_posts(pool.clone(), queue));
                $store { pool, posts }
            }

            /// Commits waiting posts a batch at a time until the store is dropped, and
            /// hands each outcome on in the order the posts were queued.
            ///
            /// Every batch is written on the same connection, kept between batches. On
            /// SQLite a connection taken from the pool afresh each time (the pool hands
            /// them out in turn) finds its page cache stale after the writes made on
            /// the others and reads the pages again, and its worker thread is a cold
            /// one: the fan-out benchmark spent about 1 µs more per delivery (10 %).
            /// (Being kept, it is not closed for age or idleness as pooled ones are.)
            async fn commit_posts(pool: sqlx::Pool<$db>, mut queue: tokio::sync::mpsc::Receiver<group_commit::Queued>) {
                let mut writer: Option<PoolConnection<$db>> = None;
                while let Some(batch) = group_commit::next_batch(&mut queue).await {
                    // What to do after is kept apart: it need not be shared across threads.
                    let (posts, then): (Vec<NewPost>, Vec<AfterCommit>) =
                        batch.posts.into_iter().map(|job| (job.post, job.after_commit)).unzip();
                    let outcomes = if posts.is_empty() {
                        Vec::new()
                    } else {
                        // A panic while committing one batch fails that batch, not every
                        // later post on this node.
                        let committed = std::panic::AssertUnwindSafe(Self::post_batch(&pool, &mut writer, &posts)).catch_unwind().await;
                        let committed = committed.unwrap_or_else(|_| {
                            writer = None;
                            tracing::error!(posts = posts.len(), "committing a batch of posts panicked");
                            Err(StoreError::Database(sqlx::Error::Protocol("committing panicked".into())))
                        });
                        // Nothing of a failed batch was stored: every post fails, and its
                        // sender may retry with the same client id.
                        committed.unwrap_or_else(|err| {
                            let reason = err.to_string();
                            posts.iter().map(|_| Err(StoreError::Database(sqlx::Error::Protocol(reason.clone())))).collect()
                        })
                    };
                    for ((post, after_commit), outcome) in posts.iter().zip(then).zip(outcomes) {
                        group_commit::announce(post.room_id, after_commit, outcome);
                    }
                    group_commit::settle(batch.settled, batch.between).await;
                }
            }

            /// One transaction for the batch, and a few statements for each room in it
            /// however many posts it has (plus one per @mention). Posts that cannot be
            /// stored (not a member, a client id already used) are set aside before
            /// anything is written, so the numbering has no gaps and no post needs a
            /// savepoint of its own. The batch starts over if another node stores one of
            /// the same client ids between the check and the insert (the next try sees
            /// that message as stored), or if PostgreSQL aborts it to break a deadlock.
            /// Outcomes come back in the batch's (queue) order.
            ///
            /// A connection that failed goes back to the pool (which checks it before
            /// handing it out again), and one that was lost (the database restarted)
            /// is replaced for another try: that try checks each post first, so a
            /// batch whose commit did land before the loss is not stored twice, and a
            /// post found stored exactly as this batch wrote it is answered as new (see
            /// [`Plan::Landed`]), so the room is still sent it.
            async fn post_batch(
                pool: &sqlx::Pool<$db>,
                writer: &mut Option<PoolConnection<$db>>,
                batch: &[NewPost],
            ) -> StoreResult<Vec<StoreResult<Posted>>> {
                let order = group_commit::write_order(batch);
                let in_write_order: Vec<&NewPost> = order.iter().map(|&index| &batch[index]).collect();
                let mut tries = 0;
                let mut attempt = Attempt::Hopeful;
                let written = loop {
                    tries += 1;
                    let failed = match Self::try_batch(pool, writer, &in_write_order, attempt).await {
                        Ok(Some(outcomes)) => break outcomes,
                        Ok(None) => None,
                        Err(failed) => {
                            *writer = None;
                            Some(failed)
                        }
                    };
                    let landed_before = matches!(attempt, Attempt::Careful { may_have_landed: true });
                    let landed_now = failed.as_ref().is_some_and(|f| f.commit_sent && is_connection_lost(&f.error));
                    match failed {
                        None if tries < BATCH_TRIES => {}
                        Some(f) if tries < BATCH_TRIES && (is_worth_retrying(&f.error) || is_connection_lost(&f.error)) => {}
                        None => return Err(StoreError::Database(sqlx::Error::Protocol("client ids kept being stored concurrently".into()))),
                        Some(f) => return Err(f.error),
                    }
                    attempt = Attempt::Careful { may_have_landed: landed_before || landed_now };
                };
                crate::metrics::posts_committed(written.iter().filter(|outcome| matches!(outcome, Ok(Posted::New(_)))).count());
                let mut outcomes: Vec<Option<StoreResult<Posted>>> = batch.iter().map(|_| None).collect();
                for (index, outcome) in order.into_iter().zip(written) {
                    outcomes[index] = Some(outcome);
                }
                Ok(outcomes.into_iter().map(|outcome| outcome.expect("every post was written or refused")).collect())
            }

            /// One try at a batch (in write order): its outcomes once committed, or `None`
            /// if it has to be tried again, carefully (rolled back).
            async fn try_batch(
                pool: &sqlx::Pool<$db>,
                writer: &mut Option<PoolConnection<$db>>,
                posts: &[&NewPost],
                attempt: Attempt,
            ) -> Result<Option<Vec<StoreResult<Posted>>>, FailedTry> {
                let conn = match writer {
                    Some(conn) => conn,
                    None => writer.insert(pool.acquire().await?),
                };
                let mut tx = sqlx::Connection::begin(&mut **conn).await?;
                let mut outcomes = Vec::with_capacity(posts.len());
                // Client ids stored by this batch so far, for a retry queued behind its
                // original or the same id reused in another room.
                let mut stored_now = HashMap::new();
                for room_posts in posts.chunk_by(|a, b| a.room_id == b.room_id) {
                    let stored = match attempt {
                        Attempt::Careful { may_have_landed } => {
                            Self::post_to_room(&mut tx, room_posts, &mut stored_now, may_have_landed).await?
                        }
                        Attempt::Hopeful => Self::post_new_to_room(&mut tx, room_posts, &mut stored_now).await?,
                    };
                    match stored {
                        Some(room_outcomes) => outcomes.extend(room_outcomes),
                        None => {
                            tx.rollback().await?;
                            return Ok(None);
                        }
                    }
                }
                let after_commit = |error: StoreError| FailedTry { error, commit_sent: true };
                tx.commit().await.map_err(|err| after_commit(err.into()))?;
                #[cfg(test)]
                tests::lose_the_answer_to(posts).map_err(after_commit)?;
                Ok(Some(outcomes))
            }

            /// Stores one room's posts in three statements, supposing what nearly every
            /// post is: new, from a member. The room's number is moved past them as it is
            /// locked, and they are inserted only where the sender is a member (a client
            /// id already stored is skipped by the insert). `None` when any post was not
            /// stored so: the caller rolls back and tries again with
            /// [`Self::post_to_room`], which looks at each post first. (That one takes six
            /// statements: the lock, members, stored client ids, the insert, the room's
            /// number, positions; the statements go one by one to SQLite's worker thread,
            /// so each is a hand-off and back.)
            async fn post_new_to_room(
                tx: &mut sqlx::Transaction<'_, $db>,
                posts: &[&NewPost],
                stored_now: &mut HashMap<(i64, String), ChatMessage>,
            ) -> StoreResult<Option<Vec<StoreResult<Posted>>>> {
                let room_id = posts[0].room_id;
                let mut plans: Vec<Plan> = Vec::with_capacity(posts.len());
                let mut new_here: HashMap<(i64, &str), usize> = HashMap::new();
                let mut count: i64 = 0;
                for post in posts {
                    if stored_now.contains_key(&(post.sender.id, post.client_id.clone())) {
                        // The same client id in another room of this batch: the careful
                        // try tells it apart.
                        return Ok(None);
                    }
                    let plan = if let Some(&first) = new_here.get(&(post.sender.id, post.client_id.as_str())) {
                        Plan::SameAs(first)
                    } else {
                        count += 1;
                        new_here.insert((post.sender.id, post.client_id.as_str()), plans.len());
                        // Counted from the room's last number once it is locked.
                        Plan::New(new_text(post, count))
                    };
                    plans.push(plan);
                }
                let last_seq: Option<i64> =
                    sqlx::query_scalar("UPDATE rooms SET last_seq = last_seq + $2 WHERE id = $1 RETURNING last_seq - $2")
                        .bind(room_id)
                        .bind(count)
                        .fetch_optional(&mut **tx)
                        .await?;
                let Some(last_seq) = last_seq else {
                    return Ok(Some(posts.iter().map(|_| Err(StoreError::NotFound)).collect()));
                };
                for plan in &mut plans {
                    if let Plan::New(message) = plan {
                        message.seq += last_seq;
                    }
                }
                if !Self::insert_texts(tx, &mut plans, InsertFor::MembersOnly).await? {
                    return Ok(None);
                }
                Self::mark_read_by_senders(tx, room_id, &plans).await?;
                Self::finish_new(tx, &plans, stored_now).await?;
                Ok(Some(outcomes(room_id, &plans)))
            }

            /// Stores one room's posts (all of the same room, in queue order) inside
            /// `tx`. `None` if a client id was stored by a concurrent transaction since
            /// it was checked: the caller rolls back and tries again.
            /// `may_have_landed`: an earlier try's commit may have stored these posts.
            async fn post_to_room(
                tx: &mut sqlx::Transaction<'_, $db>,
                posts: &[&NewPost],
                stored_now: &mut HashMap<(i64, String), ChatMessage>,
                may_have_landed: bool,
            ) -> StoreResult<Option<Vec<StoreResult<Posted>>>> {
                let room_id = posts[0].room_id;
                // The room's row is the first lock, as for every writer to the room; it
                // also stops anyone leaving until the commit.
                let Some(last_seq) = Self::lock_room(tx, room_id).await? else {
                    return Ok(Some(posts.iter().map(|_| Err(StoreError::NotFound)).collect()));
                };
                let members = Self::members_among(tx, room_id, posts).await?;
                let stored_before = Self::stored_client_ids(tx, posts).await?;
                let mut plans: Vec<Plan> = Vec::with_capacity(posts.len());
                let mut new_here: HashMap<(i64, &str), usize> = HashMap::new();
                let mut seq = last_seq;
                for post in posts {
                    let key = (post.sender.id, post.client_id.clone());
                    let plan = if !members.contains(&post.sender.id) {
                        Plan::NotMember
                    } else if let Some(&first) = new_here.get(&(post.sender.id, post.client_id.as_str())) {
                        Plan::SameAs(first)
                    } else if let Some(original) = stored_before.get(&key).filter(|original| may_have_landed && is_stored_as(post, original)) {
                        new_here.insert((post.sender.id, post.client_id.as_str()), plans.len());
                        Plan::Landed(original.clone())
                    } else if let Some(original) = stored_before.get(&key).or_else(|| stored_now.get(&key)) {
                        Plan::StoredBefore(original.clone())
                    } else {
                        seq += 1;
                        new_here.insert((post.sender.id, post.client_id.as_str()), plans.len());
                        Plan::New(new_text(post, seq))
                    };
                    plans.push(plan);
                }
                if seq > last_seq {
                    if !Self::insert_texts(tx, &mut plans, InsertFor::Checked).await? {
                        return Ok(None);
                    }
                    sqlx::query("UPDATE rooms SET last_seq = $2 WHERE id = $1").bind(room_id).bind(seq).execute(&mut **tx).await?;
                    Self::mark_read_by_senders(tx, room_id, &plans).await?;
                    Self::finish_new(tx, &plans, stored_now).await?;
                }
                Ok(Some(outcomes(room_id, &plans)))
            }

            /// Records the new messages' mentions, and notes them as stored by this
            /// batch (for a retry queued behind its original in another room).
            async fn finish_new(
                tx: &mut sqlx::Transaction<'_, $db>,
                plans: &[Plan],
                stored_now: &mut HashMap<(i64, String), ChatMessage>,
            ) -> StoreResult<()> {
                for plan in plans {
                    if let Plan::New(message) = plan {
                        Self::record_mentions(tx, message).await?;
                        let key = (message.sender.id, message.client_id.clone().unwrap_or_default());
                        stored_now.insert(key, message.clone());
                    }
                }
                Ok(())
            }

            /// Locks a room's row (the first lock of every writer to the room) and
            /// reads its last sequence number; `None` if there is no such room.
            async fn lock_room(tx: &mut sqlx::Transaction<'_, $db>, room_id: i64) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("UPDATE rooms SET last_seq = last_seq WHERE id = $1 RETURNING last_seq")
                    .bind(room_id)
                    .fetch_optional(&mut **tx)
                    .await?)
            }

            /// Which of the posts' senders are members of the room.
            async fn members_among(tx: &mut sqlx::Transaction<'_, $db>, room_id: i64, posts: &[&NewPost]) -> StoreResult<HashSet<i64>> {
                let senders: BTreeSet<i64> = posts.iter().map(|post| post.sender.id).collect();
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT user_id FROM memberships WHERE room_id = ");
                query.push_bind(room_id).push(" AND user_id IN (");
                let mut listed = query.separated(", ");
                for sender in senders {
                    listed.push_bind(sender);
                }
                query.push(")");
                let members: Vec<i64> = query.build_query_scalar().fetch_all(&mut **tx).await?;
                Ok(members.into_iter().collect())
            }

            /// The messages already stored under any of the posts' (sender, client id).
            async fn stored_client_ids(
                tx: &mut sqlx::Transaction<'_, $db>,
                posts: &[&NewPost],
            ) -> StoreResult<HashMap<(i64, String), ChatMessage>> {
                let senders: BTreeSet<i64> = posts.iter().map(|post| post.sender.id).collect();
                let client_ids: BTreeSet<&str> = posts.iter().map(|post| post.client_id.as_str()).collect();
                let mut query = sqlx::QueryBuilder::<$db>::new(SELECT_MESSAGE);
                query.push(" WHERE m.sender_id IN (");
                let mut listed = query.separated(", ");
                for sender in senders {
                    listed.push_bind(sender);
                }
                query.push(") AND m.client_id IN (");
                let mut listed = query.separated(", ");
                for client_id in client_ids {
                    listed.push_bind(client_id);
                }
                query.push(")");
                let rows: Vec<MessageRow> = query.build_query_as().fetch_all(&mut **tx).await?;
                // Both lists together can match pairs nobody posted; only exact ones count.
                let wanted: HashSet<(i64, &str)> = posts.iter().map(|post| (post.sender.id, post.client_id.as_str())).collect();
                Ok(rows
                    .into_iter()
                    .map(ChatMessage::from)
                    .filter(|message| message.client_id.as_deref().is_some_and(|id| wanted.contains(&(message.sender.id, id))))
                    .map(|message| ((message.sender.id, message.client_id.clone().unwrap_or_default()), message))
                    .collect())
            }

            /// Inserts the planned new messages in one statement and fills in their
            /// ids. False if one was not inserted: its client id was stored already
            /// (concurrently, or unchecked), or, inserting for members only, its sender
            /// is not one. Nothing is kept then.
            async fn insert_texts(tx: &mut sqlx::Transaction<'_, $db>, plans: &mut [Plan], insert_for: InsertFor) -> StoreResult<bool> {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO messages (room_id, seq, sender_id, kind, body, client_id, created_at) ",
                );
                let new = plans.iter().filter_map(|plan| match plan {
                    Plan::New(message) => Some(message),
                    _ => None,
                });
                if insert_for == InsertFor::MembersOnly {
                    query.push("SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7 FROM (");
                }
                query.push_values(new, |mut row, message| {
                    row.push_bind(message.room_id)
                        .push_bind(message.seq)
                        .push_bind(message.sender.id)
                        .push_bind(kind_column(MessageKind::Text))
                        .push_bind(MessageBody(message.text.clone()))
                        .push_bind(message.client_id.clone())
                        .push_bind(message.sent_at);
                });
                if insert_for == InsertFor::MembersOnly {
                    // (The `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join's `ON`.)
                    query.push(
                        ") AS v WHERE EXISTS (SELECT 1 FROM memberships m WHERE m.room_id = v.column1 AND m.user_id = v.column3)",
                    );
                }
                query.push(" ON CONFLICT (sender_id, client_id) DO NOTHING RETURNING seq, id");
                let ids: HashMap<i64, i64> = query.build_query_as::<(i64, i64)>().fetch_all(&mut **tx).await?.into_iter().collect();
                let mut complete = true;
                for plan in plans.iter_mut() {
                    if let Plan::New(message) = plan {
                        match ids.get(&message.seq) {
                            Some(&id) => message.id = id,
                            None => complete = false,
                        }
                    }
                }
                Ok(complete)
            }

            /// Moves each sender's positions to their last new message (they have read
            /// what they wrote), in one statement.
            async fn mark_read_by_senders(tx: &mut sqlx::Transaction<'_, $db>, room_id: i64, plans: &[Plan]) -> StoreResult<()> {
                let mut last_by_sender: BTreeMap<i64, i64> = BTreeMap::new();
                for plan in plans {
                    if let Plan::New(message) = plan {
                        last_by_sender.insert(message.sender.id, message.seq);
                    }
                }
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE memberships SET read_seq = v.column2, delivered_seq = v.column2 FROM (",
                );
                query.push_values(last_by_sender, |mut row, (sender, seq)| {
                    row.push_bind(sender).push_bind(seq);
                });
                query.push(") AS v WHERE memberships.room_id = ").push_bind(room_id).push(" AND memberships.user_id = v.column1");
                query.build().execute(&mut **tx).await?;
                Ok(())
            }

            /// Takes the room's next sequence number inside `tx`. Every transaction that
            /// writes to a room locks the room's row first (this, or `lock_room` for a
            /// batch of posts), so the room row is the first lock it holds (on SQLite
            /// the write lock, taken before any read; on PostgreSQL the row lock): two
            /// transactions touching one room lock in the same order and cannot
            /// deadlock, and concurrent writers queue for numbers instead of racing. A
            /// membership change that then writes no notice rolls back, which undoes
            /// the bump, so numbering has no gaps.
            async fn next_seq(tx: &mut sqlx::Transaction<'_, $db>, room_id: i64) -> StoreResult<i64> {
                sqlx::query_scalar("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq")
                    .bind(room_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            /// Moves a member's positions to `seq` (they have read what they wrote, and
            /// a joiner what came before). False if they are not a member.
            async fn mark_read_to(tx: &mut sqlx::Transaction<'_, $db>, room_id: i64, user_id: i64, seq: i64) -> StoreResult<bool> {
                let updated = sqlx::query(
                    "UPDATE memberships SET read_seq = $3, delivered_seq = $3 WHERE room_id = $1 AND user_id = $2",
                )
                .bind(room_id)
                .bind(user_id)
                .bind(seq)
                .execute(&mut **tx)
                .await?;
                Ok(updated.rows_affected() == 1)
            }

            /// Keeps the room's member count in step with a change of `by` members.
            async fn count_members(tx: &mut sqlx::Transaction<'_, $db>, room_id: i64, by: i64) -> StoreResult<()> {
                if by != 0 {
                    sqlx::query("UPDATE rooms SET member_count = member_count + $2 WHERE id = $1")
                        .bind(room_id)
                        .bind(by)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Inserts a message at `seq`. `None` when `(sender, client_id)` already
            /// exists: the caller rolls back.
            async fn insert_message(
                tx: &mut sqlx::Transaction<'_, $db>,
                room_id: i64,
                seq: i64,
                sender: &UserRef,
                kind: MessageKind,
                body: &str,
                client_id: Option<&str>,
                now: i64,
            ) -> StoreResult<Option<ChatMessage>> {
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO messages (room_id, seq, sender_id, kind, body, client_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (sender_id, client_id) DO NOTHING RETURNING id",
                )
                .bind(room_id)
                .bind(seq)
                .bind(sender.id)
                .bind(kind_column(kind))
                .bind(MessageBody(body.to_string()))
                .bind(client_id)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
                Ok(id.map(|id| ChatMessage {
                    id,
                    room_id,
                    seq,
                    kind,
                    sender: sender.clone(),
                    client_id: client_id.map(str::to_string),
                    text: body.to_string(),
                    sent_at: now,
                }))
            }

            /// Records who a message @mentions, among the room's members.
            async fn record_mentions(tx: &mut sqlx::Transaction<'_, $db>, message: &ChatMessage) -> StoreResult<()> {
                for username in mentioned_usernames(&message.text) {
                    sqlx::query(
                        "INSERT INTO mentions (message_id, user_id, room_id, seq) \
                         SELECT $1, u.id, $2, $3 FROM users u \
                         JOIN memberships m ON m.user_id = u.id AND m.room_id = $2 \
                         WHERE u.username_key = lower($4) AND u.id <> $5 \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(message.id)
                    .bind(message.room_id)
                    .bind(message.seq)
                    .bind(username)
                    .bind(message.sender.id)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// Adds (`joined`) or removes a member and records the notice, in one
            /// transaction that takes the room's lock first. `None` if there was
            /// nothing to change.
            async fn change_membership(&self, room_id: i64, user: &UserRef, joined: bool, now: i64) -> StoreResult<Option<ChatMessage>> {
                let mut tx = self.pool.begin().await?;
                let seq = Self::next_seq(&mut tx, room_id).await?;
                let changed = if joined {
                    sqlx::query("INSERT INTO memberships (room_id, user_id, joined_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                        .bind(room_id)
                        .bind(user.id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                } else {
                    sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
                        .bind(room_id)
                        .bind(user.id)
                        .execute(&mut *tx)
                        .await
                };
                let changed = match changed {
                    Ok(done) => done.rows_affected() == 1,
                    // The user does not exist.
                    Err(err) if err.as_database_error().is_some_and(|db| db.is_foreign_key_violation()) => {
                        return Err(StoreError::NotFound)
                    }
                    Err(err) => return Err(err.into()),
                };
                if !changed {
                    tx.rollback().await?;
                    return Ok(None);
                }
                Self::count_members(&mut tx, room_id, if joined { 1 } else { -1 }).await?;
                let kind = if joined { MessageKind::Joined } else { MessageKind::Left };
                let notice = Self::insert_message(&mut tx, room_id, seq, user, kind, "", None, now)
                    .await?
                    .expect("notices have no client id, so they never collide");
                if joined {
                    Self::mark_read_to(&mut tx, room_id, user.id, seq).await?;
                }
                tx.commit().await?;
                Ok(Some(notice))
            }

            /// Fills in each summary's unread positions: messages from people after the
            /// read position (the newest few, as the badge shows "99+" beyond), and
            /// mentions of this user. One statement for all of the user's unread rooms
            /// (in chunks of [`UNREAD_ROOMS_PER_STATEMENT`]), however many there are:
            /// this runs for every greeting, so a reconnect storm makes it once per
            /// person, and a statement per room would cost a round trip to the
            /// database each.
            async fn with_unread(&self, user_id: i64, mut rooms: Vec<RoomSummary>) -> StoreResult<Vec<RoomSummary>> {
                // A room read to its end has neither unread messages nor mentions.
                let mut unread: Vec<&mut RoomSummary> =
                    rooms.iter_mut().filter(|room| room.joined && room.last_seq > room.read_seq).collect();
                for chunk in unread.chunks_mut(UNREAD_ROOMS_PER_STATEMENT) {
                    let mut query = sqlx::QueryBuilder::<$db>::new("");
                    for (n, room) in chunk.iter().enumerate() {
                        if n > 0 {
                            query.push(" UNION ALL ");
                        }
                        // Each part is a subquery so it can have its own order and limit.
                        query
                            .push("SELECT * FROM (SELECT room_id, seq, CAST(0 AS BIGINT) AS mention FROM messages WHERE room_id = ")
                            .push_bind(room.id)
                            .push(" AND seq > ")
                            .push_bind(room.read_seq)
                            .push(" AND kind = 'text' AND sender_id <> ")
                            .push_bind(user_id)
                            .push(" ORDER BY seq DESC LIMIT ")
                            .push_bind(UNREAD_REPORTED as i64)
                            .push(format!(") AS unread_{n} UNION ALL "))
                            .push("SELECT * FROM (SELECT room_id, seq, CAST(1 AS BIGINT) AS mention FROM mentions WHERE user_id = ")
                            .push_bind(user_id)
                            .push(" AND room_id = ")
                            .push_bind(room.id)
                            .push(" AND seq > ")
                            .push_bind(room.read_seq)
                            .push(" ORDER BY seq DESC LIMIT ")
                            .push_bind(MENTIONS_REPORTED as i64)
                            .push(format!(") AS mentions_{n}"));
                    }
                    // Its text differs with the number of rooms: the few common variants
                    // are kept prepared, while up to 100 would crowd the statements that
                    // are reused out of each connection's cache.
                    let prepared = chunk.len() <= UNREAD_ROOMS_KEPT_PREPARED;
                    let rows: Vec<UnreadRow> = query.build_query_as().persistent(prepared).fetch_all(&self.pool).await?;
                    let by_id: HashMap<i64, usize> = chunk.iter().enumerate().map(|(n, room)| (room.id, n)).collect();
                    for row in rows {
                        let Some(room) = by_id.get(&row.room_id).map(|&n| &mut *chunk[n]) else { continue };
                        if row.mention == 0 { &mut room.unread_seqs } else { &mut room.mention_seqs }.push(row.seq);
                    }
                    // Neither database promises the order of a union's rows.
                    for room in chunk.iter_mut() {
                        room.unread_seqs.sort_unstable();
                        room.mention_seqs.sort_unstable();
                    }
                }
                Ok(rooms)
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn create_user(&self, username: &str, display_name: &str, password_hash: &str, now: i64) -> StoreResult<UserRef> {
                let row: Result<UserRow, _> = sqlx::query_as(
                    "INSERT INTO users (username, username_key, display_name, password_hash, created_at) \
                     VALUES ($1, lower($1), $2, $3, $4) RETURNING id, username, display_name",
                )
                .bind(username)
                .bind(display_name)
                .bind(password_hash)
                .bind(now)
                .fetch_one(&self.pool)
                .await;
                match row {
                    Ok(row) => Ok(row.into()),
                    Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict),
                    Err(err) => Err(err.into()),
                }
            }

            async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
                let row: Option<CredentialsRow> = sqlx::query_as(
                    "SELECT id, username, display_name, password_hash FROM users WHERE username_key = lower($1)",
                )
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| Credentials {
                    user: UserRef { id: row.id, username: row.username, display_name: row.display_name },
                    password_hash: row.password_hash,
                }))
            }

            async fn user(&self, user_id: i64) -> StoreResult<Option<UserRef>> {
                let row: Option<UserRow> = sqlx::query_as("SELECT id, username, display_name FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn create_session(&self, user_id: i64, token_hash: &str, now: i64, expires_at: i64) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at) \
                     VALUES ($1, $2, $3, $3, $4) RETURNING id",
                )
                .bind(token_hash)
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionRecord>> {
                let row: Option<SessionRow> = sqlx::query_as(
                    "SELECT s.id AS session_id, s.last_seen_at, u.id, u.username, u.display_name \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| SessionRecord {
                    session_id: row.session_id,
                    last_seen_at: row.last_seen_at,
                    user: UserRef { id: row.id, username: row.username, display_name: row.display_name },
                }))
            }

            async fn touch_sessions(&self, session_ids: &[i64], now: i64) -> StoreResult<()> {
                if session_ids.is_empty() {
                    return Ok(());
                }
                // One transaction (one sync) however many; statements of bounded size.
                let mut tx = self.pool.begin().await?;
                for chunk in session_ids.chunks(TOUCHES_PER_STATEMENT) {
                    let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE sessions SET last_seen_at = ");
                    query.push_bind(now).push(" WHERE last_seen_at < ").push_bind(now).push(" AND id IN (");
                    let mut listed = query.separated(", ");
                    for id in chunk {
                        listed.push_bind(*id);
                    }
                    query.push(")");
                    query.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn revoke_session(&self, token_hash: &str, now: i64) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL RETURNING id",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn ensure_public_room(&self, name: &str, now: i64) -> StoreResult<RoomRecord> {
                sqlx::query(
                    "INSERT INTO rooms (name, name_key, kind, created_at) VALUES ($1, lower($1), 'public', $2) \
                     ON CONFLICT (name_key) DO NOTHING",
                )
                .bind(name)
                .bind(now)
                .execute(&self.pool)
                .await?;
                let row: RoomRow = sqlx::query_as("SELECT id, name, kind, last_seq FROM rooms WHERE name_key = lower($1)")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.into())
            }

            async fn create_room(&self, name: &str, creator: &UserRef, now: i64) -> StoreResult<(RoomRecord, ChatMessage)> {
                let mut tx = self.pool.begin().await?;
                let inserted: Result<RoomRow, _> = sqlx::query_as(
                    "INSERT INTO rooms (name, name_key, kind, created_by, created_at) \
                     VALUES ($1, lower($1), 'public', $2, $3) RETURNING id, name, kind, last_seq",
                )
                .bind(name)
                .bind(creator.id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await;
                let room: RoomRecord = match inserted {
                    Ok(row) => row.into(),
                    Err(err) if is_unique_violation(&err) => return Err(StoreError::Conflict),
                    Err(err) => return Err(err.into()),
                };
                sqlx::query("INSERT INTO memberships (room_id, user_id, joined_at) VALUES ($1, $2, $3)")
                    .bind(room.id)
                    .bind(creator.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Self::count_members(&mut tx, room.id, 1).await?;
                let seq = Self::next_seq(&mut tx, room.id).await?;
                let notice = Self::insert_message(&mut tx, room.id, seq, creator, MessageKind::Joined, "", None, now)
                    .await?
                    .expect("notices have no client id, so they never collide");
                Self::mark_read_to(&mut tx, room.id, creator.id, seq).await?;
                tx.commit().await?;
                Ok((RoomRecord { last_seq: notice.seq, ..room }, notice))
            }

            async fn room(&self, room_id: i64) -> StoreResult<Option<RoomRecord>> {
                let row: Option<RoomRow> = sqlx::query_as("SELECT id, name, kind, last_seq FROM rooms WHERE id = $1")
                    .bind(room_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn room_summary(&self, room_id: i64, user_id: i64) -> StoreResult<Option<RoomSummary>> {
                let sql = format!("{SELECT_ROOM_SUMMARY} WHERE r.id = $2");
                let row: Option<RoomSummaryRow> =
                    sqlx::query_as(&sql).bind(user_id).bind(room_id).fetch_optional(&self.pool).await?;
                let rooms = self.with_unread(user_id, row.into_iter().map(Into::into).collect()).await?;
                Ok(rooms.into_iter().next())
            }

            async fn public_rooms(&self, user_id: i64, most: u32) -> StoreResult<Vec<RoomSummary>> {
                let sql = format!(
                    "{SELECT_ROOM_SUMMARY} WHERE r.kind = 'public' AND r.id IN \
                     (SELECT id FROM rooms WHERE kind = 'public' ORDER BY member_count DESC, name_key LIMIT $2) \
                     ORDER BY r.name_key"
                );
                let rows: Vec<RoomSummaryRow> =
                    sqlx::query_as(&sql).bind(user_id).bind(i64::from(most)).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn rooms_of(&self, user_id: i64) -> StoreResult<Vec<RoomSummary>> {
                let sql = format!("{SELECT_ROOM_SUMMARY} WHERE mine.user_id IS NOT NULL ORDER BY r.kind DESC, r.name_key");
                let rows: Vec<RoomSummaryRow> = sqlx::query_as(&sql).bind(user_id).fetch_all(&self.pool).await?;
                self.with_unread(user_id, rows.into_iter().map(Into::into).collect()).await
            }

            async fn is_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM memberships WHERE room_id = $1 AND user_id = $2")
                        .bind(room_id)
                        .bind(user_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(found.is_some())
            }

            async fn members(&self, room_id: i64) -> StoreResult<Vec<UserRef>> {
                let rows: Vec<UserRow> = sqlx::query_as(
                    "SELECT u.id, u.username, u.display_name FROM memberships m JOIN users u ON u.id = m.user_id \
                     WHERE m.room_id = $1 ORDER BY lower(u.display_name), u.id",
                )
                .bind(room_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn join(&self, room_id: i64, user: &UserRef, now: i64) -> StoreResult<Option<ChatMessage>> {
                self.change_membership(room_id, user, true, now).await
            }

            async fn leave(&self, room_id: i64, user: &UserRef, now: i64) -> StoreResult<Option<ChatMessage>> {
                self.change_membership(room_id, user, false, now).await
            }

            async fn open_direct(&self, me: &UserRef, peer: &UserRef, now: i64) -> StoreResult<(RoomRecord, bool)> {
                let key = direct_key(me.id, peer.id);
                let mut tx = self.pool.begin().await?;
                let created = sqlx::query(
                    "INSERT INTO rooms (name, name_key, kind, created_by, created_at) VALUES ($1, $1, 'direct', $2, $3) \
                     ON CONFLICT (name_key) DO NOTHING",
                )
                .bind(&key)
                .bind(me.id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let room: RoomRow = sqlx::query_as("SELECT id, name, kind, last_seq FROM rooms WHERE name_key = $1")
                    .bind(&key)
                    .fetch_one(&mut *tx)
                    .await?;
                let added = sqlx::query(
                    "INSERT INTO memberships (room_id, user_id, joined_at) VALUES ($1, $2, $4), ($1, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(room.id)
                .bind(me.id)
                .bind(peer.id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                Self::count_members(&mut tx, room.id, added as i64).await?;
                tx.commit().await?;
                Ok((room.into(), created))
            }

            async fn find_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRef>> {
                let rows: Vec<UserRow> = sqlx::query_as(
                    "SELECT id, username, display_name FROM users \
                     WHERE username_key LIKE $1 ESCAPE '\\' OR lower(display_name) LIKE $1 ESCAPE '\\' \
                     ORDER BY username_key LIMIT $2",
                )
                .bind(starts_with_pattern(prefix))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn advance_receipt(
                &self,
                room_id: i64,
                user_id: i64,
                delivered: Option<Seq>,
                read: Option<Seq>,
            ) -> StoreResult<Option<(Seq, Seq)>> {
                let Some(room) = self.room(room_id).await? else { return Ok(None) };
                let read = read.map(|seq| seq.clamp(0, room.last_seq)).unwrap_or(0);
                let delivered = delivered.map(|seq| seq.clamp(0, room.last_seq)).unwrap_or(0).max(read);
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "UPDATE memberships SET \
                     delivered_seq = CASE WHEN $3 > delivered_seq THEN $3 ELSE delivered_seq END, \
                     read_seq = CASE WHEN $4 > read_seq THEN $4 ELSE read_seq END \
                     WHERE room_id = $1 AND user_id = $2 AND ($3 > delivered_seq OR $4 > read_seq) \
                     RETURNING delivered_seq, read_seq",
                )
                .bind(room_id)
                .bind(user_id)
                .bind(delivered)
                .bind(read)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row)
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn pool_usage(&self) -> PoolUsage {
                PoolUsage { size: self.pool.size(), idle: self.pool.num_idle() }
            }

            async fn member_positions(&self, room_id: i64, user_id: i64) -> StoreResult<Option<(Seq, Seq)>> {
                Ok(sqlx::query_as("SELECT delivered_seq, read_seq FROM memberships WHERE room_id = $1 AND user_id = $2")
                    .bind(room_id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn receipts(&self, room_id: i64, limit: u32) -> StoreResult<Vec<MemberReceipt>> {
                let rows: Vec<ReceiptRow> = sqlx::query_as(
                    "SELECT u.id, u.username, u.display_name, m.delivered_seq, m.read_seq \
                     FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 \
                     ORDER BY m.read_seq DESC, m.delivered_seq DESC, u.id LIMIT $2",
                )
                .bind(room_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| MemberReceipt {
                        user: UserRef { id: row.id, username: row.username, display_name: row.display_name },
                        delivered_seq: row.delivered_seq,
                        read_seq: row.read_seq,
                    })
                    .collect())
            }

            async fn queue_post(&self, post: NewPost, after_commit: AfterCommit) -> StoreResult<()> {
                let job = group_commit::Queued::Post(PostJob { post, after_commit });
                self.posts.send(job).await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))
            }

            async fn posts_settled(&self) -> StoreResult<()> {
                let (settled, waiting) = tokio::sync::oneshot::channel();
                let stopped = || StoreError::Database(sqlx::Error::PoolClosed);
                self.posts.send(group_commit::Queued::Barrier(settled)).await.map_err(|_| stopped())?;
                waiting.await.map_err(|_| stopped())
            }

            async fn history_before(&self, room_id: i64, before_seq: Option<i64>, limit: u32) -> StoreResult<Vec<ChatMessage>> {
                let sql = format!("{SELECT_MESSAGE} WHERE m.room_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3");
                let rows: Vec<MessageRow> = sqlx::query_as(&sql)
                    .bind(room_id)
                    .bind(before_seq.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().rev().map(Into::into).collect())
            }

            async fn history_after(&self, room_id: i64, after_seq: i64, limit: u32) -> StoreResult<Vec<ChatMessage>> {
                let sql = format!("{SELECT_MESSAGE} WHERE m.room_id = $1 AND m.seq > $2 ORDER BY m.seq ASC LIMIT $3");
                let rows: Vec<MessageRow> = sqlx::query_as(&sql)
                    .bind(room_id)
                    .bind(after_seq)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }
    };
}

sql_store!(SqliteStore, sqlx::Sqlite);
sql_store!(PostgresStore, sqlx::Postgres);

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use proptest::prelude::*;

    use super::*;

    /// A client id whose batch's commit goes through but whose answer is then lost, as
    /// when the connection drops after the database committed. Keyed by client id so
    /// that other tests' posts, on other stores, go through untouched.
    static LOSE_THE_ANSWER_FOR: Mutex<Option<String>> = Mutex::new(None);

    pub(super) fn lose_the_answer_to(posts: &[&NewPost]) -> StoreResult<()> {
        let mut marked = LOSE_THE_ANSWER_FOR.lock().unwrap();
        if posts.iter().any(|post| marked.as_deref() == Some(post.client_id.as_str())) {
            *marked = None;
            return Err(StoreError::Database(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())));
        }
        Ok(())
    }

    /// The commit landed and only its answer was lost: the retry finds the post stored
    /// as written and answers it as new, so the room is sent it, and it is stored once.
    #[tokio::test]
    async fn a_post_whose_commit_landed_before_the_connection_was_lost_is_answered_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("parley.db").display());
        let store = SqliteStore::open(&url, &StoreOptions { max_connections: 2, sqlite_full_sync: false }).await.unwrap();
        let ana = store.create_user("ana", "Ana", "hash", 1).await.unwrap();
        let (room, _) = store.create_room("sala", &ana, 1).await.unwrap();
        *LOSE_THE_ANSWER_FOR.lock().unwrap() = Some("lost-answer".into());
        let posted = store.post(room.id, &ana, "lost-answer", "Ótimo! ação 😀", 2).await.unwrap();
        assert!(LOSE_THE_ANSWER_FOR.lock().unwrap().is_none(), "the answer was lost once");
        let Posted::New(message) = posted else { panic!("answered as {posted:?}") };
        let texts: Vec<(i64, String)> = store
            .history_after(room.id, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == MessageKind::Text)
            .map(|m| (m.id, m.text))
            .collect();
        assert_eq!(texts, [(message.id, "Ótimo! ação 😀".to_string())], "stored once");
        // A client's own retry, later, is still a repeat.
        assert!(matches!(store.post(room.id, &ana, "lost-answer", "Ótimo! ação 😀", 3).await, Ok(Posted::Duplicate(_))));
    }

    #[test]
    fn wildcards_in_a_search_are_literal() {
        assert_eq!(starts_with_pattern("An_%"), "an\\_\\%%");
        assert_eq!(starts_with_pattern("Ótimo"), "ótimo%");
    }

    proptest! {
        #[test]
        fn any_search_becomes_a_prefix_pattern(prefix in app::test_text::any_text()) {
            let pattern = starts_with_pattern(&prefix);
            let literal = pattern.strip_suffix('%').expect("ends with the wildcard");
            // Undoing the escapes gives back the lowercased prefix, so no character of
            // it was taken as a wildcard.
            let mut unescaped = String::new();
            let mut chars = literal.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    unescaped.push(chars.next().expect("an escape is followed by what it escapes"));
                } else {
                    prop_assert!(c != '%' && c != '_', "unescaped wildcard in {pattern:?}");
                    unescaped.push(c);
                }
            }
            prop_assert_eq!(unescaped, prefix.to_lowercase());
        }
    }
}
