//! A [`Store`] that times every operation of the one it wraps, for the
//! `parley_db_query_seconds` histogram (by operation) and counts the ones that fail
//! in the database (not the expected outcomes like `Conflict`). Written once here,
//! so the SQL backends stay about SQL.

use std::{sync::Arc, time::Instant};

use app::protocol::{ChatMessage, MemberReceipt, RoomSummary, Seq, UserRef};
use async_trait::async_trait;

use super::{AfterCommit, Credentials, NewPost, PoolUsage, RoomRecord, SessionRecord, Store, StoreError, StoreResult};
use crate::metrics;

/// Wraps a store so that its operations are measured.
pub struct MeasuredStore {
    inner: Arc<dyn Store>,
}

impl MeasuredStore {
    /// Wraps `inner`, and creates each operation's error counter at zero.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        metrics::db_operations_known(OPERATIONS);
        MeasuredStore { inner }
    }
}

fn observe<T>(operation: &'static str, started: Instant, result: &StoreResult<T>) {
    let failed = matches!(result, Err(StoreError::Database(_) | StoreError::Migrate(_)));
    metrics::db_operation(operation, started.elapsed(), failed);
}

/// Implements each listed operation by timing the inner store's.
macro_rules! measured {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Store for MeasuredStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let started = Instant::now();
                    let result = self.inner.$name($($arg),*).await;
                    observe(stringify!($name), started, &result);
                    result
                }
            )*

            /// Measured from queueing to the outcome, which is what a poster waits.
            async fn queue_post(&self, post: NewPost, after_commit: AfterCommit) -> StoreResult<()> {
                let started = Instant::now();
                let measured: AfterCommit = Box::new(move |outcome| {
                    observe("post", started, &outcome);
                    after_commit(outcome);
                });
                self.inner.queue_post(post, measured).await
            }

            async fn posts_settled(&self) -> StoreResult<()> {
                self.inner.posts_settled().await
            }

            fn pool_usage(&self) -> PoolUsage {
                self.inner.pool_usage()
            }
        }

        /// The operations measured, as they appear in the `operation` label.
        const OPERATIONS: &[&str] = &["post", $(stringify!($name)),*];
    };
}

measured! {
    fn create_user(&self, username: &str, display_name: &str, password_hash: &str, now: i64) -> StoreResult<UserRef>;
    fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>>;
    fn user(&self, user_id: i64) -> StoreResult<Option<UserRef>>;
    fn create_session(&self, user_id: i64, token_hash: &str, now: i64, expires_at: i64) -> StoreResult<i64>;
    fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionRecord>>;
    fn touch_sessions(&self, session_ids: &[i64], now: i64) -> StoreResult<()>;
    fn revoke_session(&self, token_hash: &str, now: i64) -> StoreResult<Option<i64>>;
    fn ensure_public_room(&self, name: &str, now: i64) -> StoreResult<RoomRecord>;
    fn create_room(&self, name: &str, creator: &UserRef, now: i64) -> StoreResult<(RoomRecord, ChatMessage)>;
    fn room(&self, room_id: i64) -> StoreResult<Option<RoomRecord>>;
    fn room_summary(&self, room_id: i64, user_id: i64) -> StoreResult<Option<RoomSummary>>;
    fn public_rooms(&self, user_id: i64, most: u32) -> StoreResult<Vec<RoomSummary>>;
    fn rooms_of(&self, user_id: i64) -> StoreResult<Vec<RoomSummary>>;
    fn is_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool>;
    fn members(&self, room_id: i64) -> StoreResult<Vec<UserRef>>;
    fn join(&self, room_id: i64, user: &UserRef, now: i64) -> StoreResult<Option<ChatMessage>>;
    fn leave(&self, room_id: i64, user: &UserRef, now: i64) -> StoreResult<Option<ChatMessage>>;
    fn history_before(&self, room_id: i64, before_seq: Option<i64>, limit: u32) -> StoreResult<Vec<ChatMessage>>;
    fn history_after(&self, room_id: i64, after_seq: i64, limit: u32) -> StoreResult<Vec<ChatMessage>>;
    fn open_direct(&self, me: &UserRef, peer: &UserRef, now: i64) -> StoreResult<(RoomRecord, bool)>;
    fn find_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRef>>;
    fn advance_receipt(&self, room_id: i64, user_id: i64, delivered: Option<Seq>, read: Option<Seq>) -> StoreResult<Option<(Seq, Seq)>>;
    fn member_positions(&self, room_id: i64, user_id: i64) -> StoreResult<Option<(Seq, Seq)>>;
    fn receipts(&self, room_id: i64, limit: u32) -> StoreResult<Vec<MemberReceipt>>;
    fn ping(&self) -> StoreResult<()>;
}
