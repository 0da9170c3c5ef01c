//! The server's one error type, for HTTP responses and socket replies alike.
//!
//! Callers see a short, safe sentence; internal causes (SQL errors, I/O) are logged
//! where they are turned into a response and never sent to the client.

use app::protocol::{ErrorCode, RequestId, ServerMsg};
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::{limits::RetryAfter, storage::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No session, or one that is revoked or expired.
    #[error("You need to log in.")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    /// The request itself is malformed (not its content: see `Invalid`).
    #[error("{0}")]
    BadRequest(&'static str),
    /// Input breaks a rule; the text says which.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("Too many requests. Try again in {} s.", .0.header_secs())]
    RateLimited(RetryAfter),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        AppError::Internal(Box::new(err))
    }
}

impl AppError {
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal(Box::new(err))
    }

    /// The HTTP status for this kind of error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            AppError::Unauthorized | AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::BadRequest(_) => ErrorCode::BadRequest,
            AppError::Invalid(_) => ErrorCode::Invalid,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::RateLimited(_) => ErrorCode::RateLimited,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn log_if_internal(&self) {
        if let AppError::Internal(cause) = self {
            tracing::error!(error = %cause, "internal error");
        }
    }

    /// The socket reply for a request that failed.
    pub fn into_reply(self, id: RequestId) -> ServerMsg {
        self.log_if_internal();
        let retry_after_ms = match &self {
            AppError::RateLimited(RetryAfter(wait)) => Some(wait.as_millis().max(1) as u64),
            _ => None,
        };
        ServerMsg::Error { id: Some(id), code: self.code(), message: self.to_string(), retry_after_ms }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        if let AppError::RateLimited(retry) = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry.header_secs().into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_inside() {
        let err = AppError::internal(std::io::Error::other("disk on fire at /var/lib/secret"));
        match err.into_reply(3) {
            ServerMsg::Error { id, code, message, .. } => {
                assert_eq!((id, code, message.as_str()), (Some(3), ErrorCode::Internal, "internal error"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn statuses_follow_the_kind_of_error() {
        assert_eq!(AppError::Unauthorized.into_response().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AppError::Invalid("x".into()).into_response().status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(AppError::Conflict("taken").into_response().status(), StatusCode::CONFLICT);
        let limited = AppError::RateLimited(RetryAfter(std::time::Duration::from_millis(1500))).into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()["retry-after"], "2");
    }
}
