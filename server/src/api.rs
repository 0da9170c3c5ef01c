//! The HTTP read API: a room's history as JSON, for scripts and tools. It answers
//! exactly what the socket would, with the same membership check.

use app::protocol::ChatMessage;
use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{accounts::session_token, error::AppError, state::AppState};

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Messages before this sequence number; the newest page when absent.
    before: Option<i64>,
}

/// One page of history, oldest first.
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    messages: Vec<ChatMessage>,
    has_more: bool,
}

/// `GET /api/rooms/{room_id}/messages?before=<seq>`
pub async fn room_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room_id): Path<i64>,
    Query(query): Query<PageQuery>,
) -> Result<Json<HistoryPage>, AppError> {
    let token = session_token(&headers).ok_or(AppError::Unauthorized)?;
    let session = state.accounts.authenticate(&token).await?.ok_or(AppError::Unauthorized)?;
    let (messages, has_more) = state.chat.history_page(&session.user, room_id, query.before).await?;
    Ok(Json(HistoryPage { messages, has_more }))
}
