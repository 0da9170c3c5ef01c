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

    /// A refusal of an account form. Posted by the page's script, the status and the
    /// sentence go back to be shown in place; posted as a plain HTML form (before the
    /// script has loaded, or without it), which would show the answer's body as the
    /// page, the browser is sent back to the form with a code for what went wrong.
    pub(super) fn refuse_form(failure: AuthFailure, form: &'static str, next: Option<&str>) -> ServerFnError {
        // Decided as leptos_axum decides whether `redirect` answers with a 302.
        let plain_form = use_context::<http::request::Parts>().is_some_and(|request| {
            request
                .headers
                .get(http::header::ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(leptos_integration_utils::accept_header_includes_html)
        });
        if !plain_form {
            return refuse(failure);
        }
        let refusal = super::FormRefusal::for_status(failure.status);
        leptos_axum::redirect(&super::form_address_after(form, next, refusal), super::TEMPORARY);
        ServerFnError::new(failure.message)
    }

    fn refuse(failure: AuthFailure) -> ServerFnError {
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
        .map_err(|failure| backend::refuse_form(failure, "/register", next.as_deref()))?;
    backend::set_cookie(&cookie);
    leptos_axum::redirect(&crate::validation::safe_return_path(next.as_deref()), TEMPORARY);
    Ok(())
}

#[server(prefix = "/api", endpoint = "login")]
pub async fn login(username: String, password: String, next: Option<String>) -> Result<(), ServerFnError> {
    let (backend, request) = backend::context()?;
    let cookie = backend
        .login(&request, username.trim().to_string(), password)
        .await
        .map_err(|failure| backend::refuse_form(failure, "/login", next.as_deref()))?;
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

/// What went wrong with an account form posted as plain HTML, carried back to the form
/// in its address as a code. Never the server's own sentence: an address anyone can
/// link to must not be able to put words of their choosing on the login page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormRefusal {
    WrongLogin,
    Taken,
    TooMany,
    Invalid,
    Failed,
}

impl FormRefusal {
    const ALL: [FormRefusal; 5] =
        [FormRefusal::WrongLogin, FormRefusal::Taken, FormRefusal::TooMany, FormRefusal::Invalid, FormRefusal::Failed];

    /// From the status the server function refused with.
    pub fn for_status(status: u16) -> Self {
        match status {
            401 => FormRefusal::WrongLogin,
            409 => FormRefusal::Taken,
            429 => FormRefusal::TooMany,
            400..=499 => FormRefusal::Invalid,
            _ => FormRefusal::Failed,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            FormRefusal::WrongLogin => "wrong_login",
            FormRefusal::Taken => "taken",
            FormRefusal::TooMany => "too_many",
            FormRefusal::Invalid => "invalid",
            FormRefusal::Failed => "failed",
        }
    }

    /// Any other code is ignored: nothing is shown for it.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|refusal| refusal.code() == code)
    }

    pub fn text(self) -> &'static str {
        match self {
            FormRefusal::WrongLogin => "Wrong username or password.",
            FormRefusal::Taken => "That username is taken.",
            FormRefusal::TooMany => "Too many attempts. Try again later.",
            FormRefusal::Invalid => "Check what you typed and try again.",
            FormRefusal::Failed => "Something went wrong on the server. Try again in a moment.",
        }
    }
}

/// The form to go back to after `refusal`, still taking the visitor where they were
/// going.
pub fn form_address_after(form: &str, next: Option<&str>, refusal: FormRefusal) -> String {
    match next.filter(|next| !next.is_empty()) {
        Some(next) => format!(
            "{form}?next={}&error={}",
            crate::validation::urlencode(&crate::validation::safe_return_path(Some(next))),
            refusal.code()
        ),
        None => format!("{form}?error={}", refusal.code()),
    }
}

/// The text to show for a failed auth action.
pub fn failure_text(err: &ServerFnError) -> String {
    match err {
        ServerFnError::ServerError(message) => message.clone(),
        _ => "Could not reach the server. Check your connection and try again.".to_string(),
    }
}

/// The text to show when the server refused a form's post before the server function
/// could answer (so without its sentence): the per-address request limit (429, with
/// `Retry-After` in seconds), a request timeout, a body over the limit, a failure.
pub fn refusal_text(status: u16, retry_after: Option<&str>) -> String {
    match (status, retry_after.and_then(|secs| secs.trim().parse::<u64>().ok())) {
        (429, Some(secs)) => format!("Too many requests. Try again in {secs} s."),
        (429, None) => "Too many requests. Try again in a moment.".to_string(),
        (status, _) => format!("The server could not take this (HTTP {status}). Try again in a moment."),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{form_address_after, refusal_text, FormRefusal};
    use crate::test_text::any_text;

    #[test]
    fn a_refusal_says_when_to_try_again_if_the_server_said() {
        assert_eq!(refusal_text(429, Some("12")), "Too many requests. Try again in 12 s.");
        assert_eq!(refusal_text(429, Some("soon")), "Too many requests. Try again in a moment.");
        assert_eq!(refusal_text(429, None), "Too many requests. Try again in a moment.");
        assert_eq!(refusal_text(408, None), "The server could not take this (HTTP 408). Try again in a moment.");
    }

    #[test]
    fn a_refused_form_comes_back_with_a_code_only_known_codes_are_read() {
        for (status, refusal) in [
            (401, FormRefusal::WrongLogin),
            (409, FormRefusal::Taken),
            (429, FormRefusal::TooMany),
            (400, FormRefusal::Invalid),
            (413, FormRefusal::Invalid),
            (500, FormRefusal::Failed),
        ] {
            assert_eq!(FormRefusal::for_status(status), refusal);
            assert_eq!(FormRefusal::from_code(refusal.code()), Some(refusal));
        }
        assert_eq!(FormRefusal::from_code("Your account is locked, call us"), None);
        assert_eq!(form_address_after("/login", Some("/r/general"), FormRefusal::WrongLogin), "/login?next=%2Fr%2Fgeneral&error=wrong_login");
        assert_eq!(form_address_after("/register", None, FormRefusal::Taken), "/register?error=taken");
        assert_eq!(form_address_after("/login", Some(""), FormRefusal::TooMany), "/login?error=too_many");
        assert_eq!(form_address_after("/login", Some("//evil.example"), FormRefusal::Failed), "/login?next=%2F&error=failed");
    }

    proptest! {
        #[test]
        fn any_next_gives_an_address_on_this_site_that_is_a_valid_header(next in any_text()) {
            let address = form_address_after("/login", Some(&next), FormRefusal::WrongLogin);
            prop_assert!(address.starts_with("/login?"));
            prop_assert!(address.ends_with("error=wrong_login"));
            prop_assert!(address.bytes().all(|b| b.is_ascii_graphic()));
        }

        #[test]
        fn any_code_is_a_known_refusal_or_nothing(code in any_text()) {
            if let Some(refusal) = FormRefusal::from_code(&code) {
                prop_assert_eq!(refusal.code(), code.as_str());
            }
        }

        #[test]
        fn any_retry_after_gives_a_sentence(status in 400u16..600, retry_after in proptest::option::of(".*")) {
            let text = refusal_text(status, retry_after.as_deref());
            prop_assert!(text.ends_with('.'));
            prop_assert!(text.len() < 80, "only digits of the header are ever shown: {text}");
        }
    }
}
