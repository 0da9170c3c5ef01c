//! The account forms (log in, create an account, log out) post themselves from the
//! page once the WASM has loaded: the answer shows in place (the server's sentence
//! under the fields, "Logging in…" on the button meanwhile) and a success moves on
//! through the router without reloading the page. Before the WASM has loaded, or
//! without it, the same `<form>` posts as plain HTML.
//!
//! Leptos's `ActionForm` does the same, but it brings the server-function client, its
//! form decoding (`serde_qs`) and actions into the bundle: 32 KB of the compressed
//! WASM, a tenth of it, for three forms, of which this handler and its refusals take
//! 5 KB back (docs/benchmarks.md, "Page weight"). The server's side stays Leptos's
//! server functions (`crate::auth`); this is only the browser's way of calling them,
//! with the same form body they read.

use leptos::{ev::SubmitEvent, prelude::*};

/// One form's post in flight and its outcome, for the form's button and error line.
#[derive(Clone, Copy)]
pub struct FormPost {
    pub pending: RwSignal<bool>,
    /// What the server (or the network) said went wrong with the last post, or with
    /// the plain post that led to this page (`auth_pages`).
    pub error: RwSignal<Option<String>>,
}

impl FormPost {
    pub fn new() -> Self {
        FormPost { pending: RwSignal::new(false), error: RwSignal::new(None) }
    }

    /// The form's `on:submit`: posts the form from the page, then goes where the server
    /// redirects or shows why not. A second press while a post is under way does
    /// nothing, as the disabled button says.
    pub fn on_submit(self) -> impl Fn(SubmitEvent) + 'static {
        #[cfg(feature = "hydrate")]
        let navigate = leptos_router::hooks::use_navigate();
        move |event: SubmitEvent| {
            #[cfg(feature = "hydrate")]
            {
                use wasm_bindgen::JsCast;

                event.prevent_default();
                let Some(form) = event.target().and_then(|target| target.dyn_into::<web_sys::HtmlFormElement>().ok()) else {
                    return;
                };
                if self.pending.get_untracked() {
                    return;
                }
                self.pending.set(true);
                self.error.set(None);
                let navigate = navigate.clone();
                leptos::task::spawn_local(async move {
                    let outcome = browser::post(&form).await;
                    self.pending.try_set(false);
                    match outcome {
                        Ok(Some(location)) => navigate(&location, Default::default()),
                        // Every account form's success redirects; without a place to
                        // go there is nothing to change on this page.
                        Ok(None) => {}
                        Err(failure) => {
                            self.error.try_set(Some(crate::auth::failure_text(&failure)));
                        }
                    }
                });
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = event;
        }
    }
}

impl Default for FormPost {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::{
        prelude::*,
        server_fn::{error::FromServerFnError, Bytes},
    };
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    /// Posts `form` to its `action` as the browser would (URL-encoded fields), but
    /// asking for the server function's own answer rather than a page: `Location`
    /// without a redirect on success, the error with its status otherwise. A redirect
    /// that fetch followed gives where it led; an error that is not the server
    /// function's (refused before it ran) is told by its status.
    pub async fn post(form: &web_sys::HtmlFormElement) -> Result<Option<String>, ServerFnError> {
        // Only "could not reach the server" is shown for these; the cause is the
        // browser's to tell (in its console).
        let unreachable = |_: JsValue| -> ServerFnError { ServerFnError::Request(String::new()) };
        let fields = web_sys::FormData::new_with_form(form).map_err(unreachable)?;
        let body = web_sys::UrlSearchParams::new_with_str_sequence_sequence(&fields).map_err(unreachable)?;
        let headers = web_sys::Headers::new().map_err(unreachable)?;
        // Anything but HTML: a plain form post (which accepts HTML) is redirected with
        // a 302 that fetch would follow, where this wants to navigate by the router.
        headers.set("Accept", "application/json").map_err(unreachable)?;
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&body);
        let answer = JsFuture::from(window().fetch_with_str_and_init(&form.action(), &init)).await.map_err(unreachable)?;
        let response: web_sys::Response = answer.unchecked_into();
        if response.redirected() {
            // Something between here and the server function turned the post into a
            // redirect and fetch followed it: go where it led.
            return Ok(Some(response.url()));
        }
        let header = |name: &str| response.headers().get(name).ok().flatten();
        if response.ok() {
            return Ok(header("location"));
        }
        let text = JsFuture::from(response.text().map_err(unreachable)?).await.map_err(unreachable)?;
        match ServerFnError::de(Bytes::from(text.as_string().unwrap_or_default())) {
            refused @ ServerFnError::ServerError(_) => Err(refused),
            // Not the server function's answer: refused before it ran.
            _ => Err(ServerFnError::ServerError(crate::auth::refusal_text(
                response.status(),
                header("retry-after").as_deref(),
            ))),
        }
    }
}
