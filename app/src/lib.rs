//! Parley's user interface and the types it shares with the server.
//!
//! Compiled twice: with `ssr` into the server, which renders every page to HTML, and
//! with `hydrate` into the browser's WASM, which takes over that HTML. Markup must be
//! identical in both builds; only effects (which never run on the server) may differ.

// Leptos views are nested types; the chat page's header is deeper than the default
// limit allows when the browser build lays out its hydration code.
#![recursion_limit = "256"]

pub mod auth;
pub mod client;
pub mod protocol;
pub mod text;
#[cfg(any(test, feature = "test-support"))]
pub mod test_text;
mod ui;
pub mod validation;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    path,
};

use crate::{
    client::ChatClient,
    ui::{ChatPage, LoginPage, RegisterPage},
};

/// The HTML document around the app, rendered only on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover, interactive-widget=resizes-content" />
                <meta name="color-scheme" content="light dark" />
                <meta name="theme-color" content="#4f46e5" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <link rel="manifest" href="/manifest.webmanifest" />
                <AutoReload options=options.clone() />
                // By its hashed name when the build hashes them (cached for good).
                <HashedStylesheet options=options.clone() id="leptos" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body class="h-full bg-white text-slate-900 antialiased dark:bg-slate-950 dark:text-slate-100">
                <App />
            </body>
        </html>
    }
}

/// The root component: metadata, stylesheet, the chat client and the routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let chat = ChatClient::new();
    provide_context(chat);
    mark_hydrated();
    // Effects run only in the browser, and this one once.
    Effect::new(move |_| chat.answer_service_worker());

    view! {
        <Title text="Parley" />
        <Router>
            <Routes fallback=NotFound>
                <Route path=path!("/") view=ChatPage />
                <Route path=path!("/r/:room") view=ChatPage />
                <Route path=path!("/dm/:user") view=ChatPage />
                <Route path=path!("/login") view=LoginPage />
                <Route path=path!("/register") view=RegisterPage />
            </Routes>
        </Router>
    }
}

/// Sets `data-hydrated` on `<html>` once the WASM has taken over, so tests (and CSS)
/// can tell a server-rendered page from a live one.
fn mark_hydrated() {
    Effect::new(move |_| {
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-hydrated", "true");
        }
    });
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <main class="mx-auto max-w-md p-8 text-center">
            <h1 class="text-2xl font-semibold">"Page not found"</h1>
            <a class="mt-4 inline-block text-indigo-600 underline dark:text-indigo-400" href="/">"Back to Parley"</a>
        </main>
    }
}
