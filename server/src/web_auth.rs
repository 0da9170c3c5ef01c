//! Sessions on the HTTP side: the backend of the login/register/logout server
//! functions, and the guard that sends visitors without a session to the login page.

use app::auth::{
    backend::{AuthBackend, AuthFailure},
    FormRefusal,
};
use axum::{
    extract::{Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};

use crate::{
    accounts::session_token,
    error::AppError,
    metrics::{self, AuthEvent, Limit},
    state::AppState,
};

/// [`AuthBackend`] over the server's [`crate::accounts::Accounts`].
pub struct AccountsBackend(pub AppState);

impl AccountsBackend {
    fn client_ip(&self, request: &Parts) -> std::net::IpAddr {
        crate::net::client_ip(&request.extensions, &request.headers, self.0.config.security.trust_forwarded_for)
    }
}

fn failure(err: AppError) -> AuthFailure {
    let retry_after_secs = match &err {
        AppError::RateLimited(retry) => Some(retry.header_secs()),
        _ => None,
    };
    if let AppError::Internal(cause) = &err {
        tracing::error!(error = %cause, "auth request failed");
    }
    let status = err.status().as_u16();
    let message = match err {
        AppError::Unauthorized => FormRefusal::WrongLogin.text().to_string(),
        other => other.to_string(),
    };
    AuthFailure { status, message, retry_after_secs }
}

impl AccountsBackend {
    /// With several nodes, attempts are also counted across all of them, so spreading
    /// over nodes does not multiply a guesser's attempts.
    async fn shared_login(&self, username: &str, ip: std::net::IpAddr) -> Result<(), crate::limits::RetryAfter> {
        let Some(shared) = &self.0.shared_limits else { return Ok(()) };
        let per_minute = self.0.config.limits.logins_per_minute;
        let minute = std::time::Duration::from_secs(60);
        shared.allow(&format!("login:ip:{ip}"), per_minute, minute).await?;
        shared.allow(&format!("login:account:{}", crate::limits::account_key(username)), per_minute, minute).await
    }

    async fn shared_registration(&self, ip: std::net::IpAddr) -> Result<(), crate::limits::RetryAfter> {
        let Some(shared) = &self.0.shared_limits else { return Ok(()) };
        let per_hour = self.0.config.limits.registrations_per_hour;
        shared.allow(&format!("register:ip:{ip}"), per_hour, std::time::Duration::from_secs(3600)).await
    }
}

#[async_trait::async_trait]
impl AuthBackend for AccountsBackend {
    async fn register(&self, request: &Parts, username: String, display_name: String, password: String) -> Result<String, AuthFailure> {
        let ip = self.client_ip(request);
        let allowed = match self.0.limiters.registration(ip) {
            Ok(()) => self.shared_registration(ip).await,
            refused => refused,
        };
        if let Err(retry) = allowed {
            metrics::rate_limited(Limit::Registration);
            tracing::warn!(%ip, "registration refused: rate limit");
            return Err(failure(AppError::RateLimited(retry)));
        }
        let accounts = &self.0.accounts;
        let registered = accounts.register(&username, &display_name, password).await;
        metrics::auth(AuthEvent::Register, registered.is_ok());
        let session = registered.map_err(failure)?;
        Ok(accounts.session_cookie(&session.token))
    }

    async fn login(&self, request: &Parts, username: String, password: String) -> Result<String, AuthFailure> {
        let ip = self.client_ip(request);
        let allowed = match self.0.limiters.login(&username, ip) {
            Ok(()) => self.shared_login(&username, ip).await,
            refused => refused,
        };
        if let Err(retry) = allowed {
            metrics::rate_limited(Limit::Login);
            tracing::warn!(%ip, "login refused: rate limit");
            return Err(failure(AppError::RateLimited(retry)));
        }
        let accounts = &self.0.accounts;
        let logged_in = accounts.login(&username, password).await;
        metrics::auth(AuthEvent::Login, logged_in.is_ok());
        let session = logged_in.map_err(|err| {
            if matches!(err, AppError::Unauthorized) {
                tracing::info!(%ip, "login failed: wrong username or password");
            }
            failure(err)
        })?;
        Ok(accounts.session_cookie(&session.token))
    }

    async fn logout(&self, request: &Parts) -> String {
        let accounts = &self.0.accounts;
        if let Some(token) = session_token(&request.headers) {
            let logged_out = accounts.logout(&token).await;
            metrics::auth(AuthEvent::Logout, logged_out.is_ok());
            if let Err(err) = logged_out {
                tracing::error!(error = %err, "logout failed");
            }
        }
        accounts.clearing_cookie()
    }
}

/// Pages that only make sense with a session.
fn needs_session(path: &str) -> bool {
    path == "/" || path.starts_with("/r/") || path.starts_with("/dm/")
}

/// Pages for getting a session, pointless to someone who has one.
fn is_auth_page(path: &str) -> bool {
    path == "/login" || path == "/register"
}

/// Sends visitors without a session from chat pages to `/login?next=<where they were
/// going>`, and visitors with one from the login and register pages into the chat.
pub async fn page_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !needs_session(path) && !is_auth_page(path) {
        return next.run(request).await;
    }
    let session = match session_token(request.headers()) {
        Some(token) => match state.accounts.authenticate(&token).await {
            Ok(session) => session,
            Err(err) => return err.into_response(),
        },
        None => None,
    };
    match (session.is_some(), needs_session(path)) {
        (false, true) => {
            let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
            Redirect::to(&format!("/login?next={next}")).into_response()
        }
        (true, false) => {
            let next = request
                .uri()
                .query()
                .and_then(|query| form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "next"))
                .map(|(_, value)| value.into_owned());
            Redirect::to(&app::validation::safe_return_path(next.as_deref())).into_response()
        }
        _ => next.run(request).await,
    }
}
