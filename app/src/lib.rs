//! Parley's user interface and the types it shares with the server.
//!
//! Compiled twice: with `ssr` into the server, which renders every page to HTML, and
//! with `hydrate` into the browser's WASM, which takes over that HTML. Markup must be
//! identical in both builds; only effects (which never run on the server) may differ.

pub mod protocol;
mod socket;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    StaticSegment,
};

use crate::socket::{ConnState, Socket};

/// The HTML document around the app, rendered only on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover, interactive-widget=resizes-content" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <link rel="manifest" href="/manifest.webmanifest" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body class="h-full bg-white text-slate-900 dark:bg-slate-950 dark:text-slate-100">
                <App />
            </body>
        </html>
    }
}

/// The root component: metadata, stylesheet and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    mark_hydrated();

    view! {
        <Stylesheet id="leptos" href="/pkg/parley.css" />
        <Title text="Parley" />
        <Router>
            <Routes fallback=NotFound>
                <Route path=StaticSegment("") view=HomePage />
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

#[component]
fn HomePage() -> impl IntoView {
    let socket = Socket::connect();
    let state_label = move || match socket.state.get() {
        ConnState::Connecting => "connecting",
        ConnState::Online => "online",
        ConnState::Reconnecting => "reconnecting",
    };
    let latency = move || match socket.last_round_trip_ms.get() {
        Some(ms) => format!("{ms:.0} ms"),
        None => "not measured".to_string(),
    };

    view! {
        <main class="mx-auto flex min-h-dvh max-w-xl flex-col items-center justify-center gap-6 p-6 text-center">
            <h1 class="text-4xl font-bold tracking-tight text-indigo-600 dark:text-indigo-400">"Parley"</h1>
            <p class="text-slate-600 dark:text-slate-300">"Real-time chat that never loses a message."</p>
            <p class="flex items-center gap-2" aria-live="polite">
                <span class="text-sm text-slate-500 dark:text-slate-400">"Connection:"</span>
                <span data-testid="socket-state" class="rounded-full bg-slate-100 px-3 py-1 text-sm font-medium dark:bg-slate-800">
                    {state_label}
                </span>
            </p>
            <div class="flex items-center gap-3">
                <button
                    type="button"
                    class="rounded-lg bg-indigo-600 px-4 py-2 font-medium text-white shadow hover:bg-indigo-700 focus:outline-none focus-visible:ring-4 focus-visible:ring-indigo-300 disabled:opacity-50"
                    disabled=move || socket.state.get() != ConnState::Online
                    on:click=move |_| socket.ping()
                >
                    "Measure latency"
                </button>
                <output data-testid="latency" class="tabular-nums">{latency}</output>
            </div>
        </main>
    }
}
