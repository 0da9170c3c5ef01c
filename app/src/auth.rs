//! Register, log in and log out, as Leptos server functions.
//!
//! The forms post to these whether or not the WASM has loaded (plain HTML forms, which
//! the page posts itself once it can: `ui::form_post`). The work itself is done by the
//! server through the [`backend::AuthBackend`] it provides as context, which keeps
//! password hashing and sessions out of the UI crate.

use leptos::prelude::*;

#[cfg(feature = "ssr")]
pub mod backend {
    //! The server's side of the auth server functions.

    use std::sync::Arc;

    use leptos::prelude::*;

    /// A refusal: HTTP status and a sentence for the form.
    #[derive(Debug, Clone)]
    pub struct AuthFailure {
        pub status: u16,
        pub message: String,
        /// For 429: seconds until trying again makes sense (sent as `Retry-After`).
        pub retry_after_secs: Option<u64>,
    }

    /// Implemented by the server. Each call gets the request's head for the cookie and
    /// the client address; success returns the `Set-Cookie` value to send.
    #[async_trait::async_trait]
    pub trait AuthBackend: Send + Sync + 'static {
        async fn register(
            &self,
            request: &http::request::Parts,
            username: String,
            display_name: String,
            password: String,
        ) -> Result<String, AuthFailure>;
        async fn login(&self, request: &http::request::Parts, username: String, password: String) -> Result<String, AuthFailure>;
        /// Ends the request's session, if any; returns the cookie-clearing `Set-Cookie`.
        async fn logout(&self, request: &http::request::Parts) -> String;
        /// The user of the request's session, if it is live.
        async fn current_user(&self, request: &http::request::Parts) -> Result<Option<crate::protocol::UserRef>, AuthFailure>;
    }

    pub type SharedAuthBackend = Arc<dyn AuthBackend>;

    pub(super) fn context() -> Result<(SharedAuthBackend, http::request::Parts), ServerFnError> {
        let backend = use_context::<SharedAuthBackend>().ok_or_else(|| ServerFnError::new("auth backend missing"))?;
        let request = use_context::<http::request::Parts>().ok_or_else(|| ServerFnError::new("request missing"))?;
        Ok((backend, request))
    }

    pub(super) fn set_cookie(cookie: &str) {
        if let (Some(response), Ok(value)) =
            (use_context::<leptos_axum::ResponseOptions>(), http::HeaderValue::from_str(cookie))
        {
            response.append_header(http::header::SET_COOKIE, value);
        }
    }

    pub(super) fn refuse(failure: AuthFailure) -> ServerFnError {
        if let (Some(response), Ok(status)) =
            (use_context::<leptos_axum::ResponseOptions>(), http::StatusCode::from_u16(failure.status))
        {
            response.set_status(status);
            if let Some(secs) = failure.retry_after_secs {
                response.insert_header(http::header::RETRY_AFTER, secs.into());
            }
        }
        ServerFnError::new(failure.message)
    }
}

/// `redirect`'s `permanent` flag: where a form sends you depends on the request, so
/// a browser must never remember it.
#[cfg(feature = "ssr")]
const TEMPORARY: bool = false;

#[server(prefix = "/api", endpoint = "register")]
pub async fn register(
    username: String,
    display_name: String,
    password: String,
    next: Option<String>,
) -> Result<(), ServerFnError> {
    let (backend, request) = backend::context()?;
    let cookie = backend
        .register(&request, username.trim().to_string(), display_name, password)
        .await
        .map_err(backend::refuse)?;
    backend::set_cookie(&cookie);
    leptos_axum::redirect(&crate::validation::safe_return_path(next.as_deref()), TEMPORARY);
    Ok(())
}

#[server(prefix = "/api", endpoint = "login")]
pub async fn login(username: String, password: String, next: Option<String>) -> Result<(), ServerFnError> {
    let (backend, request) = backend::context()?;
    let cookie = backend.login(&request, username.trim().to_string(), password).await.map_err(backend::refuse)?;
    backend::set_cookie(&cookie);
    leptos_axum::redirect(&crate::validation::safe_return_path(next.as_deref()), TEMPORARY);
    Ok(())
}

#[server(prefix = "/api", endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    let (backend, request) = backend::context()?;
    let cookie = backend.logout(&request).await;
    backend::set_cookie(&cookie);
    leptos_axum::redirect("/login", TEMPORARY);
    Ok(())
}

/// Who is logged in, if anyone: lets the browser tell "logged out" from "server
/// unreachable" when its socket cannot connect.
#[server(prefix = "/api", endpoint = "session")]
pub async fn session_user() -> Result<Option<crate::protocol::UserRef>, ServerFnError> {
    let (backend, request) = backend::context()?;
    backend.current_user(&request).await.map_err(backend::refuse)
}

/// The text to show for a failed auth action.
pub fn failure_text(err: &ServerFnError) -> String {
    match err {
        ServerFnError::ServerError(message) => message.clone(),
        _ => "Could not reach the server. Check your connection and try again.".to_string(),
    }
}
