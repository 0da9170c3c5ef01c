//! Limits a person could multiply by spreading over nodes, counted in Redis.
//!
//! Each node keeps its own token buckets (they hold even with Redis away); with
//! several nodes, logins and registrations are also counted in Redis per fixed window,
//! so a guesser gets the configured attempts per minute in all, not per node. Sockets
//! per user are counted from presence (each node tells how many sockets a person has
//! on it), see `Hub::sockets_of`.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::limits::RetryAfter;

/// How long a shared count may take before the node decides alone.
const COUNT_TIMEOUT: Duration = Duration::from_millis(500);

/// Fixed-window counters in Redis, shared by every node.
#[derive(Clone)]
pub struct SharedLimits {
    commands: ConnectionManager,
}

impl SharedLimits {
    pub(super) fn new(commands: ConnectionManager) -> Self {
        SharedLimits { commands }
    }

    /// Counts one attempt under `key`; refused once more than `limit` were counted in
    /// the current `window`. With Redis away or slow the attempt is allowed: each
    /// node's own limits still apply.
    pub async fn allow(&self, key: &str, limit: u32, window: Duration) -> Result<(), RetryAfter> {
        let key = format!("parley:limit:{key}");
        let mut commands = self.commands.clone();
        let window_ms = window.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .pttl(&key);
        let counted = pipe.query_async::<(u64, i64)>(&mut commands);
        match tokio::time::timeout(COUNT_TIMEOUT, counted).await {
            Ok(Ok((count, _))) if count <= u64::from(limit) => Ok(()),
            Ok(Ok((_, remaining_ms))) => Err(RetryAfter(Duration::from_millis(remaining_ms.clamp(1, window_ms) as u64))),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "cannot count a shared limit; this node decides alone");
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}
