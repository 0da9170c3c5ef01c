//! The few browser facilities the chat model needs: clock, timers, random ids, page
//! attention, notifications and reloading the page. On the server (which never runs
//! effects) these are inert stand-ins so the model compiles for both.

use super::ChatClient;

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::{closure::Closure, JsCast};

    use super::ChatClient;

    thread_local! {
        /// Whether the page's attention is watched already.
        static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub fn now_ms() -> f64 {
        js_sys::Date::now()
    }

    /// Runs `run` once, `ms` from now, whatever happens meanwhile to the reactive scope
    /// that asked. Leptos's own `set_timeout` cancels its timer when the scope it was
    /// set in is cleaned up (for example when the effect that set it runs again), and a
    /// batch of receipts or a reconnect must not be dropped that way.
    pub fn after(ms: u32, run: impl FnOnce() + 'static) {
        let callback = Closure::once_into_js(run);
        let delay = i32::try_from(ms).unwrap_or(i32::MAX);
        // The browser refuses a timer only for a page being torn down, which has
        // nothing left to run.
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(callback.unchecked_ref(), delay);
    }

    /// Runs `run` once at the start of the next frame, before it is painted, and like
    /// [`after`] not cancelled with the scope that asked: a scroll position to restore
    /// must be restored even if the effect that measured it runs again first.
    pub fn before_next_paint(run: impl FnOnce() + 'static) {
        let callback = Closure::once_into_js(run);
        let _ = window().request_animation_frame(callback.unchecked_ref());
    }

    /// 128 random bits, hex: two messages never share an id.
    pub fn new_client_id() -> String {
        let mut bytes = [0u8; 16];
        let filled = window().crypto().is_ok_and(|crypto| crypto.get_random_values_with_u8_array(&mut bytes).is_ok());
        if !filled {
            // Without Web Crypto, ids must still differ: equal ids would make the
            // server take a new message for a retry of an old one.
            bytes.iter_mut().for_each(|byte| *byte = (js_sys::Math::random() * 256.0) as u8);
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn attention() -> bool {
        let document = document();
        document.visibility_state() == web_sys::VisibilityState::Visible && document.has_focus().unwrap_or(true)
    }

    /// Keeps `chat.attentive` in step with the page's visibility and focus, for the
    /// life of the page (as the chat model lives).
    pub fn watch_attention(chat: ChatClient) {
        chat.attentive.set(attention());
        chat.notification_permission.set(notification_permission());
        // Once per page: the chat starts again after each login on it.
        if WATCHING.replace(true) {
            return;
        }
        // `visibilitychange` fires at the document and bubbles up to the window.
        for event in ["focus", "blur", "visibilitychange"] {
            let _ = window_event_listener_untyped(event, move |_| {
                chat.attentive.try_set(attention());
            });
        }
        if let Some(worker) = service_worker() {
            let registering = wasm_bindgen_futures::JsFuture::from(worker.register("/sw.js"));
            leptos::task::spawn_local(async move {
                // Notifications then find no worker and are skipped (see `notify`).
                if registering.await.is_err() {
                    leptos::logging::warn!("no notifications: the service worker did not register");
                }
            });
        }
    }

    /// Answers the site's service worker, on every page of the site: a tap on a
    /// notification asks each tab whether someone is signed in there, and waits for
    /// the answers (`public/sw.js`); then it asks the chosen tab to show the
    /// conversation, moving within the app rather than loading the page again.
    pub fn answer_service_worker(chat: ChatClient) {
        let Some(worker) = service_worker() else { return };
        let told = Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let data = event.data();
            let field = |name: &str| js_sys::Reflect::get(&data, &name.into()).ok().and_then(|value| value.as_string());
            // Only for whoever is signed in here: a tap on the last person's
            // notification must not move the next one's page.
            let signed_in = chat.me.try_with_untracked(|me| me.is_some()).unwrap_or(false);
            if field("ask").as_deref() == Some("signed-in") {
                if let Ok(reply) = event.ports().get(0).dyn_into::<web_sys::MessagePort>() {
                    let answer = js_sys::Object::new();
                    let _ = js_sys::Reflect::set(&answer, &"signedIn".into(), &signed_in.into());
                    let _ = reply.post_message(&answer);
                }
            } else if let Some(path) = field("open").filter(|path| signed_in && super::is_own_path(path)) {
                chat.goto.try_set(Some(path));
            }
        });
        worker.set_onmessage(Some(told.into_js_value().unchecked_ref()));
    }

    /// Whether notifications may be shown now (the person can change it in the
    /// browser's settings at any time).
    pub fn notifications_allowed() -> bool {
        notification_permission().as_deref() == Some("granted")
    }

    /// Where the browser has service workers (on https and on this machine's own
    /// addresses).
    fn service_worker() -> Option<web_sys::ServiceWorkerContainer> {
        let navigator = window().navigator();
        js_sys::Reflect::has(&navigator, &"serviceWorker".into()).unwrap_or(false).then(|| navigator.service_worker())
    }

    fn notification_permission() -> Option<String> {
        let supported = js_sys::Reflect::has(&window(), &"Notification".into()).unwrap_or(false);
        supported.then(|| match web_sys::Notification::permission() {
            web_sys::NotificationPermission::Granted => "granted".to_string(),
            web_sys::NotificationPermission::Denied => "denied".to_string(),
            _ => "default".to_string(),
        })
    }

    pub fn ask_notification_permission(chat: ChatClient) {
        if let Ok(promise) = web_sys::Notification::request_permission() {
            leptos::task::spawn_local(async move {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
                chat.notification_permission.try_set(notification_permission());
            });
        }
    }

    /// Shows a system notification if the page is hidden and permission was given; a
    /// tap on it opens `path` (the conversation it tells of).
    pub fn notify(title: &str, body: &str, path: &str) {
        if document().visibility_state() == web_sys::VisibilityState::Visible {
            return;
        }
        if !notifications_allowed() {
            return;
        }
        let options = web_sys::NotificationOptions::new();
        options.set_body(body);
        options.set_tag("parley");
        options.set_data(&path.into());
        // Through the service worker registered at the start: phones' browsers show
        // notifications no other way (`new Notification` throws there), and every
        // browser that grants notifications has service workers, since both need a
        // secure page. Only once it is active: before that (the first visit's install)
        // there is nothing to show it with, and waiting for the worker to be ready
        // would wait forever if it failed to register or install.
        let Some(worker) = service_worker() else { return };
        let found = wasm_bindgen_futures::JsFuture::from(worker.get_registration());
        let title = title.to_owned();
        leptos::task::spawn_local(async move {
            let registration = found.await.ok().filter(|found| !found.is_undefined());
            match registration.map(|found| found.unchecked_into::<web_sys::ServiceWorkerRegistration>()) {
                Some(registration) if registration.active().is_some() => {
                    let _ = registration.show_notification_with_options(&title, &options);
                }
                Some(_) => leptos::logging::warn!("notification not shown: the service worker is not active yet"),
                None => leptos::logging::warn!("notification not shown: no service worker"),
            }
        });
    }

    /// Closes the notifications the site is showing: at a session's end, what they say
    /// is the last person's, and a tap on one would open their conversation.
    pub fn close_notifications() {
        let Some(worker) = service_worker() else { return };
        let found = wasm_bindgen_futures::JsFuture::from(worker.get_registration());
        leptos::task::spawn_local(async move {
            let Ok(registration) = found.await else { return };
            if registration.is_undefined() {
                return;
            }
            let registration: web_sys::ServiceWorkerRegistration = registration.unchecked_into();
            let Ok(listing) = registration.get_notifications() else { return };
            if let Ok(shown) = wasm_bindgen_futures::JsFuture::from(listing).await {
                js_sys::Array::from(&shown).for_each(&mut |notification, _, _| {
                    notification.unchecked_into::<web_sys::Notification>().close();
                });
            }
        });
    }

    /// Loads the page again from the server. Only for a page that is out of date: the
    /// router's navigation would keep running the code this page loaded with.
    pub fn reload_page() {
        let _ = window().location().reload();
    }
}

