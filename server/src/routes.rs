//! The HTTP surface: Leptos pages and server functions, static files, and `/ws`.

use std::sync::Arc;

use app::{auth::backend::SharedAuthBackend, shell, App};
use axum::{middleware, routing::get, Router};
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};

use crate::{api, state::AppState, web_auth, ws};

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let leptos_options = state.leptos_options.clone();
    let auth_backend: SharedAuthBackend = Arc::new(web_auth::AccountsBackend(state.clone()));
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/rooms/{room_id}/messages", get(api::room_messages))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(auth_backend.clone()),
            move || shell(leptos_options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn_with_state(state.clone(), web_auth::page_guard))
        .with_state(state)
}
