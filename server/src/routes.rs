//! The HTTP surface: Leptos pages and server functions, static files, the JSON API and
//! `/ws`, wrapped in the limits and headers every response gets; and beside them the
//! health checks, which get none of that (they are polled every few seconds).

use std::{sync::Arc, time::Duration};

use app::{auth::backend::SharedAuthBackend, shell, App};
use axum::{
    http::{header, HeaderValue, StatusCode},
    middleware,
    routing::get,
    Router,
};
use leptos::prelude::{provide_context, use_context};
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    services::ServeDir,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{api, cross_site, headers, headers::CspNonce, health, observe, page_address, state::AppState, web_auth, ws};

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let leptos_options = state.leptos_options.clone();
    let auth_backend: SharedAuthBackend = Arc::new(web_auth::AccountsBackend(state.clone()));
    let limits = &state.config.limits;
    let page_context = move || {
        provide_context(auth_backend.clone());
        // The hydration script carries this response's CSP nonce.
        if let Some(nonce) = use_context::<axum::http::request::Parts>().and_then(|p| p.extensions.get::<CspNonce>().cloned()) {
            provide_context(leptos::nonce::Nonce::from_value(nonce.0));
        }
    };
    let site = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/rooms/{room_id}/messages", get(api::room_messages))
        .route("/metrics", get(health::metrics_with_token))
        .leptos_routes_with_context(&state, routes, page_context, move || shell(leptos_options.clone()))
        .nest_service(&format!("/{}", state.leptos_options.site_pkg_dir), bundles(&state.leptos_options))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn_with_state(state.clone(), web_auth::page_guard))
        .layer(middleware::from_fn_with_state(state.clone(), cross_site::refuse_cross_site_writes))
        .layer(RequestBodyLimitLayer::new(limits.http_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(limits.request_timeout_secs.max(1))))
        .layer(middleware::from_fn(page_address::refuse_unreadable_addresses))
        .layer(middleware::from_fn_with_state(state.clone(), headers::rate_limit))
        .layer(middleware::from_fn_with_state(state.clone(), headers::security_headers))
        // A bug reached by one request is a 500 for that request, not a dropped connection.
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn(observe::measure))
        .layer(TraceLayer::new_for_http().make_span_with(observe::request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(observe::SequentialIds::default()))
        .layer(middleware::from_fn(observe::drop_odd_request_ids))
        .with_state(state.clone());
    health_checks(state).merge(site)
}

/// The WASM, JS and CSS bundles: brotli or gzip as built (`cargo leptos build
/// --precompress`) when the browser takes it, and cached for good when their names
/// carry their content's hash (a new build has new names); otherwise revalidated.
fn bundles(options: &leptos::config::LeptosOptions) -> Router {
    let folder = std::path::Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let cache = HeaderValue::from_static(if options.hash_files { "public, max-age=31536000, immutable" } else { "no-cache" });
    let files = ServeDir::new(folder).precompressed_br().precompressed_gzip();
    // Not a miss: a page from an older build may name a bundle that is gone.
    let cache_found = move |response: &axum::response::Response<_>| response.status().is_success().then(|| cache.clone());
    Router::new().fallback_service(files).layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, cache_found))
}

/// `/healthz` and `/readyz`, without limits or logging.
fn health_checks(state: AppState) -> Router {
    Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz)).with_state(state)
}

/// What the metrics listener serves: `/metrics` to anyone who can reach it, and the
/// health checks.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(health::metrics)).with_state(state.clone()).merge(health_checks(state))
}