/// A path on this site: what a message from the service worker may move the page to.
/// The router leaves the page for any address it reads as another site's, so neither
/// `//host` nor `/\host` (a backslash reads as a slash) nor control characters (dropped
/// by the URL parser, so `/\t/host` is `//host`) pass.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn is_own_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.chars().any(|c| c == '\\' || c.is_control())
}

#[cfg(feature = "hydrate")]
pub use browser::{
    after, answer_service_worker, ask_notification_permission, before_next_paint, close_notifications, new_client_id,
    notifications_allowed, notify, now_ms, reload_page, watch_attention,
};

#[cfg(not(feature = "hydrate"))]
mod server {
    use super::ChatClient;

    pub fn now_ms() -> f64 {
        0.0
    }
    pub fn after(_ms: u32, _run: impl FnOnce() + 'static) {}
    pub fn before_next_paint(_run: impl FnOnce() + 'static) {}
    pub fn new_client_id() -> String {
        String::new()
    }
    pub fn watch_attention(_chat: ChatClient) {}
    pub fn answer_service_worker(_chat: ChatClient) {}
    pub fn ask_notification_permission(_chat: ChatClient) {}
    pub fn notify(_title: &str, _body: &str, _path: &str) {}
    pub fn notifications_allowed() -> bool {
        false
    }
    pub fn close_notifications() {}
    pub fn reload_page() {}
}

#[cfg(not(feature = "hydrate"))]
pub use server::{
    after, answer_service_worker, ask_notification_permission, before_next_paint, close_notifications, new_client_id,
    notifications_allowed, notify, now_ms, reload_page, watch_attention,
};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::is_own_path;

    #[test]
    fn only_paths_of_this_site_are_followed() {
        for own in ["/", "/r/geral", "/dm/ana_1", "/r/a?x=1"] {
            assert!(is_own_path(own), "{own}");
        }
        for other in ["", "r/geral", "//evil.example", "/\\evil.example", "/\t/evil.example", "https://evil.example", "javascript:alert(1)"] {
            assert!(!is_own_path(other), "{other:?}");
        }
    }

    proptest! {
        #[test]
        fn no_text_names_another_site(host in crate::test_text::any_text(), path in crate::test_text::any_text()) {
            for elsewhere in [format!("//{host}"), format!("/\\{host}"), format!("/\n/{host}")] {
                prop_assert!(!is_own_path(&elsewhere), "{:?}", elsewhere);
            }
            // Whatever it holds, an accepted path starts at this site's root.
            if is_own_path(&path) {
                prop_assert!(path.strip_prefix('/').is_some_and(|rest| !rest.starts_with(['/', '\\'])));
            }
        }
    }
}
